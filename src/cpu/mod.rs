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
//! the same input gives the same bits. Inside a chunk the loops take steps
//! of [`LANES`] elements ([`steps`]): widen them to `f32` in registers, apply
//! the functor lane by lane (a loop of constant length, which the compiler
//! vectorizes), narrow, store.

pub(crate) mod bits;
pub(crate) mod mask;
mod pieces;
pub(crate) mod pool;
mod recent;
mod reduce;
pub(crate) mod rsign;
mod tables;
mod tanh_steps;

use std::sync::OnceLock;

use rayon::prelude::*;

use crate::call::{Call, Host, Pass};
use crate::element::Element;
use crate::element::convert::{self, LANES, Level};
use crate::error::Result;
use crate::op::{Direction, Elementwise, Index, Op, Reduction, with_functor};
use crate::scalar;

/// Elements per parallel task (and per partial sum of a reduction).
const CHUNK: usize = 1 << 15;

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
    if pieces::forward(op, x, y, &reduced, dims) || tanh_steps::forward(op, x, y, &reduced) {
        return;
    }
    with_functor!(op.functor, |f| map1(f, x, y, &reduced, dims))
}

/// `dx = dq/dx · dy`, with the same preconditions as [`forward`].
pub(crate) fn backward<T: Element>(op: &Op, x: &[T], dy: &[T], dims: Dims, dx: &mut [T]) {
    if op.copies(Direction::Backward) {
        return copy(dy, dx);
    }
    let reduced = reduce(op.reduction(Direction::Backward), x, dims);
    if tables::backward(op, x, dy, dx, &reduced, dims) {
        return;
    }
    with_functor!(op.functor, |f| map2(f, x, dy, dx, &reduced, dims))
}

/// The reduction's values (`s` of [`Elementwise`]) as the loops read them.
pub(crate) struct Scales {
    index: Index,
    scalar: f32,
    /// One value per channel, then the first `LANES` again (so the lanes of
    /// any step are one contiguous slice), or one per row.
    each: Vec<f32>,
    /// Channels (the period of [`Index::Channel`]) or elements per row.
    width: usize,
}

impl Scales {
    /// The values read by `index`, from what the reduction gave.
    pub(crate) fn new(index: Index, reduced: &Reduced, dims: Dims) -> Scales {
        let (each, width) = match index {
            Index::Channel => {
                let v = reduced.each();
                let wrapped = v.iter().cycle().take(v.len() + LANES);
                (wrapped.copied().collect(), dims.channels)
            }
            Index::Row => (reduced.each().to_vec(), dims.inner),
            Index::None | Index::Scalar => (Vec::new(), 1),
        };
        Scales {
            index,
            scalar: reduced.scalar(),
            each,
            width: width.max(1),
        }
    }

    /// A cursor at tensor index `start`.
    pub(crate) fn at(&self, start: usize) -> Cursor<'_> {
        Cursor {
            scales: self,
            pos: start % self.width,
            row: start / self.width,
        }
    }
}

/// Where a chunk's loop is in [`Scales`]: it moves step by step, with no
/// division in the common case.
pub(crate) struct Cursor<'a> {
    scales: &'a Scales,
    /// Where the cursor is in its row of `width` elements.
    pos: usize,
    /// Which row (for [`Index::Row`]).
    row: usize,
}

impl Cursor<'_> {
    /// The values of the `LANES` lanes from the cursor on, which then moves
    /// `n` on. Lanes past the tensor's end (which the caller drops) read 0
    /// past the last row. `index` is the one the scales were made for, a
    /// constant at each call, so only its arm is compiled into the loop.
    #[inline(always)]
    pub(crate) fn next(&mut self, index: Index, n: usize) -> [f32; LANES] {
        debug_assert_eq!(index, self.scales.index);
        let Scales {
            each,
            width,
            scalar,
            ..
        } = self.scales;
        let width = *width;
        let s = match index {
            Index::None => return [0.0; LANES],
            Index::Scalar => return [*scalar; LANES],
            Index::Channel => match each.get(self.pos..).and_then(|s| s.first_chunk()) {
                Some(s) => *s,
                None => [0.0; LANES],
            },
            Index::Row => {
                let this = each.get(self.row).copied().unwrap_or(0.0);
                let mut s = [this; LANES];
                if self.pos + LANES > width {
                    // The step reaches into the next row (or rows).
                    let (mut row, mut pos) = (self.row, self.pos);
                    for s in &mut s {
                        *s = each.get(row).copied().unwrap_or(0.0);
                        pos += 1;
                        if pos == width {
                            (row, pos) = (row + 1, 0);
                        }
                    }
                }
                s
            }
        };
        self.pos += n;
        if self.pos >= width {
            // One subtraction when rows are at least `LANES` long.
            self.pos -= width;
            self.row += 1;
            if self.pos >= width {
                self.row += self.pos / width;
                self.pos %= width;
            }
        }
        s
    }
}

/// `LANES` elements of `src` from `i`, of which `n` are there: the lanes
/// past them are 0.
#[inline(always)]
pub(crate) fn lanes<T: Copy + Default>(src: &[T], i: usize, n: usize) -> [T; LANES] {
    match src[i..].first_chunk() {
        Some(full) if n == LANES => *full,
        _ => {
            let mut out = [T::default(); LANES];
            out[..n].copy_from_slice(&src[i..i + n]);
            out
        }
    }
}

/// Fills `dst` `LANES` elements at a time: `step(i, n)` gives the values of
/// elements `i..i + n` (`n ≤ LANES`; the lanes past `n` are dropped). With
/// `stream`, a first short step brings `dst` to a cache line, and every
/// whole step after it is stored with streaming stores; the short steps at
/// the ends write their lines with plain stores.
#[inline(always)]
pub(crate) fn steps<T: Copy + Default>(
    level: Level,
    dst: &mut [T],
    stream: bool,
    mut step: impl FnMut(usize, usize) -> [T; LANES],
) {
    let len = dst.len();
    let head = if stream {
        dst.as_ptr().align_offset(convert::LINE).min(len)
    } else {
        0
    };
    if head > 0 {
        let v = step(0, head);
        dst[..head].copy_from_slice(&v[..head]);
    }
    let mut i = head;
    while let Some(out) = dst.get_mut(i..).and_then(|d| d.first_chunk_mut()) {
        let v = step(i, LANES);
        convert::store(level, &v, out, stream);
        i += LANES;
    }
    if i < len {
        let v = step(i, len - i);
        dst[i..].copy_from_slice(&v[..len - i]);
    }
}

/// `y = f.fwd(x, s)`, chunk by chunk in parallel.
pub(crate) fn map1<T: Element, F: Elementwise>(
    f: F,
    x: &[T],
    y: &mut [T],
    reduced: &Reduced,
    dims: Dims,
) {
    let stream = streams(2 * std::mem::size_of_val(x));
    let scales = Scales::new(F::INDEX, reduced, dims);
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(chunk, (y, x))| {
            simd(
                #[inline(always)]
                |level| {
                    let mut s = scales.at(chunk * CHUNK);
                    steps(
                        level,
                        y,
                        stream,
                        // `move`: the functor's fields are then the closure's
                        // own, kept in registers; borrowed, they were loaded
                        // again at every step.
                        #[inline(always)]
                        move |i, n| {
                            let x = T::widen(level, &lanes(x, i, n));
                            let s = s.next(F::INDEX, n);
                            let mut y = [0f32; LANES];
                            for k in 0..LANES {
                                y[k] = f.fwd(x[k], s[k]);
                            }
                            T::narrow(level, &y)
                        },
                    );
                    if stream {
                        convert::fence();
                    }
                },
            )
        });
}

/// `dx = f.bwd(x, dy, s)`, as [`map1`].
pub(crate) fn map2<T: Element, F: Elementwise>(
    f: F,
    x: &[T],
    dy: &[T],
    dx: &mut [T],
    reduced: &Reduced,
    dims: Dims,
) {
    let stream = streams(3 * std::mem::size_of_val(x));
    let scales = Scales::new(F::INDEX, reduced, dims);
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .enumerate()
        .for_each(|(chunk, (dx, (x, dy)))| {
            simd(
                #[inline(always)]
                |level| {
                    let mut s = scales.at(chunk * CHUNK);
                    steps(
                        level,
                        dx,
                        stream,
                        // `move`: the functor's fields are then the closure's
                        // own, kept in registers; borrowed, they were loaded
                        // again at every step.
                        #[inline(always)]
                        move |i, n| {
                            let x = T::widen(level, &lanes(x, i, n));
                            let dy = lanes(dy, i, n);
                            let dy = if F::SCALES_DY {
                                T::widen_opaque(level, &dy)
                            } else {
                                T::widen(level, &dy)
                            };
                            let s = s.next(F::INDEX, n);
                            let mut dx = [0f32; LANES];
                            for k in 0..LANES {
                                dx[k] = f.bwd(x[k], dy[k], s[k]);
                            }
                            T::narrow(level, &dx)
                        },
                    );
                    if stream {
                        convert::fence();
                    }
                },
            )
        });
}

fn copy<T: Element>(src: &[T], dst: &mut [T]) {
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// Whether a pass that moves `bytes` in all should store its output with
/// streaming stores. Past the last-level cache the data comes from memory
/// anyway, and a plain store would first read each line it writes; well
/// inside it the output is better kept in the cache for whatever reads it
/// next. The line is a quarter of the cache: the cache is shared with the
/// other cores (with other machines, in a VM) and with the data of the next
/// operation, so a pass that fills more of it rarely finds its output still
/// there. (On a 2-vCPU VM reporting a 300 MB L3, an f32 forward at 2^24
/// elements, 128 MB, ran at DRAM speed: 12.8 ms with plain stores, 9.3 ms
/// streaming.)
fn streams(bytes: usize) -> bool {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    let limit = *LIMIT.get_or_init(|| {
        // A measurement knob: the byte count above which passes stream.
        if let Ok(v) = std::env::var("LOWBIT_STREAM_ABOVE")
            && let Ok(v) = v.parse()
        {
            return v;
        }
        last_level_cache().unwrap_or(32 << 20) / 4
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

/// Runs `f` compiled for AVX-512 or AVX2 where the CPU has them, so the
/// loops inlined into it vectorize sixteen or eight lanes wide instead of
/// SSE2's four. The bits do not change: Rust never contracts `a * b + c`
/// into an FMA, whatever the target, and the wider instructions round as
/// the narrower ones do.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce(Level) -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match convert::best() {
        // SAFETY: `best` found these features on this CPU.
        Level::Avx512 => return unsafe { avx512(f) },
        // SAFETY: as above.
        Level::Avx2 => return unsafe { avx2(f) },
        Level::Portable => {}
    }
    f(Level::Portable)
}

// `f` gets its level as a constant, so the lane conversions it calls
// ([`Element`]'s `widen` and `narrow`) fold to that level's instructions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn avx2<R>(f: impl FnOnce(Level) -> R) -> R {
    f(Level::Avx2)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
unsafe fn avx512<R>(f: impl FnOnce(Level) -> R) -> R {
    f(Level::Avx512)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lanes of steps of `n` elements from `start`, as one list.
    fn walk(index: Index, each: &[f32], dims: Dims, start: usize, n: usize) -> Vec<f32> {
        let scales = Scales::new(index, &Reduced::Each(each.to_vec()), dims);
        let mut s = scales.at(start);
        (0..4)
            .flat_map(|_| s.next(index, n)[..n].to_vec())
            .collect()
    }

    /// `steps` writes each element once, with the step's value for it, at
    /// every alignment and length, streaming or not.
    fn steps_cover<T: Element>() {
        for level in convert::available() {
            for stream in [false, true] {
                for (offset, len) in
                    (0..33).flat_map(|o| [0, 1, 31, 32, 33, 100, 1000].map(|n| (o, n)))
                {
                    let mut buf = vec![T::from_f32(-1.0); offset + len + LANES];
                    let mut next = 0;
                    steps(level, &mut buf[offset..offset + len], stream, |i, n| {
                        assert!(
                            i == next && n > 0 && n <= LANES,
                            "step {i}+{n} after {next}"
                        );
                        next = i + n;
                        // Small integers, exact in every type.
                        std::array::from_fn(|k| T::from_f32(((i + k) % 256) as f32))
                    });
                    convert::fence();
                    assert_eq!(next, len);
                    for (j, v) in buf.iter().enumerate() {
                        let inside = (offset..offset + len).contains(&j);
                        let want = if inside {
                            ((j - offset) % 256) as f32
                        } else {
                            -1.0
                        };
                        assert_eq!(
                            v.to_f32(),
                            want,
                            "{level:?} stream {stream}: {offset}+{len} at {j}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn steps_write_every_element_once() {
        steps_cover::<f32>();
        steps_cover::<half::f16>();
        steps_cover::<half::bf16>();
    }

    #[test]
    fn scales_follow_channels_and_rows() {
        let v: Vec<f32> = (0..100).map(|c| c as f32).collect();
        for (channels, start, n) in [(3, 2, 32), (64, 40, 32), (100, 90, 7), (1, 5, 32)] {
            let dims = Dims { channels, inner: 0 };
            let got = walk(Index::Channel, &v[..channels], dims, start, n);
            let want: Vec<f32> = (start..start + 4 * n)
                .map(|i| (i % channels) as f32)
                .collect();
            assert_eq!(got, want, "{channels} channels from {start}, steps of {n}");
        }
        for (inner, start, n) in [(5, 3, 32), (64, 60, 32), (1000, 999, 13)] {
            let dims = Dims { channels: 1, inner };
            let got = walk(Index::Row, &v, dims, start, n);
            let want: Vec<f32> = (start..start + 4 * n).map(|i| (i / inner) as f32).collect();
            assert_eq!(got, want, "rows of {inner} from {start}, steps of {n}");
        }
        // Past the last row the lanes read 0.
        let dims = Dims {
            channels: 1,
            inner: 10,
        };
        assert_eq!(
            walk(Index::Row, &[7.0, 8.0], dims, 15, 5),
            [8.0; 5]
                .iter()
                .chain(&[0.0; 15])
                .copied()
                .collect::<Vec<_>>()
        );
    }
}
