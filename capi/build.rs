//! Compiles the C ABI's device calls exactly when lowbit has its kernels
//! built in: lowbit's build script says so through its `links` metadata.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(lowbit_cuda)");
    if std::env::var_os("DEP_LOWBIT_CUDA").is_some() {
        println!("cargo::rustc-cfg=lowbit_cuda");
    }
}
