//! Forwards of one input in f16 and bf16 as piecewise-constant functions of
//! the bit pattern, with no conversion and no arithmetic per element.
//!
//! A 16-bit type has 65,536 patterns, and most forwards (sign, heaviside,
//! ternarization, DoReFa's k-bit levels) give a handful of values. So a call
//! first runs the generic path itself on every pattern, in the order of
//! their values; finds where its output changes; and, if it changes at most
//! [`MAX_POINTS`] times and every NaN comes out as the pattern quieted, maps
//! the tensor by comparing each pattern with those points. The result is the
//! generic path's by construction: the points and levels are its outputs.
//! Widening, computing and rounding back cost more than the pass moves in
//! memory in half precision (ste_tern's forward ran at 0.6 of a copy at
//! 2^24 elements, bf16's sign at 0.7); comparisons cost about what a copy
//! does.
//!
//! A forward with a scale per channel (`magnitude_aware_sign`) is not one
//! function of the pattern but one per channel. It is a scaled sign, so
//! each channel has two outputs, which the functor itself gives at ±1, and
//! the sign bit picks one ([`scaled_sign`]).

use std::sync::OnceLock;

use rayon::prelude::*;

use super::recent::Recent;
use super::{CHUNK, Dims, Reduced, Scales, lanes, map1, simd, steps, streams};
use crate::element::convert::LANES;
use crate::element::{DType, Element};
use crate::op::{Elementwise, Functor, Index, Op, with_functor};

/// Change points a forward may have and still be mapped by comparisons:
/// DoReFa's 4-bit levels have 15.
const MAX_POINTS: usize = 15;

/// Below this many elements, evaluating every pattern first (tens of
/// microseconds) costs more than it saves.
const MIN_LEN: usize = 1 << 22;

/// `y = q(x)` where `q`'s forward reads only `x` and a scalar, `T` is a
/// 16-bit type and `x` is long enough; `false` (and nothing written)
/// otherwise, or when the forward has too many pieces.
pub(super) fn forward<T: Element>(
    op: &Op,
    x: &[T],
    y: &mut [T],
    reduced: &Reduced,
    dims: Dims,
) -> bool {
    if T::DTYPE == DType::F32 || x.len() < MIN_LEN {
        return false;
    }
    if with_functor!(op.functor, |f| scaled_sign(f, x, y, reduced, dims)) {
        return true;
    }
    // The functor's parameters are finite and nonzero (`Quantizer::new`
    // checks them), so `==` on them is equality of bits; the scalar (TWN's
    // or DoReFa's, which depend on the tensor) is compared by its bits.
    static RECENT: Recent<(Functor, DType, u32), Option<Pieces>> = Recent::new();
    let key = (op.functor, T::DTYPE, reduced.scalar().to_bits());
    let pieces = RECENT.get(key, || {
        with_functor!(op.functor, |f| pieces::<T, _>(f, reduced, dims))
    });
    match pieces.as_ref() {
        Some(p) => {
            map(p, bits(x), bits_mut(y));
            true
        }
        None => false,
    }
}

/// Where a forward's output changes, in key order ([`key`]), and its value
/// on each piece.
struct Pieces {
    /// Sorted; the unused ones are `u16::MAX`, which only NaNs reach.
    points: [u16; MAX_POINTS],
    levels: [u16; MAX_POINTS + 1],
    count: usize,
    /// +∞: a magnitude above it is a NaN.
    infinity: u16,
    /// The bit the generic path sets in a NaN (its top mantissa bit).
    quiet: u16,
}

/// The patterns in the order of their values: negative ones reversed below
/// the positive ones (−NaNs first, then −∞ … −0, +0 … +∞, +NaNs).
#[inline(always)]
fn key(h: u16) -> u16 {
    if h & 0x8000 != 0 { !h } else { h | 0x8000 }
}

fn unkey(k: u16) -> u16 {
    if k & 0x8000 != 0 { k & 0x7fff } else { !k }
}

/// Every pattern, in key order.
fn by_key() -> &'static [u16] {
    static ALL: OnceLock<Vec<u16>> = OnceLock::new();
    ALL.get_or_init(|| (0..=u16::MAX).map(unkey).collect())
}

/// `f`'s forward as pieces for `T`, from the generic path run on every
/// pattern; `None` if `f` reads more than a scalar or has too many pieces.
fn pieces<T: Element, F: Elementwise>(f: F, reduced: &Reduced, dims: Dims) -> Option<Pieces> {
    if !matches!(F::INDEX, Index::None | Index::Scalar) {
        return None;
    }
    let all = patterns::<T>(by_key());
    let mut out = vec![T::default(); 1 << 16];
    map1(f, all, &mut out, reduced, dims);
    let (all, out) = (bits(all), bits(&out));
    let infinity = bits(&[T::from_f32(f32::INFINITY)])[0];
    let quiet = ((0x7fff & !infinity) + 1) >> 1;
    // The values that are not NaN, −∞ to +∞, are one run of keys; the NaNs
    // lie on either side of it.
    let (lo, hi) = (key(infinity | 0x8000) as usize, key(infinity) as usize);
    if (0..lo)
        .chain(hi + 1..1 << 16)
        .any(|k| out[k] != all[k] | quiet)
    {
        return None;
    }
    let run = &out[lo..=hi];
    let mut p = Pieces {
        points: [u16::MAX; MAX_POINTS],
        levels: [run[0]; MAX_POINTS + 1],
        count: 0,
        infinity,
        quiet,
    };
    // This runs on every call: blocks without a change are skipped by a
    // slice comparison (memcmp), the others searched element by element.
    for start in (0..run.len() - 1).step_by(64) {
        let end = (start + 64).min(run.len() - 1);
        if run[start..end] == run[start + 1..end + 1] {
            continue;
        }
        for j in start + 1..=end {
            if run[j] != run[j - 1] {
                if p.count == MAX_POINTS {
                    return None;
                }
                p.points[p.count] = (lo + j) as u16;
                p.count += 1;
                p.levels[p.count] = run[j];
            }
        }
    }
    Some(p)
}

/// `y[i]` = the level of `x[i]`'s piece (or `x[i]` quieted if it is a NaN),
/// with as few comparisons as the pieces need.
fn map(p: &Pieces, x: &[u16], y: &mut [u16]) {
    match p.count {
        0..=1 => map_with::<1>(p, x, y),
        2..=3 => map_with::<3>(p, x, y),
        4..=7 => map_with::<7>(p, x, y),
        _ => map_with::<MAX_POINTS>(p, x, y),
    }
}

/// [`map`] comparing with the first `N` points (the rest are unused).
fn map_with<const N: usize>(p: &Pieces, x: &[u16], y: &mut [u16]) {
    let points: [u16; N] = std::array::from_fn(|j| p.points[j]);
    let levels: [u16; N] = std::array::from_fn(|j| p.levels[j + 1]);
    let (first, infinity, quiet) = (p.levels[0], p.infinity, p.quiet);
    let stream = streams(2 * std::mem::size_of_val(x));
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| {
            simd(
                #[inline(always)]
                |level| {
                    steps(
                        level,
                        y,
                        stream,
                        #[inline(always)]
                        move |i, n| {
                            let x = lanes(x, i, n);
                            let mut y = [0u16; LANES];
                            for k in 0..LANES {
                                let (h, at) = (x[k], key(x[k]));
                                let mut v = first;
                                for j in 0..N {
                                    if at >= points[j] {
                                        v = levels[j];
                                    }
                                }
                                y[k] = if h & 0x7fff > infinity { h | quiet } else { v };
                            }
                            y
                        },
                    );
                    if stream {
                        super::convert::fence();
                    }
                },
            )
        });
}

/// `y = s_c · sign(x)` for a forward that is a scaled sign
/// ([`Elementwise::SCALED_SIGN`]) with a scale per channel: each element
/// takes one of its channel's two outputs by its sign bit, and those are
/// made once, by `f.fwd(±1, s_c)` itself. A step with a NaN in it goes
/// through the generic formula instead. `false` (and nothing written) for
/// any other forward.
fn scaled_sign<T: Element, F: Elementwise>(
    f: F,
    x: &[T],
    y: &mut [T],
    reduced: &Reduced,
    dims: Dims,
) -> bool {
    if !F::SCALED_SIGN || F::INDEX != Index::Channel {
        return false;
    }
    let scales = Scales::new(F::INDEX, reduced, dims);
    let output = |sign: f32| -> Vec<u16> {
        let each = scales.each.iter().map(|&s| T::from_f32(f.fwd(sign, s)));
        bits(&each.collect::<Vec<T>>()).to_vec()
    };
    let (positive, negative) = (&output(1.0), &output(-1.0));
    let infinity = bits(&[T::from_f32(f32::INFINITY)])[0];
    let stream = streams(2 * std::mem::size_of_val(x));
    bits_mut(y)
        .par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(chunk, (y, x))| {
            simd(
                #[inline(always)]
                |level| {
                    let mut s = scales.at(chunk * CHUNK);
                    steps(
                        level,
                        y,
                        stream,
                        #[inline(always)]
                        move |i, n| {
                            let c = s.pos;
                            let scale = s.next(F::INDEX, n);
                            let h = lanes(bits(x), i, n);
                            let mut y = [0u16; LANES];
                            // A fold (vectorized), not `any` (a loop that stops).
                            if h.iter()
                                .fold(false, |nan, &h| nan | (h & 0x7fff > infinity))
                            {
                                let x = T::widen(level, &lanes(x, i, n));
                                let mut v = [0f32; LANES];
                                for k in 0..LANES {
                                    v[k] = f.fwd(x[k], scale[k]);
                                }
                                y.copy_from_slice(bits(&T::narrow(level, &v)));
                                return y;
                            }
                            // `c` is below `channels`, and both have `LANES` past it.
                            let (Some(p), Some(m)) = (
                                positive[c..].first_chunk::<LANES>(),
                                negative[c..].first_chunk::<LANES>(),
                            ) else {
                                return y;
                            };
                            let (p, m) = (*p, *m);
                            for k in 0..LANES {
                                // The sign bit and a magnitude: `x < 0`.
                                let negative = u16::from(h[k] > 0x8000).wrapping_neg();
                                y[k] = p[k] ^ ((p[k] ^ m[k]) & negative);
                            }
                            y
                        },
                    );
                    if stream {
                        super::convert::fence();
                    }
                },
            )
        });
    true
}

/// The bit patterns of a 16-bit tensor.
pub(super) fn bits<T: Element>(x: &[T]) -> &[u16] {
    assert_eq!(std::mem::size_of::<T>(), 2);
    // SAFETY: the 16-bit element types are half's f16 and bf16, each a
    // `#[repr(transparent)]` u16, so a slice of them is one of u16.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len()) }
}

/// The 16-bit tensor of bit patterns `h`: [`bits`] the other way.
pub(super) fn patterns<T: Element>(h: &[u16]) -> &[T] {
    assert_eq!(std::mem::size_of::<T>(), 2);
    // SAFETY: as in `bits`; every pattern is a value of f16 and of bf16.
    unsafe { std::slice::from_raw_parts(h.as_ptr().cast(), h.len()) }
}

/// [`bits`] of an output.
pub(super) fn bits_mut<T: Element>(y: &mut [T]) -> &mut [u16] {
    assert_eq!(std::mem::size_of::<T>(), 2);
    // SAFETY: as in `bits`.
    unsafe { std::slice::from_raw_parts_mut(y.as_mut_ptr().cast(), y.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::reduce;
    use crate::op::Direction;
    use half::{bf16, f16};

    #[test]
    fn keys_order_the_values() {
        let values = [
            -f32::INFINITY,
            -2.0,
            -1e-7,
            -0.0,
            0.0,
            1e-7,
            2.0,
            f32::INFINITY,
        ];
        let keys: Vec<u16> = values
            .iter()
            .map(|&v| key(f16::from_f32(v).to_bits()))
            .collect();
        assert!(keys.windows(2).all(|k| k[0] < k[1]), "{keys:x?}");
        assert!((0..=u16::MAX).all(|k| key(unkey(k)) == k));
    }

    /// Every pattern, several times over, through the pieces and through
    /// the generic path.
    fn every_pattern<T: Element>(from_bits: impl Fn(u16) -> T) {
        let x: Vec<T> = (0..=u16::MAX)
            .cycle()
            .take(MIN_LEN + 77)
            .map(from_bits)
            .collect();
        let specs = [
            "ste_sign",
            "swish_sign",
            "ste_heaviside",
            "ste_heaviside(unipolar=true)",
            "ste_tern",
            "ste_tern(threshold_value=0)",
            "ste_tern(threshold_value=0.3)",
            "ste_tern(threshold_value=1e-30)",
            "ste_tern(threshold_value=70000)",
            "dorefa(k_bit=1)",
            "dorefa(k_bit=2)",
            "dorefa(k_bit=4)",
        ];
        for spec in specs {
            let op = Op::new(&spec.parse().unwrap(), T::DTYPE).unwrap();
            let dims = Dims {
                channels: 1,
                inner: 1,
            };
            let reduced = reduce(op.reduction(Direction::Forward), &x, dims);
            let mut fast = vec![T::default(); x.len()];
            assert!(forward(&op, &x, &mut fast, &reduced, dims), "{spec}");
            let mut generic = vec![T::default(); x.len()];
            with_functor!(op.functor, |f| map1(f, &x, &mut generic, &reduced, dims));
            for (i, (a, b)) in bits(&fast).iter().zip(bits(&generic)).enumerate() {
                assert_eq!(a, b, "{spec} {:?} at {:#06x}", T::DTYPE, bits(&x)[i]);
            }
        }
    }

    #[test]
    fn pieces_give_the_generic_paths_bits() {
        every_pattern::<f16>(f16::from_bits);
        every_pattern::<bf16>(bf16::from_bits);
    }

    /// The pieces kept from one call are not those of the next when the
    /// tensor's threshold differs (TWN's, from Σ|x|), nor in another type.
    #[test]
    fn kept_pieces_follow_the_threshold_and_the_type() {
        fn twn<T: Element>(scale: f32) {
            let op = Op::new(
                &"ste_tern(ternary_weight_networks=true)".parse().unwrap(),
                T::DTYPE,
            )
            .unwrap();
            let dims = Dims {
                channels: 1,
                inner: 1,
            };
            let x: Vec<T> = (0..MIN_LEN)
                .map(|i| T::from_f32(((i % 201) as f32 - 100.0) * scale / 100.0))
                .collect();
            let reduced = reduce(op.reduction(Direction::Forward), &x, dims);
            let mut fast = vec![T::default(); x.len()];
            assert!(forward(&op, &x, &mut fast, &reduced, dims));
            let mut generic = vec![T::default(); x.len()];
            with_functor!(op.functor, |f| map1(f, &x, &mut generic, &reduced, dims));
            assert!(
                bits(&fast) == bits(&generic),
                "{:?} scale {scale}",
                T::DTYPE
            );
        }
        for scale in [1.0, 3.0, 1.0, 0.5] {
            twn::<f16>(scale);
            twn::<bf16>(scale);
        }
    }

    /// Scales of every kind a channel can have: 0, subnormal in both
    /// types, unrounded, large, past f16's range, infinite, NaN.
    const SCALES: [f32; 9] = [
        0.0,
        1e-40,
        3e-6,
        0.3,
        1.0,
        1234.567,
        1e30,
        f32::INFINITY,
        f32::NAN,
    ];

    /// The functors that say their forward is a scaled sign.
    fn scaled_signs() -> Vec<Functor> {
        let specs = [
            "magnitude_aware_sign",
            "magnitude_aware_sign(clip_value=none)",
            "ste_sign(scale=first_axis)",
            "approx_sign(scale=first_axis)",
            "swish_sign(scale=first_axis)",
        ];
        let functors: Vec<Functor> = specs
            .iter()
            .map(|spec| Op::new(&spec.parse().unwrap(), DType::F16).unwrap().functor)
            .collect();
        assert!(functors.iter().all(|f| with_functor!(*f, |f| scaled(f))));
        functors
    }

    fn scaled<F: Elementwise>(_: F) -> bool {
        F::SCALED_SIGN
    }

    /// Every pattern that is not a NaN gives, at every scale, what ±1 gives
    /// by its sign, rounded to the type: what `scaled_sign` relies on.
    #[test]
    fn scaled_sign_forwards_follow_the_sign_alone() {
        fn check<T: Element, F: Elementwise + std::fmt::Debug>(f: F, from_bits: impl Fn(u16) -> T) {
            let out = |x: f32, s: f32| bits(&[T::from_f32(f.fwd(x, s))])[0];
            for h in 0..=u16::MAX {
                let x = from_bits(h).to_f32();
                if x.is_nan() {
                    continue;
                }
                let sign = if x < 0.0 { -1.0 } else { 1.0 };
                for s in SCALES {
                    assert_eq!(
                        out(x, s),
                        out(sign, s),
                        "{f:?} {:?} {h:#06x} at {s}",
                        T::DTYPE
                    );
                }
            }
        }
        for functor in scaled_signs() {
            with_functor!(functor, |f| {
                check(f, f16::from_bits);
                check(f, bf16::from_bits);
            });
        }
    }

    /// Every pattern, NaNs among them, in channels of every kind of scale,
    /// through `scaled_sign` and through the generic path.
    #[test]
    fn scaled_sign_gives_the_generic_paths_bits() {
        fn check<T: Element, F: Elementwise + std::fmt::Debug>(f: F, from_bits: impl Fn(u16) -> T) {
            // In order, then scattered (an odd multiplier permutes the
            // patterns), so that lone NaNs fall in steps of numbers.
            let scattered = (0..=u16::MAX).map(|h| h.wrapping_mul(40503));
            let x: Vec<T> = (0..=u16::MAX).chain(scattered).map(from_bits).collect();
            for channels in [1, 9, 61, 64, 100] {
                let dims = Dims { channels, inner: 0 };
                let scales = SCALES.iter().cycle().take(channels).copied().collect();
                let reduced = Reduced::Each(scales);
                let mut fast = vec![T::default(); x.len()];
                if !F::INDEX.eq(&Index::Channel) {
                    assert!(!scaled_sign(f, &x, &mut fast, &reduced, dims));
                    continue;
                }
                assert!(scaled_sign(f, &x, &mut fast, &reduced, dims));
                let mut generic = vec![T::default(); x.len()];
                map1(f, &x, &mut generic, &reduced, dims);
                for (i, (a, b)) in bits(&fast).iter().zip(bits(&generic)).enumerate() {
                    assert_eq!(a, b, "{f:?} {:?} {channels} channels, at {i}", T::DTYPE);
                }
            }
        }
        for functor in scaled_signs() {
            with_functor!(functor, |f| {
                check(f, f16::from_bits);
                check(f, bf16::from_bits);
            });
        }
    }

    #[test]
    fn forwards_of_many_values_or_of_more_than_x_are_left_alone() {
        let x = vec![f16::ONE; MIN_LEN];
        let mut y = vec![f16::ZERO; MIN_LEN];
        let dims = Dims {
            channels: 1,
            inner: 1,
        };
        for spec in ["dorefa(k_bit=5)", "ste_sign(scale=first_axis)"] {
            let op = Op::new(&spec.parse().unwrap(), DType::F16).unwrap();
            let reduced = reduce(
                op.reduction(Direction::Forward),
                &x,
                Dims {
                    channels: 1,
                    inner: 1,
                },
            );
            assert!(!forward(&op, &x, &mut y, &reduced, dims), "{spec}");
        }
        let op = Op::new(&"ste_sign".parse().unwrap(), DType::F16).unwrap();
        assert!(!forward(
            &op,
            &x[..MIN_LEN - 1],
            &mut y[..MIN_LEN - 1],
            &Reduced::None,
            dims
        ));
    }
}
