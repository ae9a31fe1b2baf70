//! Builds tests/c/capi_test.c against the static library and runs it: the C
//! ABI as a C program sees it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// This build's `liblowbit.a`. Cargo builds a crate's C libraries only when
/// asked (no test depends on them), so the test asks it, in the profile and
/// target directory the test was built in. From the workspace root and with
/// the examples, so that the features are those of `cargo test` there (the
/// examples' dev-dependencies add to cudarc's) and lowbit is not built a
/// second time: only this crate's libraries are.
fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/capi-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let release = profile_dir.file_name().is_some_and(|d| d == "release");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let build = Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args(["build", "--lib", "--examples"])
        .args(release.then_some("--release"))
        .arg("--target-dir")
        .arg(profile_dir.parent().unwrap())
        .output()
        .expect("cargo, which runs this test");
    assert!(
        build.status.success(),
        "cargo build of the C libraries failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    profile_dir.join("liblowbit.a")
}

#[test]
fn c_program_links_and_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("lowbit-capi-test-{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let build = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1"])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c/capi_test.c"))
        .arg(static_lib())
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&out)
        .output()
        .expect("a C compiler (cc)");
    assert!(
        build.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let run = Command::new(&out).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    print!("{stdout}");
    let _ = std::fs::remove_file(&out);
    assert!(
        run.status.success(),
        "the C test failed:\n{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
