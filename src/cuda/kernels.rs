//! Every kernel as a typed value. The enums come from `kernels/kernels.def`,
//! the list the `.cu` files stamp their kernels from (build.rs generates
//! them), so a [`Kernel`] the host can name is one the PTX defines. Each
//! context resolves all of them once, when it loads the modules; a launch
//! indexes a table.

use std::fmt;
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaFunction, CudaModule};

use crate::element::DType;
use crate::error::{Error, Result};
use crate::op::Direction;

include!(concat!(env!("OUT_DIR"), "/kernel_ids.rs"));

/// One kernel of the embedded PTX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// `<family>_fwd_<dt>` or `<family>_bwd_<dt>`.
    Elementwise(Family, Direction, DType),
    /// `<family>_fwd_mask_<dt>`.
    ForwardMask(Masked, DType),
    /// `<name>_<dt>`.
    Typed(Typed, DType),
    /// `<name>`.
    Single(Single),
}

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

fn dtype_index(dtype: DType) -> usize {
    match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
    }
}

impl Kernel {
    /// How many kernels there are.
    #[cfg(test)]
    pub(crate) const COUNT: usize =
        Family::ALL.len() * 6 + Masked::ALL.len() * 3 + Typed::ALL.len() * 3 + Single::ALL.len();

    /// Its place in a context's table of functions: dense, below [`COUNT`](Self::COUNT).
    pub(crate) fn index(self) -> usize {
        let masked = Family::ALL.len() * 6;
        let typed = masked + Masked::ALL.len() * 3;
        let single = typed + Typed::ALL.len() * 3;
        match self {
            Kernel::Elementwise(f, dir, dt) => {
                let d = match dir {
                    Direction::Forward => 0,
                    Direction::Backward => 1,
                };
                (f as usize * 2 + d) * 3 + dtype_index(dt)
            }
            Kernel::ForwardMask(m, dt) => masked + m as usize * 3 + dtype_index(dt),
            Kernel::Typed(t, dt) => typed + t as usize * 3 + dtype_index(dt),
            Kernel::Single(s) => single + s as usize,
        }
    }

    /// Every kernel, in [`index`](Self::index) order.
    pub(crate) fn all() -> impl Iterator<Item = Kernel> {
        let dirs = [Direction::Forward, Direction::Backward];
        let elementwise = Family::ALL.into_iter().flat_map(move |f| {
            dirs.into_iter()
                .flat_map(move |d| DTYPES.map(|dt| Kernel::Elementwise(f, d, dt)))
        });
        let masked = Masked::ALL
            .into_iter()
            .flat_map(|m| DTYPES.map(|dt| Kernel::ForwardMask(m, dt)));
        let typed = Typed::ALL
            .into_iter()
            .flat_map(|t| DTYPES.map(|dt| Kernel::Typed(t, dt)));
        let single = Single::ALL.into_iter().map(Kernel::Single);
        elementwise.chain(masked).chain(typed).chain(single)
    }

    /// The entry's name in the PTX, e.g. `ste_sign_bwd_f16`.
    pub(crate) fn name(self) -> &'static str {
        // Spelled once per process, so neither a launch nor an error
        // message builds a string.
        static NAMES: OnceLock<Vec<String>> = OnceLock::new();
        let names = NAMES.get_or_init(|| Kernel::all().map(Kernel::spell).collect());
        &names[self.index()]
    }

    fn spell(self) -> String {
        match self {
            Kernel::Elementwise(f, dir, dt) => {
                let d = match dir {
                    Direction::Forward => "fwd",
                    Direction::Backward => "bwd",
                };
                format!("{}_{d}_{}", f.name(), dt.name())
            }
            Kernel::ForwardMask(m, dt) => format!("{}_fwd_mask_{}", m.name(), dt.name()),
            Kernel::Typed(t, dt) => format!("{}_{}", t.name(), dt.name()),
            Kernel::Single(s) => s.name().to_string(),
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A context's functions, one per [`Kernel`], resolved when it loads the
/// modules.
#[derive(Debug)]
pub(crate) struct Functions(Vec<CudaFunction>);

impl Functions {
    /// Resolves every kernel in the module whose PTX defines its entry.
    pub(crate) fn load(modules: &[(Arc<CudaModule>, &str)]) -> Result<Self> {
        let functions = Kernel::all()
            .map(|k| {
                let entry = format!(".entry {}(", k.name());
                let (module, _) = modules
                    .iter()
                    .find(|(_, ptx)| ptx.contains(&entry))
                    .ok_or_else(|| Error::Cuda {
                        call: "cuModuleGetFunction",
                        message: format!("kernel {k} is not in the PTX"),
                    })?;
                module
                    .load_function(k.name())
                    .map_err(super::driver("cuModuleGetFunction"))
            })
            .collect::<Result<_>>()?;
        Ok(Functions(functions))
    }

    pub(crate) fn get(&self, k: Kernel) -> &CudaFunction {
        &self.0[k.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_follow_all() {
        let all: Vec<Kernel> = Kernel::all().collect();
        assert_eq!(all.len(), Kernel::COUNT);
        for (i, k) in all.iter().enumerate() {
            assert_eq!(k.index(), i, "{k}");
        }
    }

    #[test]
    fn every_kernel_is_an_entry_of_the_embedded_ptx() {
        let ptx = [
            super::super::ptx::ELEMENTWISE,
            super::super::ptx::REDUCE,
            super::super::ptx::BITS,
            super::super::ptx::MASK,
        ];
        for k in Kernel::all() {
            let entry = format!(".visible .entry {}(", k.name());
            assert!(ptx.iter().any(|p| p.contains(&entry)), "no entry {k}");
        }
        assert_eq!(
            Kernel::Elementwise(Family::SteSign, Direction::Backward, DType::F16).name(),
            "ste_sign_bwd_f16"
        );
        assert_eq!(
            Kernel::ForwardMask(Masked::SteTern, DType::BF16).name(),
            "ste_tern_fwd_mask_bf16"
        );
        assert_eq!(Kernel::Single(Single::AllPassMask).name(), "all_pass_mask");
    }
}
