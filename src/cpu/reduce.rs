//! The reductions some quantizers need before their elementwise pass:
//! TWN's Σ|x|, DoReFa's max|tanh x| and Bi-Real's per-channel mean |x|.
//!
//! Sums are accumulated in `f64` over a fixed partition of the tensor and the
//! partial sums added in order, so the result is the same on every run and
//! every thread count. A NaN anywhere in a group makes that group NaN.
//!
//! They read the tensor as the elementwise passes do, [`LANES`] elements at
//! a time widened in registers.

use rayon::prelude::*;

use super::pieces::{bits, patterns};
use super::{CHUNK, lanes, simd};
use crate::element::convert::{LANES, Level};
use crate::element::{DType, Element};
use crate::scalar;

/// Σ|x| over the whole tensor.
pub(super) fn sum_abs<T: Element>(x: &[T]) -> f64 {
    // Each task sums `LOCKSTEP` chunks side by side: the same partial sums,
    // added in the same order, as one chunk at a time, but independent
    // chains of additions for the CPU to overlap (one chunk's eight lanes
    // are one AVX-512 register, and a chain of additions one at a time ran
    // slower than memory). bf16 widens by `widen_opaque`: with the plain
    // shift LLVM's code for these sums ran 10% slower (1.12 → 1.02 ms at
    // 2^24).
    let partials: Vec<[f64; LOCKSTEP]> = x
        .par_chunks(CHUNK * LOCKSTEP)
        .map(|group| {
            simd(
                #[inline(always)]
                |level| sum_abs_lockstep(level, group),
            )
        })
        .collect();
    let count = x.len().div_ceil(CHUNK);
    partials.iter().flatten().take(count).sum()
}

/// Chunks summed side by side by [`sum_abs_lockstep`].
const LOCKSTEP: usize = 4;

/// The partial sums of the (up to) `LOCKSTEP` chunks of `group`, each that
/// of [`sum_abs_serial`] over its chunk; 0 for chunks past the end.
#[inline(always)]
fn sum_abs_lockstep<T: Element>(level: Level, group: &[T]) -> [f64; LOCKSTEP] {
    let mut sums = [0f64; LOCKSTEP];
    if group.len() < CHUNK * LOCKSTEP {
        for (s, chunk) in sums.iter_mut().zip(group.chunks(CHUNK)) {
            *s = sum_abs_serial(level, chunk);
        }
        return sums;
    }
    let mut acc = [[0f64; 8]; LOCKSTEP];
    for i in (0..CHUNK).step_by(LANES) {
        for (k, acc) in acc.iter_mut().enumerate() {
            add_abs(
                acc,
                &T::widen_opaque(level, &lanes(group, k * CHUNK + i, LANES)),
            );
        }
    }
    for (s, acc) in sums.iter_mut().zip(acc) {
        *s = acc.iter().sum::<f64>();
    }
    sums
}

/// Σ|x| of one slice on one thread.
#[inline(always)]
fn sum_abs_serial<T: Element>(level: Level, x: &[T]) -> f64 {
    // Eight independent accumulators let the loop vectorize; element `i`
    // adds to `acc[i % 8]` in order, so the sum stays deterministic. The
    // zeros past the end of the last step add nothing.
    let mut acc = [0f64; 8];
    for i in (0..x.len()).step_by(LANES) {
        let n = LANES.min(x.len() - i);
        add_abs(&mut acc, &T::widen_opaque(level, &lanes(x, i, n)));
    }
    acc.iter().sum::<f64>()
}

/// `acc[j] += |v[8k + j]|` for k = 0, 1, 2, 3 in turn.
#[inline(always)]
fn add_abs(acc: &mut [f64; 8], v: &[f32; LANES]) {
    for group in v.chunks_exact(8) {
        for (a, &v) in acc.iter_mut().zip(group) {
            *a += f64::from(v.abs());
        }
    }
}

/// Mean |x| of each row of `inner` contiguous elements (XNOR-Net's
/// first-axis scale). A row is summed by one thread, in a fixed order.
pub(super) fn row_mean_abs<T: Element>(x: &[T], inner: usize) -> Vec<f32> {
    x.par_chunks(inner)
        .map(|row| {
            let sum = simd(
                #[inline(always)]
                |level| sum_abs_serial(level, row),
            );
            scalar::mean_abs(sum, inner)
        })
        .collect()
}

/// How far below `top` (in units in the last place: `f32` bit patterns) a
/// smaller `|x|` can still have a larger [`scalar::tanh`], which is odd to
/// the bit but not monotone to it: at most 23 ulps below 2, 1167 below 4,
/// 960,690 below the clamp at 7.9 (where `tanh` is within an ulp of 1 and
/// its wiggles span many `x`), none above. `tanh_reach_bounds_every_f32`
/// checks this over every `f32`.
pub(super) fn tanh_reach(top: f32) -> u32 {
    if top < 4.0 { 1 << 11 } else { 1 << 20 }
}

/// max |tanh x| over the whole tensor, NaN if any element is NaN.
pub(super) fn max_abs_tanh<T: Element>(x: &[T]) -> f32 {
    if T::DTYPE != DType::F32
        && let Some(max) = max_abs_tanh_half::<T>(bits(x))
    {
        return max;
    }
    max_abs_tanh_widened(x)
}

/// [`max_abs_tanh`] of any tensor, widened to `f32`.
fn max_abs_tanh_widened<T: Element>(x: &[T]) -> f32 {
    x.par_chunks(CHUNK * LOCKSTEP)
        .map(|group| {
            simd(
                #[inline(always)]
                |level| group_max_abs_tanh(level, group),
            )
        })
        // `max` is order-independent, and so is "any NaN", so this is exact.
        .reduce(|| 0.0, scalar::nan_max)
}

/// max |tanh x| of a group of chunks, evaluating `tanh` (a division) only
/// where it can be the maximum: |tanh x| = tanh |x|, and no `|x|` more than
/// [`tanh_reach`] ulps below the group's largest has a larger `tanh` than
/// that largest one. So a first pass finds the largest `|x|`, reading the
/// chunks side by side as `sum_abs` does, and a second (over a group still
/// in the cache) evaluates `tanh` on the steps that hold an `|x|` that close
/// to it; evaluating it on more lanes than that changes nothing, since none
/// of them exceeds the maximum.
#[inline(always)]
fn group_max_abs_tanh<T: Element>(level: Level, group: &[T]) -> f32 {
    // The zeros past the end of a short step are |x| = tanh |x| = 0.
    let mut top = [0f32; LANES];
    for i in (0..CHUNK).step_by(LANES) {
        for chunk in group.chunks(CHUNK).filter(|c| i < c.len()) {
            let v = T::widen(level, &lanes(chunk, i, LANES.min(chunk.len() - i)));
            for (m, v) in top.iter_mut().zip(v) {
                *m = scalar::nan_max(*m, v.abs());
            }
        }
    }
    let top = top.into_iter().fold(0.0, scalar::nan_max);
    if top.is_nan() {
        return top;
    }
    let near = f32::from_bits(top.to_bits().saturating_sub(tanh_reach(top)));
    let mut max = [0f32; LANES];
    for i in (0..group.len()).step_by(LANES) {
        let v = T::widen(level, &lanes(group, i, LANES.min(group.len() - i)));
        if v.iter().any(|&v| v.abs() >= near) {
            for (m, v) in max.iter_mut().zip(v) {
                *m = m.max(scalar::tanh(v.abs()));
            }
        }
    }
    max.into_iter().fold(0.0, f32::max)
}

/// [`max_abs_tanh`] of a 16-bit tensor, as [`group_max_abs_tanh`] but on
/// bit patterns: |x| of a half is its pattern without the sign bit, and
/// patterns order as magnitudes do, so both passes over a group are
/// integer comparisons (widening every element twice cost as much as
/// reading the tensor). `None` if a NaN is there: the `f32` path then
/// gives the NaN it always gave.
fn max_abs_tanh_half<T: Element>(x: &[u16]) -> Option<f32> {
    let infinity = bits(&[T::from_f32(f32::INFINITY)])[0];
    let value = |h: u16| patterns::<T>(&[h])[0].to_f32();
    x.par_chunks(CHUNK * LOCKSTEP)
        .map(|group| {
            simd(
                #[inline(always)]
                |_| {
                    let top = group.iter().fold(0, |m, &h| m.max(h & 0x7fff));
                    if top > infinity {
                        return None;
                    }
                    // The smallest magnitude within `tanh_reach` of the top.
                    let t = value(top);
                    let near = f32::from_bits(t.to_bits().saturating_sub(tanh_reach(t)));
                    let mut low = top;
                    while low > 0 && value(low - 1) >= near {
                        low -= 1;
                    }
                    if low == top {
                        // Below 4, where `tanh`'s reach is under an ulp of
                        // either type: only the top itself can be the max.
                        return Some(scalar::tanh(value(top)));
                    }
                    let mut max = 0f32;
                    for step in group.chunks(LANES) {
                        // A fold (vectorized), not `any` (a loop that stops).
                        let lanes = lanes(step, 0, step.len());
                        if lanes.iter().fold(0, |m, &h| m.max(h & 0x7fff)) >= low {
                            for &h in step.iter().filter(|&&h| h & 0x7fff >= low) {
                                max = max.max(scalar::tanh(value(h & 0x7fff)));
                            }
                        }
                    }
                    Some(max)
                },
            )
        })
        .try_reduce(|| 0.0, |a, b| Some(a.max(b)))
}

/// Channels at least this wide are summed in parallel by channel ranges
/// instead of by row ranges.
const WIDE: usize = 1024;

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
                simd(
                    #[inline(always)]
                    |level| {
                        let mut acc = vec![0f64; WIDE.min(channels - first)];
                        for row in x.chunks_exact(channels) {
                            add_abs_rows(level, &row[first..first + acc.len()], &mut acc);
                        }
                        acc
                    },
                )
            })
            .collect()
    } else {
        // Many short rows: each group of rows is summed into a partial
        // vector, and the partials are then added in order. A task takes
        // `LOCKSTEP` groups a step at a time each, in turn: the same
        // additions in the same order, but as many streams of reads in
        // flight instead of one (one stream ran at a third of `sum_abs`'s
        // speed past the cache).
        let group = (CHUNK / channels).max(1) * channels;
        let partials: Vec<Vec<f64>> = x
            .par_chunks(group * LOCKSTEP)
            .flat_map_iter(|groups| {
                simd(
                    #[inline(always)]
                    |level| {
                        if T::DTYPE != DType::F32 && channels.is_multiple_of(LANES) {
                            channel_sums_by_columns(level, groups, group, channels)
                        } else {
                            channel_sums_by_steps(level, groups, group, channels)
                        }
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

/// The channel sums of each group of `group` elements in `groups` (whole
/// rows of `channels`; the last group may be shorter), the groups a step at
/// a time each, in turn.
#[inline(always)]
fn channel_sums_by_steps<T: Element>(
    level: Level,
    groups: &[T],
    group: usize,
    channels: usize,
) -> Vec<Vec<f64>> {
    let mut parts: Vec<_> = groups
        .chunks(group)
        .map(|g| (g, vec![0f64; channels], 0))
        .collect();
    for i in (0..group).step_by(LANES) {
        for (g, acc, c) in &mut parts {
            if i < g.len() {
                add_abs_step(level, g, i, c, acc);
            }
        }
    }
    parts.into_iter().map(|(_, acc, _)| acc).collect()
}

/// [`channel_sums_by_steps`]' sums where `channels` is a multiple of
/// `LANES`, as that makes them: each channel adds its rows in order. They
/// are taken a column of channels at a time down the rows, several groups
/// side by side, so the sums stay in registers instead of going through a
/// store and a load at each step. That pays in halves, where the
/// conversions bound the sums (64 channels at 2^24: bf16 1.41 → 1.19 ms,
/// f16 unchanged at 1.12); `f32` sums read at memory speed by rows, and
/// the columns' strided reads were slower there (1.50 → 1.75 ms). A column
/// is two blocks of `LANES` channels where the rows have them, so that a
/// row's 64 halves are read together: with one block at a time each line
/// of a row was read in a pass of its own, which past the L3 ran slower
/// than the steps (`magnitude_aware_sign`'s f16 forward at 2^30: 0.44 of a
/// copy, 0.51 by steps, 0.55 by two blocks; medians of alternated runs).
#[inline(always)]
fn channel_sums_by_columns<T: Element>(
    level: Level,
    groups: &[T],
    group: usize,
    channels: usize,
) -> Vec<Vec<f64>> {
    if channels.is_multiple_of(2 * LANES) {
        columns::<T, 2, 2>(level, groups, group, channels)
    } else {
        columns::<T, 1, LOCKSTEP>(level, groups, group, channels)
    }
}

/// [`channel_sums_by_columns`] with columns of `W` blocks, `K` groups side
/// by side (`K · W` is 4: 16 AVX-512 registers of sums).
#[inline(always)]
fn columns<T: Element, const W: usize, const K: usize>(
    level: Level,
    groups: &[T],
    group: usize,
    channels: usize,
) -> Vec<Vec<f64>> {
    let parts: Vec<&[T]> = groups.chunks(group).collect();
    let mut sums = vec![vec![0f64; channels]; parts.len()];
    for (parts, sums) in parts.chunks(K).zip(sums.chunks_mut(K)) {
        let whole = <[&[T]; K]>::try_from(parts)
            .ok()
            .filter(|parts| parts.iter().all(|p| p.len() == group));
        for first in (0..channels).step_by(W * LANES) {
            match whole {
                Some(parts) => {
                    let acc = column_sums::<T, W, K>(level, parts, first, channels);
                    for (sums, acc) in sums.iter_mut().zip(acc) {
                        sums[first..first + W * LANES].copy_from_slice(acc.as_flattened());
                    }
                }
                // The tensor's last groups (fewer, or short): one at a time.
                None => {
                    for (sums, &part) in sums.iter_mut().zip(parts) {
                        let [acc] = column_sums::<T, W, 1>(level, [part], first, channels);
                        sums[first..first + W * LANES].copy_from_slice(acc.as_flattened());
                    }
                }
            }
        }
    }
    sums
}

/// The sums of channels `first..first + W · LANES` down the whole rows of
/// each of `parts`, which have as many rows each.
#[inline(always)]
fn column_sums<T: Element, const W: usize, const K: usize>(
    level: Level,
    parts: [&[T]; K],
    first: usize,
    channels: usize,
) -> [[[f64; LANES]; W]; K] {
    let mut acc = [[[0f64; LANES]; W]; K];
    for row in 0..parts[0].len() / channels {
        for (acc, part) in acc.iter_mut().zip(parts) {
            for (w, acc) in acc.iter_mut().enumerate() {
                let at = row * channels + first + w * LANES;
                add_abs_lanes(acc, &T::widen_opaque(level, &lanes(part, at, LANES)));
            }
        }
    }
    acc
}

/// `acc[j] += |v[j]|`.
#[inline(always)]
fn add_abs_lanes(acc: &mut [f64; LANES], v: &[f32; LANES]) {
    for (a, &v) in acc.iter_mut().zip(v) {
        *a += f64::from(v.abs());
    }
}

/// Adds `|x|` of each element of `src`, whole rows of `acc.len()` elements,
/// to its channel's `acc`, in the order of `src`: each channel adds its rows
/// in order.
#[inline(always)]
fn add_abs_rows<T: Element>(level: Level, src: &[T], acc: &mut [f64]) {
    let mut c = 0;
    for i in (0..src.len()).step_by(LANES) {
        add_abs_step(level, src, i, &mut c, acc);
    }
}

/// One step of [`add_abs_rows`]: elements `i..i + LANES` of `src` (or to
/// its end) added to the channels from `c` on, which then moves on. A step
/// that lies within one row adds as one vector.
#[inline(always)]
fn add_abs_step<T: Element>(level: Level, src: &[T], i: usize, c: &mut usize, acc: &mut [f64]) {
    let channels = acc.len();
    let n = LANES.min(src.len() - i);
    // Widened in each arm: widened before the branch, the values went
    // through the stack for the lane-by-lane arm (in bf16, half the speed).
    match acc.get_mut(*c..).and_then(|a| a.first_chunk_mut::<LANES>()) {
        Some(run) if n == LANES => {
            let v = T::widen(level, &lanes(src, i, LANES));
            for (a, v) in run.iter_mut().zip(v) {
                *a += f64::from(v.abs());
            }
            *c += LANES;
        }
        _ => {
            let v = T::widen(level, &lanes(src, i, n));
            for v in &v[..n] {
                acc[*c] += f64::from(v.abs());
                *c = if *c + 1 == channels { 0 } else { *c + 1 };
            }
        }
    }
    if *c == channels {
        *c = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    /// Half tensors whose largest |x| lies where `tanh` wiggles (below 2,
    /// 4 and the clamp), at +∞, among many smaller values, with zeros, and
    /// with a NaN: the patterns give what widening gives.
    #[test]
    fn max_abs_tanh_on_patterns_is_that_of_the_widened_values() {
        fn check<T: Element>() {
            let mut seed = 12345u32;
            for top in [
                0.0,
                1e-3,
                1.999,
                3.99,
                4.0,
                6.5,
                7.9,
                7.95,
                100.0,
                f32::INFINITY,
            ] {
                let mut x: Vec<T> = (0..3 * CHUNK * LOCKSTEP + 5)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        // Mostly within 1% of `top`, of either sign.
                        let u = (seed >> 8) as f32 / (1 << 24) as f32;
                        let v = top * (1.0 - u * u * u * 0.01);
                        T::from_f32(if seed & 1 == 0 { v } else { -v })
                    })
                    .collect();
                let half = max_abs_tanh_half::<T>(bits(&x));
                assert_eq!(
                    half.map(f32::to_bits),
                    Some(max_abs_tanh_widened(&x).to_bits())
                );
                x[CHUNK + 7] = T::from_f32(f32::NAN);
                assert_eq!(max_abs_tanh_half::<T>(bits(&x)), None);
                assert!(max_abs_tanh(&x).is_nan());
            }
        }
        check::<f16>();
        check::<bf16>();
    }

    /// The column sums are the step sums, bit for bit: finite values over
    /// the type's whole range (where bf16 shows the order of additions),
    /// tasks of `LOCKSTEP` whole groups, and a last task of fewer groups,
    /// the last of them short. With NaNs, the same channels are NaN (which
    /// NaN is the order the compiler gave each addition's operands).
    #[test]
    fn channel_sums_by_columns_are_those_by_steps() {
        fn check<T: Element>(from_bits: impl Fn(u16) -> T, infinity: u16) {
            let mut seed = 0x2545_f491u32;
            for channels in [32, 64, 96, 512] {
                let group = (CHUNK / channels).max(1) * channels;
                let len = group * (LOCKSTEP + 1) + 7 * channels;
                let mut x: Vec<T> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        from_bits(((seed as u16) % infinity) | ((seed >> 16) as u16 & 0x8000))
                    })
                    .collect();
                for nans in [false, true] {
                    if nans {
                        x[3 * channels + 5] = from_bits(infinity | 1);
                        x[len - 1] = from_bits(0xffff);
                    }
                    for groups in x.chunks(group * LOCKSTEP) {
                        let (by_columns, by_steps) = simd(|level| {
                            (
                                channel_sums_by_columns(level, groups, group, channels),
                                channel_sums_by_steps(level, groups, group, channels),
                            )
                        });
                        let bits = |v: Vec<Vec<f64>>| -> Vec<u64> {
                            let canonical = |s: f64| if s.is_nan() { f64::NAN } else { s };
                            v.into_iter()
                                .flatten()
                                .map(|s| canonical(s).to_bits())
                                .collect()
                        };
                        assert_eq!(
                            bits(by_columns),
                            bits(by_steps),
                            "{:?} {channels} NaNs {nans}",
                            T::DTYPE
                        );
                    }
                }
            }
        }
        check(f16::from_bits, 0x7c00);
        check(bf16::from_bits, 0x7f80);
    }

    /// Every `b ≥ 0` (NaN aside): `tanh(−b) = −tanh(b)` to the bit, and no
    /// `a` more than `tanh_reach(b)` patterns below `b` has `tanh(a) >
    /// tanh(b)`. Exhaustive, so slow (2^31 values, minutes in release):
    /// `cargo test --release --lib -- --ignored tanh_reach`.
    #[test]
    #[ignore]
    fn tanh_reach_bounds_every_f32() {
        const FAR: u32 = 1 << 20;
        assert!(
            (0..=u32::MAX)
                .step_by(1 << 12)
                .all(|b| tanh_reach(f32::from_bits(b)) <= FAR)
        );
        // tanh of the last FAR + 1 patterns, and the largest tanh of all the
        // patterns before each lag.
        let mut ring = vec![0f32; FAR as usize + 1];
        let mut below = [f32::NEG_INFINITY; 2];
        for b in 0..=f32::INFINITY.to_bits() {
            let x = f32::from_bits(b);
            let t = scalar::tanh(x);
            assert_eq!(
                scalar::tanh(-x).to_bits(),
                (-t).to_bits(),
                "tanh is odd at {x}"
            );
            let reach = tanh_reach(x);
            for (lag, max) in [1 << 11, FAR].into_iter().zip(&mut below) {
                if let Some(a) = b.checked_sub(lag + 1) {
                    *max = max.max(ring[(a % (FAR + 1)) as usize]);
                }
                if lag == reach {
                    assert!(
                        *max <= t,
                        "a tanh more than {reach} ulps below {x} exceeds it"
                    );
                }
            }
            ring[(b % (FAR + 1)) as usize] = t;
        }
    }
}
