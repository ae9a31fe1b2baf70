//! PTX text to tokens, each with the line it starts on.

use super::LoadError;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// Identifiers, opcodes with their modifiers (`setp.lt.f32`), directives
    /// (`.reg`), registers (`%r1`, `%tid.x`) and labels (`$L__BB0_2`).
    Word(String),
    /// A numeric literal as written (`42`, `0xff`, `0f3F800000`, `1.5`);
    /// what it means depends on the type of the instruction that uses it.
    Num(String),
    Str(String),
    Punct(char),
}

pub struct Token {
    pub tok: Tok,
    pub line: u32,
}

fn word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, '_' | '$' | '%' | '.')
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.')
}

pub fn lex(src: &str) -> Result<Vec<Token>, LoadError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1u32);
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                let start = line;
                i += 2;
                loop {
                    match chars.get(i) {
                        None => return Err(LoadError::at(start, "unterminated /* comment")),
                        Some('*') if chars.get(i + 1) == Some(&'/') => {
                            i += 2;
                            break;
                        }
                        Some('\n') => line += 1,
                        Some(_) => {}
                    }
                    i += 1;
                }
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None | Some('\n') => {
                            return Err(LoadError::at(line, "unterminated string literal"));
                        }
                        Some('"') => break,
                        Some(&c) => s.push(c),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Token {
                    tok: Tok::Str(s),
                    line,
                });
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                // An exponent's sign belongs to the number: 1.5e-3.
                while i < chars.len()
                    && matches!(chars[i], '+' | '-')
                    && matches!(chars[i - 1], 'e' | 'E')
                    && !chars[start..i]
                        .iter()
                        .any(|c| c.is_ascii_alphabetic() && *c != 'e' && *c != 'E')
                {
                    i += 1;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                out.push(Token {
                    tok: Tok::Num(chars[start..i].iter().collect()),
                    line,
                });
            }
            c if word_start(c) => {
                let start = i;
                i += 1;
                loop {
                    match chars.get(i) {
                        Some(&c) if word_char(c) => i += 1,
                        // State-space qualifiers such as `.shared::cta`.
                        Some(':') if chars.get(i + 1) == Some(&':') => i += 2,
                        _ => break,
                    }
                }
                out.push(Token {
                    tok: Tok::Word(chars[start..i].iter().collect()),
                    line,
                });
            }
            ',' | ';' | ':' | '{' | '}' | '[' | ']' | '(' | ')' | '+' | '-' | '!' | '@' | '<'
            | '>' | '|' | '=' => {
                out.push(Token {
                    tok: Tok::Punct(c),
                    line,
                });
                i += 1;
            }
            other => {
                return Err(LoadError::at(
                    line,
                    format!("unexpected character {other:?}"),
                ));
            }
        }
    }
    Ok(out)
}

/// An integer literal: decimal, hexadecimal (`0x`), octal (leading `0`) or
/// binary (`0b`), with an optional `U` suffix.
pub fn parse_int(text: &str) -> Option<u64> {
    let t = text.strip_suffix(['U', 'u']).unwrap_or(text);
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        u64::from_str_radix(b, 2).ok()
    } else if t.len() > 1 && t.starts_with('0') {
        u64::from_str_radix(&t[1..], 8).ok()
    } else {
        t.parse().ok()
    }
}

/// A float literal: `0fXXXXXXXX` (f32 bits), `0dXXXXXXXXXXXXXXXX` (f64
/// bits) or decimal. Returned as an f64 value with whether it was f32 bits.
pub enum FloatLit {
    F32(u32),
    F64(u64),
}

pub fn parse_float(text: &str) -> Option<FloatLit> {
    if let Some(h) = text.strip_prefix("0f").or_else(|| text.strip_prefix("0F")) {
        (h.len() == 8)
            .then(|| u32::from_str_radix(h, 16).ok())
            .flatten()
            .map(FloatLit::F32)
    } else if let Some(h) = text.strip_prefix("0d").or_else(|| text.strip_prefix("0D")) {
        (h.len() == 16)
            .then(|| u64::from_str_radix(h, 16).ok())
            .flatten()
            .map(FloatLit::F64)
    } else if text.contains(['.', 'e', 'E']) {
        text.parse::<f64>().ok().map(|v| FloatLit::F64(v.to_bits()))
    } else {
        None
    }
}
