#!/usr/bin/env python3
"""lowbit's CPU path beside torch.compile (inductor's generated C++) and
PyTorch eager, on the same maths (`OPS` of scripts/torch_peer.py), in one
run. By hand, not in CI:

    cargo build --release -p lowbit-cli
    "$(bash scripts/torch-venv.sh)/bin/python" scripts/torch_compile_peer.py \\
        --size 16777216 [--dtype f32 --dtype bf16] [--eager]

For each quantizer and dtype, `lowbit bench --device cpu --json` on it, then
the torch functions, each compiled before it is timed, on `--threads`
threads (lowbit runs on as many: RAYON_NUM_THREADS). Prints one TSV row per quantizer, dtype
and direction: lowbit's median and torch.compile's, each one's ratio to a
copy of the same bytes measured in its own process alternately with it
(lowbit's: its bench's parallel memcpy; torch's: `dst.copy_(src)`), and
lowbit's speed-up (torch.compile's median / lowbit's).

Both write into outputs allocated once: lowbit into its bench's buffer, torch
through `out.copy_(f(...))` inside the compiled function, which inductor
fuses into the kernel that computes `f` (so no tensor is allocated per call).
Eager (`--eager`) runs `f` as written, allocating its result and every
intermediate on each call, as PyTorch code does.

OpenMP's threads wait passively (OMP_WAIT_POLICY=PASSIVE unless set): on a
machine whose cores are shared, spinning threads slowed torch twentyfold.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# OpenMP threads that spin while waiting (GNU OpenMP's default) made every
# torch call take 8 or 16 ms at 2^20 elements on a shared 2-vCPU machine
# (0.5 ms with passive waiting); set before torch loads its runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_peer import OPS  # noqa: E402

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def timed_pair(f, copy, repeats):
    """Medians in ms of `f` and `copy`, run in turn after one run of each."""
    f()
    copy()
    fs, cs = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        fs.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        copy()
        cs.append((time.perf_counter() - t) * 1e3)
    return statistics.median(fs), statistics.median(cs)


def lowbit_rows(args, quantizer, dtype):
    """lowbit's (median ms, ratio to its copy) of one quantizer and dtype,
    forward and backward, measured just before torch's of the same, so that
    both see the machine's load of the moment."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    cmd = [args.lowbit, "bench", "--device", "cpu", "--json", "--size", str(args.size),
           "--repeats", str(args.repeats), "--dtype", dtype, quantizer]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    short = {"forward": "fwd", "backward": "bwd"}
    return {short[r["direction"]]: (r["median_ms"], r["ratio_to_copy"]) for r in json.loads(out)["results"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=1 << 24, help="elements per tensor")
    p.add_argument("--dtype", action="append", choices=list(DTYPES), help="repeatable; default all")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--eager", action="store_true", help="also time PyTorch eager")
    p.add_argument("--quantizer", action="append", choices=list(OPS), help="repeatable; default all")
    p.add_argument("--lowbit", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "lowbit"))
    args = p.parse_args()
    args.dtype = args.dtype or list(DTYPES)
    args.quantizer = args.quantizer or list(OPS)
    n = args.size // 64 * 64

    torch.set_num_threads(args.threads)
    # Every quantizer, dtype and direction compiles `into` anew; past the
    # default limits dynamo would fall back to eager without an error.
    torch._dynamo.config.cache_size_limit = 1024
    torch._dynamo.config.accumulated_cache_size_limit = 4096
    print(f"# {n} elements, {args.threads} threads, torch {torch.__version__}; ratio = copy time / time "
          "for the same bytes, each in its own process")
    cols = ["quantizer", "dtype", "dir", "lowbit_ms", "lowbit_ratio", "compile_ms", "compile_ratio", "speedup"]
    if args.eager:
        cols += ["eager_ms", "eager_ratio"]
    print("\t".join(cols), flush=True)
    for name in args.dtype:
        dtype = DTYPES[name]
        gen = torch.Generator().manual_seed(1)
        x = (torch.rand(n, generator=gen) * 4 - 2).to(dtype)
        dy = (torch.rand(n, generator=gen) * 4 - 2).to(dtype)
        out = torch.empty_like(x)
        # The copy reads and writes half the bytes a pass moves each.
        src = torch.empty(3 * n * x.element_size() // 2, dtype=torch.uint8)
        dst = torch.empty_like(src)
        copies = {"fwd": lambda: dst[: n * x.element_size()].copy_(src[: n * x.element_size()]),
                  "bwd": lambda: dst.copy_(src)}
        for q in args.quantizer:
            fwd, bwd = OPS[q]
            lowbit = lowbit_rows(args, q, name)
            for d, f, inputs in [("fwd", fwd, (x,)), ("bwd", bwd, (x, dy))]:
                def into(o, *a, f=f):
                    o.copy_(f(*a))
                compiled = torch.compile(into, dynamic=False, fullgraph=True)
                compiled(out, *inputs)  # compile before timing
                ms, copy_ms = timed_pair(lambda: compiled(out, *inputs), copies[d], args.repeats)
                lb_ms, lb_ratio = lowbit[d]
                row = [q, name, d, f"{lb_ms:.3f}", f"{lb_ratio:.2f}", f"{ms:.3f}", f"{copy_ms / ms:.2f}",
                       f"{ms / lb_ms:.2f}"]
                if args.eager:
                    e_ms, e_copy = timed_pair(lambda: f(*inputs), copies[d], args.repeats)
                    row += [f"{e_ms:.3f}", f"{e_copy / e_ms:.2f}"]
                print("\t".join(row), flush=True)
        del x, dy, out, src, dst


if __name__ == "__main__":
    main()
