//! What the C ABI (the `lowbit-capi` crate, `capi/`) needs of lowbit's
//! insides: the checks the Rust calls make, so that a C call is refused for
//! the same reasons, and the process-wide CUDA state (`cuda/registry.rs`)
//! for callers that bring only a stream.
//! Hidden from the documentation: not part of the Rust API, and changed
//! with lowbit's insides.

use crate::error::Result;
use crate::quantizer::Quantizer;

/// The element count of `shape` (refused where it overflows) and its
/// channel count (the last axis; 1 for a scalar).
pub fn check_shape(shape: &[usize]) -> Result<(usize, usize)> {
    crate::api::check_shape(shape, &[])
}

/// Refuses, on the plain calls, a quantizer that needs thresholds.
pub fn check_plain(q: &Quantizer) -> Result<()> {
    crate::api::check_plain(q)
}

/// Refuses, on the calls with thresholds, a quantizer that takes none;
/// returns the element and channel counts of `shape`.
pub fn check_thresholds(q: &Quantizer, shape: &[usize]) -> Result<(usize, usize)> {
    crate::api::check_thresholds(q, shape, &[], &[])
}

/// Refuses, on the masked calls, a quantizer whose backward needs more
/// than the mask (and the saved scale).
pub fn check_maskable(q: &Quantizer) -> Result<()> {
    crate::mask::masked_op(q, crate::DType::F32).map(|_| ())
}

/// Runs `f` with the kernels of `stream`'s context, `stream`'s workspace
/// grown to `need` bytes, and the stream; see `cuda/registry.rs` for the
/// policy (which context, which workspace, the caller's current context
/// restored).
///
/// # Safety
/// `stream` is a live stream handle (or null, the legacy stream), and
/// `pointer` one of the call's device pointers.
#[cfg(lowbit_cuda)]
pub unsafe fn on_stream<R>(
    stream: cudarc::driver::sys::CUstream,
    pointer: cudarc::driver::sys::CUdeviceptr,
    need: usize,
    f: impl FnOnce(
        &crate::cuda::Cuda,
        &crate::cuda::Workspace,
        cudarc::driver::sys::CUstream,
    ) -> Result<R>,
) -> Result<R> {
    // SAFETY: forwarded from the caller.
    unsafe { crate::cuda::registry::on_stream(stream, pointer, need, f) }
}
