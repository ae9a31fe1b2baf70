//! The element types lowbit computes on: `f32`, `half::f16`, `half::bf16`.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

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
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
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

    #[inline(always)]
    fn read<'a>(src: &'a [Self], _buf: &'a mut [f32]) -> &'a [f32] {
        src
    }

    #[inline(always)]
    fn write(dst: &mut [Self], _buf: &mut [f32], fill: impl FnOnce(&mut [f32])) {
        fill(dst)
    }
}

macro_rules! half_element {
    ($t:ty, $dtype:expr, $widen:path, $narrow:path) => {
        impl Element for $t {
            const DTYPE: DType = $dtype;

            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }

            fn from_f32(v: f32) -> Self {
                <$t>::from_f32(v)
            }

            // Inlined so that `fill`, the quantizer's loop, is compiled into
            // the caller's AVX2 context (see `cpu::simd`).
            #[inline(always)]
            fn read<'a>(src: &'a [Self], buf: &'a mut [f32]) -> &'a [f32] {
                let buf = &mut buf[..src.len()];
                $widen(src, buf);
                buf
            }

            #[inline(always)]
            fn write(dst: &mut [Self], buf: &mut [f32], fill: impl FnOnce(&mut [f32])) {
                let buf = &mut buf[..dst.len()];
                fill(buf);
                $narrow(buf, dst);
            }
        }
    };
}

half_element!(f16, DType::F16, f16_to_f32, f32_to_f16);
half_element!(bf16, DType::BF16, bf16_to_f32, f32_to_bf16);

// A conversion per element through `half` costs more than the quantizer
// itself. These convert whole blocks: F16C eight at a time where the CPU has
// it, and bf16 by bit operations the compiler vectorizes. Both round to
// nearest even exactly as `half`'s scalar conversions do (the property tests
// compare them).

fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU supports F16C (and so AVX), checked just above.
        return unsafe { x86::f16_to_f32(src, dst) };
    }
    src.convert_to_f32_slice(dst);
}

fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: as in `f16_to_f32`.
        return unsafe { x86::f32_to_f16(src, dst) };
    }
    dst.convert_from_f32_slice(src);
}

fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits(u32::from(s.to_bits()) << 16);
    }
}

fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        let b = s.to_bits();
        let rounded = if s.is_nan() {
            // Keep the payload's top bits and make sure it stays a NaN.
            (b >> 16) | 0x40
        } else {
            // Round to nearest, ties to even: add just under half an ulp,
            // plus the lowest kept bit.
            (b + 0x7fff + ((b >> 16) & 1)) >> 16
        };
        *d = bf16::from_bits(rounded as u16);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX and F16C; `dst` must be as long as `src`.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len());
        let body = src.len() / 8 * 8;
        for i in (0..body).step_by(8) {
            // SAFETY: i + 8 ≤ body ≤ len for both slices; unaligned loads/stores.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
        }
        for i in body..src.len() {
            dst[i] = src[i].to_f32();
        }
    }

    /// # Safety
    /// As [`f16_to_f32`].
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
        assert_eq!(src.len(), dst.len());
        let body = src.len() / 8 * 8;
        for i in (0..body).step_by(8) {
            // SAFETY: as in `f16_to_f32`.
            unsafe {
                let v = _mm256_loadu_ps(src.as_ptr().add(i));
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), h);
            }
        }
        for i in body..src.len() {
            dst[i] = f16::from_f32(src[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_samples() -> Vec<f32> {
        // Every bf16/f16 rounding boundary neighbourhood is hit by stepping
        // through bit patterns with an odd stride, plus the special values.
        let mut v: Vec<f32> = (0..=u32::MAX).step_by(65_521).map(f32::from_bits).collect();
        v.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN_POSITIVE,
            65_520.0,
            65_519.996,
        ]);
        v
    }

    fn same_bits_or_nan<T: Element>(a: T, b: T) -> bool {
        a == b
            || (a.to_f32().is_nan() && b.to_f32().is_nan())
            || a.to_f32().to_bits() == b.to_f32().to_bits()
    }

    fn check<T: Element>(from_bits: impl Fn(u16) -> T) {
        let all: Vec<T> = (0..=u16::MAX).map(from_bits).collect();
        let mut wide = vec![0f32; all.len()];
        let mut buf = vec![0f32; all.len()];
        wide.copy_from_slice(T::read(&all, &mut buf));
        for (h, w) in all.iter().zip(&wide) {
            // F16C quiets signalling NaNs; a NaN only has to stay a NaN.
            let want = h.to_f32();
            assert!(
                want.to_bits() == w.to_bits() || (want.is_nan() && w.is_nan()),
                "widening {h:?}"
            );
        }
        let samples = f32_samples();
        let mut narrow = vec![T::default(); samples.len()];
        let mut buf = samples.clone();
        T::write(&mut narrow, &mut buf, |_| {});
        for (s, n) in samples.iter().zip(&narrow) {
            assert!(
                same_bits_or_nan(*n, T::from_f32(*s)),
                "narrowing {s:e}: {n:?}"
            );
        }
    }

    #[test]
    fn block_conversions_equal_scalar_ones() {
        check::<f16>(f16::from_bits);
        check::<bf16>(bf16::from_bits);
    }
}
