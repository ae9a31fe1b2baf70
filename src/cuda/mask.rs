//! Masked forward and backward passes on the GPU (`kernels/mask.cu`): their
//! launch plans, plain data tested without a GPU, and the calls on cudarc
//! views or raw pointers, asynchronous on the caller's stream.

use std::sync::Arc;

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, sys as cu};

use super::kernels::{Kernel, Masked, Single, Typed};
use super::plan::{self, Addresses, Arg, Args, Direction, Plan, Step};
use super::sys::LOWBIT_THREADS;
use super::{Cuda, Workspace};
use crate::call::{Buffers, Call, Pass};
use crate::element::{DType, Element};
use crate::error::Result;
use crate::mask::{MASK_BITS, mask_words};
use crate::op::{Functor, Op, Window};
use crate::quantizer::Quantizer;

/// Blocks for `len` elements: a warp per mask word, or a thread per element.
fn grid(len: usize) -> u32 {
    let warps_per_block = LOWBIT_THREADS as usize / MASK_BITS;
    mask_words(len).div_ceil(warps_per_block).clamp(1, 1 << 20) as u32
}

fn launch(kernel: Kernel, len: usize, args: &[Arg]) -> Step {
    Step::Launch {
        kernel,
        grid: grid(len),
        block: LOWBIT_THREADS,
        args: Args::new(args),
    }
}

/// The masked forward kernel of a family that saves a mask.
fn masked(functor: &Functor) -> Option<Masked> {
    Some(match functor {
        Functor::SteSign(_) => Masked::SteSign,
        Functor::SteHeaviside(_) | Functor::SteHeavisideUnipolar(_) => Masked::SteHeaviside,
        Functor::MagnitudeAwareSign(_) => Masked::MagnitudeAwareSign,
        Functor::SteTern(_) => Masked::SteTern,
        Functor::DorefaActivations(_) => Masked::DorefaActivations,
        _ => return None,
    })
}

/// Every step of a masked forward: the unmasked forward's reductions, then
/// one kernel writing `y`, the mask and (magnitude_aware_sign) the scale.
/// Where every bit passes, `y` is the unmasked forward's and a second kernel
/// sets the bits.
pub(crate) fn forward_plan(op: &Op, len: usize, channels: usize, bufs: Addresses) -> Plan {
    // An empty tensor still has its channels' scales (0) to write.
    let scales = if op.saves_scale() { channels } else { 0 };
    if len == 0 && scales == 0 {
        return Plan::new();
    }
    let dir = Direction::Forward;
    // No maskable quantizer has a first-axis scale: `inner` (1) is unused.
    let dims = [len, channels, 1];
    let reduced = plan::reduced_ptr(op, dir, dims, bufs.workspace);
    let params = Arg::Elementwise(plan::elementwise_params(op, len, channels, 1, reduced));
    if op.window == Some(Window::Everywhere) {
        let mut steps = plan::plan(op, dir, len, channels, 1, bufs);
        let kernel = Kernel::Single(Single::AllPassMask);
        steps.push(launch(kernel, len, &[params, Arg::Ptr(bufs.mask)]));
        return steps;
    }
    // Only these have a window other than everywhere (Op::new).
    let Some(family) = masked(&op.functor) else {
        unreachable!("{:?} has a window but no masked kernel", op.functor)
    };
    let mut steps = plan::reduction_steps(op, dir, dims, bufs.x, bufs.workspace);
    let [x, out, mask, scale] = [bufs.x, bufs.out, bufs.mask, bufs.scale].map(Arg::Ptr);
    let kernel = Kernel::ForwardMask(family, op.dtype);
    steps.push(launch(kernel, len, &[params, x, out, mask, scale]));
    steps
}

/// The one step of a backward pass from a mask: `dy` where the bit is set
/// (times the saved scale for magnitude_aware_sign), or a copy where every
/// bit is.
pub(crate) fn backward_plan(op: &Op, len: usize, channels: usize, bufs: Addresses) -> Plan {
    if len == 0 {
        return Plan::new();
    }
    if op.copies(Direction::Backward) {
        return Plan::one(Step::Copy {
            src: bufs.dy,
            dst: bufs.out,
            bytes: len * op.dtype.size(),
        });
    }
    // Whatever quantizer made the mask, `dy` passes where the bit is set.
    let kernel = match op.functor {
        Functor::MagnitudeAwareSign(_) => Typed::MagnitudeAwareSignBwdMask,
        _ => Typed::PassBwdMask,
    };
    let params = Arg::Elementwise(plan::elementwise_params(op, len, channels, 1, 0));
    let [mask, scale, dy, out] = [bufs.mask, bufs.scale, bufs.dy, bufs.out].map(Arg::Ptr);
    Plan::one(launch(
        Kernel::Typed(kernel, op.dtype),
        len,
        &[params, mask, scale, dy, out],
    ))
}

impl Cuda {
    /// [`Quantizer::forward_with_mask`] on `stream`, asynchronously: `y`,
    /// the mask (`mask_words(len)` words) and, for magnitude_aware_sign,
    /// the per-channel `scale` (`None` for the others). Grows `ws` as
    /// [`forward`](Self::forward) does; it needs the same bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with_mask<T: Element>(
        &self,
        q: &Quantizer,
        stream: &Arc<CudaStream>,
        x: &CudaView<'_, T>,
        shape: &[usize],
        y: &mut CudaViewMut<'_, T>,
        mask: &mut CudaViewMut<'_, u32>,
        scale: Option<&mut CudaViewMut<'_, T>>,
        ws: &mut Workspace,
    ) -> Result<()> {
        let call = Call::new(q, T::DTYPE, Pass::ForwardWithMask, shape)?;
        call.check(&Buffers {
            x: x.len(),
            out: y.len(),
            mask: mask.len(),
            scale: scale.as_ref().map_or(0, |s| s.len()),
            ..Buffers::default()
        })?;
        let (x, _x) = x.device_ptr(stream);
        let (out, _y) = y.device_ptr_mut(stream);
        let (mask, _m) = mask.device_ptr_mut(stream);
        let (scale, _s) = scale.map(|s| s.device_ptr_mut(stream)).unzip();
        let at = Buffers {
            x,
            out,
            mask,
            scale: scale.unwrap_or(0),
            ..Buffers::default()
        };
        self.enqueue(&call, stream, &at, ws)
    }

    /// [`Quantizer::backward_from_mask`] on `stream`, asynchronously, from
    /// the mask and scale [`forward_with_mask`](Self::forward_with_mask)
    /// saved. Needs no workspace.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_from_mask<T: Element>(
        &self,
        q: &Quantizer,
        stream: &Arc<CudaStream>,
        mask: &CudaView<'_, u32>,
        scale: Option<&CudaView<'_, T>>,
        dy: &CudaView<'_, T>,
        shape: &[usize],
        dx: &mut CudaViewMut<'_, T>,
    ) -> Result<()> {
        let call = Call::new(q, T::DTYPE, Pass::BackwardFromMask, shape)?;
        call.check(&Buffers {
            mask: mask.len(),
            scale: scale.map_or(0, |s| s.len()),
            dy: dy.len(),
            out: dx.len(),
            ..Buffers::default()
        })?;
        let (mask, _m) = mask.device_ptr(stream);
        let (scale, _s) = scale.map(|s| s.device_ptr(stream)).unzip();
        let (dy, _dy) = dy.device_ptr(stream);
        let (out, _dx) = dx.device_ptr_mut(stream);
        let at = Buffers {
            mask,
            scale: scale.unwrap_or(0),
            dy,
            out,
            ..Buffers::default()
        };
        self.enqueue(&call, stream, &at, &mut Workspace::new())
    }

    /// [`forward_with_mask`](Self::forward_with_mask) on raw device pointers
    /// and a raw stream. `scale` is 0 where
    /// [`Quantizer::saved_scale_len`] is 0; `ws` must already be large
    /// enough ([`workspace_bytes`](Self::workspace_bytes), forward).
    ///
    /// # Safety
    /// `x` and `y` must be device pointers of this context to `shape`'s
    /// element count of `dtype`, `mask` to `mask_words(len)` `u32`s and
    /// `scale` to `saved_scale_len(shape)` elements of `dtype`, valid until
    /// the stream reaches this work; `stream` must be a stream of this
    /// context (or null, the legacy one).
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn forward_with_mask_raw(
        &self,
        q: &Quantizer,
        dtype: DType,
        stream: cu::CUstream,
        x: cu::CUdeviceptr,
        shape: &[usize],
        y: cu::CUdeviceptr,
        mask: cu::CUdeviceptr,
        scale: cu::CUdeviceptr,
        ws: &Workspace,
    ) -> Result<()> {
        let call = Call::new(q, dtype, Pass::ForwardWithMask, shape)?;
        let at = Buffers {
            x,
            out: y,
            mask,
            scale,
            ..Buffers::default()
        };
        // SAFETY: the caller vouches for the pointers and the stream.
        unsafe { self.enqueue_raw(&call, stream, &at, ws) }
    }

    /// [`backward_from_mask`](Self::backward_from_mask) on raw device
    /// pointers and a raw stream.
    ///
    /// # Safety
    /// As [`forward_with_mask_raw`](Self::forward_with_mask_raw), for `mask`,
    /// `scale`, `dy` and `dx`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn backward_from_mask_raw(
        &self,
        q: &Quantizer,
        dtype: DType,
        stream: cu::CUstream,
        mask: cu::CUdeviceptr,
        scale: cu::CUdeviceptr,
        dy: cu::CUdeviceptr,
        shape: &[usize],
        dx: cu::CUdeviceptr,
    ) -> Result<()> {
        let call = Call::new(q, dtype, Pass::BackwardFromMask, shape)?;
        let at = Buffers {
            mask,
            scale,
            dy,
            out: dx,
            ..Buffers::default()
        };
        // SAFETY: the caller vouches for the pointers and the stream.
        unsafe { self.enqueue_raw(&call, stream, &at, &Workspace::new()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    const BUFS: Addresses = Addresses {
        x: 0x1000,
        dy: 0x2000,
        out: 0x3000,
        mask: 0x5000,
        scale: 0x6000,
        workspace: 0x4000,
        ..Addresses::NONE
    };

    const SPECS: &[&str] = &[
        "ste_sign",
        "ste_sign(clip_value=none)",
        "ste_heaviside(clip_value=0.5)",
        "magnitude_aware_sign",
        "ste_tern",
        "ste_tern(ternary_weight_networks=true)",
        "dorefa(k_bit=3)",
        "noop(precision=2)",
        "progressive_sign(temperature=0.5)",
    ];

    const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    fn forward_plan_of(
        q: &Quantizer,
        dtype: DType,
        len: usize,
        channels: usize,
        bufs: Addresses,
    ) -> Result<Plan> {
        let call = Call::new(q, dtype, Pass::ForwardWithMask, &[])?;
        Ok(forward_plan(call.op().unwrap(), len, channels, bufs))
    }

    fn backward_plan_of(
        q: &Quantizer,
        dtype: DType,
        len: usize,
        channels: usize,
        bufs: Addresses,
    ) -> Result<Plan> {
        let call = Call::new(q, dtype, Pass::BackwardFromMask, &[])?;
        Ok(backward_plan(call.op().unwrap(), len, channels, bufs))
    }

    fn q(spec: &str) -> Quantizer {
        spec.parse().unwrap()
    }

    /// `(kernel, grid, args)` of each launch; copies as `("copy", 0, [])`.
    fn launches(steps: &[Step]) -> Vec<(&str, u32, &[Arg])> {
        steps
            .iter()
            .map(|s| match s {
                Step::Launch {
                    kernel, grid, args, ..
                } => (kernel.name(), *grid, &args[..]),
                Step::Copy { .. } => ("copy", 0, &[][..]),
            })
            .collect()
    }

    fn ptrs(args: &[Arg]) -> Vec<u64> {
        args.iter()
            .filter_map(|a| match a {
                Arg::Ptr(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_header_and_the_crate_agree_on_the_word_size() {
        assert_eq!(super::super::sys::LOWBIT_MASK_BITS as usize, MASK_BITS);
    }

    #[test]
    fn every_planned_kernel_exists_in_the_ptx() {
        let entries: Vec<&str> = super::super::entries(super::super::ptx::MASK)
            .chain(super::super::entries(super::super::ptx::REDUCE))
            .chain(super::super::entries(super::super::ptx::ELEMENTWISE))
            .collect();
        for spec in SPECS {
            for dtype in DTYPES {
                let fwd = forward_plan_of(&q(spec), dtype, 1000, 10, BUFS).unwrap();
                let bwd = backward_plan_of(&q(spec), dtype, 1000, 10, BUFS).unwrap();
                for (kernel, _, _) in launches(&fwd).into_iter().chain(launches(&bwd)) {
                    assert!(
                        kernel == "copy" || entries.contains(&kernel),
                        "{spec}: no kernel {kernel} in the PTX"
                    );
                }
            }
        }
    }

    #[test]
    fn a_warp_per_word_forward_a_thread_per_element_backward() {
        let q = q("ste_sign(clip_value=0.3)");
        // 2^24 elements: 2^19 words, 8 warps per block.
        let fwd = forward_plan_of(&q, DType::F16, 1 << 24, 1 << 24, BUFS).unwrap();
        let [(kernel, grid, args)] = launches(&fwd)[..] else {
            panic!("{fwd:?}")
        };
        assert_eq!((kernel, grid), ("ste_sign_fwd_mask_f16", 1 << 16));
        let Arg::Elementwise(p) = args[0] else {
            panic!()
        };
        assert_eq!((p.len, p.has_clip), (1 << 24, 1));
        assert_eq!(p.clip, half::f16::from_f32(0.3).to_f32());
        assert_eq!(ptrs(args), [BUFS.x, BUFS.out, BUFS.mask, BUFS.scale]);

        let bwd = backward_plan_of(&q, DType::F16, 1000, 1000, BUFS).unwrap();
        let [(kernel, grid, args)] = launches(&bwd)[..] else {
            panic!("{bwd:?}")
        };
        // 1000 threads: 4 blocks of 256.
        assert_eq!((kernel, grid), ("pass_bwd_mask_f16", 4));
        assert_eq!(ptrs(args), [BUFS.mask, BUFS.scale, BUFS.dy, BUFS.out]);
        // The smallest tensor still launches a block.
        let one = forward_plan_of(&q, DType::F32, 1, 1, BUFS).unwrap();
        assert_eq!(launches(&one)[0].1, 1);
    }

    #[test]
    fn reductions_feed_the_masked_forward_and_none_run_backward() {
        let mas = q("magnitude_aware_sign");
        let fwd = forward_plan_of(&mas, DType::BF16, 64 * 100, 64, BUFS).unwrap();
        let names: Vec<_> = launches(&fwd).iter().map(|l| l.0).collect();
        assert_eq!(
            names,
            [
                "channel_sum_abs_partial_bf16",
                "channel_mean_finalize_bf16",
                "magnitude_aware_sign_fwd_mask_bf16"
            ]
        );
        let Step::Launch { args, .. } = &fwd[2] else {
            panic!()
        };
        let Arg::Elementwise(p) = args[0] else {
            panic!()
        };
        let call = Call::new(&mas, DType::BF16, Pass::ForwardWithMask, &[]).unwrap();
        let op = call.op().unwrap();
        let lay = plan::layout(op, Direction::Forward, 6400, 64, 1);
        assert_eq!(p.reduced as u64, BUFS.workspace + lay.reduced as u64);
        assert_eq!(p.channels, 64);

        let bwd = backward_plan_of(&mas, DType::BF16, 6400, 64, BUFS).unwrap();
        let names: Vec<_> = launches(&bwd).iter().map(|l| l.0).collect();
        assert_eq!(names, ["magnitude_aware_sign_bwd_mask_bf16"]);

        let twn = q("ste_tern(ternary_weight_networks=true)");
        assert_eq!(
            forward_plan_of(&twn, DType::F32, 10, 10, BUFS)
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            backward_plan_of(&twn, DType::F32, 10, 10, BUFS)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn noop_copies_and_sets_every_bit() {
        let noop = q("noop(precision=4)");
        let fwd = forward_plan_of(&noop, DType::F16, 10, 10, BUFS).unwrap();
        assert!(matches!(
            fwd[0],
            Step::Copy {
                src: 0x1000,
                dst: 0x3000,
                bytes: 20
            }
        ));
        assert_eq!(launches(&fwd)[1].0, "all_pass_mask");
        assert_eq!(ptrs(launches(&fwd)[1].2), [BUFS.mask]);
        let bwd = backward_plan_of(&noop, DType::F16, 10, 10, BUFS).unwrap();
        assert!(matches!(
            bwd[..],
            [Step::Copy {
                src: 0x2000,
                dst: 0x3000,
                bytes: 20
            }]
        ));
    }

    #[test]
    fn empty_tensors_launch_nothing_but_the_scales_they_owe() {
        for spec in SPECS {
            assert!(
                backward_plan_of(&q(spec), DType::F32, 0, 0, BUFS)
                    .unwrap()
                    .is_empty()
            );
            if !spec.starts_with("magnitude") {
                assert!(
                    forward_plan_of(&q(spec), DType::F32, 0, 5, BUFS)
                        .unwrap()
                        .is_empty()
                );
            }
        }
        // Shape [0, 5]: five scales of 0 still to write.
        let mas = forward_plan_of(&q("magnitude_aware_sign"), DType::F32, 0, 5, BUFS).unwrap();
        assert_eq!(mas.len(), 3);
        assert!(
            forward_plan_of(&q("magnitude_aware_sign"), DType::F32, 0, 0, BUFS)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn quantizers_that_need_x_have_no_plan() {
        for spec in ["approx_sign", "swish_sign", "dorefa(mode=weights)"] {
            for result in [
                forward_plan_of(&q(spec), DType::F32, 10, 10, BUFS),
                backward_plan_of(&q(spec), DType::F32, 10, 10, BUFS),
            ] {
                assert!(matches!(result, Err(Error::NotMaskable { .. })), "{spec}");
            }
        }
    }
}
