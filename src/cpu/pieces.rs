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

use std::sync::OnceLock;

use rayon::prelude::*;

use super::recent::Recent;
use super::{CHUNK, Dims, Reduced, lanes, map1, simd, steps, streams};
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

    #[test]
    fn forwards_of_many_values_or_of_more_than_x_are_left_alone() {
        let x = vec![f16::ONE; MIN_LEN];
        let mut y = vec![f16::ZERO; MIN_LEN];
        let dims = Dims {
            channels: 1,
            inner: 1,
        };
        for spec in ["dorefa(k_bit=5)", "magnitude_aware_sign"] {
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
