use std::fmt;

/// Everything that can go wrong in lowbit. Each variant names the problem;
/// no function of the crate panics on bad input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A SPEC that is not `name` or `name(key=value, ...)`.
    #[error("cannot parse quantizer spec `{spec}`: {reason}")]
    Syntax {
        /// The text given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A quantizer name lowbit does not know.
    #[error("unknown quantizer `{0}` (known: {known})", known = crate::Quantizer::NAMES.join(", "))]
    UnknownQuantizer(String),

    /// A parameter the quantizer does not take.
    #[error("{quantizer} has no parameter `{key}` (it takes: {takes})", takes = display_list(.takes))]
    UnknownParameter {
        /// The quantizer's name.
        quantizer: &'static str,
        /// The parameter given.
        key: String,
        /// The parameters it does take.
        takes: &'static [&'static str],
    },

    /// A parameter given twice in one SPEC.
    #[error("{quantizer}: parameter `{key}` is given twice")]
    DuplicateParameter {
        /// The quantizer's name.
        quantizer: &'static str,
        /// The parameter given twice.
        key: String,
    },

    /// A required parameter that is missing.
    #[error("{quantizer}: parameter `{key}` is required")]
    MissingParameter {
        /// The quantizer's name.
        quantizer: &'static str,
        /// The parameter it needs.
        key: &'static str,
    },

    /// A parameter value out of its domain (NaN, negative clip, beta ≤ 0,
    /// k_bit out of range, unknown mode, ...).
    #[error("{quantizer}: bad value `{value}` for `{key}`: {expected}")]
    InvalidParameter {
        /// The quantizer's name.
        quantizer: &'static str,
        /// The parameter.
        key: &'static str,
        /// The value given.
        value: String,
        /// What the parameter accepts.
        expected: &'static str,
    },

    /// The shape's element count differs from the tensor's length.
    #[error("shape {shape:?} holds {expected} elements, but `{buffer}` has {len}")]
    ShapeMismatch {
        /// The shape given.
        shape: Vec<usize>,
        /// Its element count.
        expected: usize,
        /// Which buffer (`x`, `y`, `dy`, `dx`, ...).
        buffer: &'static str,
        /// That buffer's length.
        len: usize,
    },

    /// A packed buffer whose length is not the number of 32-bit words the
    /// tensor of `shape` packs into (see [`crate::bits`]).
    #[error("shape {shape:?} packs into {expected} 32-bit words, but `{buffer}` has {len}")]
    PackedMismatch {
        /// The shape given.
        shape: Vec<usize>,
        /// The words it packs into.
        expected: usize,
        /// Which buffer.
        buffer: &'static str,
        /// That buffer's length in words.
        len: usize,
    },

    /// A per-channel scale whose length is not the channel count (the last
    /// axis of `shape`).
    #[error("shape {shape:?} has {channels} channels, but the scale has {len} values")]
    ScaleMismatch {
        /// The shape given.
        shape: Vec<usize>,
        /// Its channel count (last axis).
        channels: usize,
        /// The scale's length.
        len: usize,
    },

    /// A buffer whose length is not the one the shape asks for, where that
    /// is not the shape's element count: a mask (`mask_words(len)` words) or
    /// a saved scale (one per channel).
    #[error("`{buffer}` holds {len} elements, this shape needs {expected}")]
    BufferLength {
        /// Which buffer (`mask` or `scale`).
        buffer: &'static str,
        /// The length the shape asks for.
        expected: usize,
        /// That buffer's length.
        len: usize,
    },

    /// A quantizer whose gradient needs more than a 1-bit mask of `x`, asked
    /// for a masked forward or backward.
    #[error("{quantizer} cannot save a 1-bit mask for its backward pass: {reason}")]
    NotMaskable {
        /// The quantizer, as its SPEC.
        quantizer: String,
        /// Why a mask is not enough.
        reason: &'static str,
    },

    /// A shape whose element count overflows `usize`.
    #[error("shape {0:?} has too many elements")]
    ShapeOverflow(Vec<usize>),

    /// `LOWBIT_DEVICE` or a device name that is not `auto`, `cpu` or `cuda`.
    #[error("unknown device `{0}` (expected auto, cpu or cuda)")]
    UnknownDevice(String),

    /// The CUDA backend was asked for but cannot run here; says why.
    #[error("CUDA is not available: {0}")]
    CudaUnavailable(String),

    /// A CUDA driver call failed.
    #[error("CUDA driver error in {call}: {message}")]
    Cuda {
        /// The driver call.
        call: &'static str,
        /// The driver's error.
        message: String,
    },

    /// A quantizer that needs per-channel thresholds (`rsign`) called
    /// without them.
    #[error(
        "{quantizer} needs its per-channel thresholds α: call forward_with_thresholds / backward_with_thresholds"
    )]
    NeedsThresholds {
        /// The quantizer's name.
        quantizer: &'static str,
    },

    /// Thresholds given to a quantizer that takes none.
    #[error("{quantizer} takes no thresholds: call forward / backward")]
    TakesNoThresholds {
        /// The quantizer's name.
        quantizer: &'static str,
    },

    /// A threshold buffer (`alpha` or `dalpha`) that does not hold one value
    /// per channel (the shape's last axis).
    #[error("`{buffer}` must hold one value per channel ({channels}), but has {len}")]
    ThresholdLength {
        /// Which buffer (`alpha` or `dalpha`).
        buffer: &'static str,
        /// The channel count.
        channels: usize,
        /// That buffer's length.
        len: usize,
    },

    /// The CPU path's worker threads could not be started (in a process
    /// forked from one that had used lowbit, which needs a pool of its own).
    #[error("cannot start the CPU worker threads: {0}")]
    ThreadPool(String),

    /// A workspace smaller than the reduction needs (raw-pointer calls do
    /// not grow it: [`crate::cuda::Workspace::reserve_raw`] sizes it).
    #[error("workspace holds {have} bytes, this call needs {need}")]
    WorkspaceTooSmall {
        /// Bytes the call needs.
        need: usize,
        /// Bytes the workspace holds.
        have: usize,
    },

    /// A stream of another CUDA context than the one the kernels were
    /// loaded into: launching there would run one device's kernels on
    /// another's memory.
    #[error("the stream belongs to another CUDA context than lowbit's `Cuda` ({0})")]
    StreamContext(String),

    /// A workspace used with another stream than the one it grew on: its
    /// memory is ordered on that stream only (allocated, and freed, there).
    #[error("this workspace belongs to another stream; keep one workspace per stream")]
    WorkspaceStream,

    /// An output that overlaps an input without being the same memory.
    #[error("`{output}` overlaps `{input}` without being the same buffer")]
    Overlap {
        /// The input.
        input: &'static str,
        /// The output.
        output: &'static str,
    },
}

fn display_list(items: &[&str]) -> impl fmt::Display {
    if items.is_empty() {
        "nothing".to_string()
    } else {
        items.join(", ")
    }
}

/// `Result` with lowbit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
