//! Conversions between `f32` and the half types, [`LANES`] elements at a
//! time in registers, and the streaming store of a step's results.
//!
//! The CPU's loops widen a step of `x`, compute, narrow and store, so loads
//! and stores interleave as in a copy. (Converting a block of 1024 into a
//! buffer first left them in separate bursts: half-precision passes ran at
//! 0.5–0.7 of a copy.) A conversion per element through `half` costs more
//! than the quantizer itself, so the f16 conversions have x86 versions, and
//! the loops are compiled for the level the CPU has (`cpu::simd`), which
//! passes it here as a constant: AVX-512 (F, BW, VL) or AVX2 with F16C. They
//! give the bits of `half`'s scalar conversions (the tests in `element.rs`
//! compare every 16-bit pattern and a broad sample of `f32` ones, at every
//! level this CPU runs):
//!
//! - f16 by the hardware conversions (`vcvtph2ps`, `vcvtps2ph`), which round
//!   to nearest even and quiet a NaN exactly as `half` does.
//! - bf16 by integer operations, which the loops vectorize: widening is a
//!   16-bit shift; narrowing adds just under half an ulp plus the lowest
//!   kept bit and shifts, and keeps a NaN's top payload bits with the quiet
//!   bit set. Not AVX512-BF16's `vcvtneps2bf16`: it flushes subnormals to
//!   zero, which `half` does not.
//!
//! [`store`] can write with non-temporal (streaming) stores, for outputs
//! larger than the cache: a plain store first reads the line it writes (read
//! for ownership), a streaming store does not, which saves a third of the
//! memory traffic of a forward pass. Streaming stores are weakly ordered: a
//! caller that issued them must call [`fence`] before anything it hands the
//! data to (rayon's join) may read it. Not each store itself: a fence waits
//! for every pending streaming store, and one per block of 1024 elements
//! stalled the loop more than the streaming stores saved.

use half::{bf16, f16};
use std::sync::atomic::{AtomicU8, Ordering};

/// The instruction sets a conversion may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Whatever the compile-time target has; `half`'s conversions.
    Portable,
    /// AVX2 and F16C, eight lanes.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 F, BW and VL, sixteen lanes.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The best level this CPU runs, detected once.
#[inline]
pub(crate) fn best() -> Level {
    // 0: not detected yet; otherwise 1 + the index into `available()`.
    static BEST: AtomicU8 = AtomicU8::new(0);
    let code = match BEST.load(Ordering::Relaxed) {
        0 => {
            let code = available().len() as u8;
            BEST.store(code, Ordering::Relaxed);
            code
        }
        code => code,
    };
    match code {
        #[cfg(target_arch = "x86_64")]
        2 => Level::Avx2,
        #[cfg(target_arch = "x86_64")]
        3 => Level::Avx512,
        _ => Level::Portable,
    }
}

/// Every level this CPU runs, worst first (the tests check each).
pub(crate) fn available() -> Vec<Level> {
    #[allow(unused_mut)]
    let mut levels = vec![Level::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("f16c") {
            levels.push(Level::Avx2);
            if has!("avx512f") && has!("avx512bw") && has!("avx512vl") {
                levels.push(Level::Avx512);
            }
        }
    }
    levels
}

/// Elements per step of the CPU's fused loops: one 64-byte cache line of a
/// half-precision tensor, two of an `f32` one, one word of a 1-bit mask.
pub(crate) const LANES: usize = 32;

/// Bytes of a cache line, the unit of a streaming store.
pub(crate) const LINE: usize = 64;

/// `LANES` halves widened, in registers: a loop over these keeps loading
/// `x` while it stores its results, where converting a block into a buffer
/// first left the loads and the stores in separate bursts.
#[inline(always)]
pub(crate) fn f16_widen(level: Level, src: &[f16; LANES]) -> [f32; LANES] {
    match level {
        Level::Portable => src.map(f16::to_f32),
        // SAFETY (both arms): `level` came from `available`, so the CPU has
        // the features the function is compiled for.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::f16_widen_avx2(src) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::f16_widen_avx512(src) },
    }
}

/// `LANES` values rounded to f16.
#[inline(always)]
pub(crate) fn f16_narrow(level: Level, v: &[f32; LANES]) -> [f16; LANES] {
    match level {
        Level::Portable => v.map(f16::from_f32),
        // SAFETY: as in `f16_widen`.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::f16_narrow_avx2(v) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::f16_narrow_avx512(v) },
    }
}

/// `LANES` bf16 widened: plain integer code, which the loops compiled for
/// AVX-512 or AVX2 vectorize.
#[inline(always)]
pub(crate) fn bf16_widen_lanes(src: &[bf16; LANES]) -> [f32; LANES] {
    let mut out = [0f32; LANES];
    for (o, &h) in out.iter_mut().zip(src) {
        *o = bf16_widen(h);
    }
    out
}

/// `LANES` bf16 widened as [`bf16_widen_lanes`], but by x86 instructions
/// the optimizer takes as they are. Where the loop computes with the
/// widened values this keeps each vector whole in a register: from the
/// plain shift LLVM rebuilt `magnitude_aware_sign`'s `dy` in the stack in
/// pieces and reloaded it whole (a store-forwarding stall, 0.43 of a copy
/// against 0.61 with this). Where the value is only narrowed again (`dy`
/// passed through a window) the plain shift is better: LLVM folds it away.
#[inline(always)]
pub(crate) fn bf16_widen_opaque(level: Level, src: &[bf16; LANES]) -> [f32; LANES] {
    match level {
        Level::Portable => bf16_widen_lanes(src),
        // SAFETY (both arms): as in `f16_widen`.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::bf16_widen_avx2(src) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::bf16_widen_avx512(src) },
    }
}

/// `LANES` values rounded to bf16, as [`bf16_widen_lanes`].
#[inline(always)]
pub(crate) fn bf16_narrow_lanes(v: &[f32; LANES]) -> [bf16; LANES] {
    let mut out = [bf16::ZERO; LANES];
    for (o, &s) in out.iter_mut().zip(v) {
        *o = bf16_narrow(s);
    }
    out
}

/// `*dst = *v`, with streaming stores where `stream` is set, the level has
/// them and `dst` starts a cache line (so it covers whole lines: `LANES`
/// elements are one or two).
#[inline(always)]
pub(crate) fn store<T: Copy>(level: Level, v: &[T; LANES], dst: &mut [T; LANES], stream: bool) {
    #[cfg(target_arch = "x86_64")]
    if stream && dst.as_ptr().addr().is_multiple_of(LINE) {
        match level {
            Level::Portable => {}
            // SAFETY: the level's features are the CPU's (as above), and
            // `dst` is aligned to a line.
            Level::Avx2 => return unsafe { x86::stream_avx2(v, dst) },
            Level::Avx512 => return unsafe { x86::stream_avx512(v, dst) },
        }
    }
    *dst = *v;
}

/// Orders this thread's streaming stores before its later stores, so that a
/// thread that synchronizes with it afterwards sees them.
#[inline]
pub(crate) fn fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86_64's baseline.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

#[inline(always)]
fn bf16_widen(h: bf16) -> f32 {
    f32::from_bits(u32::from(h.to_bits()) << 16)
}

#[inline(always)]
fn bf16_narrow(s: f32) -> bf16 {
    let b = s.to_bits();
    let rounded = if s.is_nan() {
        // Keep the payload's top bits and make sure it stays a NaN.
        (b >> 16) | 0x40
    } else {
        // Round to nearest, ties to even: add just under half an ulp,
        // plus the lowest kept bit.
        (b + 0x7fff + ((b >> 16) & 1)) >> 16
    };
    bf16::from_bits(rounded as u16)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::LANES;
    use half::{bf16, f16};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX2 and F16C.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn f16_widen_avx2(src: &[f16; LANES]) -> [f32; LANES] {
        let p: *const __m128i = src.as_ptr().cast();
        // SAFETY: four loads of 16 bytes within the 64 of `src`.
        let v: [__m256; 4] =
            std::array::from_fn(|k| _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.add(k)) }));
        // SAFETY: 128 bytes of floats, either way.
        unsafe { std::mem::transmute(v) }
    }

    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn f16_widen_avx512(src: &[f16; LANES]) -> [f32; LANES] {
        let p: *const __m256i = src.as_ptr().cast();
        // SAFETY: two loads of 32 bytes within the 64 of `src`.
        let v: [__m512; 2] =
            std::array::from_fn(|k| _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p.add(k)) }));
        // SAFETY: as above.
        unsafe { std::mem::transmute(v) }
    }

    /// # Safety
    /// The CPU must have AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn bf16_widen_avx2(src: &[bf16; LANES]) -> [f32; LANES] {
        let p: *const __m128i = src.as_ptr().cast();
        let v: [__m256i; 4] = std::array::from_fn(|k| {
            // SAFETY: four loads of 16 bytes within the 64 of `src`.
            let h = unsafe { _mm_loadu_si128(p.add(k)) };
            _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h))
        });
        // SAFETY: 128 bytes of 32-bit patterns, either way.
        unsafe { std::mem::transmute(v) }
    }

    /// # Safety
    /// The CPU must have AVX-512 F.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn bf16_widen_avx512(src: &[bf16; LANES]) -> [f32; LANES] {
        let p: *const __m256i = src.as_ptr().cast();
        let v: [__m512i; 2] = std::array::from_fn(|k| {
            // SAFETY: two loads of 32 bytes within the 64 of `src`.
            let h = unsafe { _mm256_loadu_si256(p.add(k)) };
            _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h))
        });
        // SAFETY: as above.
        unsafe { std::mem::transmute(v) }
    }

    /// # Safety
    /// The CPU must have AVX2 and F16C.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn f16_narrow_avx2(v: &[f32; LANES]) -> [f16; LANES] {
        let p = v.as_ptr();
        let h: [__m128i; 4] = std::array::from_fn(|k| {
            // SAFETY: eight floats within the 32 of `v`.
            let v = unsafe { _mm256_loadu_ps(p.add(8 * k)) };
            _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)
        });
        // SAFETY: 64 bytes of 16-bit patterns, either way.
        unsafe { std::mem::transmute(h) }
    }

    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn f16_narrow_avx512(v: &[f32; LANES]) -> [f16; LANES] {
        let p = v.as_ptr();
        let h: [__m256i; 2] = std::array::from_fn(|k| {
            // SAFETY: sixteen floats within the 32 of `v`.
            let v = unsafe { _mm512_loadu_ps(p.add(16 * k)) };
            _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)
        });
        // SAFETY: as above.
        unsafe { std::mem::transmute(h) }
    }

    /// # Safety
    /// The CPU must have AVX2, and `dst` must start a cache line.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn stream_avx2<T: Copy>(v: &[T; LANES], dst: &mut [T; LANES]) {
        let (src, dst): (*const __m256i, *mut __m256i) =
            (v.as_ptr().cast(), dst.as_mut_ptr().cast());
        for k in 0..std::mem::size_of_val(v) / 32 {
            // SAFETY: within both arrays; `dst` is aligned (the caller's).
            unsafe { _mm256_stream_si256(dst.add(k), _mm256_loadu_si256(src.add(k))) };
        }
    }

    /// # Safety
    /// The CPU must have AVX-512 F, and `dst` must start a cache line.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn stream_avx512<T: Copy>(v: &[T; LANES], dst: &mut [T; LANES]) {
        let (src, dst): (*const __m512i, *mut __m512i) =
            (v.as_ptr().cast(), dst.as_mut_ptr().cast());
        for k in 0..std::mem::size_of_val(v) / 64 {
            // SAFETY: as above.
            unsafe { _mm512_stream_si512(dst.add(k), _mm512_loadu_si512(src.add(k))) };
        }
    }
}
