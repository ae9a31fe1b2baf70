//! The `lowbit` command: what the library does, from a shell.
//!
//! ```text
//! lowbit info
//! lowbit forward  SPEC --input x.npy --output y.npy [--device D] [--dtype T]
//! lowbit backward SPEC --input x.npy --grad dy.npy --output dx.npy [...]
//! lowbit bench [SPEC...] [--size N] [--dtype T...] [--device D] [--json]
//! ```
//!
//! Errors print `lowbit: error: ...` and exit with status 2, leaving no
//! output file behind.

mod bench;
mod npy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lowbit::{Backend, DType, Device, Element, Quantizer, bf16, f16};
use npy::Npy;

#[derive(Parser)]
#[command(
    name = "lowbit",
    version,
    about = "larq's quantizers, forward and backward, on the CPU or a GPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Version, the backend `auto` picks and why, GPU and kernel details.
    Info,
    /// y = q(x) for an .npy tensor.
    Forward {
        /// The quantizer in larq's spelling, e.g. 'ste_tern(threshold_value=0.2)'.
        spec: String,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        #[command(flatten)]
        opts: Opts,
    },
    /// dx = dq/dx · dy for .npy tensors x and dy.
    Backward {
        spec: String,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        grad: PathBuf,
        #[arg(long)]
        output: PathBuf,
        #[command(flatten)]
        opts: Opts,
    },
    /// Median time and bytes per second of each quantizer beside a memory
    /// copy of the same bytes.
    Bench(bench::Args),
}

#[derive(clap::Args)]
struct Opts {
    /// auto, cpu or cuda (default: LOWBIT_DEVICE, else auto).
    #[arg(long)]
    device: Option<String>,
    /// f32 (<f4), f16 (<f2) or bf16 (<u2 bit patterns); default: the file's.
    #[arg(long)]
    dtype: Option<String>,
}

/// A failure to report: the message, then exit status 2.
struct Fail(String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
        Command::Forward {
            spec,
            input,
            output,
            opts,
        } => run(&spec, &input, None, &output, &opts),
        Command::Backward {
            spec,
            input,
            grad,
            output,
            opts,
        } => run(&spec, &input, Some(&grad), &output, &opts),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(message)) => {
            eprintln!("lowbit: error: {message}");
            ExitCode::from(2)
        }
    }
}

pub(crate) fn backend(device: Option<&str>) -> Result<Backend, Fail> {
    Ok(match device {
        Some(d) => Backend::new(d.parse::<Device>()?)?,
        None => Backend::from_env()?,
    })
}

pub(crate) fn parse_dtype(s: &str) -> Result<DType, Fail> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        _ => Err(Fail(format!(
            "unknown dtype `{s}` (expected f32, f16 or bf16)"
        ))),
    }
}

fn info() -> Result<(), Fail> {
    println!("lowbit {}", env!("CARGO_PKG_VERSION"));
    let auto = Backend::new(Device::Auto)?;
    println!("backend (auto): {}", auto.name());
    println!("why: {}", auto.reason());
    #[cfg(lowbit_cuda)]
    {
        println!("kernels: built in, PTX for {}", lowbit::cuda::ptx::ARCH);
        if let Some(cuda) = auto.as_cuda() {
            let (name, (major, minor)) = cuda.device()?;
            println!("gpu: {name}, compute capability {major}.{minor}");
            if let Some((major, minor)) = cuda.driver_version() {
                println!("driver: CUDA {major}.{minor}");
            }
        }
    }
    #[cfg(not(lowbit_cuda))]
    println!("kernels: not built in (no nvcc when lowbit was built)");
    println!("cpu threads: {}", rayon::current_num_threads());
    Ok(())
}

/// The dtype of an array: `--dtype` if given (and it must match the file),
/// else the file's own.
fn dtype_of(a: &Npy, path: &Path, asked: Option<&str>) -> Result<DType, Fail> {
    let from_file = match a.descr.as_str() {
        "<f4" => Some(DType::F32),
        "<f2" => Some(DType::F16),
        _ => None, // <u2: bf16 bits, which only --dtype bf16 may claim
    };
    match (asked.map(parse_dtype).transpose()?, from_file) {
        (Some(DType::BF16), None) => Ok(DType::BF16),
        (Some(d), Some(f)) if d == f => Ok(d),
        (None, Some(f)) => Ok(f),
        (None, None) => Err(Fail(format!(
            "{}: <u2 data is read as bf16 bits only with --dtype bf16",
            path.display()
        ))),
        (Some(d), _) => Err(Fail(format!(
            "{}: --dtype {} does not match the file's {}",
            path.display(),
            d.name(),
            a.descr
        ))),
    }
}

fn read(path: &Path) -> Result<Npy, Fail> {
    let bytes = std::fs::read(path).map_err(|e| Fail(format!("{}: {e}", path.display())))?;
    Npy::parse(&bytes).map_err(|e| Fail(format!("{}: {e}", path.display())))
}

fn elements<T: Element>(a: &Npy) -> Vec<T> {
    // The data length was checked against the shape when the file was read.
    let size = std::mem::size_of::<T>();
    a.data
        .chunks_exact(size)
        .map(|b| match size {
            4 => T::from_f32(f32::from_le_bytes(b.try_into().unwrap())),
            _ => from_bits::<T>(u16::from_le_bytes(b.try_into().unwrap())),
        })
        .collect()
}

fn from_bits<T: Element>(bits: u16) -> T {
    match T::DTYPE {
        DType::F16 => T::from_f32(f16::from_bits(bits).to_f32()),
        _ => T::from_f32(bf16::from_bits(bits).to_f32()),
    }
}

fn to_bytes<T: Element>(v: &[T]) -> Vec<u8> {
    match T::DTYPE {
        DType::F32 => v.iter().flat_map(|x| x.to_f32().to_le_bytes()).collect(),
        DType::F16 => v
            .iter()
            .flat_map(|x| f16::from_f32(x.to_f32()).to_bits().to_le_bytes())
            .collect(),
        DType::BF16 => v
            .iter()
            .flat_map(|x| bf16::from_f32(x.to_f32()).to_bits().to_le_bytes())
            .collect(),
    }
}

fn compute<T: Element>(
    backend: &Backend,
    q: &Quantizer,
    x: &Npy,
    dy: Option<&Npy>,
) -> Result<Vec<u8>, Fail> {
    let xs = elements::<T>(x);
    let mut out = vec![T::default(); xs.len()];
    match dy {
        None => backend.forward(q, &xs, &x.shape, &mut out)?,
        Some(dy) => backend.backward(q, &xs, &elements::<T>(dy), &x.shape, &mut out)?,
    }
    Ok(to_bytes(&out))
}

fn run(
    spec: &str,
    input: &Path,
    grad: Option<&Path>,
    output: &Path,
    opts: &Opts,
) -> Result<(), Fail> {
    let q: Quantizer = spec.parse()?;
    let x = read(input)?;
    let dtype = dtype_of(&x, input, opts.dtype.as_deref())?;
    let dy = grad.map(read).transpose()?;
    if let (Some(dy), Some(path)) = (&dy, grad)
        && (dtype_of(dy, path, opts.dtype.as_deref())? != dtype || dy.shape != x.shape)
    {
        return Err(Fail(format!(
            "{}: {} {:?} does not match the input's {} {:?}",
            path.display(),
            dy.descr,
            dy.shape,
            x.descr,
            x.shape
        )));
    }
    let backend = backend(opts.device.as_deref())?;
    let data = match dtype {
        DType::F32 => compute::<f32>(&backend, &q, &x, dy.as_ref())?,
        DType::F16 => compute::<f16>(&backend, &q, &x, dy.as_ref())?,
        DType::BF16 => compute::<bf16>(&backend, &q, &x, dy.as_ref())?,
    };
    let out = Npy { data, ..x };
    write_atomically(output, &out.to_bytes())
}

/// Writes to a temporary file beside `path` and renames it into place, so a
/// failure never leaves a partial output.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Fail> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Fail(format!("{}: not a file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.lowbit-{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Fail(format!("{}: {e}", path.display())));
    }
    Ok(())
}
