//! No allocation is sized from a shape before that shape has been checked
//! against the data it describes, and an empty tensor is done at once: a
//! hostile shape with no data behind it (`[0, 1 << 62]`, `[1 << 40]`) is an
//! error or an empty result, never a multi-gigabyte request or an abort.
//!
//! A counting allocator records the largest request; every public entry
//! point that allocates from a shape is called with such shapes. One test
//! function, so that no other test's allocations are counted with them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

use capi::{LOWBIT_F32, lowbit_status};
use lowbit::bits::{self, FlipRatio};
use lowbit::{Backend, Device, Element, Quantizer, bf16, f16};

// The C ABI's crate (capi/) builds only the C libraries: an rlib of their
// name would collide with lowbit's. Its source is compiled into this test,
// over the same lowbit as the rest of the test.
#[allow(dead_code)]
#[path = "../capi/src/lib.rs"]
mod capi;

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// More than any of these calls needs for its own bookkeeping (messages,
/// partial sums of nothing, a thread pool), far less than a shape's worth.
const LIMIT: usize = 1 << 20;

/// Shapes that describe far more elements than the (empty) data holds, or
/// that hold none along a huge axis.
const SHAPES: &[&[usize]] = &[
    &[0, 1 << 62],
    &[0, 1 << 40],
    &[0, 1 << 28],
    &[1 << 62, 0],
    &[0, 3, 1 << 40],
    &[1 << 40],
    &[1 << 33],
    &[1 << 20, 1 << 20],
];

const SPECS: &[&str] = &[
    "ste_sign",
    "ste_sign(scale=first_axis)",
    "approx_sign(scale=first_axis)",
    "swish_sign",
    "magnitude_aware_sign",
    "ste_tern(ternary_weight_networks=true)",
    "ste_tern",
    "dorefa(mode=weights)",
    "dorefa",
    "noop(precision=8)",
    "ede",
    "progressive_sign",
];

/// Runs `f` and fails if it asked for more than [`LIMIT`] bytes at once.
fn bounded<R>(what: &str, f: impl FnOnce() -> R) -> R {
    LARGEST.store(0, Ordering::Relaxed);
    let r = f();
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= LIMIT,
        "{what}: an allocation of {largest} bytes, sized from the shape"
    );
    r
}

fn is_empty(shape: &[usize]) -> bool {
    shape.contains(&0)
}

fn quantizers<T: Element>(backend: &Backend) {
    let name = backend.name();
    for spec in SPECS {
        let q: Quantizer = spec.parse().unwrap();
        for &shape in SHAPES {
            let what = |call: &str| format!("{name} {spec} {call} {shape:?}");
            let r = bounded(&what("forward"), || q.forward::<T>(&[], shape, &mut []));
            assert_eq!(r.is_ok(), is_empty(shape), "{}: {r:?}", what("forward"));
            let r = bounded(&what("backward"), || {
                q.backward::<T>(&[], &[], shape, &mut [])
            });
            assert_eq!(r.is_ok(), is_empty(shape), "{}: {r:?}", what("backward"));
            bounded(&what("forward_vec"), || q.forward_vec::<T>(&[], shape)).ok();
            bounded(&what("backward_vec"), || {
                q.backward_vec::<T>(&[], &[], shape)
            })
            .ok();
            bounded(&what("Backend::forward"), || {
                backend.forward::<T>(&q, &[], shape, &mut [])
            })
            .ok();
            bounded(&what("Backend::backward"), || {
                backend.backward::<T>(&q, &[], &[], shape, &mut [])
            })
            .ok();
            if q.supports_mask() {
                bounded(&what("forward_with_mask"), || {
                    q.forward_with_mask::<T>(&[], shape, &mut [], &mut [], &mut [])
                })
                .ok();
                bounded(&what("backward_from_mask"), || {
                    q.backward_from_mask::<T>(&[], &[], &[], shape, &mut [])
                })
                .ok();
                bounded(&what("Backend::forward_with_mask"), || {
                    backend.forward_with_mask::<T>(&q, &[], shape, &mut [], &mut [], &mut [])
                })
                .ok();
                bounded(&what("Backend::backward_from_mask"), || {
                    backend.backward_from_mask::<T>(&q, &[], &[], &[], shape, &mut [])
                })
                .ok();
                bounded(&what("saved_scale_len"), || q.saved_scale_len(shape)).ok();
            }
        }
    }
    let rsign: Quantizer = "rsign".parse().unwrap();
    for &shape in SHAPES {
        let what = |call: &str| format!("{name} rsign {call} {shape:?}");
        bounded(&what("forward"), || {
            rsign.forward_with_thresholds::<T>(&[], &[], shape, &mut [])
        })
        .ok();
        bounded(&what("backward"), || {
            rsign.backward_with_thresholds::<T>(&[], &[], &[], shape, &mut [], &mut [])
        })
        .ok();
        bounded(&what("Backend forward"), || {
            backend.forward_with_thresholds::<T>(&rsign, &[], &[], shape, &mut [])
        })
        .ok();
        bounded(&what("Backend backward"), || {
            backend.backward_with_thresholds::<T>(&rsign, &[], &[], &[], shape, &mut [], &mut [])
        })
        .ok();
    }
}

fn packing<T: Element>(backend: &Backend) {
    let name = backend.name();
    for &shape in SHAPES {
        let what = |call: &str| format!("{name} {call} {shape:?}");
        let r = bounded(&what("pack_vec"), || bits::pack_vec::<T>(&[], shape));
        assert_eq!(r.is_ok(), is_empty(shape), "{}: {r:?}", what("pack_vec"));
        let r = bounded(&what("unpack_vec"), || {
            bits::unpack_vec::<T>(&[], shape, None)
        });
        assert_eq!(r.is_ok(), is_empty(shape), "{}: {r:?}", what("unpack_vec"));
        bounded(&what("unpack_vec with a scale"), || {
            bits::unpack_vec::<T>(&[], shape, Some(&[1.0]))
        })
        .ok();
        bounded(&what("Backend::pack"), || {
            backend.pack::<T>(&[], shape, &mut [])
        })
        .ok();
        bounded(&what("Backend::unpack"), || {
            backend.unpack::<T>(&[], shape, None, &mut [])
        })
        .ok();
        let mut metric = bounded(&what("FlipRatio::new"), || FlipRatio::new(backend, shape))
            .expect("any shape that does not overflow makes a metric");
        let r = bounded(&what("FlipRatio::update"), || metric.update::<T>(&[]));
        assert_eq!(r.is_ok(), is_empty(shape), "{}: {r:?}", what("update"));
    }
}

/// The C ABI's host calls, whose sizes come from the shape alone.
fn c_abi() {
    let mut q = std::ptr::null_mut();
    // SAFETY: a NUL-terminated SPEC and a place for the handle.
    let status = unsafe { capi::lowbit_quantizer_new(c"magnitude_aware_sign".as_ptr(), &mut q) };
    assert_eq!(status, lowbit_status::LOWBIT_OK);
    let mut word = 0u32;
    // Only empty tensors: for the others the pointers would have to hold
    // what the shape claims.
    for &shape in SHAPES.iter().filter(|s| is_empty(s)) {
        let what = |call: &str| format!("C {call} {shape:?}");
        let x = std::ptr::NonNull::<f32>::dangling()
            .as_ptr()
            .cast::<c_void>();
        let y = x;
        // SAFETY: the shape holds `ndim` sizes; an empty tensor's pointers
        // are not read.
        let status = bounded(&what("lowbit_forward"), || unsafe {
            capi::lowbit_forward(q, LOWBIT_F32, x, y, shape.as_ptr(), shape.len())
        });
        assert_eq!(status, lowbit_status::LOWBIT_OK, "{}", what("forward"));
        let mut len = 0usize;
        // SAFETY: as above, and `len` is writable.
        bounded(&what("lowbit_saved_scale_len"), || unsafe {
            capi::lowbit_saved_scale_len(q, shape.as_ptr(), shape.len(), &mut len)
        });
        // SAFETY: a null scale is refused before anything is read.
        bounded(&what("lowbit_forward_with_mask"), || unsafe {
            capi::lowbit_forward_with_mask(
                q,
                LOWBIT_F32,
                x,
                y,
                &mut word,
                std::ptr::null_mut(),
                shape.as_ptr(),
                shape.len(),
            )
        });
    }
    // SAFETY: the handle made above, freed once.
    unsafe { capi::lowbit_quantizer_free(q) };
}

#[test]
fn hostile_shapes_never_size_an_allocation() {
    let cpu = Backend::new(Device::Cpu).unwrap();
    // The auto backend is CUDA where a GPU runs, whose host paths copy.
    let auto = Backend::new(Device::Auto).unwrap();
    for backend in [&cpu, &auto] {
        quantizers::<f32>(backend);
        quantizers::<f16>(backend);
        quantizers::<bf16>(backend);
        packing::<f32>(backend);
        packing::<bf16>(backend);
    }
    c_abi();
}
