//! The driver API, called as a program linked to libcuda calls it: devices,
//! contexts, streams and events, memory, modules and launches, errors.
//!
//! The driver's state is the process's, shared by these tests; each makes
//! contexts of its own, so that a fault one provokes stays in its context.

use std::ffi::{CStr, CString, c_void};
use std::ptr::null_mut;

use cuda_emu::driver::api::*;
use cuda_emu::driver::{Counters, code};

type H = *mut c_void;

fn ok(r: u32) {
    assert_eq!(r, code::SUCCESS, "{}", name(r));
}

fn name(r: u32) -> String {
    let mut p = std::ptr::null();
    unsafe { cuGetErrorName(r, &mut p) };
    if p.is_null() {
        format!("code {r}")
    } else {
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into()
    }
}

/// A fresh context on `device`, current on this thread.
fn context(device: i32) -> H {
    unsafe {
        ok(cuInit(0));
        let mut ctx = null_mut();
        ok(cuCtxCreate_v2(&mut ctx, 0, device));
        ctx
    }
}

const PTX: &str = ".version 9.0
.target sm_75
.address_size 64
.visible .entry scale(.param .u64 px, .param .u32 pn, .param .f32 pk)
.maxntid 256, 1, 1
{
    .reg .pred %p;
    .reg .b32 %r<5>;
    .reg .f32 %f<3>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [px];
    ld.param.u32 %r1, [pn];
    ld.param.f32 %f1, [pk];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.s32 %r2, %r2, %r3, %r4;
    setp.ge.u32 %p, %r2, %r1;
    @%p bra $done;
    mul.wide.u32 %rd2, %r2, 4;
    add.s64 %rd3, %rd1, %rd2;
    ld.global.f32 %f2, [%rd3];
    mul.rn.f32 %f2, %f2, %f1;
    st.global.f32 [%rd3], %f2;
$done:
    ret;
}
";

/// Loads PTX and returns `scale(x, n, k)`: x[i] *= k.
fn scale_kernel() -> H {
    unsafe {
        let src = CString::new(PTX).unwrap();
        let mut m = null_mut();
        ok(cuModuleLoadData(&mut m, src.as_ptr() as *const c_void));
        let mut f = null_mut();
        ok(cuModuleGetFunction(&mut f, m, c"scale".as_ptr()));
        f
    }
}

unsafe fn launch_scale(f: H, x: u64, n: u32, k: f32, block: u32, stream: H) -> u32 {
    let (mut x, mut n, mut k) = (x, n, k);
    let mut params = [
        &mut x as *mut u64 as *mut c_void,
        &mut n as *mut u32 as *mut c_void,
        &mut k as *mut f32 as *mut c_void,
    ];
    unsafe {
        cuLaunchKernel(
            f,
            n.div_ceil(block),
            1,
            1,
            block,
            1,
            1,
            0,
            stream,
            params.as_mut_ptr(),
            null_mut(),
        )
    }
}

fn upload(v: &[f32]) -> u64 {
    unsafe {
        let mut p = 0;
        ok(cuMemAlloc_v2(&mut p, v.len() * 4));
        ok(cuMemcpyHtoD_v2(p, v.as_ptr() as *const c_void, v.len() * 4));
        p
    }
}

fn download(p: u64, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    unsafe { ok(cuMemcpyDtoH_v2(v.as_mut_ptr() as *mut c_void, p, n * 4)) };
    v
}

#[test]
fn two_devices_with_names_attributes_and_memory() {
    unsafe {
        ok(cuInit(0));
        let mut n = 0;
        ok(cuDeviceGetCount(&mut n));
        assert_eq!(n, 2);
        let mut version = 0;
        ok(cuDriverGetVersion(&mut version));
        assert_eq!(version, 13000);
        for d in 0..2 {
            let mut dev = -1;
            ok(cuDeviceGet(&mut dev, d));
            let mut buf = [0i8; 64];
            ok(cuDeviceGetName(buf.as_mut_ptr(), 64, dev));
            let name = CStr::from_ptr(buf.as_ptr()).to_str().unwrap();
            assert!(name.contains(&format!("device {d}")), "{name}");
            let (mut major, mut warp) = (0, 0);
            ok(cuDeviceGetAttribute(&mut major, 75, dev));
            ok(cuDeviceGetAttribute(&mut warp, 10, dev));
            assert_eq!((major, warp), (9, 32));
            let mut total = 0usize;
            ok(cuDeviceTotalMem_v2(&mut total, dev));
            assert!(total > 0);
        }
        let mut dev = 0;
        assert_eq!(cuDeviceGet(&mut dev, 2), code::INVALID_DEVICE);
    }
}

#[test]
fn primary_contexts_are_retained_and_made_current() {
    unsafe {
        ok(cuInit(0));
        let (mut a, mut b) = (null_mut(), null_mut());
        ok(cuDevicePrimaryCtxRetain(&mut a, 1));
        ok(cuDevicePrimaryCtxRetain(&mut b, 1));
        assert_eq!(a, b, "one primary context per device");
        ok(cuCtxSetCurrent(a));
        let mut cur = null_mut();
        ok(cuCtxGetCurrent(&mut cur));
        assert_eq!(cur, a);
        let mut dev = -1;
        ok(cuCtxGetDevice(&mut dev));
        assert_eq!(dev, 1);
        ok(cuCtxSetCurrent(null_mut()));
        ok(cuCtxGetCurrent(&mut cur));
        assert!(cur.is_null());
        ok(cuDevicePrimaryCtxRelease_v2(1));
        ok(cuDevicePrimaryCtxRelease_v2(1));
    }
}

#[test]
fn a_kernel_runs_on_device_1_and_its_memory_stays_there() {
    unsafe {
        let ctx = context(1);
        let f = scale_kernel();
        let x = upload(&[1.0, 2.0, 3.0]);
        let mut ord = -1i32;
        ok(cuPointerGetAttribute(
            &mut ord as *mut i32 as *mut c_void,
            9,
            x,
        ));
        assert_eq!(ord, 1);
        ok(launch_scale(f, x, 3, 2.0, 256, null_mut()));
        ok(cuCtxSynchronize());
        assert_eq!(download(x, 3), [2.0, 4.0, 6.0]);
        ok(cuMemFree_v2(x));
        ok(cuCtxDestroy_v2(ctx));
    }
}

#[test]
fn launch_checks_the_block_against_maxntid_and_the_parameter_buffer() {
    unsafe {
        let ctx = context(0);
        let f = scale_kernel();
        let x = upload(&[1.0; 512]);
        assert_eq!(
            launch_scale(f, x, 512, 2.0, 512, null_mut()),
            code::LAUNCH_OUT_OF_RESOURCES
        );
        // The buffer form of the parameters: 8 + 4 + 4 bytes, no other size.
        let mut buf = [0u8; 16];
        buf[..8].copy_from_slice(&x.to_le_bytes());
        buf[8..12].copy_from_slice(&512u32.to_le_bytes());
        buf[12..].copy_from_slice(&3f32.to_le_bytes());
        for (size, want) in [
            (16usize, code::SUCCESS),
            (12, code::INVALID_VALUE),
            (24, code::INVALID_VALUE),
        ] {
            let mut size = size;
            let mut extra = [
                1 as H,
                buf.as_mut_ptr() as H,
                2 as H,
                &mut size as *mut usize as H,
                null_mut(),
            ];
            let r = cuLaunchKernel(
                f,
                2,
                1,
                1,
                256,
                1,
                1,
                0,
                null_mut(),
                null_mut(),
                extra.as_mut_ptr(),
            );
            assert_eq!(r, want, "size {size}: {}", name(r));
        }
        ok(cuCtxSynchronize());
        assert_eq!(download(x, 512), vec![3.0; 512]);
        ok(cuCtxDestroy_v2(ctx));
    }
}

#[test]
fn a_fault_is_sticky_for_its_context_only() {
    unsafe {
        let bad = context(0);
        let f = scale_kernel();
        let x = upload(&[1.0; 4]);
        // n = 8 over a buffer of 4: the kernel reads past the end.
        ok(launch_scale(f, x, 8, 2.0, 256, null_mut()));
        assert_eq!(cuCtxSynchronize(), code::ILLEGAL_ADDRESS);
        let mut p = 0;
        assert_eq!(cuMemAlloc_v2(&mut p, 16), code::ILLEGAL_ADDRESS, "sticky");
        // Another context works on.
        let good = context(0);
        let y = upload(&[1.0; 4]);
        ok(launch_scale(scale_kernel(), y, 4, 2.0, 256, null_mut()));
        ok(cuCtxSynchronize());
        assert_eq!(download(y, 4), [2.0; 4]);
        ok(cuCtxDestroy_v2(good));
        ok(cuCtxDestroy_v2(bad));
    }
}

#[test]
fn streams_run_in_order_and_events_order_streams() {
    unsafe {
        let ctx = context(0);
        let f = scale_kernel();
        let (mut s1, mut s2) = (null_mut(), null_mut());
        ok(cuStreamCreate(&mut s1, 1));
        ok(cuStreamCreate(&mut s2, 1));
        let x = upload(&[1.0; 100]);
        // On s1: ×2 then ×3; s2 waits for s1's event, then adds nothing but
        // a ×5; all on x, so the order shows in the result only if kept.
        ok(launch_scale(f, x, 100, 2.0, 128, s1));
        ok(launch_scale(f, x, 100, 3.0, 128, s1));
        let mut e = null_mut();
        ok(cuEventCreate(&mut e, 0));
        ok(cuEventRecord(e, s1));
        ok(cuStreamWaitEvent(s2, e, 0));
        ok(launch_scale(f, x, 100, 5.0, 128, s2));
        ok(cuStreamSynchronize(s2));
        ok(cuEventQuery(e));
        assert_eq!(download(x, 100), vec![30.0; 100]);
        let mut ms = 0f32;
        let mut e2 = null_mut();
        ok(cuEventCreate(&mut e2, 0));
        ok(cuEventRecord(e2, s2));
        ok(cuEventSynchronize(e2));
        ok(cuEventElapsedTime(&mut ms, e, e2));
        assert!(ms >= 0.0);
        for h in [e, e2] {
            ok(cuEventDestroy_v2(h));
        }
        ok(cuStreamDestroy_v2(s1));
        ok(cuStreamDestroy_v2(s2));
        ok(cuCtxDestroy_v2(ctx));
    }
}

#[test]
fn memory_copies_and_memsets() {
    unsafe {
        let ctx = context(0);
        let mut s = null_mut();
        ok(cuStreamCreate(&mut s, 1));
        let (mut a, mut b) = (0u64, 0u64);
        ok(cuMemAllocAsync(&mut a, 64, s));
        ok(cuMemAllocAsync(&mut b, 64, s));
        ok(cuMemsetD32Async(a, 0x3f80_0000, 16, s));
        ok(cuMemcpyDtoDAsync_v2(b, a, 64, s));
        ok(cuMemsetD8Async(b, 0, 4, s));
        let mut out = [7f32; 16];
        // Into pageable memory: done when the call returns.
        ok(cuMemcpyDtoHAsync_v2(
            out.as_mut_ptr() as *mut c_void,
            b,
            64,
            s,
        ));
        assert_eq!(out[0], 0.0);
        assert!(out[1..].iter().all(|&v| v == 1.0));
        ok(cuMemFreeAsync(a, s));
        ok(cuMemFreeAsync(b, s));
        // A free of what is not an allocation's start.
        assert_eq!(cuMemFreeAsync(b + 4, s), code::INVALID_VALUE);
        // Zero bytes: the driver refuses an empty allocation.
        let mut p = 0;
        assert_eq!(cuMemAlloc_v2(&mut p, 0), code::INVALID_VALUE);
        ok(cuStreamDestroy_v2(s));
        ok(cuCtxDestroy_v2(ctx));
    }
}

#[test]
fn a_free_on_another_stream_runs_before_queued_work_and_is_caught() {
    unsafe {
        let ctx = context(0);
        let f = scale_kernel();
        let mut s = null_mut();
        ok(cuStreamCreate(&mut s, 1)); // non-blocking: not ordered with the legacy stream
        let x = upload(&[1.0; 64]);
        ok(launch_scale(f, x, 64, 2.0, 64, s));
        // Freed on the legacy stream, which does not wait for `s`: the
        // kernel still queued on `s` then meets freed memory.
        ok(cuMemFreeAsync(x, null_mut()));
        assert_eq!(cuStreamSynchronize(s), code::ILLEGAL_ADDRESS);
        ok(cuCtxDestroy_v2(ctx));
    }
}

#[test]
fn the_legacy_stream_waits_for_blocking_streams() {
    unsafe {
        let ctx = context(0);
        let f = scale_kernel();
        let mut s = null_mut();
        ok(cuStreamCreate(&mut s, 0)); // blocking
        let x = upload(&[1.0; 64]);
        ok(launch_scale(f, x, 64, 2.0, 64, s));
        // The legacy stream waits for `s`, so the free comes after the kernel.
        ok(cuMemFreeAsync(x, null_mut()));
        ok(cuStreamSynchronize(s));
        ok(cuCtxSynchronize());
        ok(cuCtxDestroy_v2(ctx));
    }
}

#[test]
fn counters_see_syncs_allocations_and_launches() {
    unsafe {
        let ctx = context(0);
        let f = scale_kernel();
        let mut s = null_mut();
        ok(cuStreamCreate(&mut s, 1));
        let x = upload(&[1.0; 64]);
        let mut before = Counters::default();
        ok(cuEmuGetCounters(&mut before, 1));
        ok(launch_scale(f, x, 64, 2.0, 64, s));
        let mut mid = Counters::default();
        ok(cuEmuGetCounters(&mut mid, 1));
        assert_eq!(mid.launches - before.launches, 1);
        assert_eq!(
            (mid.host_syncs, mid.allocations),
            (before.host_syncs, before.allocations)
        );
        ok(cuStreamSynchronize(s));
        let mut after = Counters::default();
        ok(cuEmuGetCounters(&mut after, 1));
        assert_eq!(after.host_syncs - mid.host_syncs, 1);
        assert!(after.instructions > mid.instructions);
        ok(cuCtxDestroy_v2(ctx));
    }
}

#[test]
fn errors_have_names_and_strings_and_unemulated_calls_say_so() {
    unsafe {
        let mut p = std::ptr::null();
        ok(cuGetErrorString(code::NOT_SUPPORTED, &mut p));
        assert_eq!(
            CStr::from_ptr(p).to_str().unwrap(),
            "operation not supported"
        );
        ok(cuGetErrorName(code::ILLEGAL_ADDRESS, &mut p));
        assert_eq!(
            CStr::from_ptr(p).to_str().unwrap(),
            "CUDA_ERROR_ILLEGAL_ADDRESS"
        );
        assert_eq!(cuGetErrorName(12345, &mut p), code::INVALID_VALUE);
        // A generated stub: graphs are not emulated.
        let stub: unsafe extern "C" fn() -> u32 = cuda_emu_stub_graph_create();
        assert_eq!(stub(), code::NOT_SUPPORTED);
    }
}

/// `cuGraphCreate`, one of the entry points only stubbed.
fn cuda_emu_stub_graph_create() -> unsafe extern "C" fn() -> u32 {
    unsafe extern "C" {
        fn cuGraphCreate() -> u32;
    }
    cuGraphCreate
}

#[test]
fn a_module_that_does_not_parse_is_invalid_ptx() {
    unsafe {
        let ctx = context(0);
        let src =
            c".version 9.0\n.target sm_75\n.address_size 64\n.visible .entry k() { nonsense; }";
        let mut m = null_mut();
        assert_eq!(
            cuModuleLoadData(&mut m, src.as_ptr() as *const c_void),
            code::INVALID_PTX
        );
        let new = c".version 9.9\n.target sm_75\n.address_size 64\n";
        assert_eq!(
            cuModuleLoadData(&mut m, new.as_ptr() as *const c_void),
            code::UNSUPPORTED_PTX_VERSION
        );
        ok(cuCtxDestroy_v2(ctx));
    }
}

#[test]
fn an_overlapping_copy_is_refused() {
    unsafe {
        let ctx = context(0);
        let x = upload(&[1.0; 16]);
        assert_eq!(cuMemcpyDtoD_v2(x + 4, x, 32), code::INVALID_VALUE);
        ok(cuMemcpyDtoD_v2(x + 32, x, 32));
        ok(cuCtxDestroy_v2(ctx));
    }
}

#[test]
fn streams_and_contexts_have_unique_ids() {
    unsafe {
        let a = context(0);
        let (mut s1, mut s2) = (null_mut(), null_mut());
        ok(cuStreamCreate(&mut s1, 1));
        ok(cuStreamCreate(&mut s2, 1));
        let (mut i1, mut i2, mut legacy, mut mine) = (0u64, 0u64, 0u64, 0u64);
        ok(cuStreamGetId(s1, &mut i1));
        ok(cuStreamGetId(s2, &mut i2));
        ok(cuStreamGetId(null_mut(), &mut legacy));
        ok(cuStreamGetId(2 as H, &mut mine));
        assert!(i1 != i2 && legacy != i1 && mine != legacy);
        // The per-thread default stream is another stream on another thread.
        let a_handle = a as usize;
        let theirs = std::thread::spawn(move || {
            let mut id = 0u64;
            ok(cuCtxSetCurrent(a_handle as H));
            ok(cuStreamGetId(2 as H, &mut id));
            id
        })
        .join()
        .unwrap();
        assert_ne!(theirs, mine);
        // A destroyed stream's id is never handed on.
        ok(cuStreamDestroy_v2(s1));
        let mut s3 = null_mut();
        ok(cuStreamCreate(&mut s3, 1));
        let mut i3 = 0u64;
        ok(cuStreamGetId(s3, &mut i3));
        assert!(i3 != i1);
        let (mut c1, mut c2) = (0u64, 0u64);
        ok(cuCtxGetId(a, &mut c1));
        let b = context(0);
        ok(cuCtxGetId(b, &mut c2));
        assert_ne!(c1, c2);
        let mut owner = null_mut();
        ok(cuStreamGetCtx(s3, &mut owner));
        assert_eq!(owner, a, "s3 was made while a was current");
        ok(cuCtxDestroy_v2(b));
        ok(cuCtxDestroy_v2(a));
    }
}

#[test]
fn global_variables_are_placed_initialized_and_found() {
    unsafe {
        let ctx = context(0);
        let src = c".version 8.0
.target sm_75
.address_size 64
.global .align 4 .u32 counter = 41;
.global .align 8 .b8 table[16] = {1, 2, 3};
.visible .entry bump(.param .u64 pout)
{
    .reg .b32 %r<3>;
    .reg .b64 %rd<3>;
    ld.param.u64 %rd1, [pout];
    ld.global.u32 %r1, [counter];
    add.s32 %r1, %r1, 1;
    st.global.u32 [counter], %r1;
    mov.u64 %rd2, table;
    ld.global.u8 %r2, [%rd2+2];
    add.s32 %r1, %r1, %r2;
    st.global.u32 [%rd1], %r1;
    ret;
}";
        let mut m = null_mut();
        ok(cuModuleLoadData(&mut m, src.as_ptr() as *const c_void));
        let mut f = null_mut();
        ok(cuModuleGetFunction(&mut f, m, c"bump".as_ptr()));
        let mut out = 0u64;
        ok(cuMemAlloc_v2(&mut out, 4));
        let mut p = out;
        let mut params = [&mut p as *mut u64 as *mut c_void];
        ok(cuLaunchKernel(
            f,
            1,
            1,
            1,
            1,
            1,
            1,
            0,
            null_mut(),
            params.as_mut_ptr(),
            null_mut(),
        ));
        let mut got = 0u32;
        ok(cuMemcpyDtoH_v2(&mut got as *mut u32 as *mut c_void, out, 4));
        assert_eq!(got, 42 + 3);
        let (mut g, mut size) = (0u64, 0usize);
        ok(cuModuleGetGlobal_v2(
            &mut g,
            &mut size,
            m,
            c"counter".as_ptr(),
        ));
        assert_eq!(size, 4);
        let mut counter = 0u32;
        ok(cuMemcpyDtoH_v2(
            &mut counter as *mut u32 as *mut c_void,
            g,
            4,
        ));
        assert_eq!(counter, 42);
        assert_eq!(
            cuModuleGetGlobal_v2(&mut g, &mut size, m, c"absent".as_ptr()),
            code::NOT_FOUND
        );
        ok(cuModuleUnload(m));
        ok(cuCtxDestroy_v2(ctx));
    }
}

#[test]
fn streams_that_share_memory_unordered_meet_each_others_writes() {
    unsafe {
        let ctx = context(0);
        let (mut a, mut b) = (null_mut(), null_mut());
        ok(cuStreamCreate(&mut a, 1));
        ok(cuStreamCreate(&mut b, 1));
        let (mut scratch, mut out_a, mut out_b) = (0u64, 0u64, 0u64);
        for p in [&mut scratch, &mut out_a, &mut out_b] {
            ok(cuMemAlloc_v2(p, 4));
        }
        // Each stream fills the scratch and copies it out; nothing orders
        // the two, and the streams take turns, so a's copy sees b's fill.
        ok(cuMemsetD32Async(scratch, 1, 1, a));
        ok(cuMemsetD32Async(scratch, 2, 1, b));
        ok(cuMemcpyDtoDAsync_v2(out_a, scratch, 4, a));
        ok(cuMemcpyDtoDAsync_v2(out_b, scratch, 4, b));
        ok(cuCtxSynchronize());
        let (mut va, mut vb) = (0u32, 0u32);
        ok(cuMemcpyDtoH_v2(
            &mut va as *mut u32 as *mut c_void,
            out_a,
            4,
        ));
        ok(cuMemcpyDtoH_v2(
            &mut vb as *mut u32 as *mut c_void,
            out_b,
            4,
        ));
        assert_eq!((va, vb), (2, 2));
        ok(cuCtxDestroy_v2(ctx));
    }
}
