//! The C ABI (`capi/include/lowbit.h`), for PyTorch extensions and other
//! C/C++ training stacks: `liblowbit.so` and `liblowbit.a`.
//!
//! Every function returns a [`lowbit_status`]; on failure the message is in
//! [`lowbit_last_error`] (per thread). Nothing panics across the boundary:
//! each body runs under `catch_unwind`, and a panic, which would be a lowbit
//! bug, becomes `LOWBIT_ERR_INTERNAL`.

#![allow(non_camel_case_types, clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use lowbit::{Element, Error, Quantizer, bf16, f16, ffi};

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
    /// Sizes that do not fit the shape, more than `LOWBIT_MAX_NDIM`
    /// dimensions, a tensor larger than any buffer, or an unknown dtype.
    LOWBIT_ERR_SHAPE = 3,
    /// The CUDA backend cannot run here (see the message for why).
    LOWBIT_ERR_CUDA_UNAVAILABLE = 4,
    /// A CUDA driver call failed.
    LOWBIT_ERR_CUDA = 5,
    /// A bug in lowbit (a caught panic), or the CPU worker threads could
    /// not be started.
    LOWBIT_ERR_INTERNAL = 6,
    /// The quantizer cannot run through this call: `rsign` needs its
    /// per-channel thresholds (the `_with_thresholds` calls), the others
    /// take none, and a mask is not enough for a gradient that needs `x`.
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

/// The most dimensions a shape may have: numpy's limit (`NPY_MAXDIMS`),
/// more than any training stack uses. `ndim` comes from the caller, and
/// `shape` is read only once it is known to be this small.
pub const LOWBIT_MAX_NDIM: usize = 64;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// What [`lowbit_last_error`] returns where the thread's own message is
/// gone: in a thread-exit handler (a pthread key destructor) that runs after
/// this thread's Rust thread-locals were destroyed.
const NO_MESSAGE: &CStr = c"lowbit: the message was lost: this thread is exiting";

fn set_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // `with` would panic once the thread-local is destroyed, and a panic
    // here is outside `catch_unwind`: the status still goes back.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

fn status_of(e: &Error) -> lowbit_status {
    match e {
        Error::Syntax { .. }
        | Error::UnknownQuantizer(_)
        | Error::UnknownParameter { .. }
        | Error::DuplicateParameter { .. }
        | Error::MissingParameter { .. }
        | Error::InvalidParameter { .. } => LOWBIT_ERR_SPEC,
        Error::NeedsThresholds { .. }
        | Error::TakesNoThresholds { .. }
        | Error::NotMaskable { .. } => LOWBIT_ERR_UNSUPPORTED,
        Error::CudaUnavailable(_) => LOWBIT_ERR_CUDA_UNAVAILABLE,
        Error::Cuda { .. } | Error::StreamContext(_) | Error::WorkspaceStream => LOWBIT_ERR_CUDA,
        Error::ThreadPool(_) => LOWBIT_ERR_INTERNAL,
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

/// A C call's result before it becomes a status.
type Outcome<T> = Result<T, (lowbit_status, String)>;

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
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(NO_MESSAGE.as_ptr())
}

/// Parses `spec` (larq's spelling, e.g. `"ste_tern(threshold_value=0.2)"`)
/// into a new handle at `*out`; free it with `lowbit_quantizer_free`. On
/// failure `*out` is set to null, so that freeing it is harmless.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lowbit_quantizer_new(
    spec: *const c_char,
    out: *mut *mut lowbit_quantizer,
) -> lowbit_status {
    guard(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: `out` is non-null and points to writable storage.
        unsafe { *out = std::ptr::null_mut() };
        if spec.is_null() {
            return Err(null("spec"));
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
    if ndim > LOWBIT_MAX_NDIM {
        return Err((
            LOWBIT_ERR_SHAPE,
            format!("ndim is {ndim}, more than LOWBIT_MAX_NDIM ({LOWBIT_MAX_NDIM})"),
        ));
    }
    if shape.is_null() {
        return Err(null("shape"));
    }
    // SAFETY: the caller passes `ndim` sizes.
    let s = unsafe { std::slice::from_raw_parts(shape, ndim) };
    let (n, _) = ffi::check_shape(s).map_err(fail)?;
    Ok((s, n))
}

/// Runs `body` under [`guard`] with the handle's quantizer, the shape and
/// its element count: the preamble of every call on a tensor.
///
/// # Safety
/// `q` is null or a live handle; `shape` is null or holds `ndim` sizes.
unsafe fn tensor_call(
    q: *const lowbit_quantizer,
    shape_ptr: *const usize,
    ndim: usize,
    body: impl FnOnce(&Quantizer, &[usize], usize) -> Outcome<()>,
) -> lowbit_status {
    guard(|| {
        // SAFETY: a live handle, or null.
        let q = unsafe { handle(q) }?;
        // SAFETY: forwarded from the caller's contract.
        let (s, n) = unsafe { shape(shape_ptr, ndim) }?;
        body(q, s, n)
    })
}

/// The quantizer behind a handle.
///
/// # Safety
/// `q` is null or a live handle from `lowbit_quantizer_new`.
unsafe fn handle<'a>(q: *const lowbit_quantizer) -> Result<&'a Quantizer, (lowbit_status, String)> {
    // SAFETY: the caller's contract.
    unsafe { q.as_ref() }.map(|h| &h.0).ok_or_else(|| null("q"))
}

/// Refuses `n` elements of `size` bytes that no buffer can hold: more than
/// `isize::MAX` bytes, which Rust's slices (and every allocator) exclude.
fn check_bytes(n: usize, size: usize, what: &str) -> Outcome<()> {
    match n.checked_mul(size) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(()),
        _ => Err((
            LOWBIT_ERR_SHAPE,
            format!("`{what}` would hold {n} elements of {size} bytes, more than any buffer can"),
        )),
    }
}

/// `n` elements of `T` at `p` (which may dangle or be null when `n` is 0).
///
/// # Safety
/// `p` points to `n` readable elements of `T`.
unsafe fn slice<'a, T>(p: *const c_void, n: usize, what: &str) -> Outcome<&'a [T]> {
    check_bytes(n, std::mem::size_of::<T>(), what)?;
    match (n, p.is_null()) {
        (0, _) => Ok(&[]),
        (_, true) => Err(null(what)),
        // SAFETY: the caller's contract.
        _ => Ok(unsafe { std::slice::from_raw_parts(p.cast(), n) }),
    }
}

/// [`slice`], writable.
///
/// # Safety
/// `p` points to `n` writable elements of `T` that nothing else borrows
/// (outputs do not overlap inputs).
unsafe fn slice_mut<'a, T>(p: *mut c_void, n: usize, what: &str) -> Outcome<&'a mut [T]> {
    check_bytes(n, std::mem::size_of::<T>(), what)?;
    match (n, p.is_null()) {
        (0, _) => Ok(&mut []),
        (_, true) => Err(null(what)),
        // SAFETY: the caller's contract.
        _ => Ok(unsafe { std::slice::from_raw_parts_mut(p.cast(), n) }),
    }
}

/// Runs `$body` with `$t` the element type `$dtype` names.
macro_rules! with_dtype {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            LOWBIT_F32 => {
                type $t = f32;
                $body
            }
            LOWBIT_F16 => {
                type $t = f16;
                $body
            }
            LOWBIT_BF16 => {
                type $t = bf16;
                $body
            }
            d => Err((LOWBIT_ERR_SHAPE, format!("unknown dtype {d}"))),
        }
    };
}

unsafe fn host_call<T: Element>(
    q: &Quantizer,
    x: *const c_void,
    dy: Option<*const c_void>,
    out: *mut c_void,
    shape: &[usize],
    n: usize,
) -> Outcome<()> {
    // SAFETY (all three): the caller passes `n` elements of T at each
    // pointer, the output not overlapping the inputs.
    let x = unsafe { slice::<T>(x, n, "x") }?;
    let out = unsafe { slice_mut::<T>(out, n, "out") }?;
    match dy {
        None => q.forward(x, shape, out),
        Some(dy) => q.backward(x, unsafe { slice::<T>(dy, n, "dy") }?, shape, out),
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
    let body = |q: &Quantizer, s: &[usize], n: usize| {
        // SAFETY: forwarded from the caller's contract.
        with_dtype!(dtype, T => unsafe { host_call::<T>(q, x, dy, out, s, n) })
    };
    // SAFETY: forwarded from the caller's contract.
    unsafe { tensor_call(q, shape_ptr, ndim, body) }
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
    use lowbit::DType;

    fn dtype_of(dtype: u32) -> Outcome<DType> {
        match dtype {
            LOWBIT_F32 => Ok(DType::F32),
            LOWBIT_F16 => Ok(DType::F16),
            LOWBIT_BF16 => Ok(DType::BF16),
            _ => Err((LOWBIT_ERR_SHAPE, format!("unknown dtype {dtype}"))),
        }
    }

    /// Refuses a device tensor of `n` elements of `dtype` that no buffer
    /// can hold, as [`slice`] does on the host.
    pub(super) fn check_tensor(dtype: u32, n: usize) -> Outcome<()> {
        check_bytes(n, dtype_of(dtype)?.size(), "the tensor")
    }

    #[cfg(lowbit_cuda)]
    use lowbit::ffi::on_stream;

    #[cfg(lowbit_cuda)]
    pub(super) unsafe fn reserve(q: &Quantizer, s: &[usize], stream: *mut c_void) -> Outcome<()> {
        let need = [false, true]
            .iter()
            .map(|&backward| lowbit::cuda::Cuda::workspace_bytes(q, s, backward))
            .try_fold(0, |m, b| b.map(|b| m.max(b)))
            .map_err(fail)?;
        // SAFETY: the caller's stream; no pointer to find a device by.
        unsafe { on_stream(stream.cast(), 0, need, |_, _, _| Ok(())) }.map_err(fail)
    }

    #[cfg(not(lowbit_cuda))]
    pub(super) unsafe fn reserve(_: &Quantizer, _: &[usize], _: *mut c_void) -> Outcome<()> {
        Err(unavailable())
    }

    #[cfg(not(lowbit_cuda))]
    fn unavailable() -> (lowbit_status, String) {
        fail(Error::CudaUnavailable(
            "lowbit was built without CUDA kernels (no CUDA compiler at build time)".into(),
        ))
    }

    #[cfg(lowbit_cuda)]
    pub(super) unsafe fn call(
        q: &Quantizer,
        dtype: u32,
        x: u64,
        dy: Option<u64>,
        out: u64,
        s: &[usize],
        stream: *mut c_void,
    ) -> Outcome<()> {
        let dtype = dtype_of(dtype)?;
        let need = lowbit::cuda::Cuda::workspace_bytes(q, s, dy.is_some()).map_err(fail)?;
        let stream = stream.cast();
        // SAFETY: the caller vouches for the device pointers and the stream.
        unsafe {
            on_stream(stream, x, need, |cuda, ws, stream| match dy {
                None => cuda.forward_raw(q, dtype, stream, x, s, out, ws),
                Some(dy) => cuda.backward_raw(q, dtype, stream, x, dy, s, out, ws),
            })
        }
        .map_err(fail)
    }

    /// `forward_with_mask_raw` (`x` is `Some`) or `backward_from_mask_raw`
    /// (`dy` is `Some`); `out` is `y` or `dx`.
    #[cfg(lowbit_cuda)]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn call_mask(
        q: &Quantizer,
        dtype: u32,
        pass: MaskPass,
        mask: u64,
        scale: u64,
        out: u64,
        s: &[usize],
        stream: *mut c_void,
    ) -> Outcome<()> {
        let dtype = dtype_of(dtype)?;
        let cs = stream.cast();
        match pass {
            MaskPass::Forward { x } => {
                // The masked forward needs the plain forward's workspace.
                let need = lowbit::cuda::Cuda::workspace_bytes(q, s, false).map_err(fail)?;
                // SAFETY: the caller vouches for the pointers and the stream.
                unsafe {
                    on_stream(cs, x as u64, need, |cuda, ws, cs| {
                        cuda.forward_with_mask_raw(q, dtype, cs, x as u64, s, out, mask, scale, ws)
                    })
                }
                .map_err(fail)
            }
            MaskPass::Backward { dy } => {
                // SAFETY: as above.
                unsafe {
                    on_stream(cs, dy as u64, 0, |cuda, _, cs| {
                        cuda.backward_from_mask_raw(q, dtype, cs, mask, scale, dy as u64, s, out)
                    })
                }
                .map_err(fail)
            }
        }
    }

    /// `forward_with_thresholds_raw` (`grad` is `None`) or
    /// `backward_with_thresholds_raw` (`grad` holds `dy` and `dalpha`).
    #[cfg(lowbit_cuda)]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn call_thresholds(
        q: &Quantizer,
        dtype: u32,
        x: u64,
        alpha: u64,
        out: u64,
        grad: Option<(u64, u64)>,
        s: &[usize],
        stream: *mut c_void,
    ) -> Outcome<()> {
        let dtype = dtype_of(dtype)?;
        let cs = stream.cast();
        match grad {
            // SAFETY: the caller vouches for the pointers and the stream.
            None => unsafe {
                on_stream(cs, x, 0, |cuda, _, cs| {
                    cuda.forward_with_thresholds_raw(q, dtype, cs, x, alpha, s, out)
                })
            }
            .map_err(fail),
            Some((dy, dalpha)) => {
                let need = lowbit::cuda::Cuda::workspace_bytes(q, s, true).map_err(fail)?;
                // SAFETY: as above.
                unsafe {
                    on_stream(cs, x, need, |cuda, ws, cs| {
                        cuda.backward_with_thresholds_raw(
                            q, dtype, cs, x, alpha, dy, s, out, dalpha, ws,
                        )
                    })
                }
                .map_err(fail)
            }
        }
    }

    #[cfg(not(lowbit_cuda))]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn call_thresholds(
        _: &Quantizer,
        dtype: u32,
        _: u64,
        _: u64,
        _: u64,
        _: Option<(u64, u64)>,
        _: &[usize],
        _: *mut c_void,
    ) -> Outcome<()> {
        dtype_of(dtype)?;
        Err(unavailable())
    }

    #[cfg(not(lowbit_cuda))]
    pub(super) unsafe fn call(
        _: &Quantizer,
        dtype: u32,
        _: u64,
        _: Option<u64>,
        _: u64,
        _: &[usize],
        _: *mut c_void,
    ) -> Outcome<()> {
        dtype_of(dtype)?;
        Err(unavailable())
    }

    #[cfg(not(lowbit_cuda))]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn call_mask(
        _: &Quantizer,
        dtype: u32,
        _: MaskPass,
        _: u64,
        _: u64,
        _: u64,
        _: &[usize],
        _: *mut c_void,
    ) -> Outcome<()> {
        dtype_of(dtype)?;
        Err(unavailable())
    }
}

/// Which masked pass, with the input only that pass reads.
#[derive(Clone, Copy)]
enum MaskPass {
    Forward { x: *const c_void },
    Backward { dy: *const c_void },
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
    let body = |q: &Quantizer, s: &[usize], n: usize| {
        if n > 0 && (x.is_null() || out.is_null() || dy.is_some_and(|p| p.is_null())) {
            return Err(null("a device pointer"));
        }
        device::check_tensor(dtype, n)?;
        // Before the device is opened: the answer does not depend on it.
        ffi::check_plain(q).map_err(fail)?;
        let dy = dy.map(|p| p as u64);
        // SAFETY: forwarded from the caller's contract.
        unsafe { device::call(q, dtype, x as u64, dy, out as u64, s, stream) }
    };
    // SAFETY: forwarded from the caller's contract.
    unsafe { tensor_call(q, shape_ptr, ndim, body) }
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

/// Grows the workspace lowbit keeps for `stream` to what forward and
/// backward calls of `q` on tensors of `shape` need, in `stream`'s order
/// (no host synchronization): later device calls of that size on `stream`
/// allocate nothing and can be captured into a CUDA graph. With a null
/// (legacy) or per-thread stream the calling thread needs a current context.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lowbit_reserve_workspace_device(
    q: *const lowbit_quantizer,
    shape: *const usize,
    ndim: usize,
    stream: *mut c_void,
) -> lowbit_status {
    let body = |q: &Quantizer, s: &[usize], _n: usize| {
        // SAFETY: the caller's stream.
        unsafe { device::reserve(q, s, stream) }
    };
    // SAFETY: the caller's contract, checked for nulls inside.
    unsafe { tensor_call(q, shape, ndim, body) }
}

/// Words (`uint32_t`) of the 1-bit mask of a tensor of `len` elements.
#[unsafe(no_mangle)]
pub extern "C" fn lowbit_mask_words(len: usize) -> usize {
    lowbit::mask_words(len)
}

/// Elements of the scale a masked forward saves beside the mask for a
/// tensor of `shape`: the channel count for `magnitude_aware_sign`, 0 for
/// the others.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lowbit_saved_scale_len(
    q: *const lowbit_quantizer,
    shape: *const usize,
    ndim: usize,
    out: *mut usize,
) -> lowbit_status {
    let body = |q: &Quantizer, s: &[usize], _: usize| {
        let len = q.saved_scale_len(s).map_err(fail)?;
        // SAFETY: `out` is null or points to writable storage.
        *unsafe { out.as_mut() }.ok_or_else(|| null("out"))? = len;
        Ok(())
    };
    // SAFETY: forwarded from the caller's contract.
    unsafe { tensor_call(q, shape, ndim, body) }
}

/// The buffers of a masked call, as the caller passed them.
struct Masked {
    mask: *mut c_void,
    scale: *mut c_void,
    out: *mut c_void,
}

/// A masked pass on host memory: the pass's input in, and `out` (`y` or
/// `dx`), the mask and the scale.
unsafe fn host_mask(
    q: *const lowbit_quantizer,
    dtype: u32,
    pass: MaskPass,
    b: Masked,
    shape_ptr: *const usize,
    ndim: usize,
) -> lowbit_status {
    let body = |q: &Quantizer, s: &[usize], n: usize| {
        let (words, scale_len) = (lowbit::mask_words(n), q.saved_scale_len(s).map_err(fail)?);
        with_dtype!(dtype, T => {
            // SAFETY: the caller passes buffers of these lengths, the
            // outputs not overlapping the inputs.
            let out = unsafe { slice_mut::<T>(b.out, n, "out") }?;
            match pass {
                MaskPass::Forward { x } => {
                    let x = unsafe { slice::<T>(x, n, "x") }?;
                    let mask = unsafe { slice_mut::<u32>(b.mask, words, "mask") }?;
                    let scale = unsafe { slice_mut::<T>(b.scale, scale_len, "scale") }?;
                    q.forward_with_mask(x, s, out, mask, scale).map_err(fail)
                }
                MaskPass::Backward { dy } => {
                    let dy = unsafe { slice::<T>(dy, n, "dy") }?;
                    let mask = unsafe { slice::<u32>(b.mask, words, "mask") }?;
                    let scale = unsafe { slice::<T>(b.scale, scale_len, "scale") }?;
                    q.backward_from_mask(mask, scale, dy, s, out).map_err(fail)
                }
            }
        })
    };
    // SAFETY: forwarded from the caller's contract.
    unsafe { tensor_call(q, shape_ptr, ndim, body) }
}

/// `y = q(x)` on host memory, and the mask of where the gradient passes
/// (`lowbit_mask_words(len)` words) and, for `magnitude_aware_sign`, each
/// channel's scale (`lowbit_saved_scale_len` elements of `dtype`; may be
/// null when that is 0).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn lowbit_forward_with_mask(
    q: *const lowbit_quantizer,
    dtype: u32,
    x: *const c_void,
    y: *mut c_void,
    mask: *mut u32,
    scale: *mut c_void,
    shape: *const usize,
    ndim: usize,
) -> lowbit_status {
    let b = Masked {
        mask: mask.cast(),
        scale,
        out: y,
    };
    // SAFETY: the caller's contract, checked for nulls inside.
    unsafe { host_mask(q, dtype, MaskPass::Forward { x }, b, shape, ndim) }
}

/// `dx = dq/dx · dy` on host memory from what `lowbit_forward_with_mask`
/// saved: the same bits as `lowbit_backward` from `x`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn lowbit_backward_from_mask(
    q: *const lowbit_quantizer,
    dtype: u32,
    mask: *const u32,
    scale: *const c_void,
    dy: *const c_void,
    dx: *mut c_void,
    shape: *const usize,
    ndim: usize,
) -> lowbit_status {
    let b = Masked {
        mask: mask.cast_mut().cast(),
        scale: scale.cast_mut(),
        out: dx,
    };
    // SAFETY: the caller's contract, checked for nulls inside.
    unsafe { host_mask(q, dtype, MaskPass::Backward { dy }, b, shape, ndim) }
}

unsafe fn device_mask(
    q: *const lowbit_quantizer,
    dtype: u32,
    pass: MaskPass,
    b: Masked,
    shape_ptr: *const usize,
    ndim: usize,
    stream: *mut c_void,
) -> lowbit_status {
    let body = |q: &Quantizer, s: &[usize], n: usize| {
        let input = match pass {
            MaskPass::Forward { x } => x,
            MaskPass::Backward { dy } => dy,
        };
        if n > 0 && (input.is_null() || b.out.is_null() || b.mask.is_null()) {
            return Err(null("a device pointer"));
        }
        device::check_tensor(dtype, n)?;
        // Before the device is opened: the answers do not depend on it.
        ffi::check_maskable(q).map_err(fail)?;
        if q.saved_scale_len(s).map_err(fail)? > 0 && b.scale.is_null() {
            return Err(null("scale"));
        }
        let (mask, scale, out) = (b.mask as u64, b.scale as u64, b.out as u64);
        // SAFETY: forwarded from the caller's contract.
        unsafe { device::call_mask(q, dtype, pass, mask, scale, out, s, stream) }
    };
    // SAFETY: forwarded from the caller's contract.
    unsafe { tensor_call(q, shape_ptr, ndim, body) }
}

/// `lowbit_forward_with_mask` on device memory, enqueued on `stream`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn lowbit_forward_with_mask_device(
    q: *const lowbit_quantizer,
    dtype: u32,
    x: *const c_void,
    y: *mut c_void,
    mask: *mut u32,
    scale: *mut c_void,
    shape: *const usize,
    ndim: usize,
    stream: *mut c_void,
) -> lowbit_status {
    let b = Masked {
        mask: mask.cast(),
        scale,
        out: y,
    };
    let pass = MaskPass::Forward { x };
    // SAFETY: the caller's contract, checked for nulls inside.
    unsafe { device_mask(q, dtype, pass, b, shape, ndim, stream) }
}

/// `lowbit_backward_from_mask` on device memory, enqueued on `stream`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn lowbit_backward_from_mask_device(
    q: *const lowbit_quantizer,
    dtype: u32,
    mask: *const u32,
    scale: *const c_void,
    dy: *const c_void,
    dx: *mut c_void,
    shape: *const usize,
    ndim: usize,
    stream: *mut c_void,
) -> lowbit_status {
    let b = Masked {
        mask: mask.cast_mut().cast(),
        scale: scale.cast_mut(),
        out: dx,
    };
    let pass = MaskPass::Backward { dy };
    // SAFETY: the caller's contract, checked for nulls inside.
    unsafe { device_mask(q, dtype, pass, b, shape, ndim, stream) }
}

/// The buffers of an `rsign` call, as the caller passed them.
struct Thresholds {
    x: *const c_void,
    alpha: *const c_void,
    out: *mut c_void,
    /// `dy` and `dalpha`, for the backward pass.
    grad: Option<(*const c_void, *mut c_void)>,
}

unsafe fn host_thresholds(
    q: *const lowbit_quantizer,
    dtype: u32,
    b: Thresholds,
    shape_ptr: *const usize,
    ndim: usize,
) -> lowbit_status {
    let body = |q: &Quantizer, s: &[usize], n: usize| {
        let (_, c) = ffi::check_shape(s).map_err(fail)?;
        with_dtype!(dtype, T => {
            // SAFETY: the caller passes `n` elements of T at x, dy and the
            // output and `c` at alpha and dalpha, outputs not overlapping
            // inputs.
            let x = unsafe { slice::<T>(b.x, n, "x") }?;
            let alpha = unsafe { slice::<T>(b.alpha, c, "alpha") }?;
            let out = unsafe { slice_mut::<T>(b.out, n, "out") }?;
            match b.grad {
                None => q.forward_with_thresholds(x, alpha, s, out),
                Some((dy, dalpha)) => {
                    let dy = unsafe { slice::<T>(dy, n, "dy") }?;
                    let dalpha = unsafe { slice_mut::<T>(dalpha, c, "dalpha") }?;
                    q.backward_with_thresholds(x, alpha, dy, s, out, dalpha)
                }
            }
            .map_err(fail)
        })
    };
    // SAFETY: forwarded from the caller's contract.
    unsafe { tensor_call(q, shape_ptr, ndim, body) }
}

unsafe fn device_thresholds(
    q: *const lowbit_quantizer,
    dtype: u32,
    b: Thresholds,
    shape_ptr: *const usize,
    ndim: usize,
    stream: *mut c_void,
) -> lowbit_status {
    let body = |q: &Quantizer, s: &[usize], n: usize| {
        // Before the device is opened: the answers do not depend on it.
        let (_, c) = ffi::check_thresholds(q, s).map_err(fail)?;
        let dy_null = b.grad.is_some_and(|(dy, _)| dy.is_null());
        if n > 0 && (b.x.is_null() || b.out.is_null() || dy_null) {
            return Err(null("a device pointer"));
        }
        let dalpha_null = b.grad.is_some_and(|(_, da)| da.is_null());
        if c > 0 && (b.alpha.is_null() || dalpha_null) {
            return Err(null("a device pointer"));
        }
        device::check_tensor(dtype, n)?;
        let grad = b.grad.map(|(dy, da)| (dy as u64, da as u64));
        let (x, alpha, out) = (b.x as u64, b.alpha as u64, b.out as u64);
        // SAFETY: forwarded from the caller's contract.
        unsafe { device::call_thresholds(q, dtype, x, alpha, out, grad, s, stream) }
    };
    // SAFETY: forwarded from the caller's contract.
    unsafe { tensor_call(q, shape_ptr, ndim, body) }
}

/// `rsign`'s `y = sign(x − α_c)` on host memory, `alpha` holding one
/// threshold per channel (the shape's last axis) of `dtype`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lowbit_forward_with_thresholds(
    q: *const lowbit_quantizer,
    dtype: u32,
    x: *const c_void,
    alpha: *const c_void,
    y: *mut c_void,
    shape: *const usize,
    ndim: usize,
) -> lowbit_status {
    let b = Thresholds {
        x,
        alpha,
        out: y,
        grad: None,
    };
    // SAFETY: the caller's contract, checked for nulls inside.
    unsafe { host_thresholds(q, dtype, b, shape, ndim) }
}

/// `rsign`'s gradients on host memory: `dx`, and `dalpha[c] = −Σ dx` over
/// channel `c`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn lowbit_backward_with_thresholds(
    q: *const lowbit_quantizer,
    dtype: u32,
    x: *const c_void,
    alpha: *const c_void,
    dy: *const c_void,
    dx: *mut c_void,
    dalpha: *mut c_void,
    shape: *const usize,
    ndim: usize,
) -> lowbit_status {
    let b = Thresholds {
        x,
        alpha,
        out: dx,
        grad: Some((dy, dalpha)),
    };
    // SAFETY: the caller's contract, checked for nulls inside.
    unsafe { host_thresholds(q, dtype, b, shape, ndim) }
}

/// `lowbit_forward_with_thresholds` on device memory, enqueued on `stream`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn lowbit_forward_with_thresholds_device(
    q: *const lowbit_quantizer,
    dtype: u32,
    x: *const c_void,
    alpha: *const c_void,
    y: *mut c_void,
    shape: *const usize,
    ndim: usize,
    stream: *mut c_void,
) -> lowbit_status {
    let b = Thresholds {
        x,
        alpha,
        out: y,
        grad: None,
    };
    // SAFETY: the caller's contract, checked for nulls inside.
    unsafe { device_thresholds(q, dtype, b, shape, ndim, stream) }
}

/// `lowbit_backward_with_thresholds` on device memory, enqueued on
/// `stream`; dα is reduced on the device (the same bits as the host call).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn lowbit_backward_with_thresholds_device(
    q: *const lowbit_quantizer,
    dtype: u32,
    x: *const c_void,
    alpha: *const c_void,
    dy: *const c_void,
    dx: *mut c_void,
    dalpha: *mut c_void,
    shape: *const usize,
    ndim: usize,
    stream: *mut c_void,
) -> lowbit_status {
    let b = Thresholds {
        x,
        alpha,
        out: dx,
        grad: Some((dy, dalpha)),
    };
    // SAFETY: the caller's contract, checked for nulls inside.
    unsafe { device_thresholds(q, dtype, b, shape, ndim, stream) }
}
