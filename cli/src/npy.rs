//! Just enough of numpy's `.npy` format for the `lowbit` command: C-order
//! little-endian arrays of `<f4`, `<f2` and `<u2` (bf16 bit patterns, which
//! numpy lacks), read and written whole.
//!
//! The header is a Python literal, a dict, and is parsed as one (see
//! [`literal`]): a file is read as numpy reads it, or refused. What numpy's
//! `read_array_header` refuses is refused here too, and so is a key given
//! twice (Python would keep the last one silently).

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

/// Why a `.npy` file could not be read or written.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyError(pub String);

impl fmt::Display for NpyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NpyError {}

const MAGIC: &[u8] = b"\x93NUMPY";

/// numpy's `read_array_header` refuses longer headers unless told to trust
/// the file (`max_header_size`, 10000 by default).
const MAX_HEADER_LEN: usize = 10_000;

/// numpy's `NPY_MAXDIMS`: an array has at most this many dimensions.
pub const MAX_DIMS: usize = 64;

/// The data of a file and its header are aligned to this many bytes.
const ALIGN: usize = 64;

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

impl Npy {
    /// Parses a whole `.npy` file.
    pub fn parse(bytes: &[u8]) -> Result<Npy, NpyError> {
        if bytes.len() < 8 || &bytes[..6] != MAGIC {
            return err("not a .npy file (no \\x93NUMPY magic)");
        }
        let version = (bytes[6], bytes[7]);
        let (len_bytes, latin1) = match version {
            (1, 0) => (2, true),
            (2, 0) => (4, true),
            // Version 3.0 is 2.0 with a UTF-8 header.
            (3, 0) => (4, false),
            (major, minor) => return err(format!("unsupported .npy version {major}.{minor}")),
        };
        let start = 8 + len_bytes;
        let len_field = bytes
            .get(8..start)
            .ok_or_else(|| NpyError("truncated .npy header".into()))?;
        let header_len = len_field
            .iter()
            .rev()
            .fold(0usize, |n, &b| (n << 8) | usize::from(b));
        if header_len > MAX_HEADER_LEN {
            return err(format!(
                "the .npy header is {header_len} bytes, more than the {MAX_HEADER_LEN} numpy reads"
            ));
        }
        let header = bytes
            .get(start..start + header_len)
            .ok_or_else(|| NpyError("truncated .npy header".into()))?;
        let header: String = if latin1 {
            header.iter().map(|&b| char::from(b)).collect()
        } else {
            String::from_utf8(header.to_vec())
                .map_err(|_| NpyError("the version 3.0 .npy header is not UTF-8".into()))?
        };
        let (descr, shape) = read_header(&header)?;
        let size = element_size(&descr).ok_or_else(|| {
            NpyError(format!(
                "unsupported dtype {descr} (expected <f4, <f2, or <u2 for bf16 bits)"
            ))
        })?;
        let count = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(size))
            .ok_or_else(|| NpyError(format!("shape {shape:?} is too large")))?;
        let data = &bytes[start + header_len..];
        if data.len() != count {
            return err(format!(
                "truncated or oversized data: shape {shape:?} of {descr} needs {count} bytes, the file has {}",
                data.len()
            ));
        }
        Ok(Npy {
            descr,
            shape,
            data: data.to_vec(),
        })
    }

    /// The file's bytes, as numpy writes them: format version 1.0, or 2.0
    /// when the header's length does not fit version 1.0's 16 bits; the
    /// data starts at a multiple of 64 bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, NpyError> {
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
        let dict = format!(
            "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
            self.descr
        );
        // Versions 1.0 and 2.0 differ only in the length field: 2 or 4
        // bytes. The header is ASCII, so version 3.0 (UTF-8) is never needed.
        let mut header = Vec::new();
        for (version, len_bytes) in [(1u8, 2usize), (2, 4)] {
            let prefix = MAGIC.len() + 2 + len_bytes;
            let unpadded = prefix + dict.len() + 1;
            let len = unpadded.next_multiple_of(ALIGN) - prefix;
            let field = (len as u64).to_le_bytes();
            if field[len_bytes..].iter().any(|&b| b != 0) {
                continue;
            }
            header.extend_from_slice(MAGIC);
            header.extend_from_slice(&[version, 0]);
            header.extend_from_slice(&field[..len_bytes]);
            header.extend_from_slice(dict.as_bytes());
            header.resize(prefix + len - 1, b' ');
            header.push(b'\n');
            break;
        }
        if header.is_empty() {
            return err(format!(
                "a header of {} bytes does not fit a .npy file",
                dict.len()
            ));
        }
        let mut out = Vec::with_capacity(header.len() + self.data.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.data);
        Ok(out)
    }
}

/// The descr and the shape of a header, checked as numpy checks them.
fn read_header(header: &str) -> Result<(String, Vec<usize>), NpyError> {
    use literal::Value;
    let bad = |what: String| NpyError(format!("the .npy header {what}"));
    let Value::Dict(entries) =
        literal::parse(header).map_err(|e| bad(format!("is not a Python literal: {e}")))?
    else {
        return Err(bad("is not a dictionary".into()));
    };
    let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    if keys != ["descr", "fortran_order", "shape"] {
        return Err(bad(format!(
            "has the keys {keys:?}, not descr, fortran_order and shape"
        )));
    }
    let get = |key: &str| {
        &entries
            .iter()
            .find(|(k, _)| k == key)
            .expect("checked above")
            .1
    };
    let descr = match get("descr") {
        Value::Str(s) => s.clone(),
        v => return Err(bad(format!("has a descr that is not a string: {v}"))),
    };
    match get("fortran_order") {
        Value::Bool(false) => {}
        Value::Bool(true) => {
            return err("Fortran-order arrays are not supported (save with order='C')");
        }
        v => return Err(bad(format!("has a fortran_order that is not a bool: {v}"))),
    }
    let shape = match get("shape") {
        Value::Tuple(dims) => dims
            .iter()
            .map(|d| match d {
                Value::Int(n) => Ok(*n),
                _ => Err(bad(format!(
                    "has a shape that is not a tuple of integers: {}",
                    get("shape")
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        v => return Err(bad(format!("has a shape that is not a tuple: {v}"))),
    };
    if shape.len() > MAX_DIMS {
        return Err(bad(format!(
            "has a shape of {} dimensions, more than numpy's {MAX_DIMS}",
            shape.len()
        )));
    }
    Ok((descr, shape))
}

/// The Python literals a `.npy` header is made of, parsed as Python parses
/// them: dicts, tuples, lists, strings with their escapes, integers,
/// `True`, `False` and `None`. Anything else is an error, and so are forms
/// numpy never writes where Python's reading of them differs from the
/// plain one: a key given twice, a sign in front of an integer.
pub mod literal {
    use std::fmt;

    /// A parsed literal.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Value {
        /// `{'key': value, ...}`, keys in order (strings, each once).
        Dict(Vec<(String, Value)>),
        /// `(a, b)`, `(a,)`, `()`.
        Tuple(Vec<Value>),
        /// `[a, b]`.
        List(Vec<Value>),
        /// `'text'` or `"text"`, escapes resolved.
        Str(String),
        /// A non-negative integer that fits `usize`.
        Int(usize),
        /// `True` or `False`.
        Bool(bool),
        /// `None`.
        None,
    }

    impl fmt::Display for Value {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let list = |f: &mut fmt::Formatter<'_>, items: &[Value]| {
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                Ok(())
            };
            match self {
                Value::Dict(entries) => {
                    f.write_str("{")?;
                    for (i, (k, v)) in entries.iter().enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        write!(f, "{k:?}: {v}")?;
                    }
                    f.write_str("}")
                }
                Value::Tuple(items) => {
                    f.write_str("(")?;
                    list(f, items)?;
                    f.write_str(if items.len() == 1 { ",)" } else { ")" })
                }
                Value::List(items) => {
                    f.write_str("[")?;
                    list(f, items)?;
                    f.write_str("]")
                }
                Value::Str(s) => write!(f, "{s:?}"),
                Value::Int(n) => write!(f, "{n}"),
                Value::Bool(true) => f.write_str("True"),
                Value::Bool(false) => f.write_str("False"),
                Value::None => f.write_str("None"),
            }
        }
    }

    /// Deeper nesting than this is refused (CPython's parser stops at 200;
    /// a header nests 3 deep at most).
    const MAX_DEPTH: usize = 100;

    /// Parses `text`, one literal and whitespace around it.
    pub fn parse(text: &str) -> Result<Value, String> {
        let mut p = Parser {
            chars: text.char_indices().collect(),
            at: 0,
            depth: 0,
        };
        // Python's literal_eval strips leading spaces and tabs only.
        while matches!(p.peek(), Some(' ' | '\t')) {
            p.at += 1;
        }
        let value = p.value()?;
        p.skip_space();
        match p.peek() {
            None => Ok(value),
            Some(c) => Err(p.error(&format!("unexpected {c:?} after the value"))),
        }
    }

    struct Parser {
        chars: Vec<(usize, char)>,
        at: usize,
        depth: usize,
    }

    impl Parser {
        fn peek(&self) -> Option<char> {
            self.chars.get(self.at).map(|&(_, c)| c)
        }

        fn peek_at(&self, ahead: usize) -> Option<char> {
            self.chars.get(self.at + ahead).map(|&(_, c)| c)
        }

        fn next(&mut self) -> Option<char> {
            let c = self.peek();
            self.at += 1;
            c
        }

        fn error(&self, what: &str) -> String {
            let offset = self.chars.get(self.at).map_or_else(
                || self.chars.last().map_or(0, |&(i, c)| i + c.len_utf8()),
                |&(i, _)| i,
            );
            format!("{what} at byte {offset}")
        }

        /// Whitespace inside brackets, where Python joins lines.
        fn skip_space(&mut self) {
            while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r' | '\x0c')) {
                self.at += 1;
            }
        }

        fn expect(&mut self, c: char) -> Result<(), String> {
            self.skip_space();
            if self.peek() == Some(c) {
                self.at += 1;
                Ok(())
            } else {
                Err(self.error(&format!("expected {c:?}")))
            }
        }

        fn value(&mut self) -> Result<Value, String> {
            self.skip_space();
            match self.peek() {
                Some('{') => self.nested(Self::dict),
                Some('(') => self.nested(Self::paren),
                Some('[') => self.nested(Self::list),
                Some('\'' | '"') => self.strings(),
                Some('0'..='9') => self.int(),
                Some(c) if c.is_alphabetic() || c == '_' => self.name(),
                Some('+' | '-') => Err(self.error("a signed number (numpy writes none)")),
                Some(c) => Err(self.error(&format!("unexpected {c:?}"))),
                None => Err(self.error("expected a value")),
            }
        }

        fn nested(&mut self, f: fn(&mut Self) -> Result<Value, String>) -> Result<Value, String> {
            if self.depth == MAX_DEPTH {
                return Err(self.error("brackets nested too deeply"));
            }
            self.depth += 1;
            let value = f(self);
            self.depth -= 1;
            value
        }

        /// Items up to `close`, comma-separated, a trailing comma allowed;
        /// also says whether there was a comma (which makes `(a,)` a tuple).
        fn items(&mut self, close: char) -> Result<(Vec<Value>, bool), String> {
            self.at += 1; // the opening bracket
            let mut items = Vec::new();
            let mut comma = false;
            loop {
                self.skip_space();
                if self.peek() == Some(close) {
                    self.at += 1;
                    return Ok((items, comma));
                }
                items.push(self.value()?);
                self.skip_space();
                match self.peek() {
                    Some(',') => {
                        self.at += 1;
                        comma = true;
                    }
                    Some(c) if c == close => {}
                    _ => return Err(self.error(&format!("expected ',' or {close:?}"))),
                }
            }
        }

        fn paren(&mut self) -> Result<Value, String> {
            match self.items(')')? {
                (items, true) => Ok(Value::Tuple(items)),
                (items, false) if items.is_empty() => Ok(Value::Tuple(items)),
                // `(a)` is `a` in parentheses, not a tuple.
                (mut items, false) => Ok(items.pop().expect("one item")),
            }
        }

        fn list(&mut self) -> Result<Value, String> {
            Ok(Value::List(self.items(']')?.0))
        }

        fn dict(&mut self) -> Result<Value, String> {
            self.at += 1; // {
            let mut entries: Vec<(String, Value)> = Vec::new();
            loop {
                self.skip_space();
                if self.peek() == Some('}') {
                    self.at += 1;
                    return Ok(Value::Dict(entries));
                }
                let key_at = self.at;
                let Value::Str(key) = self.value()? else {
                    self.at = key_at;
                    return Err(self.error("a dictionary key that is not a string"));
                };
                if entries.iter().any(|(k, _)| *k == key) {
                    self.at = key_at;
                    return Err(self.error(&format!("the key {key:?} given twice")));
                }
                self.expect(':')?;
                let value = self.value()?;
                entries.push((key, value));
                self.skip_space();
                match self.peek() {
                    Some(',') => self.at += 1,
                    Some('}') => {}
                    _ => return Err(self.error("expected ',' or '}'")),
                }
            }
        }

        /// One string, or several side by side, which Python joins.
        fn strings(&mut self) -> Result<Value, String> {
            let mut text = self.string()?;
            loop {
                let before = self.at;
                self.skip_space();
                if matches!(self.peek(), Some('\'' | '"')) {
                    text.push_str(&self.string()?);
                } else {
                    self.at = before;
                    return Ok(Value::Str(text));
                }
            }
        }

        fn string(&mut self) -> Result<String, String> {
            let quote = self.next().expect("a quote");
            if self.peek() == Some(quote) && self.peek_at(1) == Some(quote) {
                self.at -= 1;
                return Err(self.error("a triple-quoted string (numpy writes none)"));
            }
            let mut out = String::new();
            loop {
                match self.next() {
                    None | Some('\n' | '\r') => {
                        self.at -= 1;
                        return Err(self.error("an unterminated string"));
                    }
                    Some(c) if c == quote => return Ok(out),
                    Some('\\') => self.escape(&mut out)?,
                    Some(c) => out.push(c),
                }
            }
        }

        /// The escape after a backslash, as Python reads it in a str.
        fn escape(&mut self, out: &mut String) -> Result<(), String> {
            let Some(c) = self.next() else {
                return Err(self.error("an unterminated string"));
            };
            let simple = match c {
                // A backslash before a line break joins the lines.
                '\n' => return Ok(()),
                '\r' => {
                    if self.peek() == Some('\n') {
                        self.at += 1;
                    }
                    return Ok(());
                }
                '\\' | '\'' | '"' => c,
                'a' => '\x07',
                'b' => '\x08',
                'f' => '\x0c',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'v' => '\x0b',
                '0'..='7' => {
                    let mut code = c.to_digit(8).expect("an octal digit");
                    for _ in 0..2 {
                        match self.peek().and_then(|d| d.to_digit(8)) {
                            Some(d) => {
                                code = code * 8 + d;
                                self.at += 1;
                            }
                            None => break,
                        }
                    }
                    char::from_u32(code).expect("at most 0o777")
                }
                'x' => self.hex(2)?,
                'u' => self.hex(4)?,
                'U' => self.hex(8)?,
                'N' => return Err(self.error("a \\N{...} escape (numpy writes none)")),
                // Python keeps an unknown escape as it is.
                _ => {
                    out.push('\\');
                    c
                }
            };
            out.push(simple);
            Ok(())
        }

        fn hex(&mut self, digits: usize) -> Result<char, String> {
            let mut code = 0u32;
            for _ in 0..digits {
                match self.peek().and_then(|d| d.to_digit(16)) {
                    Some(d) => {
                        code = code * 16 + d;
                        self.at += 1;
                    }
                    None => return Err(self.error(&format!("expected {digits} hex digits"))),
                }
            }
            // Python admits lone surrogates in a str; no descr holds one.
            char::from_u32(code).ok_or_else(|| self.error("an escape that is not a character"))
        }

        /// Python's integer literals: `0`, `123`, `1_000`, `0x1f`, `0o17`,
        /// `0b101`; `05` is a syntax error in Python 3, and so here.
        fn int(&mut self) -> Result<Value, String> {
            let start = self.at;
            let radix = match (self.peek(), self.peek_at(1)) {
                (Some('0'), Some('x' | 'X')) => 16,
                (Some('0'), Some('o' | 'O')) => 8,
                (Some('0'), Some('b' | 'B')) => 2,
                _ => 10,
            };
            if radix != 10 {
                self.at += 2;
            }
            let mut digits = String::new();
            let mut underscore_ok = radix != 10;
            loop {
                match self.peek() {
                    Some('_') if underscore_ok => {
                        self.at += 1;
                        underscore_ok = false;
                        // An underscore must be followed by a digit.
                        if !self.peek().is_some_and(|d| d.is_digit(radix)) {
                            return Err(self.error("a misplaced '_' in a number"));
                        }
                    }
                    Some(d) if d.is_digit(radix) => {
                        digits.push(d);
                        self.at += 1;
                        underscore_ok = true;
                    }
                    _ => break,
                }
            }
            if self
                .peek()
                .is_some_and(|c| c.is_alphanumeric() || c == '.' || c == '_')
            {
                return Err(self.error("a number that is not an integer"));
            }
            if digits.is_empty() {
                self.at = start;
                return Err(self.error("a number without digits"));
            }
            if radix == 10
                && digits.len() > 1
                && digits.starts_with('0')
                && digits.contains(|d| d != '0')
            {
                self.at = start;
                return Err(self.error("leading zeros in a decimal integer"));
            }
            usize::from_str_radix(&digits, radix)
                .map(Value::Int)
                .map_err(|_| {
                    self.at = start;
                    self.error("an integer too large")
                })
        }

        fn name(&mut self) -> Result<Value, String> {
            let start = self.at;
            let mut name = String::new();
            while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_') {
                name.push(c);
                self.at += 1;
            }
            match name.as_str() {
                "True" => Ok(Value::Bool(true)),
                "False" => Ok(Value::Bool(false)),
                "None" => Ok(Value::None),
                _ => {
                    self.at = start;
                    Err(self.error(&format!("the name {name:?}, which is not a literal")))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::literal::{self, Value};
    use super::*;
    use proptest::prelude::*;

    fn file(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[version, 0]);
        match version {
            1 => bytes.extend_from_slice(&(header.len() as u16).to_le_bytes()),
            _ => bytes.extend_from_slice(&(header.len() as u32).to_le_bytes()),
        }
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn round_trips() {
        for shape in [vec![], vec![3], vec![2, 0, 4]] {
            let n: usize = shape.iter().product();
            let a = Npy {
                descr: "<f2".into(),
                shape: shape.clone(),
                data: (0..n * 2).map(|i| i as u8).collect(),
            };
            let bytes = a.to_bytes().unwrap();
            assert_eq!(
                (10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64,
                0
            );
            assert_eq!(Npy::parse(&bytes).unwrap(), a);
        }
    }

    #[test]
    fn reads_numpys_own_headers_in_every_version() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }          \n";
        for version in [1, 2, 3] {
            let a = Npy::parse(&file(version, header, &[0u8; 24])).unwrap();
            assert_eq!((a.descr.as_str(), a.shape.as_slice()), ("<f4", &[2, 3][..]));
        }
        // Python's other spellings of the same literal.
        let header = "{\"shape\": (0x2, 3,), 'fortran_order': False,\n 'descr': '<' \"f4\"}";
        let a = Npy::parse(&file(1, header, &[0u8; 24])).unwrap();
        assert_eq!((a.descr.as_str(), a.shape.as_slice()), ("<f4", &[2, 3][..]));
    }

    #[test]
    fn bad_files_are_errors() {
        let good = Npy {
            descr: "<f4".into(),
            shape: vec![4],
            data: vec![0; 16],
        }
        .to_bytes()
        .unwrap();
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
        assert!(Npy::parse(&replace(b"\x01\x00", b"\x01\x01")).is_err());
    }

    /// Headers numpy's `read_array_header` refuses, or that Python reads
    /// differently from a first-match scan: each is an error.
    #[test]
    fn headers_are_read_as_the_python_literal_they_are() {
        let data = [0u8; 24];
        let cases = [
            // Python keeps the last of two equal keys: refused, not guessed.
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'shape': (2, 3), }",
                "given twice",
            ),
            // Key text inside a string value is only text.
            (
                "{'descr': \"<f4', 'shape': (6,), 'x': '\", 'fortran_order': False, 'shape': (2, 3), }",
                "unsupported dtype",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': ), }",
                "unexpected ')'",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (,), }",
                "unexpected ','",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': ((2, 3),), }",
                "not a tuple of integers",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (5)), }",
                "expected ','",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (05,), }",
                "leading zeros",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (+6,), }",
                "signed",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (6), }",
                "not a tuple",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (True,), }",
                "not a tuple of integers",
            ),
            (
                "{'descr': '<f4', 'fortran_order': 0, 'shape': (6,), }",
                "not a bool",
            ),
            ("{'descr': '<f4', 'shape': (6,), }", "keys"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x': 1}",
                "keys",
            ),
            (
                "{'descr': b'<f4', 'fortran_order': False, 'shape': (6,), }",
                "name \"b\"",
            ),
            (
                "{'descr': '<f4, 'fortran_order': False, 'shape': (6,), }",
                "expected ','",
            ),
            ("['descr', '<f4']", "not a dictionary"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), } x",
                "after the value",
            ),
        ];
        for (header, message) in cases {
            let e = Npy::parse(&file(1, header, &data)).unwrap_err().0;
            assert!(e.contains(message), "{header}\n  gave: {e}");
        }
        let dims = |n: usize| {
            let shape = vec!["1"; n].join(", ");
            format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape},), }}")
        };
        assert!(Npy::parse(&file(1, &dims(MAX_DIMS), &[0; 4])).is_ok());
        let e = Npy::parse(&file(1, &dims(MAX_DIMS + 1), &[0; 4]))
            .unwrap_err()
            .0;
        assert!(e.contains("dimensions"), "{e}");
        // Longer headers than numpy reads.
        let long = format!("{}{}", dims(1), " ".repeat(MAX_HEADER_LEN));
        assert!(
            Npy::parse(&file(2, &long, &[0; 4]))
                .unwrap_err()
                .0
                .contains("header is")
        );
    }

    #[test]
    fn literals_follow_python() {
        let ok = [
            ("(1, 2)", Value::Tuple(vec![Value::Int(1), Value::Int(2)])),
            ("(1,)", Value::Tuple(vec![Value::Int(1)])),
            ("()", Value::Tuple(vec![])),
            ("((1))", Value::Int(1)),
            ("[1, 2,]", Value::List(vec![Value::Int(1), Value::Int(2)])),
            ("1_000", Value::Int(1000)),
            ("0", Value::Int(0)),
            ("00", Value::Int(0)),
            ("0b101", Value::Int(5)),
            ("0o17", Value::Int(15)),
            ("0XfF", Value::Int(255)),
            ("'a\\'b'", Value::Str("a'b".into())),
            ("\"a\\\"b\\\\\"", Value::Str("a\"b\\".into())),
            (
                "'\\x41\\101\\u00e9\\U0001F600\\n\\t'",
                Value::Str("AAé😀\n\t".into()),
            ),
            ("'\\q'", Value::Str("\\q".into())),
            ("'a' 'b'", Value::Str("ab".into())),
            ("'a\\\nb'", Value::Str("ab".into())),
            ("  None", Value::None),
            ("{}", Value::Dict(vec![])),
        ];
        for (text, want) in ok {
            assert_eq!(literal::parse(text), Ok(want), "{text}");
        }
        let bad = [
            "",
            "(",
            "(1",
            "(1 2)",
            "1__0",
            "1_",
            "0x",
            "0x_",
            "08",
            "1.5",
            "1e5",
            "5j",
            "5L",
            "-1",
            "'abc",
            "'a\nb'",
            "'''a'''",
            "'\\x4'",
            "'\\ud800'",
            "'\\N{DASH}'",
            "{1: 2}",
            "{'a' 1}",
            "{'a': 1 'b': 2}",
            "true",
            "18446744073709551616",
            "[1,,]",
            "(1))",
        ];
        for text in bad {
            assert!(literal::parse(text).is_err(), "{text:?} parsed");
        }
        let deep = format!("{}1{}", "(".repeat(1000), ")".repeat(1000));
        assert!(literal::parse(&deep).unwrap_err().contains("nested"));
    }

    #[test]
    fn headers_too_long_for_version_1_are_written_as_version_2() {
        // numpy switches to 2.0 when the header's length needs more than
        // 16 bits; ~22,000 dimensions do (no file numpy reads has them, but
        // the writer must not wrap the length round).
        let a = Npy {
            descr: "<f4".into(),
            shape: vec![1; 22_000],
            data: vec![0; 4],
        };
        let bytes = a.to_bytes().unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x02\x00");
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert!(len > usize::from(u16::MAX));
        assert_eq!((12 + len) % 64, 0);
        assert_eq!(bytes.len(), 12 + len + 4);
        assert_eq!(bytes[12 + len - 1], b'\n');
        let header = std::str::from_utf8(&bytes[12..12 + len]).unwrap();
        let Value::Dict(entries) = literal::parse(header).unwrap() else {
            panic!("not a dict")
        };
        assert_eq!(entries[2].1, Value::Tuple(vec![Value::Int(1); 22_000]));
        // A header that fits stays version 1.0.
        let small = Npy {
            shape: vec![1; 64],
            ..a
        };
        assert_eq!(&small.to_bytes().unwrap()[6..8], b"\x01\x00");
    }

    fn arrays() -> impl Strategy<Value = Npy> {
        (
            prop::sample::select(vec!["<f4", "<f2", "<u2"]),
            prop::collection::vec(0usize..4, 0..4),
        )
            .prop_flat_map(|(descr, shape)| {
                let n = shape.iter().product::<usize>() * element_size(descr).unwrap();
                prop::collection::vec(any::<u8>(), n).prop_map(move |data| Npy {
                    descr: descr.to_string(),
                    shape: shape.clone(),
                    data,
                })
            })
    }

    /// A file read back is written again as the same array: the outcome
    /// of any input is a clean error or an exact round trip.
    fn round_trips_or_refuses(bytes: &[u8]) {
        if let Ok(a) = Npy::parse(bytes) {
            let again = a.to_bytes().unwrap();
            assert_eq!(Npy::parse(&again).as_ref(), Ok(&a));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arrays_round_trip_exactly(a in arrays()) {
            let bytes = a.to_bytes().unwrap();
            prop_assert_eq!(Npy::parse(&bytes), Ok(a.clone()));
            prop_assert_eq!(Npy::parse(&bytes).unwrap().to_bytes().unwrap(), bytes);
        }

        #[test]
        fn random_bytes_are_refused_cleanly(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            header in ".{0,120}",
        ) {
            round_trips_or_refuses(&bytes);
            round_trips_or_refuses(&file(1, &header, &[]));
            round_trips_or_refuses(&file(3, &header, &[0; 8]));
        }

        #[test]
        fn mutated_files_round_trip_or_are_refused(
            a in arrays(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let mut bytes = a.to_bytes().unwrap();
            // Most edits land in the header, where the parsing is.
            for (at, byte, kind) in edits {
                let at = at.index(bytes.len().min(80));
                match kind {
                    0 => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            round_trips_or_refuses(&bytes);
        }

        #[test]
        fn mutated_headers_round_trip_or_are_refused(
            a in arrays(),
            at in any::<prop::sample::Index>(),
            text in prop::sample::select(vec![
                "'", "\"", "(", ")", ",", ":", "{", "}", "\\", "'shape': (1,), ", "0", "_",
                "True", "None", "\n", " ", "'descr': '<f2', ", "((", "[", "]", "-", "\\x",
            ]),
        ) {
            let bytes = a.to_bytes().unwrap();
            let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
            let at = at.index(header.len());
            let edited = format!("{}{text}{}", &header[..at], &header[at..]);
            round_trips_or_refuses(&file(1, &edited, &a.data));
        }
    }
}
