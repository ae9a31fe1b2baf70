//! What the C ABI (the `lowbit-capi` crate, `capi/`) needs of lowbit's
//! insides: the call description the Rust calls check against, so that a C
//! call is refused for the same reasons, and the process-wide CUDA state
//! (`cuda/registry.rs`) for callers that bring only a stream (the C ABI, and
//! candle's tensors, whose tests reach it here).
//! Hidden from the documentation: not part of the Rust API, and changed
//! with lowbit's insides.

use crate::call::Call;
pub use crate::call::Pass;
use crate::element::DType;
use crate::error::Result;
use crate::quantizer::Quantizer;

/// The element count of `shape` (refused where it overflows) and its
/// channel count (the last axis; 1 for a scalar).
pub fn check_shape(shape: &[usize]) -> Result<(usize, usize)> {
    crate::call::check_shape(shape, &[])
}

/// Refuses what `pass` cannot run (the quantizer, the shape) for the
/// reason the Rust call gives.
pub fn check(q: &Quantizer, dtype: DType, pass: Pass, shape: &[usize]) -> Result<()> {
    Call::new(q, dtype, pass, shape).map(|_| ())
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

/// lowbit's kernels for a cudarc stream's context and that stream's
/// workspace, made on first use and kept for the life of the process (what
/// `lowbit::candle` runs candle's CUDA tensors with).
#[cfg(lowbit_cuda)]
#[allow(clippy::type_complexity)]
pub fn for_stream(
    stream: &std::sync::Arc<cudarc::driver::CudaStream>,
) -> Result<(
    std::sync::Arc<crate::cuda::Cuda>,
    std::sync::Arc<std::sync::Mutex<crate::cuda::Workspace>>,
)> {
    crate::cuda::registry::for_stream(stream)
}
