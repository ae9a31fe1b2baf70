//! The reductions some quantizers need before their elementwise pass:
//! TWN's Σ|x|, DoReFa's max|tanh x| and Bi-Real's per-channel mean |x|.
//!
//! Sums are accumulated in `f64` over a fixed partition of the tensor and the
//! partial sums added in order, so the result is the same on every run and
//! every thread count. A NaN anywhere in a group makes that group NaN.

use rayon::prelude::*;

use super::{BLOCK, CHUNK};
use crate::element::Element;
use crate::scalar;

/// Σ|x| over the whole tensor.
pub(super) fn sum_abs<T: Element>(x: &[T]) -> f64 {
    // Each task sums `LOCKSTEP` chunks side by side: the same partial sums,
    // added in the same order, as one chunk at a time, but independent
    // chains of additions for the CPU to overlap (one chunk's eight lanes
    // are one AVX-512 register, and a chain of additions one at a time ran
    // slower than memory).
    let partials: Vec<[f64; LOCKSTEP]> = x
        .par_chunks(CHUNK * LOCKSTEP)
        .map(|group| super::simd(|_| sum_abs_lockstep(group)))
        .collect();
    let count = x.len().div_ceil(CHUNK);
    partials.iter().flatten().take(count).sum()
}

/// Chunks summed side by side by [`sum_abs_lockstep`].
const LOCKSTEP: usize = 4;

/// The partial sums of the (up to) `LOCKSTEP` chunks of `group`, each that
/// of [`sum_abs_serial`] over its chunk; 0 for chunks past the end.
#[inline(always)]
fn sum_abs_lockstep<T: Element>(group: &[T]) -> [f64; LOCKSTEP] {
    let mut sums = [0f64; LOCKSTEP];
    if group.len() < CHUNK * LOCKSTEP {
        for (s, chunk) in sums.iter_mut().zip(group.chunks(CHUNK)) {
            *s = sum_abs_serial(chunk);
        }
        return sums;
    }
    let mut bufs = [[0f32; BLOCK]; LOCKSTEP];
    let mut acc = [[0f64; 8]; LOCKSTEP];
    for block in (0..CHUNK).step_by(BLOCK) {
        let mut views: [&[f32]; LOCKSTEP] = [&[]; LOCKSTEP];
        for (k, (buf, view)) in bufs.iter_mut().zip(views.iter_mut()).enumerate() {
            let start = k * CHUNK + block;
            *view = T::read(&group[start..start + BLOCK], buf);
        }
        for i in (0..BLOCK).step_by(8) {
            for (acc, view) in acc.iter_mut().zip(views) {
                for (a, &v) in acc.iter_mut().zip(&view[i..i + 8]) {
                    *a += f64::from(v.abs());
                }
            }
        }
    }
    for (s, acc) in sums.iter_mut().zip(acc) {
        *s = acc.iter().sum::<f64>();
    }
    sums
}

/// Σ|x| of one slice on one thread.
#[inline(always)]
fn sum_abs_serial<T: Element>(x: &[T]) -> f64 {
    let mut buf = [0f32; BLOCK];
    // Eight independent accumulators let the loop vectorize; their order is
    // fixed, so the sum stays deterministic.
    let mut acc = [0f64; 8];
    for block in x.chunks(BLOCK) {
        let x = T::read(block, &mut buf);
        let mut lanes = x.chunks_exact(8);
        for v in &mut lanes {
            for (a, &v) in acc.iter_mut().zip(v) {
                *a += f64::from(v.abs());
            }
        }
        for (a, &v) in acc.iter_mut().zip(lanes.remainder()) {
            *a += f64::from(v.abs());
        }
    }
    acc.iter().sum::<f64>()
}

/// Mean |x| of each row of `inner` contiguous elements (XNOR-Net's
/// first-axis scale). A row is summed by one thread, in a fixed order.
pub(super) fn row_mean_abs<T: Element>(x: &[T], inner: usize) -> Vec<f32> {
    x.par_chunks(inner)
        .map(|row| scalar::mean_abs(super::simd(|_| sum_abs_serial(row)), inner))
        .collect()
}

/// max |tanh x| over the whole tensor, NaN if any element is NaN.
pub(super) fn max_abs_tanh<T: Element>(x: &[T]) -> f32 {
    x.par_chunks(CHUNK)
        .map(|chunk| {
            super::simd(
                #[inline(always)]
                |_| {
                    let mut buf = [0f32; BLOCK];
                    // Independent lanes, as in `sum_abs`, so the loop vectorizes.
                    let mut lanes = [0f32; 8];
                    for block in chunk.chunks(BLOCK) {
                        let x = T::read(block, &mut buf);
                        let mut groups = x.chunks_exact(8);
                        for v in &mut groups {
                            for (m, &v) in lanes.iter_mut().zip(v) {
                                *m = scalar::nan_max(*m, scalar::tanh(v).abs());
                            }
                        }
                        for (m, &v) in lanes.iter_mut().zip(groups.remainder()) {
                            *m = scalar::nan_max(*m, scalar::tanh(v).abs());
                        }
                    }
                    lanes.into_iter().fold(0.0, scalar::nan_max)
                },
            )
        })
        // `max` is order-independent, and so is "any NaN", so this is exact.
        .reduce(|| 0.0, scalar::nan_max)
}

/// Channels at least this wide are summed in parallel by channel ranges
/// instead of by row ranges.
const WIDE: usize = BLOCK;

/// Mean |x| of each channel (the last axis) over every other axis, rounded
/// to `T` as larq holds it: a masked forward hands the scale to the caller in
/// the tensor's type, and its backward must then see the values this does.
pub(super) fn channel_mean_abs<T: Element>(x: &[T], channels: usize) -> Vec<f32> {
    if channels == 0 {
        return Vec::new();
    }
    let rows = x.len() / channels;
    let sums: Vec<f64> = if channels >= WIDE {
        // Few, long rows: each task owns a range of channels across all rows.
        let ranges: Vec<_> = (0..channels).step_by(WIDE).collect();
        ranges
            .par_iter()
            .flat_map_iter(|&first| {
                super::simd(
                    #[inline(always)]
                    |_| {
                        let width = WIDE.min(channels - first);
                        let mut acc = vec![0f64; width];
                        let mut buf = [0f32; BLOCK];
                        for row in x.chunks_exact(channels) {
                            let part = T::read(&row[first..first + width], &mut buf);
                            for (a, &v) in acc.iter_mut().zip(part) {
                                *a += f64::from(v.abs());
                            }
                        }
                        acc
                    },
                )
            })
            .collect()
    } else {
        // Many short rows: each task sums a fixed group of rows into a
        // partial vector; the partials are then added in order.
        let rows_per_task = (CHUNK / channels).max(1);
        let partials: Vec<Vec<f64>> = x
            .par_chunks(rows_per_task * channels)
            .map(|group| {
                super::simd(
                    #[inline(always)]
                    |_| {
                        let mut acc = vec![0f64; channels];
                        let mut buf = [0f32; BLOCK];
                        // Whole rows converted a block at a time; each
                        // channel still adds its rows in order.
                        let rows_per_block = BLOCK / channels;
                        for rows in group.chunks(rows_per_block * channels) {
                            let rows = T::read(rows, &mut buf);
                            for row in rows.chunks_exact(channels) {
                                for (a, &v) in acc.iter_mut().zip(row) {
                                    *a += f64::from(v.abs());
                                }
                            }
                        }
                        acc
                    },
                )
            })
            .collect();
        let mut sums = vec![0f64; channels];
        for partial in &partials {
            for (s, p) in sums.iter_mut().zip(partial) {
                *s += p;
            }
        }
        sums
    };
    sums.into_iter()
        .map(|s| T::round_f32(scalar::mean_abs(s, rows)))
        .collect()
}
