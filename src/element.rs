//! The element types lowbit computes on: `f32`, `half::f16`, `half::bf16`.

use half::{bf16, f16};

pub(crate) mod convert;

/// The element type of a tensor, for APIs that choose it at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// `f32`.
    F32,
    /// `half::f16` (IEEE binary16).
    F16,
    /// `half::bf16` (bfloat16).
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

    /// The value `v` takes once stored in this type, as `f32`.
    pub fn round(self, v: f32) -> f32 {
        match self {
            DType::F32 => v,
            DType::F16 => f16::from_f32(v).to_f32(),
            DType::BF16 => bf16::from_f32(v).to_f32(),
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
    use super::convert::{self, LANES, Level};
    use half::{bf16, f16};

    /// The lane conversions of the CPU's loops, which only this crate
    /// names. With a constant `level` (the loop's SIMD context) each is a
    /// few instructions inlined into the loop.
    pub trait Sealed: Sized {
        /// `LANES` elements widened to `f32` (exact).
        fn widen(level: Level, src: &[Self; LANES]) -> [f32; LANES];
        /// `LANES` values rounded to this type.
        fn narrow(level: Level, v: &[f32; LANES]) -> [Self; LANES];
        /// [`Sealed::widen`]'s values, for a loop that computes with them
        /// rather than narrowing them again (see
        /// [`convert::bf16_widen_opaque`]).
        #[inline(always)]
        fn widen_opaque(level: Level, src: &[Self; LANES]) -> [f32; LANES] {
            Self::widen(level, src)
        }
    }

    impl Sealed for f32 {
        #[inline(always)]
        fn widen(_: Level, src: &[f32; LANES]) -> [f32; LANES] {
            *src
        }
        #[inline(always)]
        fn narrow(_: Level, v: &[f32; LANES]) -> [f32; LANES] {
            *v
        }
    }

    impl Sealed for f16 {
        #[inline(always)]
        fn widen(level: Level, src: &[f16; LANES]) -> [f32; LANES] {
            convert::f16_widen(level, src)
        }
        #[inline(always)]
        fn narrow(level: Level, v: &[f32; LANES]) -> [f16; LANES] {
            convert::f16_narrow(level, v)
        }
    }

    impl Sealed for bf16 {
        #[inline(always)]
        fn widen(_: Level, src: &[bf16; LANES]) -> [f32; LANES] {
            convert::bf16_widen_lanes(src)
        }
        #[inline(always)]
        fn narrow(_: Level, v: &[f32; LANES]) -> [bf16; LANES] {
            convert::bf16_narrow_lanes(v)
        }
        #[inline(always)]
        fn widen_opaque(level: Level, src: &[bf16; LANES]) -> [f32; LANES] {
            convert::bf16_widen_opaque(level, src)
        }
    }
}

/// An element type lowbit computes on. Half types are widened to `f32`,
/// computed and rounded once (round to nearest even).
///
/// Every element type is also cudarc's `DeviceRepr`, so the same generic
/// code moves it to and from a GPU.
pub trait Element:
    Copy
    + Default
    + Send
    + Sync
    + PartialEq
    + std::fmt::Debug
    + 'static
    + cudarc::driver::DeviceRepr
    + sealed::Sealed
{
    /// The run-time tag of this type.
    const DTYPE: DType;

    /// Widens to `f32` (exact).
    fn to_f32(self) -> f32;

    /// Rounds an `f32` to this type.
    fn from_f32(v: f32) -> Self;

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
        }
    };
}

half_element!(f16, DType::F16);
half_element!(bf16, DType::BF16);

#[cfg(test)]
mod tests {
    use super::convert::{self, LANES, Level};
    use super::*;

    /// f32 patterns that exercise every rounding decision of both half
    /// types: each of the 2^16 upper halves (sign, exponent and the seven
    /// mantissa bits bf16 keeps, so every bf16 result and every f16 boundary
    /// from bit 16 up) with lower halves at and around each tie of bf16 and
    /// of f16 (normal: bit 12; subnormal: bits 13 to 15), and a pseudorandom
    /// one. NaNs of every payload top, infinities, subnormals and ±0 are
    /// among them.
    fn f32_samples() -> Vec<f32> {
        const LOW: [u32; 16] = [
            0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000, 0x3fff, 0x4000, 0x7fff,
            0x8000, 0x8001, 0xc000, 0xffff, 0x5a5b,
        ];
        let mut v = Vec::with_capacity(LOW.len() << 16);
        let mut seed = 0x9e37_79b9u32;
        for high in 0..=u32::from(u16::MAX) {
            for low in LOW {
                v.push(f32::from_bits(high << 16 | low));
            }
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            v.push(f32::from_bits(high << 16 | (seed & 0xffff)));
        }
        v
    }

    /// What widening a bf16 must give: the 16-bit shift, every bit kept,
    /// as lowbit always has. That is `half`'s scalar conversion except at a
    /// signalling NaN, where `half` sets the quiet bit.
    fn bf16_widened(bits: u16) -> u32 {
        let shifted = u32::from(bits) << 16;
        let by_half = bf16::from_bits(bits).to_f32().to_bits();
        assert!(by_half == shifted || by_half == shifted | 0x0040_0000);
        shifted
    }

    fn f16_widened(bits: u16) -> u32 {
        f16::from_bits(bits).to_f32().to_bits()
    }

    /// Every step of `all` widened at `level`, by both widenings, one after
    /// the other; inlined, so that inside `cpu::simd` it is compiled as the
    /// CPU's loops are.
    #[inline(always)]
    fn widen_steps<T: Element>(level: Level, all: &[T]) -> Vec<u32> {
        let steps = || all.chunks_exact(LANES).filter_map(|s| s.first_chunk());
        let plain = steps().flat_map(|s| T::widen(level, s).map(f32::to_bits));
        let opaque = steps().flat_map(|s| T::widen_opaque(level, s).map(f32::to_bits));
        plain.chain(opaque).collect()
    }

    /// [`widen_steps`] for narrowing.
    #[inline(always)]
    fn narrow_steps<T: Element>(level: Level, all: &[f32]) -> Vec<T> {
        let steps = all.chunks_exact(LANES).filter_map(|s| s.first_chunk());
        steps.flat_map(|s| T::narrow(level, s)).collect()
    }

    /// Each level's own code, called from outside any SIMD context, and the
    /// best level's as `cpu::simd` compiles it (`f` inlined, as the loops').
    fn at_every_level<R>(f: impl Fn(Level) -> R) -> Vec<(String, R)> {
        let mut out: Vec<_> = convert::available()
            .into_iter()
            .map(|level| (format!("{level:?}"), f(level)))
            .collect();
        out.push(("the loops' context".into(), crate::cpu::simd(&f)));
        out
    }

    fn conversions_equal_scalar_ones<T: Element>(
        name: &str,
        from_bits: impl Fn(u16) -> T,
        to_bits: impl Fn(T) -> u16,
        widened: impl Fn(u16) -> u32,
    ) {
        let all: Vec<T> = (0..=u16::MAX).map(from_bits).collect();
        for (level, wide) in at_every_level(
            #[inline(always)]
            |level| widen_steps(level, &all),
        ) {
            assert_eq!(wide.len(), 2 << 16);
            for (k, w) in wide.into_iter().enumerate() {
                let bits = k as u16;
                assert_eq!(
                    widened(bits),
                    w,
                    "{name} widening {bits:#06x} at {level} ({k})"
                );
            }
        }
        let samples = f32_samples();
        for (level, narrow) in at_every_level(
            #[inline(always)]
            |level| narrow_steps::<T>(level, &samples),
        ) {
            for (s, n) in samples.iter().zip(narrow) {
                assert_eq!(
                    to_bits(T::from_f32(*s)),
                    to_bits(n),
                    "{name} narrowing {:#010x} at {level}",
                    s.to_bits()
                );
            }
        }
    }

    #[test]
    fn f16_conversions_equal_scalar_ones_bit_for_bit() {
        conversions_equal_scalar_ones("f16", f16::from_bits, f16::to_bits, f16_widened);
    }

    #[test]
    fn bf16_conversions_equal_scalar_ones_bit_for_bit() {
        conversions_equal_scalar_ones("bf16", bf16::from_bits, bf16::to_bits, bf16_widened);
    }

    #[test]
    fn f32_steps_are_copies() {
        let samples = f32_samples();
        for (level, wide) in at_every_level(
            #[inline(always)]
            |level| widen_steps(level, &samples),
        ) {
            assert_eq!(wide.len(), 2 * samples.len());
            assert!(
                wide.iter()
                    .zip(samples.iter().chain(&samples))
                    .all(|(w, s)| *w == s.to_bits()),
                "{level}"
            );
        }
        for (level, narrow) in at_every_level(
            #[inline(always)]
            |level| narrow_steps::<f32>(level, &samples),
        ) {
            let same = narrow.iter().zip(&samples);
            assert!(
                same.into_iter().all(|(n, s)| n.to_bits() == s.to_bits()),
                "{level}"
            );
        }
    }

    /// A step stored at every alignment, plain and streaming: a copy.
    fn stores_are_copies<T: Copy + Default + PartialEq + std::fmt::Debug>(v: [T; LANES]) {
        for level in convert::available() {
            for stream in [false, true] {
                for offset in 0..LANES {
                    let mut out = [T::default(); 2 * LANES];
                    let dst = out[offset..].first_chunk_mut().unwrap();
                    convert::store(level, &v, dst, stream);
                    convert::fence();
                    assert_eq!(*dst, v, "{level:?}, stream {stream}, offset {offset}");
                }
            }
        }
    }

    #[test]
    fn streaming_and_plain_stores_are_copies() {
        stores_are_copies::<f32>(std::array::from_fn(|i| i as f32 - 7.5));
        stores_are_copies::<u16>(std::array::from_fn(|i| 0x8000 | i as u16));
    }
}
