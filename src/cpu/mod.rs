//! The CPU path: the functors of [`crate::op`] mapped over slices, in
//! parallel with rayon.
//!
//! One generic driver serves every quantizer: [`forward`] and [`backward`]
//! run the op's reduction, then map its functor over the tensor, compiled
//! once per functor type (`with_functor!`), so each loop is that one
//! quantizer's scalar definition inlined.
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

use std::sync::OnceLock;

use rayon::prelude::*;

use crate::call::{Call, Host, Pass};
use crate::element::Element;
use crate::element::convert::{self, Level};
use crate::error::Result;
use crate::op::{Direction, Elementwise, Index, Op, Reduction, with_functor};
use crate::scalar;

/// Elements per parallel task (and per partial sum of a reduction).
const CHUNK: usize = 1 << 15;
/// Elements converted to `f32` at a time.
const BLOCK: usize = 1024;

/// A tensor's channels (the last axis) and elements per first-axis index,
/// which the per-channel and per-row reductions are taken over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) channels: usize,
    pub(crate) inner: usize,
}

/// What a reduction gave: nothing, one value, or one per channel or row.
pub(crate) enum Reduced {
    None,
    Scalar(f32),
    Each(Vec<f32>),
}

impl Reduced {
    #[inline(always)]
    fn scalar(&self) -> f32 {
        match self {
            Reduced::Scalar(s) => *s,
            _ => 0.0,
        }
    }

    #[inline(always)]
    fn each(&self) -> &[f32] {
        match self {
            Reduced::Each(v) => v,
            _ => &[],
        }
    }
}

/// Runs `r` over `x`.
pub(crate) fn reduce<T: Element>(r: Reduction, x: &[T], dims: Dims) -> Reduced {
    match r {
        Reduction::None => Reduced::None,
        Reduction::Constant(v) => Reduced::Scalar(v),
        // Rounded to T as larq casts it.
        Reduction::TwnThreshold => Reduced::Scalar(T::round_f32(scalar::twn_threshold(
            reduce::sum_abs(x),
            x.len(),
        ))),
        Reduction::MaxAbsTanh => Reduced::Scalar(reduce::max_abs_tanh(x)),
        Reduction::ChannelMeanAbs => Reduced::Each(reduce::channel_mean_abs(x, dims.channels)),
        Reduction::RowMeanAbs => Reduced::Each(reduce::row_mean_abs(x, dims.inner)),
    }
}

/// Runs a checked call on host buffers, on lowbit's worker threads.
pub(crate) fn run<T: Element>(call: &Call, t: Host<'_, T>) -> Result<()> {
    // With no elements the channel count is unbounded by any tensor
    // (`[0, 1 << 62]` is valid): nothing may be sized from it.
    if call.len == 0 {
        call.fill_empty(t.scale_out, t.dalpha);
        return Ok(());
    }
    let dims = call.dims();
    pool::run(|| match (call.pass, call.op()) {
        (Pass::Forward, Some(op)) => forward(op, t.x, dims, t.out),
        (Pass::Backward, Some(op)) => backward(op, t.x, t.dy, dims, t.out),
        (Pass::ForwardWithMask, Some(op)) => {
            mask::forward(op, t.x, dims, t.out, t.mask_out, t.scale_out)
        }
        (Pass::BackwardFromMask, Some(op)) => {
            mask::backward(op, t.mask, t.scale, t.dy, dims.channels, t.out)
        }
        (Pass::ForwardWithThresholds, _) => rsign::forward(t.x, t.alpha, t.out),
        (Pass::BackwardWithThresholds, _) => rsign::backward(t.x, t.alpha, t.dy, t.out, t.dalpha),
        // `Call::new` gives every other pass an op.
        (pass, None) => unreachable!("{pass:?} without an op"),
    })
}

/// `y = q(x)`. Buffers have equal lengths, at least one element, and `dims`
/// fit them (the caller checked).
pub(crate) fn forward<T: Element>(op: &Op, x: &[T], dims: Dims, y: &mut [T]) {
    // A copy, not a round trip through f32, so NaN payloads survive.
    if op.copies(Direction::Forward) {
        return copy(x, y);
    }
    let reduced = reduce(op.reduction(Direction::Forward), x, dims);
    with_functor!(op.functor, |f| map1(
        x,
        y,
        #[inline(always)]
        |x, y, offset| fwd_block(f, x, y, offset, &reduced, dims)
    ))
}

/// `dx = dq/dx · dy`, with the same preconditions as [`forward`].
pub(crate) fn backward<T: Element>(op: &Op, x: &[T], dy: &[T], dims: Dims, dx: &mut [T]) {
    if op.copies(Direction::Backward) {
        return copy(dy, dx);
    }
    let reduced = reduce(op.reduction(Direction::Backward), x, dims);
    with_functor!(op.functor, |f| map2(
        x,
        dy,
        dx,
        #[inline(always)]
        |x, dy, dx, offset| bwd_block(f, x, dy, dx, offset, &reduced, dims)
    ))
}

/// `y = f.fwd(x, s)` over one block that starts at tensor index `offset`,
/// `s` the element's value of the reduction. `F::INDEX` is a constant, so
/// only one arm is compiled for each functor.
#[inline(always)]
pub(crate) fn fwd_block<F: Elementwise>(
    f: F,
    x: &[f32],
    y: &mut [f32],
    offset: usize,
    reduced: &Reduced,
    dims: Dims,
) {
    // The closures are `move`: they copy the functor into their own state,
    // which the compiler keeps in registers; captured by reference, its
    // fields would be reloaded on every element and the loop would not
    // vectorize.
    match F::INDEX {
        Index::None => each1(x, y, move |x| f.fwd(x, 0.0)),
        Index::Scalar => {
            let s = reduced.scalar();
            each1(x, y, move |x| f.fwd(x, s))
        }
        Index::Channel => each1_channels(x, y, offset, reduced.each(), move |x, s| f.fwd(x, s)),
        Index::Row => each1_rows(x, y, offset, dims.inner, reduced.each(), move |x, s| {
            f.fwd(x, s)
        }),
    }
}

/// [`fwd_block`] for the gradient.
#[inline(always)]
fn bwd_block<F: Elementwise>(
    f: F,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    offset: usize,
    reduced: &Reduced,
    dims: Dims,
) {
    match F::INDEX {
        Index::None => each2(x, dy, dx, move |x, dy| f.bwd(x, dy, 0.0)),
        Index::Scalar => {
            let s = reduced.scalar();
            each2(x, dy, dx, move |x, dy| f.bwd(x, dy, s))
        }
        Index::Channel => each2_channels(x, dy, dx, offset, reduced.each(), move |x, dy, s| {
            f.bwd(x, dy, s)
        }),
        Index::Row => each2_rows(
            x,
            dy,
            dx,
            offset,
            dims.inner,
            reduced.each(),
            move |x, dy, s| f.bwd(x, dy, s),
        ),
    }
}

fn copy<T: Element>(src: &[T], dst: &mut [T]) {
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// Whether a pass that moves `bytes` in all should store its output with
/// streaming stores. Past the last-level cache the data comes from memory
/// anyway, and a plain store would first read each line it writes; below it
/// the output is better kept in the cache for whatever reads it next.
fn streams(bytes: usize) -> bool {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    let limit = *LIMIT.get_or_init(|| {
        // A measurement knob: the byte count above which passes stream.
        if let Ok(v) = std::env::var("LOWBIT_STREAM_ABOVE")
            && let Ok(v) = v.parse()
        {
            return v;
        }
        last_level_cache().unwrap_or(32 << 20)
    });
    bytes > limit
}

/// The size of the largest cache Linux describes for CPU 0, in bytes.
fn last_level_cache() -> Option<usize> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dir.filter_map(|entry| {
        let text = std::fs::read_to_string(entry.ok()?.path().join("size")).ok()?;
        let text = text.trim();
        let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
        let scale = match unit {
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            _ => return None,
        };
        Some(digits.parse::<usize>().ok()? * scale)
    })
    .max()
}

/// Calls `f(x, y, offset)` on `f32` views of matching blocks of `x` and `y`;
/// `offset` is the index of the block's first element in the whole tensor.
fn map1<T: Element>(x: &[T], y: &mut [T], f: impl Fn(&[f32], &mut [f32], usize) + Sync) {
    let stream = streams(2 * std::mem::size_of_val(x));
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
                        let offset = chunk * CHUNK + block * BLOCK;
                        if stream {
                            T::write_stream(y, &mut y_buf, |y| f(x, y, offset));
                        } else {
                            T::write(y, &mut y_buf, |y| f(x, y, offset));
                        }
                    }
                    if stream {
                        convert::fence();
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
    let stream = streams(3 * std::mem::size_of_val(x));
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
                        let offset = chunk * CHUNK + block * BLOCK;
                        if stream {
                            T::write_stream(dx, &mut dx_buf, |dx| f(x, dy, dx, offset));
                        } else {
                            T::write(dx, &mut dx_buf, |dx| f(x, dy, dx, offset));
                        }
                    }
                    if stream {
                        convert::fence();
                    }
                },
            )
        });
}

/// Runs `f` compiled for AVX-512 or AVX2 where the CPU has them, so the
/// loops inlined into it vectorize sixteen or eight lanes wide instead of
/// SSE2's four. The bits do not change: Rust never contracts `a * b + c`
/// into an FMA, whatever the target, and the wider instructions round as
/// the narrower ones do.
#[inline(always)]
pub(super) fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match convert::best() {
        // SAFETY: `best` found these features on this CPU.
        Level::Avx512 => return unsafe { avx512(f) },
        // SAFETY: as above.
        Level::Avx2 => return unsafe { avx2(f) },
        Level::Portable => {}
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
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
