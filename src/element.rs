//! The element types lowbit computes on: `f32`, `half::f16`, `half::bf16`.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// The element type of a tensor, for APIs that choose it at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// The short name used in kernel names and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// An element type lowbit computes on. Half types are widened to `f32`,
/// computed and rounded once (round to nearest even).
pub trait Element: Copy + Default + Send + Sync + PartialEq + std::fmt::Debug + 'static + sealed::Sealed {
    /// The run-time tag of this type.
    const DTYPE: DType;

    /// Widens to `f32` (exact).
    fn to_f32(self) -> f32;

    /// Rounds an `f32` to this type.
    fn from_f32(v: f32) -> Self;

    /// Reads `src` as `f32`, converting into `buf` where the type is not `f32`
    /// (a batch conversion, which `half` vectorizes).
    #[doc(hidden)]
    fn read<'a>(src: &'a [Self], buf: &'a mut [f32]) -> &'a [f32];

    /// Lets `fill` write `f32` results and stores them in `dst`, through
    /// `buf` where the type is not `f32`.
    #[doc(hidden)]
    fn write(dst: &mut [Self], buf: &mut [f32], fill: impl FnOnce(&mut [f32]));

    /// The value `v` takes once stored in this type, as `f32`. larq casts its
    /// parameters to the tensor's type; so does lowbit for thresholds.
    fn round_f32(v: f32) -> f32 {
        Self::from_f32(v).to_f32()
    }
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;

    fn to_f32(self) -> f32 {
        self
    }

    fn from_f32(v: f32) -> Self {
        v
    }

    fn read<'a>(src: &'a [Self], _buf: &'a mut [f32]) -> &'a [f32] {
        src
    }

    fn write(dst: &mut [Self], _buf: &mut [f32], fill: impl FnOnce(&mut [f32])) {
        fill(dst)
    }
}

macro_rules! half_element {
    ($t:ty, $dtype:expr) => {
        impl Element for $t {
            const DTYPE: DType = $dtype;

            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }

            fn from_f32(v: f32) -> Self {
                <$t>::from_f32(v)
            }

            fn read<'a>(src: &'a [Self], buf: &'a mut [f32]) -> &'a [f32] {
                let buf = &mut buf[..src.len()];
                src.convert_to_f32_slice(buf);
                buf
            }

            fn write(dst: &mut [Self], buf: &mut [f32], fill: impl FnOnce(&mut [f32])) {
                let buf = &mut buf[..dst.len()];
                fill(buf);
                dst.convert_from_f32_slice(buf);
            }
        }
    };
}

half_element!(f16, DType::F16);
half_element!(bf16, DType::BF16);
