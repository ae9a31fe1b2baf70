//! What a forward or backward call launches, as plain data: typed kernels,
//! grid sizes and arguments, in fixed-size arrays, so planning a call
//! allocates nothing. Building the plan touches no driver, so tests check it
//! on machines without a GPU; [`super::Cuda`] only executes it.

use std::ffi::c_void;

use super::kernels::{Family, Kernel, Single, Typed};
use super::mask;
use super::sys::{
    LOWBIT_REDUCE_BLOCKS, LOWBIT_REDUCE_THREADS, LOWBIT_THREADS, LOWBIT_VECTOR_BYTES, LowbitBits,
    LowbitElementwise, LowbitReduce,
};
use crate::call::{self, Call, Pass};
use crate::cpu::rsign::channel_groups;
use crate::element::DType;
pub(crate) use crate::op::Direction;
use crate::op::{DorefaActivations, DorefaWeights, Functor, Op, Reduction, Scaled};
use crate::quantizer::Quantizer;

/// One kernel argument, passed by value as the kernel declares it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    Elementwise(LowbitElementwise),
    Reduce(LowbitReduce),
    Bits(LowbitBits),
    /// A device pointer (`CUdeviceptr`).
    Ptr(u64),
}

impl Arg {
    /// The pointer `cuLaunchKernel` wants: the address of the value.
    pub(crate) fn as_param(&self) -> *mut c_void {
        match self {
            Arg::Elementwise(p) => p as *const _ as *mut c_void,
            Arg::Reduce(p) => p as *const _ as *mut c_void,
            Arg::Bits(p) => p as *const _ as *mut c_void,
            Arg::Ptr(p) => p as *const _ as *mut c_void,
        }
    }
}

/// The most arguments a kernel takes (rsign's backward and the masked
/// forward take five).
pub(crate) const MAX_ARGS: usize = 6;

/// A kernel's arguments, in order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Args {
    items: [Arg; MAX_ARGS],
    len: usize,
}

impl Args {
    pub(crate) fn new(args: &[Arg]) -> Self {
        assert!(
            args.len() <= MAX_ARGS,
            "a kernel takes at most {MAX_ARGS} arguments"
        );
        let mut items = [Arg::Ptr(0); MAX_ARGS];
        items[..args.len()].copy_from_slice(args);
        Args {
            items,
            len: args.len(),
        }
    }
}

impl std::ops::Deref for Args {
    type Target = [Arg];
    fn deref(&self) -> &[Arg] {
        &self.items[..self.len]
    }
}

/// One step of a call, in stream order.
// A copy is smaller than a launch; boxing the launch would put an
// allocation back into every call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    Launch {
        kernel: Kernel,
        grid: u32,
        block: u32,
        args: Args,
    },
    /// A device-to-device copy (noop's forward and backward).
    Copy { src: u64, dst: u64, bytes: usize },
}

/// The most steps a call takes: a reduction's two kernels and the
/// elementwise one.
const MAX_STEPS: usize = 4;

/// Every step of one call, in stream order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    steps: [Step; MAX_STEPS],
    len: usize,
}

impl Plan {
    pub(crate) fn new() -> Self {
        const NONE: Step = Step::Copy {
            src: 0,
            dst: 0,
            bytes: 0,
        };
        Plan {
            steps: [NONE; MAX_STEPS],
            len: 0,
        }
    }

    pub(crate) fn push(&mut self, step: Step) {
        assert!(
            self.len < MAX_STEPS,
            "a call takes at most {MAX_STEPS} steps"
        );
        self.steps[self.len] = step;
        self.len += 1;
    }

    pub(crate) fn one(step: Step) -> Self {
        let mut plan = Plan::new();
        plan.push(step);
        plan
    }
}

impl std::ops::Deref for Plan {
    type Target = [Step];
    fn deref(&self) -> &[Step] {
        &self.steps[..self.len]
    }
}

/// Device addresses a call works on: its buffers by role (0 where the call
/// uses none), and the workspace, which holds the reductions' partials at
/// offset 0 and their results at [`Layout::reduced`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Addresses {
    pub x: u64,
    pub alpha: u64,
    pub dy: u64,
    pub mask: u64,
    pub scale: u64,
    /// `y` or `dx`.
    pub out: u64,
    pub dalpha: u64,
    pub workspace: u64,
}

impl Addresses {
    /// No buffers: the base of the tests' address sets.
    #[cfg(test)]
    pub(crate) const NONE: Addresses = Addresses {
        x: 0,
        alpha: 0,
        dy: 0,
        mask: 0,
        scale: 0,
        out: 0,
        dalpha: 0,
        workspace: 0,
    };

    pub(crate) fn new(b: &call::Buffers<u64>, workspace: u64) -> Self {
        Addresses {
            x: b.x,
            alpha: b.alpha,
            dy: b.dy,
            mask: b.mask,
            scale: b.scale,
            out: b.out,
            dalpha: b.dalpha,
            workspace,
        }
    }
}

/// The one entry to the planners: every step of `call` on `at`.
pub(crate) fn plan_call(call: &Call, at: Addresses) -> Plan {
    let dir = call.pass.direction();
    let (len, channels, inner) = (call.len, call.channels, call.inner);
    match (call.pass, call.op()) {
        (Pass::Forward | Pass::Backward, Some(op)) => plan(op, dir, len, channels, inner, at),
        (Pass::ForwardWithMask, Some(op)) => mask::forward_plan(op, len, channels, at),
        (Pass::BackwardFromMask, Some(op)) => mask::backward_plan(op, len, channels, at),
        (Pass::ForwardWithThresholds | Pass::BackwardWithThresholds, _) => {
            plan_rsign(dir, call.dtype, len, channels, at)
        }
        // `Call::new` gives every other pass an op.
        (pass, None) => unreachable!("{pass:?} without an op"),
    }
}

/// The workspace bytes `call` needs.
pub(crate) fn workspace_bytes(call: &Call) -> usize {
    let dir = call.pass.direction();
    match (call.pass, call.op()) {
        // The reduction's result was saved with the mask.
        (Pass::BackwardFromMask, _) => 0,
        (_, Some(op)) => layout(op, dir, call.len, call.channels, call.inner).bytes,
        (_, None) => rsign_layout(dir, call.len, call.channels).bytes,
    }
}

/// Where a call's reduction puts its partials and its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Byte offset of the reduced values (threshold, max or scales).
    pub reduced: usize,
    /// Total bytes; 0 when the call reduces nothing.
    pub bytes: usize,
}

const ALIGN: usize = 256;

/// The workspace a call needs for a tensor of `len` elements, `channels`
/// channels (the last axis) and `inner` elements per first-axis index.
pub(crate) fn layout(op: &Op, dir: Direction, len: usize, channels: usize, inner: usize) -> Layout {
    let blocks = LOWBIT_REDUCE_BLOCKS as usize;
    let none = Layout {
        reduced: 0,
        bytes: 0,
    };
    // An empty tensor launches nothing (see `plan`), and its channel count,
    // bounded by no buffer, must not size the workspace.
    if len == 0 {
        return none;
    }
    // Sizes saturate instead of wrapping: a shape whose scratch does not fit
    // in `usize` asks for a workspace no allocation can give.
    let (partials, reduced) = match op.reduction(dir) {
        Reduction::None | Reduction::Constant(_) => return none,
        Reduction::TwnThreshold => (blocks * 8, 4),
        Reduction::MaxAbsTanh => (blocks * 4, 4),
        // The header bounds the per-channel partials by grid size + channels.
        Reduction::ChannelMeanAbs => {
            let grid = blocks * LOWBIT_REDUCE_THREADS as usize;
            (
                grid.saturating_add(channels).min(len).saturating_mul(8),
                channels.max(1).saturating_mul(4),
            )
        }
        // No partials: one block sums a whole row.
        Reduction::RowMeanAbs => (0, rows(len, inner).max(1).saturating_mul(4)),
    };
    let offset = partials.div_ceil(ALIGN).saturating_mul(ALIGN);
    Layout {
        reduced: offset,
        bytes: offset.saturating_add(reduced),
    }
}

/// The workspace any call of `q` needs, rsign's included: what
/// `Cuda::workspace_bytes` reports. The layout depends on no element type.
pub(crate) fn call_layout(
    q: &Quantizer,
    dir: Direction,
    len: usize,
    channels: usize,
    inner: usize,
) -> Layout {
    match Op::new(q, DType::F32) {
        Some(op) => layout(&op, dir, len, channels, inner),
        None => rsign_layout(dir, len, channels),
    }
}

/// First-axis size from the element count and the elements per index.
fn rows(len: usize, inner: usize) -> usize {
    len.checked_div(inner).unwrap_or(0)
}

/// The kernel family of a functor; `None` for noop, whose passes are copies.
pub(super) fn kernel_family(functor: &Functor) -> Option<Family> {
    Some(match functor {
        Functor::SteSign(_) => Family::SteSign,
        Functor::ApproxSign(_) => Family::ApproxSign,
        Functor::SwishSign(_) => Family::SwishSign,
        Functor::Ede(_) => Family::Ede,
        Functor::ProgressiveSign(_) => Family::ProgressiveSign,
        // One kernel, `unipolar` a parameter.
        Functor::SteHeaviside(_) | Functor::SteHeavisideUnipolar(_) => Family::SteHeaviside,
        Functor::MagnitudeAwareSign(_) => Family::MagnitudeAwareSign,
        Functor::SteTern(_) => Family::SteTern,
        Functor::DorefaActivations(_) => Family::DorefaActivations,
        Functor::DorefaWeights(_) => Family::DorefaWeights,
        Functor::NoOp(_) => return None,
        Functor::SteSignScaled(_) => Family::SteSignScaled,
        Functor::ApproxSignScaled(_) => Family::ApproxSignScaled,
        Functor::SwishSignScaled(_) => Family::SwishSignScaled,
    })
}

/// The elementwise kernel of a pass; `None` where the pass is a copy.
pub(crate) fn elementwise_kernel(op: &Op, dir: Direction) -> Option<Kernel> {
    if op.copies(dir) {
        return None;
    }
    kernel_family(&op.functor).map(|f| Kernel::Elementwise(f, dir, op.dtype))
}

/// The parameters of the elementwise kernel, from the op's, which are
/// already rounded to the tensor's type.
pub(super) fn elementwise_params(
    op: &Op,
    len: usize,
    channels: usize,
    inner: usize,
    reduced: u64,
) -> LowbitElementwise {
    let mut p = LowbitElementwise {
        len: len as u64,
        channels: channels as u64,
        inner: inner as u64,
        reduced: std::ptr::null(),
        ..Default::default()
    };
    let clip = match op.functor {
        Functor::SteSign(f) | Functor::SteSignScaled(Scaled(f)) => f.clip,
        Functor::SteHeaviside(f) => f.clip,
        Functor::SteHeavisideUnipolar(f) => {
            p.unipolar = 1;
            f.clip
        }
        Functor::MagnitudeAwareSign(f) => f.clip,
        Functor::SteTern(f) => f.clip,
        Functor::SwishSign(f) | Functor::SwishSignScaled(Scaled(f)) => {
            p.beta = f.beta;
            None
        }
        Functor::DorefaActivations(DorefaActivations { levels })
        | Functor::DorefaWeights(DorefaWeights { levels }) => {
            p.levels = levels;
            None
        }
        Functor::Ede(f) => {
            p.ede_t = f.t;
            None
        }
        Functor::ProgressiveSign(f) => {
            p.divisor = f.divisor;
            None
        }
        Functor::ApproxSign(_) | Functor::ApproxSignScaled(_) | Functor::NoOp(_) => None,
    };
    if let Some(c) = clip {
        p.has_clip = 1;
        p.clip = c;
    }
    if let Reduction::Constant(threshold) = op.reduction(Direction::Forward) {
        p.threshold = threshold;
    }
    if reduced != 0 {
        p.reduced = reduced as *const f32;
    }
    p
}

/// Blocks for an elementwise kernel over `len` elements: one 16-byte vector
/// per thread, capped because the kernels loop over the rest.
fn elementwise_grid(len: usize, dtype: DType) -> u32 {
    let per_block = LOWBIT_THREADS as usize * (LOWBIT_VECTOR_BYTES as usize / dtype.size());
    len.div_ceil(per_block).clamp(1, 1 << 20) as u32
}

/// Every step of one call. `len` is the element count, `channels` the last
/// axis and `inner` the elements per first-axis index; the caller has checked
/// the buffers against them.
pub(crate) fn plan(
    op: &Op,
    dir: Direction,
    len: usize,
    channels: usize,
    inner: usize,
    bufs: Addresses,
) -> Plan {
    let dtype = op.dtype;
    if len == 0 {
        return Plan::new();
    }
    let Some(kernel) = elementwise_kernel(op, dir) else {
        let src = match dir {
            Direction::Forward => bufs.x,
            Direction::Backward => bufs.dy,
        };
        return Plan::one(Step::Copy {
            src,
            dst: bufs.out,
            bytes: len * dtype.size(),
        });
    };
    let mut steps = reduction_steps(op, dir, [len, channels, inner], bufs.x, bufs.workspace);
    let reduced = reduced_ptr(op, dir, [len, channels, inner], bufs.workspace);
    let params = elementwise_params(op, len, channels, inner, reduced);
    let (x, dy, out) = (Arg::Ptr(bufs.x), Arg::Ptr(bufs.dy), Arg::Ptr(bufs.out));
    let args = match dir {
        Direction::Forward => Args::new(&[Arg::Elementwise(params), x, out]),
        Direction::Backward => Args::new(&[Arg::Elementwise(params), x, dy, out]),
    };
    steps.push(Step::Launch {
        kernel,
        grid: elementwise_grid(len, dtype),
        block: LOWBIT_THREADS,
        args,
    });
    steps
}

/// A tensor's element count, channels (last axis) and elements per
/// first-axis index.
pub(super) type Dims = [usize; 3];

/// Where the reduction's result lies in `workspace`, for
/// `LowbitElementwise::reduced`; 0 when the call reduces nothing.
pub(super) fn reduced_ptr(op: &Op, dir: Direction, dims: Dims, workspace: u64) -> u64 {
    let [len, channels, inner] = dims;
    let lay = layout(op, dir, len, channels, inner);
    if lay.bytes == 0 {
        0
    } else {
        workspace + lay.reduced as u64
    }
}

/// The launches that fill `workspace` (see [`layout`]) before the
/// elementwise kernel runs; none when the quantizer reduces nothing.
pub(super) fn reduction_steps(op: &Op, dir: Direction, dims: Dims, x: u64, workspace: u64) -> Plan {
    let [len, channels, inner] = dims;
    let partials = workspace;
    let reduced = reduced_ptr(op, dir, dims, workspace);
    let reduce = LowbitReduce {
        len: len as u64,
        channels: channels as u64,
        rows: (len / channels.max(1)) as u64,
    };
    let launch = |kernel: Kernel, grid: u32, block: u32, args: &[Arg]| Step::Launch {
        kernel,
        grid,
        block,
        args: Args::new(args),
    };
    let (blocks, threads) = (LOWBIT_REDUCE_BLOCKS, LOWBIT_REDUCE_THREADS);
    let typed = |t: Typed| Some(Kernel::Typed(t, op.dtype));
    let mut steps = Plan::new();
    let (partial, finalize, finalize_grid) = match op.reduction(dir) {
        Reduction::None | Reduction::Constant(_) => (None, None, 1),
        Reduction::RowMeanAbs => {
            let rows = rows(len, inner);
            let reduce = LowbitReduce {
                rows: rows as u64,
                ..reduce
            };
            let args = [Arg::Reduce(reduce), Arg::Ptr(x), Arg::Ptr(reduced)];
            let grid = rows.clamp(1, 1 << 16) as u32;
            let kernel = Kernel::Typed(Typed::RowMeanAbs, op.dtype);
            steps.push(launch(kernel, grid, threads, &args));
            (None, None, 1)
        }
        Reduction::TwnThreshold => (
            typed(Typed::SumAbsPartial),
            typed(Typed::TwnThresholdFinalize),
            1,
        ),
        Reduction::MaxAbsTanh => (
            typed(Typed::MaxAbsTanhPartial),
            Some(Kernel::Single(Single::MaxAbsTanhFinalize)),
            1,
        ),
        Reduction::ChannelMeanAbs => (
            typed(Typed::ChannelSumAbsPartial),
            typed(Typed::ChannelMeanFinalize),
            blocks,
        ),
    };
    if let (Some(partial), Some(finalize)) = (partial, finalize) {
        let args = [Arg::Reduce(reduce), Arg::Ptr(x), Arg::Ptr(partials)];
        steps.push(launch(partial, blocks, threads, &args));
        let args = [Arg::Reduce(reduce), Arg::Ptr(partials), Arg::Ptr(reduced)];
        steps.push(launch(finalize, finalize_grid, threads, &args));
    }
    steps
}

/// `rsign`'s workspace: the backward pass's per-(row group, channel) partial
/// sums of dα (`LOWBIT_CHANNEL_SCRATCH` doubles); dα itself goes straight
/// to the caller's buffer.
pub(crate) fn rsign_layout(dir: Direction, len: usize, channels: usize) -> Layout {
    let bytes = match dir {
        Direction::Forward => 0,
        Direction::Backward => {
            let rows = len.checked_div(channels).unwrap_or(0);
            channel_groups(rows, channels)
                .saturating_mul(channels)
                .saturating_mul(8)
        }
    };
    Layout {
        reduced: bytes,
        bytes,
    }
}

/// Every step of an `rsign` call: the elementwise kernel (`y`, or `dx`),
/// then for the backward pass dα's partial sums over `dx` and the kernel that
/// combines them into `dalpha`. A tensor with no rows still has its dα
/// written (+0, an empty sum).
pub(crate) fn plan_rsign(
    dir: Direction,
    dtype: DType,
    len: usize,
    channels: usize,
    bufs: Addresses,
) -> Plan {
    let mut steps = Plan::new();
    if len > 0 {
        let params = LowbitElementwise {
            len: len as u64,
            channels: channels as u64,
            reduced: std::ptr::null(),
            ..Default::default()
        };
        let p = Arg::Elementwise(params);
        let [x, alpha, dy, out] = [bufs.x, bufs.alpha, bufs.dy, bufs.out].map(Arg::Ptr);
        let (kernel, args) = match dir {
            Direction::Forward => (Typed::RsignFwd, Args::new(&[p, x, alpha, out])),
            Direction::Backward => (Typed::RsignBwd, Args::new(&[p, x, alpha, dy, out])),
        };
        steps.push(Step::Launch {
            kernel: Kernel::Typed(kernel, dtype),
            grid: elementwise_grid(len, dtype),
            block: LOWBIT_THREADS,
            args,
        });
    }
    if dir == Direction::Backward && channels > 0 {
        let reduce = LowbitReduce {
            len: len as u64,
            channels: channels as u64,
            rows: (len / channels) as u64,
        };
        let mut reduce_step = |kernel: Typed, args: &[Arg]| {
            steps.push(Step::Launch {
                kernel: Kernel::Typed(kernel, dtype),
                grid: LOWBIT_REDUCE_BLOCKS,
                block: LOWBIT_REDUCE_THREADS,
                args: Args::new(args),
            })
        };
        let r = Arg::Reduce(reduce);
        let [out, workspace, dalpha] = [bufs.out, bufs.workspace, bufs.dalpha].map(Arg::Ptr);
        if len > 0 {
            reduce_step(Typed::RsignDalphaPartial, &[r, out, workspace]);
        }
        reduce_step(Typed::RsignDalphaFinalize, &[r, workspace, dalpha]);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUFS: Addresses = Addresses {
        x: 0x1000,
        dy: 0x2000,
        out: 0x3000,
        workspace: 0x4000,
        ..Addresses::NONE
    };

    fn q(spec: &str) -> Quantizer {
        spec.parse().unwrap()
    }

    fn op(spec: &str, dtype: DType) -> Op {
        op_of(&q(spec), dtype)
    }

    fn op_of(q: &Quantizer, dtype: DType) -> Op {
        Op::new(q, dtype).unwrap()
    }

    /// Every `.entry` the embedded PTX defines.
    fn entries() -> Vec<String> {
        [super::super::ptx::ELEMENTWISE, super::super::ptx::REDUCE]
            .iter()
            .flat_map(|ptx| ptx.lines())
            .filter_map(|l| l.trim().strip_prefix(".visible .entry "))
            .map(|l| l.split('(').next().unwrap().trim().to_string())
            .collect()
    }

    #[test]
    fn a_backward_from_a_mask_needs_no_workspace() {
        // The forward's per-channel means are saved with the mask.
        let (q, shape) = (q("magnitude_aware_sign"), [100, 10]);
        let call = |pass| Call::new(&q, DType::F32, pass, &shape).unwrap();
        assert!(workspace_bytes(&call(Pass::ForwardWithMask)) > 0);
        assert!(workspace_bytes(&call(Pass::Backward)) > 0);
        assert_eq!(workspace_bytes(&call(Pass::BackwardFromMask)), 0);
    }

    const SPECS: &[&str] = &[
        "ste_sign",
        "approx_sign",
        "swish_sign",
        "ste_heaviside(clip_value=none)",
        "magnitude_aware_sign",
        "ste_tern",
        "ste_tern(ternary_weight_networks=true)",
        "dorefa",
        "dorefa(mode=weights)",
        "noop(precision=1)",
        "ste_heaviside(unipolar=true)",
        "ede(progress=0.5)",
        "progressive_sign(temperature=0.5)",
        "ste_sign(scale=first_axis)",
        "approx_sign(scale=first_axis)",
        "swish_sign(scale=first_axis)",
    ];

    #[test]
    fn every_planned_kernel_exists_in_the_ptx() {
        let entries = entries();
        for spec in SPECS {
            for dir in [Direction::Forward, Direction::Backward] {
                for dtype in [DType::F32, DType::F16, DType::BF16] {
                    for step in plan(&op(spec, dtype), dir, 1000, 10, 100, BUFS).iter() {
                        if let Step::Launch { kernel, .. } = step {
                            assert!(
                                entries.iter().any(|e| e == kernel.name()),
                                "{spec}: no kernel {kernel} in the PTX"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn elementwise_arguments_follow_the_kernel_signature() {
        let steps = plan(
            &op("ste_sign(clip_value=0.3)", DType::F16),
            Direction::Backward,
            5000,
            5000,
            1,
            BUFS,
        );
        let [
            Step::Launch {
                kernel,
                grid,
                block,
                args,
            },
        ] = &steps[..]
        else {
            panic!("{steps:?}")
        };
        assert_eq!(kernel.name(), "ste_sign_bwd_f16");
        // 8 halves per thread, 256 threads: 2048 per block.
        assert_eq!((*grid, *block), (3, 256));
        let Arg::Elementwise(p) = args[0] else {
            panic!()
        };
        assert_eq!((p.len, p.has_clip), (5000, 1));
        // The clip is the f16 nearest 0.3, as the CPU path uses it.
        assert_eq!(p.clip, half::f16::from_f32(0.3).to_f32());
        assert!(p.reduced.is_null());
        assert!(matches!(
            args[1..],
            [Arg::Ptr(0x1000), Arg::Ptr(0x2000), Arg::Ptr(0x3000)]
        ));
    }

    #[test]
    fn reductions_run_before_the_elementwise_kernel_and_feed_it() {
        let q = q("magnitude_aware_sign");
        let steps = plan(
            &op_of(&q, DType::F32),
            Direction::Forward,
            64 * 100,
            64,
            64,
            BUFS,
        );
        let names: Vec<_> = steps
            .iter()
            .map(|s| match s {
                Step::Launch { kernel, grid, .. } => (kernel.name(), *grid),
                Step::Copy { .. } => ("copy", 0),
            })
            .collect();
        assert_eq!(
            names,
            [
                ("channel_sum_abs_partial_f32", 256),
                ("channel_mean_finalize_f32", 256),
                ("magnitude_aware_sign_fwd_f32", 7)
            ]
        );
        let lay = layout(&op_of(&q, DType::F32), Direction::Forward, 6400, 64, 64);
        let Step::Launch { args, .. } = &steps[2] else {
            panic!()
        };
        let Arg::Elementwise(p) = args[0] else {
            panic!()
        };
        assert_eq!(p.reduced as u64, BUFS.workspace + lay.reduced as u64);
        assert_eq!(p.channels, 64);
        // 6400 partial sums (no more than the tensor has), then 64 scales.
        assert!(lay.reduced >= 6400 * 8 && lay.bytes >= lay.reduced + 64 * 4);
    }

    #[test]
    fn a_shape_alone_never_sizes_a_wrapped_or_unbounded_workspace() {
        let mas = q("magnitude_aware_sign");
        for dir in [Direction::Forward, Direction::Backward] {
            // [0, 1 << 62]: no elements, so no scratch for its channels.
            assert_eq!(
                layout(&op_of(&mas, DType::F32), dir, 0, 1 << 62, 0).bytes,
                0
            );
            // [usize::MAX] (no buffer has been seen yet): the size saturates
            // where it would wrap round to a small workspace.
            assert_eq!(
                layout(&op_of(&mas, DType::F32), dir, usize::MAX, usize::MAX, 1).bytes,
                usize::MAX
            );
            let rsign = q("rsign");
            assert_eq!(call_layout(&rsign, dir, 0, 1 << 62, 0).bytes, 0);
        }
        let rows = q("ste_sign(scale=first_axis)");
        assert_eq!(
            layout(
                &op_of(&rows, DType::F32),
                Direction::Forward,
                usize::MAX,
                1,
                1
            )
            .bytes,
            usize::MAX
        );
        assert_eq!(
            rsign_layout(Direction::Backward, usize::MAX, usize::MAX).bytes,
            usize::MAX
        );
    }

    #[test]
    fn twn_reduces_only_in_the_forward_pass() {
        let q = q("ste_tern(ternary_weight_networks=true)");
        assert_eq!(
            plan(
                &op_of(&q, DType::BF16),
                Direction::Forward,
                10,
                10,
                10,
                BUFS
            )
            .len(),
            3
        );
        assert_eq!(
            plan(
                &op_of(&q, DType::BF16),
                Direction::Backward,
                10,
                10,
                10,
                BUFS
            )
            .len(),
            1
        );
        assert_eq!(
            layout(&op_of(&q, DType::F32), Direction::Backward, 10, 10, 10).bytes,
            0
        );
    }

    #[test]
    fn noop_copies_and_empty_tensors_launch_nothing() {
        let steps = plan(
            &op("noop(precision=1)", DType::F32),
            Direction::Backward,
            10,
            10,
            1,
            BUFS,
        );
        assert!(matches!(
            steps[..],
            [Step::Copy {
                src: 0x2000,
                dst: 0x3000,
                bytes: 40
            }]
        ));
        for spec in SPECS {
            assert!(plan(&op(spec, DType::F32), Direction::Forward, 0, 0, 0, BUFS).is_empty());
        }
    }

    #[test]
    fn scaled_signs_reduce_rows_into_the_workspace_then_read_them() {
        // 4 output channels of 3×5 weights: row_mean_abs writes 4 scales.
        let q = q("approx_sign(scale=first_axis)");
        let lay = layout(&op_of(&q, DType::F32), Direction::Backward, 60, 5, 15);
        assert_eq!((lay.reduced, lay.bytes), (0, 16));
        let steps = plan(&op_of(&q, DType::F32), Direction::Backward, 60, 5, 15, BUFS);
        let [
            Step::Launch {
                kernel: reduce,
                args: reduce_args,
                ..
            },
            Step::Launch {
                kernel: elementwise,
                args,
                ..
            },
        ] = &steps[..]
        else {
            panic!("{steps:?}")
        };
        assert_eq!(reduce.name(), "row_mean_abs_f32");
        let Arg::Reduce(r) = reduce_args[0] else {
            panic!("{reduce_args:?}")
        };
        assert_eq!((r.len, r.rows), (60, 4));
        assert!(matches!(reduce_args[2], Arg::Ptr(0x4000)));
        assert_eq!(elementwise.name(), "approx_sign_scaled_bwd_f32");
        let Arg::Elementwise(p) = args[0] else {
            panic!("{args:?}")
        };
        assert_eq!((p.inner, p.reduced as u64), (15, 0x4000));
    }

    #[test]
    fn ede_and_unipolar_parameters_reach_the_kernel() {
        let params = |spec: &str| {
            let steps = plan(&op(spec, DType::F32), Direction::Backward, 8, 8, 1, BUFS);
            match &steps[..] {
                [Step::Launch { args, .. }] => match args[0] {
                    Arg::Elementwise(p) => p,
                    _ => panic!("{args:?}"),
                },
                _ => panic!("{steps:?}"),
            }
        };
        assert_eq!(params("ede(t=2.5)").ede_t, 2.5);
        let p = params("ste_heaviside(clip_value=0.5, unipolar=true)");
        assert_eq!((p.unipolar, p.has_clip, p.clip), (1, 1, 0.5));
        assert_eq!(params("ste_heaviside").unipolar, 0);
    }

    const RSIGN_BUFS: Addresses = Addresses {
        x: 0x1000,
        alpha: 0x5000,
        dy: 0x2000,
        out: 0x3000,
        dalpha: 0x6000,
        workspace: 0x4000,
        ..Addresses::NONE
    };

    fn launches(steps: &[Step]) -> Vec<(&'static str, u32, u32)> {
        steps
            .iter()
            .map(|s| match s {
                Step::Launch {
                    kernel,
                    grid,
                    block,
                    ..
                } => (kernel.name(), *grid, *block),
                Step::Copy { .. } => ("copy", 0, 0),
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
    fn rsign_kernels_exist_in_the_ptx() {
        let entries = entries();
        for dir in [Direction::Forward, Direction::Backward] {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                for (len, channels) in [(1000, 10), (0, 4), (70_000, 1)] {
                    let steps = plan_rsign(dir, dtype, len, channels, RSIGN_BUFS);
                    for (kernel, _, _) in launches(&steps) {
                        assert!(entries.iter().any(|e| e == kernel), "no kernel {kernel}");
                    }
                }
            }
        }
    }

    #[test]
    fn rsign_forward_is_one_elementwise_launch_with_alpha_after_x() {
        let steps = plan_rsign(Direction::Forward, DType::BF16, 5000, 50, RSIGN_BUFS);
        assert_eq!(launches(&steps), [("rsign_fwd_bf16", 3, 256)]);
        let Step::Launch { args, .. } = &steps[0] else {
            panic!()
        };
        let Arg::Elementwise(p) = args[0] else {
            panic!()
        };
        assert_eq!((p.len, p.channels), (5000, 50));
        assert!(p.reduced.is_null());
        assert_eq!(ptrs(args), [0x1000, 0x5000, 0x3000]);
        assert_eq!(rsign_layout(Direction::Forward, 5000, 50).bytes, 0);
    }

    #[test]
    fn rsign_backward_reduces_dx_into_dalpha_after_the_elementwise_pass() {
        let (rows, channels) = (1000, 64);
        let steps = plan_rsign(
            Direction::Backward,
            DType::F32,
            rows * channels,
            channels,
            RSIGN_BUFS,
        );
        assert_eq!(
            launches(&steps),
            [
                ("rsign_bwd_f32", 63, 256),
                ("rsign_dalpha_partial_f32", 256, 256),
                ("rsign_dalpha_finalize_f32", 256, 256),
            ]
        );
        let args: Vec<&[Arg]> = steps
            .iter()
            .map(|s| match s {
                Step::Launch { args, .. } => &args[..],
                Step::Copy { .. } => panic!(),
            })
            .collect();
        // x, α, dy → dx; dx → partials; partials → dα.
        assert_eq!(ptrs(args[0]), [0x1000, 0x5000, 0x2000, 0x3000]);
        assert_eq!(ptrs(args[1]), [0x3000, 0x4000]);
        assert_eq!(ptrs(args[2]), [0x4000, 0x6000]);
        let Arg::Reduce(r) = args[1][0] else { panic!() };
        assert_eq!((r.len, r.channels, r.rows), (64_000, 64, 1000));
    }

    #[test]
    fn rsign_workspace_holds_one_partial_per_group_and_channel() {
        let q = q("rsign");
        for (rows, channels, groups) in [
            (1000, 64, 1000),
            (1 << 20, 1, 65_536),
            (40, 3000, 22),
            (5, 1 << 20, 1),
            (0, 4, 0),
        ] {
            let len = rows * channels;
            let want = groups * channels * 8;
            assert_eq!(rsign_layout(Direction::Backward, len, channels).bytes, want);
            assert_eq!(
                call_layout(&q, Direction::Backward, len, channels, 1).bytes,
                want
            );
            assert_eq!(
                call_layout(&q, Direction::Forward, len, channels, 1).bytes,
                0
            );
        }
        assert_eq!(rsign_layout(Direction::Backward, 0, 0).bytes, 0);
    }

    #[test]
    fn rsign_without_rows_still_writes_dalpha() {
        let steps = plan_rsign(Direction::Backward, DType::F16, 0, 4, RSIGN_BUFS);
        assert_eq!(launches(&steps), [("rsign_dalpha_finalize_f16", 256, 256)]);
        assert!(plan_rsign(Direction::Forward, DType::F16, 0, 4, RSIGN_BUFS).is_empty());
        assert!(plan_rsign(Direction::Backward, DType::F16, 0, 0, RSIGN_BUFS).is_empty());
    }

    #[test]
    fn the_cpu_sums_dalpha_in_the_kernels_partition() {
        use super::super::sys::LOWBIT_CHANNEL_TREE_GROUPS;
        use crate::cpu::rsign::{GRID_THREADS, LANES, TREE_GROUPS};
        assert_eq!(
            GRID_THREADS,
            (LOWBIT_REDUCE_BLOCKS * LOWBIT_REDUCE_THREADS) as usize
        );
        assert_eq!(LANES, LOWBIT_REDUCE_THREADS as usize);
        assert_eq!(TREE_GROUPS, LOWBIT_CHANNEL_TREE_GROUPS as usize);
    }
}
