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
//! output file behind. `--output -` writes to stdout; a device or a pipe
//! (`/dev/null`, `/dev/stdout`) is written in place, a regular file (or
//! the file a symlink names) is replaced atomically.

mod bench;
mod npy;

use std::io::Write;
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
        use lowbit::cuda::ptx;
        println!(
            "kernels: built in, PTX ISA {} for {} ({}); it needs a driver for {} or newer",
            ptx::ISA,
            ptx::ARCH,
            ptx::COMPILER,
            ptx::minimum_driver()
        );
        if let Some(cuda) = auto.as_cuda() {
            let (name, (major, minor)) = cuda.device()?;
            println!("gpu: {name}, compute capability {major}.{minor}");
            if let Some((major, minor)) = cuda.driver_version() {
                println!("driver: CUDA {major}.{minor}");
            }
        }
    }
    #[cfg(not(lowbit_cuda))]
    println!("kernels: not built in (no CUDA compiler when lowbit was built)");
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

/// An element as a file holds it: its own little-endian bits, never a value
/// converted through `f32`, which would quiet a signalling NaN that `noop`
/// must pass through unchanged.
trait FileElement: Element {
    fn from_le(bytes: &[u8]) -> Self;
    fn put_le(self, out: &mut Vec<u8>);
}

impl FileElement for f32 {
    fn from_le(bytes: &[u8]) -> Self {
        f32::from_bits(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bits().to_le_bytes());
    }
}

impl FileElement for f16 {
    fn from_le(bytes: &[u8]) -> Self {
        f16::from_bits(u16::from_le_bytes(bytes.try_into().expect("2 bytes")))
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bits().to_le_bytes());
    }
}

impl FileElement for bf16 {
    fn from_le(bytes: &[u8]) -> Self {
        bf16::from_bits(u16::from_le_bytes(bytes.try_into().expect("2 bytes")))
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bits().to_le_bytes());
    }
}

fn elements<T: FileElement>(a: &Npy) -> Vec<T> {
    // The data length was checked against the shape when the file was read.
    a.data
        .chunks_exact(std::mem::size_of::<T>())
        .map(T::from_le)
        .collect()
}

fn to_bytes<T: FileElement>(v: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(std::mem::size_of_val(v));
    for &x in v {
        x.put_le(&mut out);
    }
    out
}

fn compute<T: FileElement>(
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
    let bytes = out.to_bytes()?;
    write_output(output, &bytes).map_err(|e| Fail(format!("{}: {e}", output.display())))
}

/// Writes the output where `path` says, never leaving half a file behind
/// and never replacing what is not a regular file.
///
/// - `-` is stdout.
/// - A device, pipe or socket (`/dev/null`, `/dev/stdout` on a pipe) is
///   written in place: renaming over it would replace the node itself.
/// - A regular file, or one that does not exist yet, is replaced atomically:
///   the bytes go to an exclusively created temporary with an unpredictable
///   name in the same directory, which is then renamed over it. A symlink
///   to a regular file is written through: its target is replaced.
fn write_output(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        return out.flush();
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(Error::new(ErrorKind::IsADirectory, "is a directory")),
        Ok(m) if !m.is_file() => {
            let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
            f.write_all(bytes)?;
            f.flush()
        }
        Ok(m) => replace_file(&std::fs::canonicalize(path)?, bytes, Some(m.permissions())),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if std::fs::symlink_metadata(path).is_ok() {
                // Following it would create a file wherever it points.
                return Err(Error::new(
                    ErrorKind::NotFound,
                    "a symlink to nothing; not followed",
                ));
            }
            replace_file(path, bytes, None)
        }
        Err(e) => Err(e),
    }
}

/// Replaces (or creates) the regular file `path` with `bytes` in one rename.
/// A replaced file keeps its permissions; a new one gets 0666 less umask,
/// as any other created file.
fn replace_file(
    path: &Path,
    bytes: &[u8],
    permissions: Option<std::fs::Permissions>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".lowbit-")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    if let Some(p) = permissions {
        tmp.as_file().set_permissions(p)?;
    }
    tmp.as_file().sync_all()?;
    // On error the temporary is dropped, which removes it.
    tmp.persist(path).map(drop).map_err(|e| e.error)
}
