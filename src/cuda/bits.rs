//! The kernels of `kernels/bits.cu` on the caller's stream: packing,
//! unpacking and the flip count of larq's `flip_ratio`. What a call launches
//! is plain data ([`launch`]), tested without a GPU; the methods only take
//! the pointers and hand the launch to [`Cuda::run`].

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut};

use super::kernels::{Kernel, Typed};
use super::plan::{Arg, Args, MAX_ARGS, Step};
use super::sys::{LOWBIT_BITS_BLOCKS, LOWBIT_THREADS, LowbitBits};
use super::{Cuda, driver};
use crate::bits::{self, Flips, Rows, Tracker};
use crate::element::{DType, Element};
use crate::error::Result;

/// The parameters every bit kernel reads; `scale` (unpack) and
/// `has_previous` (flip_count) start as NULL and 0.
fn params(rows: Rows) -> LowbitBits {
    LowbitBits {
        rows: rows.rows as u64,
        channels: rows.channels as u64,
        words: rows.words as u64,
        ..Default::default()
    }
}

/// Unpack's parameters; `scale` is a device pointer to one `f32` per
/// channel, or 0 for none.
fn unpack_params(rows: Rows, scale: u64) -> LowbitBits {
    LowbitBits {
        scale: scale as *const f32,
        ..params(rows)
    }
}

fn flip_params(rows: Rows, has_previous: bool) -> LowbitBits {
    LowbitBits {
        has_previous: u32::from(has_previous),
        ..params(rows)
    }
}

/// Blocks for a bit kernel over `words` words: a warp per word, capped at
/// `LOWBIT_BITS_BLOCKS` (the warps loop over the rest).
fn grid(words: u64) -> u32 {
    let warps_per_block = u64::from(LOWBIT_THREADS / 32);
    words
        .div_ceil(warps_per_block)
        .clamp(1, u64::from(LOWBIT_BITS_BLOCKS)) as u32
}

/// The launch of `kernel` with parameters `p` and then `pointers`, in the
/// kernel's order; `None` when the tensor packs into no words (a grid of 0
/// blocks is a launch error).
fn launch(kernel: Typed, dtype: DType, p: LowbitBits, pointers: &[u64]) -> Option<Step> {
    let words = p.rows * p.words;
    let mut args = [Arg::Ptr(0); MAX_ARGS];
    args[0] = Arg::Bits(p);
    for (a, &ptr) in args[1..].iter_mut().zip(pointers) {
        *a = Arg::Ptr(ptr);
    }
    (words > 0).then(|| Step::Launch {
        kernel: Kernel::Typed(kernel, dtype),
        grid: grid(words),
        block: LOWBIT_THREADS,
        args: Args::new(&args[..1 + pointers.len()]),
    })
}

impl Cuda {
    /// [`bits::pack`] on `stream`, asynchronously: `x`, a
    /// tensor of `shape`, into `packed`, which holds
    /// [`packed_len`](crate::bits::packed_len)`(shape)` words.
    pub fn pack<T: Element>(
        &self,
        stream: &Arc<CudaStream>,
        x: &CudaView<'_, T>,
        shape: &[usize],
        packed: &mut CudaViewMut<'_, u32>,
    ) -> Result<()> {
        let rows = bits::check(shape, ("x", x.len()), ("packed", packed.len()))?;
        self.check_stream(stream)?;
        let (xp, _x) = x.device_ptr(stream);
        let (pp, _p) = packed.device_ptr_mut(stream);
        let step = launch(Typed::Pack, T::DTYPE, params(rows), &[xp, pp]);
        // SAFETY: the pointers come from live cudarc buffers of the checked
        // lengths, ordered on `stream` by the guards above.
        unsafe { self.run(step.as_slice(), stream.cu_stream()) }
    }

    /// [`bits::unpack`] on `stream`, asynchronously:
    /// `packed` into `y`, a tensor of `shape`, times `scale` (one `f32` per
    /// channel) when given.
    pub fn unpack<T: Element>(
        &self,
        stream: &Arc<CudaStream>,
        packed: &CudaView<'_, u32>,
        shape: &[usize],
        scale: Option<&CudaView<'_, f32>>,
        y: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        let rows = bits::check(shape, ("y", y.len()), ("packed", packed.len()))?;
        bits::check_scale(shape, rows, scale.map(|s| s.len()))?;
        self.check_stream(stream)?;
        let (pp, _p) = packed.device_ptr(stream);
        let scale = scale.map(|s| s.device_ptr(stream));
        let (yp, _y) = y.device_ptr_mut(stream);
        let p = unpack_params(rows, scale.as_ref().map_or(0, |(sp, _)| *sp));
        let step = launch(Typed::Unpack, T::DTYPE, p, &[pp, yp]);
        // SAFETY: as in `pack`; the scale, when given, holds `channels` floats.
        unsafe { self.run(step.as_slice(), stream.cu_stream()) }
    }

    /// One update of `metric` with `values`, on `stream`: the signs of
    /// `values` are compared with the previous update's on the device and
    /// stored in their place; only the count of flips (8 bytes) comes back.
    /// This waits for `stream`, except on the first update, which has
    /// nothing to count. See [`crate::bits::FlipRatio`] for the definition
    /// and how it follows larq. On error the running value does not change.
    pub fn update_flip_ratio<T: Element>(
        &self,
        stream: &Arc<CudaStream>,
        values: &CudaView<'_, T>,
        metric: &mut DeviceFlipRatio,
    ) -> Result<Flips> {
        metric.tracker.check(values.len())?;
        self.check_stream(stream)?;
        let rows = metric.tracker.rows();
        let counting = metric.tracker.has_previous() && rows.packed_len() > 0;
        if counting {
            stream
                .memset_zeros(&mut metric.flipped)
                .map_err(driver("cuMemsetD8Async"))?;
        }
        {
            let (vp, _v) = values.device_ptr(stream);
            let (pp, _p) = metric.previous.device_ptr_mut(stream);
            let (fp, _f) = metric.flipped.device_ptr_mut(stream);
            let p = flip_params(rows, metric.tracker.has_previous());
            let step = launch(Typed::FlipCount, T::DTYPE, p, &[vp, pp, fp]);
            // SAFETY: as in `pack`; `previous` holds the packed words and
            // `flipped` one counter, both allocated for this shape.
            unsafe { self.run(step.as_slice(), stream.cu_stream())? };
        }
        let mut flipped = [0u64];
        if counting {
            stream
                .memcpy_dtoh(&metric.flipped, &mut flipped[..])
                .map_err(driver("cuMemcpyDtoHAsync"))?;
            stream
                .synchronize()
                .map_err(driver("cuStreamSynchronize"))?;
        }
        Ok(metric.tracker.record(flipped[0]))
    }
}

/// larq's `flip_ratio` metric with its state on the GPU: the previous signs,
/// packed 1 bit per weight as [`crate::bits`] lays them out, and a flip
/// counter, both allocated once. Updated by [`Cuda::update_flip_ratio`];
/// [`crate::bits::FlipRatio`] defines the metric and says how it follows
/// larq.
///
/// ```rust,ignore
/// let mut metric = DeviceFlipRatio::new(&stream, &[out_channels, in_channels])?;
/// for step in 0..steps {
///     // ... the optimizer updates `weights` on `stream` ...
///     let flips = cuda.update_flip_ratio(&stream, &weights.as_view(), &mut metric)?;
///     log(step, flips.ratio, flips.running);
/// }
/// ```
#[derive(Debug)]
pub struct DeviceFlipRatio {
    pub(crate) tracker: Tracker,
    previous: CudaSlice<u32>,
    flipped: CudaSlice<u64>,
}

impl DeviceFlipRatio {
    /// The metric for tensors of `shape`, its state allocated on `stream`.
    pub fn new(stream: &Arc<CudaStream>, shape: &[usize]) -> Result<Self> {
        Self::with_tracker(stream, Tracker::new(shape)?)
    }

    /// The device state for `tracker`'s shape.
    pub(crate) fn with_tracker(stream: &Arc<CudaStream>, tracker: Tracker) -> Result<Self> {
        // At least one word: a zero-byte allocation is an error on some drivers.
        let words = tracker.rows().packed_len().max(1);
        let alloc = driver("cuMemAllocAsync");
        Ok(DeviceFlipRatio {
            tracker,
            previous: stream.alloc_zeros::<u32>(words).map_err(&alloc)?,
            flipped: stream.alloc_zeros::<u64>(1).map_err(&alloc)?,
        })
    }

    /// larq's `result()`; see [`crate::bits::FlipRatio::result`].
    pub fn result(&self) -> f32 {
        self.tracker.result()
    }

    /// larq's `reset_states`; see [`crate::bits::FlipRatio::reset`].
    pub fn reset(&mut self) {
        self.tracker.reset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];
    const KERNELS: [Typed; 3] = [Typed::Pack, Typed::Unpack, Typed::FlipCount];

    fn rows(rows: usize, channels: usize) -> Rows {
        Rows {
            rows,
            channels,
            words: channels.div_ceil(32),
        }
    }

    fn ptx_lines() -> impl Iterator<Item = &'static str> {
        super::super::ptx::BITS.lines().map(str::trim)
    }

    #[test]
    fn every_kernel_exists_in_the_ptx_and_takes_the_header_struct() {
        let entries: Vec<_> = super::super::entries(super::super::ptx::BITS).collect();
        for kernel in KERNELS {
            for dtype in DTYPES {
                let name = Kernel::Typed(kernel, dtype).name();
                assert!(entries.contains(&name), "no {name} in the PTX");
                // The first parameter is the LowbitBits bindgen generated, by
                // value: same size on both sides.
                let param = format!(
                    ".param .align 8 .b8 {name}_param_0[{}]",
                    std::mem::size_of::<LowbitBits>()
                );
                assert!(
                    ptx_lines().any(|l| l.starts_with(&param)),
                    "{name}: no `{param}`"
                );
            }
        }
        assert_eq!(entries.len(), KERNELS.len() * DTYPES.len());
    }

    #[test]
    fn pointers_follow_the_parameters_in_kernel_order() {
        let p = flip_params(rows(3, 65), true);
        let Some(Step::Launch {
            kernel,
            grid,
            block,
            args,
        }) = launch(Typed::FlipCount, DType::BF16, p, &[0x10, 0x20, 0x30])
        else {
            panic!("no launch")
        };
        assert_eq!(kernel.name(), "flip_count_bf16");
        // 3 rows of 3 words, 8 warps (words) per block.
        assert_eq!((grid, block), (2, 256));
        let [Arg::Bits(p), Arg::Ptr(0x10), Arg::Ptr(0x20), Arg::Ptr(0x30)] = args[..] else {
            panic!("{args:?}")
        };
        assert_eq!((p.rows, p.channels, p.words), (3, 65, 3));
        assert_eq!(p.has_previous, 1);
        assert!(p.scale.is_null());
    }

    #[test]
    fn unpack_passes_its_scale_in_the_parameters() {
        assert!(unpack_params(rows(2, 2), 0).scale.is_null());
        let p = unpack_params(rows(2, 2), 0x4000);
        assert_eq!(p.scale as u64, 0x4000);
        assert_eq!(flip_params(rows(2, 2), false).has_previous, 0);
        let Some(Step::Launch { kernel, args, .. }) =
            launch(Typed::Unpack, DType::F16, p, &[0x10, 0x20])
        else {
            panic!("no launch")
        };
        assert_eq!(kernel.name(), "unpack_f16");
        assert!(matches!(
            args[..],
            [Arg::Bits(_), Arg::Ptr(0x10), Arg::Ptr(0x20)]
        ));
    }

    #[test]
    fn grids_cover_every_word_up_to_the_cap() {
        assert_eq!(grid(1), 1);
        assert_eq!(grid(8), 1);
        assert_eq!(grid(9), 2);
        assert_eq!(grid(8 * 4096), 4096);
        assert_eq!(grid(u64::MAX), LOWBIT_BITS_BLOCKS);
    }

    #[test]
    fn tensors_without_words_launch_nothing() {
        for (r, c) in [(0, 5), (5, 0), (0, 0)] {
            for kernel in KERNELS {
                assert!(launch(kernel, DType::F32, params(rows(r, c)), &[1, 2]).is_none());
            }
        }
    }
}
