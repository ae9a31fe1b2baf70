//! What a forward or backward call launches, as plain data: kernel names,
//! grid sizes and arguments. Building the plan touches no driver, so tests
//! check it on machines without a GPU; [`super::Cuda`] only executes it.

use std::ffi::c_void;

use super::sys::{
    LOWBIT_REDUCE_BLOCKS, LOWBIT_REDUCE_THREADS, LOWBIT_THREADS, LOWBIT_VECTOR_BYTES,
    LowbitElementwise, LowbitReduce,
};
use crate::element::DType;
use crate::quantizer::{DorefaMode, Kind, Quantizer};

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
    /// A device pointer (`CUdeviceptr`).
    Ptr(u64),
}

impl Arg {
    /// The pointer `cuLaunchKernel` wants: the address of the value.
    pub(crate) fn as_param(&self) -> *mut c_void {
        match self {
            Arg::Elementwise(p) => p as *const _ as *mut c_void,
            Arg::Reduce(p) => p as *const _ as *mut c_void,
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
}

fn reduction(q: &Quantizer, dir: Direction) -> Reduction {
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

/// The workspace a call needs for a tensor of `len` elements and `channels`
/// channels (the last axis).
pub(crate) fn layout(q: &Quantizer, dir: Direction, len: usize, channels: usize) -> Layout {
    let blocks = LOWBIT_REDUCE_BLOCKS as usize;
    let (partials, reduced) = match reduction(q, dir) {
        Reduction::None => {
            return Layout {
                reduced: 0,
                bytes: 0,
            };
        }
        Reduction::TwnThreshold => (blocks * 8, 4),
        Reduction::MaxAbsTanh => (blocks * 4, 4),
        // The header bounds the per-channel partials by grid size + channels.
        Reduction::ChannelMeanAbs => {
            let grid = blocks * LOWBIT_REDUCE_THREADS as usize;
            ((grid + channels).min(len.max(1)) * 8, channels.max(1) * 4)
        }
    };
    let offset = partials.div_ceil(ALIGN) * ALIGN;
    Layout {
        reduced: offset,
        bytes: offset + reduced,
    }
}

/// The kernel family name of a quantizer: `<name>_<fwd|bwd>_<dtype>`.
fn kernel_prefix(q: &Quantizer) -> Option<&'static str> {
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
        Kind::NoOp { .. } => return None,
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
    reduced: u64,
) -> LowbitElementwise {
    let mut p = LowbitElementwise {
        len: len as u64,
        channels: channels as u64,
        reduced: std::ptr::null(),
        ..Default::default()
    };
    let clip = match q.kind() {
        Kind::SteSign { clip_value }
        | Kind::SteHeaviside { clip_value }
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

/// Every step of one call. `len` is the element count and `channels` the
/// last axis; the caller has checked the buffers against them.
pub(crate) fn plan(
    q: &Quantizer,
    dir: Direction,
    dtype: DType,
    len: usize,
    channels: usize,
    bufs: Buffers,
) -> Vec<Step> {
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
    let mut steps = reduction_steps(q, dir, dtype, len, channels, bufs.x, bufs.workspace);
    let reduced = reduced_ptr(q, dir, len, channels, bufs.workspace);
    let params = elementwise_params(q, dtype, len, channels, reduced);
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

/// Where the reduction's result lies in `workspace`, for
/// `LowbitElementwise::reduced`; 0 when the call reduces nothing.
pub(super) fn reduced_ptr(
    q: &Quantizer,
    dir: Direction,
    len: usize,
    channels: usize,
    workspace: u64,
) -> u64 {
    let lay = layout(q, dir, len, channels);
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
    len: usize,
    channels: usize,
    x: u64,
    workspace: u64,
) -> Vec<Step> {
    let partials = workspace;
    let reduced = reduced_ptr(q, dir, len, channels, workspace);
    let rows = len / channels.max(1);
    let reduce = LowbitReduce {
        len: len as u64,
        channels: channels as u64,
        rows: rows as u64,
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
    ];

    #[test]
    fn every_planned_kernel_exists_in_the_ptx() {
        let entries = entries();
        for spec in SPECS {
            for dir in [Direction::Forward, Direction::Backward] {
                for dtype in [DType::F32, DType::F16, DType::BF16] {
                    for step in plan(&q(spec), dir, dtype, 1000, 10, BUFS) {
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
        let steps = plan(&q, Direction::Forward, DType::F32, 64 * 100, 64, BUFS);
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
        let lay = layout(&q, Direction::Forward, 6400, 64);
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
    fn twn_reduces_only_in_the_forward_pass() {
        let q = q("ste_tern(ternary_weight_networks=true)");
        assert_eq!(
            plan(&q, Direction::Forward, DType::BF16, 10, 10, BUFS).len(),
            3
        );
        assert_eq!(
            plan(&q, Direction::Backward, DType::BF16, 10, 10, BUFS).len(),
            1
        );
        assert_eq!(layout(&q, Direction::Backward, 10, 10).bytes, 0);
    }

    #[test]
    fn noop_copies_and_empty_tensors_launch_nothing() {
        let steps = plan(
            &q("noop(precision=1)"),
            Direction::Backward,
            DType::F32,
            10,
            10,
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
            assert!(plan(&q(spec), Direction::Forward, DType::F32, 0, 0, BUFS).is_empty());
        }
    }
}
