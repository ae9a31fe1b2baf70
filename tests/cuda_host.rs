//! The CUDA host path under real use: the context a call runs in and the
//! caller's current context after it, per-thread default streams from two
//! threads, workspace lifetimes against queued work, streams of another
//! context, `noop` in place, and calls that neither wait for the device nor
//! allocate once their workspace is sized.
//!
//! CUDA only (each body needs a device): on the emulated device
//! (`scripts/emulated-cuda.sh`), whose memory checker and schedule make the
//! bugs these guard against fail loudly, and on a GPU in the GPU check.

mod harness;

// The C ABI's crate (capi/) builds only the C libraries: an rlib of their
// name would collide with lowbit's. Its source is compiled into this test,
// over the same lowbit as the rest of the test.
#[cfg(lowbit_cuda)]
#[allow(dead_code)]
#[path = "../capi/src/lib.rs"]
mod capi;

#[cfg(lowbit_cuda)]
mod cuda {
    use std::ffi::{c_int, c_void};
    use std::sync::{Arc, Barrier};

    use crate::capi::*;
    use cudarc::driver::{CudaContext, CudaStream, DevicePtr, DevicePtrMut, result, sys};
    use lowbit::cuda::{Cuda, Workspace};
    use lowbit::{Backend, DType, Error, Quantizer};

    type R = Result<(), String>;

    fn err(e: impl std::fmt::Debug) -> String {
        format!("{e:?}")
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }

    /// A C ABI handle for `spec`, freed on drop.
    struct Handle(*mut lowbit_quantizer);

    impl Handle {
        fn new(spec: &str) -> Self {
            let c = std::ffi::CString::new(spec).unwrap();
            let mut q = std::ptr::null_mut();
            // SAFETY: a NUL-terminated spec and an out-pointer.
            let st = unsafe { lowbit_quantizer_new(c.as_ptr(), &mut q) };
            assert_eq!(st, lowbit_status::LOWBIT_OK, "{spec}");
            Handle(q)
        }
    }

    impl Drop for Handle {
        fn drop(&mut self) {
            // SAFETY: a handle from lowbit_quantizer_new.
            unsafe { lowbit_quantizer_free(self.0) };
        }
    }

    fn current() -> Option<sys::CUcontext> {
        result::ctx::get_current().unwrap()
    }

    fn last_error() -> String {
        // SAFETY: lowbit's per-thread message.
        unsafe { std::ffi::CStr::from_ptr(lowbit_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    /// `lowbit_forward_device` (or backward with `dy`) on f32 device pointers.
    fn c_call(
        q: &Handle,
        x: u64,
        dy: Option<u64>,
        out: u64,
        shape: &[usize],
        stream: sys::CUstream,
    ) -> R {
        // SAFETY: device pointers of `shape`'s size, a live stream.
        let st = unsafe {
            match dy {
                None => lowbit_forward_device(
                    q.0,
                    LOWBIT_F32,
                    x as *const c_void,
                    out as *mut c_void,
                    shape.as_ptr(),
                    shape.len(),
                    stream.cast(),
                ),
                Some(dy) => lowbit_backward_device(
                    q.0,
                    LOWBIT_F32,
                    x as *const c_void,
                    dy as *const c_void,
                    out as *mut c_void,
                    shape.as_ptr(),
                    shape.len(),
                    stream.cast(),
                ),
            }
        };
        if st == lowbit_status::LOWBIT_OK {
            Ok(())
        } else {
            Err(format!("{st:?}: {}", last_error()))
        }
    }

    fn same(what: &str, got: &[f32], want: &[f32]) -> R {
        match got
            .iter()
            .zip(want)
            .position(|(g, w)| g.to_bits() != w.to_bits() && !(g.is_nan() && w.is_nan()))
        {
            None => Ok(()),
            Some(i) => Err(format!(
                "{what}: [{i}] = {}, the CPU gives {}",
                got[i], want[i]
            )),
        }
    }

    /// A context that is not the thread's current one: another device's
    /// where there are two, else a second context on device 0.
    fn elsewhere() -> Result<Arc<CudaContext>, String> {
        let n = CudaContext::device_count().map_err(err)?;
        if n > 1 {
            CudaContext::new(n as usize - 1).map_err(err)
        } else {
            CudaContext::new_non_primary(0, 0).map_err(err)
        }
    }

    pub fn c_abi_runs_in_the_streams_context_and_restores_the_callers(_: &Backend) -> R {
        let q = Handle::new("magnitude_aware_sign");
        let qq: Quantizer = "magnitude_aware_sign".parse().unwrap();
        let shape = [37, 29];
        let x = data(37 * 29, 3);
        let want = qq.forward_vec(&x, &shape).map_err(err)?;
        let other = elsewhere()?;
        let stream = other.new_stream().map_err(err)?;
        let xd = stream.clone_htod(&x).map_err(err)?;
        let mut yd = stream.alloc_zeros::<f32>(x.len()).map_err(err)?;
        let (xp, yp) = (xd.device_ptr(&stream).0, yd.device_ptr_mut(&stream).0);
        // The caller's current context is device 0's primary one.
        let home = CudaContext::new(0).map_err(err)?;
        home.bind_to_thread().map_err(err)?;
        c_call(&q, xp, None, yp, &shape, stream.cu_stream())?;
        if current() != Some(home.cu_ctx()) {
            return Err("the caller's current context moved".into());
        }
        stream.synchronize().map_err(err)?;
        same(
            "on the stream's context",
            &stream.clone_dtoh(&yd).map_err(err)?,
            &want,
        )?;
        // A thread with no current context, the legacy stream: the device
        // of the pointers (only another device's primary context serves).
        if CudaContext::device_count().map_err(err)? > 1 {
            stream.memset_zeros(&mut yd).map_err(err)?;
            stream.synchronize().map_err(err)?;
            // SAFETY: no context current, as a fresh thread has it.
            unsafe { sys::cuCtxSetCurrent(std::ptr::null_mut()) }
                .result()
                .map_err(err)?;
            c_call(&q, xp, None, yp, &shape, std::ptr::null_mut())?;
            if current().is_some() {
                return Err("a context was left current".into());
            }
            other.synchronize().map_err(err)?;
            same(
                "on the pointers' device",
                &stream.clone_dtoh(&yd).map_err(err)?,
                &want,
            )?;
        }
        Ok(())
    }

    pub fn per_thread_streams_from_two_threads_reduce_apart(_: &Backend) -> R {
        const CU_STREAM_PER_THREAD: usize = 2;
        let specs = [
            "ste_tern(ternary_weight_networks=true)",
            "magnitude_aware_sign",
            "dorefa(k_bit=3, mode=weights)",
        ];
        let barrier = Arc::new(Barrier::new(2));
        let workers: Vec<_> = (0..2u32)
            .map(|t| {
                let barrier = barrier.clone();
                std::thread::spawn(move || -> R {
                    let ctx = CudaContext::new(0).map_err(err)?;
                    ctx.bind_to_thread().map_err(err)?;
                    let stream = ctx.per_thread_stream();
                    for (i, spec) in specs.iter().enumerate() {
                        let q = Handle::new(spec);
                        let qq: Quantizer = spec.parse().unwrap();
                        // Each thread its own data: a shared workspace would
                        // give one thread the other's scale or threshold.
                        let shape = [41, 67];
                        let x = data(41 * 67, 10 * t + i as u32 + 1);
                        let xd = stream.clone_htod(&x).map_err(err)?;
                        let mut yd = stream.alloc_zeros::<f32>(x.len()).map_err(err)?;
                        stream.synchronize().map_err(err)?;
                        let (xp, yp) = (xd.device_ptr(&stream).0, yd.device_ptr_mut(&stream).0);
                        c_call(
                            &q,
                            xp,
                            None,
                            yp,
                            &shape,
                            CU_STREAM_PER_THREAD as sys::CUstream,
                        )?;
                        // Both threads' work is queued before either waits.
                        barrier.wait();
                        stream.synchronize().map_err(err)?;
                        let want = qq.forward_vec(&x, &shape).map_err(err)?;
                        same(
                            &format!("thread {t}, {spec}"),
                            &stream.clone_dtoh(&yd).map_err(err)?,
                            &want,
                        )?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| "a thread panicked".to_string())??;
        }
        Ok(())
    }

    pub fn a_workspace_dropped_after_a_raw_call_outlives_the_work(b: &Backend) -> R {
        let cuda = b.as_cuda().ok_or("no CUDA backend")?;
        let q: Quantizer = "ste_tern(ternary_weight_networks=true)".parse().unwrap();
        let shape = [100_003];
        let x = data(shape[0], 7);
        let stream = cuda.context().new_stream().map_err(err)?;
        let xd = stream.clone_htod(&x).map_err(err)?;
        let mut yd = stream.alloc_zeros::<f32>(x.len()).map_err(err)?;
        stream.synchronize().map_err(err)?;
        let (xp, yp) = (xd.device_ptr(&stream).0, yd.device_ptr_mut(&stream).0);
        let need = Cuda::workspace_bytes(&q, &shape, false).map_err(err)?;
        let mut ws = Workspace::new();
        // SAFETY: pointers of `shape`'s size on `stream`, which outlives `ws`.
        unsafe {
            ws.reserve_raw(cuda, stream.cu_stream(), need)
                .map_err(err)?;
            cuda.forward_raw(&q, DType::F32, stream.cu_stream(), xp, &shape, yp, &ws)
                .map_err(err)?;
        }
        // The kernels are still queued: the free must wait for them.
        drop(ws);
        stream.synchronize().map_err(err)?;
        same(
            "after the drop",
            &stream.clone_dtoh(&yd).map_err(err)?,
            &q.forward_vec(&x, &shape).map_err(err)?,
        )
    }

    pub fn a_stream_of_another_context_is_refused(b: &Backend) -> R {
        let cuda = b.as_cuda().ok_or("no CUDA backend")?;
        let q: Quantizer = "magnitude_aware_sign".parse().unwrap();
        let other = elsewhere()?;
        let stream = other.new_stream().map_err(err)?;
        let xd = stream.clone_htod(&data(64, 1)).map_err(err)?;
        let mut yd = stream.alloc_zeros::<f32>(64).map_err(err)?;
        let mut ws = Workspace::new();
        match cuda.forward(
            &q,
            &stream,
            &xd.as_view(),
            &[8, 8],
            &mut yd.as_view_mut(),
            &mut ws,
        ) {
            Err(Error::StreamContext(_)) => {}
            other => return Err(format!("a foreign stream gave {other:?}")),
        }
        if ws.capacity() != 0 {
            return Err("the workspace grew before the refusal".into());
        }
        let (xp, yp) = (xd.device_ptr(&stream).0, yd.device_ptr_mut(&stream).0);
        // SAFETY: live pointers and stream; the call must refuse them.
        let raw =
            unsafe { cuda.forward_raw(&q, DType::F32, stream.cu_stream(), xp, &[8, 8], yp, &ws) };
        match raw {
            Err(Error::StreamContext(_)) => {}
            other => return Err(format!("a foreign raw stream gave {other:?}")),
        }
        if stream
            .clone_dtoh(&yd)
            .map_err(err)?
            .iter()
            .any(|&v| v != 0.0)
        {
            return Err("a refused call wrote".into());
        }
        Ok(())
    }

    pub fn noop_in_place_copies_nothing(b: &Backend) -> R {
        let cuda = b.as_cuda().ok_or("no CUDA backend")?;
        let stream = cuda.context().new_stream().map_err(err)?;
        let x = data(1000, 5);
        let mut xd = stream.clone_htod(&x).map_err(err)?;
        stream.synchronize().map_err(err)?;
        let xp = xd.device_ptr_mut(&stream).0;
        let q = Handle::new("noop(precision=32)");
        c_call(&q, xp, None, xp, &[1000], stream.cu_stream())?;
        stream.synchronize().map_err(err)?;
        same("in place", &stream.clone_dtoh(&xd).map_err(err)?, &x)?;
        // Overlapping but not the same memory is refused, and writes nothing.
        match c_call(&q, xp, None, xp + 4, &[999], stream.cu_stream()) {
            Err(e) if e.contains("overlaps") => {}
            other => return Err(format!("an overlapping noop gave {other:?}")),
        }
        stream.synchronize().map_err(err)?;
        same(
            "after the refusal",
            &stream.clone_dtoh(&xd).map_err(err)?,
            &x,
        )
    }

    /// The emulator's counters of what the host asked for (cuda-emu's
    /// `cuEmuGetCounters`), where the driver is the emulated one.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    struct Counters {
        launches: u64,
        host_syncs: u64,
        allocations: u64,
        frees: u64,
        legacy_stream_ops: u64,
        events_recorded: u64,
        module_loads: u64,
        instructions: u64,
    }

    type GetCounters = unsafe extern "C" fn(*mut Counters, c_int) -> u32;

    fn emulator_counters() -> Option<(libloading::Library, GetCounters)> {
        // SAFETY: the driver library lowbit already loaded; only looked up.
        let lib = unsafe { libloading::Library::new("libcuda.so") }.ok()?;
        // SAFETY: the emulator's signature; absent from a real driver.
        let f = unsafe { lib.get::<GetCounters>(b"cuEmuGetCounters") }
            .ok()
            .map(|s| *s)?;
        Some((lib, f))
    }

    const SPECS: [&str; 4] = [
        "ste_sign",
        "ste_tern(ternary_weight_networks=true)",
        "magnitude_aware_sign",
        "dorefa(k_bit=2, mode=weights)",
    ];

    /// The buffers of `calls`: x and dy, and an output each for the C ABI
    /// and for the views.
    struct Bufs {
        x: cudarc::driver::CudaSlice<f32>,
        dy: cudarc::driver::CudaSlice<f32>,
        y: cudarc::driver::CudaSlice<f32>,
        y_views: cudarc::driver::CudaSlice<f32>,
    }

    pub fn calls_on_device_buffers_neither_wait_nor_allocate(b: &Backend) -> R {
        let cuda = b.as_cuda().ok_or("no CUDA backend")?;
        let shape = [64, 129];
        let n = 64 * 129;
        let stream = cuda.context().new_stream().map_err(err)?;
        let mut bufs = Bufs {
            x: stream.clone_htod(&data(n, 1)).map_err(err)?,
            dy: stream.clone_htod(&data(n, 2)).map_err(err)?,
            y: stream.alloc_zeros::<f32>(n).map_err(err)?,
            y_views: stream.alloc_zeros::<f32>(n).map_err(err)?,
        };
        let mut ws = Workspace::new();
        // Sized ahead: the C ABI's workspace for `stream`, and the views'.
        for spec in SPECS {
            let h = Handle::new(spec);
            // SAFETY: a handle, a shape, a live stream.
            let st = unsafe {
                lowbit_reserve_workspace_device(h.0, shape.as_ptr(), 2, stream.cu_stream().cast())
            };
            if st != lowbit_status::LOWBIT_OK {
                return Err(format!("reserve: {st:?}: {}", last_error()));
            }
            let q: Quantizer = spec.parse().unwrap();
            for backward in [false, true] {
                let need = Cuda::workspace_bytes(&q, &shape, backward).map_err(err)?;
                ws.reserve(cuda, &stream, need).map_err(err)?;
            }
        }
        stream.synchronize().map_err(err)?;
        match emulator_counters() {
            Some((_lib, get)) => {
                let read = || {
                    let mut c = Counters::default();
                    // SAFETY: an out-pointer; this thread's counters.
                    unsafe { get(&mut c, 1) };
                    c
                };
                let before = read();
                calls(cuda, &stream, &mut ws, &mut bufs, &shape)?;
                let after = read();
                let what = [
                    (
                        "host synchronizations",
                        after.host_syncs - before.host_syncs,
                    ),
                    ("allocations", after.allocations - before.allocations),
                    ("frees", after.frees - before.frees),
                    (
                        "work on the legacy stream",
                        after.legacy_stream_ops - before.legacy_stream_ops,
                    ),
                ];
                for (name, count) in what {
                    if count != 0 {
                        return Err(format!("{count} {name} in {} calls", 4 * SPECS.len()));
                    }
                }
                if after.launches == before.launches {
                    return Err("the calls launched nothing".into());
                }
                stream.synchronize().map_err(err)
            }
            // A real driver: the same calls captured into a CUDA graph,
            // which fails if one of them waits or allocates; then replayed.
            None => {
                let cs = stream.cu_stream();
                // SAFETY: a live stream, captured on this thread only.
                unsafe {
                    sys::cuStreamBeginCapture_v2(
                        cs,
                        sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
                    )
                    .result()
                    .map_err(err)?;
                }
                let captured = calls(cuda, &stream, &mut ws, &mut bufs, &shape);
                let mut graph = std::ptr::null_mut();
                // SAFETY: ends the capture begun above.
                let ended = unsafe { sys::cuStreamEndCapture(cs, &mut graph) }.result();
                captured?;
                ended.map_err(|e| {
                    format!("the capture failed (a call waited or allocated?): {e:?}")
                })?;
                let mut exec = std::ptr::null_mut();
                // SAFETY: the captured graph.
                unsafe {
                    sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0)
                        .result()
                        .map_err(err)?;
                    sys::cuGraphLaunch(exec, cs).result().map_err(err)?;
                }
                stream.synchronize().map_err(err)
            }
        }
    }

    /// A cudarc stream's kernels and workspace (what `lowbit::candle` runs
    /// candle's CUDA tensors with) are made once: the kernels per context,
    /// the workspace per stream; and a call through them on a view at an
    /// offset gives the CPU's bits.
    pub fn a_cudarc_streams_kernels_and_workspace_are_kept(_: &Backend) -> R {
        let ctx = CudaContext::new(0).map_err(err)?;
        let (s1, s2) = (
            ctx.new_stream().map_err(err)?,
            ctx.new_stream().map_err(err)?,
        );
        let (k1, w1) = lowbit::ffi::for_stream(&s1).map_err(err)?;
        let (k1_again, w1_again) = lowbit::ffi::for_stream(&s1).map_err(err)?;
        let (k2, w2) = lowbit::ffi::for_stream(&s2).map_err(err)?;
        if !Arc::ptr_eq(&k1, &k1_again) || !Arc::ptr_eq(&k1, &k2) {
            return Err("the kernels were loaded again for the same context".into());
        }
        if !Arc::ptr_eq(&w1, &w1_again) || Arc::ptr_eq(&w1, &w2) {
            return Err("not one workspace per stream".into());
        }

        // A reduction (max |tanh x|, whose order does not change its bits)
        // that needs the workspace.
        let q: Quantizer = "dorefa(mode=weights)".parse().unwrap();
        let (rows, channels, offset) = (37, 24, 5);
        let host = data(offset + rows * channels, 11);
        let want = q
            .forward_vec(&host[offset..], &[rows, channels])
            .map_err(err)?;
        let x = s1.clone_htod(&host).map_err(err)?;
        let mut y = s1.alloc_zeros::<f32>(rows * channels).map_err(err)?;
        let mut ws = w1.lock().unwrap();
        k1.forward(
            &q,
            &s1,
            &x.slice(offset..),
            &[rows, channels],
            &mut y.slice_mut(..),
            &mut ws,
        )
        .map_err(err)?;
        if ws.capacity() == 0 {
            return Err("the reduction did not grow the stream's workspace".into());
        }
        let got = s1.clone_dtoh(&y).map_err(err)?;
        if got
            .iter()
            .map(|v| v.to_bits())
            .ne(want.iter().map(|v| v.to_bits()))
        {
            return Err("the offset view's result is not the CPU's".into());
        }
        Ok(())
    }

    /// Every spec's forward and backward through the C ABI and the cudarc
    /// views, on `stream`.
    fn calls(
        cuda: &Cuda,
        stream: &Arc<CudaStream>,
        ws: &mut Workspace,
        bufs: &mut Bufs,
        shape: &[usize],
    ) -> R {
        let xp = bufs.x.device_ptr(stream).0;
        let dyp = bufs.dy.device_ptr(stream).0;
        let yp = bufs.y.device_ptr_mut(stream).0;
        for spec in SPECS {
            let h = Handle::new(spec);
            let q: Quantizer = spec.parse().unwrap();
            c_call(&h, xp, None, yp, shape, stream.cu_stream())?;
            c_call(&h, xp, Some(dyp), yp, shape, stream.cu_stream())?;
            let (x, dy, y) = (&bufs.x, &bufs.dy, &mut bufs.y_views);
            cuda.forward(&q, stream, &x.as_view(), shape, &mut y.as_view_mut(), ws)
                .map_err(err)?;
            cuda.backward(
                &q,
                stream,
                &x.as_view(),
                &dy.as_view(),
                shape,
                &mut y.as_view_mut(),
                ws,
            )
            .map_err(err)?;
        }
        Ok(())
    }
}

fn main() {
    #[cfg(lowbit_cuda)]
    harness::run(vec![
        (
            "c_abi_runs_in_the_streams_context_and_restores_the_callers",
            cuda::c_abi_runs_in_the_streams_context_and_restores_the_callers,
            true,
        ),
        (
            "per_thread_streams_from_two_threads_reduce_apart",
            cuda::per_thread_streams_from_two_threads_reduce_apart,
            true,
        ),
        (
            "a_workspace_dropped_after_a_raw_call_outlives_the_work",
            cuda::a_workspace_dropped_after_a_raw_call_outlives_the_work,
            true,
        ),
        (
            "a_stream_of_another_context_is_refused",
            cuda::a_stream_of_another_context_is_refused,
            true,
        ),
        (
            "noop_in_place_copies_nothing",
            cuda::noop_in_place_copies_nothing,
            true,
        ),
        (
            "a_cudarc_streams_kernels_and_workspace_are_kept",
            cuda::a_cudarc_streams_kernels_and_workspace_are_kept,
            true,
        ),
        (
            "calls_on_device_buffers_neither_wait_nor_allocate",
            cuda::calls_on_device_buffers_neither_wait_nor_allocate,
            true,
        ),
    ]);
    #[cfg(not(lowbit_cuda))]
    harness::run(vec![]);
}
