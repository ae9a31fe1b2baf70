//! The masked forward and backward passes on the CPU.
//!
//! Chunks and blocks hold whole mask words ([`CHUNK`] and [`BLOCK`] are
//! multiples of 32 and every chunk starts at a multiple of [`CHUNK`]), so no
//! two tasks ever write the same word: no atomics, and the same bits on
//! every thread count.

use rayon::prelude::*;

use super::{BLOCK, CHUNK, Dims, Reduced, copy, fwd_block, reduce, simd};
use crate::element::Element;
use crate::mask::MASK_BITS;
use crate::op::{Direction, Functor, Op, Window, with_functor};
use crate::scalar;

const _: () = assert!(CHUNK.is_multiple_of(MASK_BITS) && BLOCK.is_multiple_of(MASK_BITS));

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
        x,
        y,
        mask,
        #[inline(always)]
        |x, y, words, offset| {
            fwd_block(f, x, y, offset, &reduced, dims);
            pack_window(x, words, window);
        }
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
        let scales: Vec<f32> = scale.iter().map(|s| s.to_f32()).collect();
        map_unmask(
            mask,
            dy,
            dx,
            #[inline(always)]
            |words, dy, dx, offset| {
                let mut s = [0f32; BLOCK];
                let s = channel_scales(&scales, offset, &mut s[..dy.len()]);
                each_bit_scaled(words, dy, s, dx, scalar::magnitude_aware_sign_pass_grad)
            },
        )
    } else {
        map_unmask(
            mask,
            dy,
            dx,
            #[inline(always)]
            |words, dy, dx, _| each_bit(words, dy, dx, scalar::pass_grad),
        )
    }
}

/// [`pack`] with the window's predicate, chosen once per block.
#[inline(always)]
fn pack_window(x: &[f32], words: &mut [u32], window: Window) {
    match window {
        Window::Everywhere => pack(x, words, |_| true),
        Window::Ste(clip) => pack(
            x,
            words,
            #[inline(always)]
            move |x| scalar::ste_passes(x, clip),
        ),
        Window::Unipolar(clip) => pack(
            x,
            words,
            #[inline(always)]
            move |x| scalar::ste_unipolar_passes(x, clip),
        ),
        Window::UnitInterval => pack(x, words, scalar::dorefa_activations_passes),
    }
}

/// [`super::map1`] that also hands `f` the mask words of each block.
fn map_mask<T: Element>(
    x: &[T],
    y: &mut [T],
    mask: &mut [u32],
    f: impl Fn(&[f32], &mut [f32], &mut [u32], usize) + Sync,
) {
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .zip(mask.par_chunks_mut(CHUNK / MASK_BITS))
        .enumerate()
        .for_each(|(chunk, ((y, x), mask))| {
            simd(
                #[inline(always)]
                || {
                    let mut x_buf = [0f32; BLOCK];
                    let mut y_buf = [0f32; BLOCK];
                    let blocks = y
                        .chunks_mut(BLOCK)
                        .zip(x.chunks(BLOCK))
                        .zip(mask.chunks_mut(BLOCK / MASK_BITS));
                    for (block, ((y, x), words)) in blocks.enumerate() {
                        let x = T::read(x, &mut x_buf);
                        // Inlined, so that `f` is compiled for AVX-512 or AVX2 too.
                        T::write(
                            y,
                            &mut y_buf,
                            #[inline(always)]
                            |y| f(x, y, words, chunk * CHUNK + block * BLOCK),
                        );
                    }
                },
            )
        });
}

/// [`super::map1`] from the mask words and `dy` of each block to `dx`.
fn map_unmask<T: Element>(
    mask: &[u32],
    dy: &[T],
    dx: &mut [T],
    f: impl Fn(&[u32], &[f32], &mut [f32], usize) + Sync,
) {
    dx.par_chunks_mut(CHUNK)
        .zip(dy.par_chunks(CHUNK))
        .zip(mask.par_chunks(CHUNK / MASK_BITS))
        .enumerate()
        .for_each(|(chunk, ((dx, dy), mask))| {
            simd(
                #[inline(always)]
                || {
                    let mut dy_buf = [0f32; BLOCK];
                    let mut dx_buf = [0f32; BLOCK];
                    let blocks = dx
                        .chunks_mut(BLOCK)
                        .zip(dy.chunks(BLOCK))
                        .zip(mask.chunks(BLOCK / MASK_BITS));
                    for (block, ((dx, dy), words)) in blocks.enumerate() {
                        let dy = T::read(dy, &mut dy_buf);
                        T::write(
                            dx,
                            &mut dx_buf,
                            #[inline(always)]
                            |dx| f(words, dy, dx, chunk * CHUNK + block * BLOCK),
                        );
                    }
                },
            )
        });
}

/// Sets bit `i % 32` of word `i / 32` where `passes(x[i])`; every word is
/// overwritten, so the bits past the end of `x` are 0.
#[inline(always)]
fn pack(x: &[f32], words: &mut [u32], passes: impl Fn(f32) -> bool) {
    for (word, x) in words.iter_mut().zip(x.chunks(MASK_BITS)) {
        *word = x
            .iter()
            .enumerate()
            .fold(0, |w, (i, &x)| w | u32::from(passes(x)) << i);
    }
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

#[inline(always)]
fn each_bit(words: &[u32], dy: &[f32], dx: &mut [f32], f: impl Fn(bool, f32) -> f32) {
    for ((dx, dy), &w) in dx
        .chunks_mut(MASK_BITS)
        .zip(dy.chunks(MASK_BITS))
        .zip(words)
    {
        for (i, (dx, &dy)) in dx.iter_mut().zip(dy).enumerate() {
            *dx = f(w >> i & 1 != 0, dy);
        }
    }
}

/// The scale of each element of a block that starts at tensor index
/// `offset`, copied row by row, so the loop over the block is a plain zip.
#[inline(always)]
fn channel_scales<'a>(scales: &[f32], offset: usize, buf: &'a mut [f32]) -> &'a [f32] {
    for (start, channel, len) in super::channel_runs(buf.len(), offset, scales.len()) {
        buf[start..start + len].copy_from_slice(&scales[channel..channel + len]);
    }
    buf
}

/// [`each_bit`] with a third input, each element's scale.
#[inline(always)]
fn each_bit_scaled(
    words: &[u32],
    dy: &[f32],
    scale: &[f32],
    dx: &mut [f32],
    f: impl Fn(bool, f32, f32) -> f32,
) {
    let blocks = dx
        .chunks_mut(MASK_BITS)
        .zip(dy.chunks(MASK_BITS).zip(scale.chunks(MASK_BITS)));
    for ((dx, (dy, scale)), &w) in blocks.zip(words) {
        for (i, (dx, (&dy, &s))) in dx.iter_mut().zip(dy.iter().zip(scale)).enumerate() {
            *dx = f(w >> i & 1 != 0, dy, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_each_bit_agree_and_the_tail_is_zero() {
        let x: Vec<f32> = (0..70)
            .map(|i| if i % 3 == 0 { 1.0 } else { -1.0 })
            .collect();
        let mut words = [u32::MAX; 3];
        pack(&x, &mut words, |v| v > 0.0);
        assert_eq!(words[0], 0x4924_9249);
        assert_eq!(words[2] >> 6, 0, "bits past element 69 are 0");
        let mut dx = [0.0; 70];
        each_bit(&words, &[2.0; 70], &mut dx, scalar::pass_grad);
        for (i, &d) in dx.iter().enumerate() {
            assert_eq!(d, if i % 3 == 0 { 2.0 } else { 0.0 }, "element {i}");
        }
    }

    #[test]
    fn channel_scales_repeat_along_rows() {
        let mut buf = [0.0; 7];
        assert_eq!(
            channel_scales(&[1.0, 2.0, 3.0], 2, &mut buf),
            [3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
        );
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
