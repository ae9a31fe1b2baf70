//! The process-wide CUDA state of callers that have nowhere to keep it (the
//! C ABI): lowbit's kernels loaded once per context, and a workspace per
//! stream.
//!
//! A call runs in the context its stream belongs to (`cuStreamGetCtx`). The
//! legacy and per-thread default streams belong to the calling thread's
//! current context; where the thread has none, to the primary context of
//! the device that holds the call's first pointer. The thread's current
//! context is restored before the call returns, so a framework's notion of
//! its current device does not move.
//!
//! Workspaces are keyed by the context's and the stream's unique ids
//! (`cuCtxGetId`, `cuStreamGetId`), not by handle values, which a
//! destroyed stream hands on to the next one; the per-thread default
//! stream is one stream per thread, so its key holds the thread too. The
//! registry's lock covers only the lookup: each workspace has a lock of its
//! own, held by the calls on its stream, so a call never waits for another
//! stream's work, and growing a workspace is ordered on its stream
//! ([`Workspace`]), with no host synchronization.
//!
//! A workspace lives as long as the process: lowbit cannot tell when a
//! caller destroys a stream (one workspace per stream ever used).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;

use cudarc::driver::{CudaContext, CudaStream, result, sys as cu};

use super::{Cuda, Workspace, driver, probe};
use crate::error::{Error, Result};

const LEGACY: usize = 1;
const PER_THREAD: usize = 2;

/// A workspace's stream: the context's id, the stream's id, and for the
/// per-thread default stream the thread.
type StreamKey = (u64, u64, Option<ThreadId>);

#[derive(Default)]
struct Registry {
    cudas: Mutex<HashMap<u64, Arc<Cuda>>>,
    workspaces: Mutex<HashMap<StreamKey, Arc<Mutex<Workspace>>>>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// Runs `f` with the kernels of `stream`'s context, `stream`'s workspace,
/// grown to `need` bytes, and the stream (`CU_STREAM_LEGACY` as null);
/// `pointer` is a device pointer of the call, for a default stream on a
/// thread with no current context.
///
/// # Safety
/// `stream` is a live stream handle (or null, the legacy stream), and
/// `pointer` one of the call's device pointers.
pub(crate) unsafe fn on_stream<R>(
    stream: cu::CUstream,
    pointer: cu::CUdeviceptr,
    need: usize,
    f: impl FnOnce(&Cuda, &Workspace, cu::CUstream) -> Result<R>,
) -> Result<R> {
    probe::probe().map_err(Error::CudaUnavailable)?;
    // CU_STREAM_LEGACY and null name the same stream.
    let stream = if stream as usize == LEGACY {
        std::ptr::null_mut()
    } else {
        stream
    };
    let saved = result::ctx::get_current().map_err(driver("cuCtxGetCurrent"))?;
    // SAFETY: forwarded from the caller.
    let outcome = unsafe { in_context(stream, pointer, saved, need, f) };
    // The caller's current context, as it was, whatever happened.
    let restored = match saved {
        // SAFETY: the context the thread had current when lowbit was called.
        Some(ctx) => unsafe { result::ctx::set_current(ctx) },
        None => unsafe { cu::cuCtxSetCurrent(std::ptr::null_mut()).result() },
    };
    let r = outcome?;
    restored.map_err(driver("cuCtxSetCurrent"))?;
    Ok(r)
}

unsafe fn in_context<R>(
    stream: cu::CUstream,
    pointer: cu::CUdeviceptr,
    current: Option<cu::CUcontext>,
    need: usize,
    f: impl FnOnce(&Cuda, &Workspace, cu::CUstream) -> Result<R>,
) -> Result<R> {
    let handle = stream as usize;
    let ctx = if handle == 0 || handle == PER_THREAD {
        match current {
            Some(ctx) => ctx,
            // SAFETY: a pointer of the caller's.
            None => unsafe { primary_of(pointer)? },
        }
    } else {
        let mut ctx = std::ptr::null_mut();
        // SAFETY: a live stream, an out-pointer.
        unsafe { cu::cuStreamGetCtx(stream, &mut ctx) }
            .result()
            .map_err(driver("cuStreamGetCtx"))?;
        ctx
    };
    // SAFETY: a live context.
    unsafe { result::ctx::set_current(ctx) }.map_err(driver("cuCtxSetCurrent"))?;
    let mut ctx_id = 0u64;
    // SAFETY: a live context, an out-pointer.
    unsafe { cu::cuCtxGetId(ctx, &mut ctx_id) }
        .result()
        .map_err(driver("cuCtxGetId"))?;
    // SAFETY: the current context is `ctx`.
    let cuda = unsafe { cuda_of(ctx, ctx_id)? };
    let mut stream_id = 0u64;
    // SAFETY: a live stream of the current context, an out-pointer.
    unsafe { cu::cuStreamGetId(stream, &mut stream_id) }
        .result()
        .map_err(driver("cuStreamGetId"))?;
    let thread = (handle == PER_THREAD).then(|| std::thread::current().id());
    let slot = registry()
        .workspaces
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry((ctx_id, stream_id, thread))
        .or_default()
        .clone();
    let mut ws = slot.lock().unwrap_or_else(PoisonError::into_inner);
    // SAFETY: a stream of `cuda`'s context; the workspace outlives it only
    // in the registry, which never frees.
    unsafe { ws.reserve_raw(&cuda, stream, need)? };
    f(&cuda, &ws, stream)
}

/// The primary context of the device that holds `pointer`.
unsafe fn primary_of(pointer: cu::CUdeviceptr) -> Result<cu::CUcontext> {
    let mut ordinal: i32 = -1;
    // SAFETY: an out-pointer of the attribute's type (int).
    unsafe {
        cu::cuPointerGetAttribute(
            (&mut ordinal as *mut i32).cast(),
            cu::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
            pointer,
        )
    }
    .result()
    .map_err(driver("cuPointerGetAttribute"))?;
    // Retained for the life of the process, like the modules loaded into it.
    // SAFETY: a device the driver named.
    unsafe { result::primary_ctx::retain(ordinal) }.map_err(driver("cuDevicePrimaryCtxRetain"))
}

/// lowbit's kernels in the current context `ctx`, loaded on first use.
unsafe fn cuda_of(ctx: cu::CUcontext, id: u64) -> Result<Arc<Cuda>> {
    let mut cudas = registry()
        .cudas
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = cudas.get(&id) {
        return Ok(c.clone());
    }
    let mut device = 0;
    // SAFETY: an out-pointer; the current context is `ctx`.
    unsafe { cu::cuCtxGetDevice(&mut device) }
        .result()
        .map_err(driver("cuCtxGetDevice"))?;
    // SAFETY: a device the driver named.
    let primary = unsafe { result::primary_ctx::retain(device) }
        .map_err(driver("cuDevicePrimaryCtxRetain"))?;
    let context = if primary == ctx {
        // cudarc's own retain, released if it is ever dropped.
        let c = CudaContext::new(device as usize).map_err(driver("cuDevicePrimaryCtxRetain"))?;
        // SAFETY: the retain above, which cudarc's replaces.
        unsafe { result::primary_ctx::release(device) }
            .map_err(driver("cuDevicePrimaryCtxRelease"))?;
        c
    } else {
        // SAFETY: the primary context retained above is not needed.
        unsafe { result::primary_ctx::release(device) }
            .map_err(driver("cuDevicePrimaryCtxRelease"))?;
        // The caller's own context: the registry never drops it (cudarc
        // would destroy it), so it stays the caller's to destroy.
        // SAFETY: a live context of `device`.
        unsafe { CudaContext::from_raw_context(device as usize, device, ctx) }
            .map_err(driver("cuCtxSetCurrent"))?
    };
    let cuda = Arc::new(Cuda::with_context(context)?);
    cudas.insert(id, cuda.clone());
    Ok(cuda)
}

/// lowbit's kernels for `stream`'s context and `stream`'s workspace, for
/// callers that hold a cudarc stream but no [`Cuda`] of their own (candle's
/// tensors). Loaded and made on first use, as for the C ABI.
pub(crate) fn for_stream(stream: &Arc<CudaStream>) -> Result<(Arc<Cuda>, Arc<Mutex<Workspace>>)> {
    probe::probe().map_err(Error::CudaUnavailable)?;
    let ctx = stream.context();
    ctx.bind_to_thread().map_err(driver("cuCtxSetCurrent"))?;
    let (mut ctx_id, mut stream_id) = (0u64, 0u64);
    // SAFETY: a live context and stream (cudarc holds them), out-pointers.
    unsafe {
        cu::cuCtxGetId(ctx.cu_ctx(), &mut ctx_id)
            .result()
            .map_err(driver("cuCtxGetId"))?;
        cu::cuStreamGetId(stream.cu_stream(), &mut stream_id)
            .result()
            .map_err(driver("cuStreamGetId"))?;
    }
    let cuda = {
        let mut cudas = registry()
            .cudas
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match cudas.get(&ctx_id) {
            Some(c) => c.clone(),
            None => {
                let c = Arc::new(Cuda::with_context(ctx.clone())?);
                cudas.insert(ctx_id, c.clone());
                c
            }
        }
    };
    // The default streams' ids are per context, and a cudarc stream is
    // never the per-thread one, so no thread in the key.
    let ws = registry()
        .workspaces
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry((ctx_id, stream_id, None))
        .or_default()
        .clone();
    Ok((cuda, ws))
}
