//! The C ABI (`include/lowbit.h`), for PyTorch extensions and other C/C++
//! training stacks.
//!
//! Every function returns a [`lowbit_status`]; on failure the message is in
//! [`lowbit_last_error`] (per thread). Nothing panics across the boundary:
//! each body runs under `catch_unwind`, and a panic, which would be a lowbit
//! bug, becomes `LOWBIT_ERR_INTERNAL`.

#![allow(non_camel_case_types, clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::element::Element;
use crate::error::Error;
use crate::quantizer::Quantizer;
use crate::{bf16, f16};

/// Status codes; `LOWBIT_OK` is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lowbit_status {
    /// Success.
    LOWBIT_OK = 0,
    /// A null pointer where one is required.
    LOWBIT_ERR_NULL = 1,
    /// A SPEC that does not parse or a bad parameter.
    LOWBIT_ERR_SPEC = 2,
    /// Sizes that do not fit the shape, or an unknown dtype.
    LOWBIT_ERR_SHAPE = 3,
    /// The CUDA backend cannot run here (see the message for why).
    LOWBIT_ERR_CUDA_UNAVAILABLE = 4,
    /// A CUDA driver call failed.
    LOWBIT_ERR_CUDA = 5,
    /// A bug in lowbit (a caught panic).
    LOWBIT_ERR_INTERNAL = 6,
    /// The quantizer cannot run through this call: `rsign` needs its
    /// per-channel thresholds, which the C ABI does not take.
    LOWBIT_ERR_UNSUPPORTED = 7,
}
use lowbit_status::*;

/// Element type `float`, as `lowbit_dtype` in the header.
pub const LOWBIT_F32: u32 = 0;
/// Element type IEEE binary16 (`__half`, `_Float16`).
pub const LOWBIT_F16: u32 = 1;
/// Element type bfloat16 (`__nv_bfloat16`), passed as its 16 bits.
pub const LOWBIT_BF16: u32 = 2;

/// An opaque quantizer handle.
pub struct lowbit_quantizer(Quantizer);

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn status_of(e: &Error) -> lowbit_status {
    match e {
        Error::Syntax { .. }
        | Error::UnknownQuantizer(_)
        | Error::UnknownParameter { .. }
        | Error::DuplicateParameter { .. }
        | Error::MissingParameter { .. }
        | Error::InvalidParameter { .. } => LOWBIT_ERR_SPEC,
        Error::NeedsThresholds { .. } | Error::TakesNoThresholds { .. } => LOWBIT_ERR_UNSUPPORTED,
        Error::CudaUnavailable(_) => LOWBIT_ERR_CUDA_UNAVAILABLE,
        Error::Cuda { .. } => LOWBIT_ERR_CUDA,
        _ => LOWBIT_ERR_SHAPE,
    }
}

/// Runs `f`, turning errors and panics into a status and a message.
fn guard(f: impl FnOnce() -> Result<(), (lowbit_status, String)>) -> lowbit_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => LOWBIT_OK,
        Ok(Err((status, message))) => {
            set_error(&message);
            status
        }
        Err(_) => {
            set_error("internal error in lowbit (a panic was caught)");
            LOWBIT_ERR_INTERNAL
        }
    }
}

fn fail(e: Error) -> (lowbit_status, String) {
    (status_of(&e), e.to_string())
}

fn null(what: &str) -> (lowbit_status, String) {
    (LOWBIT_ERR_NULL, format!("`{what}` is null"))
}

/// The message of the last failed call on this thread ("" if none). Valid
/// until the next lowbit call on this thread.
#[unsafe(no_mangle)]
pub extern "C" fn lowbit_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Parses `spec` (larq's spelling, e.g. `"ste_tern(threshold_value=0.2)"`)
/// into a new handle at `*out`; free it with `lowbit_quantizer_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lowbit_quantizer_new(
    spec: *const c_char,
    out: *mut *mut lowbit_quantizer,
) -> lowbit_status {
    guard(|| {
        if spec.is_null() {
            return Err(null("spec"));
        }
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: the caller passes a NUL-terminated string.
        let spec = unsafe { CStr::from_ptr(spec) }
            .to_str()
            .map_err(|_| (LOWBIT_ERR_SPEC, "spec is not UTF-8".to_string()))?;
        let q: Quantizer = spec.parse().map_err(fail)?;
        // SAFETY: `out` is non-null and points to writable storage.
        unsafe { *out = Box::into_raw(Box::new(lowbit_quantizer(q))) };
        Ok(())
    })
}

/// Frees a handle; null is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lowbit_quantizer_free(q: *mut lowbit_quantizer) {
    if !q.is_null() {
        // SAFETY: `q` came from `lowbit_quantizer_new` and is freed once.
        drop(unsafe { Box::from_raw(q) });
    }
}

/// Writes the handle's SPEC, with every parameter, into `buf` (NUL
/// included, at most `len` bytes); fails if it does not fit.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lowbit_quantizer_spec(
    q: *const lowbit_quantizer,
    buf: *mut c_char,
    len: usize,
) -> lowbit_status {
    guard(|| {
        // SAFETY: a live handle, or null.
        let q = unsafe { handle(q) }?;
        if buf.is_null() {
            return Err(null("buf"));
        }
        let text = q.to_string();
        if text.len() + 1 > len {
            return Err((
                LOWBIT_ERR_SHAPE,
                format!(
                    "the SPEC needs {} bytes, the buffer has {len}",
                    text.len() + 1
                ),
            ));
        }
        // SAFETY: `buf` holds at least text.len() + 1 bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast(), text.len());
            *buf.add(text.len()) = 0;
        }
        Ok(())
    })
}

/// The shape as a slice, and its element count.
unsafe fn shape<'a>(
    shape: *const usize,
    ndim: usize,
) -> Result<(&'a [usize], usize), (lowbit_status, String)> {
    if ndim == 0 {
        return Ok((&[], 1));
    }
    if shape.is_null() {
        return Err(null("shape"));
    }
    // SAFETY: the caller passes `ndim` sizes.
    let s = unsafe { std::slice::from_raw_parts(shape, ndim) };
    let (n, _) = crate::api::check_shape(s, &[]).map_err(fail)?;
    Ok((s, n))
}

/// The quantizer behind a handle.
///
/// # Safety
/// `q` is null or a live handle from `lowbit_quantizer_new`.
unsafe fn handle<'a>(q: *const lowbit_quantizer) -> Result<&'a Quantizer, (lowbit_status, String)> {
    // SAFETY: the caller's contract.
    unsafe { q.as_ref() }.map(|h| &h.0).ok_or_else(|| null("q"))
}

unsafe fn host_call<T: Element>(
    q: &Quantizer,
    x: *const c_void,
    dy: Option<*const c_void>,
    out: *mut c_void,
    shape: &[usize],
    n: usize,
) -> Result<(), (lowbit_status, String)> {
    let nonnull = |p: *const c_void, what| {
        if p.is_null() && n > 0 {
            Err(null(what))
        } else {
            Ok(())
        }
    };
    nonnull(x, "x")?;
    nonnull(out, "out")?;
    // An empty tensor may come with dangling or null pointers.
    let slice = |p: *const c_void| {
        if n == 0 {
            &[][..]
        } else {
            // SAFETY: the caller passes `n` elements of T at `p`.
            unsafe { std::slice::from_raw_parts(p.cast::<T>(), n) }
        }
    };
    let out: &mut [T] = if n == 0 {
        &mut []
    } else {
        // SAFETY: as above, writable and not overlapping the inputs.
        unsafe { std::slice::from_raw_parts_mut(out.cast::<T>(), n) }
    };
    match dy {
        None => q.forward(slice(x), shape, out),
        Some(dy) => {
            nonnull(dy, "dy")?;
            q.backward(slice(x), slice(dy), shape, out)
        }
    }
    .map_err(fail)
}

unsafe fn host(
    q: *const lowbit_quantizer,
    dtype: u32,
    x: *const c_void,
    dy: Option<*const c_void>,
    out: *mut c_void,
    shape_ptr: *const usize,
    ndim: usize,
) -> lowbit_status {
    guard(|| {
        // SAFETY: a live handle, or null.
        let q = unsafe { handle(q) }?;
        // SAFETY: forwarded from the caller's contract.
        let (s, n) = unsafe { shape(shape_ptr, ndim) }?;
        // SAFETY: forwarded from the caller's contract.
        unsafe {
            match dtype {
                LOWBIT_F32 => host_call::<f32>(q, x, dy, out, s, n),
                LOWBIT_F16 => host_call::<f16>(q, x, dy, out, s, n),
                LOWBIT_BF16 => host_call::<bf16>(q, x, dy, out, s, n),
                _ => Err((LOWBIT_ERR_SHAPE, format!("unknown dtype {dtype}"))),
            }
        }
    })
}

/// `y = q(x)` on host memory: `x` and `y` hold the shape's element count of
/// `dtype`; the shape's last axis is the channel axis.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lowbit_forward(
    q: *const lowbit_quantizer,
    dtype: u32,
    x: *const c_void,
    y: *mut c_void,
    shape: *const usize,
    ndim: usize,
) -> lowbit_status {
    // SAFETY: the caller's contract, checked for nulls inside.
    unsafe { host(q, dtype, x, None, y, shape, ndim) }
}

/// `dx = dq/dx · dy` on host memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lowbit_backward(
    q: *const lowbit_quantizer,
    dtype: u32,
    x: *const c_void,
    dy: *const c_void,
    dx: *mut c_void,
    shape: *const usize,
    ndim: usize,
) -> lowbit_status {
    // SAFETY: the caller's contract, checked for nulls inside.
    unsafe { host(q, dtype, x, Some(dy), dx, shape, ndim) }
}

/// The device entry points: device pointers and a `CUstream` as `void*`.
mod device {
    use super::*;

    #[cfg(lowbit_cuda)]
    pub(super) unsafe fn call(
        q: &Quantizer,
        dtype: u32,
        x: u64,
        dy: Option<u64>,
        out: u64,
        s: &[usize],
        stream: *mut c_void,
    ) -> Result<(), (lowbit_status, String)> {
        use crate::cuda::{Cuda, Workspace};
        use crate::element::DType;
        use std::collections::HashMap;
        use std::sync::{Mutex, OnceLock};

        // One backend per process and one workspace per stream: a C caller
        // has nowhere to keep them. Both are created on first use.
        static CUDA: OnceLock<Result<Cuda, Error>> = OnceLock::new();
        static WORKSPACES: OnceLock<Mutex<HashMap<usize, Workspace>>> = OnceLock::new();
        let cuda = CUDA
            .get_or_init(|| Cuda::new(0))
            .as_ref()
            .map_err(|e| fail(e.clone()))?;
        let dtype = match dtype {
            LOWBIT_F32 => DType::F32,
            LOWBIT_F16 => DType::F16,
            LOWBIT_BF16 => DType::BF16,
            _ => return Err((LOWBIT_ERR_SHAPE, format!("unknown dtype {dtype}"))),
        };
        let need = Cuda::workspace_bytes(q, s, dy.is_some()).map_err(fail)?;
        let mut map = WORKSPACES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let ws = match map.get(&(stream as usize)) {
            Some(ws) if ws.capacity() >= need => ws,
            _ => {
                let ws = cuda.workspace(need).map_err(fail)?;
                map.insert(stream as usize, ws);
                &map[&(stream as usize)]
            }
        };
        let stream = stream.cast();
        // SAFETY: the caller vouches for the device pointers and the stream.
        unsafe {
            match dy {
                None => cuda.forward_raw(q, dtype, stream, x, s, out, ws),
                Some(dy) => cuda.backward_raw(q, dtype, stream, x, dy, s, out, ws),
            }
        }
        .map_err(fail)
    }

    #[cfg(not(lowbit_cuda))]
    pub(super) unsafe fn call(
        _: &Quantizer,
        _: u32,
        _: u64,
        _: Option<u64>,
        _: u64,
        _: &[usize],
        _: *mut c_void,
    ) -> Result<(), (lowbit_status, String)> {
        Err(fail(Error::CudaUnavailable(
            "lowbit was built without CUDA kernels (no nvcc at build time)".into(),
        )))
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn on_device(
    q: *const lowbit_quantizer,
    dtype: u32,
    x: *const c_void,
    dy: Option<*const c_void>,
    out: *mut c_void,
    shape_ptr: *const usize,
    ndim: usize,
    stream: *mut c_void,
) -> lowbit_status {
    guard(|| {
        // SAFETY: a live handle, or null.
        let q = unsafe { handle(q) }?;
        // SAFETY: forwarded from the caller's contract.
        let (s, n) = unsafe { shape(shape_ptr, ndim) }?;
        if n > 0 && (x.is_null() || out.is_null() || dy.is_some_and(|p| p.is_null())) {
            return Err(null("a device pointer"));
        }
        // Before the device is opened: the answer does not depend on it.
        crate::api::check_plain(q).map_err(fail)?;
        let dy = dy.map(|p| p as u64);
        // SAFETY: forwarded from the caller's contract.
        unsafe { device::call(q, dtype, x as u64, dy, out as u64, s, stream) }
    })
}

/// `y = q(x)` on device memory, enqueued on `stream` (a `CUstream`; null is
/// the legacy default stream) without waiting for it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lowbit_forward_device(
    q: *const lowbit_quantizer,
    dtype: u32,
    x: *const c_void,
    y: *mut c_void,
    shape: *const usize,
    ndim: usize,
    stream: *mut c_void,
) -> lowbit_status {
    // SAFETY: the caller's contract, checked for nulls inside.
    unsafe { on_device(q, dtype, x, None, y, shape, ndim, stream) }
}

/// `dx = dq/dx · dy` on device memory, enqueued on `stream`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn lowbit_backward_device(
    q: *const lowbit_quantizer,
    dtype: u32,
    x: *const c_void,
    dy: *const c_void,
    dx: *mut c_void,
    shape: *const usize,
    ndim: usize,
    stream: *mut c_void,
) -> lowbit_status {
    // SAFETY: the caller's contract, checked for nulls inside.
    unsafe { on_device(q, dtype, x, Some(dy), dx, shape, ndim, stream) }
}
