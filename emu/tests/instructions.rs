//! Each instruction form against its definition in the PTX ISA, at the
//! edges: NaN, ±0, ±∞, subnormals, integer overflow, shifts of the full
//! width or more.

mod common;

use common::{eval, f32b, f64b};
use proptest::prelude::*;

const NAN: u64 = 0x7fff_ffff; // the canonical single-precision NaN
const INF: f32 = f32::INFINITY;

fn i32_(instr: &str, a: u64, b: u64) -> u64 {
    eval(instr, ["b32", "b32", "b32", "b32"], [a, b, 0])
}

fn f32_(instr: &str, a: f32, b: f32) -> u64 {
    eval(instr, ["f32", "f32", "f32", "f32"], [f32b(a), f32b(b), 0])
}

fn f32_3(instr: &str, a: f32, b: f32, c: f32) -> u64 {
    eval(
        instr,
        ["f32", "f32", "f32", "f32"],
        [f32b(a), f32b(b), f32b(c)],
    )
}

fn pred(instr: &str, ty: &str, a: u64, b: u64) -> bool {
    eval(instr, ["pred", ty, ty, "pred"], [a, b, 0]) != 0
}

#[test]
fn integer_add_sub_mul_wrap() {
    assert_eq!(
        eval("add.u32 %d, %a, %b;", ["u32"; 4], [u32::MAX as u64, 1, 0]),
        0
    );
    assert_eq!(
        eval("add.s32 %d, %a, %b;", ["s32"; 4], [i32::MAX as u64, 1, 0]),
        0x8000_0000
    );
    assert_eq!(
        eval("sub.u32 %d, %a, %b;", ["u32"; 4], [0, 1, 0]),
        0xffff_ffff
    );
    assert_eq!(eval("add.s64 %d, %a, %b;", ["s64"; 4], [u64::MAX, 2, 0]), 1);
    assert_eq!(
        eval("add.s16 %d, %a, %b;", ["s16"; 4], [0x7fff, 1, 0]),
        0x8000
    );
    assert_eq!(
        eval(
            "mul.lo.s32 %d, %a, %b;",
            ["s32"; 4],
            [0x1_0000, 0x1_0000, 0]
        ),
        0
    );
    assert_eq!(
        eval(
            "mul.hi.u32 %d, %a, %b;",
            ["u32"; 4],
            [0xffff_ffff, 0xffff_ffff, 0]
        ),
        0xffff_fffe
    );
    // -1 · -1 = 1: the high half is 0 when signed, not 0xfffffffe.
    assert_eq!(
        eval(
            "mul.hi.s32 %d, %a, %b;",
            ["s32"; 4],
            [0xffff_ffff, 0xffff_ffff, 0]
        ),
        0
    );
    assert_eq!(
        eval("mul.lo.s64 %d, %a, %b;", ["s64"; 4], [u64::MAX, 3, 0]),
        u64::MAX - 2
    );
    assert_eq!(
        eval(
            "mul.wide.u32 %d, %a, %b;",
            ["u64", "u32", "u32", "u32"],
            [0xffff_ffff, 0xffff_ffff, 0]
        ),
        0xffff_fffe_0000_0001
    );
    assert_eq!(
        eval(
            "mul.wide.s32 %d, %a, %b;",
            ["s64", "s32", "s32", "s32"],
            [(-3i32) as u32 as u64, 7, 0]
        ),
        (-21i64) as u64
    );
    assert_eq!(
        eval("neg.s32 %d, %a;", ["s32"; 4], [0x8000_0000, 0, 0]),
        0x8000_0000
    );
    assert_eq!(
        eval("neg.s64 %d, %a;", ["s64"; 4], [5, 0, 0]),
        (-5i64) as u64
    );
    assert_eq!(
        eval("abs.s32 %d, %a;", ["s32"; 4], [0x8000_0000, 0, 0]),
        0x8000_0000
    );
    assert_eq!(
        eval("abs.s32 %d, %a;", ["s32"; 4], [(-7i32) as u32 as u64, 0, 0]),
        7
    );
    assert_eq!(
        eval(
            "add.sat.s32 %d, %a, %b;",
            ["s32"; 4],
            [i32::MAX as u64, 5, 0]
        ),
        i32::MAX as u64
    );
    assert_eq!(
        eval(
            "sub.sat.s32 %d, %a, %b;",
            ["s32"; 4],
            [i32::MIN as u32 as u64, 5, 0]
        ),
        0x8000_0000
    );
}

#[test]
fn integer_mad() {
    assert_eq!(
        eval("mad.lo.s32 %d, %a, %b, %c;", ["s32"; 4], [3, 4, 5]),
        17
    );
    assert_eq!(
        eval(
            "mad.wide.u32 %d, %a, %b, %c;",
            ["u64", "u32", "u32", "u64"],
            [0xffff_ffff, 2, 10]
        ),
        0x1_ffff_fffe + 10
    );
    assert_eq!(
        eval(
            "mad.hi.u32 %d, %a, %b, %c;",
            ["u32"; 4],
            [0x8000_0000, 4, 1]
        ),
        3
    );
}

#[test]
fn integer_division_overflow_and_by_zero() {
    assert_eq!(eval("div.u32 %d, %a, %b;", ["u32"; 4], [7, 2, 0]), 3);
    assert_eq!(eval("rem.u32 %d, %a, %b;", ["u32"; 4], [7, 2, 0]), 1);
    // Truncation toward zero for signed operands.
    assert_eq!(
        eval(
            "div.s32 %d, %a, %b;",
            ["s32"; 4],
            [(-7i32) as u32 as u64, 2, 0]
        ),
        (-3i32) as u32 as u64
    );
    assert_eq!(
        eval(
            "rem.s32 %d, %a, %b;",
            ["s32"; 4],
            [(-7i32) as u32 as u64, 2, 0]
        ),
        (-1i32) as u32 as u64
    );
    // INT_MIN / -1 overflows to INT_MIN, remainder 0.
    assert_eq!(
        eval(
            "div.s32 %d, %a, %b;",
            ["s32"; 4],
            [0x8000_0000, 0xffff_ffff, 0]
        ),
        0x8000_0000
    );
    assert_eq!(
        eval(
            "rem.s32 %d, %a, %b;",
            ["s32"; 4],
            [0x8000_0000, 0xffff_ffff, 0]
        ),
        0
    );
    // By zero: PTX leaves it unspecified; the emulator gives all ones and the dividend.
    assert_eq!(
        eval("div.u32 %d, %a, %b;", ["u32"; 4], [9, 0, 0]),
        0xffff_ffff
    );
    assert_eq!(eval("rem.u32 %d, %a, %b;", ["u32"; 4], [9, 0, 0]), 9);
    assert_eq!(
        eval("div.u64 %d, %a, %b;", ["u64"; 4], [u64::MAX, 3, 0]),
        u64::MAX / 3
    );
    assert_eq!(
        eval("rem.u64 %d, %a, %b;", ["u64"; 4], [u64::MAX, 10, 0]),
        u64::MAX % 10
    );
}

#[test]
fn min_max_are_signed_or_unsigned_by_type() {
    let m1 = (-1i32) as u32 as u64;
    assert_eq!(eval("min.s32 %d, %a, %b;", ["s32"; 4], [m1, 1, 0]), m1);
    assert_eq!(eval("min.u32 %d, %a, %b;", ["u32"; 4], [m1, 1, 0]), 1);
    assert_eq!(eval("max.s32 %d, %a, %b;", ["s32"; 4], [m1, 1, 0]), 1);
    assert_eq!(eval("min.u64 %d, %a, %b;", ["u64"; 4], [u64::MAX, 5, 0]), 5);
    assert_eq!(eval("max.s64 %d, %a, %b;", ["s64"; 4], [u64::MAX, 5, 0]), 5);
}

#[test]
fn shifts_of_the_full_width_or_more_clamp() {
    for (s, want) in [
        (0u64, 0x8000_0001u64),
        (1, 2),
        (31, 0x8000_0000),
        (32, 0),
        (33, 0),
        (255, 0),
        (1 << 31, 0),
    ] {
        assert_eq!(
            i32_("shl.b32 %d, %a, %b;", 0x8000_0001, s),
            want,
            "shl by {s}"
        );
    }
    for (s, want) in [(0u64, 0x8000_0000u64), (31, 1), (32, 0), (1000, 0)] {
        assert_eq!(
            eval("shr.u32 %d, %a, %b;", ["u32"; 4], [0x8000_0000, s, 0]),
            want,
            "shr.u32 by {s}"
        );
    }
    // Arithmetic shifts fill with the sign, also past the width.
    for (s, want) in [
        (1u64, 0xc000_0000u64),
        (31, 0xffff_ffff),
        (32, 0xffff_ffff),
        (99, 0xffff_ffff),
    ] {
        assert_eq!(
            eval(
                "shr.s32 %d, %a, %b;",
                ["s32", "s32", "u32", "u32"],
                [0x8000_0000, s, 0]
            ),
            want,
            "shr.s32 by {s}"
        );
    }
    assert_eq!(
        eval(
            "shr.s32 %d, %a, %b;",
            ["s32", "s32", "u32", "u32"],
            [0x4000_0000, 40, 0]
        ),
        0
    );
    assert_eq!(
        eval(
            "shl.b64 %d, %a, %b;",
            ["b64", "b64", "u32", "u32"],
            [1, 63, 0]
        ),
        1 << 63
    );
    assert_eq!(
        eval(
            "shl.b64 %d, %a, %b;",
            ["b64", "b64", "u32", "u32"],
            [1, 64, 0]
        ),
        0
    );
    assert_eq!(
        eval(
            "shr.u64 %d, %a, %b;",
            ["u64", "u64", "u32", "u32"],
            [u64::MAX, 64, 0]
        ),
        0
    );
    assert_eq!(
        eval(
            "shr.s64 %d, %a, %b;",
            ["s64", "s64", "u32", "u32"],
            [1 << 63, 70, 0]
        ),
        u64::MAX
    );
    assert_eq!(
        eval(
            "shl.b16 %d, %a, %b;",
            ["b16", "b16", "u32", "u32"],
            [1, 16, 0]
        ),
        0
    );
}

#[test]
fn bit_operations() {
    assert_eq!(
        i32_("and.b32 %d, %a, %b;", 0xff00_ff00, 0x0ff0_0ff0),
        0x0f00_0f00
    );
    assert_eq!(
        i32_("or.b32 %d, %a, %b;", 0xff00_0000, 0x0000_00ff),
        0xff00_00ff
    );
    assert_eq!(
        i32_("xor.b32 %d, %a, %b;", 0xffff_0000, 0xff00_ff00),
        0x00ff_ff00
    );
    assert_eq!(i32_("not.b32 %d, %a;", 0x0f0f_0f0f, 0), 0xf0f0_f0f0);
    assert_eq!(eval("not.b16 %d, %a;", ["b16"; 4], [0x00ff, 0, 0]), 0xff00);
    assert_eq!(
        eval("and.b16 %d, %a, %b;", ["b16"; 4], [0x1234, 0x00ff, 0]),
        0x34
    );
    assert_eq!(
        eval("and.b64 %d, %a, %b;", ["b64"; 4], [u64::MAX, 1 << 40, 0]),
        1 << 40
    );
    assert_eq!(i32_("cnot.b32 %d, %a;", 0, 0), 1);
    assert_eq!(i32_("cnot.b32 %d, %a;", 7, 0), 0);
    assert_eq!(
        eval(
            "popc.b32 %d, %a;",
            ["u32", "b32", "b32", "b32"],
            [0xf0f0_0001, 0, 0]
        ),
        9
    );
    assert_eq!(
        eval(
            "popc.b64 %d, %a;",
            ["u32", "b64", "b64", "b64"],
            [u64::MAX, 0, 0]
        ),
        64
    );
    assert_eq!(
        eval("clz.b32 %d, %a;", ["u32", "b32", "b32", "b32"], [0, 0, 0]),
        32
    );
    assert_eq!(
        eval("clz.b32 %d, %a;", ["u32", "b32", "b32", "b32"], [1, 0, 0]),
        31
    );
    assert_eq!(eval("brev.b32 %d, %a;", ["b32"; 4], [1, 0, 0]), 0x8000_0000);
}

#[test]
fn predicates_and_select() {
    assert!(!pred("and.pred %d, %a, %c;", "pred", 1, 0));
    assert!(eval("or.pred %d, %a, %b;", ["pred"; 4], [1, 0, 0]) != 0);
    assert!(eval("xor.pred %d, %a, %b;", ["pred"; 4], [1, 1, 0]) == 0);
    assert!(eval("not.pred %d, %a;", ["pred"; 4], [0, 0, 0]) != 0);
    assert!(eval("mov.pred %d, %a;", ["pred"; 4], [1, 0, 0]) != 0);
    assert_eq!(
        eval(
            "selp.b32 %d, %a, %b, %c;",
            ["b32", "b32", "b32", "pred"],
            [7, 9, 1]
        ),
        7
    );
    assert_eq!(
        eval(
            "selp.b32 %d, %a, %b, %c;",
            ["b32", "b32", "b32", "pred"],
            [7, 9, 0]
        ),
        9
    );
    assert_eq!(
        eval(
            "selp.f32 %d, %a, %b, %c;",
            ["f32", "f32", "f32", "pred"],
            [f32b(1.5), f32b(-2.0), 0]
        ),
        f32b(-2.0)
    );
    // A negated predicate operand.
    assert_eq!(
        eval(
            "setp.ne.u32 %p, %a, 0;\n selp.u32 %d, 1, 2, !%p;",
            ["u32"; 4],
            [5, 0, 0]
        ),
        2
    );
}

#[test]
fn integer_comparisons_by_signedness() {
    let m1 = (-1i32) as u32 as u64;
    assert!(pred("setp.lt.s32 %d, %a, %b;", "s32", m1, 1));
    assert!(!pred("setp.lt.u32 %d, %a, %b;", "u32", m1, 1));
    assert!(pred("setp.hi.u32 %d, %a, %b;", "u32", m1, 1));
    assert!(pred("setp.lo.u32 %d, %a, %b;", "u32", 1, m1));
    assert!(pred("setp.ls.u32 %d, %a, %b;", "u32", 1, 1));
    assert!(pred("setp.hs.u64 %d, %a, %b;", "u64", u64::MAX, 1));
    assert!(pred("setp.ge.s64 %d, %a, %b;", "s64", 0, u64::MAX));
    assert!(pred("setp.eq.b16 %d, %a, %b;", "b16", 0x1234, 0x1234));
    assert!(pred("setp.ne.s16 %d, %a, %b;", "s16", 0x8000, 0x7fff));
    // The combining forms: p = (a < b) AND c, q = !(a < b) AND c.
    let both = eval(
        "setp.lt.and.s32 %p|%q, %a, %b, %c;\n selp.u32 %t, 1, 0, %p;\n selp.u32 %d, 2, 0, %q;\n add.u32 %d, %d, %t;",
        ["u32", "s32", "s32", "pred"],
        [3, 1, 1],
    );
    assert_eq!(both, 2);
}

#[test]
fn float_arithmetic_rounds_to_nearest_and_gives_the_canonical_nan() {
    assert_eq!(
        f32_("add.rn.f32 %d, %a, %b;", 1.0, 2f32.powi(-24)),
        f32b(1.0)
    ); // tie to even
    assert_eq!(
        f32_("add.rn.f32 %d, %a, %b;", 1.0, 3.0 * 2f32.powi(-24)),
        f32b(1.0 + 2f32.powi(-22))
    );
    assert_eq!(f32_("sub.rn.f32 %d, %a, %b;", 0.0, 0.0), f32b(0.0));
    assert_eq!(f32_("add.rn.f32 %d, %a, %b;", -0.0, 0.0), f32b(0.0));
    assert_eq!(f32_("add.rn.f32 %d, %a, %b;", -0.0, -0.0), f32b(-0.0));
    assert_eq!(f32_("mul.rn.f32 %d, %a, %b;", -0.0, 5.0), f32b(-0.0));
    assert_eq!(f32_("div.rn.f32 %d, %a, %b;", 1.0, -0.0), f32b(-INF));
    assert_eq!(f32_("div.rn.f32 %d, %a, %b;", 1.0, 3.0), f32b(1.0 / 3.0));
    // NaN results, from NaN or not, are 0x7fffffff whatever the input payload.
    assert_eq!(f32_("add.rn.f32 %d, %a, %b;", INF, -INF), NAN);
    assert_eq!(f32_("mul.rn.f32 %d, %a, %b;", 0.0, INF), NAN);
    assert_eq!(f32_("div.rn.f32 %d, %a, %b;", 0.0, 0.0), NAN);
    let payload = f32::from_bits(0xffc0_1234);
    assert_eq!(f32_("add.rn.f32 %d, %a, %b;", payload, 1.0), NAN);
    assert_eq!(
        f32_("mul.rn.f32 %d, %a, %b;", 1.0, f32::from_bits(0x7f80_0001)),
        NAN
    );
    assert_eq!(f32_("add.rn.f32 %d, %a, %b;", INF, 1.0), f32b(INF));
    assert_eq!(f32_("mul.rn.f32 %d, %a, %b;", f32::MAX, 2.0), f32b(INF));
}

#[test]
fn subnormals_are_kept_unless_ftz() {
    let tiny = f32::from_bits(1); // the smallest subnormal
    assert_eq!(f32_("add.rn.f32 %d, %a, %b;", tiny, tiny), 2);
    assert_eq!(
        f32_("mul.rn.f32 %d, %a, %b;", f32::MIN_POSITIVE, 0.5),
        f32b(f32::MIN_POSITIVE / 2.0)
    );
    // .ftz flushes inputs and results to zero of the same sign.
    assert_eq!(f32_("add.rn.ftz.f32 %d, %a, %b;", tiny, tiny), 0);
    assert_eq!(
        f32_("mul.rn.ftz.f32 %d, %a, %b;", f32::MIN_POSITIVE, 0.5),
        0
    );
    assert_eq!(
        f32_("mul.rn.ftz.f32 %d, %a, %b;", -f32::MIN_POSITIVE, 0.5),
        f32b(-0.0)
    );
    assert_eq!(f32_("add.rn.ftz.f32 %d, %a, %b;", -tiny, 1.0), f32b(1.0));
    assert_eq!(
        eval("add.rn.f64 %d, %a, %b;", ["f64"; 4], [1, 1, 0]),
        2,
        "f64 subnormals"
    );
}

#[test]
fn saturation_clamps_to_zero_one_and_nan_to_zero() {
    assert_eq!(f32_("add.rn.sat.f32 %d, %a, %b;", 0.75, 0.5), f32b(1.0));
    assert_eq!(f32_("add.rn.sat.f32 %d, %a, %b;", -0.75, 0.5), f32b(0.0));
    assert_eq!(f32_("mul.rn.sat.f32 %d, %a, %b;", INF, 0.0), 0);
    assert_eq!(f32_("mul.rn.sat.f32 %d, %a, %b;", 0.25, 2.0), f32b(0.5));
}

#[test]
fn directed_rounding() {
    // 1/3 lies between two f32 neighbours; the modes pick one by direction.
    let below = f32::from_bits(f32_("div.rz.f32 %d, %a, %b;", 1.0, 3.0) as u32);
    assert!((below as f64) < 1.0 / 3.0 && (below.next_up() as f64) > 1.0 / 3.0);
    assert_eq!(f32_("div.rm.f32 %d, %a, %b;", 1.0, 3.0), f32b(below));
    assert_eq!(
        f32_("div.rp.f32 %d, %a, %b;", 1.0, 3.0),
        f32b(below.next_up())
    );
    assert_eq!(
        f32_("div.rm.f32 %d, %a, %b;", -1.0, 3.0),
        f32b(-below.next_up())
    );
    assert_eq!(f32_("div.rz.f32 %d, %a, %b;", -1.0, 3.0), f32b(-below));
    assert_eq!(f32_("div.rp.f32 %d, %a, %b;", -1.0, 3.0), f32b(-below));
    // Exact zero sums are −0 when rounding toward −∞.
    assert_eq!(f32_("add.rm.f32 %d, %a, %b;", 1.0, -1.0), f32b(-0.0));
    assert_eq!(f32_("add.rn.f32 %d, %a, %b;", 1.0, -1.0), f32b(0.0));
    // Overflow: toward zero stays finite.
    assert_eq!(
        f32_("mul.rz.f32 %d, %a, %b;", f32::MAX, 2.0),
        f32b(f32::MAX)
    );
    assert_eq!(f32_("mul.rp.f32 %d, %a, %b;", f32::MAX, 2.0), f32b(INF));
    assert_eq!(
        f32_("mul.rm.f32 %d, %a, %b;", f32::MAX, 2.0),
        f32b(f32::MAX)
    );
    assert_eq!(
        eval(
            "add.rz.f64 %d, %a, %b;",
            ["f64"; 4],
            [f64b(1.0), f64b(2f64.powi(-60)), 0]
        ),
        f64b(1.0)
    );
    assert_eq!(
        eval(
            "add.rp.f64 %d, %a, %b;",
            ["f64"; 4],
            [f64b(1.0), f64b(2f64.powi(-60)), 0]
        ),
        f64b(1.0f64.next_up())
    );
}

/// The f32 nearest `x` in the direction of `mode`, from an exact f64.
fn directed(x: f64, mode: &str) -> f32 {
    let r = x as f32;
    let exact = r as f64 == x;
    match mode {
        _ if exact || x.is_nan() || r.is_infinite() && mode == "rn" => r,
        "rz" if (r as f64).abs() > x.abs() => {
            if x > 0.0 {
                r.next_down()
            } else {
                r.next_up()
            }
        }
        "rm" if r as f64 > x => r.next_down(),
        "rp" if (r as f64) < x => r.next_up(),
        _ if r.is_infinite() => match mode {
            "rz" => f32::MAX.copysign(r),
            "rm" if r > 0.0 => f32::MAX,
            "rp" if r < 0.0 => -f32::MAX,
            _ => r,
        },
        _ => r,
    }
}

proptest! {
    #[test]
    fn f32_products_round_as_the_mode_says(a in -1e20f32..1e20, b in -1e20f32..1e20, m in 0usize..4) {
        let mode = ["rn", "rz", "rm", "rp"][m];
        // A product of two f32 values is exact in f64.
        let want = directed(a as f64 * b as f64, mode);
        let got = f32_(&format!("mul.{mode}.f32 %d, %a, %b;"), a, b);
        prop_assert_eq!(got, f32b(want), "{} * {} {}", a, b, mode);
    }

    #[test]
    fn f32_arithmetic_is_ieee(a in any::<f32>(), b in any::<f32>(), c in any::<f32>()) {
        let canon = |x: f32| if x.is_nan() { NAN } else { f32b(x) };
        prop_assert_eq!(f32_("add.rn.f32 %d, %a, %b;", a, b), canon(a + b));
        prop_assert_eq!(f32_("sub.rn.f32 %d, %a, %b;", a, b), canon(a - b));
        prop_assert_eq!(f32_("div.rn.f32 %d, %a, %b;", a, b), canon(a / b));
        prop_assert_eq!(f32_3("fma.rn.f32 %d, %a, %b, %c;", a, b, c), canon(a.mul_add(b, c)));
    }
}

#[test]
fn fma_rounds_once() {
    let a = 1.0 + 2f32.powi(-12);
    // a² = 1 + 2^-11 + 2^-24: a separate multiply rounds the 2^-24 away.
    assert_eq!(
        f32_3("fma.rn.f32 %d, %a, %b, %c;", a, a, -1.0),
        f32b(2f32.powi(-11) + 2f32.powi(-24))
    );
    assert_eq!(
        f32_3("mad.rn.f32 %d, %a, %b, %c;", a, a, -1.0),
        f32b(2f32.powi(-11) + 2f32.powi(-24))
    );
    assert_eq!(f32_3("fma.rn.f32 %d, %a, %b, %c;", INF, 0.0, 1.0), NAN);
}

#[test]
fn min_max_skip_one_nan_and_order_zeros() {
    let nan = f32::NAN;
    assert_eq!(f32_("min.f32 %d, %a, %b;", nan, 2.0), f32b(2.0));
    assert_eq!(f32_("max.f32 %d, %a, %b;", 2.0, nan), f32b(2.0));
    assert_eq!(f32_("min.f32 %d, %a, %b;", nan, nan), NAN);
    assert_eq!(f32_("min.NaN.f32 %d, %a, %b;", nan, 2.0), NAN);
    assert_eq!(f32_("max.NaN.f32 %d, %a, %b;", 1.0, nan), NAN);
    assert_eq!(f32_("min.f32 %d, %a, %b;", 0.0, -0.0), f32b(-0.0));
    assert_eq!(f32_("min.f32 %d, %a, %b;", -0.0, 0.0), f32b(-0.0));
    assert_eq!(f32_("max.f32 %d, %a, %b;", -0.0, 0.0), f32b(0.0));
    assert_eq!(f32_("max.f32 %d, %a, %b;", 0.0, -0.0), f32b(0.0));
    assert_eq!(f32_("max.f32 %d, %a, %b;", -INF, -5.0), f32b(-5.0));
    assert_eq!(f32_("min.ftz.f32 %d, %a, %b;", f32::from_bits(1), 0.0), 0);
    let f64nan = f64::from_bits(0x7ff8_0000_0000_0042);
    assert_eq!(
        eval(
            "max.f64 %d, %a, %b;",
            ["f64"; 4],
            [f64b(f64nan), f64b(-3.0), 0]
        ),
        f64b(-3.0)
    );
    assert_eq!(
        eval(
            "min.f64 %d, %a, %b;",
            ["f64"; 4],
            [f64b(0.0), f64b(-0.0), 0]
        ),
        f64b(-0.0)
    );
}

#[test]
fn abs_neg_sqrt_rcp() {
    assert_eq!(f32_("abs.f32 %d, %a;", -0.0, 0.0), 0);
    assert_eq!(f32_("abs.f32 %d, %a;", -INF, 0.0), f32b(INF));
    assert_eq!(f32_("neg.f32 %d, %a;", 0.0, 0.0), f32b(-0.0));
    assert_eq!(f32_("neg.f32 %d, %a;", f32::from_bits(1), 0.0), 0x8000_0001);
    assert_eq!(f32_("abs.ftz.f32 %d, %a;", -f32::from_bits(1), 0.0), 0);
    // Single precision: unspecified NaN, the canonical one here.
    assert_eq!(
        f32_("abs.f32 %d, %a;", f32::from_bits(0xffc0_0001), 0.0),
        NAN
    );
    // Double precision passes NaNs through unchanged.
    let n = 0xfff8_0000_0000_0007u64;
    assert_eq!(eval("abs.f64 %d, %a;", ["f64"; 4], [n, 0, 0]), n);
    assert_eq!(eval("neg.f64 %d, %a;", ["f64"; 4], [n, 0, 0]), n);
    assert_eq!(
        eval("neg.f64 %d, %a;", ["f64"; 4], [f64b(2.0), 0, 0]),
        f64b(-2.0)
    );
    assert_eq!(f32_("sqrt.rn.f32 %d, %a;", 2.0, 0.0), f32b(2f32.sqrt()));
    assert_eq!(f32_("sqrt.rn.f32 %d, %a;", -1.0, 0.0), NAN);
    assert_eq!(f32_("sqrt.rn.f32 %d, %a;", -0.0, 0.0), f32b(-0.0));
    assert_eq!(f32_("rcp.rn.f32 %d, %a;", 3.0, 0.0), f32b(1.0 / 3.0));
    assert_eq!(f32_("rcp.rn.f32 %d, %a;", -0.0, 0.0), f32b(-INF));
}

#[test]
fn f64_arithmetic_keeps_nan_payloads() {
    let n = 0x7ff0_0000_0000_0042u64; // a signalling NaN
    assert_eq!(
        eval("add.rn.f64 %d, %a, %b;", ["f64"; 4], [n, f64b(1.0), 0]),
        n | (1 << 51)
    );
    assert_eq!(
        eval(
            "mul.rn.f64 %d, %a, %b;",
            ["f64"; 4],
            [f64b(1.0), 0x7ff8_0000_0000_0009, 0]
        ),
        0x7ff8_0000_0000_0009
    );
    assert_eq!(
        eval(
            "add.rn.f64 %d, %a, %b;",
            ["f64"; 4],
            [f64b(f64::INFINITY), f64b(f64::NEG_INFINITY), 0]
        ),
        0x7fff_ffff_ffff_ffff
    );
    assert_eq!(
        eval(
            "div.rn.f64 %d, %a, %b;",
            ["f64"; 4],
            [f64b(1.0), f64b(3.0), 0]
        ),
        f64b(1.0 / 3.0)
    );
}

#[test]
fn float_comparisons_ordered_and_unordered() {
    let nan = f32b(f32::NAN);
    let one = f32b(1.0);
    for (cmp, with_nan) in [
        ("eq", false),
        ("ne", false),
        ("lt", false),
        ("le", false),
        ("gt", false),
        ("ge", false),
        ("equ", true),
        ("neu", true),
        ("ltu", true),
        ("leu", true),
        ("gtu", true),
        ("geu", true),
        ("num", false),
        ("nan", true),
    ] {
        let instr = format!("setp.{cmp}.f32 %d, %a, %b;");
        assert_eq!(pred(&instr, "f32", nan, one), with_nan, "{cmp} with NaN");
        assert_eq!(
            pred(&instr, "f32", one, nan),
            with_nan,
            "{cmp} with NaN second"
        );
    }
    assert!(pred(
        "setp.eq.f32 %d, %a, %b;",
        "f32",
        f32b(0.0),
        f32b(-0.0)
    ));
    assert!(!pred(
        "setp.lt.f32 %d, %a, %b;",
        "f32",
        f32b(-0.0),
        f32b(0.0)
    ));
    assert!(pred("setp.ne.f32 %d, %a, %b;", "f32", one, f32b(2.0)));
    assert!(pred(
        "setp.lt.f32 %d, %a, %b;",
        "f32",
        f32b(-INF),
        f32b(-f32::MAX)
    ));
    assert!(pred(
        "setp.gt.f64 %d, %a, %b;",
        "f64",
        f64b(1e300),
        f64b(-1e300)
    ));
    assert!(pred(
        "setp.nan.f64 %d, %a, %b;",
        "f64",
        f64b(f64::NAN),
        f64b(0.0)
    ));
    // .ftz compares flushed subnormals.
    assert!(
        pred("setp.gt.f32 %d, %a, %b;", "f32", 1, f32b(0.0))
            && !pred("setp.gt.ftz.f32 %d, %a, %b;", "f32", 1, 0)
    );
}

fn cvt(instr: &str, d: &str, a: &str, x: u64) -> u64 {
    eval(instr, [d, a, a, a], [x, 0, 0])
}

#[test]
fn conversions_between_floats() {
    let h = |x: f32| half::f16::from_f32(x).to_bits() as u64;
    let f16 = |i: &str, x: f32| cvt(&format!("cvt.{i}.f16.f32 %d, %a;"), "f16", "f32", f32b(x));
    assert_eq!(f16("rn", 1.0 + 2f32.powi(-11)), h(1.0)); // tie to even
    assert_eq!(
        f16("rn", 1.0 + 3.0 * 2f32.powi(-11)),
        h(1.0 + 2f32.powi(-9))
    );
    assert_eq!(
        f16("rz", 1.0 + 3.0 * 2f32.powi(-11)),
        h(1.0 + 2f32.powi(-10))
    );
    assert_eq!(f16("rn", 65519.0), h(65504.0));
    assert_eq!(f16("rn", 65520.0), 0x7c00); // overflow to +∞
    assert_eq!(f16("rz", 1e9), 0x7bff); // toward zero: the largest finite
    assert_eq!(f16("rn", 2f32.powi(-24)), 1); // the smallest subnormal
    assert_eq!(f16("rn", 2f32.powi(-26)), 0);
    assert_eq!(f16("rp", 2f32.powi(-26)), 1);
    assert_eq!(f16("rn", -0.0), 0x8000);
    assert_eq!(f16("rn", f32::NAN), 0x7fff);
    assert_eq!(f16("rn", f32::NEG_INFINITY), 0xfc00);
    // f16 to f32 is exact, subnormals included; NaN is the canonical one.
    assert_eq!(
        cvt("cvt.f32.f16 %d, %a;", "f32", "f16", 1),
        f32b(2f32.powi(-24))
    );
    assert_eq!(
        cvt("cvt.f32.f16 %d, %a;", "f32", "f16", 0xfc00),
        f32b(f32::NEG_INFINITY)
    );
    assert_eq!(cvt("cvt.f32.f16 %d, %a;", "f32", "f16", 0x7e01), NAN);
    // bf16.
    assert_eq!(
        cvt(
            "cvt.rn.bf16.f32 %d, %a;",
            "bf16",
            "f32",
            f32b(1.0 + 2f32.powi(-8))
        ),
        0x3f80
    );
    assert_eq!(
        cvt(
            "cvt.rn.bf16.f32 %d, %a;",
            "bf16",
            "f32",
            f32b(1.0 + 3.0 * 2f32.powi(-8))
        ),
        0x3f82
    );
    assert_eq!(
        cvt("cvt.f32.bf16 %d, %a;", "f32", "bf16", 0xc040),
        f32b(-3.0)
    );
    // f64 ↔ f32.
    assert_eq!(
        cvt("cvt.rn.f32.f64 %d, %a;", "f32", "f64", f64b(0.1)),
        f32b(0.1)
    );
    assert_eq!(
        cvt("cvt.rz.f32.f64 %d, %a;", "f32", "f64", f64b(1e300)),
        f32b(f32::MAX)
    );
    assert_eq!(
        cvt("cvt.rn.f32.f64 %d, %a;", "f32", "f64", f64b(1e300)),
        f32b(INF)
    );
    assert_eq!(
        cvt("cvt.rn.f32.f64 %d, %a;", "f32", "f64", f64b(f64::NAN)),
        NAN
    );
    assert_eq!(
        cvt("cvt.f64.f32 %d, %a;", "f64", "f32", f32b(0.1)),
        f64b(0.1f32 as f64)
    );
    assert_eq!(
        cvt("cvt.f64.f32 %d, %a;", "f64", "f32", 1),
        f64b(f32::from_bits(1) as f64)
    );
    assert_eq!(
        cvt("cvt.ftz.f64.f32 %d, %a;", "f64", "f32", 0x8000_0001),
        f64b(-0.0)
    );
    // Rounding to an integral value in the same type.
    assert_eq!(
        cvt("cvt.rni.f32.f32 %d, %a;", "f32", "f32", f32b(2.5)),
        f32b(2.0)
    );
    assert_eq!(
        cvt("cvt.rmi.f32.f32 %d, %a;", "f32", "f32", f32b(-2.5)),
        f32b(-3.0)
    );
    assert_eq!(
        cvt("cvt.rpi.f32.f32 %d, %a;", "f32", "f32", f32b(-2.5)),
        f32b(-2.0)
    );
    assert_eq!(
        cvt("cvt.rzi.f32.f32 %d, %a;", "f32", "f32", f32b(-0.5)),
        f32b(-0.0)
    );
    assert_eq!(
        cvt("cvt.rni.f32.f32 %d, %a;", "f32", "f32", f32b(f32::NAN)),
        NAN
    );
    assert_eq!(
        cvt("cvt.sat.f32.f32 %d, %a;", "f32", "f32", f32b(7.0)),
        f32b(1.0)
    );
}

#[test]
fn conversions_float_to_integer_round_then_clamp() {
    let s32 = |i: &str, x: f32| {
        cvt(&format!("cvt.{i}.s32.f32 %d, %a;"), "s32", "f32", f32b(x)) as u32 as i32
    };
    assert_eq!(s32("rni", 2.5), 2);
    assert_eq!(s32("rni", 3.5), 4);
    assert_eq!(s32("rni", -2.5), -2);
    assert_eq!(s32("rzi", -2.7), -2);
    assert_eq!(s32("rmi", -2.1), -3);
    assert_eq!(s32("rpi", 2.1), 3);
    assert_eq!(s32("rzi", 1e10), i32::MAX);
    assert_eq!(s32("rzi", -1e10), i32::MIN);
    assert_eq!(s32("rzi", INF), i32::MAX);
    assert_eq!(s32("rzi", f32::NAN), 0);
    let u32_ = |x: f32| cvt("cvt.rzi.u32.f32 %d, %a;", "u32", "f32", f32b(x));
    assert_eq!(u32_(-1.0), 0);
    assert_eq!(u32_(5e9), u32::MAX as u64);
    assert_eq!(
        cvt("cvt.rzi.u64.f64 %d, %a;", "u64", "f64", f64b(1e30)),
        u64::MAX
    );
    assert_eq!(
        cvt("cvt.rni.s64.f64 %d, %a;", "s64", "f64", f64b(-1e30)),
        i64::MIN as u64
    );
    assert_eq!(
        cvt("cvt.rzi.u16.f32 %d, %a;", "u16", "f32", f32b(70000.0)),
        0xffff
    );
    assert_eq!(
        cvt("cvt.rni.s8.f32 %d, %a;", "s8", "f32", f32b(-300.0)) & 0xff,
        0x80
    );
}

#[test]
fn conversions_from_integers() {
    let f = |i: &str, x: u64| cvt(&format!("cvt.{i}.f32.u32 %d, %a;"), "f32", "u32", x);
    assert_eq!(f("rn", (1 << 24) + 1), f32b(16777216.0)); // tie to even
    assert_eq!(f("rn", (1 << 24) + 3), f32b(16777220.0));
    assert_eq!(f("rz", (1 << 24) + 3), f32b(16777218.0));
    assert_eq!(f("rp", (1 << 24) + 1), f32b(16777218.0));
    assert_eq!(f("rn", u32::MAX as u64), f32b(4294967296.0));
    assert_eq!(
        cvt(
            "cvt.rn.f32.s32 %d, %a;",
            "f32",
            "s32",
            (-5i32) as u32 as u64
        ),
        f32b(-5.0)
    );
    assert_eq!(
        cvt("cvt.rn.f64.u64 %d, %a;", "f64", "u64", u64::MAX),
        f64b(18446744073709551616.0)
    );
    assert_eq!(
        cvt("cvt.rn.f64.s64 %d, %a;", "f64", "s64", i64::MIN as u64),
        f64b(-9223372036854775808.0)
    );
    assert_eq!(cvt("cvt.rn.f16.s32 %d, %a;", "f16", "s32", 70000), 0x7c00);
}

#[test]
fn conversions_between_integers() {
    assert_eq!(cvt("cvt.u16.u32 %d, %a;", "u16", "u32", 0x1_2345), 0x2345);
    assert_eq!(
        cvt("cvt.u64.u32 %d, %a;", "u64", "u32", 0xffff_ffff),
        0xffff_ffff
    );
    assert_eq!(
        cvt("cvt.s64.s32 %d, %a;", "s64", "s32", 0xffff_fffe),
        (-2i64) as u64
    );
    assert_eq!(cvt("cvt.u32.u64 %d, %a;", "u32", "u64", 0x1_0000_0005), 5);
    assert_eq!(
        cvt("cvt.s32.s16 %d, %a;", "s32", "s16", 0x8000),
        0xffff_8000
    );
    assert_eq!(
        cvt("cvt.u32.s16 %d, %a;", "u32", "s16", 0x8000),
        0xffff_8000
    );
    assert_eq!(
        cvt("cvt.sat.u8.s32 %d, %a;", "u8", "s32", (-5i32) as u32 as u64),
        0
    );
    assert_eq!(cvt("cvt.sat.u8.s32 %d, %a;", "u8", "s32", 300), 255);
    assert_eq!(
        cvt("cvt.sat.s16.s32 %d, %a;", "s16", "s32", 40000) & 0xffff,
        0x7fff
    );
}

#[test]
fn moves_pack_and_unpack() {
    assert_eq!(
        eval(
            "mov.b32 %d, {%a, %b};",
            ["b32", "b16", "b16", "b16"],
            [0x1111, 0x2222, 0]
        ),
        0x2222_1111
    );
    assert_eq!(
        eval(
            "mov.b32 %d, {0, %a};",
            ["b32", "b16", "b16", "b16"],
            [0x3f80, 0, 0]
        ),
        0x3f80_0000
    );
    assert_eq!(
        eval(
            "mov.b64 {%t, _}, %a;\n mov.b32 %d, %t;",
            ["b32", "b64", "b64", "b64"],
            [0xaaaa_bbbb_cccc_dddd, 0, 0]
        ),
        0xcccc_dddd
    );
    assert_eq!(
        eval(
            "mov.b64 {_, %t}, %a;\n mov.b32 %d, %t;",
            ["b32", "b64", "b64", "b64"],
            [0xaaaa_bbbb_cccc_dddd, 0, 0]
        ),
        0xaaaa_bbbb
    );
    assert_eq!(
        eval("mov.f32 %d, 0f3F800000;", ["f32"; 4], [0, 0, 0]),
        f32b(1.0)
    );
    assert_eq!(
        eval("mov.f64 %d, 0d3FF0000000000000;", ["f64"; 4], [0, 0, 0]),
        f64b(1.0)
    );
    assert_eq!(eval("mov.u32 %d, -1;", ["u32"; 4], [0, 0, 0]), 0xffff_ffff);
    assert_eq!(
        eval(
            "add.rn.f32 %d, %a, 0fBF800000;",
            ["f32"; 4],
            [f32b(3.0), 0, 0]
        ),
        f32b(2.0)
    );
}

#[test]
fn special_registers() {
    let got = |r: &str| eval(&format!("mov.u32 %d, {r};"), ["u32"; 4], [0, 0, 0]);
    assert_eq!(got("%tid.x"), 0);
    assert_eq!(got("%ntid.x"), 1);
    assert_eq!(got("%nctaid.y"), 1);
    assert_eq!(got("%laneid"), 0);
    assert_eq!(got("%lanemask_lt"), 0);
    assert_eq!(got("%lanemask_ge"), 0xffff_ffff);
}
