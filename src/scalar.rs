//! The scalar definition of every quantizer: forward and gradient of one
//! element, plus the reductions some of them need.
//!
//! This module is the single source of truth. The CPU path maps these
//! functions over slices, the CUDA kernels are the same formulas in C, and the
//! tests compare both against these functions and against larq's own outputs.
//!
//! All arithmetic is `f32`. Half-precision tensors are widened to `f32`,
//! computed here and rounded once on the way out. The order of operations
//! follows TensorFlow's kernels where it changes the rounding, so that `f32`
//! results match larq bit for bit (see each function).
//!
//! Conventions every function here follows:
//! - `sign(±0) = +1`, `heaviside(±0) = 0`.
//! - NaN in gives NaN out in the forward pass.
//! - A clipped estimator's gradient outside its window is `+0.0` (larq selects
//!   with `tf.where`, it does not multiply by a 0/1 mask), and NaN and ±inf lie
//!   outside every window.

/// `sign` as larq's binarizers define it: −1 for x < 0, +1 otherwise
/// (so `sign(-0.0) = +1`), NaN for NaN.
#[inline(always)]
pub fn sign(x: f32) -> f32 {
    if x < 0.0 {
        -1.0
    } else if x.is_nan() {
        x
    } else {
        1.0
    }
}

/// TensorFlow's `tf.sign`: −1, 0 (for ±0) or +1, NaN for NaN. Only the
/// ternarizer uses it; the binarizers map 0 to +1 (see [`sign`]).
#[inline(always)]
fn tf_sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        // ±0 and NaN pass through.
        x
    }
}

/// The straight-through estimator: `dy` where `|x| ≤ clip`, `+0` elsewhere;
/// with no clip (`None`) `dy` everywhere, even at NaN and ±inf.
#[inline(always)]
pub fn ste_grad(x: f32, dy: f32, clip: Option<f32>) -> f32 {
    pass_grad(ste_passes(x, clip), dy)
}

/// Where the straight-through estimator lets the gradient through: `|x| ≤
/// clip`, which NaN and ±inf never are; everywhere when there is no clip.
///
/// The one definition of the window: [`ste_grad`] selects with it, and the
/// 1-bit masks of [`Quantizer::forward_with_mask`](crate::Quantizer::forward_with_mask)
/// store it, so the gradient from a mask is the gradient from `x`.
#[inline(always)]
pub fn ste_passes(x: f32, clip: Option<f32>) -> bool {
    match clip {
        None => true,
        Some(c) => x.abs() <= c,
    }
}

/// The unipolar straight-through estimator (`ste_heaviside(unipolar=true)`):
/// `dy` where `0 ≤ x ≤ clip` (or `x ≥ 0` with no clip), `+0` elsewhere; NaN
/// is outside, `−0` inside.
#[inline(always)]
pub fn ste_unipolar_grad(x: f32, dy: f32, clip: Option<f32>) -> f32 {
    pass_grad(ste_unipolar_passes(x, clip), dy)
}

/// Where the unipolar straight-through estimator lets the gradient through:
/// `0 ≤ x ≤ clip`, or `x ≥ 0` with no clip.
#[inline(always)]
pub fn ste_unipolar_passes(x: f32, clip: Option<f32>) -> bool {
    x >= 0.0
        && match clip {
            None => true,
            Some(c) => x <= c,
        }
}

/// IR-Net's EDE schedule: `t = 10^(−3 + 4·progress)`, i.e. from `Tmin = 1e−3`
/// at `progress = 0` to `Tmax = 10` at 1, evenly in log space. Computed in
/// `f64` and rounded once, so `ede_t(1.0)` is exactly 10.
pub fn ede_t(progress: f32) -> f32 {
    let (log_min, log_max) = (-3.0f64, 1.0f64);
    10f64.powf(log_min + (log_max - log_min) * f64::from(progress)) as f32
}

/// IR-Net's Error Decay Estimator gradient: `dy·k·t·(1 − tanh²(t·x))` with
/// `k = max(1/t, 1)`, so `k·t = max(t, 1)` (taken exactly so). [`tanh`] is the
/// crate's (Eigen's), as in DoReFa. At ±inf the gradient is a zero with `dy`'s
/// sign; NaN gives NaN.
#[inline(always)]
pub fn ede_grad(x: f32, dy: f32, t: f32) -> f32 {
    let kt = if t > 1.0 { t } else { 1.0 };
    let th = tanh(t * x);
    dy * kt * (1.0 - th * th)
}

/// bitorch's progressive sign schedule: the temperature
/// `t = 1 − α^(−β·progress)` with bitorch's default `α = 4`, `β = 10`
/// (`ProgressiveSignConfig`), so `t` runs from 0 at the start of training
/// towards 1, where the forward becomes the sign. In `f64`, as Python
/// computes it, and rounded once.
pub fn progressive_sign_temperature(progress: f32) -> f32 {
    let (alpha, beta) = (4f64, 10f64);
    (1.0 - alpha.powf(-beta * f64::from(progress))) as f32
}

/// What bitorch divides `x` by at temperature `t`: `max(1 − t, 1e−7)`, in
/// `f64` as Python computes it, then rounded to `f32` as PyTorch rounds a
/// Python scalar that divides a float tensor.
pub fn progressive_sign_divisor(temperature: f32) -> f32 {
    (1.0 - f64::from(temperature)).max(1e-7) as f32
}

/// bitorch's ProgressiveSign in training: `hardtanh(x / divisor)`, a ramp of
/// slope `1/divisor` clipped to [−1, 1] that sharpens into the sign as the
/// temperature rises ([`progressive_sign_divisor`]). NaN passes through,
/// `−0` stays `−0` (torch's clamp keeps it). Its gradient is the identity
/// (bitorch's straight-through `backward` returns `dy`), and at inference
/// bitorch uses the plain sign: `ste_sign`.
#[inline(always)]
pub fn progressive_sign(x: f32, divisor: f32) -> f32 {
    // `clamp` passes NaN and −0 through, as torch's hardtanh does.
    (x / divisor).clamp(-1.0, 1.0)
}

/// A masked estimator's gradient once its window is known: `dy` where it
/// passes, `+0` elsewhere (a select, as larq's `tf.where`, so a NaN or
/// infinite `dy` outside the window still gives `+0`).
#[inline(always)]
pub fn pass_grad(passes: bool, dy: f32) -> f32 {
    if passes { dy } else { 0.0 }
}

/// `ste_heaviside` forward: 1 for x > 0, 0 for x ≤ 0 (including −0), NaN for NaN.
#[inline(always)]
pub fn heaviside(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x.is_nan() {
        x
    } else {
        0.0
    }
}

/// `approx_sign` gradient (Bi-Real Net): `(1 − |x|)·2·dy` for `|x| ≤ 1`, else 0.
///
/// larq evaluates `(1 - abs(x)) * 2 * dy` left to right; so does this.
#[inline(always)]
pub fn approx_sign_grad(x: f32, dy: f32) -> f32 {
    let a = x.abs();
    if a <= 1.0 { (1.0 - a) * 2.0 * dy } else { 0.0 }
}

/// `swish_sign` gradient (BNN+):
/// `dy·β·(2 − βx·tanh(βx/2)) / (1 + cosh βx)`.
///
/// Evaluated with one exponential, `e = exp(−|βx|)`: `tanh(|βx|/2) =
/// (1 − e)/(1 + e)` and `1/(1 + cosh βx) = 2e/(1 + e)²`, both even in `x`.
/// That never overflows (larq's `cosh` does, for |βx| > 89, and gives NaN
/// at ±inf where the limit is 0), and [`exp_neg`] is plain arithmetic, so the
/// CPU loop vectorizes and the CUDA kernel computes the same bits.
#[inline(always)]
pub fn swish_sign_grad(x: f32, dy: f32, beta: f32) -> f32 {
    swish_sign_grad_from(swish_sign_grad_factors(x, beta), dy, beta)
}

/// What [`swish_sign_grad`] computes from `x` alone: `2 − |βx|·tanh(|βx|/2)`
/// and `2e/(1 + e)²`. Split out so that the CPU can look them up by bit
/// pattern in half precision instead of evaluating them per element.
#[inline(always)]
pub fn swish_sign_grad_factors(x: f32, beta: f32) -> [f32; 2] {
    let a = (beta * x).abs();
    let e = exp_neg(-a);
    let t = (1.0 - e) / (1.0 + e);
    let s = 1.0 + e;
    [2.0 - a * t, 2.0 * e / (s * s)]
}

/// [`swish_sign_grad`] from its factors.
#[inline(always)]
pub fn swish_sign_grad_from([u, w]: [f32; 2], dy: f32, beta: f32) -> f32 {
    // Written as a select, without an early return, so the loop vectorizes.
    let g = dy * beta * u * w;
    // w = 0 exactly where e = 0 (2e/(1 + e)² ≥ e/2 otherwise): |βx| > 87.3,
    // ±inf included, where the gradient is below 1e-35 and its limit is 0.
    // A NaN x gives w = NaN and so g = NaN.
    if w == 0.0 { 0.0 } else { g }
}

/// `exp(x)` for `x ≤ 0` (Cephes' single-precision method: `x = n·ln 2 + r`,
/// a degree-6 polynomial for `exp(r)`, then `·2^n` through the exponent
/// bits), within 2 ulp of the correctly rounded value; 0 below −87.3 (where
/// the result would be subnormal), and −inf gives 0. Plain arithmetic, the
/// same in Rust and in C, so both give the same bits.
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub fn exp_neg(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for the n that occur here.
    const LN2_HI: f32 = 0.693359375;
    const LN2_LO: f32 = -2.12194440e-4;
    const P: [f32; 6] = [
        1.9875691500e-4,
        1.3981999507e-3,
        8.3334519073e-3,
        4.1665795894e-2,
        1.6666665459e-1,
        5.0000001201e-1,
    ];
    // Round to nearest (ties to even) by the 1.5·2^23 trick; no libm call.
    const ROUND: f32 = 12_582_912.0;
    const LOW: f32 = -87.3;
    // Clamped (NaN passes) so that n stays in [−126, 0] and 2^n is normal.
    let xc = if x < LOW { LOW } else { x };
    let shifted = xc * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = P[0];
    for c in &P[1..] {
        p = p * r + c;
    }
    let y = (p * (r * r) + r) + 1.0;
    // `shifted`'s low mantissa bits hold n itself: 2^n from integer bit
    // operations, which vectorize (a float-to-int cast does not).
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scaled = y * f32::from_bits(n_bits.wrapping_add(127) << 23);
    if x < LOW { 0.0 } else { scaled }
}

/// `ste_tern` forward: `sign(sign(x + Δ) + sign(x − Δ))` with TensorFlow's
/// sign, so `x = ±Δ` maps to ±1, `|x| < Δ` to 0, NaN (in x or Δ) to NaN.
#[inline(always)]
pub fn ternarize(x: f32, threshold: f32) -> f32 {
    if x.is_nan() {
        return own_nan(x);
    }
    tf_sign(tf_sign(x + threshold) + tf_sign(x - threshold))
}

/// A NaN operand's own NaN, quieted as arithmetic quiets it. The formulas
/// that meet a NaN `x` (or `dy`) and a reduced value that is NaN because of
/// it (TWN's threshold, a channel's scale) return this: with two NaN
/// operands, which one an `f32` operation returns depends on the order the
/// compiler gave them, which can differ between two loops compiling the same
/// formula (the masked forward and the plain one gave different NaNs).
#[inline(always)]
fn own_nan(nan: f32) -> f32 {
    nan + nan
}

/// The Ternary Weight Networks threshold, `Δ = 0.7 · mean |x|`, from the sum
/// of `|x|` over the tensor and its element count. A NaN anywhere makes it NaN;
/// an empty or all-zero tensor gives 0.
pub fn twn_threshold(sum_abs: f64, count: usize) -> f32 {
    if count == 0 {
        return 0.0;
    }
    (0.7 * sum_abs / count as f64) as f32
}

/// `magnitude_aware_sign` forward: `scale · sign(x)`, `scale` being its
/// channel's mean `|x|` (see [`mean_abs`]).
#[inline(always)]
pub fn magnitude_aware_sign(x: f32, scale: f32) -> f32 {
    if x.is_nan() {
        return own_nan(x);
    }
    scale * sign(x)
}

/// `magnitude_aware_sign` gradient: the scale is a constant for the gradient,
/// so it is `scale · dy` inside the clip window and `+0` outside.
#[inline(always)]
pub fn magnitude_aware_sign_grad(x: f32, dy: f32, scale: f32, clip: Option<f32>) -> f32 {
    magnitude_aware_sign_pass_grad(ste_passes(x, clip), dy, scale)
}

/// [`magnitude_aware_sign_grad`] once its window is known (from `x` or from
/// a mask): `scale · dy` where it passes, `+0` elsewhere.
#[inline(always)]
pub fn magnitude_aware_sign_pass_grad(passes: bool, dy: f32, scale: f32) -> f32 {
    let g = if dy.is_nan() { own_nan(dy) } else { scale * dy };
    pass_grad(passes, g)
}

/// Mean of `|x|` from its sum and count (Bi-Real's per-channel scale).
pub fn mean_abs(sum_abs: f64, count: usize) -> f32 {
    if count == 0 {
        return 0.0;
    }
    (sum_abs / count as f64) as f32
}

/// `rsign` forward (ReActNet, Liu et al. 2020, arXiv:2003.03488):
/// `sign(x − α)`, `α` being the element's channel threshold.
///
/// `x − α` is one `f32` subtraction (half-precision `x` and `α` are widened
/// first, exactly). Without flush-to-zero a rounded difference is zero only
/// when `x = α`, so the sign is that of the exact difference: `x = α` gives
/// `+0` and so `+1`; NaN in `x` or `α`, or `x = α = ±inf`, gives NaN.
#[inline(always)]
pub fn rsign(x: f32, alpha: f32) -> f32 {
    sign(x - alpha)
}

/// `rsign` gradient with respect to `x`: ApproxSign's at `u = x − α` (the
/// same `f32` difference as [`rsign`]), `(1 − |u|)·2·dy` for `|u| ≤ 1`,
/// else `+0`.
#[inline(always)]
pub fn rsign_grad(x: f32, dy: f32, alpha: f32) -> f32 {
    approx_sign_grad(x - alpha, dy)
}

/// `rsign`'s threshold gradient from its channel's `Σ dx`: `dα = −Σ dx`
/// (`∂(x − α)/∂α = −1`). Written `0 − Σ` so that a channel whose gradients
/// are all zero gets `+0`, as every gradient outside its window does.
pub fn rsign_dalpha(sum_dx: f64) -> f32 {
    (0.0 - sum_dx) as f32
}

/// `n = 2^k − 1`, the number of DoReFa quantization steps, exact in f32 for
/// k ≤ 24.
#[inline(always)]
pub fn dorefa_levels(k_bit: u32) -> f32 {
    ((1u32 << k_bit) - 1) as f32
}

/// DoReFa's k-bit quantizer on [0, 1]: `round_half_even(clip(x, 0, 1)·n) / n`.
#[inline(always)]
pub fn dorefa_quantize(x: f32, n: f32) -> f32 {
    // Written out rather than `clamp`: `tf.clip_by_value` maps −0 to +0
    // (clamp keeps −0). NaN fails both tests and passes through.
    let clipped = if x <= 0.0 { 0.0 } else { x };
    let clipped = if clipped >= 1.0 { 1.0 } else { clipped };
    round_half_even(clipped * n) / n
}

/// Rounds a non-negative `v` to the nearest integer, ties to even, like
/// `f32::round_ties_even` but without a libm call, so the loops over it
/// vectorize. Adding and subtracting 2^23 leaves no fraction bits, and the
/// addition rounds to nearest even; from 2^23 on every f32 is an integer.
#[inline(always)]
fn round_half_even(v: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    if v < TWO_23 { (v + TWO_23) - TWO_23 } else { v }
}

/// DoReFa activations gradient: `dy` where `0 ≤ x ≤ 1`, else `+0`.
#[inline(always)]
pub fn dorefa_activations_grad(x: f32, dy: f32) -> f32 {
    pass_grad(dorefa_activations_passes(x), dy)
}

/// Where DoReFa's activation gradient passes: `0 ≤ x ≤ 1` (−0 included, NaN
/// not). Shared by [`dorefa_activations_grad`] and the 1-bit masks.
#[inline(always)]
pub fn dorefa_activations_passes(x: f32) -> bool {
    (0.0..=1.0).contains(&x)
}

/// DoReFa weights forward: `t = tanh x`, `v = t / (2·max|t|) + 0.5`
/// (0/0 → 0, TensorFlow's `divide_no_nan`), output `2·quantize(v) − 1`.
#[inline(always)]
pub fn dorefa_weights(x: f32, max_abs_tanh: f32, n: f32) -> f32 {
    dorefa_weights_of_tanh(tanh(x), max_abs_tanh, n)
}

/// [`dorefa_weights`] from `t = tanh x`. Where `max|t| > 0` this is
/// non-decreasing in `t` (a division by a positive number, an addition, a
/// clip, a rounding: each monotone) and takes at most `n + 1` values, so
/// the CPU finds where it steps once per call and compares `t` with those
/// points instead of computing it per element.
#[inline(always)]
pub fn dorefa_weights_of_tanh(t: f32, max_abs_tanh: f32, n: f32) -> f32 {
    let denom = 2.0 * max_abs_tanh;
    let v = if denom == 0.0 { 0.0 } else { t / denom } + 0.5;
    2.0 * dorefa_quantize(v, n) - 1.0
}

/// DoReFa weights gradient: `dy · tanh'(x) / max|tanh|`, the max held constant,
/// no clipping; 0 where the max is 0 (`divide_no_nan`).
///
/// Evaluated in TensorFlow's order: the `2q − 1` and `/(2·max)` steps give
/// `dy·2 / (2·max)`, then `TanhGrad` multiplies by `1 − t²`.
#[inline(always)]
pub fn dorefa_weights_grad(x: f32, dy: f32, max_abs_tanh: f32) -> f32 {
    dorefa_weights_grad_from(dorefa_weights_grad_factor(x), dy, max_abs_tanh)
}

/// What [`dorefa_weights_grad`] computes from `x` alone: `1 − tanh²x`, for
/// the CPU to look up by bit pattern in half precision.
#[inline(always)]
pub fn dorefa_weights_grad_factor(x: f32) -> f32 {
    let t = tanh(x);
    1.0 - t * t
}

/// [`dorefa_weights_grad`] from its factor.
#[inline(always)]
pub fn dorefa_weights_grad_from(factor: f32, dy: f32, max_abs_tanh: f32) -> f32 {
    let denom = 2.0 * max_abs_tanh;
    if denom == 0.0 {
        return 0.0;
    }
    (dy * 2.0 / denom) * factor
}

/// Bits per packed word (LCE's `bitpacking_bitwidth`).
pub const WORD_BITS: usize = 32;

/// The bit that stands for `sign(x)` in a packed tensor: 1 where ste_sign
/// gives −1, that is `x < 0`; 0 for +1. So ±0 packs to 0, and so does NaN:
/// NaN is not below 0, and a bit has no third state to hold it.
#[inline(always)]
pub fn sign_bit(x: f32) -> u32 {
    u32::from(x < 0.0)
}

/// Packs up to [`WORD_BITS`] values into one word, LCE's way: bit `j` is
/// [`sign_bit`] of `xs[j]` (least significant bit first), and bits past
/// `xs.len()` are 0. Values past the 32nd are ignored.
#[inline(always)]
pub fn pack_word(xs: &[f32]) -> u32 {
    xs.iter()
        .zip(0..WORD_BITS)
        .fold(0, |word, (&x, j)| word | sign_bit(x) << j)
}

/// The value a packed bit stands for, times its channel's scale: `−scale`
/// for 1, `+scale` for 0 (the scale is 1 when there is none).
#[inline(always)]
pub fn unpack_bit(bit: u32, scale: f32) -> f32 {
    if bit & 1 == 1 { -scale } else { scale }
}

/// Signs that differ between two packed words.
#[inline(always)]
pub fn flips(previous: u32, next: u32) -> u32 {
    (previous ^ next).count_ones()
}

/// One update of larq's `FlipRatio`: `1 − unchanged / size` in `f32`, as
/// larq evaluates it (its metric dtype is `float32`). An empty tensor gives 0
/// where larq divides 0 by 0.
pub fn flip_ratio(flipped: u64, size: u64) -> f32 {
    if size == 0 {
        return 0.0;
    }
    1.0 - (size - flipped) as f32 / size as f32
}

/// `max(|a|, |b|)` for the DoReFa reduction, where a NaN wins (a NaN weight
/// makes the whole tensor NaN, as `tf.reduce_max` does).
#[inline(always)]
pub fn nan_max(a: f32, b: f32) -> f32 {
    // One select (no `f32::max`, which drops NaN), so loops vectorize.
    if (a > b) | a.is_nan() { a } else { b }
}

/// `tanh` as TensorFlow's CPU kernels compute it in `f32`: Eigen's 9/8-degree
/// rational approximation, clamped to ±7.90738964, evaluated without fused
/// multiply-adds.
///
/// DoReFa's weight gradient multiplies by `1 − tanh²x`, which turns a one-ulp
/// difference in `tanh` near |x| ≈ 4 into a relative error of 1e-4; matching
/// larq bit for bit needs larq's `tanh`, not the correctly rounded one.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    // Eigen's constants, digit for digit, so the f32 values are the same.
    #[allow(clippy::excessive_precision)]
    const CLAMP: f32 = 7.90738964080810547;
    // Numerator (odd) and denominator (even) coefficients, highest degree first.
    #[allow(clippy::excessive_precision)]
    const ALPHA: [f32; 4] = [
        1.394553628e-8,
        2.102733560e-5,
        3.520756727e-3,
        1.340216100e-1,
    ];
    #[allow(clippy::excessive_precision)]
    const BETA: [f32; 5] = [
        8.015776984e-7,
        3.326951409e-4,
        2.597254514e-2,
        4.673548340e-1,
        1.0,
    ];
    // Past the clamp the approximation is exactly ±1; NaN passes through.
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let x3 = x2 * x;
    let mut p = ALPHA[0];
    for a in &ALPHA[1..] {
        p = x2 * p + a;
    }
    let mut q = BETA[0];
    for b in &BETA[1..] {
        q = x2 * q + b;
    }
    (x3 * p + x) / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_bits_follow_ste_sign() {
        for x in [
            -2.0f32,
            -1e-30,
            -0.0,
            0.0,
            1e-30,
            3.0,
            f32::NEG_INFINITY,
            f32::INFINITY,
        ] {
            assert_eq!(sign_bit(x) == 1, sign(x) == -1.0, "{x}");
        }
        assert_eq!(sign_bit(f32::NAN), 0);
        assert_eq!(sign_bit(-f32::NAN), 0);
    }

    #[test]
    fn words_fill_from_the_least_significant_bit() {
        assert_eq!(pack_word(&[-1.0]), 1);
        assert_eq!(pack_word(&[1.0, -1.0, 1.0, -1.0]), 0b1010);
        assert_eq!(pack_word(&[-1.0; 32]), u32::MAX);
        assert_eq!(pack_word(&[-1.0; 40]), u32::MAX);
        assert_eq!(pack_word(&[]), 0);
        let mut xs = [1.0f32; 32];
        xs[31] = -1.0;
        assert_eq!(pack_word(&xs), 1 << 31);
        for (j, &x) in xs.iter().enumerate() {
            assert_eq!(unpack_bit(pack_word(&xs) >> j, 1.0), sign(x));
        }
    }

    #[test]
    fn flip_ratio_is_larqs_f32_arithmetic() {
        assert_eq!(flip_ratio(0, 10), 0.0);
        assert_eq!(flip_ratio(10, 10), 1.0);
        assert_eq!(flip_ratio(3, 10), 1.0 - 7.0f32 / 10.0);
        assert_eq!(flip_ratio(0, 0), 0.0);
    }

    #[test]
    fn tanh_clamp_gives_exactly_one() {
        assert_eq!(tanh(7.907_39), 1.0);
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert!(tanh(f32::NAN).is_nan());
        assert_eq!(tanh(0.0), 0.0);
    }

    #[test]
    fn tanh_is_close_to_libm() {
        let mut x = -9.0f32;
        while x < 9.0 {
            assert!((tanh(x) - x.tanh()).abs() <= 4.0 * f32::EPSILON, "x = {x}");
            x += 0.001;
        }
    }

    #[test]
    fn ternarize_edges() {
        assert_eq!(ternarize(0.1, 0.1), 1.0);
        assert_eq!(ternarize(-0.1, 0.1), -1.0);
        assert_eq!(ternarize(0.09, 0.1), 0.0);
        assert_eq!(ternarize(-0.0, 0.1), 0.0);
        assert_eq!(ternarize(0.0, 0.0), 0.0);
        assert!(ternarize(f32::NAN, 0.1).is_nan());
        assert!(ternarize(0.5, f32::NAN).is_nan());
    }

    #[test]
    fn round_half_even_matches_std() {
        let mut v = 0.0f32;
        while v < 70.0 {
            assert_eq!(round_half_even(v), v.round_ties_even(), "{v}");
            v += 0.125;
        }
        for v in [
            8_388_607.5f32,
            8_388_608.0,
            16_777_215.0,
            0.499_999_97,
            2.5,
            3.5,
        ] {
            assert_eq!(round_half_even(v), v.round_ties_even(), "{v}");
        }
        assert!(round_half_even(f32::NAN).is_nan());
    }

    #[test]
    fn dorefa_rounds_half_to_even() {
        assert_eq!(dorefa_quantize(0.5, dorefa_levels(1)), 0.0);
        assert_eq!(dorefa_quantize(0.5, dorefa_levels(2)), 2.0 / 3.0);
        assert_eq!(dorefa_weights(0.0, 0.0, dorefa_levels(1)), -1.0);
        assert_eq!(dorefa_weights(0.0, 0.0, dorefa_levels(2)), 0.333_333_37);
        assert_eq!(dorefa_weights_grad(0.0, 1.0, 0.0), 0.0);
    }

    #[test]
    fn exp_neg_is_within_two_ulp() {
        let mut x = 0.0f32;
        while x > -87.3 {
            let (got, want) = (exp_neg(x), f64::from(x).exp());
            let ulp = f64::from(f32::from_bits((want as f32).to_bits() + 1)) - want.abs();
            assert!(
                (f64::from(got) - want).abs() <= 2.0 * ulp.abs(),
                "exp({x}) = {got}, want {want}"
            );
            x -= 0.0137;
        }
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(-0.0), 1.0);
        assert_eq!(exp_neg(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_neg(-100.0), 0.0);
    }

    #[test]
    fn swish_grad_matches_its_definition() {
        for i in -400..=400 {
            let x = i as f32 * 0.01;
            for beta in [1.0f32, 5.0, 10.0] {
                let bx = f64::from(beta) * f64::from(x);
                let want = f64::from(beta) * (2.0 - bx * (bx / 2.0).tanh()) / (1.0 + bx.cosh());
                let got = f64::from(swish_sign_grad(x, 1.0, beta));
                assert!(
                    (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "x={x} beta={beta}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn rsign_edges() {
        assert_eq!(rsign(0.25, 0.25), 1.0);
        assert_eq!(rsign(-0.0, 0.0), 1.0);
        assert_eq!(rsign(0.2, 0.25), -1.0);
        assert_eq!(rsign(f32::INFINITY, 1e30), 1.0);
        assert!(rsign(f32::INFINITY, f32::INFINITY).is_nan());
        assert!(rsign(0.0, f32::NAN).is_nan());
        assert_eq!(rsign_grad(1.5, 1.0, 1.0), 1.0);
        assert_eq!(rsign_grad(3.0, 1.0, 1.0).to_bits(), 0);
        assert_eq!(rsign_dalpha(0.0).to_bits(), 0);
        assert_eq!(rsign_dalpha(-0.0).to_bits(), 0);
        assert_eq!(rsign_dalpha(2.5), -2.5);
    }

    #[test]
    fn swish_grad_limit_at_infinity() {
        assert_eq!(swish_sign_grad(f32::INFINITY, 1.0, 5.0), 0.0);
        assert_eq!(swish_sign_grad(f32::NEG_INFINITY, 1.0, 5.0), 0.0);
        assert_eq!(swish_sign_grad(1e30, 1.0, 5.0), 0.0);
        assert!(swish_sign_grad(f32::NAN, 1.0, 5.0).is_nan());
        assert_eq!(swish_sign_grad(0.0, 1.0, 5.0), 5.0);
    }
}
