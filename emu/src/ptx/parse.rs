//! The PTX parser: tokens to a [`Module`] of decoded instructions.

use std::collections::HashMap;

use super::lex::{FloatLit, Tok, Token, lex, parse_float, parse_int};
use super::*;

/// Parses a module. `max_version` is the newest `.version` the emulated
/// driver reads, as a real driver of that release would.
pub fn parse(src: &str, max_version: (u32, u32)) -> Result<Module, LoadError> {
    let toks = lex(src)?;
    let lines: Vec<&str> = src.lines().collect();
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        lines: &lines,
    };
    p.module(max_version)
}

struct Parser<'a> {
    toks: &'a [Token],
    pos: usize,
    lines: &'a [&'a str],
}

type R<T> = Result<T, LoadError>;

/// The offset recorded for a `.extern .shared` variable until the static
/// size is known.
const DYNAMIC: u32 = u32::MAX;

/// What an identifier names inside a kernel body.
#[derive(Clone, Copy)]
enum Name {
    Reg(Reg, Ty),
}

/// Register declarations: `%r<19>` declares `%r0` … `%r18`.
#[derive(Default)]
struct Regs {
    scopes: Vec<HashMap<String, Name>>,
    ranges: Vec<HashMap<String, (Reg, u32, Ty)>>,
    next: Reg,
}

impl Regs {
    fn lookup(&self, name: &str) -> Option<Name> {
        for (scope, ranges) in self.scopes.iter().zip(&self.ranges).rev() {
            if let Some(n) = scope.get(name) {
                return Some(*n);
            }
            let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
            if digits > 0 {
                let (prefix, number) = name.split_at(name.len() - digits);
                if let (Some(&(base, count, ty)), Ok(i)) =
                    (ranges.get(prefix), number.parse::<u32>())
                    && i < count
                {
                    return Some(Name::Reg(base + i, ty));
                }
            }
        }
        None
    }
}

/// An opcode's dot-separated modifiers, each to be used exactly once.
struct Mods<'a> {
    parts: Vec<&'a str>,
    used: Vec<bool>,
}

impl<'a> Mods<'a> {
    fn new(rest: &'a [&'a str]) -> Self {
        Mods {
            parts: rest.to_vec(),
            used: vec![false; rest.len()],
        }
    }
    fn take(&mut self, m: &str) -> bool {
        match self
            .parts
            .iter()
            .zip(&self.used)
            .position(|(p, u)| *p == m && !u)
        {
            Some(i) => {
                self.used[i] = true;
                true
            }
            None => false,
        }
    }
    fn take_any(&mut self, options: &[&'a str]) -> Option<&'a str> {
        options.iter().copied().find(|o| self.take(o))
    }
    /// The types among the modifiers, in order.
    fn types(&mut self) -> Vec<Ty> {
        let mut out = Vec::new();
        for (p, u) in self.parts.iter().zip(self.used.iter_mut()) {
            if !*u && let Some(t) = Ty::from_suffix(p) {
                *u = true;
                out.push(t);
            }
        }
        out
    }
    fn take_prefixed(&mut self, prefix: &str) -> bool {
        let mut found = false;
        for (p, u) in self.parts.iter().zip(self.used.iter_mut()) {
            if !*u && p.starts_with(prefix) {
                *u = true;
                found = true;
            }
        }
        found
    }
    fn unused(&self) -> Option<&'a str> {
        self.parts
            .iter()
            .zip(&self.used)
            .find(|(_, u)| !**u)
            .map(|(p, _)| *p)
    }
}

/// Source operands before they are typed.
enum RawOp {
    Name(String, bool),
    Num(String, bool),
    Addr(String, i64),
    AddrAbs(i64),
    Vector(Vec<String>),
    Pair(String, String),
}

/// A variable declaration.
struct Var {
    name: String,
    size: usize,
    align: usize,
    #[allow(dead_code)] // kept for messages
    ty: Ty,
    init: Option<Vec<u8>>,
}

impl Var {
    fn shared(self) -> R<(String, usize, usize)> {
        Ok((self.name, self.size, self.align))
    }
}

struct Body {
    code: Vec<Instr>,
    labels: HashMap<String, u32>,
    fixups: Vec<(usize, String, u32)>,
    shared: HashMap<String, u32>,
    shared_bytes: usize,
    dynamic_shared: bool,
    regs: Regs,
    params: HashMap<String, u32>,
    globals: HashMap<String, u32>,
}

impl Body {
    /// A body with no names in it, for decoding module-level literals.
    fn empty() -> Self {
        Body {
            code: Vec::new(),
            labels: HashMap::new(),
            fixups: Vec::new(),
            shared: HashMap::new(),
            shared_bytes: 0,
            dynamic_shared: false,
            regs: Regs::default(),
            params: HashMap::new(),
            globals: HashMap::new(),
        }
    }
}

impl<'a> Parser<'a> {
    fn line(&self) -> u32 {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map_or(0, |t| t.line)
    }
    fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        Err(LoadError::at(self.line(), msg))
    }
    fn peek(&self) -> Option<&'a Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }
    fn next(&mut self) -> R<&'a Tok> {
        match self.toks.get(self.pos) {
            Some(t) => {
                self.pos += 1;
                Ok(&t.tok)
            }
            None => self.err("unexpected end of module"),
        }
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char) -> R<()> {
        if self.eat(c) {
            Ok(())
        } else {
            self.err(format!("expected `{c}`, found {}", self.describe()))
        }
    }
    fn describe(&self) -> String {
        match self.peek() {
            Some(Tok::Word(w)) | Some(Tok::Num(w)) => format!("`{w}`"),
            Some(Tok::Str(s)) => format!("\"{s}\""),
            Some(Tok::Punct(c)) => format!("`{c}`"),
            None => "the end of the module".into(),
        }
    }
    fn word(&mut self) -> R<&'a str> {
        match self.next()? {
            Tok::Word(w) => Ok(w),
            _ => {
                self.pos -= 1;
                self.err(format!("expected a name, found {}", self.describe()))
            }
        }
    }
    fn peek_word(&self) -> Option<&'a str> {
        match self.peek() {
            Some(Tok::Word(w)) => Some(w),
            _ => None,
        }
    }
    fn number(&mut self) -> R<u64> {
        let neg = self.eat('-');
        match self.next()? {
            Tok::Num(n) => match parse_int(n) {
                Some(v) if neg => Ok(v.wrapping_neg()),
                Some(v) => Ok(v),
                None => self.err(format!("expected an integer, found `{n}`")),
            },
            _ => {
                self.pos -= 1;
                self.err(format!("expected an integer, found {}", self.describe()))
            }
        }
    }
    /// Skips the rest of the current line (directives the emulator ignores).
    fn skip_line(&mut self) {
        let line = self.toks[self.pos - 1].line;
        while self.toks.get(self.pos).is_some_and(|t| t.line == line) {
            self.pos += 1;
        }
    }

    fn module(&mut self, max_version: (u32, u32)) -> R<Module> {
        let mut version = None;
        let mut target = None;
        let mut kernels = Vec::new();
        let mut shared = HashMap::new();
        let mut shared_bytes = 0usize;
        let mut dynamic_shared = false;
        let mut globals: Vec<Global> = Vec::new();
        let mut global_names = HashMap::new();
        while self.peek().is_some() {
            let w = self.word()?;
            match w {
                ".version" => {
                    let line = self.line();
                    let v = match self.next()? {
                        Tok::Num(v) => v.clone(),
                        _ => return self.err("expected a version number"),
                    };
                    let parsed = v
                        .split_once('.')
                        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
                    let Some(v) = parsed else {
                        return self.err(format!("bad .version `{v}`"));
                    };
                    if v > max_version {
                        return Err(LoadError {
                            line,
                            message: format!(
                                "PTX ISA {}.{} is newer than this driver reads ({}.{})",
                                v.0, v.1, max_version.0, max_version.1
                            ),
                            unsupported_version: true,
                        });
                    }
                    version = Some(v);
                }
                ".target" => {
                    let t = self.word()?;
                    let Some(sm) = t.strip_prefix("sm_").and_then(|s| {
                        s.trim_end_matches(|c: char| c.is_ascii_alphabetic())
                            .parse()
                            .ok()
                    }) else {
                        return self.err(format!("unsupported .target `{t}`"));
                    };
                    target = Some(sm);
                    while self.eat(',') {
                        let extra = self.word()?;
                        if extra != "debug" {
                            return self.err(format!("unsupported .target option `{extra}`"));
                        }
                    }
                }
                ".address_size" => {
                    let bits = self.number()?;
                    if bits != 64 {
                        return self.err(format!(".address_size {bits}: only 64 is emulated"));
                    }
                }
                ".visible" | ".weak" => {}
                ".extern" => {
                    if self.peek_word() != Some(".shared") {
                        return self
                            .err("only `.extern .shared` (dynamic shared memory) is emulated");
                    }
                }
                ".entry" => {
                    let (Some(_), Some(_)) = (version, target) else {
                        return self.err(".entry before .version and .target");
                    };
                    kernels.push(self.kernel(
                        &shared,
                        shared_bytes,
                        dynamic_shared,
                        &global_names,
                    )?);
                }
                ".shared" => {
                    let external = self.toks[self.pos - 2].tok == Tok::Word(".extern".into());
                    let (name, size, align) = self.variable(false)?.shared()?;
                    if external {
                        dynamic_shared = true;
                        shared.insert(name, DYNAMIC);
                    } else {
                        shared_bytes = shared_bytes.next_multiple_of(align);
                        shared.insert(name, shared_bytes as u32);
                        shared_bytes += size;
                    }
                }
                ".global" => {
                    let v = self.variable(true)?;
                    global_names.insert(v.name.clone(), globals.len() as u32);
                    let mut init = v.init.unwrap_or_default();
                    init.resize(v.size, 0);
                    globals.push(Global {
                        name: v.name,
                        align: v.align,
                        init,
                    });
                }
                ".file" | ".loc" => self.skip_line(),
                ".pragma" => {
                    self.next()?;
                    self.expect(';')?;
                }
                ".func" => return self.err("`.func` (a device function call) is not emulated"),
                other => return self.err(format!("unknown or unsupported directive `{other}`")),
            }
        }
        let (Some(version), Some(target)) = (version, target) else {
            return self.err("a module needs .version and .target");
        };
        Ok(Module {
            version,
            target,
            kernels,
            globals,
        })
    }

    /// `{.align N} .type NAME{[N]...} {= init};` after `.shared` or
    /// `.global`; an initializer only where `initialized` allows one.
    fn variable(&mut self, initialized: bool) -> R<Var> {
        let mut align = None;
        if self.peek_word() == Some(".align") {
            self.pos += 1;
            align = Some(self.number()? as usize);
        }
        let tw = self.word()?;
        let Some(ty) = tw.strip_prefix('.').and_then(Ty::from_suffix) else {
            return self.err(format!("expected a type, found `{tw}`"));
        };
        let name = self.word()?.to_string();
        let mut size = ty.bytes();
        while self.eat('[') {
            if self.eat(']') {
                size = 0;
                continue;
            }
            size *= self.number()? as usize;
            self.expect(']')?;
        }
        let mut init = None;
        if self.eat('=') {
            if !initialized {
                return self.err("shared variables take no initializer");
            }
            let mut bytes = Vec::new();
            self.initializer(ty, &mut bytes)?;
            if bytes.len() > size {
                return self.err(format!(
                    "{} bytes of initializer for {size} bytes",
                    bytes.len()
                ));
            }
            init = Some(bytes);
        }
        self.expect(';')?;
        let align = align.unwrap_or(ty.bytes());
        if !align.is_power_of_two() {
            return self.err(format!(".align {align} is not a power of two"));
        }
        Ok(Var {
            name,
            size,
            align,
            ty,
            init,
        })
    }

    /// A scalar, or a `{...}` list of them (nested for arrays of arrays).
    fn initializer(&mut self, ty: Ty, out: &mut Vec<u8>) -> R<()> {
        if self.eat('{') {
            loop {
                self.initializer(ty, out)?;
                if self.eat('}') {
                    return Ok(());
                }
                self.expect(',')?;
            }
        }
        let neg = self.eat('-');
        let text = match self.next()? {
            Tok::Num(n) => n.clone(),
            _ => return self.err("only numeric initializers are emulated"),
        };
        let cx = Cx {
            b: &Body::empty(),
            line: self.line(),
            opcode: ".global",
        };
        // A b8 array initializes bytes; other types their own width.
        let ty = if ty == Ty::B8 { Ty::U8 } else { ty };
        let bits = cx.imm(&text, neg, ty)?;
        out.extend_from_slice(&bits.to_le_bytes()[..ty.bytes()]);
        Ok(())
    }

    fn kernel(
        &mut self,
        module_shared: &HashMap<String, u32>,
        module_shared_bytes: usize,
        module_dynamic: bool,
        globals: &HashMap<String, u32>,
    ) -> R<Kernel> {
        let name = self.word()?.to_string();
        let mut params = Vec::new();
        let mut offset = 0usize;
        self.expect('(')?;
        if !self.eat(')') {
            loop {
                let line = self.line();
                if self.word()? != ".param" {
                    return Err(LoadError::at(line, "expected .param"));
                }
                let mut align = None;
                let mut ty = None;
                let mut name = None;
                while let Some(w) = self.peek_word() {
                    self.pos += 1;
                    match w {
                        ".align" => align = Some(self.number()? as usize),
                        // Pointer attributes say what a u64 points at; the
                        // value is the same.
                        ".ptr" | ".global" | ".shared" | ".const" | ".local" => {}
                        w if w.starts_with('.') => match Ty::from_suffix(&w[1..]) {
                            Some(t) => ty = Some(t),
                            None => return self.err(format!("unknown parameter attribute `{w}`")),
                        },
                        w => {
                            name = Some(w.to_string());
                            break;
                        }
                    }
                }
                let (Some(ty), Some(name)) = (ty, name) else {
                    return self.err("a .param needs a type and a name");
                };
                let mut size = ty.bytes();
                while self.eat('[') {
                    size *= self.number()? as usize;
                    self.expect(']')?;
                }
                let align = align.unwrap_or(ty.bytes());
                offset = offset.next_multiple_of(align);
                params.push(Param {
                    name,
                    size,
                    align,
                    offset,
                });
                offset += size;
                if self.eat(')') {
                    break;
                }
                self.expect(',')?;
            }
        }
        let mut max_ntid = None;
        let mut req_ntid = None;
        loop {
            match self.peek() {
                Some(Tok::Punct('{')) => break,
                Some(Tok::Word(w)) => {
                    self.pos += 1;
                    match w.as_str() {
                        ".maxntid" | ".reqntid" => {
                            let mut dims = [1u32; 3];
                            dims[0] = self.number()? as u32;
                            for d in dims.iter_mut().skip(1) {
                                if !self.eat(',') {
                                    break;
                                }
                                *d = self.number()? as u32;
                            }
                            if w == ".maxntid" {
                                max_ntid = Some(dims);
                            } else {
                                req_ntid = Some(dims);
                            }
                        }
                        // Occupancy hints: no effect on results.
                        ".minnctapersm" | ".maxnctapersm" | ".maxnreg" => {
                            self.number()?;
                        }
                        ".noreturn" => {}
                        ".pragma" => {
                            self.next()?;
                            self.expect(';')?;
                        }
                        other => {
                            return self.err(format!("unknown kernel directive `{other}`"));
                        }
                    }
                }
                _ => {
                    return self.err(format!(
                        "expected the kernel body, found {}",
                        self.describe()
                    ));
                }
            }
        }
        self.expect('{')?;
        let mut body = Body {
            code: Vec::new(),
            labels: HashMap::new(),
            fixups: Vec::new(),
            shared: module_shared.clone(),
            shared_bytes: module_shared_bytes,
            dynamic_shared: module_dynamic,
            regs: Regs {
                scopes: vec![HashMap::new()],
                ranges: vec![HashMap::new()],
                next: 0,
            },
            params: params
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.clone(), i as u32))
                .collect(),
            globals: globals.clone(),
        };
        self.block(&mut body)?;
        for (at, label, line) in std::mem::take(&mut body.fixups) {
            let Some(&target) = body.labels.get(&label) else {
                return Err(LoadError::at(
                    line,
                    format!("branch to undefined label `{label}`"),
                ));
            };
            body.code[at].op = Op::Bra { target };
        }
        // Falling off the end returns.
        body.code.push(Instr {
            guard: None,
            op: Op::Ret,
            line: self.line(),
            text: "}".into(),
        });
        Ok(Kernel {
            name,
            params,
            param_bytes: offset,
            max_ntid,
            req_ntid,
            regs: body.regs.next as usize,
            shared_bytes: body.shared_bytes,
            dynamic_shared: body.dynamic_shared,
            code: body.code,
        })
    }

    /// Statements up to the matching `}`.
    fn block(&mut self, b: &mut Body) -> R<()> {
        loop {
            let line = self.line();
            match self.next()? {
                Tok::Punct('}') => return Ok(()),
                Tok::Punct('{') => {
                    b.regs.scopes.push(HashMap::new());
                    b.regs.ranges.push(HashMap::new());
                    self.block(b)?;
                    b.regs.scopes.pop();
                    b.regs.ranges.pop();
                }
                Tok::Word(w) if w == ".reg" => self.reg_decl(b)?,
                Tok::Word(w) if w == ".shared" => {
                    if !b.code.is_empty() && b.dynamic_shared {
                        return self.err("a .shared variable declared after instructions that may use dynamic shared memory");
                    }
                    let (name, size, align) = self.variable(false)?.shared()?;
                    b.shared_bytes = b.shared_bytes.next_multiple_of(align);
                    b.shared.insert(name, b.shared_bytes as u32);
                    b.shared_bytes += size;
                }
                Tok::Word(w) if w == ".loc" => self.skip_line(),
                Tok::Word(w) if w == ".pragma" => {
                    self.next()?;
                    self.expect(';')?;
                }
                Tok::Word(w) if w.starts_with('.') => {
                    return Err(LoadError::at(
                        line,
                        format!("unsupported directive `{w}` in a kernel"),
                    ));
                }
                Tok::Word(w) if self.peek() == Some(&Tok::Punct(':')) => {
                    self.pos += 1;
                    b.labels.insert(w.clone(), b.code.len() as u32);
                }
                Tok::Punct('@') => {
                    let negate = self.eat('!');
                    let pw = self.word()?;
                    let Some(Name::Reg(r, Ty::Pred)) = b.regs.lookup(pw) else {
                        return self.err(format!("guard `{pw}` is not a predicate register"));
                    };
                    let op = self.word()?;
                    self.instruction(b, op, Some((r, negate)), line)?;
                }
                Tok::Word(w) => {
                    let w = w.clone();
                    self.instruction(b, &w, None, line)?;
                }
                _ => {
                    self.pos -= 1;
                    return self.err(format!("unexpected {}", self.describe()));
                }
            }
        }
    }

    fn reg_decl(&mut self, b: &mut Body) -> R<()> {
        let tw = self.word()?;
        if tw.starts_with(".v") {
            return self.err("vector registers are not emulated");
        }
        let Some(ty) = tw.strip_prefix('.').and_then(Ty::from_suffix) else {
            return self.err(format!("expected a register type, found `{tw}`"));
        };
        loop {
            let name = self.word()?.to_string();
            if self.eat('<') {
                let count = self.number()? as u32;
                self.expect('>')?;
                let base = b.regs.next;
                b.regs.next += count;
                b.regs
                    .ranges
                    .last_mut()
                    .unwrap()
                    .insert(name, (base, count, ty));
            } else {
                let r = b.regs.next;
                b.regs.next += 1;
                b.regs
                    .scopes
                    .last_mut()
                    .unwrap()
                    .insert(name, Name::Reg(r, ty));
            }
            if self.eat(';') {
                return Ok(());
            }
            self.expect(',')?;
        }
    }

    /// One raw operand.
    fn raw_operand(&mut self) -> R<RawOp> {
        match self.next()? {
            Tok::Punct('!') => Ok(RawOp::Name(self.word()?.to_string(), true)),
            Tok::Punct('-') => match self.next()? {
                Tok::Num(n) => Ok(RawOp::Num(n.clone(), true)),
                _ => self.err("expected a number after `-`"),
            },
            Tok::Num(n) => Ok(RawOp::Num(n.clone(), false)),
            Tok::Word(w) => {
                if self.eat('|') {
                    let q = self.word()?;
                    return Ok(RawOp::Pair(w.clone(), q.to_string()));
                }
                Ok(RawOp::Name(w.clone(), false))
            }
            Tok::Punct('[') => {
                let (base, abs) = match self.next()? {
                    Tok::Word(w) => (Some(w.clone()), 0),
                    Tok::Num(n) => match parse_int(n) {
                        Some(v) => (None, v as i64),
                        None => return self.err(format!("bad address `{n}`")),
                    },
                    _ => return self.err("expected an address"),
                };
                let mut offset = 0i64;
                if self.eat('+') {
                    offset = self.number()? as i64;
                } else if self.eat('-') {
                    offset = (self.number()? as i64).wrapping_neg();
                }
                self.expect(']')?;
                Ok(match base {
                    Some(w) => RawOp::Addr(w, offset),
                    None => RawOp::AddrAbs(abs.wrapping_add(offset)),
                })
            }
            Tok::Punct('{') => {
                let mut items = Vec::new();
                loop {
                    match self.next()? {
                        Tok::Word(w) => items.push(w.clone()),
                        Tok::Num(n) => items.push(n.clone()),
                        _ => return self.err("expected a vector element"),
                    }
                    if self.eat('}') {
                        break;
                    }
                    self.expect(',')?;
                }
                Ok(RawOp::Vector(items))
            }
            _ => {
                self.pos -= 1;
                self.err(format!("expected an operand, found {}", self.describe()))
            }
        }
    }

    fn instruction(
        &mut self,
        b: &mut Body,
        opcode: &str,
        guard: Option<(Reg, bool)>,
        line: u32,
    ) -> R<()> {
        let mut ops = Vec::new();
        if !self.eat(';') {
            loop {
                ops.push(self.raw_operand()?);
                if self.eat(';') {
                    break;
                }
                self.expect(',')?;
            }
        }
        let text = self
            .lines
            .get(line as usize - 1)
            .map_or(opcode.to_string(), |l| l.trim().to_string());
        let cx = Cx { b, line, opcode };
        let (op, label) = cx.decode(&ops)?;
        let at = b.code.len();
        if let Some(label) = label {
            b.fixups.push((at, label, line));
        }
        b.code.push(Instr {
            guard,
            op,
            line,
            text: text.into(),
        });
        Ok(())
    }
}

/// Decoding one instruction's operands against the kernel's names.
struct Cx<'b> {
    b: &'b Body,
    line: u32,
    opcode: &'b str,
}

impl Cx<'_> {
    fn err<T>(&self, msg: impl std::fmt::Display) -> R<T> {
        Err(LoadError::at(
            self.line,
            format!("`{}`: {msg}", self.opcode),
        ))
    }

    fn reg(&self, op: &RawOp) -> R<Reg> {
        match op {
            RawOp::Name(n, false) => match self.b.regs.lookup(n) {
                Some(Name::Reg(r, _)) => Ok(r),
                _ => self.err(format!("`{n}` is not a declared register")),
            },
            _ => self.err("expected a destination register"),
        }
    }

    fn pred(&self, op: &RawOp) -> R<Reg> {
        match op {
            RawOp::Name(n, false) => match self.b.regs.lookup(n) {
                Some(Name::Reg(r, Ty::Pred)) => Ok(r),
                _ => self.err(format!("`{n}` is not a predicate register")),
            },
            _ => self.err("expected a predicate register"),
        }
    }

    /// A source operand of type `ty`.
    fn src(&self, op: &RawOp, ty: Ty) -> R<Src> {
        match op {
            RawOp::Name(n, negate) => {
                if let Some(s) = special(n) {
                    if *negate {
                        return self.err("`!` on a special register");
                    }
                    return Ok(Src::Special(s));
                }
                match self.b.regs.lookup(n) {
                    Some(Name::Reg(r, rt)) => {
                        if *negate {
                            if rt != Ty::Pred {
                                return self.err(format!("`!{n}`: only predicates can be negated"));
                            }
                            Ok(Src::NotReg(r))
                        } else {
                            Ok(Src::Reg(r))
                        }
                    }
                    _ => match (self.shared(n), self.b.globals.get(n)) {
                        // A shared variable's address in the shared window.
                        (Some(off), _) if !negate => Ok(Src::Imm(off as u64)),
                        (None, Some(&g)) if !negate => Ok(Src::Global(g)),
                        _ => self.err(format!("`{n}` is not a declared register or variable")),
                    },
                }
            }
            RawOp::Num(text, neg) => Ok(Src::Imm(self.imm(text, *neg, ty)?)),
            _ => self.err("expected a register or an immediate"),
        }
    }

    /// An immediate's bits in type `ty`.
    fn imm(&self, text: &str, neg: bool, ty: Ty) -> R<u64> {
        if ty.is_float() {
            let value: f64 = match parse_float(text) {
                Some(FloatLit::F32(bits)) => {
                    if ty == Ty::F32 {
                        let bits = if neg { bits ^ 0x8000_0000 } else { bits };
                        return Ok(bits as u64);
                    }
                    f32::from_bits(bits) as f64
                }
                Some(FloatLit::F64(bits)) => {
                    if ty == Ty::F64 {
                        let bits = if neg { bits ^ (1 << 63) } else { bits };
                        return Ok(bits);
                    }
                    f64::from_bits(bits)
                }
                None => match parse_int(text) {
                    Some(v) => v as f64,
                    None => return self.err(format!("bad float literal `{text}`")),
                },
            };
            let value = if neg { -value } else { value };
            return Ok(match ty {
                Ty::F32 => (value as f32).to_bits() as u64,
                Ty::F64 => value.to_bits(),
                Ty::F16 => half::f16::from_f64(value).to_bits() as u64,
                _ => half::bf16::from_f64(value).to_bits() as u64,
            });
        }
        let Some(v) = parse_int(text) else {
            return self.err(format!("bad integer literal `{text}`"));
        };
        let v = if neg { v.wrapping_neg() } else { v };
        Ok(mask_bits(v, ty.bits()))
    }

    fn addr(&self, op: &RawOp) -> R<Addr> {
        match op {
            RawOp::AddrAbs(a) => Ok(Addr {
                base: Base::Abs,
                offset: *a,
            }),
            RawOp::Addr(name, offset) => match self.b.regs.lookup(name) {
                Some(Name::Reg(r, _)) => Ok(Addr {
                    base: Base::Reg(r),
                    offset: *offset,
                }),
                _ => {
                    if let Some(&i) = self.b.params.get(name) {
                        Ok(Addr {
                            base: Base::Param(i),
                            offset: *offset,
                        })
                    } else if let Some(off) = self.shared(name) {
                        Ok(Addr {
                            base: Base::Abs,
                            offset: off as i64 + offset,
                        })
                    } else if let Some(&g) = self.b.globals.get(name) {
                        Ok(Addr {
                            base: Base::Global(g),
                            offset: *offset,
                        })
                    } else {
                        self.err(format!("`{name}` is not a register, parameter or variable"))
                    }
                }
            },
            _ => self.err("expected a memory operand `[...]`"),
        }
    }

    /// A shared variable's offset; dynamic shared memory (`.extern
    /// .shared`) starts after the static variables, 16-byte aligned.
    fn shared(&self, name: &str) -> Option<u32> {
        match *self.b.shared.get(name)? {
            DYNAMIC => Some(self.b.shared_bytes.next_multiple_of(16) as u32),
            off => Some(off),
        }
    }

    fn label(&self, op: &RawOp) -> R<String> {
        match op {
            RawOp::Name(n, false) => Ok(n.clone()),
            _ => self.err("expected a label"),
        }
    }

    fn count(&self, ops: &[RawOp], n: usize) -> R<()> {
        if ops.len() == n {
            Ok(())
        } else {
            self.err(format!("expected {n} operands, found {}", ops.len()))
        }
    }

    fn one_type(&self, m: &mut Mods) -> R<Ty> {
        match m.types()[..] {
            [t] => Ok(t),
            _ => self.err("expected exactly one type"),
        }
    }

    fn done(&self, m: &Mods) -> R<()> {
        match m.unused() {
            None => Ok(()),
            Some(u) => self.err(format!("unsupported modifier `.{u}`")),
        }
    }

    fn rnd(m: &mut Mods) -> Option<Rnd> {
        Some(match m.take_any(&["rn", "rz", "rm", "rp"])? {
            "rn" => Rnd::Rn,
            "rz" => Rnd::Rz,
            "rm" => Rnd::Rm,
            _ => Rnd::Rp,
        })
    }

    fn decode(&self, ops: &[RawOp]) -> R<(Op, Option<String>)> {
        let parts: Vec<&str> = self.opcode.split('.').collect();
        let base = parts[0];
        let mut m = Mods::new(&parts[1..]);
        let op = match base {
            "mov" => {
                let ty = self.one_type(&mut m)?;
                self.done(&m)?;
                self.count(ops, 2)?;
                match (&ops[0], &ops[1]) {
                    (RawOp::Vector(ds), a) => {
                        let part_bits = ty.bits() / ds.len() as u32;
                        let ds = ds
                            .iter()
                            .map(|d| {
                                if d == "_" {
                                    Ok(None)
                                } else {
                                    self.reg(&RawOp::Name(d.clone(), false)).map(Some)
                                }
                            })
                            .collect::<R<_>>()?;
                        Op::Unpack {
                            ds,
                            a: self.src(a, ty)?,
                            part_bits,
                        }
                    }
                    (d, RawOp::Vector(parts)) => {
                        let part_bits = ty.bits() / parts.len() as u32;
                        let part_ty = match part_bits {
                            8 => Ty::B8,
                            16 => Ty::B16,
                            32 => Ty::B32,
                            _ => return self.err("bad vector width"),
                        };
                        let parts = parts
                            .iter()
                            .map(|p| {
                                let raw = if p.starts_with(|c: char| c.is_ascii_digit()) {
                                    RawOp::Num(p.clone(), false)
                                } else {
                                    RawOp::Name(p.clone(), false)
                                };
                                self.src(&raw, part_ty)
                            })
                            .collect::<R<_>>()?;
                        Op::Pack {
                            d: self.reg(d)?,
                            parts,
                            part_bits,
                        }
                    }
                    (d, a) => Op::Mov {
                        ty,
                        d: self.reg(d)?,
                        a: self.src(a, ty)?,
                    },
                }
            }
            "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" | "and" | "or" | "xor"
            | "shl" | "shr" => self.binary(base, &mut m, ops)?,
            "mad" | "fma" => {
                let ty = self.one_type(&mut m)?;
                self.count(ops, 4)?;
                let (d, a, b, c) = (self.reg(&ops[0])?, &ops[1], &ops[2], &ops[3]);
                if ty.is_float() {
                    let rnd = Self::rnd(&mut m);
                    let ftz = m.take("ftz");
                    let sat = m.take("sat");
                    self.done(&m)?;
                    if !matches!(ty, Ty::F32 | Ty::F64) {
                        return self.err("only f32 and f64 fused multiply-add is emulated");
                    }
                    // mad.f32 with a rounding mode is fma; without one it is
                    // the legacy unfused form, whose result ptxas may fuse.
                    let Some(rnd) = rnd else {
                        return self.err("a float mad/fma needs a rounding modifier");
                    };
                    Op::Fma {
                        ty,
                        rnd,
                        ftz,
                        sat,
                        d,
                        a: self.src(a, ty)?,
                        b: self.src(b, ty)?,
                        c: self.src(c, ty)?,
                    }
                } else {
                    let mode = match m.take_any(&["lo", "hi", "wide"]) {
                        Some("lo") => MadMode::Lo,
                        Some("hi") => MadMode::Hi,
                        Some(_) => MadMode::Wide,
                        None => return self.err("integer mad needs .lo, .hi or .wide"),
                    };
                    self.done(&m)?;
                    let cty = if mode == MadMode::Wide { widen(ty) } else { ty };
                    Op::Mad {
                        mode,
                        ty,
                        d,
                        a: self.src(a, ty)?,
                        b: self.src(b, ty)?,
                        c: self.src(c, cty)?,
                    }
                }
            }
            "neg" | "abs" | "not" | "cnot" | "popc" | "clz" | "brev" | "sqrt" | "rcp" => {
                let ty = self.one_type(&mut m)?;
                self.count(ops, 2)?;
                let d = self.reg(&ops[0])?;
                if ty.is_float() {
                    if !matches!(ty, Ty::F32 | Ty::F64) {
                        return self.err("only f32 and f64 arithmetic is emulated");
                    }
                    let op = match base {
                        "neg" => FUnOp::Neg,
                        "abs" => FUnOp::Abs,
                        "sqrt" => FUnOp::Sqrt,
                        "rcp" => FUnOp::Rcp,
                        _ => return self.err("not a float operation"),
                    };
                    if m.take("approx") {
                        return self.err(".approx results are hardware-specific and not emulated");
                    }
                    let rnd = Self::rnd(&mut m);
                    let ftz = m.take("ftz");
                    self.done(&m)?;
                    let rnd = match (op, rnd) {
                        (FUnOp::Sqrt | FUnOp::Rcp, None) => {
                            return self.err("needs a rounding modifier (.rn, .rz, .rm, .rp)");
                        }
                        (FUnOp::Abs | FUnOp::Neg, Some(_)) => {
                            return self.err("takes no rounding modifier");
                        }
                        (_, r) => r.unwrap_or(Rnd::Rn),
                    };
                    Op::FloatUn {
                        op,
                        ty,
                        rnd,
                        ftz,
                        d,
                        a: self.src(&ops[1], ty)?,
                    }
                } else {
                    self.done(&m)?;
                    let op = match base {
                        "neg" => IntUnOp::Neg,
                        "abs" => IntUnOp::Abs,
                        "not" => IntUnOp::Not,
                        "cnot" => IntUnOp::Cnot,
                        "popc" => IntUnOp::Popc,
                        "clz" => IntUnOp::Clz,
                        "brev" => IntUnOp::Brev,
                        _ => return self.err("not an integer operation"),
                    };
                    Op::IntUn {
                        op,
                        ty,
                        d,
                        a: self.src(&ops[1], ty)?,
                    }
                }
            }
            "setp" => {
                let cmp = match m.take_any(&[
                    "eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi", "hs", "equ", "neu",
                    "ltu", "leu", "gtu", "geu", "num", "nan",
                ]) {
                    Some(c) => cmp(c),
                    None => return self.err("needs a comparison"),
                };
                let bool_op = m.take_any(&["and", "or", "xor"]).map(|b| match b {
                    "and" => BoolOp::And,
                    "or" => BoolOp::Or,
                    _ => BoolOp::Xor,
                });
                let ftz = m.take("ftz");
                let ty = self.one_type(&mut m)?;
                self.done(&m)?;
                if matches!(ty, Ty::F16 | Ty::BF16) {
                    return self.err("f16/bf16 comparisons are not emulated");
                }
                self.count(ops, if bool_op.is_some() { 4 } else { 3 })?;
                let (p, q) = match &ops[0] {
                    RawOp::Pair(p, q) => (
                        self.pred(&RawOp::Name(p.clone(), false))?,
                        Some(self.pred(&RawOp::Name(q.clone(), false))?),
                    ),
                    d => (self.pred(d)?, None),
                };
                let combine = match bool_op {
                    Some(b) => Some((b, self.src(&ops[3], Ty::Pred)?)),
                    None => None,
                };
                Op::Setp {
                    cmp,
                    ty,
                    ftz,
                    combine,
                    p,
                    q,
                    a: self.src(&ops[1], ty)?,
                    b: self.src(&ops[2], ty)?,
                }
            }
            "selp" => {
                let ty = self.one_type(&mut m)?;
                self.done(&m)?;
                self.count(ops, 4)?;
                Op::Selp {
                    ty,
                    d: self.reg(&ops[0])?,
                    a: self.src(&ops[1], ty)?,
                    b: self.src(&ops[2], ty)?,
                    c: self.src(&ops[3], Ty::Pred)?,
                }
            }
            "cvt" => {
                let irnd = m.take_any(&["rni", "rzi", "rmi", "rpi"]);
                let frnd = Self::rnd(&mut m);
                let ftz = m.take("ftz");
                let sat = m.take("sat");
                let types = m.types();
                self.done(&m)?;
                let [dty, sty] = types[..] else {
                    return self.err("expected a destination and a source type");
                };
                self.count(ops, 2)?;
                let rnd = match (irnd, frnd) {
                    (Some(r), None) => CvtRnd::Int(match r {
                        "rni" => Rnd::Rn,
                        "rzi" => Rnd::Rz,
                        "rmi" => Rnd::Rm,
                        _ => Rnd::Rp,
                    }),
                    (None, Some(r)) => CvtRnd::Float(r),
                    (None, None) => CvtRnd::None,
                    _ => return self.err("two rounding modifiers"),
                };
                self.check_cvt(dty, sty, rnd)?;
                Op::Cvt {
                    dty,
                    sty,
                    rnd,
                    ftz,
                    sat,
                    d: self.reg(&ops[0])?,
                    a: self.src(&ops[1], sty)?,
                }
            }
            "cvta" => {
                let to = m.take("to");
                let space = match m.take_any(&["global", "shared", "local", "const", "param"]) {
                    Some("global") => Space::Global,
                    Some("shared") => Space::Shared,
                    Some("local") => Space::Local,
                    Some("const") => Space::Const,
                    Some(_) => Space::Param,
                    None => return self.err("needs a state space"),
                };
                let ty = self.one_type(&mut m)?;
                self.done(&m)?;
                self.count(ops, 2)?;
                Op::Cvta {
                    to,
                    space,
                    wide: ty.bits() == 64,
                    d: self.reg(&ops[0])?,
                    a: self.src(&ops[1], ty)?,
                }
            }
            "ld" | "st" => {
                // Ordering and cache hints: every access is immediately
                // visible and uncached in the emulator.
                m.take_any(&["weak", "volatile", "relaxed", "acquire", "release"]);
                m.take_any(&["cta", "gpu", "sys", "cluster"]);
                m.take_any(&["ca", "cg", "cs", "lu", "cv", "wb", "wt", "nc"]);
                m.take_prefixed("L1::");
                m.take_prefixed("L2::");
                let space = self.space(&mut m);
                let vec = match m.take_any(&["v2", "v4", "v8"]) {
                    Some("v2") => 2,
                    Some("v4") => 4,
                    Some(_) => 8,
                    None => 1,
                };
                let ty = self.one_type(&mut m)?;
                self.done(&m)?;
                if ty == Ty::Pred {
                    return self.err("predicates cannot be loaded or stored");
                }
                self.count(ops, 2)?;
                let names = |op: &RawOp| -> R<Vec<RawOp>> {
                    match op {
                        RawOp::Vector(v) if v.len() == vec => Ok(v
                            .iter()
                            .map(|s| {
                                if s.starts_with(|c: char| c.is_ascii_digit()) {
                                    RawOp::Num(s.clone(), false)
                                } else {
                                    RawOp::Name(s.clone(), false)
                                }
                            })
                            .collect()),
                        RawOp::Vector(_) => self.err(format!("expected {vec} vector elements")),
                        other if vec == 1 => Ok(vec![match other {
                            RawOp::Name(n, neg) => RawOp::Name(n.clone(), *neg),
                            RawOp::Num(n, neg) => RawOp::Num(n.clone(), *neg),
                            _ => return self.err("expected a register"),
                        }]),
                        _ => self.err(format!("expected a vector of {vec}")),
                    }
                };
                if base == "ld" {
                    let ds = names(&ops[0])?
                        .iter()
                        .map(|d| match d {
                            RawOp::Name(n, false) if n == "_" => Ok(None),
                            d => self.reg(d).map(Some),
                        })
                        .collect::<R<_>>()?;
                    Op::Ld {
                        space,
                        ty,
                        ds,
                        addr: self.addr(&ops[1])?,
                    }
                } else {
                    let vals = names(&ops[1])?
                        .iter()
                        .map(|v| self.src(v, ty))
                        .collect::<R<_>>()?;
                    Op::St {
                        space,
                        ty,
                        addr: self.addr(&ops[0])?,
                        vals,
                    }
                }
            }
            "atom" | "red" => {
                m.take_any(&["relaxed", "acquire", "release", "acq_rel"]);
                m.take_any(&["cta", "gpu", "sys", "cluster"]);
                m.take_prefixed("L2::");
                let space = self.space(&mut m);
                let op = match m.take_any(&[
                    "add", "min", "max", "inc", "dec", "and", "or", "xor", "exch", "cas",
                ]) {
                    Some(o) => atom_op(o),
                    None => return self.err("needs an operation"),
                };
                let ty = self.one_type(&mut m)?;
                self.done(&m)?;
                if matches!(ty, Ty::F16 | Ty::BF16 | Ty::Pred | Ty::B8 | Ty::U8 | Ty::S8) {
                    return self.err("this atomic type is not emulated");
                }
                let red = base == "red";
                let n = usize::from(!red) + 2 + usize::from(op == AtomOp::Cas);
                self.count(ops, n)?;
                let at = usize::from(!red);
                Op::Atom {
                    space,
                    op,
                    ty,
                    d: if red { None } else { Some(self.reg(&ops[0])?) },
                    addr: self.addr(&ops[at])?,
                    b: self.src(&ops[at + 1], ty)?,
                    c: if op == AtomOp::Cas {
                        Some(self.src(&ops[at + 2], ty)?)
                    } else {
                        None
                    },
                }
            }
            "bra" => {
                m.take("uni");
                self.done(&m)?;
                self.count(ops, 1)?;
                return Ok((Op::Bra { target: 0 }, Some(self.label(&ops[0])?)));
            }
            "bar" | "barrier" => {
                if m.take("warp") {
                    if !m.take("sync") {
                        return self.err("only bar.warp.sync is emulated");
                    }
                    self.done(&m)?;
                    self.count(ops, 1)?;
                    Op::BarWarp {
                        mask: self.src(&ops[0], Ty::B32)?,
                    }
                } else {
                    m.take("cta");
                    m.take("aligned");
                    if !m.take("sync") {
                        return self.err("only bar.sync / barrier.sync is emulated");
                    }
                    self.done(&m)?;
                    if ops.is_empty() || ops.len() > 2 {
                        return self.err("expected a barrier number and an optional thread count");
                    }
                    Op::Bar {
                        id: self.src(&ops[0], Ty::U32)?,
                        count: match ops.get(1) {
                            Some(c) => Some(self.src(c, Ty::U32)?),
                            None => None,
                        },
                    }
                }
            }
            "membar" | "fence" => {
                m.take_any(&["cta", "gl", "sys", "gpu", "cluster"]);
                m.take_any(&["sc", "acq_rel"]);
                self.done(&m)?;
                Op::Nop
            }
            "vote" => {
                if !m.take("sync") {
                    return self.err("only vote.sync is emulated (sm_70 and later)");
                }
                let mode = match m.take_any(&["all", "any", "uni", "ballot"]) {
                    Some("all") => VoteMode::All,
                    Some("any") => VoteMode::Any,
                    Some("uni") => VoteMode::Uni,
                    Some(_) => VoteMode::Ballot,
                    None => return self.err("needs .all, .any, .uni or .ballot"),
                };
                let ty = self.one_type(&mut m)?;
                self.done(&m)?;
                if (mode == VoteMode::Ballot) != (ty == Ty::B32)
                    || (ty != Ty::B32 && ty != Ty::Pred)
                {
                    return self.err("ballot gives .b32, the others .pred");
                }
                self.count(ops, 3)?;
                Op::Vote {
                    mode,
                    d: self.reg(&ops[0])?,
                    a: self.src(&ops[1], Ty::Pred)?,
                    mask: self.src(&ops[2], Ty::B32)?,
                }
            }
            "shfl" => {
                if !m.take("sync") {
                    return self.err("only shfl.sync is emulated (sm_70 and later)");
                }
                let mode = match m.take_any(&["up", "down", "bfly", "idx"]) {
                    Some("up") => ShflMode::Up,
                    Some("down") => ShflMode::Down,
                    Some("bfly") => ShflMode::Bfly,
                    Some(_) => ShflMode::Idx,
                    None => return self.err("needs .up, .down, .bfly or .idx"),
                };
                let ty = self.one_type(&mut m)?;
                self.done(&m)?;
                if ty != Ty::B32 {
                    return self.err("shfl moves .b32");
                }
                self.count(ops, 5)?;
                let (d, p) = match &ops[0] {
                    RawOp::Pair(d, p) => (
                        self.reg(&RawOp::Name(d.clone(), false))?,
                        Some(self.pred(&RawOp::Name(p.clone(), false))?),
                    ),
                    d => (self.reg(d)?, None),
                };
                Op::Shfl {
                    mode,
                    d,
                    p,
                    a: self.src(&ops[1], Ty::B32)?,
                    b: self.src(&ops[2], Ty::B32)?,
                    c: self.src(&ops[3], Ty::B32)?,
                    mask: self.src(&ops[4], Ty::B32)?,
                }
            }
            "ret" | "exit" => {
                m.take("uni");
                self.done(&m)?;
                self.count(ops, 0)?;
                Op::Ret
            }
            "trap" | "brkpt" => {
                self.done(&m)?;
                self.count(ops, 0)?;
                Op::Trap
            }
            other => return self.err(format!("unknown or unsupported instruction `{other}`")),
        };
        Ok((op, None))
    }

    fn space(&self, m: &mut Mods) -> Space {
        if m.take("global") {
            Space::Global
        } else if m.take("shared") || m.take("shared::cta") {
            Space::Shared
        } else if m.take("param") || m.take("param::entry") {
            Space::Param
        } else if m.take("local") {
            Space::Local
        } else if m.take("const") {
            Space::Const
        } else {
            Space::Generic
        }
    }

    fn check_cvt(&self, dty: Ty, sty: Ty, rnd: CvtRnd) -> R<()> {
        if dty == Ty::Pred || sty == Ty::Pred {
            return self.err("predicates cannot be converted");
        }
        let ok = match (dty.is_float(), sty.is_float()) {
            (false, false) => rnd == CvtRnd::None,
            // Integer to float rounds unless exact... PTX requires the mode.
            (true, false) => matches!(rnd, CvtRnd::Float(_)),
            (false, true) => matches!(rnd, CvtRnd::Int(_)),
            (true, true) => {
                let narrowing = dty.bits() < sty.bits()
                    || (dty == Ty::F16 && sty == Ty::BF16)
                    || (dty == Ty::BF16 && sty == Ty::F16);
                if dty == sty {
                    matches!(rnd, CvtRnd::Int(_)) || rnd == CvtRnd::None
                } else if narrowing {
                    matches!(rnd, CvtRnd::Float(_))
                } else {
                    rnd == CvtRnd::None
                }
            }
        };
        if ok {
            Ok(())
        } else {
            self.err(format!(
                "rounding modifier does not fit a {sty:?} to {dty:?} conversion"
            ))
        }
    }

    fn binary(&self, base: &str, m: &mut Mods, ops: &[RawOp]) -> R<Op> {
        let rnd = Self::rnd(m);
        let ftz = m.take("ftz");
        let sat = m.take("sat");
        let nan = m.take("NaN");
        let approx = m.take("approx") || m.take("full");
        let mode = m.take_any(&["lo", "hi", "wide"]);
        let ty = self.one_type(m)?;
        self.done(m)?;
        self.count(ops, 3)?;
        let d = self.reg(&ops[0])?;
        if ty.is_float() {
            if !matches!(ty, Ty::F32 | Ty::F64) {
                return self.err("only f32 and f64 arithmetic is emulated");
            }
            if approx {
                return self.err(".approx/.full results are hardware-specific and not emulated");
            }
            if mode.is_some() {
                return self.err(".lo/.hi/.wide are integer modifiers");
            }
            let (a, b) = (self.src(&ops[1], ty)?, self.src(&ops[2], ty)?);
            if base == "min" || base == "max" {
                if rnd.is_some() || sat {
                    return self.err("min/max take no rounding or saturation");
                }
                return Ok(Op::MinMax {
                    max: base == "max",
                    nan,
                    ty,
                    ftz,
                    d,
                    a,
                    b,
                });
            }
            if nan {
                return self.err(".NaN is a min/max modifier");
            }
            let op = match base {
                "add" => FOp::Add,
                "sub" => FOp::Sub,
                "mul" => FOp::Mul,
                "div" => FOp::Div,
                _ => return self.err("not a float operation"),
            };
            // Without a rounding modifier ptxas may fuse add and mul into an
            // fma, whose result the emulator cannot know; nvcc writes .rn
            // everywhere when contraction is off (-fmad=false).
            let Some(rnd) = rnd else {
                if op == FOp::Div {
                    return self.err("div.f32 needs .rn, .rz, .rm, .rp (or .approx/.full)");
                }
                return self.err("a float add/sub/mul without a rounding modifier may be fused by ptxas; use .rn");
            };
            return Ok(Op::Float {
                op,
                ty,
                rnd,
                ftz,
                sat,
                d,
                a,
                b,
            });
        }
        if rnd.is_some() || ftz || nan || approx {
            return self.err("rounding and flush-to-zero are float modifiers");
        }
        let op = match (base, mode) {
            ("add", None) if sat => IntOp::AddSat,
            ("sub", None) if sat => IntOp::SubSat,
            (_, _) if sat => return self.err(".sat is emulated on add.s32 and sub.s32 only"),
            ("add", None) => IntOp::Add,
            ("sub", None) => IntOp::Sub,
            ("mul", Some("lo")) => IntOp::MulLo,
            ("mul", Some("hi")) => IntOp::MulHi,
            ("mul", Some(_)) => IntOp::MulWide,
            ("mul", None) => return self.err("integer mul needs .lo, .hi or .wide"),
            ("div", None) => IntOp::Div,
            ("rem", None) => IntOp::Rem,
            ("min", None) => IntOp::Min,
            ("max", None) => IntOp::Max,
            ("and", None) => IntOp::And,
            ("or", None) => IntOp::Or,
            ("xor", None) => IntOp::Xor,
            ("shl", None) => IntOp::Shl,
            ("shr", None) => IntOp::Shr,
            _ => return self.err("bad modifiers"),
        };
        if sat && ty != Ty::S32 {
            return self.err(".sat is emulated on add.s32 and sub.s32 only");
        }
        if matches!(op, IntOp::And | IntOp::Or | IntOp::Xor) && ty.is_signed() {
            return self.err("logic operations take .b or .pred types");
        }
        // Shift amounts are u32 whatever the shifted type.
        let bty = if matches!(op, IntOp::Shl | IntOp::Shr) {
            Ty::U32
        } else {
            ty
        };
        if op == IntOp::MulWide && ty.bits() > 32 {
            return self.err("mul.wide takes 16- or 32-bit operands");
        }
        Ok(Op::Int {
            op,
            ty,
            d,
            a: self.src(&ops[1], ty)?,
            b: self.src(&ops[2], bty)?,
        })
    }
}

fn widen(ty: Ty) -> Ty {
    match ty {
        Ty::U16 => Ty::U32,
        Ty::S16 => Ty::S32,
        Ty::U32 => Ty::U64,
        Ty::S32 => Ty::S64,
        t => t,
    }
}

fn special(name: &str) -> Option<Special> {
    let axis = |s: &str| match s {
        "x" => Some(0u8),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    if let Some((reg, a)) = name.split_once('.') {
        let a = axis(a)?;
        return Some(match reg {
            "%tid" => Special::Tid(a),
            "%ntid" => Special::Ntid(a),
            "%ctaid" => Special::Ctaid(a),
            "%nctaid" => Special::Nctaid(a),
            _ => return None,
        });
    }
    Some(match name {
        "%laneid" => Special::LaneId,
        "%warpid" => Special::WarpId,
        "%nwarpid" => Special::NWarpId,
        "WARP_SZ" => Special::WarpSize,
        "%lanemask_eq" => Special::LaneMaskEq,
        "%lanemask_le" => Special::LaneMaskLe,
        "%lanemask_lt" => Special::LaneMaskLt,
        "%lanemask_ge" => Special::LaneMaskGe,
        "%lanemask_gt" => Special::LaneMaskGt,
        "%smid" => Special::SmId,
        "%nsmid" => Special::NSmId,
        _ => return None,
    })
}

fn cmp(c: &str) -> Cmp {
    match c {
        "eq" => Cmp::Eq,
        "ne" => Cmp::Ne,
        "lt" => Cmp::Lt,
        "le" => Cmp::Le,
        "gt" => Cmp::Gt,
        "ge" => Cmp::Ge,
        "lo" => Cmp::Lo,
        "ls" => Cmp::Ls,
        "hi" => Cmp::Hi,
        "hs" => Cmp::Hs,
        "equ" => Cmp::Equ,
        "neu" => Cmp::Neu,
        "ltu" => Cmp::Ltu,
        "leu" => Cmp::Leu,
        "gtu" => Cmp::Gtu,
        "geu" => Cmp::Geu,
        "num" => Cmp::Num,
        _ => Cmp::Nan,
    }
}

fn atom_op(o: &str) -> AtomOp {
    match o {
        "add" => AtomOp::Add,
        "min" => AtomOp::Min,
        "max" => AtomOp::Max,
        "inc" => AtomOp::Inc,
        "dec" => AtomOp::Dec,
        "and" => AtomOp::And,
        "or" => AtomOp::Or,
        "xor" => AtomOp::Xor,
        "exch" => AtomOp::Exch,
        _ => AtomOp::Cas,
    }
}
