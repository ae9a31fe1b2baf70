//! DoReFa weights' forward in `f32` as a step function of `tanh x`.
//!
//! The forward is `g(tanh x)` with `g` ([`scalar::dorefa_weights_of_tanh`])
//! non-decreasing and of at most 2^k values. So a call first finds where
//! `g` steps, bisecting the `f32` values of `[−1, 1]` with `g` itself, and
//! then maps each element by comparing its `tanh` with those points: one
//! division per element (`tanh`'s) instead of three (`t / 2max` and the
//! level's `/ n` besides). The result is the generic path's by
//! construction: the points and levels are `g`'s own outputs. Halves have
//! their pieces instead (`pieces.rs`), which skip `tanh` too.
//!
//! Most elements skip `tanh` as well: each point is also found in `x`, as
//! a [`Band`] outside which `x` alone says on which side of the point its
//! `tanh` lies. Only a step of the loop with an element inside a band (or
//! a NaN) evaluates `tanh`.

use rayon::prelude::*;

use super::reduce::tanh_reach;
use super::{CHUNK, Reduced, lanes, simd, steps, streams};
use crate::element::convert::{self, LANES};
use crate::element::{DType, Element};
use crate::op::{Elementwise, Functor, Op};
use crate::scalar;

/// Steps a forward may have and be mapped by comparisons: DoReFa's 3-bit
/// levels have 7. With 4 bits' 15 comparisons the map ran slower than the
/// formula (0.36 of a copy against 0.41 at 2^24).
const MAX_POINTS: usize = 7;

/// `y = q(x)` for DoReFa weights of up to 3 bits in `f32` where the
/// tensor's `max|tanh x|` is a positive number; `false` (and nothing
/// written) otherwise.
pub(super) fn forward<T: Element>(op: &Op, x: &[T], y: &mut [T], reduced: &Reduced) -> bool {
    let Functor::DorefaWeights(f) = op.functor else {
        return false;
    };
    let max = reduced.scalar();
    // At 0 the forward is a constant and at NaN all NaN: the generic path.
    if T::DTYPE != DType::F32 || max.is_nan() || max <= 0.0 {
        return false;
    }
    let Some(steps) = Steps::of(|t| scalar::dorefa_weights_of_tanh(t, max, f.levels)) else {
        return false;
    };
    match steps.count {
        0..=1 => map::<T, _, 1>(f, &steps, max, x, y),
        2..=3 => map::<T, _, 3>(f, &steps, max, x, y),
        _ => map::<T, _, MAX_POINTS>(f, &steps, max, x, y),
    }
    true
}

/// Where a non-decreasing function of `t ∈ [−1, 1]` steps, and its value
/// on each step.
#[derive(Debug)]
struct Steps {
    /// The first `t` of each step after the first, ascending; the unused
    /// ones are +∞, which no `t` reaches.
    points: [f32; MAX_POINTS],
    levels: [f32; MAX_POINTS + 1],
    count: usize,
}

impl Steps {
    /// The steps of `g`, found by bisection; `None` if there are more than
    /// [`MAX_POINTS`].
    fn of(g: impl Fn(f32) -> f32) -> Option<Steps> {
        let at = |k: u32| g(unkey(k)).to_bits();
        let (first, last) = (key(-1.0), key(1.0));
        let mut steps = Steps {
            points: [f32::INFINITY; MAX_POINTS],
            levels: [f32::from_bits(at(first)); MAX_POINTS + 1],
            count: 0,
        };
        let mut start = first;
        while at(start) != at(last) {
            // The first key after `start` whose value differs: `g` has
            // `start`'s value at `lo` and another at `hi`.
            let (mut lo, mut hi) = (start, last);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if at(mid) == at(start) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            if steps.count == MAX_POINTS {
                return None;
            }
            steps.points[steps.count] = unkey(hi);
            steps.count += 1;
            steps.levels[steps.count] = f32::from_bits(at(hi));
            start = hi;
        }
        Some(steps)
    }
}

/// Where `tanh x ≥ p` is known from `x` alone: false at every `x ≤ below`,
/// true at every `x ≥ above`; in between `tanh` decides. [`scalar::tanh`]
/// is monotone only to within [`tanh_reach`] ulps, so a band spans that
/// much either side of where a bisection finds `tanh` crossing `p`.
#[derive(Debug, Clone, Copy)]
struct Band {
    below: f32,
    above: f32,
}

impl Band {
    /// The band of a point of [`Steps`]: `−1 < p ≤ 1`, or +∞ (unused),
    /// whose predicate is false everywhere.
    fn of(p: f32) -> Band {
        if p == f32::INFINITY {
            return Band {
                below: f32::INFINITY,
                above: f32::NAN,
            };
        }
        // tanh −∞ = −1 < p and tanh +∞ = 1 ≥ p: `lo` false, `hi` true.
        let (first, last) = (key(f32::NEG_INFINITY), key(f32::INFINITY));
        let (mut lo, mut hi) = (first, last);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if scalar::tanh(unkey(mid)) >= p {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        // A magnitude more than `tanh_reach(top)` ulps below `top` has no
        // larger `tanh`. So `x` that far below `lo` has `tanh x ≤ tanh lo < p`
        // and that far above `hi` has `tanh x ≥ tanh hi ≥ p` (the reach of
        // the larger magnitude of the two, across zero too, `tanh` being
        // odd). Taken at twice the crossing's magnitude it covers that:
        // the reach is 2^11 below 4, and an `x` past 4 is a binade (2^23
        // ulps) from a crossing below 2.
        let reach = tanh_reach(2.0 * unkey(lo).abs().max(unkey(hi).abs()));
        // Comparing `x` with the ends takes −0 for +0, which keys do not;
        // `tanh ±0 = ±0` compares the same with `p`, so that is no matter.
        Band {
            below: unkey(lo.saturating_sub(reach).max(first)),
            above: unkey(hi.saturating_add(reach).min(last)),
        }
    }
}

/// The `f32` values in the order of their keys: negative ones reversed
/// below the positive ones (−0 just below +0).
fn key(t: f32) -> u32 {
    let b = t.to_bits();
    if b >> 31 != 0 { !b } else { b | 1 << 31 }
}

fn unkey(k: u32) -> f32 {
    f32::from_bits(if k >> 31 != 0 { k & !(1 << 31) } else { !k })
}

/// `y[i]` = the level of `tanh x[i]`'s step of `g`, comparing `x[i]` with
/// the bands of the first `N` points (the rest are unused), or where it
/// falls inside one, `tanh x[i]` with the points; a step of the loop with
/// a NaN in it goes through the generic formula.
fn map<T: Element, F: Elementwise, const N: usize>(
    f: F,
    g: &Steps,
    max: f32,
    x: &[T],
    y: &mut [T],
) {
    let points: [f32; N] = std::array::from_fn(|j| g.points[j]);
    let bands = points.map(Band::of);
    let below = bands.map(|b| b.below);
    let above = bands.map(|b| b.above);
    let levels: [f32; N] = std::array::from_fn(|j| g.levels[j + 1]);
    let first = g.levels[0];
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
                            let x = T::widen(level, &lanes(x, i, n));
                            let mut y = [first; LANES];
                            let mut inside = false;
                            for k in 0..LANES {
                                for j in 0..N {
                                    let over = x[k] >= above[j];
                                    inside |= !(over | (x[k] <= below[j]));
                                    if over {
                                        y[k] = levels[j];
                                    }
                                }
                            }
                            if !inside {
                                return T::narrow(level, &y);
                            }
                            let mut t = [0f32; LANES];
                            for k in 0..LANES {
                                t[k] = scalar::tanh(x[k]);
                            }
                            let mut y = [0f32; LANES];
                            // A fold (vectorized), not `any` (a loop that stops).
                            if t.iter().fold(false, |nan, t| nan | t.is_nan()) {
                                for k in 0..LANES {
                                    y[k] = f.fwd(x[k], max);
                                }
                                return T::narrow(level, &y);
                            }
                            for k in 0..LANES {
                                let mut v = first;
                                for j in 0..N {
                                    if t[k] >= points[j] {
                                        v = levels[j];
                                    }
                                }
                                y[k] = v;
                            }
                            T::narrow(level, &y)
                        },
                    );
                    if stream {
                        convert::fence();
                    }
                },
            )
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{Dims, map1};

    /// The `max|tanh|` values a tensor can give: 1, typical, tiny,
    /// subnormal.
    const MAXES: [f32; 5] = [1.0, 0.7615942, 0.1, 1e-30, 1e-40];

    fn levels_of(k_bit: u32) -> f32 {
        ((1u32 << k_bit) - 1) as f32
    }

    /// Around every point (4096 values either side), around ±1 and ±0, and
    /// at a million values spread over `[−1, 1]`, comparing with the steps
    /// gives `g` itself.
    #[test]
    fn steps_give_the_function_of_tanh() {
        for k_bit in 1..=3 {
            for max in MAXES {
                let n = levels_of(k_bit);
                let g = |t| scalar::dorefa_weights_of_tanh(t, max, n);
                let steps = Steps::of(g).unwrap();
                assert!(steps.count <= n as usize, "{k_bit} bits, max {max}");
                let near = |t: f32| {
                    let k = key(t);
                    (k.saturating_sub(4096)..=k.saturating_add(4096)).map(unkey)
                };
                let around = steps.points[..steps.count]
                    .iter()
                    .chain(&[-1.0, 1.0, 0.0])
                    .flat_map(|&t| near(t));
                let spread = (0..1u32 << 20).map(|i| unkey(key(-1.0) + i * 2031));
                for t in around.chain(spread).filter(|t| (-1.0..=1.0).contains(t)) {
                    let count = steps.points.iter().filter(|&&p| t >= p).count();
                    assert_eq!(
                        steps.levels[count].to_bits(),
                        g(t).to_bits(),
                        "{k_bit} bits, max {max}, t {t:e}"
                    );
                }
            }
        }
    }

    /// Every `t` in `[−1, 1]`, for the 3-bit steps at two maxima.
    /// Exhaustive, so slow (2^31 values, under a minute in release):
    /// `cargo test --release --lib -- --ignored every_tanh`.
    #[test]
    #[ignore]
    fn steps_give_the_function_at_every_tanh() {
        for max in [1.0, 0.7615942] {
            let g = |t| scalar::dorefa_weights_of_tanh(t, max, levels_of(3));
            let steps = Steps::of(g).unwrap();
            let wrong = (key(-1.0)..=key(1.0)).map(unkey).find(|&t| {
                let count = steps.points.iter().filter(|&&p| t >= p).count();
                steps.levels[count].to_bits() != g(t).to_bits()
            });
            assert_eq!(wrong, None, "max {max}");
        }
    }

    /// The forward through the steps and bands against the generic path,
    /// bit for bit, at `max`.
    fn check_forward(k_bit: u32, max: f32, x: &[f32]) {
        let dims = Dims {
            channels: 1,
            inner: 1,
        };
        let spec = format!("dorefa(k_bit={k_bit}, mode=weights)");
        let op = Op::new(&spec.parse().unwrap(), DType::F32).unwrap();
        let reduced = Reduced::Scalar(max);
        let mut fast = vec![0f32; x.len()];
        assert!(forward(&op, x, &mut fast, &reduced), "{spec}");
        let mut generic = vec![0f32; x.len()];
        crate::op::with_functor!(op.functor, |f| map1(f, x, &mut generic, &reduced, dims));
        for (i, (a, b)) in fast.iter().zip(&generic).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{spec}, max {max} at x = {:e}",
                x[i]
            );
        }
    }

    /// The forward is the generic path's on values around where `tanh`
    /// crosses each point and around both ends of each band, on specials
    /// (±0, ±∞, NaNs) and on a spread, at each of [`MAXES`]; with NaNs in
    /// some steps of the loop, and most steps outside every band.
    #[test]
    fn forward_gives_the_generic_paths_bits() {
        let near = |v: f32| (-2000..2000).map(move |d| unkey(key(v).wrapping_add_signed(d)));
        for k_bit in 1..=3 {
            for max in MAXES {
                let mut x: Vec<f32> = (0..300_000)
                    .map(|i| (i as f32 - 150_000.0) / 30_000.0)
                    .collect();
                x.extend([0.0, -0.0, f32::INFINITY, -f32::INFINITY, 1e-40, 7.9, 8.0]);
                let g = |t| scalar::dorefa_weights_of_tanh(t, max, levels_of(k_bit));
                let steps = Steps::of(g).unwrap();
                for &p in steps.points.iter().filter(|p| p.is_finite()) {
                    let band = Band::of(p);
                    assert!(band.below < band.above, "{k_bit} bits, max {max}, p {p:e}");
                    x.extend(
                        [p.atanh(), band.below, band.above]
                            .into_iter()
                            .flat_map(near),
                    );
                }
                for (i, nan) in [(1000, f32::NAN), (70_001, -f32::NAN)] {
                    x[i] = nan;
                }
                check_forward(k_bit, max, &x);
            }
        }
    }

    /// Every `f32` through the forward at 1–3 bits and two maxima.
    /// Exhaustive, so slow (2^32 values, minutes in release):
    /// `cargo test --release --lib -- --ignored every_x`.
    #[test]
    #[ignore]
    fn forward_gives_the_generic_paths_bits_at_every_x() {
        for k_bit in 1..=3 {
            for max in [1.0, 0.7615942] {
                for block in 0..1u64 << 6 {
                    let x: Vec<f32> = (block << 26..(block + 1) << 26)
                        .map(|b| f32::from_bits(b as u32))
                        .collect();
                    check_forward(k_bit, max, &x);
                }
            }
        }
    }

    #[test]
    fn zero_and_nan_maxima_4_bits_and_halves_are_left_alone() {
        let op = Op::new(
            &"dorefa(k_bit=2, mode=weights)".parse().unwrap(),
            DType::F32,
        )
        .unwrap();
        let x = [0.5f32; 8];
        let mut y = [0f32; 8];
        for max in [0.0, f32::NAN] {
            assert!(!forward(&op, &x, &mut y, &Reduced::Scalar(max)));
        }
        let spec = "dorefa(k_bit=4, mode=weights)".parse().unwrap();
        let four = Op::new(&spec, DType::F32).unwrap();
        assert!(!forward(&four, &x, &mut y, &Reduced::Scalar(1.0)));
        let h = [half::f16::ONE; 8];
        let mut out = [half::f16::ZERO; 8];
        assert!(!forward(&op, &h, &mut out, &Reduced::Scalar(1.0)));
        assert_eq!(y, [0.0; 8]);
    }
}
