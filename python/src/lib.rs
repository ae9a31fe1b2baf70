//! `lowbit._lowbit`: the C ABI's calls, for `lowbit.torch`.
//!
//! Python hands over what a torch tensor is (its data pointer, dtype code,
//! shape and, on CUDA, the current stream), and each call goes through the
//! C ABI's own functions (compiled in from `capi/src/lib.rs`), so a
//! PyTorch call is checked, and refused, exactly as a C call is. The GIL is
//! released while lowbit works.

use std::ffi::{CStr, CString, c_void};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

#[allow(dead_code, unreachable_pub)]
#[path = "../../capi/src/lib.rs"]
mod capi;

use capi::lowbit_status::{self, *};

/// A parsed SPEC: lowbit's quantizer, and the C ABI's handle to it.
#[pyclass(frozen, module = "lowbit._lowbit")]
struct Spec {
    quantizer: lowbit::Quantizer,
    handle: Handle,
}

/// The C handle; freed with the object.
struct Handle(*mut capi::lowbit_quantizer);

// SAFETY: a handle is an immutable quantizer, which lowbit's calls read
// from any thread.
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: made by lowbit_quantizer_new, freed once.
        unsafe { capi::lowbit_quantizer_free(self.0) }
    }
}

#[pymethods]
impl Spec {
    /// Parses `spec` (larq's spelling); a bad one is a `ValueError` with
    /// lowbit's message.
    #[new]
    fn new(spec: &str) -> PyResult<Self> {
        let quantizer: lowbit::Quantizer = spec
            .parse()
            .map_err(|e: lowbit::Error| PyValueError::new_err(e.to_string()))?;
        // The canonical SPEC has no NUL, whatever the caller wrote.
        let text = CString::new(quantizer.to_string())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mut handle = std::ptr::null_mut();
        // SAFETY: a NUL-terminated string and an out-pointer.
        check(unsafe { capi::lowbit_quantizer_new(text.as_ptr(), &mut handle) })?;
        Ok(Spec {
            quantizer,
            handle: Handle(handle),
        })
    }

    /// The SPEC with every parameter, as lowbit prints it.
    #[getter]
    fn text(&self) -> String {
        self.quantizer.to_string()
    }

    fn __str__(&self) -> String {
        self.quantizer.to_string()
    }

    fn __repr__(&self) -> String {
        format!("Spec({:?})", self.quantizer.to_string())
    }

    /// Whether the backward pass can run from a 1-bit mask (and a scale).
    fn supports_mask(&self) -> bool {
        self.quantizer.supports_mask()
    }

    /// Whether the quantizer takes per-channel thresholds (`rsign`).
    fn takes_thresholds(&self) -> bool {
        self.quantizer.takes_thresholds()
    }

    /// Whether the masked forward saves a scale, one per channel
    /// (magnitude_aware_sign): what a one-channel tensor saves tells.
    fn saves_scale(&self) -> bool {
        self.quantizer.saved_scale_len(&[1]).is_ok_and(|n| n > 0)
    }

    /// Elements of the scale the masked forward saves for `shape`.
    fn saved_scale_len(&self, shape: Vec<usize>) -> PyResult<usize> {
        self.quantizer
            .saved_scale_len(&shape)
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }
}

/// Words (`u32`) of the mask of `len` elements.
#[pyfunction]
fn mask_words(len: usize) -> usize {
    lowbit::mask_words(len)
}

/// Runs one of the C ABI's calls on a tensor: `call` names it, `pointers`
/// are its buffers in the header's order, and `stream` is the CUDA stream
/// for device memory (`None`: host memory).
///
/// The pointers are torch tensors' `data_ptr()`, which the Python side
/// keeps alive, sized and contiguous for the call; lowbit checks the rest.
#[pyfunction]
#[pyo3(signature = (spec, call, dtype, pointers, shape, stream=None))]
fn run(
    py: Python<'_>,
    spec: &Spec,
    call: &str,
    dtype: u32,
    pointers: Vec<usize>,
    shape: Vec<usize>,
    stream: Option<usize>,
) -> PyResult<()> {
    let expected = match call {
        "forward" => 2,
        "backward" | "forward_with_thresholds" => 3,
        "forward_with_mask" | "backward_from_mask" => 4,
        "backward_with_thresholds" => 5,
        _ => return Err(PyValueError::new_err(format!("no lowbit call {call:?}"))),
    };
    if pointers.len() != expected {
        return Err(PyValueError::new_err(format!(
            "{call} takes {expected} buffers, {} given",
            pointers.len()
        )));
    }
    let (handle, pointers, shape) = (&spec.handle, &pointers, &shape);
    // The raw pointers are made inside: what crosses into the thread
    // without the GIL must be `Send`.
    let status = py.detach(move || {
        let q = handle.0.cast_const();
        let p = |i: usize| pointers[i] as *mut c_void;
        let (s, n) = (shape.as_ptr(), shape.len());
        // SAFETY: the pointers are live tensors' data, as the header asks
        // (the Python side's contract); the handle is this object's.
        unsafe {
            match (call, stream) {
                ("forward", None) => capi::lowbit_forward(q, dtype, p(0), p(1), s, n),
                ("forward", Some(st)) => {
                    capi::lowbit_forward_device(q, dtype, p(0), p(1), s, n, st as *mut c_void)
                }
                ("backward", None) => capi::lowbit_backward(q, dtype, p(0), p(1), p(2), s, n),
                ("backward", Some(st)) => capi::lowbit_backward_device(
                    q,
                    dtype,
                    p(0),
                    p(1),
                    p(2),
                    s,
                    n,
                    st as *mut c_void,
                ),
                ("forward_with_mask", None) => capi::lowbit_forward_with_mask(
                    q,
                    dtype,
                    p(0),
                    p(1),
                    p(2).cast(),
                    p(3),
                    s,
                    n,
                ),
                ("forward_with_mask", Some(st)) => capi::lowbit_forward_with_mask_device(
                    q,
                    dtype,
                    p(0),
                    p(1),
                    p(2).cast(),
                    p(3),
                    s,
                    n,
                    st as *mut c_void,
                ),
                ("backward_from_mask", None) => capi::lowbit_backward_from_mask(
                    q,
                    dtype,
                    p(0).cast(),
                    p(1),
                    p(2),
                    p(3),
                    s,
                    n,
                ),
                ("backward_from_mask", Some(st)) => capi::lowbit_backward_from_mask_device(
                    q,
                    dtype,
                    p(0).cast(),
                    p(1),
                    p(2),
                    p(3),
                    s,
                    n,
                    st as *mut c_void,
                ),
                ("forward_with_thresholds", None) => {
                    capi::lowbit_forward_with_thresholds(q, dtype, p(0), p(1), p(2), s, n)
                }
                ("forward_with_thresholds", Some(st)) => {
                    capi::lowbit_forward_with_thresholds_device(
                        q,
                        dtype,
                        p(0),
                        p(1),
                        p(2),
                        s,
                        n,
                        st as *mut c_void,
                    )
                }
                ("backward_with_thresholds", None) => capi::lowbit_backward_with_thresholds(
                    q,
                    dtype,
                    p(0),
                    p(1),
                    p(2),
                    p(3),
                    p(4),
                    s,
                    n,
                ),
                ("backward_with_thresholds", Some(st)) => {
                    capi::lowbit_backward_with_thresholds_device(
                        q,
                        dtype,
                        p(0),
                        p(1),
                        p(2),
                        p(3),
                        p(4),
                        s,
                        n,
                        st as *mut c_void,
                    )
                }
                _ => unreachable!("the call's name was checked above"),
            }
        }
    });
    check(status)
}

/// A status as Python's exception: bad input is a `ValueError`, anything
/// the device or lowbit itself reports a `RuntimeError`; the message is
/// lowbit's.
fn check(status: lowbit_status) -> PyResult<()> {
    if status == LOWBIT_OK {
        return Ok(());
    }
    // SAFETY: the C ABI's message of this thread's last call.
    let message = unsafe { CStr::from_ptr(capi::lowbit_last_error()) }
        .to_string_lossy()
        .into_owned();
    Err(match status {
        LOWBIT_ERR_NULL | LOWBIT_ERR_SPEC | LOWBIT_ERR_SHAPE | LOWBIT_ERR_UNSUPPORTED => {
            PyValueError::new_err(message)
        }
        _ => PyRuntimeError::new_err(message),
    })
}

/// Whether the CUDA kernels were built in.
#[pyfunction]
fn has_cuda_kernels() -> bool {
    cfg!(lowbit_cuda)
}

#[pymodule]
fn _lowbit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Spec>()?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(mask_words, m)?)?;
    m.add_function(wrap_pyfunction!(has_cuda_kernels, m)?)?;
    Ok(())
}
