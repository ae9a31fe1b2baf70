//! The forward of the sign family (`sign`, `heaviside`) in f16 and bf16 on
//! bit patterns, with no conversion at all.
//!
//! Their outputs are ±1, 0 or the input's NaN, so nothing needs the value
//! in `f32`: the sign bit, a zero test and a NaN test decide. Widening,
//! comparing and rounding back cost more than the pass moves in memory at
//! 2^24 elements (a forward in half precision ran at 0.8 of a copy).
//! [`forward`] gives the bits the generic path gives (`scalar::sign` and
//! `scalar::heaviside` on the widened value, rounded back): its tests check
//! every 16-bit pattern against that path as the loops run it, and against
//! `half`'s scalar conversions.

use rayon::prelude::*;

use super::{CHUNK, lanes, simd, steps, streams};
use crate::element::convert::LANES;
use crate::element::{DType, Element};
use crate::op::{Functor, Op};

/// Which function of the sign family a forward is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `scalar::sign`: −1 below 0, +1 otherwise (−0 included).
    Sign,
    /// `scalar::heaviside`: +1 above 0, +0 otherwise (−0 included).
    Heaviside,
}

/// The patterns of one 16-bit type.
#[derive(Clone, Copy)]
struct Patterns {
    one: u16,
    /// +∞: a magnitude above it is a NaN.
    infinity: u16,
    /// The top mantissa bit, which the conversions set in a NaN.
    quiet: u16,
}

impl Patterns {
    fn of<T: Element>() -> Patterns {
        let bits = |v: f32| bits(std::slice::from_ref(&T::from_f32(v)))[0];
        let infinity = bits(f32::INFINITY);
        Patterns {
            one: bits(1.0),
            infinity,
            quiet: ((0x7fff & !infinity) + 1) >> 1,
        }
    }

    /// The output for the element `h`.
    #[inline(always)]
    fn apply(self, kind: Kind, h: u16) -> u16 {
        let magnitude = h & 0x7fff;
        let negative = h & 0x8000 != 0;
        let value = match kind {
            Kind::Sign if negative && magnitude != 0 => self.one | 0x8000,
            Kind::Sign => self.one,
            Kind::Heaviside if !negative && magnitude != 0 => self.one,
            Kind::Heaviside => 0,
        };
        if magnitude > self.infinity {
            h | self.quiet
        } else {
            value
        }
    }
}

/// `y = q(x)` on bit patterns where `q`'s forward is the sign family's and
/// `T` is a 16-bit type; `false` (and nothing written) otherwise.
pub(super) fn forward<T: Element>(op: &Op, x: &[T], y: &mut [T]) -> bool {
    let kind = match op.functor {
        Functor::SteSign(_) | Functor::ApproxSign(_) | Functor::SwishSign(_) | Functor::Ede(_) => {
            Kind::Sign
        }
        Functor::SteHeaviside(_) | Functor::SteHeavisideUnipolar(_) => Kind::Heaviside,
        _ => return false,
    };
    if T::DTYPE == DType::F32 {
        return false;
    }
    let p = Patterns::of::<T>();
    let stream = streams(2 * std::mem::size_of_val(x));
    let (x, y) = (bits(x), bits_mut(y));
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
                                y[k] = p.apply(kind, x[k]);
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
fn bits<T: Element>(x: &[T]) -> &[u16] {
    assert_eq!(std::mem::size_of::<T>(), 2);
    // SAFETY: the 16-bit element types are half's f16 and bf16, each a
    // `#[repr(transparent)]` u16, so a slice of them is one of u16.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len()) }
}

/// [`bits`] of an output.
fn bits_mut<T: Element>(y: &mut [T]) -> &mut [u16] {
    assert_eq!(std::mem::size_of::<T>(), 2);
    // SAFETY: as in `bits`.
    unsafe { std::slice::from_raw_parts_mut(y.as_mut_ptr().cast(), y.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{Dims, Reduced, map1};
    use crate::op::with_functor;
    use crate::scalar;
    use half::{bf16, f16};

    /// Every 16-bit pattern through `forward`, through the generic path,
    /// and through `half`'s scalar conversions around `scalar`'s functions.
    fn every_pattern<T: Element>(from_bits: impl Fn(u16) -> T) {
        let x: Vec<T> = (0..=u16::MAX).map(from_bits).collect();
        let specs = [
            ("ste_sign", scalar::sign as fn(f32) -> f32),
            ("approx_sign", scalar::sign),
            ("ste_heaviside", scalar::heaviside),
            ("ste_heaviside(unipolar=true)", scalar::heaviside),
        ];
        for (spec, f) in specs {
            let op = Op::new(&spec.parse().unwrap(), T::DTYPE).unwrap();
            let mut fast = vec![T::default(); x.len()];
            assert!(forward(&op, &x, &mut fast));
            let mut generic = vec![T::default(); x.len()];
            let dims = Dims {
                channels: 1,
                inner: 1,
            };
            with_functor!(op.functor, |g| map1(
                g,
                &x,
                &mut generic,
                &Reduced::None,
                dims
            ));
            let by_half: Vec<T> = x.iter().map(|&v| T::from_f32(f(v.to_f32()))).collect();
            let all = bits(&fast).iter().zip(bits(&generic)).zip(bits(&by_half));
            for (h, ((&a, &b), &c)) in (0..=u16::MAX).zip(all) {
                assert_eq!(a, b, "{spec} {:?} at {h:#06x}, the loops' path", T::DTYPE);
                // half's conversions quiet a NaN as the others do, except
                // bf16's widening, which keeps a signalling one.
                let quiet = Patterns::of::<T>().quiet;
                assert_eq!(
                    a,
                    c | (a & quiet),
                    "{spec} {:?} at {h:#06x}, half's",
                    T::DTYPE
                );
            }
        }
    }

    #[test]
    fn sign_family_on_bits_equals_the_generic_path() {
        every_pattern::<f16>(f16::from_bits);
        every_pattern::<bf16>(bf16::from_bits);
    }

    #[test]
    fn other_quantizers_and_f32_are_left_alone() {
        let mut y = [0f32; 4];
        let op = Op::new(&"ste_sign".parse().unwrap(), DType::F32).unwrap();
        assert!(!forward(&op, &[1.0f32; 4], &mut y));
        let op = Op::new(&"dorefa".parse().unwrap(), DType::F16).unwrap();
        assert!(!forward(&op, &[f16::ONE; 4], &mut [f16::ZERO; 4]));
    }
}
