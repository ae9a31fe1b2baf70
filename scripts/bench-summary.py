#!/usr/bin/env python3
"""Summarize criterion results (target/criterion) as a table: median time,
bytes per second, and the ratio to the parallel copy of the same bytes
measured in the same run. Usage: scripts/bench-summary.py [SIZE]"""
import json, os, sys

root = os.path.join(os.path.dirname(__file__), "..", "target", "criterion")


def median_ns(group, func, param=None):
    parts = [root, group, func] + ([param] if param else []) + ["new", "estimates.json"]
    path = os.path.join(*parts)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]


def main():
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 24
    copy = {}
    for label in ["f32_fwd", "f32_bwd", "half_fwd", "half_bwd"]:
        ns = median_ns(f"copy_{size}", label)
        if ns:
            copy[label] = ns
    print(f"size {size} elements; ratio = copy time / quantizer time for the same bytes")
    print(f"{'quantizer':44} {'dtype':5} {'dir':4} {'median':>10} {'GB/s':>7} {'ratio':>6}")
    for direction, streams in [("forward", 2), ("backward", 3)]:
        gdir = os.path.join(root, f"{direction}_{size}")
        if not os.path.isdir(gdir):
            continue
        for func in sorted(os.listdir(gdir)):
            if func == "report":
                continue
            for dtype in ["f32", "f16", "bf16"]:
                ns = median_ns(f"{direction}_{size}", func, dtype)
                if ns is None:
                    continue
                width = 4 if dtype == "f32" else 2
                bytes_moved = streams * width * size
                base = copy.get(("f32" if dtype == "f32" else "half") + ("_fwd" if streams == 2 else "_bwd"))
                ratio = f"{base / ns:6.2f}" if base else "     -"
                print(f"{func:44} {dtype:5} {direction[:3]:4} {ns / 1e6:8.3f}ms {bytes_moved / ns:7.2f} {ratio}")


main()
