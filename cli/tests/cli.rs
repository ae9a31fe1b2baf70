//! The `lowbit` command, run as a user runs it.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

fn lowbit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lowbit"))
        .args(args)
        .output()
        .unwrap()
}

/// A directory of its own for a test, removed when it is dropped.
fn dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("lowbit-cli-")
        .tempdir()
        .unwrap()
}

/// A .npy file as numpy writes it (version 1.0, C order).
fn npy(descr: &str, shape: &[usize], data: &[u8], fortran: bool) -> Vec<u8> {
    let shape = match shape {
        [n] => format!("({n},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let order = if fortran { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn forward_and_backward_write_npy_of_the_input_shape() {
    let d = dir();
    let (x, dy, y, dx) = (
        d.path().join("x.npy"),
        d.path().join("dy.npy"),
        d.path().join("y.npy"),
        d.path().join("dx.npy"),
    );
    let xs = [-1.5f32, 0.05, 0.2, 0.0, -0.0, 3.0];
    std::fs::write(&x, npy("<f4", &[2, 3], &f32_bytes(&xs), false)).unwrap();
    std::fs::write(&dy, npy("<f4", &[2, 3], &f32_bytes(&[1.0; 6]), false)).unwrap();

    let out = lowbit(&[
        "forward",
        "ste_tern(threshold_value=0.1)",
        "--input",
        path_str(&x),
        "--output",
        path_str(&y),
        "--device",
        "cpu",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_f32(&y), [-1.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
    assert!(String::from_utf8_lossy(&std::fs::read(&y).unwrap()).contains("'shape': (2, 3)"));

    let out = lowbit(&[
        "backward",
        "ste_sign",
        "--input",
        path_str(&x),
        "--grad",
        path_str(&dy),
        "--output",
        path_str(&dx),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_f32(&dx), [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
}

#[test]
fn bf16_travels_as_u2_bit_patterns() {
    let d = dir();
    let (x, y) = (d.path().join("x.npy"), d.path().join("y.npy"));
    // bf16 bits of -1.5, 0.25, 2.0
    let bits: Vec<u8> = [0xBFC0u16, 0x3E80, 0x4000]
        .iter()
        .flat_map(|b| b.to_le_bytes())
        .collect();
    std::fs::write(&x, npy("<u2", &[3], &bits, false)).unwrap();
    let out = lowbit(&[
        "forward",
        "ste_sign",
        "--input",
        path_str(&x),
        "--output",
        path_str(&y),
        "--dtype",
        "bf16",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&y).unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("'descr': '<u2'"));
    let tail: Vec<u16> = bytes[bytes.len() - 6..]
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert_eq!(tail, [0xBF80, 0x3F80, 0x3F80]);
    // Without --dtype bf16, <u2 is not taken for bf16.
    let out = lowbit(&[
        "forward",
        "ste_sign",
        "--input",
        path_str(&x),
        "--output",
        path_str(&y),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_input_exits_2_with_a_message_and_no_output() {
    let d = dir();
    let good = d.path().join("x.npy");
    std::fs::write(&good, npy("<f4", &[4], &f32_bytes(&[1.0; 4]), false)).unwrap();
    // (name, file, SPEC, extra arguments, what the message says)
    type Case<'a> = (&'a str, Vec<u8>, &'a str, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "fortran",
            npy("<f4", &[2, 2], &f32_bytes(&[1.0; 4]), true),
            "ste_sign",
            vec![],
            "Fortran",
        ),
        (
            "truncated",
            npy("<f4", &[4], &f32_bytes(&[1.0; 3]), false),
            "ste_sign",
            vec![],
            "truncated",
        ),
        (
            "f8",
            npy("<f8", &[2], &[0; 16], false),
            "ste_sign",
            vec![],
            "<f8",
        ),
        (
            "dtype",
            npy("<f4", &[4], &f32_bytes(&[1.0; 4]), false),
            "ste_sign",
            vec!["--dtype", "f16"],
            "does not match",
        ),
        (
            "spec",
            npy("<f4", &[4], &f32_bytes(&[1.0; 4]), false),
            "ste_sign(clip_value=-1)",
            vec![],
            "clip_value",
        ),
        (
            "rsign",
            npy("<f4", &[4], &f32_bytes(&[1.0; 4]), false),
            "rsign",
            vec![],
            "thresholds",
        ),
    ];
    for (name, bytes, spec, extra, message) in cases {
        let x = d.path().join(format!("{name}.npy"));
        let y = d.path().join(format!("{name}-out.npy"));
        std::fs::write(&x, bytes).unwrap();
        let mut args = vec![
            "forward",
            spec,
            "--input",
            path_str(&x),
            "--output",
            path_str(&y),
        ];
        args.extend(extra);
        let out = lowbit(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(message), "{name}: {stderr}");
        assert!(!y.exists(), "{name}: left an output behind");
    }
    // A gradient whose shape differs from the input's.
    let dy = d.path().join("dy.npy");
    std::fs::write(&dy, npy("<f4", &[2, 2], &f32_bytes(&[1.0; 4]), false)).unwrap();
    let out = lowbit(&[
        "backward",
        "ste_sign",
        "--input",
        path_str(&good),
        "--grad",
        path_str(&dy),
        "--output",
        path_str(&d.path().join("o.npy")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!d.path().join("o.npy").exists());
}

#[test]
fn info_and_bench_run() {
    let out = lowbit(&["info"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("backend (auto):") && text.contains("cpu threads:"),
        "{text}"
    );

    let out = lowbit(&[
        "bench",
        "ste_sign",
        "dorefa(mode=weights)",
        "--size",
        "4096",
        "--dtype",
        "f32",
        "--dtype",
        "bf16",
        "--repeats",
        "3",
        "--device",
        "cpu",
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let results = json["results"].as_array().unwrap();
    // 2 quantizers × 2 dtypes × forward and backward.
    assert_eq!(results.len(), 8);
    assert!(results.iter().all(
        |r| r["gb_per_s"].as_f64().unwrap() > 0.0 && r["ratio_to_copy"].as_f64().unwrap() > 0.0
    ));
}

/// A .npy file with `header` as it is, for headers numpy would not write.
fn raw_npy(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[version, 0]);
    match version {
        1 => out.extend_from_slice(&(header.len() as u16).to_le_bytes()),
        _ => out.extend_from_slice(&(header.len() as u32).to_le_bytes()),
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn forward(spec: &str, input: &Path, output: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "forward",
        spec,
        "--input",
        path_str(input),
        "--output",
        output,
    ];
    args.extend(extra);
    lowbit(&args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_empty_tensor_along_a_huge_axis_is_done_at_once() {
    let d = dir();
    let (x, y) = (d.path().join("x.npy"), d.path().join("y.npy"));
    std::fs::write(&x, npy("<f4", &[0, 1 << 62], &[], false)).unwrap();
    let out = forward("magnitude_aware_sign", &x, path_str(&y), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&y).unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("'shape': (0, 4611686018427387904)"));
}

#[test]
fn headers_numpy_would_read_otherwise_or_refuse_exit_2() {
    let d = dir();
    let data = f32_bytes(&[1.0; 6]);
    let cases = [
        "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'shape': (2, 3), }",
        "{'descr': \"<f4', 'shape': (6,), 'x': '\", 'fortran_order': False, 'shape': (6,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': ), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': ((2,3),), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (6)), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (06,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (+6,), }",
    ];
    let many = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}6,), }}",
        "1, ".repeat(64)
    );
    // ~22,000 dimensions: a header longer than version 1.0's 16 bits.
    let huge = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}6,), }}",
        "1, ".repeat(22_000)
    );
    let files: Vec<Vec<u8>> = cases
        .iter()
        .map(|h| raw_npy(1, h, &data))
        .chain([raw_npy(1, &many, &data), raw_npy(2, &huge, &data)])
        .collect();
    for (i, bytes) in files.iter().enumerate() {
        let (x, y) = (
            d.path().join(format!("{i}.npy")),
            d.path().join(format!("{i}-out.npy")),
        );
        std::fs::write(&x, bytes).unwrap();
        let out = forward("ste_sign", &x, path_str(&y), &[]);
        assert_eq!(out.status.code(), Some(2), "case {i}: {}", stderr(&out));
        let message = stderr(&out);
        assert!(
            message.contains("header") || message.contains("dtype"),
            "case {i}: {message}"
        );
        assert!(!y.exists(), "case {i}: wrote an output");
    }
}

/// The temporaries the command writes beside its output.
fn temporaries(d: &Path) -> Vec<String> {
    std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("lowbit") && n.ends_with(".tmp"))
        .collect()
}

#[test]
fn special_files_are_written_in_place_and_symlinks_through() {
    let d = dir();
    let x = d.path().join("x.npy");
    std::fs::write(&x, npy("<f4", &[3], &f32_bytes(&[-1.0, 0.5, 2.0]), false)).unwrap();
    let want = {
        let y = d.path().join("plain.npy");
        assert!(forward("ste_sign", &x, path_str(&y), &[]).status.success());
        std::fs::read(&y).unwrap()
    };

    // `-` is stdout; a symlink to it (here a pipe) is written through.
    let out = forward("ste_sign", &x, "-", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, want);
    let to_stdout = d.path().join("stdout.npy");
    std::os::unix::fs::symlink("/dev/stdout", &to_stdout).unwrap();
    let out = forward("ste_sign", &x, path_str(&to_stdout), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, want);
    assert!(std::fs::symlink_metadata(&to_stdout).unwrap().is_symlink());

    // A FIFO (as /dev/null, a device) stays what it is and gets the bytes.
    let fifo = d.path().join("fifo.npy");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let out = forward("ste_sign", &x, path_str(&fifo), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(kind.is_fifo(), "the FIFO was replaced by {kind:?}");
    assert_eq!(reader.join().unwrap(), want);

    // A symlink to a regular file: the target is replaced, keeping its
    // permissions, and the link stays a link.
    std::fs::create_dir(d.path().join("sub")).unwrap();
    let (real, link) = (d.path().join("sub/real.npy"), d.path().join("link.npy"));
    std::fs::write(&real, b"old").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = forward("ste_sign", &x, path_str(&link), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(std::fs::read(&real).unwrap(), want);
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);

    // A symlink to nothing is not followed.
    let dangling = d.path().join("dangling.npy");
    std::os::unix::fs::symlink(d.path().join("nowhere.npy"), &dangling).unwrap();
    let out = forward("ste_sign", &x, path_str(&dangling), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!d.path().join("nowhere.npy").exists());

    assert!(
        temporaries(d.path()).is_empty(),
        "{:?}",
        temporaries(d.path())
    );
    assert!(temporaries(&d.path().join("sub")).is_empty());
}

/// The temporary is created exclusively under a name no one can predict: a
/// symlink planted under the name the command used to choose
/// (`.y.npy.lowbit-<pid>.tmp`) is never written through.
#[test]
fn a_planted_symlink_does_not_redirect_the_output() {
    let d = dir();
    let (x, y) = (d.path().join("x.npy"), d.path().join("y.npy"));
    let victim = d.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // The input is a FIFO, so the command waits for it while the link is
    // planted under its pid.
    assert!(Command::new("mkfifo").arg(&x).status().unwrap().success());
    let child = Command::new(env!("CARGO_BIN_EXE_lowbit"))
        .args([
            "forward",
            "ste_sign",
            "--input",
            path_str(&x),
            "--output",
            path_str(&y),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let planted = d.path().join(format!(".y.npy.lowbit-{}.tmp", child.id()));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    std::fs::write(&x, npy("<f4", &[2], &f32_bytes(&[-1.0, 1.0]), false)).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!std::fs::symlink_metadata(&y).unwrap().is_symlink());
    assert_eq!(read_f32(&y), [-1.0, 1.0]);
}

#[test]
fn noop_keeps_signalling_nans_in_every_dtype() {
    let d = dir();
    // (descr, --dtype, the bits of a signalling NaN and of a quiet one)
    let cases: [(&str, &str, Vec<u8>); 3] = [
        (
            "<f4",
            "f32",
            [0x7F80_0001u32, 0xFFC0_1234]
                .iter()
                .flat_map(|b| b.to_le_bytes())
                .collect(),
        ),
        (
            "<f2",
            "f16",
            [0x7C01u16, 0xFE01]
                .iter()
                .flat_map(|b| b.to_le_bytes())
                .collect(),
        ),
        (
            "<u2",
            "bf16",
            [0x7F81u16, 0xFFC1]
                .iter()
                .flat_map(|b| b.to_le_bytes())
                .collect(),
        ),
    ];
    for (descr, dtype, bits) in cases {
        let (x, y) = (
            d.path().join(format!("{dtype}.npy")),
            d.path().join(format!("{dtype}-y.npy")),
        );
        std::fs::write(&x, npy(descr, &[2], &bits, false)).unwrap();
        let out = forward("noop(precision=8)", &x, path_str(&y), &["--dtype", dtype]);
        assert!(out.status.success(), "{dtype}: {}", stderr(&out));
        let written = std::fs::read(&y).unwrap();
        assert_eq!(written[written.len() - bits.len()..], bits[..], "{dtype}");
        let out = lowbit(&[
            "backward",
            "noop(precision=8)",
            "--input",
            path_str(&x),
            "--grad",
            path_str(&x),
            "--output",
            path_str(&y),
            "--dtype",
            dtype,
        ]);
        assert!(out.status.success(), "{dtype}: {}", stderr(&out));
        let written = std::fs::read(&y).unwrap();
        assert_eq!(
            written[written.len() - bits.len()..],
            bits[..],
            "{dtype} backward"
        );
    }
}

#[test]
fn bench_sizes_no_memory_can_hold_exit_2() {
    for size in ["18446744073709551615", "10000000000000"] {
        let out = lowbit(&[
            "bench", "ste_sign", "--size", size, "--dtype", "f32", "--device", "cpu",
        ]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "--size {size}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("--size"), "{}", stderr(&out));
    }
}
