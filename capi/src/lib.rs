//! The C ABI (`capi/include/lowbit.h`), for PyTorch extensions and other
//! C/C++ training stacks: `liblowbit.so` and `liblowbit.a`.
//!
//! Every function returns a [`lowbit_status`]; on failure the message is in
//! [`lowbit_last_error`] (per thread). Nothing panics across the boundary:
//! each body runs under `catch_unwind`, and a panic, which would be a lowbit
//! bug, becomes `LOWBIT_ERR_INTERNAL`.
//!
//! A call on a tensor is its [`Buffers`] and where they live ([`Memory`])
//! handed to [`run`], so that the handle, the shape, the dtype, every
//! pointer and every size are checked in one place, in the same order for
//! every call, before anything is read. The process-wide CUDA state (one
//! set of kernels per context, one workspace per stream) is lowbit's
//! `cuda/registry.rs`, reached through `lowbit::ffi::on_stream`.

#![allow(non_camel_case_types, clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use lowbit::ffi::{self, Pass};
use lowbit::{DType, Element, Error, Quantizer, bf16, f16};

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

/// The quantizer behind a handle.
///
/// # Safety
/// `q` is null or a live handle from `lowbit_quantizer_new`.
unsafe fn handle<'a>(q: *const lowbit_quantizer) -> Outcome<&'a Quantizer> {
    // SAFETY: the caller's contract.
    unsafe { q.as_ref() }.map(|h| &h.0).ok_or_else(|| null("q"))
}

/// A shape the caller passed, checked: its sizes, element count and channel
/// count (the last axis).
#[derive(Clone, Copy)]
struct Shape<'a> {
    dims: &'a [usize],
    len: usize,
    channels: usize,
}

/// # Safety
/// `shape` is null or holds `ndim` sizes; it is read only once `ndim` is
/// known to be at most `LOWBIT_MAX_NDIM`.
unsafe fn shape<'a>(shape: *const usize, ndim: usize) -> Outcome<Shape<'a>> {
    let dims = match ndim {
        0 => &[],
        n if n > LOWBIT_MAX_NDIM => {
            return Err((
                LOWBIT_ERR_SHAPE,
                format!("ndim is {ndim}, more than LOWBIT_MAX_NDIM ({LOWBIT_MAX_NDIM})"),
            ));
        }
        _ if shape.is_null() => return Err(null("shape")),
        // SAFETY: the caller passes `ndim` sizes.
        _ => unsafe { std::slice::from_raw_parts(shape, ndim) },
    };
    let (len, channels) = ffi::check_shape(dims).map_err(fail)?;
    Ok(Shape {
        dims,
        len,
        channels,
    })
}

/// The preamble of every call on a tensor: runs `body` under [`guard`]
/// with the handle's quantizer and the checked shape.
///
/// # Safety
/// `q` is null or a live handle; `shape_ptr` is null or holds `ndim` sizes.
unsafe fn tensor_call(
    q: *const lowbit_quantizer,
    shape_ptr: *const usize,
    ndim: usize,
    body: impl FnOnce(&Quantizer, Shape) -> Outcome<()>,
) -> lowbit_status {
    guard(|| {
        // SAFETY: forwarded from the caller's contract.
        let (q, s) = unsafe { (handle(q)?, shape(shape_ptr, ndim)?) };
        body(q, s)
    })
}

/// Where a call's buffers live.
#[derive(Clone, Copy)]
enum Memory {
    Host,
    /// Device memory, the work enqueued on this `CUstream` (null: the
    /// legacy default stream).
    Device(*mut c_void),
}
use Memory::{Device, Host};

/// The buffers of a call on a tensor, as the caller passed them: each holds
/// the shape's element count of the dtype, except `alpha` and `dalpha` (one
/// per channel), the mask (`lowbit_mask_words` words) and the scale
/// (`lowbit_saved_scale_len` elements).
#[derive(Clone, Copy)]
enum Buffers {
    /// `forward` (`x`, no `dy`, `y`) and `backward` (`x`, `dy`, `dx`).
    Plain(*const c_void, Option<*const c_void>, *mut c_void),
    /// `forward_with_mask`: `x`, `y`, the mask and the scale.
    SaveMask(*const c_void, *mut c_void, *mut u32, *mut c_void),
    /// `backward_from_mask`: the mask, the scale, `dy` and `dx`.
    FromMask(*const u32, *const c_void, *const c_void, *mut c_void),
    /// `rsign`'s calls: `x`, `alpha`, `y` or `dx`, and for the backward
    /// pass `dy` and `dalpha`.
    Thresholds(
        *const c_void,
        *const c_void,
        *mut c_void,
        Option<(*const c_void, *mut c_void)>,
    ),
}
use Buffers::*;

/// Every call on a tensor: the preamble, then the call `b` describes.
///
/// # Safety
/// The header's contract: `q` null or a live handle, `shape` null or
/// holding `ndim` sizes, and each buffer in `b` null or holding its
/// elements, outputs not overlapping inputs.
unsafe fn run(
    q: *const lowbit_quantizer,
    dtype: u32,
    shape: *const usize,
    ndim: usize,
    memory: Memory,
    b: Buffers,
) -> lowbit_status {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        tensor_call(q, shape, ndim, |q, s| match memory {
            Host => on_host(q, dtype, b, s),
            Device(stream) => on_device(q, dtype, b, s, stream),
        })
    }
}

fn dtype_of(dtype: u32) -> Outcome<DType> {
    match dtype {
        LOWBIT_F32 => Ok(DType::F32),
        LOWBIT_F16 => Ok(DType::F16),
        LOWBIT_BF16 => Ok(DType::BF16),
        _ => Err((LOWBIT_ERR_SHAPE, format!("unknown dtype {dtype}"))),
    }
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

/// # Safety
/// As [`run`]'s, for host memory.
unsafe fn on_host(q: &Quantizer, dtype: u32, b: Buffers, s: Shape) -> Outcome<()> {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        match dtype_of(dtype)? {
            DType::F32 => host::<f32>(q, b, s),
            DType::F16 => host::<f16>(q, b, s),
            DType::BF16 => host::<bf16>(q, b, s),
        }
    }
}

/// # Safety
/// As [`run`]'s, for host memory holding elements of `T`.
unsafe fn host<T: Element>(q: &Quantizer, b: Buffers, s: Shape) -> Outcome<()> {
    let Shape {
        dims,
        len: n,
        channels: c,
    } = s;
    let scale_len = || q.saved_scale_len(dims).map_err(fail);
    // SAFETY (every slice): the caller passes buffers of these lengths, the
    // outputs not overlapping the inputs.
    unsafe {
        match b {
            Plain(x, dy, out) => {
                let x = slice::<T>(x, n, "x")?;
                let out = slice_mut::<T>(out, n, "out")?;
                match dy {
                    None => q.forward(x, dims, out),
                    Some(dy) => q.backward(x, slice::<T>(dy, n, "dy")?, dims, out),
                }
            }
            SaveMask(x, y, mask, scale) => {
                let scale_len = scale_len()?;
                let out = slice_mut::<T>(y, n, "out")?;
                let x = slice::<T>(x, n, "x")?;
                let mask = slice_mut::<u32>(mask.cast(), lowbit::mask_words(n), "mask")?;
                let scale = slice_mut::<T>(scale, scale_len, "scale")?;
                q.forward_with_mask(x, dims, out, mask, scale)
            }
            FromMask(mask, scale, dy, dx) => {
                let scale_len = scale_len()?;
                let out = slice_mut::<T>(dx, n, "out")?;
                let dy = slice::<T>(dy, n, "dy")?;
                let mask = slice::<u32>(mask.cast(), lowbit::mask_words(n), "mask")?;
                let scale = slice::<T>(scale, scale_len, "scale")?;
                q.backward_from_mask(mask, scale, dy, dims, out)
            }
            Thresholds(x, alpha, out, grad) => {
                let x = slice::<T>(x, n, "x")?;
                let alpha = slice::<T>(alpha, c, "alpha")?;
                let out = slice_mut::<T>(out, n, "out")?;
                match grad {
                    None => q.forward_with_thresholds(x, alpha, dims, out),
                    Some((dy, dalpha)) => {
                        let dy = slice::<T>(dy, n, "dy")?;
                        let dalpha = slice_mut::<T>(dalpha, c, "dalpha")?;
                        q.backward_with_thresholds(x, alpha, dy, dims, out, dalpha)
                    }
                }
            }
        }
    }
    .map_err(fail)
}

/// The checks of a device call, none of which reads a device pointer or
/// opens the device (the answers do not depend on it), then its launch.
///
/// # Safety
/// As [`run`]'s, for device memory and a live stream (or null).
unsafe fn on_device(
    q: &Quantizer,
    dtype: u32,
    b: Buffers,
    s: Shape,
    stream: *mut c_void,
) -> Outcome<()> {
    let (n, c) = (s.len, s.channels);
    let device_null = || Err(null("a device pointer"));
    // The dtype is checked where each call checked it before the pointers.
    let dt = || dtype_of(dtype);
    let check = |pass| ffi::check(q, dt()?, pass, s.dims).map_err(fail);
    let masked =
        |pass, input: *const c_void, out: *mut c_void, mask: *const u32, scale: *const c_void| {
            if n > 0 && (input.is_null() || out.is_null() || mask.is_null()) {
                return device_null();
            }
            check_bytes(n, dt()?.size(), "the tensor")?;
            check(pass)?;
            if q.saved_scale_len(s.dims).map_err(fail)? > 0 && scale.is_null() {
                return Err(null("scale"));
            }
            Ok(())
        };
    match b {
        Plain(x, dy, out) => {
            if n > 0 && (x.is_null() || out.is_null() || dy.is_some_and(|p| p.is_null())) {
                return device_null();
            }
            check_bytes(n, dt()?.size(), "the tensor")?;
            check(match dy {
                None => Pass::Forward,
                Some(_) => Pass::Backward,
            })?;
        }
        SaveMask(x, y, mask, scale) => masked(Pass::ForwardWithMask, x, y, mask, scale)?,
        FromMask(mask, scale, dy, dx) => masked(Pass::BackwardFromMask, dy, dx, mask, scale)?,
        Thresholds(x, alpha, out, grad) => {
            check(match grad {
                None => Pass::ForwardWithThresholds,
                Some(_) => Pass::BackwardWithThresholds,
            })?;
            let (dy, dalpha) = grad.unzip();
            if n > 0 && (x.is_null() || out.is_null() || dy.is_some_and(|p| p.is_null())) {
                return device_null();
            }
            if c > 0 && (alpha.is_null() || dalpha.is_some_and(|p| p.is_null())) {
                return device_null();
            }
            check_bytes(n, dt()?.size(), "the tensor")?;
        }
    }
    // SAFETY: forwarded from the caller's contract.
    unsafe { device::launch(q, dt()?, b, s.dims, stream) }.map_err(fail)
}

/// The launches, each on the workspace of its stream (lowbit's registry).
#[cfg(lowbit_cuda)]
mod device {
    use super::*;
    use lowbit::cuda::Cuda;

    /// # Safety
    /// The caller vouches for the device pointers in `b` and the stream.
    pub(super) unsafe fn launch(
        q: &Quantizer,
        dtype: DType,
        b: Buffers,
        s: &[usize],
        stream: *mut c_void,
    ) -> lowbit::Result<()> {
        let p = |ptr: *const c_void| ptr as u64;
        let cs = stream.cast();
        // SAFETY (every launch): the caller's contract.
        unsafe {
            match b {
                Plain(x, dy, out) => {
                    let need = Cuda::workspace_bytes(q, s, dy.is_some())?;
                    ffi::on_stream(cs, p(x), need, |cuda, ws, cs| match dy {
                        None => cuda.forward_raw(q, dtype, cs, p(x), s, p(out), ws),
                        Some(dy) => cuda.backward_raw(q, dtype, cs, p(x), p(dy), s, p(out), ws),
                    })
                }
                SaveMask(x, y, mask, scale) => {
                    // The masked forward needs the plain forward's workspace.
                    let need = Cuda::workspace_bytes(q, s, false)?;
                    let (mask, scale) = (mask as u64, p(scale));
                    ffi::on_stream(cs, p(x), need, |cuda, ws, cs| {
                        cuda.forward_with_mask_raw(q, dtype, cs, p(x), s, p(y), mask, scale, ws)
                    })
                }
                FromMask(mask, scale, dy, dx) => {
                    let (mask, scale) = (mask as u64, p(scale));
                    ffi::on_stream(cs, p(dy), 0, |cuda, _, cs| {
                        cuda.backward_from_mask_raw(q, dtype, cs, mask, scale, p(dy), s, p(dx))
                    })
                }
                Thresholds(x, alpha, out, grad) => {
                    let need = match grad {
                        None => 0,
                        Some(_) => Cuda::workspace_bytes(q, s, true)?,
                    };
                    let (x, alpha, out) = (p(x), p(alpha), p(out));
                    ffi::on_stream(cs, x, need, |cuda, ws, cs| match grad {
                        None => cuda.forward_with_thresholds_raw(q, dtype, cs, x, alpha, s, out),
                        Some((dy, da)) => cuda.backward_with_thresholds_raw(
                            q,
                            dtype,
                            cs,
                            x,
                            alpha,
                            p(dy),
                            s,
                            out,
                            p(da),
                            ws,
                        ),
                    })
                }
            }
        }
    }

    /// Grows `stream`'s workspace to what forward and backward calls need.
    ///
    /// # Safety
    /// `stream` is a live stream (or null).
    pub(super) unsafe fn reserve(
        q: &Quantizer,
        s: &[usize],
        stream: *mut c_void,
    ) -> lowbit::Result<()> {
        let need = Cuda::workspace_bytes(q, s, false)?.max(Cuda::workspace_bytes(q, s, true)?);
        // SAFETY: the caller's stream; no pointer to find a device by.
        unsafe { ffi::on_stream(stream.cast(), 0, need, |_, _, _| Ok(())) }
    }
}

/// Without kernels every device call that passes its checks is refused.
#[cfg(not(lowbit_cuda))]
mod device {
    use super::*;

    fn unavailable() -> lowbit::Result<()> {
        Err(Error::CudaUnavailable(
            "lowbit was built without CUDA kernels (no CUDA compiler at build time)".into(),
        ))
    }

    pub(super) unsafe fn launch(
        _: &Quantizer,
        _: DType,
        _: Buffers,
        _: &[usize],
        _: *mut c_void,
    ) -> lowbit::Result<()> {
        unavailable()
    }

    pub(super) unsafe fn reserve(_: &Quantizer, _: &[usize], _: *mut c_void) -> lowbit::Result<()> {
        unavailable()
    }
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
    // SAFETY: the caller's contract, checked inside.
    unsafe { run(q, dtype, shape, ndim, Host, Plain(x, None, y)) }
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
    let b = Plain(x, Some(dy), dx);
    // SAFETY: the caller's contract, checked inside.
    unsafe { run(q, dtype, shape, ndim, Host, b) }
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
    let b = Plain(x, None, y);
    // SAFETY: the caller's contract, checked inside.
    unsafe { run(q, dtype, shape, ndim, Device(stream), b) }
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
    let b = Plain(x, Some(dy), dx);
    // SAFETY: the caller's contract, checked inside.
    unsafe { run(q, dtype, shape, ndim, Device(stream), b) }
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
    // SAFETY: the caller's contract, checked inside.
    unsafe {
        tensor_call(q, shape, ndim, |q, s| {
            device::reserve(q, s.dims, stream).map_err(fail)
        })
    }
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
    // SAFETY: the caller's contract, checked inside.
    unsafe {
        tensor_call(q, shape, ndim, |q, s| {
            let len = q.saved_scale_len(s.dims).map_err(fail)?;
            *out.as_mut().ok_or_else(|| null("out"))? = len;
            Ok(())
        })
    }
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
    let b = SaveMask(x, y, mask, scale);
    // SAFETY: the caller's contract, checked inside.
    unsafe { run(q, dtype, shape, ndim, Host, b) }
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
    let b = FromMask(mask, scale, dy, dx);
    // SAFETY: the caller's contract, checked inside.
    unsafe { run(q, dtype, shape, ndim, Host, b) }
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
    let b = SaveMask(x, y, mask, scale);
    // SAFETY: the caller's contract, checked inside.
    unsafe { run(q, dtype, shape, ndim, Device(stream), b) }
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
    let b = FromMask(mask, scale, dy, dx);
    // SAFETY: the caller's contract, checked inside.
    unsafe { run(q, dtype, shape, ndim, Device(stream), b) }
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
    let b = Thresholds(x, alpha, y, None);
    // SAFETY: the caller's contract, checked inside.
    unsafe { run(q, dtype, shape, ndim, Host, b) }
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
    let b = Thresholds(x, alpha, dx, Some((dy, dalpha)));
    // SAFETY: the caller's contract, checked inside.
    unsafe { run(q, dtype, shape, ndim, Host, b) }
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
    let b = Thresholds(x, alpha, y, None);
    // SAFETY: the caller's contract, checked inside.
    unsafe { run(q, dtype, shape, ndim, Device(stream), b) }
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
    let b = Thresholds(x, alpha, dx, Some((dy, dalpha)));
    // SAFETY: the caller's contract, checked inside.
    unsafe { run(q, dtype, shape, ndim, Device(stream), b) }
}
