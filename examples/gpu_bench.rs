//! GPU bandwidth of every quantizer, forward and backward, in f32, f16 and
//! bf16, as a fraction of a device-to-device copy measured in the same run.
//!
//! `cargo run --release --example gpu_bench` (needs the kernels built in and
//! a CUDA device). `LOWBIT_BENCH_ELEMENTS` sets the size (default 2^28);
//! output is one tab-separated line per measurement, then the copy ceiling.
//! Bytes counted: forward reads x and writes y, backward reads x and dy and
//! writes dx; the copy counts bytes read plus bytes written.

#[cfg(not(lowbit_cuda))]
fn main() {
    eprintln!("gpu_bench: lowbit was built without CUDA kernels (no nvcc at build time)");
    std::process::exit(2);
}

#[cfg(lowbit_cuda)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    bench::run()
}

#[cfg(lowbit_cuda)]
mod bench {
    use std::sync::Arc;

    use cudarc::driver::{CudaSlice, CudaStream, sys::CUevent_flags};
    use lowbit::cuda::{Cuda, Workspace};
    use lowbit::{Element, Quantizer, bf16, f16};

    const SPECS: &[&str] = &[
        "ste_sign",
        "approx_sign",
        "swish_sign",
        "ste_heaviside",
        "magnitude_aware_sign",
        "ste_tern",
        "ste_tern(ternary_weight_networks=true)",
        "dorefa(k_bit=2)",
        "dorefa(k_bit=2, mode=weights)",
        "noop(precision=32)",
    ];
    const REPEATS: usize = 15;

    type Res<T> = Result<T, Box<dyn std::error::Error>>;

    /// Median milliseconds of `f` over REPEATS timed runs after one warm-up.
    fn time(stream: &Arc<CudaStream>, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
        f()?;
        let mut ms = Vec::with_capacity(REPEATS);
        for _ in 0..REPEATS {
            let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
            f()?;
            let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
            end.synchronize()?;
            ms.push(f64::from(start.elapsed_ms(&end)?));
        }
        ms.sort_by(f64::total_cmp);
        Ok(ms[REPEATS / 2])
    }

    fn fill<T: Element>(n: usize, seed: u32) -> Vec<T> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                T::from_f32((s >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0)
            })
            .collect()
    }

    fn dtype<T: Element>(
        cuda: &Cuda,
        stream: &Arc<CudaStream>,
        n: usize,
        copy_gbs: f64,
    ) -> Res<()> {
        let x: CudaSlice<T> = stream.clone_htod(&fill::<T>(n, 1))?;
        let dy: CudaSlice<T> = stream.clone_htod(&fill::<T>(n, 2))?;
        // SAFETY: written by every kernel before it is read.
        let mut out: CudaSlice<T> = unsafe { stream.alloc(n) }?;
        let mut ws = Workspace::new();
        let shape = [n / 64, 64];
        let size = std::mem::size_of::<T>() as f64;
        for spec in SPECS {
            let q: Quantizer = spec.parse()?;
            let fwd = time(stream, || {
                cuda.forward(
                    &q,
                    stream,
                    &x.as_view(),
                    &shape,
                    &mut out.as_view_mut(),
                    &mut ws,
                )?;
                Ok(())
            })?;
            let bwd = time(stream, || {
                cuda.backward(
                    &q,
                    stream,
                    &x.as_view(),
                    &dy.as_view(),
                    &shape,
                    &mut out.as_view_mut(),
                    &mut ws,
                )?;
                Ok(())
            })?;
            for (dir, ms, streams) in [("fwd", fwd, 2.0), ("bwd", bwd, 3.0)] {
                let gbs = streams * size * n as f64 / (ms * 1e6);
                println!(
                    "{spec}\t{}\t{dir}\t{ms:.4}\t{gbs:.1}\t{:.3}",
                    T::DTYPE.name(),
                    gbs / copy_gbs
                );
            }
        }
        Ok(())
    }

    pub fn run() -> Res<()> {
        let n: usize = std::env::var("LOWBIT_BENCH_ELEMENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1 << 28);
        let cuda = Cuda::new(0)?;
        let (name, (major, minor)) = cuda.device()?;
        let stream = cuda.context().new_stream()?;
        eprintln!("gpu_bench: {name} (sm_{major}{minor}), {n} elements");

        // The ceiling: a device-to-device copy of an f32 tensor of n elements.
        let src: CudaSlice<u8> = stream.alloc_zeros(n * 4)?;
        let mut dst: CudaSlice<u8> = stream.alloc_zeros(n * 4)?;
        let copy_ms = time(&stream, || Ok(stream.memcpy_dtod(&src, &mut dst)?))?;
        let copy_gbs = 2.0 * 4.0 * n as f64 / (copy_ms * 1e6);
        drop((src, dst));

        println!("quantizer\tdtype\tdir\tmedian_ms\tGB/s\tof_copy");
        println!("copy\tu8\tdtod\t{copy_ms:.4}\t{copy_gbs:.1}\t1.000");
        dtype::<f32>(&cuda, &stream, n, copy_gbs)?;
        dtype::<f16>(&cuda, &stream, n, copy_gbs)?;
        dtype::<bf16>(&cuda, &stream, n, copy_gbs)?;
        Ok(())
    }
}
