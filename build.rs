//! Compiles `kernels/*.cu` to PTX with nvcc and generates the Rust side of
//! `kernels/lowbit.h` with bindgen, both into `OUT_DIR`. On success it sets
//! `cfg(lowbit_cuda)`, which compiles the CUDA backend in.
//!
//! Without nvcc (or libclang for bindgen) the crate builds for the CPU alone
//! and says so in a `cargo:warning`; `LOWBIT_REQUIRE_CUDA=1` turns that into
//! a build failure, for CI and for users who must not silently lose the GPU.
//!
//! Environment: `NVCC` (the compiler), else `CUDA_HOME`, `CUDA_PATH`,
//! `CUDA_ROOT` (their `bin/nvcc`), else `PATH`; `LOWBIT_CUDA_ARCH` (the PTX
//! virtual architecture, default `compute_75`).

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One PTX module per kernel family, `kernels/<name>.cu`.
const MODULES: &[&str] = &["elementwise", "reduce", "bits", "mask"];
const DEFAULT_ARCH: &str = "compute_75";

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=build.rs");
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "CUDA_ROOT",
        "PATH",
        "LOWBIT_CUDA_ARCH",
        "LOWBIT_REQUIRE_CUDA",
        "LIBCLANG_PATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo::rustc-check-cfg=cfg(lowbit_cuda)");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    match build_cuda(&out) {
        Ok(arch) => {
            println!("cargo:rustc-cfg=lowbit_cuda");
            println!("cargo:rustc-env=LOWBIT_PTX_ARCH={arch}");
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

/// Builds the PTX modules and the bindings; returns the PTX architecture.
fn build_cuda(out: &Path) -> Result<String, String> {
    let nvcc = find_nvcc().ok_or(
        "nvcc not found (set NVCC, or CUDA_HOME/CUDA_PATH/CUDA_ROOT, or put nvcc on PATH)",
    )?;
    let arch = env::var("LOWBIT_CUDA_ARCH").unwrap_or_else(|_| DEFAULT_ARCH.to_string());
    // A toolkit from PyPI keeps cuda_fp16.h and friends in ../include beside
    // bin/, where nvcc does not look by itself.
    let include = nvcc
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("include"));

    let mut consts = String::new();
    for name in MODULES {
        let cu = Path::new("kernels").join(format!("{name}.cu"));
        let ptx = out.join(format!("{name}.ptx"));
        let mut cmd = Command::new(&nvcc);
        // -fmad=false: the CPU path rounds a*b before adding c; an FMA would
        // round once and break bit-for-bit agreement.
        cmd.args(["-ptx", "-O3", "-std=c++17", "-fmad=false"])
            .arg(format!("-arch={arch}"))
            .arg("-Ikernels");
        if let Some(include) = include.as_ref().filter(|p| p.is_dir()) {
            cmd.arg(format!("-I{}", include.display()));
        }
        cmd.arg(&cu).arg("-o").arg(&ptx);
        let output = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", nvcc.display()))?;
        if !output.status.success() {
            return Err(format!(
                "nvcc failed on {}:\n{}",
                cu.display(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        writeln!(
            consts,
            "/// PTX of `kernels/{name}.cu`.\npub const {}: &str = include_str!(concat!(env!(\"OUT_DIR\"), \"/{name}.ptx\"));",
            name.to_uppercase()
        )
        .unwrap();
    }
    fs::write(out.join("ptx.rs"), consts).map_err(|e| e.to_string())?;
    generate_bindings(out)?;
    Ok(arch)
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

fn find_nvcc() -> Option<PathBuf> {
    let exe = format!("nvcc{}", env::consts::EXE_SUFFIX);
    if let Some(nvcc) = env::var_os("NVCC") {
        return Some(PathBuf::from(nvcc));
    }
    let homes = ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"].into_iter();
    let from_home = homes
        .filter_map(env::var_os)
        .map(|h| PathBuf::from(h).join("bin").join(&exe));
    let path = env::var_os("PATH").unwrap_or_default();
    let from_path = env::split_paths(&path).map(|dir| dir.join(&exe));
    from_home.chain(from_path).find(|p| p.is_file())
}
