//! Runs a kernel: the grid's blocks, in parallel on the host's cores, each
//! block's threads interleaved at their barriers and warp collectives.
//!
//! A block's threads run one at a time, each until it reaches `bar.sync`, a
//! warp collective (`vote.sync`, `shfl.sync`, `bar.warp.sync`) or its end.
//! A barrier opens when every thread that has not exited waits at it; a
//! collective completes when every lane of its member mask that has not
//! exited waits at one with the same mask. Threads that can never meet are
//! a deadlock, reported instead of hanging.
//!
//! Running each thread as far as it can go is the schedule most hostile to a
//! missing barrier, and shared memory is race-checked on top: two threads
//! touching the same byte between the same two barriers, one of them
//! writing, is a fault, as compute-sanitizer's racecheck reports.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::float;
use crate::memory::{Miss, SHARED_WINDOW, View};
use crate::ptx::*;

/// The launch geometry, as `cuLaunchKernel` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// An access outside every live allocation (CUDA_ERROR_ILLEGAL_ADDRESS).
    IllegalAddress,
    /// An access not aligned to its size (CUDA_ERROR_MISALIGNED_ADDRESS).
    Misaligned,
    /// A read of memory never written.
    Uninitialized,
    /// Two threads touched shared memory between the same barriers.
    Race,
    /// `trap` (CUDA_ERROR_LAUNCH_FAILED, "unspecified launch failure").
    Trap,
    /// Threads that wait for each other at different places.
    Deadlock,
    /// A warp collective used against its definition.
    WarpSync,
}

/// Why a launch failed: what, and where (kernel, instruction, thread, block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub message: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a launch did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub instructions: u64,
}

/// Runs `k` over the grid with `params` (the parameter buffer, each
/// parameter at its offset) against `mem`, on up to `workers` host threads.
/// The fault reported is the one of the lowest-numbered failing block, so
/// the outcome does not depend on the worker count.
pub fn launch(
    k: &Kernel,
    dims: Dims,
    params: &[u8],
    mem: &View,
    workers: usize,
) -> Result<Stats, Fault> {
    if let Some(ins) = k.code.iter().find(|i| uses_unbound_global(&i.op)) {
        return Err(Fault {
            kind: FaultKind::IllegalAddress,
            message: format!(
                "kernel `{}` uses a global variable that was never placed in device memory (PTX line {})",
                k.name, ins.line
            ),
        });
    }
    let blocks = dims.grid.iter().map(|&g| g as u64).product::<u64>();
    let next = AtomicU64::new(0);
    let failed_at = AtomicU64::new(u64::MAX);
    let fault: Mutex<Option<(u64, Fault)>> = Mutex::new(None);
    let executed = AtomicU64::new(0);
    let workers = workers.clamp(1, blocks.max(1) as usize);
    let work = || {
        let mut b = Block::new(k, dims, params, mem);
        loop {
            let id = next.fetch_add(1, Relaxed);
            if id >= blocks || id > failed_at.load(Relaxed) {
                break;
            }
            let g = dims.grid;
            let ctaid = [
                (id % g[0] as u64) as u32,
                (id / g[0] as u64 % g[1] as u64) as u32,
                (id / (g[0] as u64 * g[1] as u64)) as u32,
            ];
            if let Err(f) = b.run(ctaid) {
                let mut slot = fault.lock().unwrap();
                if slot.as_ref().is_none_or(|(at, _)| id < *at) {
                    *slot = Some((id, f));
                    failed_at.fetch_min(id, Relaxed);
                }
            }
        }
        executed.fetch_add(b.executed, Relaxed);
    };
    if workers == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(work);
            }
        });
    }
    match fault.into_inner().unwrap() {
        Some((_, f)) => Err(f),
        None => Ok(Stats {
            instructions: executed.load(Relaxed),
        }),
    }
}

fn uses_unbound_global(op: &Op) -> bool {
    match op {
        Op::Mov {
            a: Src::Global(_), ..
        } => true,
        Op::Ld { addr, .. } | Op::St { addr, .. } | Op::Atom { addr, .. } => {
            matches!(addr.base, Base::Global(_))
        }
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Ready,
    /// At `bar.sync` with this barrier number.
    Bar(u32),
    /// At a warp collective (the instruction at its pc).
    Warp,
    Exited,
}

/// Who last touched a byte of shared memory, and in which barrier interval.
#[derive(Debug, Clone, Copy, Default)]
struct Shadow {
    write_epoch: u32,
    writer: u32,
    read_epoch: u32,
    reader: u32,
}

const MANY: u32 = u32::MAX;

struct Shared {
    data: Vec<u8>,
    written: Vec<bool>,
    shadow: Vec<Shadow>,
    /// Barriers passed, plus one: a zeroed shadow is never "this interval".
    epoch: u32,
}

struct Block<'a> {
    k: &'a Kernel,
    dims: Dims,
    params: &'a [u8],
    mem: &'a View<'a>,
    ctaid: [u32; 3],
    threads: usize,
    regs: Vec<u64>,
    pc: Vec<u32>,
    wait: Vec<Wait>,
    shared: Shared,
    executed: u64,
}

/// What one thread sees: its indices and the launch's.
#[derive(Clone, Copy)]
struct Env {
    tid: [u32; 3],
    ntid: [u32; 3],
    ctaid: [u32; 3],
    nctaid: [u32; 3],
    linear: u32,
}

impl Env {
    fn special(&self, s: Special) -> u64 {
        let lane = self.linear % 32;
        (match s {
            Special::Tid(a) => self.tid[a as usize],
            Special::Ntid(a) => self.ntid[a as usize],
            Special::Ctaid(a) => self.ctaid[a as usize],
            Special::Nctaid(a) => self.nctaid[a as usize],
            Special::LaneId => lane,
            Special::WarpId => self.linear / 32,
            Special::NWarpId => self.ntid.iter().product::<u32>().div_ceil(32),
            Special::WarpSize => 32,
            Special::LaneMaskEq => 1 << lane,
            Special::LaneMaskLe => ((1u64 << (lane + 1)) - 1) as u32,
            Special::LaneMaskLt => (1u32 << lane) - 1,
            Special::LaneMaskGe => !((1u32 << lane) - 1),
            Special::LaneMaskGt => !(((1u64 << (lane + 1)) - 1) as u32),
            Special::SmId => 0,
            Special::NSmId => 1,
        }) as u64
    }
}

#[inline]
fn val(regs: &[u64], env: &Env, s: Src) -> u64 {
    match s {
        Src::Reg(r) => regs[r as usize],
        Src::NotReg(r) => (regs[r as usize] == 0) as u64,
        Src::Imm(v) => v,
        Src::Special(sp) => env.special(sp),
        // `launch` refuses kernels whose globals are not bound.
        Src::Global(_) => 0,
    }
}

/// What stopped a thread.
enum Stop {
    Bar(u32),
    Warp,
    Exit,
}

impl<'a> Block<'a> {
    fn new(k: &'a Kernel, dims: Dims, params: &'a [u8], mem: &'a View<'a>) -> Self {
        let threads = dims.block.iter().map(|&b| b as usize).product();
        let shared_len = if k.dynamic_shared {
            k.shared_bytes.next_multiple_of(16) + dims.dynamic_shared as usize
        } else {
            k.shared_bytes
        };
        Block {
            k,
            dims,
            params,
            mem,
            ctaid: [0; 3],
            threads,
            regs: vec![0; threads * k.regs],
            pc: vec![0; threads],
            wait: vec![Wait::Ready; threads],
            shared: Shared {
                data: vec![0; shared_len],
                written: vec![false; shared_len],
                shadow: vec![Shadow::default(); shared_len],
                epoch: 1,
            },
            executed: 0,
        }
    }

    fn env(&self, t: usize) -> Env {
        let b = self.dims.block;
        Env {
            tid: [
                t as u32 % b[0],
                t as u32 / b[0] % b[1],
                t as u32 / (b[0] * b[1]),
            ],
            ntid: b,
            ctaid: self.ctaid,
            nctaid: self.dims.grid,
            linear: t as u32,
        }
    }

    fn run(&mut self, ctaid: [u32; 3]) -> Result<(), Fault> {
        self.ctaid = ctaid;
        self.regs.fill(0);
        self.pc.fill(0);
        self.wait.fill(Wait::Ready);
        self.shared.written.fill(false);
        self.shared.shadow.fill(Shadow::default());
        self.shared.epoch = 1;
        loop {
            for t in 0..self.threads {
                if self.wait[t] == Wait::Ready {
                    self.wait[t] = match self.run_thread(t)? {
                        Stop::Bar(id) => Wait::Bar(id),
                        Stop::Warp => Wait::Warp,
                        Stop::Exit => Wait::Exited,
                    };
                }
            }
            if self.wait.iter().all(|w| *w == Wait::Exited) {
                return Ok(());
            }
            if self.resolve_warps()? {
                continue;
            }
            self.open_barrier()?;
        }
    }

    /// Opens the barrier every live thread waits at, or reports a deadlock.
    fn open_barrier(&mut self) -> Result<(), Fault> {
        let mut id = None;
        for (t, w) in self.wait.iter().enumerate() {
            match *w {
                Wait::Exited => {}
                Wait::Bar(b) if id.is_none_or(|i| i == b) => id = Some(b),
                _ => return Err(self.deadlock(t)),
            }
        }
        let t0 = self
            .wait
            .iter()
            .position(|w| matches!(w, Wait::Bar(_)))
            .unwrap();
        if let Op::Bar { count: Some(c), .. } = &self.k.code[self.pc[t0] as usize].op {
            let env = self.env(t0);
            let count = val(&self.regs[t0 * self.k.regs..], &env, *c) as usize;
            if count != self.threads.next_multiple_of(32) {
                return Err(self.fault(
                    FaultKind::Deadlock,
                    t0,
                    format!("bar.sync with a thread count of {count} in a block of {} threads is not emulated", self.threads),
                ));
            }
        }
        for t in 0..self.threads {
            if let Wait::Bar(_) = self.wait[t] {
                self.wait[t] = Wait::Ready;
                self.pc[t] += 1;
            }
        }
        self.shared.epoch += 1;
        Ok(())
    }

    fn deadlock(&self, t: usize) -> Fault {
        let describe = |t: usize| match self.wait[t] {
            Wait::Bar(_) | Wait::Warp => {
                let ins = &self.k.code[self.pc[t] as usize];
                format!("thread {t} waits at line {} `{}`", ins.line, ins.text)
            }
            _ => format!("thread {t} is {:?}", self.wait[t]),
        };
        let other = (0..self.threads)
            .find(|&u| self.wait[u] != Wait::Exited && self.wait[u] != self.wait[t])
            .map(describe)
            .unwrap_or_default();
        Fault {
            kind: FaultKind::Deadlock,
            message: format!(
                "deadlock in kernel `{}`, block {:?}: {}; {}",
                self.k.name,
                self.ctaid,
                describe(t),
                other
            ),
        }
    }

    /// Completes every warp collective whose members have all arrived.
    fn resolve_warps(&mut self) -> Result<bool, Fault> {
        let mut progressed = false;
        for w in 0..self.threads.div_ceil(32) {
            let lanes = (w * 32)..((w + 1) * 32).min(self.threads);
            let mut done = 0u32;
            for t in lanes.clone() {
                if self.wait[t] != Wait::Warp || done & (1 << (t % 32)) != 0 {
                    continue;
                }
                let ins = &self.k.code[self.pc[t] as usize];
                let env = self.env(t);
                let regs = &self.regs[t * self.k.regs..(t + 1) * self.k.regs];
                let mask_src = match &ins.op {
                    Op::Vote { mask, .. } | Op::Shfl { mask, .. } | Op::BarWarp { mask } => *mask,
                    _ => unreachable!("only collectives wait as Warp"),
                };
                let mask = val(regs, &env, mask_src) as u32;
                if mask & (1 << (t % 32)) == 0 {
                    return Err(self.fault(
                        FaultKind::WarpSync,
                        t,
                        format!("the executing lane is not in the member mask {mask:#010x}"),
                    ));
                }
                // Every member that has not exited must wait at a collective
                // of the same kind with the same mask.
                let mut members = Vec::new();
                let mut ready = true;
                for u in lanes.clone() {
                    if mask & (1 << (u % 32)) == 0 || self.wait[u] == Wait::Exited {
                        continue;
                    }
                    if self.wait[u] != Wait::Warp {
                        ready = false;
                        break;
                    }
                    let other = &self.k.code[self.pc[u] as usize];
                    let uenv = self.env(u);
                    let uregs = &self.regs[u * self.k.regs..(u + 1) * self.k.regs];
                    let (same_kind, umask) = match (&ins.op, &other.op) {
                        (Op::Vote { mode: a, .. }, Op::Vote { mode: b, mask, .. }) => {
                            (a == b, *mask)
                        }
                        (Op::Shfl { mode: a, .. }, Op::Shfl { mode: b, mask, .. }) => {
                            (a == b, *mask)
                        }
                        (Op::BarWarp { .. }, Op::BarWarp { mask }) => (true, *mask),
                        _ => (false, mask_src),
                    };
                    if !same_kind || val(uregs, &uenv, umask) as u32 != mask {
                        return Err(self.fault(
                            FaultKind::WarpSync,
                            t,
                            format!(
                                "lane {} meets lane {} at a different collective: line {} `{}`",
                                t % 32,
                                u % 32,
                                other.line,
                                other.text
                            ),
                        ));
                    }
                    members.push(u);
                }
                if !ready {
                    continue;
                }
                self.complete(&members)?;
                for &u in &members {
                    done |= 1 << (u % 32);
                    self.wait[u] = Wait::Ready;
                    self.pc[u] += 1;
                }
                progressed = true;
            }
        }
        Ok(progressed)
    }

    /// Carries out the collective `members` (lanes of one warp) wait at.
    fn complete(&mut self, members: &[usize]) -> Result<(), Fault> {
        let nregs = self.k.regs;
        let first = members[0];
        let op = self.k.code[self.pc[first] as usize].op.clone();
        let value =
            |b: &Self, t: usize, s: Src| val(&b.regs[t * nregs..(t + 1) * nregs], &b.env(t), s);
        match op {
            Op::Vote { mode, d, a, .. } => {
                let preds: Vec<(usize, bool)> = members
                    .iter()
                    .map(|&t| (t, value(self, t, a) != 0))
                    .collect();
                let ballot = preds
                    .iter()
                    .filter(|(_, p)| *p)
                    .fold(0u32, |m, (t, _)| m | 1 << (t % 32));
                let all = preds.iter().all(|(_, p)| *p);
                let any = preds.iter().any(|(_, p)| *p);
                let r = match mode {
                    VoteMode::Ballot => ballot as u64,
                    VoteMode::All => all as u64,
                    VoteMode::Any => any as u64,
                    VoteMode::Uni => (all || !any) as u64,
                };
                for &t in members {
                    self.regs[t * nregs + d as usize] = r;
                }
            }
            Op::Shfl {
                mode,
                d,
                p,
                a,
                b,
                c,
                ..
            } => {
                let mut results = Vec::with_capacity(members.len());
                for &t in members {
                    let lane = (t % 32) as u32;
                    let bv = value(self, t, b) as u32 & 31;
                    let cv = value(self, t, c) as u32;
                    let seg = (cv >> 8) & 31;
                    let max_lane = (lane & seg) | (cv & 31 & !seg);
                    let min_lane = lane & seg;
                    let (j, ok) = match mode {
                        ShflMode::Up => {
                            let j = lane as i32 - bv as i32;
                            (j, j >= max_lane as i32)
                        }
                        ShflMode::Down => {
                            let j = (lane + bv) as i32;
                            (j, j <= max_lane as i32)
                        }
                        ShflMode::Bfly => {
                            let j = (lane ^ bv) as i32;
                            (j, j <= max_lane as i32)
                        }
                        ShflMode::Idx => {
                            let j = (min_lane | (bv & !seg)) as i32;
                            (j, j <= max_lane as i32)
                        }
                    };
                    let src_lane = if ok { j as u32 } else { lane };
                    let src = t - t % 32 + src_lane as usize;
                    if !members.contains(&src) {
                        return Err(self.fault(
                            FaultKind::WarpSync,
                            t,
                            format!("shfl reads lane {src_lane}, which does not take part"),
                        ));
                    }
                    results.push((t, value(self, src, a), ok));
                }
                for (t, v, ok) in results {
                    self.regs[t * nregs + d as usize] = v & 0xffff_ffff;
                    if let Some(p) = p {
                        self.regs[t * nregs + p as usize] = ok as u64;
                    }
                }
            }
            Op::BarWarp { .. } => {}
            _ => unreachable!(),
        }
        Ok(())
    }

    fn fault(&self, kind: FaultKind, t: usize, detail: String) -> Fault {
        let ins = &self.k.code[self.pc[t] as usize];
        fault_at(self.k, ins, &self.env(t), kind, detail)
    }

    /// Runs thread `t` until it blocks or exits.
    fn run_thread(&mut self, t: usize) -> Result<Stop, Fault> {
        let nregs = self.k.regs;
        let env = self.env(t);
        let code = &self.k.code;
        let regs = &mut self.regs[t * nregs..(t + 1) * nregs];
        let mut pc = self.pc[t] as usize;
        let mut hint = 0usize;
        let mut executed = 0u64;
        let ctx = Ctx {
            k: self.k,
            params: self.params,
            mem: self.mem,
            env,
            t: t as u32,
        };
        let stop = loop {
            let ins = &code[pc];
            executed += 1;
            if let Some((p, negate)) = ins.guard
                && (regs[p as usize] != 0) == negate
            {
                pc += 1;
                continue;
            }
            match &ins.op {
                Op::Bra { target } => {
                    pc = *target as usize;
                    continue;
                }
                Op::Bar { id, .. } => break Stop::Bar(val(regs, &env, *id) as u32),
                Op::Vote { .. } | Op::Shfl { .. } | Op::BarWarp { .. } => break Stop::Warp,
                Op::Ret => break Stop::Exit,
                Op::Trap => {
                    self.pc[t] = pc as u32;
                    return Err(fault_at(self.k, ins, &env, FaultKind::Trap, "trap".into()));
                }
                op => {
                    if let Err(e) = ctx.exec(op, regs, &mut self.shared, &mut hint) {
                        self.pc[t] = pc as u32;
                        return Err(fault_at(self.k, ins, &env, e.0, e.1));
                    }
                }
            }
            pc += 1;
        };
        self.pc[t] = pc as u32;
        self.executed += executed;
        Ok(stop)
    }
}

fn fault_at(k: &Kernel, ins: &Instr, env: &Env, kind: FaultKind, detail: String) -> Fault {
    Fault {
        kind,
        message: format!(
            "{detail}, in kernel `{}` at PTX line {} `{}`, thread ({}, {}, {}) of block ({}, {}, {})",
            k.name,
            ins.line,
            ins.text,
            env.tid[0],
            env.tid[1],
            env.tid[2],
            env.ctaid[0],
            env.ctaid[1],
            env.ctaid[2],
        ),
    }
}

type Trouble = (FaultKind, String);

/// What one instruction needs besides the registers.
struct Ctx<'a> {
    k: &'a Kernel,
    params: &'a [u8],
    mem: &'a View<'a>,
    env: Env,
    t: u32,
}

fn write(regs: &mut [u64], d: Reg, ty: Ty, v: u64) {
    regs[d as usize] = if ty == Ty::Pred {
        (v != 0) as u64
    } else {
        mask_bits(v, ty.bits())
    };
}

impl Ctx<'_> {
    fn exec(
        &self,
        op: &Op,
        regs: &mut [u64],
        shared: &mut Shared,
        hint: &mut usize,
    ) -> Result<(), Trouble> {
        let env = &self.env;
        let v = |regs: &[u64], s: Src| val(regs, env, s);
        match op {
            Op::Mov { ty, d, a } => {
                let x = v(regs, *a);
                write(regs, *d, *ty, x);
            }
            Op::Pack {
                d,
                parts,
                part_bits,
            } => {
                let mut x = 0u64;
                for (i, p) in parts.iter().enumerate() {
                    x |= mask_bits(v(regs, *p), *part_bits) << (i as u32 * part_bits);
                }
                regs[*d as usize] = x;
            }
            Op::Unpack { ds, a, part_bits } => {
                let x = v(regs, *a);
                for (i, d) in ds.iter().enumerate() {
                    if let Some(d) = d {
                        regs[*d as usize] = mask_bits(x >> (i as u32 * part_bits), *part_bits);
                    }
                }
            }
            Op::Int { op, ty, d, a, b } => {
                let (x, y) = (v(regs, *a), v(regs, *b));
                let (r, rty) = int_binary(*op, *ty, x, y);
                write(regs, *d, rty, r);
            }
            Op::IntUn { op, ty, d, a } => {
                let x = v(regs, *a);
                let r = int_unary(*op, *ty, x);
                let rty = if matches!(op, IntUnOp::Popc | IntUnOp::Clz) {
                    Ty::U32
                } else {
                    *ty
                };
                write(regs, *d, rty, r);
            }
            Op::Mad {
                mode,
                ty,
                d,
                a,
                b,
                c,
            } => {
                let (x, y, z) = (v(regs, *a), v(regs, *b), v(regs, *c));
                let (r, rty) = match mode {
                    MadMode::Lo => (int_binary(IntOp::MulLo, *ty, x, y).0.wrapping_add(z), *ty),
                    MadMode::Hi => (int_binary(IntOp::MulHi, *ty, x, y).0.wrapping_add(z), *ty),
                    MadMode::Wide => {
                        let (p, wide) = int_binary(IntOp::MulWide, *ty, x, y);
                        (p.wrapping_add(z), wide)
                    }
                };
                write(regs, *d, rty, r);
            }
            Op::Float {
                op,
                ty,
                rnd,
                ftz,
                sat,
                d,
                a,
                b,
            } => {
                let (x, y) = (v(regs, *a), v(regs, *b));
                let r = if *ty == Ty::F32 {
                    float::binary32(*op, *rnd, *ftz, *sat, x as u32, y as u32) as u64
                } else {
                    float::binary64(*op, *rnd, x, y)
                };
                regs[*d as usize] = r;
            }
            Op::FloatUn {
                op,
                ty,
                rnd,
                ftz,
                d,
                a,
            } => {
                let x = v(regs, *a);
                regs[*d as usize] = if *ty == Ty::F32 {
                    float::unary32(*op, *rnd, *ftz, x as u32) as u64
                } else {
                    float::unary64(*op, *rnd, x)
                };
            }
            Op::Fma {
                ty,
                rnd,
                ftz,
                sat,
                d,
                a,
                b,
                c,
            } => {
                let (x, y, z) = (v(regs, *a), v(regs, *b), v(regs, *c));
                regs[*d as usize] = if *ty == Ty::F32 {
                    float::fma32(*rnd, *ftz, *sat, x as u32, y as u32, z as u32) as u64
                } else {
                    float::fma64(*rnd, x, y, z)
                };
            }
            Op::MinMax {
                max,
                nan,
                ty,
                ftz,
                d,
                a,
                b,
            } => {
                let (x, y) = (v(regs, *a), v(regs, *b));
                let r = match ty {
                    Ty::F32 => float::min_max32(*max, *nan, *ftz, x as u32, y as u32) as u64,
                    Ty::F64 => float::min_max64(*max, *nan, x, y),
                    _ => unreachable!("integer min/max decode as Int"),
                };
                regs[*d as usize] = r;
            }
            Op::Setp {
                cmp,
                ty,
                ftz,
                combine,
                p,
                q,
                a,
                b,
            } => {
                let (x, y) = (v(regs, *a), v(regs, *b));
                let r = if ty.is_float() {
                    float::compare(*cmp, *ty, *ftz, x, y)
                } else {
                    int_compare(*cmp, *ty, x, y)
                };
                let (rp, rq) = match combine {
                    None => (r, !r),
                    Some((op, c)) => {
                        let c = v(regs, *c) != 0;
                        let f = |x: bool| match op {
                            BoolOp::And => x && c,
                            BoolOp::Or => x || c,
                            BoolOp::Xor => x != c,
                        };
                        (f(r), f(!r))
                    }
                };
                regs[*p as usize] = rp as u64;
                if let Some(q) = q {
                    regs[*q as usize] = rq as u64;
                }
            }
            Op::Selp { ty, d, a, b, c } => {
                let r = if v(regs, *c) != 0 {
                    v(regs, *a)
                } else {
                    v(regs, *b)
                };
                write(regs, *d, *ty, r);
            }
            Op::Cvt {
                dty,
                sty,
                rnd,
                ftz,
                sat,
                d,
                a,
            } => {
                let x = v(regs, *a);
                regs[*d as usize] = convert(*dty, *sty, *rnd, *ftz, *sat, x);
            }
            Op::Cvta {
                to,
                space,
                wide,
                d,
                a,
            } => {
                let x = v(regs, *a);
                let r = match (space, to) {
                    (Space::Shared, false) => x.wrapping_add(SHARED_WINDOW),
                    (Space::Shared, true) => x.wrapping_sub(SHARED_WINDOW),
                    // Global addresses are generic addresses.
                    (Space::Global, _) => x,
                    _ => {
                        return Err((
                            FaultKind::IllegalAddress,
                            format!("cvta for {space:?} is not emulated"),
                        ));
                    }
                };
                regs[*d as usize] = if *wide { r } else { r & 0xffff_ffff };
            }
            Op::Ld {
                space,
                ty,
                ds,
                addr,
            } => {
                let size = ty.bytes();
                let base = self.address(regs, addr);
                for (i, d) in ds.iter().enumerate() {
                    let x = self.load(*space, addr, base, i, size, ds.len(), shared, hint)?;
                    if let Some(d) = d {
                        regs[*d as usize] = if ty.is_signed() {
                            sign_extend(x, ty.bits()) as u64
                        } else {
                            x
                        };
                    }
                }
            }
            Op::St {
                space,
                ty,
                addr,
                vals,
            } => {
                let size = ty.bytes();
                let base = self.address(regs, addr);
                for (i, s) in vals.iter().enumerate() {
                    let x = mask_bits(v(regs, *s), ty.bits());
                    self.store(*space, base, i, size, vals.len(), x, shared, hint)?;
                }
            }
            Op::Atom {
                space,
                op,
                ty,
                d,
                addr,
                b,
                c,
            } => {
                let (bv, cv) = (v(regs, *b), c.map(|c| v(regs, c)));
                let base = self.address(regs, addr);
                let old = self.atomic(*space, base, *op, *ty, bv, cv, shared, hint)?;
                if let Some(d) = d {
                    write(regs, *d, *ty, old);
                }
            }
            Op::Nop => {}
            Op::Bra { .. }
            | Op::Bar { .. }
            | Op::BarWarp { .. }
            | Op::Vote { .. }
            | Op::Shfl { .. }
            | Op::Ret
            | Op::Trap => {
                unreachable!("control flow is handled by the thread loop")
            }
        }
        Ok(())
    }

    fn address(&self, regs: &[u64], a: &Addr) -> u64 {
        let base = match a.base {
            Base::Reg(r) => regs[r as usize],
            Base::Abs | Base::Param(_) | Base::Global(_) => 0,
        };
        base.wrapping_add(a.offset as u64)
    }

    /// Resolves a generic address to the space it falls in.
    fn space_of(&self, space: Space, addr: u64) -> (Space, u64) {
        match space {
            Space::Generic if (SHARED_WINDOW..SHARED_WINDOW + (1 << 32)).contains(&addr) => {
                (Space::Shared, addr - SHARED_WINDOW)
            }
            Space::Generic => (Space::Global, addr),
            s => (s, addr),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn load(
        &self,
        space: Space,
        addr: &Addr,
        base: u64,
        i: usize,
        size: usize,
        vec: usize,
        shared: &mut Shared,
        hint: &mut usize,
    ) -> Result<u64, Trouble> {
        if space == Space::Param {
            let Base::Param(p) = addr.base else {
                return Err((
                    FaultKind::IllegalAddress,
                    "ld.param through a register is not emulated".into(),
                ));
            };
            let param = &self.k.params[p as usize];
            let off = addr.offset + (i * size) as i64;
            if off < 0 || off as usize + size > param.size {
                return Err((
                    FaultKind::IllegalAddress,
                    format!(
                        "ld.param of {size} bytes at offset {off} of parameter `{}` ({} bytes)",
                        param.name, param.size
                    ),
                ));
            }
            let at = param.offset + off as usize;
            let mut b = [0u8; 8];
            b[..size].copy_from_slice(&self.params[at..at + size]);
            return Ok(u64::from_le_bytes(b));
        }
        let (space, start) = self.space_of(space, base);
        check_align(start, size * vec, "read")?;
        let a = start + (i * size) as u64;
        match space {
            Space::Global => {
                let (alloc, off) = self
                    .mem
                    .locate(a, size, hint)
                    .map_err(|m| miss(m, "read", a, size))?;
                if !alloc.is_written(off, size) {
                    return Err((
                        FaultKind::Uninitialized,
                        format!(
                            "read of {size} bytes at {a:#x} that were never written ({alloc:?}, offset {off})"
                        ),
                    ));
                }
                Ok(alloc.load(off, size))
            }
            Space::Shared => shared.read(a, size, self.t, true),
            _ => Err((
                FaultKind::IllegalAddress,
                format!("{space:?} space is not emulated"),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        space: Space,
        base: u64,
        i: usize,
        size: usize,
        vec: usize,
        x: u64,
        shared: &mut Shared,
        hint: &mut usize,
    ) -> Result<(), Trouble> {
        let (space, start) = self.space_of(space, base);
        check_align(start, size * vec, "write")?;
        let a = start + (i * size) as u64;
        match space {
            Space::Global => {
                let (alloc, off) = self
                    .mem
                    .locate(a, size, hint)
                    .map_err(|m| miss(m, "write", a, size))?;
                alloc.store(off, size, x);
                Ok(())
            }
            Space::Shared => shared.write(a, size, x, self.t, true),
            _ => Err((
                FaultKind::IllegalAddress,
                format!("stores to {space:?} space are not emulated"),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn atomic(
        &self,
        space: Space,
        base: u64,
        op: AtomOp,
        ty: Ty,
        b: u64,
        c: Option<u64>,
        shared: &mut Shared,
        hint: &mut usize,
    ) -> Result<u64, Trouble> {
        let size = ty.bytes();
        let (space, a) = self.space_of(space, base);
        check_align(a, size, "atomic")?;
        match space {
            Space::Global => {
                let (alloc, off) = self
                    .mem
                    .locate(a, size, hint)
                    .map_err(|m| miss(m, "atomic", a, size))?;
                if !alloc.is_written(off, size) {
                    return Err((
                        FaultKind::Uninitialized,
                        format!("atomic on {size} bytes at {a:#x} that were never written"),
                    ));
                }
                // Global f32 atomic adds flush subnormals (Programming Guide).
                Ok(alloc.update(off, size, |old| atomic_op(op, ty, old, b, c, true)))
            }
            Space::Shared => {
                let old = shared.read(a, size, self.t, false)?;
                shared.write(a, size, atomic_op(op, ty, old, b, c, false), self.t, false)?;
                Ok(old)
            }
            _ => Err((
                FaultKind::IllegalAddress,
                format!("atomics on {space:?} space are not emulated"),
            )),
        }
    }
}

fn check_align(addr: u64, size: usize, what: &str) -> Result<(), Trouble> {
    if !addr.is_multiple_of(size as u64) {
        return Err((
            FaultKind::Misaligned,
            format!("misaligned {what} of {size} bytes at {addr:#x}"),
        ));
    }
    Ok(())
}

fn miss(m: Miss, what: &str, addr: u64, size: usize) -> Trouble {
    let detail = match &m {
        Miss::OutOfBounds {
            base, size: alloc, ..
        } if addr >= *base => {
            format!(
                "{} bytes past the end",
                addr + size as u64 - (base + *alloc as u64)
            )
        }
        Miss::OutOfBounds { base, .. } => format!("{} bytes before the start", base - addr),
        _ => String::new(),
    };
    let sep = if detail.is_empty() { "" } else { ", " };
    (
        FaultKind::IllegalAddress,
        format!("{what} of {size} bytes at {addr:#x} {m}{sep}{detail}"),
    )
}

impl Shared {
    fn check(&self, addr: u64, size: usize, what: &str) -> Result<usize, Trouble> {
        if addr
            .checked_add(size as u64)
            .is_none_or(|end| end > self.data.len() as u64)
        {
            return Err((
                FaultKind::IllegalAddress,
                format!(
                    "shared {what} of {size} bytes at {addr:#x}, outside the block's {} bytes",
                    self.data.len()
                ),
            ));
        }
        Ok(addr as usize)
    }

    fn read(&mut self, addr: u64, size: usize, t: u32, track: bool) -> Result<u64, Trouble> {
        let at = self.check(addr, size, "read")?;
        if let Some(i) = (at..at + size).find(|&i| !self.written[i]) {
            return Err((
                FaultKind::Uninitialized,
                format!("shared read of byte {i:#x}, never written in this block"),
            ));
        }
        if track {
            for i in at..at + size {
                let s = &mut self.shadow[i];
                if s.write_epoch == self.epoch && s.writer != t {
                    return Err((
                        FaultKind::Race,
                        format!(
                            "shared read of byte {i:#x}, which thread {} wrote since the last barrier",
                            s.writer
                        ),
                    ));
                }
                s.reader = if s.read_epoch == self.epoch && s.reader != t {
                    MANY
                } else {
                    t
                };
                s.read_epoch = self.epoch;
            }
        }
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(&self.data[at..at + size]);
        Ok(u64::from_le_bytes(b))
    }

    fn write(
        &mut self,
        addr: u64,
        size: usize,
        x: u64,
        t: u32,
        track: bool,
    ) -> Result<(), Trouble> {
        let at = self.check(addr, size, "write")?;
        if track {
            for i in at..at + size {
                let s = &mut self.shadow[i];
                if s.write_epoch == self.epoch && s.writer != t {
                    return Err((
                        FaultKind::Race,
                        format!(
                            "shared write of byte {i:#x}, which thread {} wrote since the last barrier",
                            s.writer
                        ),
                    ));
                }
                if s.read_epoch == self.epoch && s.reader != t {
                    let who = if s.reader == MANY {
                        "other threads".to_string()
                    } else {
                        format!("thread {}", s.reader)
                    };
                    return Err((
                        FaultKind::Race,
                        format!(
                            "shared write of byte {i:#x}, which {who} read since the last barrier"
                        ),
                    ));
                }
                s.write_epoch = self.epoch;
                s.writer = t;
            }
        }
        self.data[at..at + size].copy_from_slice(&x.to_le_bytes()[..size]);
        self.written[at..at + size].fill(true);
        Ok(())
    }
}

/// An integer operation on `ty`; returns the result and its type (a
/// `.wide` multiply doubles the width).
pub fn int_binary(op: IntOp, ty: Ty, a: u64, b: u64) -> (u64, Ty) {
    let bits = ty.bits();
    let (ua, ub) = (mask_bits(a, bits), mask_bits(b, bits));
    let (sa, sb) = (sign_extend(a, bits), sign_extend(b, bits));
    let signed = ty.is_signed();
    let r = match op {
        IntOp::Add => ua.wrapping_add(ub),
        IntOp::Sub => ua.wrapping_sub(ub),
        IntOp::MulLo => ua.wrapping_mul(ub),
        IntOp::MulHi => {
            if signed {
                ((sa as i128 * sb as i128) >> bits) as u64
            } else {
                ((ua as u128 * ub as u128) >> bits) as u64
            }
        }
        IntOp::MulWide => {
            let wide = match ty {
                Ty::U16 => Ty::U32,
                Ty::S16 => Ty::S32,
                Ty::U32 => Ty::U64,
                _ => Ty::S64,
            };
            let r = if signed {
                (sa * sb) as u64
            } else {
                ua.wrapping_mul(ub)
            };
            return (mask_bits(r, wide.bits()), wide);
        }
        // Division by zero has no defined result in PTX; the emulator gives
        // what NVIDIA hardware gives: all ones, and the dividend as remainder.
        IntOp::Div if ub == 0 => u64::MAX,
        IntOp::Rem if ub == 0 => ua,
        IntOp::Div if signed => sa.wrapping_div(sb) as u64,
        IntOp::Div => ua / ub,
        IntOp::Rem if signed => sa.wrapping_rem(sb) as u64,
        IntOp::Rem => ua % ub,
        IntOp::Min if signed => sa.min(sb) as u64,
        IntOp::Min => ua.min(ub),
        IntOp::Max if signed => sa.max(sb) as u64,
        IntOp::Max => ua.max(ub),
        IntOp::And => ua & ub,
        IntOp::Or => ua | ub,
        IntOp::Xor => ua ^ ub,
        // Shift amounts of the width or more are clamped to the width.
        IntOp::Shl => {
            let s = b as u32;
            if s >= bits { 0 } else { ua << s }
        }
        IntOp::Shr if signed => {
            let s = (b as u32).min(bits - 1);
            (sa >> s) as u64
        }
        IntOp::Shr => {
            let s = b as u32;
            if s >= bits { 0 } else { ua >> s }
        }
        IntOp::AddSat => (sa as i32).saturating_add(sb as i32) as u64,
        IntOp::SubSat => (sa as i32).saturating_sub(sb as i32) as u64,
    };
    (mask_bits(r, bits), ty)
}

pub fn int_unary(op: IntUnOp, ty: Ty, a: u64) -> u64 {
    let bits = ty.bits();
    let ua = mask_bits(a, bits);
    let r = match op {
        IntUnOp::Neg => ua.wrapping_neg(),
        IntUnOp::Abs => sign_extend(a, bits).wrapping_abs() as u64,
        IntUnOp::Not if ty == Ty::Pred => (ua == 0) as u64,
        IntUnOp::Not => !ua,
        IntUnOp::Cnot => (ua == 0) as u64,
        IntUnOp::Popc => ua.count_ones() as u64,
        IntUnOp::Clz => (ua.leading_zeros() - (64 - bits)) as u64,
        IntUnOp::Brev => ua.reverse_bits() >> (64 - bits),
    };
    mask_bits(
        r,
        bits.max(if matches!(op, IntUnOp::Popc | IntUnOp::Clz) {
            32
        } else {
            0
        }),
    )
}

pub fn int_compare(cmp: Cmp, ty: Ty, a: u64, b: u64) -> bool {
    let bits = ty.bits();
    let (ua, ub) = (mask_bits(a, bits), mask_bits(b, bits));
    let (sa, sb) = (sign_extend(a, bits), sign_extend(b, bits));
    let signed = ty.is_signed();
    match cmp {
        Cmp::Eq => ua == ub,
        Cmp::Ne => ua != ub,
        Cmp::Lt if signed => sa < sb,
        Cmp::Le if signed => sa <= sb,
        Cmp::Gt if signed => sa > sb,
        Cmp::Ge if signed => sa >= sb,
        Cmp::Lt | Cmp::Lo => ua < ub,
        Cmp::Le | Cmp::Ls => ua <= ub,
        Cmp::Gt | Cmp::Hi => ua > ub,
        Cmp::Ge | Cmp::Hs => ua >= ub,
        _ => false,
    }
}

/// `cvt`, on bits.
pub fn convert(dty: Ty, sty: Ty, rnd: CvtRnd, ftz: bool, sat: bool, a: u64) -> u64 {
    match (dty.is_float(), sty.is_float()) {
        (false, false) => {
            let v: i128 = if sty.is_signed() {
                sign_extend(a, sty.bits()) as i128
            } else {
                mask_bits(a, sty.bits()) as i128
            };
            let v = if sat {
                let (lo, hi) = if dty.is_signed() {
                    (
                        -(1i128 << (dty.bits() - 1)),
                        (1i128 << (dty.bits() - 1)) - 1,
                    )
                } else {
                    (0, (1i128 << dty.bits()) - 1)
                };
                v.clamp(lo, hi)
            } else {
                v
            };
            mask_bits(v as u64, dty.bits())
        }
        (true, false) => {
            let v: i128 = if sty.is_signed() {
                sign_extend(a, sty.bits()) as i128
            } else {
                mask_bits(a, sty.bits()) as i128
            };
            let CvtRnd::Float(r) = rnd else {
                unreachable!("checked at load")
            };
            float::int_to_float(dty, v, r, sat)
        }
        (false, true) => {
            let CvtRnd::Int(r) = rnd else {
                unreachable!("checked at load")
            };
            float::float_to_int(dty, sty, r, ftz, a)
        }
        (true, true) => {
            let (frnd, irnd) = match rnd {
                CvtRnd::Float(r) => (Some(r), None),
                CvtRnd::Int(r) => (None, Some(r)),
                CvtRnd::None => (None, None),
            };
            float::float_to_float(dty, sty, frnd, irnd, ftz, sat, a)
        }
    }
}

fn atomic_op(op: AtomOp, ty: Ty, old: u64, b: u64, c: Option<u64>, global: bool) -> u64 {
    let bits = ty.bits();
    match (op, ty) {
        (AtomOp::Add, Ty::F32) => {
            let r = float::binary32(
                crate::ptx::FOp::Add,
                Rnd::Rn,
                global,
                false,
                old as u32,
                b as u32,
            );
            r as u64
        }
        (AtomOp::Add, Ty::F64) => float::binary64(crate::ptx::FOp::Add, Rnd::Rn, old, b),
        (AtomOp::Min | AtomOp::Max, Ty::F32) => {
            float::min_max32(op == AtomOp::Max, false, false, old as u32, b as u32) as u64
        }
        (AtomOp::Min | AtomOp::Max, Ty::F64) => float::min_max64(op == AtomOp::Max, false, old, b),
        (AtomOp::Add, _) => int_binary(IntOp::Add, ty, old, b).0,
        (AtomOp::Min, _) => int_binary(IntOp::Min, ty, old, b).0,
        (AtomOp::Max, _) => int_binary(IntOp::Max, ty, old, b).0,
        (AtomOp::Inc, _) => {
            if mask_bits(old, bits) >= mask_bits(b, bits) {
                0
            } else {
                mask_bits(old + 1, bits)
            }
        }
        (AtomOp::Dec, _) => {
            let (o, m) = (mask_bits(old, bits), mask_bits(b, bits));
            if o == 0 || o > m { m } else { o - 1 }
        }
        (AtomOp::And, _) => old & b,
        (AtomOp::Or, _) => old | b,
        (AtomOp::Xor, _) => old ^ b,
        (AtomOp::Exch, _) => b,
        (AtomOp::Cas, _) => {
            if mask_bits(old, bits) == mask_bits(b, bits) {
                c.unwrap_or(old)
            } else {
                old
            }
        }
    }
}
