//! Every quantizer, every dtype, forward and backward, at 2^16, 2^20 and
//! 2^24 elements, with throughput in bytes moved (forward: x read, y written;
//! backward: x and dy read, dx written), beside a parallel copy of the same
//! number of bytes.
//!
//! The `mask/` group sets the backward pass from a 1-bit mask beside the one
//! from `x` (and the forward that saves the mask beside the plain one), with
//! the bytes each really moves: from `x`, `x` and `dy` read and `dx` written
//! (magnitude_aware_sign reads `x` twice: its channel means, then the
//! gradient); from the mask, the mask (n/8 bytes), the scale, `dy` and `dx`.
//!
//! `cargo bench --bench quantizers -- 'forward/16777216/ste_sign'` runs a subset
//! (`-- '^mask/'` the masks); LOWBIT_BENCH_SIZES=24 limits the sizes (log2,
//! comma-separated).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lowbit::{Element, Quantizer, bf16, f16};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

const SPECS: &[&str] = &[
    "ste_sign",
    "approx_sign",
    "swish_sign",
    "ste_heaviside",
    "magnitude_aware_sign",
    "ste_tern",
    "ste_tern(ternary_weight_networks=true)",
    "dorefa(k_bit=2)",
    "dorefa(k_bit=2, mode=weights)",
    "noop(precision=32)",
];

/// Channels of the magnitude_aware_sign tensor, a typical conv width.
const CHANNELS: usize = 64;

fn sizes() -> Vec<usize> {
    let logs = std::env::var("LOWBIT_BENCH_SIZES").unwrap_or_else(|_| "16,20,24".into());
    logs.split(',')
        .map(|l| 1usize << l.trim().parse::<u32>().expect("log2 size"))
        .collect()
}

/// A deterministic spread of values over [-2, 2), so every branch is taken.
fn input<T: Element>(n: usize, seed: u32) -> Vec<T> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            T::from_f32((s >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0)
        })
        .collect()
}

fn bench_dtype<T: Element>(c: &mut Criterion, n: usize) {
    let x = input::<T>(n, 1);
    let dy = input::<T>(n, 2);
    let mut out = vec![T::default(); n];
    let shape = [n / CHANNELS, CHANNELS];
    let bytes = std::mem::size_of::<T>() as u64 * n as u64;

    let mut group = c.benchmark_group(format!("forward/{n}"));
    group.throughput(Throughput::Bytes(2 * bytes));
    for spec in SPECS {
        let q: Quantizer = spec.parse().unwrap();
        group.bench_function(BenchmarkId::new(*spec, T::DTYPE.name()), |b| {
            b.iter(|| q.forward(black_box(&x), &shape, &mut out).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group(format!("backward/{n}"));
    group.throughput(Throughput::Bytes(3 * bytes));
    for spec in SPECS {
        let q: Quantizer = spec.parse().unwrap();
        group.bench_function(BenchmarkId::new(*spec, T::DTYPE.name()), |b| {
            b.iter(|| {
                q.backward(black_box(&x), black_box(&dy), &shape, &mut out)
                    .unwrap()
            })
        });
    }
    group.finish();
}

/// Backward from `x` against backward from the mask, and forward against
/// forward with mask, for the quantizers whose masks save the most.
fn bench_masks<T: Element>(c: &mut Criterion, n: usize) {
    let x = input::<T>(n, 1);
    let dy = input::<T>(n, 2);
    let mut out = vec![T::default(); n];
    let shape = [n / CHANNELS, CHANNELS];
    let size = std::mem::size_of::<T>();
    let tensor = (size * n) as u64;
    let mut mask = vec![0u32; lowbit::mask_words(n)];
    let mask_bytes = 4 * mask.len() as u64;

    let mut group = c.benchmark_group(format!("mask/{n}"));
    for spec in ["ste_sign", "magnitude_aware_sign"] {
        let q: Quantizer = spec.parse().unwrap();
        let mut scale = vec![T::default(); q.saved_scale_len(&shape).unwrap()];
        let scale_bytes = (size * scale.len()) as u64;
        let x_reads = if spec == "magnitude_aware_sign" { 2 } else { 1 };
        let id = |what: &str| BenchmarkId::new(format!("{spec}/{what}"), T::DTYPE.name());

        group.throughput(Throughput::Bytes(2 * tensor + (x_reads - 1) * tensor));
        group.bench_function(id("fwd"), |b| {
            b.iter(|| q.forward(black_box(&x), &shape, &mut out).unwrap())
        });
        group.throughput(Throughput::Bytes(
            2 * tensor + (x_reads - 1) * tensor + mask_bytes + scale_bytes,
        ));
        group.bench_function(id("fwd_with_mask"), |b| {
            b.iter(|| {
                q.forward_with_mask(black_box(&x), &shape, &mut out, &mut mask, &mut scale)
                    .unwrap()
            })
        });
        group.throughput(Throughput::Bytes((2 + x_reads) * tensor));
        group.bench_function(id("bwd_from_x"), |b| {
            b.iter(|| {
                q.backward(black_box(&x), black_box(&dy), &shape, &mut out)
                    .unwrap()
            })
        });
        group.throughput(Throughput::Bytes(2 * tensor + mask_bytes + scale_bytes));
        group.bench_function(id("bwd_from_mask"), |b| {
            b.iter(|| {
                q.backward_from_mask(black_box(&mask), &scale, black_box(&dy), &shape, &mut out)
                    .unwrap()
            })
        });
    }
    group.finish();
}

/// The memory-bound ceiling: a parallel copy moving as many bytes (half read,
/// half written) as a forward (2 tensors) or backward (3 tensors) of f32 or
/// half elements.
fn bench_copy(c: &mut Criterion, n: usize) {
    let mut group = c.benchmark_group(format!("copy/{n}"));
    for (label, bytes) in [
        ("f32_fwd", 8 * n),
        ("f32_bwd", 12 * n),
        ("half_fwd", 4 * n),
        ("half_bwd", 6 * n),
    ] {
        let src = vec![1u8; bytes / 2];
        let mut dst = vec![0u8; bytes / 2];
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(label, |b| {
            b.iter(|| {
                dst.par_chunks_mut(1 << 17)
                    .zip(src.par_chunks(1 << 17))
                    .for_each(|(d, s)| d.copy_from_slice(black_box(s)))
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    for n in sizes() {
        bench_copy(c, n);
        bench_dtype::<f32>(c, n);
        bench_dtype::<f16>(c, n);
        bench_dtype::<bf16>(c, n);
        bench_masks::<f32>(c, n);
        bench_masks::<f16>(c, n);
        bench_masks::<bf16>(c, n);
    }
}

criterion_group! {
    name = quantizers;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(quantizers);
