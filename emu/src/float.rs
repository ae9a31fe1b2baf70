//! Floating-point semantics as the PTX ISA and the CUDA Programming Guide
//! define them, on the bits of f16, bf16, f32 and f64 values.
//!
//! - `.rn` is IEEE round-to-nearest-even; `.rz`, `.rm`, `.rp` round toward
//!   zero, −∞ and +∞ (rustc_apfloat, LLVM's soft float, does those).
//! - Subnormals are kept unless the instruction says `.ftz`, which flushes
//!   subnormal inputs and results to zero of the same sign.
//! - Single-precision results that are NaN are the quiet NaN 0x7fffffff
//!   (the Programming Guide's "IEEE-754 deviations"); double precision keeps
//!   the input NaN's payload, quieted; NaN from no NaN input (∞ − ∞) is
//!   0x7fffffffffffffff. f16 and bf16 NaNs from a conversion are 0x7fff.
//! - `min`/`max` return the non-NaN operand when one is NaN (NaN when both
//!   are, or with `.NaN`), and order −0 below +0.

use rustc_apfloat::ieee::{BFloat, Double, Half, Single};
use rustc_apfloat::{Float as _, FloatConvert as _, Round};

use crate::ptx::{Cmp, FOp, FUnOp, Rnd, Ty};

pub const NAN_F32: u32 = 0x7fff_ffff;
pub const NAN_F64: u64 = 0x7fff_ffff_ffff_ffff;
pub const NAN_F16: u16 = 0x7fff;

fn round(r: Rnd) -> Round {
    match r {
        Rnd::Rn => Round::NearestTiesToEven,
        Rnd::Rz => Round::TowardZero,
        Rnd::Rm => Round::TowardNegative,
        Rnd::Rp => Round::TowardPositive,
    }
}

fn ftz32(x: f32, on: bool) -> f32 {
    if on && x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

fn sat32(x: f32, on: bool) -> f32 {
    if !on {
        x
    } else if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

fn out32(x: f32) -> u32 {
    if x.is_nan() { NAN_F32 } else { x.to_bits() }
}

fn quiet64(bits: u64) -> u64 {
    bits | (1 << 51)
}

/// The f64 NaN an operation with these inputs gives, if any input is NaN.
fn nan_in64(a: f64, b: f64) -> Option<u64> {
    if a.is_nan() {
        Some(quiet64(a.to_bits()))
    } else if b.is_nan() {
        Some(quiet64(b.to_bits()))
    } else {
        None
    }
}

fn out64(x: f64, inputs: Option<u64>) -> u64 {
    match inputs {
        Some(n) => n,
        None if x.is_nan() => NAN_F64,
        None => x.to_bits(),
    }
}

fn single(x: f32) -> Single {
    Single::from_bits(x.to_bits() as u128)
}

fn double(x: f64) -> Double {
    Double::from_bits(x.to_bits() as u128)
}

pub fn binary32(op: FOp, rnd: Rnd, ftz: bool, sat: bool, a: u32, b: u32) -> u32 {
    let (a, b) = (ftz32(f32::from_bits(a), ftz), ftz32(f32::from_bits(b), ftz));
    let r = if rnd == Rnd::Rn {
        match op {
            FOp::Add => a + b,
            FOp::Sub => a - b,
            FOp::Mul => a * b,
            FOp::Div => a / b,
        }
    } else {
        let (x, y, m) = (single(a), single(b), round(rnd));
        let v = match op {
            FOp::Add => x.add_r(y, m),
            FOp::Sub => x.sub_r(y, m),
            FOp::Mul => x.mul_r(y, m),
            FOp::Div => x.div_r(y, m),
        }
        .value;
        f32::from_bits(v.to_bits() as u32)
    };
    out32(sat32(ftz32(r, ftz), sat))
}

pub fn binary64(op: FOp, rnd: Rnd, a: u64, b: u64) -> u64 {
    let (a, b) = (f64::from_bits(a), f64::from_bits(b));
    let r = if rnd == Rnd::Rn {
        match op {
            FOp::Add => a + b,
            FOp::Sub => a - b,
            FOp::Mul => a * b,
            FOp::Div => a / b,
        }
    } else {
        let (x, y, m) = (double(a), double(b), round(rnd));
        let v = match op {
            FOp::Add => x.add_r(y, m),
            FOp::Sub => x.sub_r(y, m),
            FOp::Mul => x.mul_r(y, m),
            FOp::Div => x.div_r(y, m),
        }
        .value;
        f64::from_bits(v.to_bits() as u64)
    };
    out64(r, nan_in64(a, b))
}

pub fn fma32(rnd: Rnd, ftz: bool, sat: bool, a: u32, b: u32, c: u32) -> u32 {
    let [a, b, c] = [a, b, c].map(|v| ftz32(f32::from_bits(v), ftz));
    let r = if rnd == Rnd::Rn {
        a.mul_add(b, c)
    } else {
        let v = single(a).mul_add_r(single(b), single(c), round(rnd)).value;
        f32::from_bits(v.to_bits() as u32)
    };
    out32(sat32(ftz32(r, ftz), sat))
}

pub fn fma64(rnd: Rnd, a: u64, b: u64, c: u64) -> u64 {
    let [a, b, c] = [a, b, c].map(f64::from_bits);
    let r = if rnd == Rnd::Rn {
        a.mul_add(b, c)
    } else {
        let v = double(a).mul_add_r(double(b), double(c), round(rnd)).value;
        f64::from_bits(v.to_bits() as u64)
    };
    let nan = nan_in64(a, b).or_else(|| c.is_nan().then(|| quiet64(c.to_bits())));
    out64(r, nan)
}

/// √x rounded as `rnd` asks: the nearest root, then one step toward the
/// mode when its square is on the wrong side of x.
fn sqrt_rounded(x: f64, rnd: Rnd, single_precision: bool) -> f64 {
    if single_precision {
        let r = (x as f32).sqrt();
        if rnd == Rnd::Rn || !r.is_finite() || r == 0.0 {
            return r as f64;
        }
        // The square of an f32 is exact in f64.
        let sq = (r as f64) * (r as f64);
        let r = match rnd {
            Rnd::Rp if sq < x => r.next_up(),
            Rnd::Rz | Rnd::Rm if sq > x => r.next_down(),
            _ => r,
        };
        return r as f64;
    }
    let r = x.sqrt();
    if rnd == Rnd::Rn || !r.is_finite() || r == 0.0 {
        return r;
    }
    let residual = r.mul_add(r, -x);
    match rnd {
        Rnd::Rp if residual < 0.0 => r.next_up(),
        Rnd::Rz | Rnd::Rm if residual > 0.0 => r.next_down(),
        _ => r,
    }
}

pub fn unary32(op: FUnOp, rnd: Rnd, ftz: bool, a: u32) -> u32 {
    let x = ftz32(f32::from_bits(a), ftz);
    let r = match op {
        FUnOp::Abs => x.abs(),
        FUnOp::Neg => -x,
        FUnOp::Sqrt => sqrt_rounded(x as f64, rnd, true) as f32,
        FUnOp::Rcp => f32::from_bits(binary32(
            FOp::Div,
            rnd,
            false,
            false,
            1.0f32.to_bits(),
            x.to_bits(),
        )),
    };
    out32(ftz32(r, ftz))
}

pub fn unary64(op: FUnOp, rnd: Rnd, a: u64) -> u64 {
    let x = f64::from_bits(a);
    match op {
        // The Programming Guide: double abs and neg pass NaNs through unchanged.
        FUnOp::Abs if x.is_nan() => a,
        FUnOp::Neg if x.is_nan() => a,
        FUnOp::Abs => x.abs().to_bits(),
        FUnOp::Neg => (-x).to_bits(),
        FUnOp::Sqrt => out64(sqrt_rounded(x, rnd, false), nan_in64(x, 0.0)),
        FUnOp::Rcp => binary64(FOp::Div, rnd, 1.0f64.to_bits(), a),
    }
}

pub fn min_max32(max: bool, nan: bool, ftz: bool, a: u32, b: u32) -> u32 {
    let (x, y) = (ftz32(f32::from_bits(a), ftz), ftz32(f32::from_bits(b), ftz));
    let r = match (x.is_nan(), y.is_nan()) {
        (true, true) => f32::NAN,
        (true, false) | (false, true) if nan => f32::NAN,
        (true, false) => y,
        (false, true) => x,
        _ if x == y => {
            // −0 < +0: min takes a negative sign, max a positive one.
            if x.is_sign_negative() == max { y } else { x }
        }
        _ if (x < y) != max => x,
        _ => y,
    };
    out32(r)
}

pub fn min_max64(max: bool, nan: bool, a: u64, b: u64) -> u64 {
    let (x, y) = (f64::from_bits(a), f64::from_bits(b));
    match (x.is_nan(), y.is_nan()) {
        (true, true) => quiet64(a),
        (true, false) if nan => quiet64(a),
        (false, true) if nan => quiet64(b),
        (true, false) => b,
        (false, true) => a,
        _ if x == y => {
            if x.is_sign_negative() == max {
                b
            } else {
                a
            }
        }
        _ if (x < y) != max => a,
        _ => b,
    }
}

/// A float comparison; `ftz` flushes f32 subnormal operands first.
pub fn compare(cmp: Cmp, ty: Ty, ftz: bool, a: u64, b: u64) -> bool {
    let (x, y) = if ty == Ty::F32 {
        (
            ftz32(f32::from_bits(a as u32), ftz) as f64,
            ftz32(f32::from_bits(b as u32), ftz) as f64,
        )
    } else {
        (f64::from_bits(a), f64::from_bits(b))
    };
    let unordered = x.is_nan() || y.is_nan();
    match cmp {
        Cmp::Eq => x == y,
        Cmp::Ne => !unordered && x != y,
        Cmp::Lt => x < y,
        Cmp::Le => x <= y,
        Cmp::Gt => x > y,
        Cmp::Ge => x >= y,
        Cmp::Equ => unordered || x == y,
        Cmp::Neu => x != y,
        Cmp::Ltu => unordered || x < y,
        Cmp::Leu => unordered || x <= y,
        Cmp::Gtu => unordered || x > y,
        Cmp::Geu => unordered || x >= y,
        Cmp::Num => !unordered,
        Cmp::Nan => unordered,
        // The unsigned-integer spellings are not float comparisons; the
        // parser accepts them for integers only.
        Cmp::Lo | Cmp::Ls | Cmp::Hi | Cmp::Hs => false,
    }
}

/// A float value of type `ty` (bits) widened exactly to f64.
pub fn to_f64(ty: Ty, bits: u64) -> f64 {
    match ty {
        Ty::F16 => half::f16::from_bits(bits as u16).to_f64(),
        Ty::BF16 => half::bf16::from_bits(bits as u16).to_f64(),
        Ty::F32 => f32::from_bits(bits as u32) as f64,
        _ => f64::from_bits(bits),
    }
}

/// `cvt` between float types. `rnd` is `None` for exact (widening)
/// conversions, `Some(Int(_))`-style integral rounding is `integral`.
pub fn float_to_float(
    dty: Ty,
    sty: Ty,
    rnd: Option<Rnd>,
    integral: Option<Rnd>,
    ftz: bool,
    sat: bool,
    a: u64,
) -> u64 {
    let mut x = to_f64(sty, a);
    if ftz && sty == Ty::F32 && (x as f32).is_subnormal() {
        x = 0.0f64.copysign(x);
    }
    if let Some(r) = integral {
        x = match r {
            Rnd::Rn => x.round_ties_even(),
            Rnd::Rz => x.trunc(),
            Rnd::Rm => x.floor(),
            Rnd::Rp => x.ceil(),
        };
    }
    if x.is_nan() {
        return match dty {
            Ty::F16 | Ty::BF16 => NAN_F16 as u64,
            Ty::F32 => NAN_F32 as u64,
            // Double precision keeps the payload.
            _ if sty == Ty::F64 => quiet64(a),
            _ => {
                // An f32/f16 payload moves to the top of the f64 fraction.
                let (frac, width) = match sty {
                    Ty::F32 => (a & 0x7f_ffff, 23),
                    _ => (a & 0x3ff, if sty == Ty::F16 { 10 } else { 7 }),
                };
                let sign = match sty {
                    Ty::F32 => (a >> 31) & 1,
                    _ => (a >> 15) & 1,
                };
                quiet64((sign << 63) | (0x7ff << 52) | (frac << (52 - width)))
            }
        };
    }
    let m = round(rnd.unwrap_or(Rnd::Rn));
    let mut lossless = false;
    match dty {
        Ty::F64 => x.to_bits(),
        Ty::F32 => {
            let v = if rnd.is_none_or(|r| r == Rnd::Rn) {
                x as f32
            } else {
                let d: Single = double(x).convert_r(m, &mut lossless).value;
                f32::from_bits(d.to_bits() as u32)
            };
            let v = sat32(ftz32(v, ftz), sat);
            v.to_bits() as u64
        }
        Ty::F16 => {
            let h: Half = double(x).convert_r(m, &mut lossless).value;
            let v = h.to_bits() as u64;
            if sat { sat16(v, Ty::F16) } else { v }
        }
        _ => {
            let h: BFloat = double(x).convert_r(m, &mut lossless).value;
            let v = h.to_bits() as u64;
            if sat { sat16(v, Ty::BF16) } else { v }
        }
    }
}

fn sat16(bits: u64, ty: Ty) -> u64 {
    let x = to_f64(ty, bits);
    if x.is_nan() || x <= 0.0 {
        0
    } else if x >= 1.0 {
        match ty {
            Ty::F16 => half::f16::ONE.to_bits() as u64,
            _ => half::bf16::ONE.to_bits() as u64,
        }
    } else {
        bits
    }
}

/// `cvt.rXi` float to integer: round to an integer, clamp to the
/// destination's range, NaN to 0.
pub fn float_to_int(dty: Ty, sty: Ty, rnd: Rnd, ftz: bool, a: u64) -> u64 {
    let mut x = to_f64(sty, a);
    if ftz && sty == Ty::F32 && (x as f32).is_subnormal() {
        x = 0.0;
    }
    let x = match rnd {
        Rnd::Rn => x.round_ties_even(),
        Rnd::Rz => x.trunc(),
        Rnd::Rm => x.floor(),
        Rnd::Rp => x.ceil(),
    };
    let bits = dty.bits();
    if dty.is_signed() {
        let lo = -(2f64.powi(bits as i32 - 1));
        let hi = 2f64.powi(bits as i32 - 1) - 1.0;
        let v = if x.is_nan() {
            0
        } else {
            x.clamp(lo, hi) as i64
        };
        crate::ptx::mask_bits(v as u64, bits)
    } else {
        let hi = if bits == 64 {
            u64::MAX as f64
        } else {
            2f64.powi(bits as i32) - 1.0
        };
        if x.is_nan() || x <= 0.0 {
            0
        } else if x >= hi {
            crate::ptx::mask_bits(u64::MAX, bits)
        } else {
            x as u64
        }
    }
}

/// `cvt.rX` integer to float.
pub fn int_to_float(dty: Ty, v: i128, rnd: Rnd, sat: bool) -> u64 {
    let m = round(rnd);
    let bits = match dty {
        Ty::F64 => Double::from_i128_r(v, m).value.to_bits() as u64,
        Ty::F32 => {
            let f = f32::from_bits(Single::from_i128_r(v, m).value.to_bits() as u32);
            sat32(f, sat).to_bits() as u64
        }
        Ty::F16 => Half::from_i128_r(v, m).value.to_bits() as u64,
        _ => BFloat::from_i128_r(v, m).value.to_bits() as u64,
    };
    if sat && matches!(dty, Ty::F16 | Ty::BF16) {
        sat16(bits, dty)
    } else {
        bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_order_zeros_and_skip_nan() {
        let (p, n) = (0.0f32.to_bits(), (-0.0f32).to_bits());
        assert_eq!(min_max32(false, false, false, p, n), n);
        assert_eq!(min_max32(false, false, false, n, p), n);
        assert_eq!(min_max32(true, false, false, n, p), p);
        assert_eq!(min_max32(true, false, false, p, n), p);
        let nan = f32::NAN.to_bits();
        assert_eq!(
            min_max32(false, false, false, nan, 2.0f32.to_bits()),
            2.0f32.to_bits()
        );
        assert_eq!(
            min_max32(false, true, false, nan, 2.0f32.to_bits()),
            NAN_F32
        );
        assert_eq!(min_max32(true, false, false, nan, nan), NAN_F32);
    }

    #[test]
    fn directed_rounding_brackets_the_nearest() {
        let (a, b) = (1.0f32.to_bits(), 3.0f32.to_bits());
        let r = |m| f32::from_bits(binary32(FOp::Div, m, false, false, a, b));
        let (rn, rz, rm, rp) = (r(Rnd::Rn), r(Rnd::Rz), r(Rnd::Rm), r(Rnd::Rp));
        // 1/3 is not an f32: the two directed results are neighbours around it.
        assert_eq!(rz, rm);
        assert_eq!(rp, rz.next_up());
        assert!(rn == rz || rn == rp);
        assert!((rz as f64) < 1.0 / 3.0 && (rp as f64) > 1.0 / 3.0);
    }

    #[test]
    fn sqrt_directed() {
        let two = 2.0f32.to_bits();
        let rn = f32::from_bits(unary32(FUnOp::Sqrt, Rnd::Rn, false, two));
        let rm = f32::from_bits(unary32(FUnOp::Sqrt, Rnd::Rm, false, two));
        let rp = f32::from_bits(unary32(FUnOp::Sqrt, Rnd::Rp, false, two));
        assert!(rm < rp && (rm == rn || rp == rn));
        assert!((rm as f64) * (rm as f64) < 2.0 && (rp as f64) * (rp as f64) > 2.0);
    }
}
