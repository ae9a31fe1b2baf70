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

    /// Reads `src` as `f32`, converting into `buf` where the type is not `f32`
    /// (a batch conversion, which `half` vectorizes).
    #[doc(hidden)]
    fn read<'a>(src: &'a [Self], buf: &'a mut [f32]) -> &'a [f32];

    /// Lets `fill` write `f32` results and stores them in `dst`, through
    /// `buf` where the type is not `f32`.
    #[doc(hidden)]
    fn write(dst: &mut [Self], buf: &mut [f32], fill: impl FnOnce(&mut [f32]));

    /// [`Element::write`] with streaming (non-temporal) stores where the CPU
    /// has them, for outputs too large for the cache; always through `buf`.
    /// The caller calls [`convert::fence`] before another thread may read
    /// `dst`.
    #[doc(hidden)]
    fn write_stream(dst: &mut [Self], buf: &mut [f32], fill: impl FnOnce(&mut [f32]));

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

    #[inline(always)]
    fn write_stream(dst: &mut [Self], buf: &mut [f32], fill: impl FnOnce(&mut [f32])) {
        let buf = &mut buf[..dst.len()];
        fill(buf);
        convert::stream_f32(convert::best(), buf, dst);
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
            // the caller's SIMD context (see `cpu::simd`).
            #[inline(always)]
            fn read<'a>(src: &'a [Self], buf: &'a mut [f32]) -> &'a [f32] {
                let buf = &mut buf[..src.len()];
                $widen(convert::best(), src, buf);
                buf
            }

            #[inline(always)]
            fn write(dst: &mut [Self], buf: &mut [f32], fill: impl FnOnce(&mut [f32])) {
                let buf = &mut buf[..dst.len()];
                fill(buf);
                $narrow(convert::best(), buf, dst, false);
            }

            #[inline(always)]
            fn write_stream(dst: &mut [Self], buf: &mut [f32], fill: impl FnOnce(&mut [f32])) {
                let buf = &mut buf[..dst.len()];
                fill(buf);
                $narrow(convert::best(), buf, dst, true);
            }
        }
    };
}

half_element!(f16, DType::F16, convert::f16_to_f32, convert::f32_to_f16);
half_element!(
    bf16,
    DType::BF16,
    convert::bf16_to_f32,
    convert::f32_to_bf16
);

#[cfg(test)]
mod tests {
    use super::convert::{self, Level};
    use super::*;

    /// f32 patterns that exercise every rounding decision of both half
    /// types: each of the 2^16 upper halves (sign, exponent and the seven
    /// mantissa bits bf16 keeps, so every bf16 result and every f16 boundary
    /// from bit 16 up) with lower halves at and around each tie of bf16 and
    /// of f16 (normal: bit 12; subnormal: bits 13 to 15), and a pseudorandom
    /// one. NaNs of every payload top, infinities, subnormals and ±0 are
    /// among them.
    fn f32_samples() -> Vec<u32> {
        const LOW: [u32; 16] = [
            0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000, 0x3fff, 0x4000, 0x7fff,
            0x8000, 0x8001, 0xc000, 0xffff, 0x5a5b,
        ];
        let mut v = Vec::with_capacity(LOW.len() << 16);
        let mut seed = 0x9e37_79b9u32;
        for high in 0..=u32::from(u16::MAX) {
            for low in LOW {
                v.push(high << 16 | low);
            }
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            v.push(high << 16 | (seed & 0xffff));
        }
        v
    }

    /// Offsets and lengths that put the vector bodies, the unaligned heads
    /// of streaming stores and the scalar tails at every position.
    fn windows(len: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..20)
            .flat_map(move |start| [0, 1, 7, 15, 16, 17, 33, 100].map(|n| (start, n)))
            .chain([(0, len)])
            .filter(move |&(s, n)| s + n <= len)
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

    fn widen_all<T: Element>(
        name: &str,
        from_bits: impl Fn(u16) -> T,
        want: impl Fn(u16) -> u32,
        convert: impl Fn(Level, &[T], &mut [f32]),
    ) {
        let all: Vec<T> = (0..=u16::MAX).map(from_bits).collect();
        let wanted: Vec<u32> = (0..=u16::MAX).map(want).collect();
        for level in convert::available() {
            for (start, n) in windows(all.len()) {
                let src = &all[start..start + n];
                let mut wide = vec![f32::NAN; n];
                convert(level, src, &mut wide);
                for ((h, w), want) in src.iter().zip(&wide).zip(&wanted[start..]) {
                    assert_eq!(*want, w.to_bits(), "{name} widening {h:?} at {level:?}");
                }
            }
        }
    }

    fn narrow_all<T: Element>(
        name: &str,
        to_bits: impl Fn(T) -> u16,
        convert: impl Fn(Level, &[f32], &mut [T], bool),
    ) {
        let samples: Vec<f32> = f32_samples().into_iter().map(f32::from_bits).collect();
        for level in convert::available() {
            for stream in [false, true] {
                for (start, n) in windows(samples.len()) {
                    let src = &samples[start..start + n];
                    // Destinations at every alignment, for the streaming heads.
                    let mut out = vec![T::default(); n + 16];
                    let dst = &mut out[start % 16..start % 16 + n];
                    convert(level, src, dst, stream);
                    for (s, d) in src.iter().zip(dst.iter()) {
                        assert_eq!(
                            to_bits(T::from_f32(*s)),
                            to_bits(*d),
                            "{name} narrowing {:#010x} at {level:?}, stream {stream}",
                            s.to_bits()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn f16_conversions_equal_scalar_ones_bit_for_bit() {
        widen_all("f16", f16::from_bits, f16_widened, convert::f16_to_f32);
        narrow_all("f16", f16::to_bits, convert::f32_to_f16);
    }

    #[test]
    fn bf16_conversions_equal_scalar_ones_bit_for_bit() {
        widen_all("bf16", bf16::from_bits, bf16_widened, convert::bf16_to_f32);
        narrow_all("bf16", bf16::to_bits, convert::f32_to_bf16);
    }

    #[test]
    fn streaming_copy_is_a_copy() {
        let samples: Vec<f32> = f32_samples().into_iter().map(f32::from_bits).collect();
        for level in convert::available() {
            for (start, n) in windows(samples.len()) {
                let src = &samples[start..start + n];
                let mut out = vec![0f32; n + 16];
                let dst = &mut out[start % 16..start % 16 + n];
                convert::stream_f32(level, src, dst);
                assert!(
                    src.iter()
                        .zip(dst.iter())
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{level:?} at {start}+{n}"
                );
            }
        }
    }

    /// The trait's block paths, which the CPU driver calls, at the best level.
    fn through_the_trait<T: Element>(from_bits: impl Fn(u16) -> T, want: impl Fn(u16) -> u32) {
        let all: Vec<T> = (0..=u16::MAX).map(from_bits).collect();
        let mut buf = vec![0f32; all.len()];
        let wide = T::read(&all, &mut buf).to_vec();
        for ((h, w), bits) in all.iter().zip(&wide).zip(0..=u16::MAX) {
            assert_eq!(want(bits), w.to_bits(), "widening {h:?}");
        }
        let samples: Vec<f32> = f32_samples().into_iter().map(f32::from_bits).collect();
        for stream in [false, true] {
            let mut narrow = vec![T::default(); samples.len()];
            let mut buf = vec![0f32; samples.len()];
            let fill = |b: &mut [f32]| b.copy_from_slice(&samples);
            if stream {
                T::write_stream(&mut narrow, &mut buf, fill);
            } else {
                T::write(&mut narrow, &mut buf, fill);
            }
            for (s, n) in samples.iter().zip(&narrow) {
                let want = T::from_f32(*s);
                assert!(
                    want == *n || want.to_f32().to_bits() == n.to_f32().to_bits(),
                    "narrowing {:#010x}: {n:?}, stream {stream}",
                    s.to_bits()
                );
            }
        }
    }

    #[test]
    fn block_conversions_equal_scalar_ones() {
        through_the_trait::<f16>(f16::from_bits, f16_widened);
        through_the_trait::<bf16>(bf16::from_bits, bf16_widened);
        let f32_from = |b: u16| f32::from_bits(u32::from(b) << 16 | u32::from(b));
        through_the_trait::<f32>(f32_from, |b| f32_from(b).to_bits());
    }
}
