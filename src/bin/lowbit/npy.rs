//! Just enough of numpy's `.npy` format for the `lowbit` command: C-order
//! little-endian arrays of `<f4`, `<f2` and `<u2` (bf16 bit patterns, which
//! numpy lacks), read and written whole.

use std::fmt;

/// An array read from or written to a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Npy {
    /// numpy's type string: `<f4`, `<f2` or `<u2`.
    pub descr: String,
    pub shape: Vec<usize>,
    /// The raw little-endian element bytes.
    pub data: Vec<u8>,
}

/// Why a `.npy` file could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyError(pub String);

impl fmt::Display for NpyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NpyError {}

const MAGIC: &[u8] = b"\x93NUMPY";

fn err<T>(msg: impl Into<String>) -> Result<T, NpyError> {
    Err(NpyError(msg.into()))
}

/// Bytes per element of a supported type string.
pub fn element_size(descr: &str) -> Option<usize> {
    match descr {
        "<f4" => Some(4),
        "<f2" | "<u2" => Some(2),
        _ => None,
    }
}

/// The value of `'key':` in numpy's header dict, up to the next top-level
/// comma or the closing brace.
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

impl Npy {
    /// Parses a whole `.npy` file.
    pub fn parse(bytes: &[u8]) -> Result<Npy, NpyError> {
        if bytes.len() < 10 || &bytes[..6] != MAGIC {
            return err("not a .npy file (no \\x93NUMPY magic)");
        }
        let (header_len, start) = match bytes[6] {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            2 | 3 if bytes.len() >= 12 => (
                u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
                12,
            ),
            v => return err(format!("unsupported .npy version {v}")),
        };
        let header = bytes
            .get(start..start + header_len)
            .ok_or_else(|| NpyError("truncated .npy header".into()))?;
        let header = std::str::from_utf8(header)
            .map_err(|_| NpyError("the .npy header is not text".into()))?;
        let descr = field(header, "descr")
            .map(|d| d.trim_matches(['\'', '"']).to_string())
            .ok_or_else(|| NpyError("the .npy header has no descr".into()))?;
        let size = element_size(&descr).ok_or_else(|| {
            NpyError(format!(
                "unsupported dtype {descr} (expected <f4, <f2, or <u2 for bf16 bits)"
            ))
        })?;
        match field(header, "fortran_order") {
            Some("False") => {}
            Some("True") => {
                return err("Fortran-order arrays are not supported (save with order='C')");
            }
            _ => return err("the .npy header has no fortran_order"),
        }
        let shape_text = field(header, "shape")
            .ok_or_else(|| NpyError("the .npy header has no shape".into()))?;
        let shape = shape_text
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<usize>()
                    .map_err(|_| NpyError(format!("bad shape {shape_text}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let count = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(size))
            .ok_or_else(|| NpyError(format!("shape {shape_text} is too large")))?;
        let data = &bytes[start + header_len..];
        if data.len() != count {
            return err(format!(
                "truncated or oversized data: shape {shape_text} of {descr} needs {count} bytes, the file has {}",
                data.len()
            ));
        }
        Ok(Npy {
            descr,
            shape,
            data: data.to_vec(),
        })
    }

    /// The file's bytes (format version 1.0, header padded to 64 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let shape = match self.shape.len() {
            1 => format!("({},)", self.shape[0]),
            _ => format!(
                "({})",
                self.shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut header = format!(
            "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
            self.descr
        );
        let unpadded = MAGIC.len() + 4 + header.len() + 1;
        header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
        header.push('\n');
        let mut out = Vec::with_capacity(10 + header.len() + self.data.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&self.data);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for shape in [vec![], vec![3], vec![2, 0, 4]] {
            let n: usize = shape.iter().product();
            let a = Npy {
                descr: "<f2".into(),
                shape: shape.clone(),
                data: (0..n * 2).map(|i| i as u8).collect(),
            };
            let bytes = a.to_bytes();
            assert_eq!(
                (10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64,
                0
            );
            assert_eq!(Npy::parse(&bytes).unwrap(), a);
        }
    }

    #[test]
    fn reads_numpys_own_header() {
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }          \n";
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0u8; 24]);
        let a = Npy::parse(&bytes).unwrap();
        assert_eq!((a.descr.as_str(), a.shape.as_slice()), ("<f4", &[2, 3][..]));
    }

    #[test]
    fn bad_files_are_errors() {
        let good = Npy {
            descr: "<f4".into(),
            shape: vec![4],
            data: vec![0; 16],
        }
        .to_bytes();
        assert!(
            Npy::parse(&good[..good.len() - 1])
                .unwrap_err()
                .0
                .contains("truncated")
        );
        assert!(Npy::parse(b"hello").is_err());
        let replace = |from: &[u8], to: &[u8]| {
            let at = good.windows(from.len()).position(|w| w == from).unwrap();
            [&good[..at], to, &good[at + from.len()..]].concat()
        };
        assert!(
            Npy::parse(&replace(b"False", b"True "))
                .unwrap_err()
                .0
                .contains("Fortran")
        );
        assert!(
            Npy::parse(&replace(b"<f4", b"<f8"))
                .unwrap_err()
                .0
                .contains("<f8")
        );
    }
}
