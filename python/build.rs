//! Compiles the device calls exactly when lowbit has its kernels built in,
//! as the C ABI's crate does: the calls are the C ABI's own source.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(lowbit_cuda)");
    if std::env::var_os("DEP_LOWBIT_CUDA").is_some() {
        println!("cargo::rustc-cfg=lowbit_cuda");
    }
}
