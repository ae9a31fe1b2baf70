//! The `lowbit` command, run as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lowbit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lowbit"))
        .args(args)
        .output()
        .unwrap()
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lowbit-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
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
    let d = dir("ok");
    let (x, dy, y, dx) = (
        d.join("x.npy"),
        d.join("dy.npy"),
        d.join("y.npy"),
        d.join("dx.npy"),
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
    let d = dir("bf16");
    let (x, y) = (d.join("x.npy"), d.join("y.npy"));
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
    let d = dir("bad");
    let good = d.join("x.npy");
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
        let x = d.join(format!("{name}.npy"));
        let y = d.join(format!("{name}-out.npy"));
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
    let dy = d.join("dy.npy");
    std::fs::write(&dy, npy("<f4", &[2, 2], &f32_bytes(&[1.0; 4]), false)).unwrap();
    let out = lowbit(&[
        "backward",
        "ste_sign",
        "--input",
        path_str(&good),
        "--grad",
        path_str(&dy),
        "--output",
        path_str(&d.join("o.npy")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!d.join("o.npy").exists());
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
