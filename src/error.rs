use std::fmt;

/// Everything that can go wrong in lowbit. Each variant names the problem;
/// no function of the crate panics on bad input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A SPEC that is not `name` or `name(key=value, ...)`.
    #[error("cannot parse quantizer spec `{spec}`: {reason}")]
    Syntax { spec: String, reason: String },

    /// A quantizer name lowbit does not know.
    #[error("unknown quantizer `{0}` (known: {known})", known = crate::Quantizer::NAMES.join(", "))]
    UnknownQuantizer(String),

    /// A parameter the quantizer does not take.
    #[error("{quantizer} has no parameter `{key}` (it takes: {takes})", takes = display_list(.takes))]
    UnknownParameter {
        quantizer: &'static str,
        key: String,
        takes: &'static [&'static str],
    },

    /// A parameter given twice in one SPEC.
    #[error("{quantizer}: parameter `{key}` is given twice")]
    DuplicateParameter {
        quantizer: &'static str,
        key: String,
    },

    /// A required parameter that is missing.
    #[error("{quantizer}: parameter `{key}` is required")]
    MissingParameter {
        quantizer: &'static str,
        key: &'static str,
    },

    /// A parameter value out of its domain (NaN, negative clip, beta ≤ 0,
    /// k_bit out of range, unknown mode, ...).
    #[error("{quantizer}: bad value `{value}` for `{key}`: {expected}")]
    InvalidParameter {
        quantizer: &'static str,
        key: &'static str,
        value: String,
        expected: &'static str,
    },

    /// The shape's element count differs from the tensor's length.
    #[error("shape {shape:?} holds {expected} elements, but `{buffer}` has {len}")]
    ShapeMismatch {
        shape: Vec<usize>,
        expected: usize,
        buffer: &'static str,
        len: usize,
    },

    /// A buffer whose length is not the one the shape asks for, where that
    /// is not the shape's element count: a mask (`mask_words(len)` words) or
    /// a saved scale (one per channel).
    #[error("`{buffer}` holds {len} elements, this shape needs {expected}")]
    BufferLength {
        buffer: &'static str,
        expected: usize,
        len: usize,
    },

    /// A quantizer whose gradient needs more than a 1-bit mask of `x`, asked
    /// for a masked forward or backward.
    #[error("{quantizer} cannot save a 1-bit mask for its backward pass: {reason}")]
    NotMaskable {
        quantizer: String,
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
    Cuda { call: &'static str, message: String },

    /// A workspace smaller than the reduction needs (raw-pointer calls do
    /// not grow it, since that would allocate on the caller's stream).
    #[error("workspace holds {have} bytes, this call needs {need}")]
    WorkspaceTooSmall { need: usize, have: usize },
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
