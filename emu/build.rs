//! Generates a stub for every driver entry point of `symbols.txt` that
//! `src/driver/api.rs` does not implement: each answers
//! CUDA_ERROR_NOT_SUPPORTED and says so, so that nothing cudarc or lowbit
//! may resolve is missing from the library.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=symbols.txt");
    println!("cargo:rerun-if-changed=src/driver/api.rs");
    let symbols = std::fs::read_to_string("symbols.txt").expect("symbols.txt");
    let api = std::fs::read_to_string("src/driver/api.rs").expect("src/driver/api.rs");
    let implemented: HashSet<&str> = api
        .split("extern \"C\" fn ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .collect();
    let mut out = String::new();
    for name in symbols.lines().map(str::trim) {
        if name.is_empty() || name.starts_with('#') || implemented.contains(name) {
            continue;
        }
        writeln!(
            out,
            "#[unsafe(no_mangle)]\npub unsafe extern \"C\" fn {name}() -> CUresult {{ not_supported(\"{name}\") }}"
        )
        .unwrap();
    }
    out.push_str(
        "fn not_supported(name: &str) -> CUresult {\n    eprintln!(\"cuda-emu: {name} is not emulated (CUDA_ERROR_NOT_SUPPORTED)\");\n    code::NOT_SUPPORTED\n}\n",
    );
    let dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    std::fs::write(dir.join("stubs.rs"), out).unwrap();
}
