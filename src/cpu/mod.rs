//! The CPU path: the scalar definitions of [`crate::scalar`] mapped over
//! slices, in parallel with rayon.
//!
//! Work is split into fixed chunks of [`CHUNK`] elements, whatever the thread
//! count, so reductions add in the same order on every machine and every run:
//! the same input gives the same bits. Inside a chunk, half-precision data is
//! converted [`BLOCK`] elements at a time into `f32` buffers on the stack, and
//! the loops over those buffers are plain zips the compiler vectorizes.

pub(crate) mod bits;
pub(crate) mod mask;
pub(crate) mod pool;
mod reduce;
pub(crate) mod rsign;

use rayon::prelude::*;

use crate::element::Element;
use crate::quantizer::{DorefaMode, Kind, Quantizer};
use crate::scalar;

/// Elements per parallel task (and per partial sum of a reduction).
const CHUNK: usize = 1 << 15;
/// Elements converted to `f32` at a time.
const BLOCK: usize = 1024;

// The inner closures are `move`: they copy the quantizer's parameters into
// their own state, which the compiler keeps in registers. Captured by
// reference, the parameters are reloaded from memory on every element and
// the loop does not vectorize. All are `#[inline(always)]` so that they end
// up inside `simd`'s AVX2 function and are compiled for it.

/// `y = q(x)`. Buffers have equal lengths and `channels` divides them (the
/// caller checked); `channels` is only read by magnitude_aware_sign.
pub(crate) fn forward<T: Element>(q: &Quantizer, x: &[T], channels: usize, y: &mut [T]) {
    match q.kind() {
        Kind::SteSign { .. } | Kind::ApproxSign | Kind::SwishSign { .. } | Kind::Ede { .. } => {
            map1(
                x,
                y,
                #[inline(always)]
                |x, y, _| each1(x, y, scalar::sign),
            )
        }
        Kind::SteHeaviside { .. } => map1(
            x,
            y,
            #[inline(always)]
            |x, y, _| each1(x, y, scalar::heaviside),
        ),
        Kind::MagnitudeAwareSign { .. } => {
            let scales = reduce::channel_mean_abs(x, channels);
            map1(
                x,
                y,
                #[inline(always)]
                |x, y, offset| each1_channels(x, y, offset, &scales, scalar::magnitude_aware_sign),
            )
        }
        Kind::SteTern {
            threshold_value,
            ternary_weight_networks,
            ..
        } => {
            let threshold = tern_threshold(x, threshold_value, ternary_weight_networks);
            map1(
                x,
                y,
                #[inline(always)]
                |x, y, _| {
                    each1(
                        x,
                        y,
                        #[inline(always)]
                        move |x| scalar::ternarize(x, threshold),
                    )
                },
            )
        }
        Kind::DoReFa { k_bit, mode } => {
            let n = scalar::dorefa_levels(k_bit);
            match mode {
                DorefaMode::Activations => map1(
                    x,
                    y,
                    #[inline(always)]
                    |x, y, _| {
                        each1(
                            x,
                            y,
                            #[inline(always)]
                            move |x| scalar::dorefa_quantize(x, n),
                        )
                    },
                ),
                DorefaMode::Weights => {
                    let max = reduce::max_abs_tanh(x);
                    map1(
                        x,
                        y,
                        #[inline(always)]
                        |x, y, _| {
                            each1(
                                x,
                                y,
                                #[inline(always)]
                                move |x| scalar::dorefa_weights(x, max, n),
                            )
                        },
                    )
                }
            }
        }
        // A copy, not a round trip through f32, so NaN payloads survive.
        Kind::NoOp { .. } => copy(x, y),
        Kind::RSign => unreachable!("rsign needs α: the plain calls refuse it (api::check_plain)"),
    }
}

/// ste_tern's threshold as the elements see it: TWN's from `x` or the fixed
/// one, rounded to `T` as larq casts it.
fn tern_threshold<T: Element>(x: &[T], threshold_value: f32, twn: bool) -> f32 {
    let threshold = if twn {
        scalar::twn_threshold(reduce::sum_abs(x), x.len())
    } else {
        threshold_value
    };
    T::round_f32(threshold)
}

/// `dx = dq/dx · dy`, with the same preconditions as [`forward`].
pub(crate) fn backward<T: Element>(
    q: &Quantizer,
    x: &[T],
    dy: &[T],
    channels: usize,
    dx: &mut [T],
) {
    match q.kind() {
        Kind::SteSign { clip_value }
        | Kind::SteHeaviside {
            clip_value,
            unipolar: false,
        }
        | Kind::SteTern { clip_value, .. } => match clip_value {
            None => copy(dy, dx),
            Some(clip) => {
                let clip = Some(T::round_f32(clip));
                map2(
                    x,
                    dy,
                    dx,
                    #[inline(always)]
                    |x, dy, dx, _| {
                        each2(
                            x,
                            dy,
                            dx,
                            #[inline(always)]
                            move |x, dy| scalar::ste_grad(x, dy, clip),
                        )
                    },
                )
            }
        },
        Kind::SteHeaviside {
            clip_value,
            unipolar: true,
        } => {
            let clip = clip_value.map(T::round_f32);
            map2(
                x,
                dy,
                dx,
                #[inline(always)]
                |x, dy, dx, _| {
                    each2(
                        x,
                        dy,
                        dx,
                        #[inline(always)]
                        move |x, dy| scalar::ste_unipolar_grad(x, dy, clip),
                    )
                },
            )
        }
        Kind::Ede { t } => map2(
            x,
            dy,
            dx,
            #[inline(always)]
            |x, dy, dx, _| {
                each2(
                    x,
                    dy,
                    dx,
                    #[inline(always)]
                    move |x, dy| scalar::ede_grad(x, dy, t),
                )
            },
        ),
        Kind::ApproxSign => map2(
            x,
            dy,
            dx,
            #[inline(always)]
            |x, dy, dx, _| each2(x, dy, dx, scalar::approx_sign_grad),
        ),
        Kind::SwishSign { beta } => map2(
            x,
            dy,
            dx,
            #[inline(always)]
            |x, dy, dx, _| {
                each2(
                    x,
                    dy,
                    dx,
                    #[inline(always)]
                    move |x, dy| scalar::swish_sign_grad(x, dy, beta),
                )
            },
        ),
        Kind::MagnitudeAwareSign { clip_value } => {
            let clip = clip_value.map(T::round_f32);
            let scales = reduce::channel_mean_abs(x, channels);
            map2(
                x,
                dy,
                dx,
                #[inline(always)]
                |x, dy, dx, offset| {
                    each2_channels(
                        x,
                        dy,
                        dx,
                        offset,
                        &scales,
                        #[inline(always)]
                        move |x, dy, s| scalar::magnitude_aware_sign_grad(x, dy, s, clip),
                    )
                },
            )
        }
        Kind::DoReFa { mode, .. } => match mode {
            DorefaMode::Activations => map2(
                x,
                dy,
                dx,
                #[inline(always)]
                |x, dy, dx, _| each2(x, dy, dx, scalar::dorefa_activations_grad),
            ),
            DorefaMode::Weights => {
                let max = reduce::max_abs_tanh(x);
                map2(
                    x,
                    dy,
                    dx,
                    #[inline(always)]
                    |x, dy, dx, _| {
                        each2(
                            x,
                            dy,
                            dx,
                            #[inline(always)]
                            move |x, dy| scalar::dorefa_weights_grad(x, dy, max),
                        )
                    },
                )
            }
        },
        Kind::NoOp { .. } => copy(dy, dx),
        Kind::RSign => unreachable!("rsign needs α: the plain calls refuse it (api::check_plain)"),
    }
}

/// `y = α_r·sign(x)` for a sign quantizer with [`WeightScale::FirstAxis`]:
/// `α_r` is the mean |x| of row `r`, the `inner` contiguous elements of one
/// first-axis index.
///
/// [`WeightScale::FirstAxis`]: crate::WeightScale::FirstAxis
pub(crate) fn forward_scaled<T: Element>(x: &[T], inner: usize, y: &mut [T]) {
    if inner == 0 {
        return;
    }
    let scales = reduce::row_mean_abs(x, inner);
    map1(
        x,
        y,
        #[inline(always)]
        |x, y, offset| each1_rows(x, y, offset, inner, &scales, scalar::magnitude_aware_sign),
    )
}

/// The scaled sign's gradient: the quantizer's own gradient of `α_r·dy`,
/// `α_r` held constant (as `magnitude_aware_sign` does with its scale).
pub(crate) fn backward_scaled<T: Element>(
    q: &Quantizer,
    x: &[T],
    dy: &[T],
    inner: usize,
    dx: &mut [T],
) {
    if inner == 0 {
        return;
    }
    let scales = reduce::row_mean_abs(x, inner);
    let s = &scales;
    match q.kind() {
        Kind::SteSign { clip_value } => {
            let clip = clip_value.map(T::round_f32);
            map2_rows(x, dy, dx, inner, s, move |x, dy, s| {
                scalar::ste_grad(x, s * dy, clip)
            })
        }
        Kind::ApproxSign => map2_rows(x, dy, dx, inner, s, |x, dy, s| {
            scalar::approx_sign_grad(x, s * dy)
        }),
        Kind::SwishSign { beta } => map2_rows(x, dy, dx, inner, s, move |x, dy, s| {
            scalar::swish_sign_grad(x, s * dy, beta)
        }),
        // Quantizer::with_scale admits only the sign family.
        _ => unreachable!("{} takes no weight scale", q.name()),
    }
}

/// [`map2`] with `f(x, dy, α_r)`, `α_r` the scale of the element's row.
fn map2_rows<T: Element>(
    x: &[T],
    dy: &[T],
    dx: &mut [T],
    inner: usize,
    scales: &[f32],
    f: impl Fn(f32, f32, f32) -> f32 + Copy + Sync,
) {
    map2(
        x,
        dy,
        dx,
        #[inline(always)]
        |x, dy, dx, offset| each2_rows(x, dy, dx, offset, inner, scales, f),
    )
}

fn copy<T: Element>(src: &[T], dst: &mut [T]) {
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// Calls `f(x, y, offset)` on `f32` views of matching blocks of `x` and `y`;
/// `offset` is the index of the block's first element in the whole tensor.
fn map1<T: Element>(x: &[T], y: &mut [T], f: impl Fn(&[f32], &mut [f32], usize) + Sync) {
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(chunk, (y, x))| {
            simd(
                #[inline(always)]
                || {
                    let mut x_buf = [0f32; BLOCK];
                    let mut y_buf = [0f32; BLOCK];
                    for (block, (y, x)) in y.chunks_mut(BLOCK).zip(x.chunks(BLOCK)).enumerate() {
                        let x = T::read(x, &mut x_buf);
                        T::write(
                            y,
                            &mut y_buf,
                            #[inline(always)]
                            |y| f(x, y, chunk * CHUNK + block * BLOCK),
                        );
                    }
                },
            )
        });
}

/// [`map1`] with two inputs.
fn map2<T: Element>(
    x: &[T],
    dy: &[T],
    dx: &mut [T],
    f: impl Fn(&[f32], &[f32], &mut [f32], usize) + Sync,
) {
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .enumerate()
        .for_each(|(chunk, (dx, (x, dy)))| {
            simd(
                #[inline(always)]
                || {
                    let mut x_buf = [0f32; BLOCK];
                    let mut dy_buf = [0f32; BLOCK];
                    let mut dx_buf = [0f32; BLOCK];
                    let blocks = dx
                        .chunks_mut(BLOCK)
                        .zip(x.chunks(BLOCK).zip(dy.chunks(BLOCK)));
                    for (block, (dx, (x, dy))) in blocks.enumerate() {
                        let x = T::read(x, &mut x_buf);
                        let dy = T::read(dy, &mut dy_buf);
                        T::write(
                            dx,
                            &mut dx_buf,
                            #[inline(always)]
                            |dx| f(x, dy, dx, chunk * CHUNK + block * BLOCK),
                        );
                    }
                },
            )
        });
}

/// Runs `f` compiled for AVX2 where the CPU has it, so the loops inlined
/// into it vectorize eight lanes wide instead of SSE2's four. The bits do not
/// change: Rust never contracts `a * b + c` into an FMA, whatever the target.
#[inline(always)]
pub(super) fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { avx2(f) };
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[inline(always)]
fn each1(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = f(x);
    }
}

#[inline(always)]
fn each2(x: &[f32], dy: &[f32], dx: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    for (dx, (&x, &dy)) in dx.iter_mut().zip(x.iter().zip(dy)) {
        *dx = f(x, dy);
    }
}

/// Splits a block that starts at tensor index `offset` into runs that each
/// lie within one row of `channels` elements: `(start in block, first channel,
/// length)`. Within a run, element `i` has channel `first + i`, so the loops
/// over a run are plain zips.
fn channel_runs(
    len: usize,
    offset: usize,
    channels: usize,
) -> impl Iterator<Item = (usize, usize, usize)> {
    let mut start = 0;
    let mut channel = offset % channels.max(1);
    std::iter::from_fn(move || {
        if start >= len {
            return None;
        }
        let run = (channels - channel).min(len - start);
        let item = (start, channel, run);
        start += run;
        channel = 0;
        Some(item)
    })
}

#[inline(always)]
fn each1_channels(
    x: &[f32],
    y: &mut [f32],
    offset: usize,
    scales: &[f32],
    f: impl Fn(f32, f32) -> f32,
) {
    for (start, channel, len) in channel_runs(x.len(), offset, scales.len()) {
        let x = &x[start..start + len];
        let y = &mut y[start..start + len];
        let s = &scales[channel..channel + len];
        for (y, (&x, &s)) in y.iter_mut().zip(x.iter().zip(s)) {
            *y = f(x, s);
        }
    }
}

#[inline(always)]
fn each2_channels(
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    offset: usize,
    scales: &[f32],
    f: impl Fn(f32, f32, f32) -> f32,
) {
    for (start, channel, len) in channel_runs(x.len(), offset, scales.len()) {
        let range = start..start + len;
        let (x, dy, dx) = (&x[range.clone()], &dy[range.clone()], &mut dx[range]);
        let s = &scales[channel..channel + len];
        for (dx, ((&x, &dy), &s)) in dx.iter_mut().zip(x.iter().zip(dy).zip(s)) {
            *dx = f(x, dy, s);
        }
    }
}

/// [`each1_channels`] for a per-row scale: rows of `inner` elements.
#[inline(always)]
fn each1_rows(
    x: &[f32],
    y: &mut [f32],
    offset: usize,
    inner: usize,
    scales: &[f32],
    f: impl Fn(f32, f32) -> f32,
) {
    // channel_runs with `inner` as the row width splits at row boundaries.
    for (start, _, len) in channel_runs(x.len(), offset, inner) {
        let s = scales[(offset + start) / inner];
        for (y, &x) in y[start..start + len].iter_mut().zip(&x[start..start + len]) {
            *y = f(x, s);
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn each2_rows(
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    offset: usize,
    inner: usize,
    scales: &[f32],
    f: impl Fn(f32, f32, f32) -> f32,
) {
    for (start, _, len) in channel_runs(x.len(), offset, inner) {
        let s = scales[(offset + start) / inner];
        let range = start..start + len;
        let (x, dy, dx) = (&x[range.clone()], &dy[range.clone()], &mut dx[range]);
        for (dx, (&x, &dy)) in dx.iter_mut().zip(x.iter().zip(dy)) {
            *dx = f(x, dy, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::channel_runs;

    #[test]
    fn channel_runs_cover_the_block_row_by_row() {
        let runs: Vec<_> = channel_runs(10, 3, 4).collect();
        assert_eq!(runs, vec![(0, 3, 1), (1, 0, 4), (5, 0, 4), (9, 0, 1)]);
        assert_eq!(channel_runs(0, 0, 4).count(), 0);
    }
}
