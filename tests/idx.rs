//! The Fashion-MNIST example's IDX reader: the shipped files read as the
//! data set is documented, and a bad file is refused with a message that
//! says what is wrong, never a panic or an allocation the header asks for.

#[path = "../examples/train_fashion_mnist/idx.rs"]
mod idx;

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use idx::{Idx, IdxError, Labelled};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/fashion-mnist");

/// An IDX file's bytes: header then data.
fn idx_bytes(code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, code, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).expect("gzip to memory");
    e.finish().expect("gzip to memory")
}

/// Writes `bytes` to a file in `dir` and reads it back.
fn read(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> (PathBuf, Result<Idx, IdxError>) {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write a temporary file");
    let result = Idx::read(&path);
    (path, result)
}

/// The error `bytes` get, plain and gzipped; both must name the file.
fn error(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (path, plain) = read(&dir, "plain", bytes);
    let (gz_path, gz) = read(&dir, "gz", &gzip(bytes));
    let (plain, gz) = (plain.expect_err("refused"), gz.expect_err("refused"));
    assert!(plain.0.starts_with(&path.display().to_string()), "{plain}");
    let unnamed = |e: &IdxError, p: &Path| e.0[p.display().to_string().len()..].to_string();
    assert_eq!(unnamed(&plain, &path), unnamed(&gz, &gz_path));
    plain.0
}

fn assert_says(got: &str, wanted: &str) {
    assert!(got.contains(wanted), "{got:?} does not say {wanted:?}");
}

#[test]
fn a_small_file_reads_plain_and_gzipped() {
    let bytes = idx_bytes(0x08, &[2, 3], &[1, 2, 3, 4, 5, 6]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, b) in [("plain", bytes.clone()), ("gz", gzip(&bytes))] {
        let (_, got) = read(&dir, name, &b);
        let want = Idx {
            dims: vec![2, 3],
            data: vec![1, 2, 3, 4, 5, 6],
        };
        assert_eq!(got, Ok(want), "{name}");
    }
}

#[test]
fn the_shipped_files_are_fashion_mnist() {
    for (set, count) in [("train", 60_000), ("t10k", 10_000)] {
        let images = Path::new(DATA).join(format!("{set}-images-idx3-ubyte.gz"));
        let labels = Path::new(DATA).join(format!("{set}-labels-idx1-ubyte.gz"));
        let s = Labelled::read(&images, &labels, 10).expect("the shipped files read");
        assert_eq!((s.count, s.rows, s.cols), (count, 28, 28));
        assert_eq!(s.pixels.len(), count * 28 * 28);
        // Balanced: each class holds a tenth of the images.
        for class in 0..10 {
            let n = s.labels.iter().filter(|&&l| l == class).count();
            assert_eq!(n, count / 10, "{set}: class {class}");
        }
    }
}

#[test]
fn a_bad_magic_is_refused() {
    assert_says(&error(&[0x50, 0x4b, 3, 4, 0, 0]), "not an IDX file");
    assert_says(&error(&[0, 0, 8]), "shorter than the 4-byte magic");
    assert_says(&error(&[]), "shorter than the 4-byte magic");
}

#[test]
fn an_element_type_other_than_bytes_is_refused() {
    let e = error(&idx_bytes(0x0D, &[1], &[0; 4]));
    assert_says(&e, "element type 0x0d (f32)");
    assert_says(&e, "only 0x08 (unsigned byte)");
    assert_says(
        &error(&idx_bytes(0x42, &[1], &[0])),
        "0x42, not an IDX type",
    );
}

#[test]
fn a_header_without_dims_or_cut_short_is_refused() {
    assert_says(&error(&idx_bytes(0x08, &[], &[])), "no dimensions");
    let mut cut = idx_bytes(0x08, &[60_000, 28, 28], &[]);
    cut.truncate(9);
    assert_says(
        &error(&cut),
        "truncated header: 3 dimensions need 12 bytes, the file ends after 5",
    );
}

#[test]
fn data_that_does_not_match_the_dims_is_refused() {
    let short = error(&idx_bytes(0x08, &[2, 3], &[1, 2, 3, 4, 5]));
    assert_says(
        &short,
        "truncated data: dims [2, 3] hold 6 bytes, the file has 5",
    );
    let long = error(&idx_bytes(0x08, &[2, 3], &[0; 100]));
    assert_says(
        &long,
        "data beyond the dims: dims [2, 3] hold 6 bytes, the file has 100",
    );
}

#[test]
fn a_hostile_header_allocates_nothing_it_asks_for() {
    // 2^96 bytes: does not fit a usize.
    let huge = error(&idx_bytes(0x08, &[u32::MAX; 3], &[1, 2, 3]));
    assert_says(&huge, "are too large");
    // 2^62 bytes fits a usize; an allocation of that size would abort.
    let big = error(&idx_bytes(0x08, &[1 << 31, 1 << 31], &[1, 2, 3]));
    assert_says(&big, "truncated data");
    assert_says(&big, "the file has 3");
}

#[test]
fn a_corrupt_gzip_stream_is_an_error() {
    let mut gz = gzip(&idx_bytes(0x08, &[4], &[1, 2, 3, 4]));
    let end = gz.len();
    gz.truncate(end - 6);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (path, got) = read(&dir, "cut.gz", &gz);
    let e = got.expect_err("refused");
    assert!(e.0.starts_with(&path.display().to_string()), "{e}");
}

#[test]
fn a_missing_file_is_named() {
    let e = Idx::read(Path::new("/nonexistent/labels.gz")).expect_err("refused");
    assert_says(&e.0, "/nonexistent/labels.gz");
}

fn labelled(image_dims: &[usize], labels: &[u8]) -> Result<Labelled, IdxError> {
    let images = Idx {
        dims: image_dims.to_vec(),
        data: vec![0; image_dims.iter().product()],
    };
    let labels = Idx {
        dims: vec![labels.len()],
        data: labels.to_vec(),
    };
    Labelled::pair(images, labels, 10)
}

#[test]
fn images_and_labels_must_pair() {
    let ok = labelled(&[3, 2, 2], &[0, 9, 4]).expect("a valid pair");
    assert_eq!((ok.count, ok.rows, ok.cols), (3, 2, 2));
    let e = labelled(&[3, 2, 2], &[0, 9]).expect_err("refused");
    assert_says(&e.0, "3 images but 2 labels");
    let e = labelled(&[3, 4], &[0, 1, 2]).expect_err("refused");
    assert_says(&e.0, "not [count, rows, cols]");
    let e = labelled(&[3, 2, 2], &[0, 10, 1]).expect_err("refused");
    assert_says(&e.0, "label 10 of image 1 is not a class 0..9");
}

#[test]
fn a_pair_from_files_names_both() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (images, _) = read(&dir, "images", &idx_bytes(0x08, &[2, 1, 1], &[7, 8]));
    let (labels, _) = read(&dir, "labels", &idx_bytes(0x08, &[3], &[1, 2, 3]));
    let e = Labelled::read(&images, &labels, 10).expect_err("refused");
    assert_says(&e.0, &images.display().to_string());
    assert_says(&e.0, &labels.display().to_string());
    assert_says(&e.0, "2 images but 3 labels");
}
