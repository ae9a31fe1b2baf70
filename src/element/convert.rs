//! Block conversions between `f32` and the half types, and the streaming
//! store of `f32` results.
//!
//! A conversion per element through `half` costs more than the quantizer
//! itself, and a conversion compiled for the baseline target (SSE2, which
//! has no 32→16-bit pack without saturation) costs nearly as much. So each
//! conversion has a portable definition and x86 versions chosen at run time:
//! AVX-512 (F, BW, VL) sixteen lanes at a time, AVX2 with F16C eight. They
//! give the bits of `half`'s scalar conversions (the tests in `element.rs`
//! compare every 16-bit pattern and a broad sample of `f32` ones, at every
//! level this CPU runs):
//!
//! - f16 by the hardware conversions (`vcvtph2ps`, `vcvtps2ph`), which round
//!   to nearest even and quiet a NaN exactly as `half` does.
//! - bf16 by integer operations: widening is a 16-bit shift; narrowing adds
//!   just under half an ulp plus the lowest kept bit and shifts, and keeps a
//!   NaN's top payload bits with the quiet bit set. Not AVX512-BF16's
//!   `vcvtneps2bf16`: it flushes subnormals to zero, which `half` does not.
//!
//! The narrowing conversions and [`stream_f32`] can store with non-temporal
//! (streaming) stores, for outputs larger than the cache: a plain store first
//! reads the line it writes (read for ownership), a streaming store does not,
//! which saves a third of the memory traffic of a forward pass. Streaming
//! stores are weakly ordered: a caller that issued them must call [`fence`]
//! before anything it hands the data to (rayon's join) may read it. Not
//! each function itself: a fence waits for every pending streaming store,
//! and one per block of 1024 elements stalled the loop more than the
//! streaming stores saved.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use std::sync::atomic::{AtomicU8, Ordering};

/// The instruction sets a conversion may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Whatever the compile-time target has; `half`'s slice conversions.
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

/// `dst[i] = src[i]` widened; the slices have equal lengths.
pub(crate) fn f16_to_f32(level: Level, src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    match level {
        Level::Portable => src.convert_to_f32_slice(dst),
        // SAFETY (both arms): `level` came from `available`, so the CPU has
        // the features the function is compiled for.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::f16_to_f32_avx2(src, dst) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::f16_to_f32_avx512(src, dst) },
    }
}

/// `dst[i] = src[i]` rounded, stored with streaming stores if `stream`.
pub(crate) fn f32_to_f16(level: Level, src: &[f32], dst: &mut [f16], stream: bool) {
    assert_eq!(src.len(), dst.len());
    match level {
        Level::Portable => dst.convert_from_f32_slice(src),
        // SAFETY: as in `f16_to_f32`.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::f32_to_f16_avx2(src, dst, stream) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::f32_to_f16_avx512(src, dst, stream) },
    }
}

/// `dst[i] = src[i]` widened; the slices have equal lengths.
pub(crate) fn bf16_to_f32(level: Level, src: &[bf16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    match level {
        Level::Portable => bf16_to_f32_portable(src, dst),
        // SAFETY: as in `f16_to_f32`.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::bf16_to_f32_avx2(src, dst) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::bf16_to_f32_avx512(src, dst) },
    }
}

/// `dst[i] = src[i]` rounded, stored with streaming stores if `stream`.
pub(crate) fn f32_to_bf16(level: Level, src: &[f32], dst: &mut [bf16], stream: bool) {
    assert_eq!(src.len(), dst.len());
    match level {
        Level::Portable => f32_to_bf16_portable(src, dst),
        // SAFETY: as in `f16_to_f32`.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::f32_to_bf16_avx2(src, dst, stream) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::f32_to_bf16_avx512(src, dst, stream) },
    }
}

/// `dst.copy_from_slice(src)` with streaming stores where the level has them.
pub(crate) fn stream_f32(level: Level, src: &[f32], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    match level {
        Level::Portable => dst.copy_from_slice(src),
        // SAFETY: as in `f16_to_f32`.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::stream_f32_avx2(src, dst) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::stream_f32_avx512(src, dst) },
    }
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

fn bf16_to_f32_portable(src: &[bf16], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = bf16_widen(s);
    }
}

fn f32_to_bf16_portable(src: &[f32], dst: &mut [bf16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = bf16_narrow(s);
    }
}

/// The range of `dst` a vector loop of `lanes` elements covers. With
/// `stream` it is whole cache lines, which streaming stores must write whole:
/// a line written partly by streaming stores and partly by plain ones (the
/// edges of a block, which the scalar code writes) is written to memory in
/// pieces, each a read-modify-write, and that made a pass three times slower
/// than with plain stores.
#[cfg(target_arch = "x86_64")]
fn body<T>(dst: &[T], stream: bool, lanes: usize) -> (usize, usize) {
    let len = dst.len();
    if !stream {
        return (0, len / lanes * lanes);
    }
    const LINE: usize = 64;
    let per_line = LINE / std::mem::size_of::<T>();
    let start = dst.as_ptr().align_offset(LINE).min(len);
    let end = start + (len - start) / per_line * per_line;
    debug_assert!(per_line.is_multiple_of(lanes));
    (start, end)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{LANES, bf16_narrow, bf16_widen, body};
    use half::{bf16, f16};
    use std::arch::x86_64::*;

    // Each function converts a body of whole vectors with intrinsics and the
    // rest element by element with the scalar definition. With `stream`, the
    // body starts where the destination is aligned for streaming stores and
    // the elements before it are converted one by one as well.
    //
    // The callers check that `src` and `dst` have equal lengths; the loops
    // index both with `i + LANES ≤ end ≤ len`, so every unaligned load and
    // store below is within the slices.

    /// # Safety
    /// The CPU must have AVX2 and F16C.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn f16_to_f32_avx2(src: &[f16], dst: &mut [f32]) {
        let end = src.len() / 8 * 8;
        for i in (0..end).step_by(8) {
            // SAFETY: in bounds (see above).
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
        }
        for i in end..src.len() {
            dst[i] = src[i].to_f32();
        }
    }

    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn f16_to_f32_avx512(src: &[f16], dst: &mut [f32]) {
        let end = src.len() / 16 * 16;
        for i in (0..end).step_by(16) {
            // SAFETY: in bounds.
            unsafe {
                let h = _mm256_loadu_si256(src.as_ptr().add(i).cast());
                _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
            }
        }
        for i in end..src.len() {
            dst[i] = src[i].to_f32();
        }
    }

    /// # Safety
    /// As [`f16_to_f32_avx2`].
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn f32_to_f16_avx2(src: &[f32], dst: &mut [f16], stream: bool) {
        let (start, end) = body(dst, stream, 8);
        for i in (start..end).step_by(8) {
            let v = unsafe { _mm256_loadu_ps(src.as_ptr().add(i)) };
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            let p: *mut __m128i = dst.as_mut_ptr().wrapping_add(i).cast();
            // SAFETY: in bounds; with `stream`, `p` is 64-byte aligned.
            unsafe {
                if stream {
                    _mm_stream_si128(p, h)
                } else {
                    _mm_storeu_si128(p, h)
                }
            }
        }
        for i in (0..start).chain(end..src.len()) {
            dst[i] = f16::from_f32(src[i]);
        }
    }

    /// # Safety
    /// As [`f16_to_f32_avx512`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn f32_to_f16_avx512(src: &[f32], dst: &mut [f16], stream: bool) {
        let (start, end) = body(dst, stream, 16);
        for i in (start..end).step_by(16) {
            let v = unsafe { _mm512_loadu_ps(src.as_ptr().add(i)) };
            let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            let p: *mut __m256i = dst.as_mut_ptr().wrapping_add(i).cast();
            // SAFETY: in bounds; with `stream`, `p` is 64-byte aligned.
            unsafe {
                if stream {
                    _mm256_stream_si256(p, h)
                } else {
                    _mm256_storeu_si256(p, h)
                }
            }
        }
        for i in (0..start).chain(end..src.len()) {
            dst[i] = f16::from_f32(src[i]);
        }
    }

    /// # Safety
    /// As [`f16_to_f32_avx2`].
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn bf16_to_f32_avx2(src: &[bf16], dst: &mut [f32]) {
        let end = src.len() / 8 * 8;
        for i in (0..end).step_by(8) {
            let h = unsafe { _mm_loadu_si128(src.as_ptr().add(i).cast()) };
            let w = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
            // SAFETY: in bounds.
            unsafe { _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), w) };
        }
        for i in end..src.len() {
            dst[i] = bf16_widen(src[i]);
        }
    }

    /// # Safety
    /// As [`f16_to_f32_avx512`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn bf16_to_f32_avx512(src: &[bf16], dst: &mut [f32]) {
        let end = src.len() / 16 * 16;
        for i in (0..end).step_by(16) {
            let h = unsafe { _mm256_loadu_si256(src.as_ptr().add(i).cast()) };
            let w = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h));
            // SAFETY: in bounds.
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().add(i).cast(), w) };
        }
        for i in end..src.len() {
            dst[i] = bf16_widen(src[i]);
        }
    }

    /// [`super::bf16_narrow`] on eight lanes, each result in the low half
    /// of its 32-bit lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn bf16_narrow8(b: __m256i) -> __m256i {
        let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(1));
        let bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff));
        let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(b, bias));
        let quiet = _mm256_or_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(0x40));
        // |b| above infinity's pattern is a NaN; a signed compare is right
        // since the sign bit is cleared.
        let abs = _mm256_and_si256(b, _mm256_set1_epi32(0x7fff_ffff));
        let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
        _mm256_blendv_epi8(rounded, quiet, nan)
    }

    /// # Safety
    /// As [`f16_to_f32_avx2`].
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn f32_to_bf16_avx2(src: &[f32], dst: &mut [bf16], stream: bool) {
        let (start, end) = body(dst, stream, 16);
        for i in (start..end).step_by(16) {
            let (lo, hi) = unsafe {
                let p = src.as_ptr().add(i);
                (
                    _mm256_loadu_si256(p.cast()),
                    _mm256_loadu_si256(p.add(8).cast()),
                )
            };
            // The results fit in 16 bits, so the saturating pack is exact;
            // it interleaves 128-bit lanes, which the permute undoes.
            let packed = _mm256_packus_epi32(bf16_narrow8(lo), bf16_narrow8(hi));
            let h = _mm256_permute4x64_epi64::<0b11_01_10_00>(packed);
            let p: *mut __m256i = dst.as_mut_ptr().wrapping_add(i).cast();
            // SAFETY: in bounds; with `stream`, `p` is 64-byte aligned.
            unsafe {
                if stream {
                    _mm256_stream_si256(p, h)
                } else {
                    _mm256_storeu_si256(p, h)
                }
            }
        }
        for i in (0..start).chain(end..src.len()) {
            dst[i] = bf16_narrow(src[i]);
        }
    }

    /// # Safety
    /// As [`f16_to_f32_avx512`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn f32_to_bf16_avx512(src: &[f32], dst: &mut [bf16], stream: bool) {
        let (start, end) = body(dst, stream, 16);
        for i in (start..end).step_by(16) {
            let b = unsafe { _mm512_loadu_si512(src.as_ptr().add(i).cast()) };
            let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
            let bias = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff));
            let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(b, bias));
            let quiet = _mm512_or_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(0x40));
            let abs = _mm512_and_si512(b, _mm512_set1_epi32(0x7fff_ffff));
            let nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
            // Truncating narrow: every lane already fits in 16 bits.
            let h = _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet));
            let p: *mut __m256i = dst.as_mut_ptr().wrapping_add(i).cast();
            // SAFETY: in bounds; with `stream`, `p` is 64-byte aligned.
            unsafe {
                if stream {
                    _mm256_stream_si256(p, h)
                } else {
                    _mm256_storeu_si256(p, h)
                }
            }
        }
        for i in (0..start).chain(end..src.len()) {
            dst[i] = bf16_narrow(src[i]);
        }
    }

    /// # Safety
    /// As [`f16_to_f32_avx2`].
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
    /// As [`f16_to_f32_avx512`].
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
    /// As [`f16_to_f32_avx2`].
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
    /// As [`f16_to_f32_avx512`].
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

    /// # Safety
    /// The CPU must have AVX.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn stream_f32_avx2(src: &[f32], dst: &mut [f32]) {
        let (start, end) = body(dst, true, 8);
        for i in (start..end).step_by(8) {
            // SAFETY: in bounds; the store's address is 64-byte aligned.
            unsafe {
                let v = _mm256_loadu_ps(src.as_ptr().add(i));
                _mm256_stream_ps(dst.as_mut_ptr().add(i), v);
            }
        }
        dst[..start].copy_from_slice(&src[..start]);
        dst[end..].copy_from_slice(&src[end..]);
    }

    /// # Safety
    /// The CPU must have AVX-512 F.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn stream_f32_avx512(src: &[f32], dst: &mut [f32]) {
        let (start, end) = body(dst, true, 16);
        for i in (start..end).step_by(16) {
            // SAFETY: in bounds; the store's address is 64-byte aligned.
            unsafe {
                let v = _mm512_loadu_ps(src.as_ptr().add(i));
                _mm512_stream_ps(dst.as_mut_ptr().add(i), v);
            }
        }
        dst[..start].copy_from_slice(&src[..start]);
        dst[end..].copy_from_slice(&src[end..]);
    }
}
