//! Small kernels for the emulator's tests, run straight on the interpreter
//! with memory of their own (no driver state), so a test can fault freely.

#![allow(dead_code)]

use cuda_emu::exec::{self, Dims, Fault, FaultKind};
use cuda_emu::memory::{Memory, View};
use cuda_emu::ptx;

pub const HEADER: &str = ".version 9.0\n.target sm_90\n.address_size 64\n";

/// A module from kernel text, which must load.
pub fn module(body: &str) -> ptx::Module {
    let src = format!("{HEADER}{body}");
    ptx::parse(&src, (9, 0)).unwrap_or_else(|e| panic!("{e}\n{src}"))
}

/// Device memory for one test, and the parameter buffer of a launch.
pub struct Device {
    pub memory: Memory,
}

impl Device {
    pub fn new() -> Self {
        Device {
            memory: Memory::new(2, 1 << 30),
        }
    }

    /// An allocation holding `bytes` (written, so reads of it are fine).
    pub fn upload(&self, bytes: &[u8]) -> u64 {
        let p = self.memory.alloc(0, bytes.len().max(1)).unwrap();
        let (a, _) = self.memory.find(p, 1).unwrap();
        a.write_bytes(0, bytes);
        p
    }

    /// An allocation of `n` bytes never written.
    pub fn alloc(&self, n: usize) -> u64 {
        self.memory.alloc(0, n).unwrap()
    }

    pub fn download(&self, p: u64, n: usize) -> Vec<u8> {
        let (a, off) = self.memory.find(p, n).unwrap();
        let mut out = vec![0; n];
        a.read_bytes(off, &mut out);
        out
    }

    pub fn launch(
        &self,
        m: &ptx::Module,
        kernel: &str,
        grid: [u32; 3],
        block: [u32; 3],
        params: &[u64],
    ) -> Result<(), Fault> {
        self.launch_on(0, m, kernel, grid, block, 0, params, 2)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn launch_on(
        &self,
        device: usize,
        m: &ptx::Module,
        kernel: &str,
        grid: [u32; 3],
        block: [u32; 3],
        dynamic_shared: u32,
        params: &[u64],
        workers: usize,
    ) -> Result<(), Fault> {
        let k = m.kernel(kernel).expect("kernel");
        let mut buf = vec![0u8; k.param_bytes];
        for (p, v) in k.params.iter().zip(params) {
            buf[p.offset..p.offset + p.size].copy_from_slice(&v.to_le_bytes()[..p.size]);
        }
        let view = View::new(&self.memory, device);
        let dims = Dims {
            grid,
            block,
            dynamic_shared,
        };
        exec::launch(k, dims, &buf, &view, workers).map(|_| ())
    }
}

/// Evaluates one instruction in one thread: `%a`, `%b`, `%c` hold the
/// inputs (as bits of their types), the instruction writes `%d` (and may
/// write predicates `%p`, `%q`), and the result comes back as bits.
///
/// `types` gives the PTX types of d, a, b, c.
pub fn eval(instr: &str, types: [&str; 4], inputs: [u64; 3]) -> u64 {
    let [d, a, b, c] = types;
    // Parameters carry bits: untyped and half types travel as unsigned.
    let param = |t: &str| match t {
        "pred" => "u32".to_string(),
        "f16" | "bf16" | "b16" => "u16".to_string(),
        "b8" => "u8".to_string(),
        "b32" => "u32".to_string(),
        "b64" => "u64".to_string(),
        t => t.to_string(),
    };
    let load = |name: &str, t: &str| {
        if t == "pred" {
            format!("ld.param.u32 %t, [p{name}];\n  setp.ne.u32 %{name}, %t, 0;\n")
        } else {
            format!("ld.param.{} %{name}, [p{name}];\n", param(t))
        }
    };
    let store = if d == "pred" {
        "selp.u32 %t, 1, 0, %d;\n  st.global.u32 [%o], %t;".to_string()
    } else {
        format!("st.global.{} [%o], %d;", param(d))
    };
    let src = format!(
        ".visible .entry k(.param .u64 po, .param .{pa} pa, .param .{pb} pb, .param .{pc} pc)\n{{\n\
         .reg .u64 %o;\n .reg .u32 %t;\n .reg .pred %p, %q;\n\
         .reg .{d} %d;\n .reg .{a} %a;\n .reg .{b} %b;\n .reg .{c} %c;\n\
         ld.param.u64 %o, [po];\n {la} {lb} {lc}\n  {instr}\n  {store}\n  ret;\n}}\n",
        pa = param(a),
        pb = param(b),
        pc = param(c),
        la = load("a", a),
        lb = load("b", b),
        lc = load("c", c),
    );
    let m = module(&src);
    let dev = Device::new();
    let out = dev.upload(&[0; 8]);
    dev.launch(
        &m,
        "k",
        [1, 1, 1],
        [1, 1, 1],
        &[out, inputs[0], inputs[1], inputs[2]],
    )
    .unwrap_or_else(|f| panic!("{f}"));
    u64::from_le_bytes(dev.download(out, 8).try_into().unwrap())
}

pub fn f32b(x: f32) -> u64 {
    x.to_bits() as u64
}

pub fn f64b(x: f64) -> u64 {
    x.to_bits()
}

/// The fault a launch must give.
pub fn expect_fault(r: Result<(), Fault>, kind: FaultKind, words: &[&str]) -> Fault {
    let f = r.expect_err("the launch must fail");
    assert_eq!(f.kind, kind, "{}", f.message);
    for w in words {
        assert!(f.message.contains(w), "`{w}` not in: {}", f.message);
    }
    f
}
