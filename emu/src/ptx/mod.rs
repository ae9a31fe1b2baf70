//! PTX: what a module declares, and its instructions decoded for the
//! interpreter. The parser accepts the forms nvcc emits for C++ kernels
//! (integer, f32/f64 arithmetic, loads and stores on global, shared and
//! param space, barriers, warp votes and shuffles, atomics); anything else
//! is a load error that names the directive or instruction and its line.

mod lex;
mod parse;

use std::fmt;

pub use parse::parse;

/// Why a module did not load: the line, and what was wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub line: u32,
    pub message: String,
    /// The module's `.version` is newer than the emulated driver reads.
    pub unsupported_version: bool,
}

impl LoadError {
    pub(crate) fn at(line: u32, message: impl Into<String>) -> Self {
        LoadError {
            line,
            message: message.into(),
            unsupported_version: false,
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PTX line {}: {}", self.line, self.message)
    }
}

/// A loaded module: its kernels and the global variables they may use.
#[derive(Debug)]
pub struct Module {
    /// `.version`, as (major, minor).
    pub version: (u32, u32),
    /// `.target`'s `sm_NN`, as NN.
    pub target: u32,
    pub kernels: Vec<Kernel>,
    /// Module-scope `.global` variables, which the driver places in device
    /// memory when it loads the module ([`Module::bind_globals`]).
    pub globals: Vec<Global>,
}

/// A `.global` variable: its bytes as initialized (zeros where the
/// declaration has no initializer).
#[derive(Debug, Clone)]
pub struct Global {
    pub name: String,
    pub align: usize,
    pub init: Vec<u8>,
}

impl Module {
    pub fn kernel(&self, name: &str) -> Option<&Kernel> {
        self.kernels.iter().find(|k| k.name == name)
    }

    /// Puts the global variables' device addresses (by index in
    /// `globals`) into the instructions that name them.
    pub fn bind_globals(&mut self, addresses: &[u64]) {
        let src = |s: &mut Src| {
            if let Src::Global(i) = *s {
                *s = Src::Imm(addresses[i as usize]);
            }
        };
        for k in &mut self.kernels {
            for ins in &mut k.code {
                match &mut ins.op {
                    Op::Mov { a, .. } => src(a),
                    Op::Ld { addr, .. } | Op::St { addr, .. } | Op::Atom { addr, .. } => {
                        if let Base::Global(i) = addr.base {
                            addr.base = Base::Abs;
                            addr.offset = addr.offset.wrapping_add(addresses[i as usize] as i64);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

#[derive(Debug)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
    /// Bytes of the parameter buffer: each parameter at its aligned offset.
    pub param_bytes: usize,
    pub max_ntid: Option<[u32; 3]>,
    pub req_ntid: Option<[u32; 3]>,
    /// Register slots, one per declared register (predicates included).
    pub regs: usize,
    /// Bytes of static shared memory (module and kernel declarations).
    pub shared_bytes: usize,
    /// Whether it declares `.extern .shared` (dynamic shared memory).
    pub dynamic_shared: bool,
    pub code: Vec<Instr>,
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub size: usize,
    pub align: usize,
    pub offset: usize,
}

/// One instruction: its guard predicate, the operation, and where it came from.
#[derive(Debug, Clone)]
pub struct Instr {
    /// `@%p` (run when true) or `@!%p` (run when false).
    pub guard: Option<(Reg, bool)>,
    pub op: Op,
    pub line: u32,
    pub text: Box<str>,
}

/// The low `bits` bits of `v`.
pub fn mask_bits(v: u64, bits: u32) -> u64 {
    if bits >= 64 {
        v
    } else {
        v & ((1u64 << bits) - 1)
    }
}

/// `v`'s low `bits` bits, sign-extended.
pub fn sign_extend(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        ((v << (64 - bits)) as i64) >> (64 - bits)
    }
}

/// A register slot.
pub type Reg = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    B8,
    B16,
    B32,
    B64,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    BF16,
    F32,
    F64,
    Pred,
}

impl Ty {
    pub fn from_suffix(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "bf16" => Ty::BF16,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }

    pub fn bits(self) -> u32 {
        match self {
            Ty::Pred => 1,
            Ty::B8 | Ty::U8 | Ty::S8 => 8,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::BF16 => 16,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 => 32,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 64,
        }
    }

    pub fn bytes(self) -> usize {
        (self.bits() as usize).div_ceil(8)
    }

    pub fn is_signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }

    pub fn is_float(self) -> bool {
        matches!(self, Ty::F16 | Ty::BF16 | Ty::F32 | Ty::F64)
    }

    pub fn is_int(self) -> bool {
        !self.is_float() && self != Ty::Pred
    }
}

/// A source operand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Src {
    Reg(Reg),
    /// `!%p`: a predicate's negation.
    NotReg(Reg),
    /// The operand's bits, already in the instruction's type.
    Imm(u64),
    Special(Special),
    /// A global variable's address, until the driver binds it.
    Global(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
    NWarpId,
    WarpSize,
    LaneMaskEq,
    LaneMaskLe,
    LaneMaskLt,
    LaneMaskGe,
    LaneMaskGt,
    SmId,
    NSmId,
}

/// A memory operand `[base+offset]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Addr {
    pub base: Base,
    pub offset: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Base {
    Reg(Reg),
    /// An absolute address (`[0x100]`), or a symbol's address folded in.
    Abs,
    /// A kernel parameter, by index.
    Param(u32),
    /// A global variable, by index, until the driver binds it.
    Global(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    Generic,
    Global,
    Shared,
    Param,
    Local,
    Const,
}

/// IEEE rounding of a float result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rnd {
    /// To nearest, ties to even.
    Rn,
    /// Toward zero.
    Rz,
    /// Toward −∞.
    Rm,
    /// Toward +∞.
    Rp,
}

/// How `cvt` rounds: a float result (`.rn` …), an integral float or
/// integer result (`.rni` …), or not at all (exact conversions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CvtRnd {
    None,
    Float(Rnd),
    Int(Rnd),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOp {
    Add,
    Sub,
    MulLo,
    MulHi,
    MulWide,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
    AddSat,
    SubSat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntUnOp {
    Neg,
    Abs,
    Not,
    Cnot,
    Popc,
    Clz,
    Brev,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MadMode {
    Lo,
    Hi,
    Wide,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FUnOp {
    Abs,
    Neg,
    Sqrt,
    Rcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomOp {
    Add,
    Min,
    Max,
    Inc,
    Dec,
    And,
    Or,
    Xor,
    Exch,
    Cas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Mov {
        ty: Ty,
        d: Reg,
        a: Src,
    },
    /// `mov.b32 d, {a, b}`: parts from the least significant up.
    Pack {
        d: Reg,
        parts: Vec<Src>,
        part_bits: u32,
    },
    /// `mov.b32 {a, b}, s`; `None` is the `_` sink.
    Unpack {
        ds: Vec<Option<Reg>>,
        a: Src,
        part_bits: u32,
    },
    Int {
        op: IntOp,
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
    },
    IntUn {
        op: IntUnOp,
        ty: Ty,
        d: Reg,
        a: Src,
    },
    Mad {
        mode: MadMode,
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Float {
        op: FOp,
        ty: Ty,
        rnd: Rnd,
        ftz: bool,
        sat: bool,
        d: Reg,
        a: Src,
        b: Src,
    },
    FloatUn {
        op: FUnOp,
        ty: Ty,
        rnd: Rnd,
        ftz: bool,
        d: Reg,
        a: Src,
    },
    Fma {
        ty: Ty,
        rnd: Rnd,
        ftz: bool,
        sat: bool,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    MinMax {
        max: bool,
        /// `.NaN`: a NaN operand gives NaN instead of the other operand.
        nan: bool,
        ty: Ty,
        ftz: bool,
        d: Reg,
        a: Src,
        b: Src,
    },
    Setp {
        cmp: Cmp,
        ty: Ty,
        ftz: bool,
        combine: Option<(BoolOp, Src)>,
        p: Reg,
        q: Option<Reg>,
        a: Src,
        b: Src,
    },
    Selp {
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Cvt {
        dty: Ty,
        sty: Ty,
        rnd: CvtRnd,
        ftz: bool,
        sat: bool,
        d: Reg,
        a: Src,
    },
    /// `cvta` (to generic) or `cvta.to` (from generic).
    Cvta {
        to: bool,
        space: Space,
        wide: bool,
        d: Reg,
        a: Src,
    },
    Ld {
        space: Space,
        ty: Ty,
        ds: Vec<Option<Reg>>,
        addr: Addr,
    },
    St {
        space: Space,
        ty: Ty,
        addr: Addr,
        vals: Vec<Src>,
    },
    Atom {
        space: Space,
        op: AtomOp,
        ty: Ty,
        /// `None` for `red`, which returns nothing.
        d: Option<Reg>,
        addr: Addr,
        b: Src,
        c: Option<Src>,
    },
    Bra {
        target: u32,
    },
    Bar {
        id: Src,
        count: Option<Src>,
    },
    BarWarp {
        mask: Src,
    },
    Vote {
        mode: VoteMode,
        d: Reg,
        a: Src,
        mask: Src,
    },
    Shfl {
        mode: ShflMode,
        d: Reg,
        p: Option<Reg>,
        a: Src,
        b: Src,
        c: Src,
        mask: Src,
    },
    /// Fences: every access is visible at once in the emulator.
    Nop,
    Ret,
    Trap,
}
