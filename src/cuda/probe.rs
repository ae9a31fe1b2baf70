//! Finds out, without panicking, whether the CUDA driver can be used.
//!
//! cudarc loads libcuda on first use and panics when the library or one of
//! its symbols is missing, and a stub libcuda (the one CUDA toolkits ship for
//! linking) loads fine but fails every call. So before cudarc is touched the
//! library is opened here, the symbols lowbit relies on are looked up, and
//! `cuInit` and `cuDeviceGetCount` are called directly. The library stays
//! loaded for the life of the process: cudarc's own handle is another
//! reference to it, and unloading a driver between the two would drop the
//! state `cuInit` set up.

use std::ffi::c_int;
use std::sync::OnceLock;

/// What the probe found: a usable driver with at least one device.
#[derive(Debug, Clone)]
pub(crate) struct Driver {
    pub devices: i32,
    /// `cuDriverGetVersion`: 1000·major + 10·minor.
    pub version: i32,
}

/// Driver entry points lowbit calls, itself or through cudarc (cudarc
/// resolves each on first use, and panics on one that is missing).
const SYMBOLS: &[&str] = &[
    "cuInit",
    "cuDriverGetVersion",
    "cuGetErrorString",
    "cuGetErrorName",
    "cuDeviceGetCount",
    "cuDeviceGet",
    "cuDeviceGetName",
    "cuDeviceGetAttribute",
    "cuDevicePrimaryCtxRetain",
    "cuDevicePrimaryCtxRelease_v2",
    "cuCtxSetCurrent",
    "cuCtxGetCurrent",
    "cuCtxGetDevice",
    "cuCtxGetId",
    "cuCtxSynchronize",
    "cuPointerGetAttribute",
    "cuStreamCreate",
    "cuStreamDestroy_v2",
    "cuStreamGetCtx",
    "cuStreamGetId",
    "cuMemAlloc_v2",
    "cuMemFree_v2",
    "cuModuleLoadData",
    "cuModuleGetFunction",
    "cuModuleUnload",
    "cuLaunchKernel",
    "cuMemAllocAsync",
    "cuMemFreeAsync",
    "cuMemcpyDtoDAsync_v2",
    "cuMemcpyHtoDAsync_v2",
    "cuMemcpyDtoHAsync_v2",
    "cuMemsetD8Async",
    "cuStreamSynchronize",
    "cuStreamWaitEvent",
    "cuEventCreate",
    "cuEventRecord",
    "cuEventDestroy_v2",
];

/// `CUDA_ERROR_STUB_LIBRARY`: the toolkit's link-time stub, not a driver.
const STUB_LIBRARY: c_int = 34;
/// `CUDA_ERROR_NO_DEVICE`.
const NO_DEVICE: c_int = 100;

/// The driver library's names, in the order cudarc's loader tries them
/// (the ones a driver install or a toolkit provides). Written here rather
/// than asked of cudarc: where anything in the build links libcuda instead
/// (candle's CUDA backend selects cudarc's `dynamic-linking`), cudarc has
/// no loader to ask, and the linked library is found by its soname.
const LIBRARIES: &[&str] = if cfg!(windows) {
    &["nvcuda.dll"]
} else {
    &["libcuda.so", "libcuda.so.1"]
};

pub(crate) fn probe() -> Result<Driver, String> {
    let candidates = LIBRARIES;
    static LIB: OnceLock<Option<libloading::Library>> = OnceLock::new();
    // SAFETY: loading the CUDA driver library runs its initializers, which
    // is what using CUDA at all requires.
    let lib = LIB
        .get_or_init(|| {
            candidates
                .iter()
                .find_map(|name| unsafe { libloading::Library::new(name) }.ok())
        })
        .as_ref()
        .ok_or_else(|| "the CUDA driver library (libcuda) was not found".to_string())?;
    for name in SYMBOLS {
        // SAFETY: only the symbol's presence is checked; it is not called.
        unsafe { lib.get::<*const ()>(name.as_bytes()) }
            .map_err(|_| format!("the CUDA driver lacks {name} (driver too old?)"))?;
    }
    // SAFETY: these signatures are the driver API's own.
    unsafe {
        let init = lib
            .get::<unsafe extern "C" fn(u32) -> c_int>(b"cuInit")
            .map_err(|e| e.to_string())?;
        match init(0) {
            0 => {}
            STUB_LIBRARY => return Err("libcuda is the toolkit's stub, not a driver".into()),
            NO_DEVICE => return Err("no CUDA device (cuInit: CUDA_ERROR_NO_DEVICE)".into()),
            e => return Err(format!("cuInit failed with CUresult {e}")),
        }
        let mut version = 0;
        let get_version = lib
            .get::<unsafe extern "C" fn(*mut c_int) -> c_int>(b"cuDriverGetVersion")
            .map_err(|e| e.to_string())?;
        get_version(&mut version);
        let mut devices = 0;
        let count = lib
            .get::<unsafe extern "C" fn(*mut c_int) -> c_int>(b"cuDeviceGetCount")
            .map_err(|e| e.to_string())?;
        match count(&mut devices) {
            0 if devices > 0 => Ok(Driver { devices, version }),
            0 => Err("no CUDA device".into()),
            e => Err(format!("cuDeviceGetCount failed with CUresult {e}")),
        }
    }
}
