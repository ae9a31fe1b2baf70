//! The masked forward and backward passes on the CPU.
//!
//! Chunks and steps hold whole mask words ([`CHUNK`] is a multiple of 32,
//! every chunk starts at a multiple of it, and a step of [`LANES`] elements
//! is one word), so no two tasks ever write the same word: no atomics, and
//! the same bits on every thread count.

use rayon::prelude::*;

use super::{CHUNK, Dims, Reduced, Scales, copy, lanes, reduce, simd, steps};
use crate::element::Element;
use crate::element::convert::LANES;
use crate::mask::MASK_BITS;
use crate::op::{Direction, Elementwise, Functor, Index, Op, Window, with_functor};
use crate::scalar;

const _: () = assert!(CHUNK.is_multiple_of(MASK_BITS) && LANES == MASK_BITS);

/// `y = q(x)` as [`super::forward`] computes it, the mask of where the
/// gradient passes (`window`, the op's), and the scale the backward pass
/// needs (magnitude_aware_sign). The caller checked every length
/// ([`crate::call::Call::check`]).
pub(crate) fn forward<T: Element>(
    op: &Op,
    x: &[T],
    dims: Dims,
    y: &mut [T],
    mask: &mut [u32],
    scale: &mut [T],
) {
    if op.copies(Direction::Forward) {
        copy(x, y);
        all_pass(mask, x.len());
        return;
    }
    // A masked call's op has a window (`Call::new`).
    let window = op.window.unwrap_or(Window::Everywhere);
    let reduced = reduce(op.reduction(Direction::Forward), x, dims);
    with_functor!(op.functor, |f| map_mask(
        f, x, y, mask, &reduced, dims, window
    ));
    if let Reduced::Each(scales) = &reduced {
        // Exact: the channel scales are already rounded to T.
        for (out, &s) in scale.iter_mut().zip(scales) {
            *out = T::from_f32(s);
        }
    }
}

/// `dx = dq/dx · dy` from the mask (and scale) [`forward`] saved, with the
/// same preconditions.
pub(crate) fn backward<T: Element>(
    op: &Op,
    mask: &[u32],
    scale: &[T],
    dy: &[T],
    channels: usize,
    dx: &mut [T],
) {
    // Every bit is set; a copy, as `super::backward` makes, keeps the bits
    // of every NaN in `dy`.
    if op.copies(Direction::Backward) {
        return copy(dy, dx);
    }
    if let Functor::MagnitudeAwareSign(_) = op.functor {
        debug_assert_eq!(scale.len(), channels);
        let scales = Reduced::Each(scale.iter().map(|s| s.to_f32()).collect());
        let dims = Dims { channels, inner: 0 };
        map_unmask(
            mask,
            dy,
            dx,
            (Index::Channel, &scales, dims),
            scalar::magnitude_aware_sign_pass_grad,
        )
    } else {
        let dims = Dims { channels, inner: 0 };
        map_unmask(
            mask,
            dy,
            dx,
            (Index::None, &Reduced::None, dims),
            #[inline(always)]
            |passes, dy, _| scalar::pass_grad(passes, dy),
        )
    }
}

/// The mask word of `x` (at most [`MASK_BITS`] values) under the window's
/// predicate: bit `i` set where `x[i]` passes, the bits past `x` 0.
#[inline(always)]
fn window_word(x: &[f32], window: Window) -> u32 {
    match window {
        Window::Everywhere => word(x, |_| true),
        Window::Ste(clip) => word(
            x,
            #[inline(always)]
            move |x| scalar::ste_passes(x, clip),
        ),
        Window::Unipolar(clip) => word(
            x,
            #[inline(always)]
            move |x| scalar::ste_unipolar_passes(x, clip),
        ),
        Window::UnitInterval => word(x, scalar::dorefa_activations_passes),
    }
}

/// [`super::map1`] that also writes the mask word of each step.
#[allow(clippy::too_many_arguments)]
fn map_mask<T: Element, F: Elementwise>(
    f: F,
    x: &[T],
    y: &mut [T],
    mask: &mut [u32],
    reduced: &Reduced,
    dims: Dims,
    window: Window,
) {
    let scales = Scales::new(F::INDEX, reduced, dims);
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .zip(mask.par_chunks_mut(CHUNK / MASK_BITS))
        .enumerate()
        .for_each(|(chunk, ((y, x), mask))| {
            simd(
                #[inline(always)]
                |level| {
                    let mut s = scales.at(chunk * CHUNK);
                    // Without streaming every step starts at a multiple of
                    // LANES, one mask word.
                    steps(
                        level,
                        y,
                        false,
                        #[inline(always)]
                        move |i, n| {
                            let x = T::widen(level, &lanes(x, i, n));
                            mask[i / MASK_BITS] = window_word(&x[..n], window);
                            let s = s.next(F::INDEX, n);
                            let mut y = [0f32; LANES];
                            for k in 0..LANES {
                                y[k] = f.fwd(x[k], s[k]);
                            }
                            T::narrow(level, &y)
                        },
                    );
                },
            )
        });
}

/// `dx = f(bit, dy, s)` from the mask words and `dy`, `s` the value of
/// `scales` (an index, the values, their dims) at each element.
fn map_unmask<T: Element>(
    mask: &[u32],
    dy: &[T],
    dx: &mut [T],
    (index, reduced, dims): (Index, &Reduced, Dims),
    f: impl Fn(bool, f32, f32) -> f32 + Sync + Copy,
) {
    let scales = Scales::new(index, reduced, dims);
    dx.par_chunks_mut(CHUNK)
        .zip(dy.par_chunks(CHUNK))
        .zip(mask.par_chunks(CHUNK / MASK_BITS))
        .enumerate()
        .for_each(|(chunk, ((dx, dy), mask))| {
            simd(
                #[inline(always)]
                |level| {
                    let mut s = scales.at(chunk * CHUNK);
                    steps(
                        level,
                        dx,
                        false,
                        #[inline(always)]
                        move |i, n| {
                            let dy = T::widen(level, &lanes(dy, i, n));
                            let w = mask[i / MASK_BITS];
                            let s = s.next(index, n);
                            let mut dx = [0f32; LANES];
                            for k in 0..LANES {
                                dx[k] = f(w >> k & 1 != 0, dy[k], s[k]);
                            }
                            T::narrow(level, &dx)
                        },
                    );
                },
            )
        });
}

/// Bit `i` set where `passes(x[i])`, for up to [`MASK_BITS`] values; the
/// bits past `x` are 0.
#[inline(always)]
fn word(x: &[f32], passes: impl Fn(f32) -> bool) -> u32 {
    x.iter()
        .enumerate()
        .fold(0, |w, (i, &x)| w | u32::from(passes(x)) << i)
}

/// Every bit of the `len` elements set, the trailing ones 0.
fn all_pass(mask: &mut [u32], len: usize) {
    mask.fill(u32::MAX);
    let tail = len % MASK_BITS;
    if let Some(last) = mask.last_mut()
        && tail != 0
    {
        *last = u32::MAX >> (MASK_BITS - tail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_fill_from_bit_0_and_the_tail_is_zero() {
        let x: Vec<f32> = (0..70)
            .map(|i| if i % 3 == 0 { 1.0 } else { -1.0 })
            .collect();
        let words: Vec<u32> = x.chunks(MASK_BITS).map(|x| word(x, |v| v > 0.0)).collect();
        assert_eq!(words[0], 0x4924_9249);
        assert_eq!(words[2] >> 6, 0, "bits past element 69 are 0");
    }

    #[test]
    fn all_pass_sets_exactly_len_bits() {
        for len in [0usize, 1, 31, 32, 33, 64, 65] {
            let mut mask = vec![0u32; len.div_ceil(32)];
            all_pass(&mut mask, len);
            let ones: u32 = mask.iter().map(|w| w.count_ones()).sum();
            assert_eq!(ones as usize, len);
        }
    }
}
