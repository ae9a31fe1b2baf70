#!/usr/bin/env python3
"""PyTorch eager doing the same maths as lowbit's quantizers on the GPU, timed
the same way (CUDA events, median of 15 after a warm-up), for the GPU check's
table. Prints: quantizer, dtype, dir, median_ms, GB/s (same byte count as
lowbit's: forward 2 tensors, backward 3).

`OPS` is imported by scripts/torch_compile_peer.py (the CPU peer), so the
GPU run is under `__main__`."""
import os
import torch


def sign(x):
    return torch.where(x < 0, -1.0, 1.0).to(x.dtype)


def ste(x, dy, clip=1.0):
    return torch.where(x.abs() <= clip, dy, torch.zeros_like(dy))


def mas_scale(x):
    return x.view(-1, 64).abs().float().mean(0).to(x.dtype)


def twn(x):
    t = 0.7 * x.abs().float().mean()
    return torch.sign(torch.sign(x + t) + torch.sign(x - t))


# Keyed by lowbit's own spelling of each quantizer (`lowbit bench` prints it).
OPS = {
    "ste_sign(clip_value=1.0)": (sign, ste),
    "approx_sign": (sign, lambda x, dy: torch.where(x.abs() <= 1, (1 - x.abs()) * 2 * dy, torch.zeros_like(dy))),
    "swish_sign(beta=5.0)": (sign, lambda x, dy: dy * 5.0 * (2 - 5.0 * x * torch.tanh(2.5 * x)) / (1 + torch.cosh(5.0 * x))),
    "ste_heaviside(clip_value=1.0)": (lambda x: (x > 0).to(x.dtype), ste),
    "magnitude_aware_sign(clip_value=1.0)": (
        lambda x: (mas_scale(x) * sign(x).view(-1, 64)).view(-1),
        lambda x, dy: (mas_scale(x) * ste(x, dy).view(-1, 64)).view(-1),
    ),
    "ste_tern(threshold_value=0.1, ternary_weight_networks=false, clip_value=1.0)": (
        lambda x: torch.sign(torch.sign(x + 0.1) + torch.sign(x - 0.1)),
        ste,
    ),
    "ste_tern(threshold_value=0.1, ternary_weight_networks=true, clip_value=1.0)": (twn, ste),
    "dorefa(k_bit=2, mode=activations)": (
        lambda x: torch.round(x.clamp(0, 1) * 3) / 3,
        lambda x, dy: torch.where((x >= 0) & (x <= 1), dy, torch.zeros_like(dy)),
    ),
    "dorefa(k_bit=2, mode=weights)": (
        lambda x: 2 * (torch.round((torch.tanh(x) / (2 * torch.tanh(x).abs().max()) + 0.5) * 3) / 3) - 1,
        lambda x, dy: dy * (1 - torch.tanh(x) ** 2) / torch.tanh(x).abs().max(),
    ),
    "noop(precision=32)": (lambda x: x.clone(), lambda x, dy: dy.clone()),
}


def timed(f):
    f()
    torch.cuda.synchronize()
    ms = []
    for _ in range(15):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        f()
        b.record()
        b.synchronize()
        ms.append(a.elapsed_time(b))
    return sorted(ms)[7]


def main():
    n = int(os.environ.get("LOWBIT_BENCH_ELEMENTS", 1 << 28))
    dev = "cuda"
    print("quantizer\tdtype\tdir\tmedian_ms\tGB/s")
    src = torch.empty(n * 4, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    ms = timed(lambda: dst.copy_(src))
    print(f"copy\tu8\tdtod\t{ms:.4f}\t{2 * 4 * n / (ms * 1e6):.1f}")
    del src, dst
    for name, dtype in [("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)]:
        x = (torch.rand(n, device=dev) * 4 - 2).to(dtype)
        dy = (torch.rand(n, device=dev) * 4 - 2).to(dtype)
        size = x.element_size()
        for q, (fwd, bwd) in OPS.items():
            for d, f, streams in [("fwd", lambda: fwd(x), 2), ("bwd", lambda: bwd(x, dy), 3)]:
                ms = timed(f)
                print(f"{q}\t{name}\t{d}\t{ms:.4f}\t{streams * size * n / (ms * 1e6):.1f}")
        del x, dy
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
