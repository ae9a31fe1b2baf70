//! `lowbit bench`: median time and bandwidth of each quantizer, forward and
//! backward, beside a copy of the same number of bytes measured in the same
//! run (a parallel memcpy on the CPU, a device-to-device copy on a GPU).
//!
//! Bytes moved: forward reads x and writes y (2 tensors), backward reads x
//! and dy and writes dx (3 tensors); a copy reads and writes half each.

use std::time::Instant;

use lowbit::{Backend, DType, Element, Quantizer, bf16, f16};
use rayon::prelude::*;

use crate::{Fail, backend, parse_dtype};

const DEFAULT_SPECS: &[&str] = &[
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

/// Channels of the tensor (the last axis), a typical convolution width.
const CHANNELS: usize = 64;

#[derive(clap::Args)]
pub struct Args {
    /// Quantizers to measure (default: all, with their defaults).
    specs: Vec<String>,
    /// Elements per tensor (rounded down to a multiple of 64).
    #[arg(long, default_value_t = 1 << 24)]
    size: usize,
    /// Element types (repeatable; default all three).
    #[arg(long)]
    dtype: Vec<String>,
    /// auto, cpu or cuda (default: LOWBIT_DEVICE, else auto).
    #[arg(long)]
    device: Option<String>,
    /// Timed runs per measurement; the median is reported.
    #[arg(long, default_value_t = 11)]
    repeats: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One measurement.
struct Row {
    spec: String,
    dtype: DType,
    direction: &'static str,
    median_ms: f64,
    bytes: f64,
    copy_ms: f64,
}

impl Row {
    fn gbs(&self) -> f64 {
        self.bytes / (self.median_ms * 1e6)
    }
    fn ratio(&self) -> f64 {
        self.copy_ms / self.median_ms
    }
}

/// The forward and backward rows of one quantizer: `(median ms, copy ms)`
/// each, the copy moving the same bytes.
fn push_rows<T: Element>(q: &Quantizer, n: usize, fwd: (f64, f64), bwd: (f64, f64)) -> [Row; 2] {
    let size = std::mem::size_of::<T>();
    [("forward", fwd, 2), ("backward", bwd, 3)].map(|(direction, (median_ms, copy_ms), tensors)| {
        Row {
            spec: q.to_string(),
            dtype: T::DTYPE,
            direction,
            median_ms,
            bytes: (tensors * n * size) as f64,
            copy_ms,
        }
    })
}

/// Rows printed as they are measured, so that a run stopped part way (a
/// time limit, the kernel's out-of-memory killer) still leaves what it
/// measured: a run at 2^27 elements used to print nothing before its last
/// measurement. JSON keeps its shape; its closing lines come last.
struct Output {
    json: bool,
    rows: usize,
}

impl Output {
    fn start(json: bool, backend: &Backend, n: usize) -> Output {
        if json {
            println!(
                "{{\"backend\": \"{}\", \"reason\": \"{}\", \"elements\": {n}, \"results\": [",
                backend.name(),
                escape(backend.reason()),
            );
        } else {
            println!(
                "{n} elements on {backend}; ratio = quantizer GB/s ÷ copy GB/s of the same bytes"
            );
            println!(
                "{:52} {:5} {:8} {:>10} {:>8} {:>8} {:>6}",
                "quantizer", "dtype", "dir", "median ms", "GB/s", "copy", "ratio"
            );
        }
        Output { json, rows: 0 }
    }

    fn push(&mut self, rows: [Row; 2]) {
        for r in &rows {
            if self.json {
                let sep = if self.rows == 0 { "" } else { ",\n" };
                print!(
                    "{sep}  {{\"quantizer\": \"{}\", \"dtype\": \"{}\", \"direction\": \"{}\", \"median_ms\": {:.6}, \"bytes\": {}, \"gb_per_s\": {:.3}, \"copy_ms\": {:.6}, \"ratio_to_copy\": {:.4}}}",
                    escape(&r.spec),
                    r.dtype.name(),
                    r.direction,
                    r.median_ms,
                    r.bytes,
                    r.gbs(),
                    r.copy_ms,
                    r.ratio()
                );
            } else {
                println!(
                    "{:52} {:5} {:8} {:>10.3} {:>8.2} {:>8.2} {:>6.2}",
                    r.spec,
                    r.dtype.name(),
                    r.direction,
                    r.median_ms,
                    r.gbs(),
                    r.bytes / (r.copy_ms * 1e6),
                    r.ratio()
                );
            }
            self.rows += 1;
        }
        let _ = std::io::Write::flush(&mut std::io::stdout());
    }

    fn finish(self) {
        if self.json {
            println!("\n]}}");
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn median(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

/// `n` copies of `value`, or an error where the memory cannot be had:
/// `--size` is the user's, so an allocation sized from it must fail as an
/// error, not abort the process.
fn buffer<T: Clone>(n: usize, value: T) -> Result<Vec<T>, Fail> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Fail(format!(
            "cannot allocate {n} elements of {} bytes for --size",
            std::mem::size_of::<T>()
        ))
    })?;
    v.resize(n, value);
    Ok(v)
}

fn input<T: Element>(n: usize, seed: u32) -> Result<Vec<T>, Fail> {
    let mut v = buffer(n, T::default())?;
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    for x in &mut v {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        *x = T::from_f32((s >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0);
    }
    Ok(v)
}

/// Progress on stderr, so that stdout stays a table or JSON.
fn progress(done: usize, total: usize, what: &str) {
    eprint!("\r[{done}/{total}] {what:60}");
    if done == total {
        eprintln!();
    }
}

/// Bytes of memory this system can still give, from Linux's estimate.
fn available_memory() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Buffers of 3.5 tensors: `x` and `dy` as the two halves of one buffer, so
/// that the copy of three tensors' bytes can read 1.5 tensors from it, and
/// a destination of 1.5 tensors whose first tensor is the quantizer's
/// output. Separate buffers for the copies would double the memory a large
/// `--size` needs (an earlier version held six tensors at its peak).
const BUFFER_TENSORS: f64 = 3.5;

fn cpu<T: Element>(
    args: &Args,
    specs: &[Quantizer],
    n: usize,
    out: &mut Output,
    step: &mut usize,
    total: usize,
) -> Result<(), Fail> {
    let size = std::mem::size_of::<T>();
    let needed = (BUFFER_TENSORS * (n * size) as f64) as usize;
    if let Some(free) = available_memory()
        && needed > free
    {
        return Err(Fail(format!(
            "--size {n} needs {} MiB for {} tensors but only {} MiB are available",
            needed >> 20,
            T::DTYPE.name(),
            free >> 20
        )));
    }
    let mut inputs = input::<T>(n, 1)?;
    inputs.extend_from_slice(&input::<T>(n, 2)?);
    let mut dst = buffer(n + n / 2, T::default())?;
    let (x, dy) = inputs.split_at(n);
    let shape = [n / CHANNELS, CHANNELS];
    // Copies of the same bytes as a pass moves (half read, half written),
    // timed alternately with the pass, so that both see the same load on a
    // shared machine.
    let copy = |elements: usize, dst: &mut [T]| {
        dst[..elements]
            .par_chunks_mut(1 << 16)
            .zip(inputs[..elements].par_chunks(1 << 16))
            .for_each(|(d, s)| d.copy_from_slice(s));
    };
    for q in specs {
        *step += 1;
        progress(*step, total, &format!("{q} {}", T::DTYPE.name()));
        let fwd = time_pair(
            args.repeats,
            &mut dst,
            |dst| Ok(q.forward(x, &shape, &mut dst[..n])?),
            |dst| copy(n, dst),
        )?;
        let bwd = time_pair(
            args.repeats,
            &mut dst,
            |dst| Ok(q.backward(x, dy, &shape, &mut dst[..n])?),
            |dst| copy(n + n / 2, dst),
        )?;
        out.push(push_rows::<T>(q, n, fwd, bwd));
    }
    Ok(())
}

/// Median wall times in milliseconds of `pass` and of `copy`, run in turn
/// `repeats` times after one warm-up run of each.
fn time_pair<T>(
    repeats: usize,
    dst: &mut [T],
    mut pass: impl FnMut(&mut [T]) -> Result<(), Fail>,
    mut copy: impl FnMut(&mut [T]),
) -> Result<(f64, f64), Fail> {
    pass(dst)?;
    copy(dst);
    let (mut p, mut c) = (Vec::with_capacity(repeats), Vec::with_capacity(repeats));
    for _ in 0..repeats {
        let t = Instant::now();
        pass(dst)?;
        p.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        copy(dst);
        c.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median(p), median(c)))
}

#[cfg(lowbit_cuda)]
fn gpu<T: Element>(
    backend: &Backend,
    args: &Args,
    specs: &[Quantizer],
    n: usize,
    out: &mut Output,
    step: &mut usize,
    total: usize,
) -> Result<(), Fail> {
    use cudarc::driver::{CudaSlice, sys::CUevent_flags};
    use lowbit::cuda::Workspace;

    let cuda = backend.as_cuda().expect("a CUDA backend");
    let stream = cuda.context().new_stream()?;
    // Median of CUDA-event times, after a warm-up run.
    let time = |f: &mut dyn FnMut() -> Result<(), Fail>| -> Result<f64, Fail> {
        f()?;
        let mut ms = Vec::with_capacity(args.repeats);
        for _ in 0..args.repeats {
            let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
            f()?;
            let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
            end.synchronize()?;
            ms.push(f64::from(start.elapsed_ms(&end)?));
        }
        Ok(median(ms))
    };
    let size = std::mem::size_of::<T>();
    let copy = |bytes: usize| -> Result<f64, Fail> {
        let src: CudaSlice<u8> = stream.alloc_zeros(bytes / 2)?;
        let mut dst: CudaSlice<u8> = stream.alloc_zeros(bytes / 2)?;
        time(&mut || Ok(stream.memcpy_dtod(&src, &mut dst)?))
    };
    let (copy2, copy3) = (copy(2 * n * size)?, copy(3 * n * size)?);
    let x: CudaSlice<T> = stream.clone_htod(&input::<T>(n, 1)?)?;
    let dy: CudaSlice<T> = stream.clone_htod(&input::<T>(n, 2)?)?;
    // SAFETY: every kernel writes all of `result` before anything reads it.
    let mut result: CudaSlice<T> = unsafe { stream.alloc(n) }?;
    let mut ws = Workspace::new();
    let shape = [n / CHANNELS, CHANNELS];
    for q in specs {
        *step += 1;
        progress(*step, total, &format!("{q} {} (cuda)", T::DTYPE.name()));
        let fwd = time(&mut || {
            Ok(cuda.forward(
                q,
                &stream,
                &x.as_view(),
                &shape,
                &mut result.as_view_mut(),
                &mut ws,
            )?)
        })?;
        let bwd = time(&mut || {
            Ok(cuda.backward(
                q,
                &stream,
                &x.as_view(),
                &dy.as_view(),
                &shape,
                &mut result.as_view_mut(),
                &mut ws,
            )?)
        })?;
        out.push(push_rows::<T>(q, n, (fwd, copy2), (bwd, copy3)));
    }
    Ok(())
}

fn measure<T: Element>(
    backend: &Backend,
    args: &Args,
    specs: &[Quantizer],
    n: usize,
    out: &mut Output,
    step: &mut usize,
    total: usize,
) -> Result<(), Fail> {
    match backend.name() {
        #[cfg(lowbit_cuda)]
        "cuda" => gpu::<T>(backend, args, specs, n, out, step, total),
        _ => cpu::<T>(args, specs, n, out, step, total),
    }
}

pub fn run(args: Args) -> Result<(), Fail> {
    let specs: Vec<Quantizer> = if args.specs.is_empty() {
        DEFAULT_SPECS
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?
    } else {
        args.specs
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?
    };
    let dtypes: Vec<DType> = if args.dtype.is_empty() {
        vec![DType::F32, DType::F16, DType::BF16]
    } else {
        args.dtype
            .iter()
            .map(|d| parse_dtype(d))
            .collect::<Result<_, _>>()?
    };
    if args.repeats == 0 {
        return Err(Fail("--repeats must be at least 1".into()));
    }
    let n = args.size / CHANNELS * CHANNELS;
    if n == 0 {
        return Err(Fail(format!("--size must be at least {CHANNELS}")));
    }
    // The largest buffer is the copy of three f32 tensors' bytes; the byte
    // counts below are then computed without overflow.
    if n.checked_mul(3 * std::mem::size_of::<f32>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(Fail(format!(
            "--size {} is more than any buffer can hold",
            args.size
        )));
    }
    let backend = backend(args.device.as_deref())?;
    let total = specs.len() * dtypes.len();
    let mut out = Output::start(args.json, &backend, n);
    let mut step = 0;
    for dtype in &dtypes {
        match dtype {
            DType::F32 => measure::<f32>(&backend, &args, &specs, n, &mut out, &mut step, total)?,
            DType::F16 => measure::<f16>(&backend, &args, &specs, n, &mut out, &mut step, total)?,
            DType::BF16 => measure::<bf16>(&backend, &args, &specs, n, &mut out, &mut step, total)?,
        }
    }
    out.finish();
    Ok(())
}
