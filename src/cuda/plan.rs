//! What a forward or backward call launches, as plain data: kernel names,
//! grid sizes and arguments. Building the plan touches no driver, so tests
//! check it on machines without a GPU; [`super::Cuda`] only executes it.

use std::ffi::c_void;

use super::sys::{
    LOWBIT_REDUCE_BLOCKS, LOWBIT_REDUCE_THREADS, LOWBIT_THREADS, LOWBIT_VECTOR_BYTES, LowbitBits,
    LowbitElementwise, LowbitReduce,
};
use crate::cpu::rsign::channel_groups;
use crate::element::DType;
use crate::quantizer::{DorefaMode, Kind, Quantizer, WeightScale};

/// Forward (`y = q(x)`) or backward (`dx = dq/dx · dy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Forward,
    Backward,
}

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

/// One step of a call, in stream order.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Launch {
        kernel: String,
        grid: u32,
        block: u32,
        args: Vec<Arg>,
    },
    /// A device-to-device copy (noop's forward and backward).
    Copy { src: u64, dst: u64, bytes: usize },
}

/// Device addresses a call works on. `workspace` holds the reductions'
/// partials at offset 0 and their results at [`Layout::reduced`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Buffers {
    pub x: u64,
    /// `dy` for backward; unused by forward.
    pub dy: u64,
    /// `y` or `dx`.
    pub out: u64,
    pub workspace: u64,
}

/// Where a call's reduction puts its partials and its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Byte offset of the reduced values (threshold, max or scales).
    pub reduced: usize,
    /// Total bytes; 0 when the call reduces nothing.
    pub bytes: usize,
}

/// The reduction a quantizer runs before its elementwise kernel, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reduction {
    None,
    TwnThreshold,
    MaxAbsTanh,
    ChannelMeanAbs,
    RowMeanAbs,
}

fn reduction(q: &Quantizer, dir: Direction) -> Reduction {
    if q.scale() == WeightScale::FirstAxis {
        return Reduction::RowMeanAbs;
    }
    match (q.kind(), dir) {
        (
            Kind::SteTern {
                ternary_weight_networks: true,
                ..
            },
            Direction::Forward,
        ) => Reduction::TwnThreshold,
        (
            Kind::DoReFa {
                mode: DorefaMode::Weights,
                ..
            },
            _,
        ) => Reduction::MaxAbsTanh,
        (Kind::MagnitudeAwareSign { .. }, _) => Reduction::ChannelMeanAbs,
        _ => Reduction::None,
    }
}

const ALIGN: usize = 256;

/// The workspace a call needs for a tensor of `len` elements, `channels`
/// channels (the last axis) and `inner` elements per first-axis index.
pub(crate) fn layout(
    q: &Quantizer,
    dir: Direction,
    len: usize,
    channels: usize,
    inner: usize,
) -> Layout {
    if q.takes_thresholds() {
        return rsign_layout(dir, len, channels);
    }
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
    let (partials, reduced) = match reduction(q, dir) {
        Reduction::None => return none,
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

/// First-axis size from the element count and the elements per index.
fn rows(len: usize, inner: usize) -> usize {
    len.checked_div(inner).unwrap_or(0)
}

/// The kernel family name of a quantizer: `<name>_<fwd|bwd>_<dtype>`.
fn kernel_prefix(q: &Quantizer) -> Option<&'static str> {
    if q.scale() == WeightScale::FirstAxis {
        return match q.kind() {
            Kind::SteSign { .. } => Some("ste_sign_scaled"),
            Kind::ApproxSign => Some("approx_sign_scaled"),
            Kind::SwishSign { .. } => Some("swish_sign_scaled"),
            // Quantizer::with_scale admits only the sign family.
            _ => None,
        };
    }
    Some(match q.kind() {
        Kind::SteSign { .. } => "ste_sign",
        Kind::ApproxSign => "approx_sign",
        Kind::SwishSign { .. } => "swish_sign",
        Kind::SteHeaviside { .. } => "ste_heaviside",
        Kind::MagnitudeAwareSign { .. } => "magnitude_aware_sign",
        Kind::SteTern { .. } => "ste_tern",
        Kind::DoReFa {
            mode: DorefaMode::Activations,
            ..
        } => "dorefa_activations",
        Kind::DoReFa {
            mode: DorefaMode::Weights,
            ..
        } => "dorefa_weights",
        Kind::Ede { .. } => "ede",
        Kind::NoOp { .. } => return None,
        Kind::RSign => "rsign",
    })
}

/// The elementwise kernel's name, e.g. `ste_sign_fwd_bf16`; `None` for noop,
/// which is a copy.
pub(crate) fn kernel_name(q: &Quantizer, dir: Direction, dtype: DType) -> Option<String> {
    let d = match dir {
        Direction::Forward => "fwd",
        Direction::Backward => "bwd",
    };
    kernel_prefix(q).map(|p| format!("{p}_{d}_{}", dtype.name()))
}

/// The parameters of the elementwise kernel. Thresholds are rounded to the
/// tensor's type here, as the CPU path does.
pub(super) fn elementwise_params(
    q: &Quantizer,
    dtype: DType,
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
    let clip = match q.kind() {
        Kind::SteSign { clip_value }
        | Kind::SteHeaviside { clip_value, .. }
        | Kind::MagnitudeAwareSign { clip_value }
        | Kind::SteTern { clip_value, .. } => clip_value,
        _ => None,
    };
    if let Some(c) = clip {
        p.has_clip = 1;
        p.clip = dtype.round(c);
    }
    match q.kind() {
        Kind::SwishSign { beta } => p.beta = beta,
        Kind::SteTern {
            threshold_value, ..
        } => p.threshold = dtype.round(threshold_value),
        Kind::DoReFa { k_bit, .. } => p.levels = crate::scalar::dorefa_levels(k_bit),
        Kind::SteHeaviside { unipolar, .. } => p.unipolar = u32::from(unipolar),
        Kind::Ede { t } => p.ede_t = t,
        _ => {}
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
    q: &Quantizer,
    dir: Direction,
    dtype: DType,
    len: usize,
    channels: usize,
    inner: usize,
    bufs: Buffers,
) -> Vec<Step> {
    // rsign's kernels take α as well: `plan_rsign`, after the plain entry
    // points have refused it.
    assert!(!q.takes_thresholds(), "{q} is planned by plan_rsign");
    if len == 0 {
        return Vec::new();
    }
    let Some(kernel) = kernel_name(q, dir, dtype) else {
        let src = match dir {
            Direction::Forward => bufs.x,
            Direction::Backward => bufs.dy,
        };
        return vec![Step::Copy {
            src,
            dst: bufs.out,
            bytes: len * dtype.size(),
        }];
    };
    let mut steps = reduction_steps(
        q,
        dir,
        dtype,
        [len, channels, inner],
        bufs.x,
        bufs.workspace,
    );
    let reduced = reduced_ptr(q, dir, [len, channels, inner], bufs.workspace);
    let params = elementwise_params(q, dtype, len, channels, inner, reduced);
    let mut args = vec![Arg::Elementwise(params), Arg::Ptr(bufs.x)];
    if dir == Direction::Backward {
        args.push(Arg::Ptr(bufs.dy));
    }
    args.push(Arg::Ptr(bufs.out));
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
pub(super) fn reduced_ptr(q: &Quantizer, dir: Direction, dims: Dims, workspace: u64) -> u64 {
    let [len, channels, inner] = dims;
    let lay = layout(q, dir, len, channels, inner);
    if lay.bytes == 0 {
        0
    } else {
        workspace + lay.reduced as u64
    }
}

/// The launches that fill `workspace` (see [`layout`]) before the
/// elementwise kernel runs; none when the quantizer reduces nothing.
pub(super) fn reduction_steps(
    q: &Quantizer,
    dir: Direction,
    dtype: DType,
    dims: Dims,
    x: u64,
    workspace: u64,
) -> Vec<Step> {
    let [len, channels, inner] = dims;
    let partials = workspace;
    let reduced = reduced_ptr(q, dir, dims, workspace);
    let reduce = LowbitReduce {
        len: len as u64,
        channels: channels as u64,
        rows: (len / channels.max(1)) as u64,
    };
    let launch = |kernel: String, grid: u32, block: u32, args: Vec<Arg>| Step::Launch {
        kernel,
        grid,
        block,
        args,
    };
    let (blocks, threads) = (LOWBIT_REDUCE_BLOCKS, LOWBIT_REDUCE_THREADS);
    let dt = dtype.name();
    let mut steps = Vec::with_capacity(3);
    let (partial, finalize, finalize_grid) = match reduction(q, dir) {
        Reduction::None => (None, None, 1),
        Reduction::RowMeanAbs => {
            let rows = rows(len, inner);
            let reduce = LowbitReduce {
                rows: rows as u64,
                ..reduce
            };
            let args = vec![Arg::Reduce(reduce), Arg::Ptr(x), Arg::Ptr(reduced)];
            let grid = rows.clamp(1, 1 << 16) as u32;
            steps.push(launch(format!("row_mean_abs_{dt}"), grid, threads, args));
            (None, None, 1)
        }
        Reduction::TwnThreshold => (
            Some(format!("sum_abs_partial_{dt}")),
            Some(format!("twn_threshold_finalize_{dt}")),
            1,
        ),
        Reduction::MaxAbsTanh => (
            Some(format!("max_abs_tanh_partial_{dt}")),
            Some("max_abs_tanh_finalize".to_string()),
            1,
        ),
        Reduction::ChannelMeanAbs => (
            Some(format!("channel_sum_abs_partial_{dt}")),
            Some(format!("channel_mean_finalize_{dt}")),
            blocks,
        ),
    };
    if let (Some(partial), Some(finalize)) = (partial, finalize) {
        let args = vec![Arg::Reduce(reduce), Arg::Ptr(x), Arg::Ptr(partials)];
        steps.push(launch(partial, blocks, threads, args));
        let args = vec![Arg::Reduce(reduce), Arg::Ptr(partials), Arg::Ptr(reduced)];
        steps.push(launch(finalize, finalize_grid, threads, args));
    }
    steps
}

/// Device addresses of an `rsign` call; `dy`, `dalpha` and `workspace` are
/// the backward pass's.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RSignBuffers {
    pub x: u64,
    pub alpha: u64,
    pub dy: u64,
    /// `y` or `dx`.
    pub out: u64,
    pub dalpha: u64,
    pub workspace: u64,
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
    bufs: RSignBuffers,
) -> Vec<Step> {
    let dt = dtype.name();
    let mut steps = Vec::with_capacity(3);
    if len > 0 {
        let params = LowbitElementwise {
            len: len as u64,
            channels: channels as u64,
            reduced: std::ptr::null(),
            ..Default::default()
        };
        let (d, mut args) = match dir {
            Direction::Forward => ("fwd", vec![Arg::Ptr(bufs.x), Arg::Ptr(bufs.alpha)]),
            Direction::Backward => (
                "bwd",
                vec![Arg::Ptr(bufs.x), Arg::Ptr(bufs.alpha), Arg::Ptr(bufs.dy)],
            ),
        };
        args.insert(0, Arg::Elementwise(params));
        args.push(Arg::Ptr(bufs.out));
        steps.push(Step::Launch {
            kernel: format!("rsign_{d}_{dt}"),
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
        let mut reduce_step = |kernel: String, args: Vec<Arg>| {
            steps.push(Step::Launch {
                kernel,
                grid: LOWBIT_REDUCE_BLOCKS,
                block: LOWBIT_REDUCE_THREADS,
                args,
            })
        };
        if len > 0 {
            reduce_step(
                format!("rsign_dalpha_partial_{dt}"),
                vec![
                    Arg::Reduce(reduce),
                    Arg::Ptr(bufs.out),
                    Arg::Ptr(bufs.workspace),
                ],
            );
        }
        reduce_step(
            format!("rsign_dalpha_finalize_{dt}"),
            vec![
                Arg::Reduce(reduce),
                Arg::Ptr(bufs.workspace),
                Arg::Ptr(bufs.dalpha),
            ],
        );
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUFS: Buffers = Buffers {
        x: 0x1000,
        dy: 0x2000,
        out: 0x3000,
        workspace: 0x4000,
    };

    fn q(spec: &str) -> Quantizer {
        spec.parse().unwrap()
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
                    for step in plan(&q(spec), dir, dtype, 1000, 10, 100, BUFS) {
                        if let Step::Launch { kernel, .. } = step {
                            assert!(
                                entries.contains(&kernel),
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
            &q("ste_sign(clip_value=0.3)"),
            Direction::Backward,
            DType::F16,
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
        assert_eq!(kernel, "ste_sign_bwd_f16");
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
        let steps = plan(&q, Direction::Forward, DType::F32, 64 * 100, 64, 64, BUFS);
        let names: Vec<_> = steps
            .iter()
            .map(|s| match s {
                Step::Launch { kernel, grid, .. } => (kernel.as_str(), *grid),
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
        let lay = layout(&q, Direction::Forward, 6400, 64, 64);
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
            assert_eq!(layout(&mas, dir, 0, 1 << 62, 0).bytes, 0);
            // [usize::MAX] (no buffer has been seen yet): the size saturates
            // where it would wrap round to a small workspace.
            assert_eq!(
                layout(&mas, dir, usize::MAX, usize::MAX, 1).bytes,
                usize::MAX
            );
            let rsign = q("rsign");
            assert_eq!(layout(&rsign, dir, 0, 1 << 62, 0).bytes, 0);
        }
        let rows = q("ste_sign(scale=first_axis)");
        assert_eq!(
            layout(&rows, Direction::Forward, usize::MAX, 1, 1).bytes,
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
            plan(&q, Direction::Forward, DType::BF16, 10, 10, 10, BUFS).len(),
            3
        );
        assert_eq!(
            plan(&q, Direction::Backward, DType::BF16, 10, 10, 10, BUFS).len(),
            1
        );
        assert_eq!(layout(&q, Direction::Backward, 10, 10, 10).bytes, 0);
    }

    #[test]
    fn noop_copies_and_empty_tensors_launch_nothing() {
        let steps = plan(
            &q("noop(precision=1)"),
            Direction::Backward,
            DType::F32,
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
            assert!(plan(&q(spec), Direction::Forward, DType::F32, 0, 0, 0, BUFS).is_empty());
        }
    }

    #[test]
    fn scaled_signs_reduce_rows_into_the_workspace_then_read_them() {
        // 4 output channels of 3×5 weights: row_mean_abs writes 4 scales.
        let q = q("approx_sign(scale=first_axis)");
        let lay = layout(&q, Direction::Backward, 60, 5, 15);
        assert_eq!((lay.reduced, lay.bytes), (0, 16));
        let steps = plan(&q, Direction::Backward, DType::F32, 60, 5, 15, BUFS);
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
        assert_eq!(reduce, "row_mean_abs_f32");
        let Arg::Reduce(r) = reduce_args[0] else {
            panic!("{reduce_args:?}")
        };
        assert_eq!((r.len, r.rows), (60, 4));
        assert!(matches!(reduce_args[2], Arg::Ptr(0x4000)));
        assert_eq!(elementwise, "approx_sign_scaled_bwd_f32");
        let Arg::Elementwise(p) = args[0] else {
            panic!("{args:?}")
        };
        assert_eq!((p.inner, p.reduced as u64), (15, 0x4000));
    }

    #[test]
    fn ede_and_unipolar_parameters_reach_the_kernel() {
        let params = |spec: &str| {
            let steps = plan(&q(spec), Direction::Backward, DType::F32, 8, 8, 1, BUFS);
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

    const RSIGN_BUFS: RSignBuffers = RSignBuffers {
        x: 0x1000,
        alpha: 0x5000,
        dy: 0x2000,
        out: 0x3000,
        dalpha: 0x6000,
        workspace: 0x4000,
    };

    fn launches(steps: &[Step]) -> Vec<(&str, u32, u32)> {
        steps
            .iter()
            .map(|s| match s {
                Step::Launch {
                    kernel,
                    grid,
                    block,
                    ..
                } => (kernel.as_str(), *grid, *block),
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
                layout(&q, Direction::Backward, len, channels, 1).bytes,
                want
            );
            assert_eq!(layout(&q, Direction::Forward, len, channels, 1).bytes, 0);
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
