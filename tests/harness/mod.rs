//! The custom harness (`harness = false`) of the tests that run one body per
//! behaviour on every backend: the CPU always, CUDA where it can run. A
//! backend that cannot run is reported as skipped, with the reason, not
//! silently passed; the run ends with the `N passed, N failed, N skipped`
//! line. Arguments that do not start with `-` filter the tests by name.
//!
//! With `LOWBIT_TEST_REQUIRE_CUDA=1` (scripts/emulated-cuda.sh and the GPU
//! check set it) a CUDA run that cannot happen is a failure, not a skip:
//! only a body that needs a library beside the driver (cuBLAS) may skip.

use lowbit::{Backend, Device};

/// One behaviour, checked on the backend it is given.
pub type Body = fn(&Backend) -> Result<(), String>;

const SKIPPED: &str = "skipped: ";

/// What a body returns when this backend lacks a library beside the driver
/// that the behaviour needs (cuBLAS, say): reported as skipped, with why,
/// even where CUDA is required.
#[allow(dead_code)] // not every test file that shares the harness skips
pub fn skip_without(library: &str, why: impl std::fmt::Display) -> Result<(), String> {
    Err(skip_message(library, why))
}

/// [`skip_without`]'s message, for a body that fails with it from deeper in.
#[allow(dead_code)]
pub fn skip_message(library: &str, why: impl std::fmt::Display) -> String {
    format!("{SKIPPED}needs {library}: {why}")
}

/// candle's device for the backend's kind. The CUDA one needs candle's
/// CUDA backend (feature `candle-cuda`); without it the body is skipped.
#[cfg(feature = "candle")]
#[allow(dead_code)]
pub fn candle_device(b: &Backend) -> Result<candle_core::Device, String> {
    match b.name() {
        "cpu" => Ok(candle_core::Device::Cpu),
        #[cfg(feature = "candle-cuda")]
        _ => candle_core::Device::new_cuda(0).map_err(|e| e.to_string()),
        #[cfg(not(feature = "candle-cuda"))]
        _ => Err(skip_message(
            "candle's CUDA backend",
            "built without the candle-cuda feature",
        )),
    }
}

/// Whether a CUDA run that cannot happen fails the test run.
fn cuda_required() -> bool {
    std::env::var("LOWBIT_TEST_REQUIRE_CUDA").is_ok_and(|v| v == "1")
}

/// The large tensors' length: `LOWBIT_TEST_ELEMENTS`, default 2^20 + 3.
#[allow(dead_code)] // not every test file that shares the harness has them
pub fn elements() -> usize {
    std::env::var("LOWBIT_TEST_ELEMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or((1 << 20) + 3)
}

/// Runs every `(name, body, cuda_only)` on the CPU (unless `cuda_only`)
/// and on CUDA, prints one line per run and exits with 1 if any failed.
pub fn run(mut tests: Vec<(&str, Body, bool)>) {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    tests.retain(|(name, _, _)| {
        filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()))
    });

    let cpu = Backend::new(Device::Cpu).expect("the CPU backend always exists");
    let cuda = Backend::new(Device::Cuda);
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (name, body, cuda_only) in &tests {
        let mut run = |label: &str, b: Result<&Backend, String>| match b {
            Err(why) if cuda_required() => {
                println!("test {name} [{label}] ... FAILED\nLOWBIT_TEST_REQUIRE_CUDA=1, but {why}");
                failed += 1;
            }
            Err(why) => {
                println!("test {name} [{label}] ... skipped: {why}");
                skipped += 1;
            }
            Ok(b) => match body(b) {
                Ok(()) => {
                    println!("test {name} [{label}] ... ok");
                    passed += 1;
                }
                Err(e) if e.starts_with(SKIPPED) => {
                    println!("test {name} [{label}] ... {e}");
                    skipped += 1;
                }
                Err(e) => {
                    println!("test {name} [{label}] ... FAILED\n{e}");
                    failed += 1;
                }
            },
        };
        if !cuda_only {
            run("cpu", Ok(&cpu));
        }
        run("cuda", cuda.as_ref().map_err(|e| e.to_string()));
    }
    println!("\n{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        std::process::exit(1);
    }
}
