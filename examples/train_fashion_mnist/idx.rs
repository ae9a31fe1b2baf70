//! The IDX format of MNIST and Fashion-MNIST (LeCun et al.), gzipped or
//! not: a header of two zero bytes, an element type, a dimension count and
//! the dimensions as big-endian `u32`s, then the elements in C order.
//!
//! Only unsigned bytes (type 0x08) are read: the images and the labels of
//! both data sets are stored so. A file is read whole and checked against
//! its header; a bad file is an [`IdxError`] that says what is wrong, never
//! a panic, and the header's dimensions never size an allocation (a hostile
//! header cannot ask for terabytes).

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

/// Why an IDX file, or a pair of them, could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxError(pub String);

impl fmt::Display for IdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IdxError {}

/// An array of unsigned bytes read from an IDX file.
#[derive(Debug, Clone, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// The element type codes of the format, for the messages.
fn type_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => return None,
    })
}

const UNSIGNED_BYTE: u8 = 0x08;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

impl Idx {
    /// Reads an IDX file, gunzipping it if it starts with gzip's magic.
    pub fn read(path: &Path) -> Result<Idx, IdxError> {
        let fail = |e: io::Error| IdxError(format!("{}: {e}", path.display()));
        let mut file = BufReader::new(File::open(path).map_err(fail)?);
        let mut magic = [0u8; 2];
        let n = read_up_to(&mut file, &mut magic).map_err(fail)?;
        let head = io::Cursor::new(magic[..n].to_vec());
        let result = if magic == GZIP_MAGIC {
            Idx::from_reader(MultiGzDecoder::new(head.chain(file)))
        } else {
            Idx::from_reader(head.chain(file))
        };
        result.map_err(|IdxError(e)| IdxError(format!("{}: {e}", path.display())))
    }

    /// Reads an uncompressed IDX stream to its end.
    pub fn from_reader(mut r: impl Read) -> Result<Idx, IdxError> {
        let io = |e: io::Error| IdxError(format!("cannot read: {e}"));
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut r, &mut magic).map_err(io)?;
        if n < 4 {
            return Err(IdxError(format!(
                "not an IDX file: {n} bytes, shorter than the 4-byte magic"
            )));
        }
        if magic[..2] != [0, 0] {
            return Err(IdxError(format!(
                "not an IDX file: the magic {:02x} {:02x} {:02x} {:02x} does not start with two zero bytes",
                magic[0], magic[1], magic[2], magic[3]
            )));
        }
        let (code, rank) = (magic[2], usize::from(magic[3]));
        if code != UNSIGNED_BYTE {
            let name = match type_name(code) {
                Some(name) => format!("0x{code:02x} ({name})"),
                None => format!("0x{code:02x}, not an IDX type"),
            };
            return Err(IdxError(format!(
                "element type {name}: only 0x08 (unsigned byte) is read"
            )));
        }
        if rank == 0 {
            return Err(IdxError("the header declares no dimensions".into()));
        }
        let mut raw = vec![0u8; 4 * rank];
        let n = read_up_to(&mut r, &mut raw).map_err(io)?;
        if n < raw.len() {
            return Err(IdxError(format!(
                "truncated header: {rank} dimensions need {} bytes, the file ends after {n}",
                raw.len()
            )));
        }
        let dims: Vec<usize> = raw
            .chunks_exact(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .collect();
        let len = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| IdxError(format!("dims {dims:?} are too large")))?;
        // Read at most one byte more than the header asks for, growing the
        // buffer as bytes arrive: its size is bounded by the file, not by
        // the header.
        let mut data = Vec::new();
        let limit = u64::try_from(len).map_or(u64::MAX, |l| l.saturating_add(1));
        (&mut r).take(limit).read_to_end(&mut data).map_err(io)?;
        if data.len() != len {
            let more = io::copy(&mut r, &mut io::sink()).map_err(io)?;
            let what = if data.len() < len {
                "truncated data"
            } else {
                "data beyond the dims"
            };
            return Err(IdxError(format!(
                "{what}: dims {dims:?} hold {len} bytes, the file has {}",
                data.len() as u64 + more
            )));
        }
        Ok(Idx { dims, data })
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Labelled images: `count` images of `rows × cols` bytes, row by row, and
/// one label per image.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Labelled {
    /// Pairs an images file (3 dims) with a labels file (1 dim): the counts
    /// must agree and every label must be below `classes`.
    pub fn read(images: &Path, labels: &Path, classes: u8) -> Result<Labelled, IdxError> {
        Labelled::pair(Idx::read(images)?, Idx::read(labels)?, classes).map_err(|IdxError(e)| {
            IdxError(format!(
                "{} and {}: {e}",
                images.display(),
                labels.display()
            ))
        })
    }

    /// [`Labelled::read`]'s checks on arrays already read.
    pub fn pair(images: Idx, labels: Idx, classes: u8) -> Result<Labelled, IdxError> {
        let &[count, rows, cols] = images.dims.as_slice() else {
            return Err(IdxError(format!(
                "the images have dims {:?}, not [count, rows, cols]",
                images.dims
            )));
        };
        let &[label_count] = labels.dims.as_slice() else {
            return Err(IdxError(format!(
                "the labels have dims {:?}, not [count]",
                labels.dims
            )));
        };
        if label_count != count {
            return Err(IdxError(format!("{count} images but {label_count} labels")));
        }
        if let Some(i) = labels.data.iter().position(|&l| l >= classes) {
            return Err(IdxError(format!(
                "label {} of image {i} is not a class 0..{}",
                labels.data[i],
                classes.saturating_sub(1)
            )));
        }
        Ok(Labelled {
            count,
            rows,
            cols,
            pixels: images.data,
            labels: labels.data,
        })
    }
}
