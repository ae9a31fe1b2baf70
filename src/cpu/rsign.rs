//! `rsign` on the CPU: the elementwise passes with one threshold α per
//! channel, and `dα_c = −Σ dx` over each channel.
//!
//! dα is summed in `f64` over exactly the partition and order of the CUDA
//! kernels (`rsign_dalpha_*` in `kernels/reduce.cu`), so both backends give
//! the same bits, not merely close ones.

use rayon::prelude::*;

use super::{Dims, Reduced, lanes, map1, map2, simd};
use crate::element::Element;
use crate::element::convert;
use crate::op::{Elementwise, Index};
use crate::scalar;

/// Threads in the CUDA reductions' fixed grid (`LOWBIT_REDUCE_BLOCKS ×
/// LOWBIT_REDUCE_THREADS`; the plan tests check these against the header).
pub(crate) const GRID_THREADS: usize = 256 * 256;
/// Lanes of a block-wide combine (`LOWBIT_REDUCE_THREADS`).
pub(crate) const LANES: usize = 256;
/// From this many row groups on, a channel's partials are combined in
/// [`LANES`] lanes and a tree (`LOWBIT_CHANNEL_TREE_GROUPS`), below it in
/// group order.
pub(crate) const TREE_GROUPS: usize = 32;

/// Row groups of the per-channel sums (`LOWBIT_CHANNEL_GROUPS`): enough that
/// `groups × channels` items fill the GPU's grid, never more than the rows.
pub(crate) fn channel_groups(rows: usize, channels: usize) -> usize {
    if channels == 0 {
        0
    } else {
        rows.min(GRID_THREADS.div_ceil(channels))
    }
}

/// `rsign`'s element, with α the value of each element's channel.
#[derive(Clone, Copy)]
struct RSign;

impl Elementwise for RSign {
    const INDEX: Index = Index::Channel;
    #[inline(always)]
    fn fwd(self, x: f32, alpha: f32) -> f32 {
        scalar::rsign(x, alpha)
    }
    #[inline(always)]
    fn bwd(self, x: f32, dy: f32, alpha: f32) -> f32 {
        scalar::rsign_grad(x, dy, alpha)
    }
}

/// `y = sign(x − α_c)`. Lengths were checked: `alpha` holds one value per
/// channel and the channels divide `x`.
pub(crate) fn forward<T: Element>(x: &[T], alpha: &[T], y: &mut [T]) {
    let (alpha, dims) = thresholds(alpha);
    map1(RSign, x, y, &alpha, dims)
}

/// `dx` (ApproxSign's gradient at `x − α_c`), then `dα_c = −Σ dx` over the
/// channel, summed from `dx` as stored in `T`.
pub(crate) fn backward<T: Element>(x: &[T], alpha: &[T], dy: &[T], dx: &mut [T], dalpha: &mut [T]) {
    let (a, dims) = thresholds(alpha);
    map2(RSign, x, dy, dx, &a, dims);
    for (d, sum) in dalpha.iter_mut().zip(channel_sums(dx, alpha.len())) {
        *d = T::from_f32(scalar::rsign_dalpha(sum));
    }
}

/// α widened, as the channel values of the elementwise passes.
fn thresholds<T: Element>(alpha: &[T]) -> (Reduced, Dims) {
    let channels = alpha.len();
    let alpha = alpha.iter().map(|a| a.to_f32()).collect();
    (Reduced::Each(alpha), Dims { channels, inner: 0 })
}

/// Partial sums each task of [`channel_sums`] owns.
const ITEMS_PER_TASK: usize = 1024;

/// Σ of each channel of `v` (rows × `channels`, row-major), in the CUDA
/// kernels' order:
///
/// 1. Item `k = g·channels + c` of `items = groups·channels` sums elements
///    `k, k + items, k + 2·items, …` in that order: rows `g, g + groups, …`
///    of channel `c`. In other words the tensor is cut into slabs of
///    `items` elements and the slabs are added one after the other.
/// 2. Channel `c` adds its `groups` partials: in group order when there are
///    fewer than [`TREE_GROUPS`]; otherwise lane `t` of [`LANES`] adds groups
///    `t, t + LANES, …` in order and the lanes are combined by halving
///    (`lane[t] += lane[t + s]` for s = 128, 64, …, 1).
pub(crate) fn channel_sums<T: Element>(v: &[T], channels: usize) -> Vec<f64> {
    let rows = v.len().checked_div(channels).unwrap_or(0);
    let groups = channel_groups(rows, channels);
    let items = groups * channels;
    if items == 0 {
        return vec![0.0; channels];
    }
    let mut partials = vec![0f64; items];
    // Each task owns a range of items across every slab, so no two tasks
    // touch the same partial and each partial adds its slabs in order.
    partials
        .par_chunks_mut(ITEMS_PER_TASK)
        .enumerate()
        .for_each(|(task, part)| {
            let first = task * ITEMS_PER_TASK;
            simd(
                #[inline(always)]
                |level| {
                    for slab in v.chunks(items) {
                        // Only the last slab can be short.
                        let end = slab.len().min(first + part.len());
                        if end <= first {
                            break;
                        }
                        let vals = &slab[first..end];
                        for (i, part) in part[..vals.len()].chunks_mut(convert::LANES).enumerate() {
                            let i = i * convert::LANES;
                            let x = T::widen(level, &lanes(vals, i, part.len()));
                            for (p, &x) in part.iter_mut().zip(&x) {
                                *p += f64::from(x);
                            }
                        }
                    }
                },
            )
        });
    (0..channels)
        .into_par_iter()
        .map(|c| {
            let group = |g: usize| partials[g * channels + c];
            if groups < TREE_GROUPS {
                (0..groups).map(group).fold(0.0, |s, p| s + p)
            } else {
                let mut lanes = [0f64; LANES];
                for g in 0..groups {
                    lanes[g % LANES] += group(g);
                }
                let mut half = LANES / 2;
                while half > 0 {
                    for t in 0..half {
                        lanes[t] += lanes[t + half];
                    }
                    half /= 2;
                }
                lanes[0]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_fill_the_grid_but_never_exceed_the_rows() {
        assert_eq!(channel_groups(10, 0), 0);
        assert_eq!(channel_groups(0, 5), 0);
        assert_eq!(channel_groups(1_000_000, 1), GRID_THREADS);
        assert_eq!(channel_groups(1_000_000, 3000), 22);
        assert_eq!(channel_groups(7, 1), 7);
        assert_eq!(channel_groups(5, 1 << 20), 1);
    }

    #[test]
    fn channel_sums_add_up_every_row() {
        // Small integers: every order gives the exact sum.
        for (rows, channels) in [(1, 1), (70_000, 1), (100_001, 3), (40, 3000), (3, 5)] {
            let v: Vec<f32> = (0..rows * channels).map(|i| (i % 7) as f32 - 3.0).collect();
            let sums = channel_sums(&v, channels);
            for (c, &s) in sums.iter().enumerate() {
                let want: f64 = (0..rows).map(|r| f64::from(v[r * channels + c])).sum();
                assert_eq!(s, want, "rows {rows} channels {channels} channel {c}");
            }
        }
        assert_eq!(channel_sums::<f32>(&[], 4), [0.0; 4]);
        assert!(channel_sums::<f32>(&[], 0).is_empty());
    }

    /// `rsign_dalpha_partial` and `rsign_dalpha_finalize` of kernels/reduce.cu
    /// transliterated loop for loop: grid-stride items, strided folds, and
    /// for many groups one block per channel with its shared-memory tree.
    fn kernel_model(v: &[f32], channels: usize) -> Vec<f64> {
        let rows = v.len() / channels;
        let groups = channel_groups(rows, channels);
        let items = groups * channels;
        let mut partials = vec![0f64; items];
        for thread in 0..GRID_THREADS {
            let mut k = thread;
            while k < items {
                let (mut acc, mut i) = (0.0, k);
                while i < v.len() {
                    acc += f64::from(v[i]);
                    i += items;
                }
                partials[k] = acc;
                k += GRID_THREADS;
            }
        }
        (0..channels)
            .map(|c| {
                if groups < TREE_GROUPS {
                    let mut sum = 0.0;
                    for g in 0..groups {
                        sum += partials[g * channels + c];
                    }
                    return sum;
                }
                let mut buf = [0f64; LANES];
                for (t, slot) in buf.iter_mut().enumerate() {
                    let mut g = t;
                    while g < groups {
                        *slot += partials[g * channels + c];
                        g += LANES;
                    }
                }
                let mut s = LANES / 2;
                while s > 0 {
                    for t in 0..s {
                        buf[t] += buf[t + s];
                    }
                    s /= 2;
                }
                buf[0]
            })
            .collect()
    }

    #[test]
    fn channel_sums_add_in_the_kernels_order() {
        // Magnitudes from 2^-30 to 2^10, so that the f64 sums round and
        // another order shows in the bits.
        for (rows, channels) in [(200_003, 1), (3001, 64), (40, 3000), (70, 1000), (2, 7)] {
            let v: Vec<f32> = (0..rows * channels)
                .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 2f32.powi((i % 41) as i32 - 30))
                .collect();
            let got: Vec<u64> = channel_sums(&v, channels)
                .iter()
                .map(|s| s.to_bits())
                .collect();
            let want: Vec<u64> = kernel_model(&v, channels)
                .iter()
                .map(|s| s.to_bits())
                .collect();
            assert_eq!(got, want, "rows {rows} channels {channels}");
        }
    }
}
