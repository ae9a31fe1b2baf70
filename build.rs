//! Compiles `kernels/*.cu` to PTX with NVRTC (NVIDIA's CUDA C++ compiler
//! as a library) and generates the Rust side of `kernels/lowbit.h` with
//! bindgen, both into `OUT_DIR`. On success it sets `cfg(lowbit_cuda)`,
//! which compiles the CUDA backend in.
//!
//! The PTX ISA version follows the compiler's release, and a driver loads
//! only the ISA versions of its release and older: NVRTC 12.0 (the pinned
//! toolchain, `scripts/cuda-toolchain.sh`) emits PTX ISA 8.0, which every
//! CUDA 12 and 13 driver (R525 and later) loads.
//!
//! Without NVRTC (or libclang for bindgen) the crate builds for the CPU
//! alone and says so in a `cargo:warning`; `LOWBIT_REQUIRE_CUDA=1` turns
//! that into a build failure, for CI and for users who must not silently
//! lose the GPU.
//!
//! Environment: `LOWBIT_NVRTC` (the libnvrtc shared library) and
//! `LOWBIT_CUDA_INCLUDE` (the directory of `cuda_fp16.h`), else a CUDA
//! toolkit's under `CUDA_HOME`, `CUDA_PATH`, `CUDA_ROOT` or
//! `/usr/local/cuda`; `LOWBIT_CUDA_ARCH` (the PTX virtual architecture,
//! default `compute_75`).

use std::env;
use std::ffi::{CStr, CString, c_char, c_int};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// One PTX module per kernel family, `kernels/<name>.cu`.
const MODULES: &[&str] = &["elementwise", "reduce", "bits", "mask"];
const DEFAULT_ARCH: &str = "compute_75";

/// NVRTC has no C library headers; the kernels need only the fixed-width
/// integer types, which are these on every CUDA target.
const STDINT_H: &str = "#pragma once
typedef signed char int8_t; typedef short int16_t; typedef int int32_t; typedef long long int64_t;
typedef unsigned char uint8_t; typedef unsigned short uint16_t; typedef unsigned int uint32_t;
typedef unsigned long long uint64_t; typedef unsigned long long uintptr_t;
";

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=build.rs");
    for var in [
        "LOWBIT_NVRTC",
        "LOWBIT_CUDA_INCLUDE",
        "CUDA_HOME",
        "CUDA_PATH",
        "CUDA_ROOT",
        "LOWBIT_CUDA_ARCH",
        "LOWBIT_REQUIRE_CUDA",
        "LIBCLANG_PATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo::rustc-check-cfg=cfg(lowbit_cuda)");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    match build_cuda(&out) {
        Ok(built) => {
            println!("cargo:rustc-cfg=lowbit_cuda");
            // DEP_LOWBIT_CUDA for cli/ and capi/ (the `links` key).
            println!("cargo::metadata=cuda=1");
            println!("cargo:rustc-env=LOWBIT_PTX_ARCH={}", built.arch);
            println!("cargo:rustc-env=LOWBIT_PTX_ISA={}", built.isa);
            println!("cargo:rustc-env=LOWBIT_PTX_COMPILER={}", built.compiler);
        }
        Err(reason) if env::var("LOWBIT_REQUIRE_CUDA").is_ok_and(|v| v == "1") => {
            eprintln!("error: LOWBIT_REQUIRE_CUDA=1 but the CUDA kernels did not build: {reason}");
            std::process::exit(1);
        }
        Err(reason) => println!(
            "cargo:warning=lowbit builds without CUDA kernels and will run on the CPU: {reason}"
        ),
    }
}

struct Built {
    arch: String,
    /// The `.version` of the PTX, e.g. `8.0`.
    isa: String,
    compiler: String,
}

/// Builds the PTX modules and the bindings.
fn build_cuda(out: &Path) -> Result<Built, String> {
    let toolkit = find_toolkit().ok_or(
        "NVRTC not found (set LOWBIT_NVRTC and LOWBIT_CUDA_INCLUDE, or CUDA_HOME; \
         `eval \"$(scripts/cuda-toolchain.sh)\"` installs and sets the pinned one)",
    )?;
    println!("cargo:rerun-if-changed={}", toolkit.nvrtc.display());
    let nvrtc = Nvrtc::load(&toolkit.nvrtc)?;
    let arch = env::var("LOWBIT_CUDA_ARCH").unwrap_or_else(|_| DEFAULT_ARCH.to_string());
    let options = [
        format!("--gpu-architecture={arch}"),
        // The CPU path rounds a*b before adding c; an FMA would round once
        // and break bit-for-bit agreement.
        "--fmad=false".into(),
        "-std=c++17".into(),
        "-Ikernels".into(),
        format!("-I{}", toolkit.include.display()),
    ];
    let mut consts = String::new();
    let mut isa = String::new();
    for name in MODULES {
        let cu = Path::new("kernels").join(format!("{name}.cu"));
        let src = fs::read_to_string(&cu).map_err(|e| format!("{}: {e}", cu.display()))?;
        let ptx = nvrtc.compile(&src, &format!("{name}.cu"), &options)?;
        isa = ptx
            .lines()
            .find_map(|l| l.strip_prefix(".version "))
            .map(|v| v.trim().to_string())
            .ok_or(format!("NVRTC's PTX for {name}.cu has no .version"))?;
        fs::write(out.join(format!("{name}.ptx")), ptx).map_err(|e| e.to_string())?;
        writeln!(
            consts,
            "/// PTX of `kernels/{name}.cu`.\npub const {}: &str = include_str!(concat!(env!(\"OUT_DIR\"), \"/{name}.ptx\"));",
            name.to_uppercase()
        )
        .unwrap();
    }
    fs::write(out.join("ptx.rs"), consts).map_err(|e| e.to_string())?;
    generate_kernel_ids(out)?;
    generate_bindings(out)?;
    Ok(Built {
        arch,
        isa,
        compiler: format!("NVRTC {}.{}", nvrtc.version.0, nvrtc.version.1),
    })
}

/// Turns `kernels/kernels.def`, the list the `.cu` files stamp their kernels
/// from, into Rust enums of the same names (`src/cuda/kernels.rs` includes
/// them): one enum per kind of line, a variant per line.
fn generate_kernel_ids(out: &Path) -> Result<(), String> {
    let def = fs::read_to_string("kernels/kernels.def").map_err(|e| format!("kernels.def: {e}"))?;
    let kinds = [
        (
            "LOWBIT_ELEMENTWISE",
            "Family",
            "An elementwise family: `<name>_fwd_<dt>` and `<name>_bwd_<dt>`.",
        ),
        (
            "LOWBIT_MASKED",
            "Masked",
            "A family that saves a mask: `<name>_fwd_mask_<dt>`.",
        ),
        (
            "LOWBIT_TYPED",
            "Typed",
            "A kernel with one variant per element type: `<name>_<dt>`.",
        ),
        (
            "LOWBIT_SINGLE",
            "Single",
            "A kernel with one variant for every type.",
        ),
    ];
    let mut rs = String::from("// Generated by build.rs from kernels/kernels.def.\n");
    for (macro_name, ty, doc) in kinds {
        let names: Vec<&str> = def
            .lines()
            .filter_map(|l| l.trim().strip_prefix(macro_name)?.strip_prefix('('))
            .map(|args| args.split([',', ')']).next().unwrap_or("").trim())
            .collect();
        if names.is_empty() || names.iter().any(|n| n.is_empty()) {
            return Err(format!("kernels.def: no well-formed {macro_name} line"));
        }
        let camel = |n: &str| -> String {
            n.split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect()
        };
        writeln!(
            rs,
            "/// {doc}\n#[derive(Debug, Clone, Copy, PartialEq, Eq)]"
        )
        .unwrap();
        writeln!(rs, "pub(crate) enum {ty} {{").unwrap();
        for n in &names {
            writeln!(rs, "    /// `{n}`\n    {},", camel(n)).unwrap();
        }
        writeln!(rs, "}}\n\nimpl {ty} {{").unwrap();
        writeln!(rs, "    /// Every one, in kernels.def's order.").unwrap();
        write!(rs, "    pub(crate) const ALL: [{ty}; {}] = [", names.len()).unwrap();
        for n in &names {
            write!(rs, "{ty}::{}, ", camel(n)).unwrap();
        }
        writeln!(rs, "];\n\n    /// Its name in kernels.def.").unwrap();
        writeln!(
            rs,
            "    pub(crate) const fn name(self) -> &'static str {{\n        match self {{"
        )
        .unwrap();
        for n in &names {
            writeln!(rs, "            {ty}::{} => \"{n}\",", camel(n)).unwrap();
        }
        writeln!(rs, "        }}\n    }}\n}}\n").unwrap();
    }
    fs::write(out.join("kernel_ids.rs"), rs).map_err(|e| e.to_string())
}

/// Runs bindgen on the one header that crosses the Rust/CUDA boundary.
fn generate_bindings(out: &Path) -> Result<(), String> {
    // bindgen panics when it cannot load libclang; that is a missing tool,
    // not a bug, so it becomes the reason the build goes CPU-only.
    let result = std::panic::catch_unwind(|| {
        bindgen::Builder::default()
            .header("kernels/lowbit.h")
            .allowlist_type("Lowbit.*")
            .allowlist_var("LOWBIT_.*")
            .derive_default(true)
            .derive_debug(true)
            .generate()
    });
    let bindings = match result {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(format!("bindgen failed on kernels/lowbit.h: {e}")),
        Err(_) => {
            return Err("bindgen could not load libclang (apt-get install libclang-dev)".into());
        }
    };
    bindings
        .write_to_file(out.join("lowbit_sys.rs"))
        .map_err(|e| e.to_string())
}

struct Toolkit {
    nvrtc: PathBuf,
    include: PathBuf,
}

fn find_toolkit() -> Option<Toolkit> {
    if let (Some(nvrtc), Some(include)) = (
        env::var_os("LOWBIT_NVRTC"),
        env::var_os("LOWBIT_CUDA_INCLUDE"),
    ) {
        return Some(Toolkit {
            nvrtc: nvrtc.into(),
            include: include.into(),
        });
    }
    let homes = ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"]
        .into_iter()
        .filter_map(env::var_os)
        .map(PathBuf::from)
        .chain([PathBuf::from("/usr/local/cuda")]);
    for home in homes {
        let nvrtc = home.join("lib64").join("libnvrtc.so");
        if nvrtc.is_file() {
            return Some(Toolkit {
                nvrtc,
                include: home.join("include"),
            });
        }
    }
    None
}

type Program = *mut std::ffi::c_void;

/// The NVRTC entry points the build uses, from the shared library.
struct Nvrtc {
    _lib: libloading::Library,
    version: (c_int, c_int),
    create: unsafe extern "C" fn(
        *mut Program,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> c_int,
    compile: unsafe extern "C" fn(Program, c_int, *const *const c_char) -> c_int,
    log_size: unsafe extern "C" fn(Program, *mut usize) -> c_int,
    log: unsafe extern "C" fn(Program, *mut c_char) -> c_int,
    ptx_size: unsafe extern "C" fn(Program, *mut usize) -> c_int,
    ptx: unsafe extern "C" fn(Program, *mut c_char) -> c_int,
    destroy: unsafe extern "C" fn(*mut Program) -> c_int,
}

impl Nvrtc {
    fn load(path: &Path) -> Result<Self, String> {
        // SAFETY: loading NVRTC runs its initializers, as using it requires.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        fn sym<T: Copy>(lib: &libloading::Library, path: &Path, name: &str) -> Result<T, String> {
            // SAFETY: each field's type is the signature nvrtc.h declares.
            unsafe { lib.get::<T>(name.as_bytes()) }
                .map(|s| *s)
                .map_err(|e| format!("{} lacks {name}: {e}", path.display()))
        }
        let version_fn: unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int =
            sym(&lib, path, "nvrtcVersion")?;
        let mut version = (0, 0);
        // SAFETY: two out-pointers.
        unsafe { version_fn(&mut version.0, &mut version.1) };
        Ok(Nvrtc {
            version,
            create: sym(&lib, path, "nvrtcCreateProgram")?,
            compile: sym(&lib, path, "nvrtcCompileProgram")?,
            log_size: sym(&lib, path, "nvrtcGetProgramLogSize")?,
            log: sym(&lib, path, "nvrtcGetProgramLog")?,
            ptx_size: sym(&lib, path, "nvrtcGetPTXSize")?,
            ptx: sym(&lib, path, "nvrtcGetPTX")?,
            destroy: sym(&lib, path, "nvrtcDestroyProgram")?,
            _lib: lib,
        })
    }

    /// PTX for `src`, or NVRTC's log of why not.
    fn compile(&self, src: &str, name: &str, options: &[String]) -> Result<String, String> {
        let cstr = |s: &str| CString::new(s).map_err(|e| e.to_string());
        let (src, name) = (cstr(src)?, cstr(name)?);
        let (header, header_name) = (cstr(STDINT_H)?, cstr("stdint.h")?);
        let options: Vec<CString> = options.iter().map(|o| cstr(o)).collect::<Result<_, _>>()?;
        let option_ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        let mut prog: Program = std::ptr::null_mut();
        // SAFETY: every pointer is a live NUL-terminated string for the call.
        unsafe {
            let rc = (self.create)(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                1,
                &header.as_ptr(),
                &header_name.as_ptr(),
            );
            if rc != 0 {
                return Err(format!("nvrtcCreateProgram failed ({rc})"));
            }
            let rc = (self.compile)(prog, option_ptrs.len() as c_int, option_ptrs.as_ptr());
            let mut n = 0;
            (self.log_size)(prog, &mut n);
            let mut log = vec![0 as c_char; n.max(1)];
            (self.log)(prog, log.as_mut_ptr());
            let log = CStr::from_ptr(log.as_ptr()).to_string_lossy().into_owned();
            let result = if rc != 0 {
                Err(format!(
                    "NVRTC failed on kernels/{}:\n{log}",
                    name.to_string_lossy()
                ))
            } else {
                (self.ptx_size)(prog, &mut n);
                let mut ptx = vec![0 as c_char; n.max(1)];
                (self.ptx)(prog, ptx.as_mut_ptr());
                Ok(CStr::from_ptr(ptx.as_ptr()).to_string_lossy().into_owned())
            };
            (self.destroy)(&mut prog);
            result
        }
    }
}
