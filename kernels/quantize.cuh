// quantize.cuh: the per-element formulas of src/scalar.rs, ported line by line.
//
// src/scalar.rs is the definition; this file must follow it in operation
// order and constants, digit for digit, so that f32 results match the CPU bit
// for bit. That also needs -fmad=false (no a*b+c contraction into fma, which
// rounds once instead of twice), round-to-nearest division (nvcc's default
// -prec-div=true) and no flush-to-zero (default -ftz=false).
//
// Comparisons are written as in Rust because NaN falls through them the
// same way; fminf/fmaxf would drop NaN where scalar.rs keeps it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define LOWBIT_FN __device__ __forceinline__

// Rust's f32::clamp (tanh's): NaN and -0 pass through.
LOWBIT_FN float lowbit_clamp(float x, float lo, float hi) {
    if (x < lo) x = lo;
    if (x > hi) x = hi;
    return x;
}

// larq's binarizing sign: sign(-0) = +1, NaN stays NaN.
LOWBIT_FN float lowbit_sign(float x) {
    if (x < 0.0f) return -1.0f;
    if (isnan(x)) return x;
    return 1.0f;
}

// tf.sign: +-0 and NaN pass through (only the ternarizer uses it).
LOWBIT_FN float lowbit_tf_sign(float x) {
    if (x > 0.0f) return 1.0f;
    if (x < 0.0f) return -1.0f;
    return x;
}

// Where the straight-through estimator passes: |x| <= clip, which NaN and
// +-inf never are; everywhere without a clip. The one definition of the
// window, shared by the gradient and the 1-bit masks (mask.cu).
LOWBIT_FN bool lowbit_ste_passes(float x, uint32_t has_clip, float clip) {
    return !has_clip || fabsf(x) <= clip;
}

// dy where the gradient passes, +0 elsewhere (a select, not a multiply).
LOWBIT_FN float lowbit_pass_grad(bool passes, float dy) { return passes ? dy : 0.0f; }

// Straight-through estimator; outside the window +0.
LOWBIT_FN float lowbit_ste_grad(float x, float dy, uint32_t has_clip, float clip) {
    return lowbit_pass_grad(lowbit_ste_passes(x, has_clip, clip), dy);
}

// ste_heaviside(unipolar=true): dy for 0 <= x <= clip (x >= 0 without a
// clip); NaN is outside, -0 inside.
LOWBIT_FN bool lowbit_ste_unipolar_passes(float x, uint32_t has_clip, float clip) {
    return x >= 0.0f && (!has_clip || x <= clip);
}

LOWBIT_FN float lowbit_ste_unipolar_grad(float x, float dy, uint32_t has_clip, float clip) {
    return lowbit_pass_grad(lowbit_ste_unipolar_passes(x, has_clip, clip), dy);
}

LOWBIT_FN float lowbit_heaviside(float x) {
    if (x > 0.0f) return 1.0f;
    if (isnan(x)) return x;
    return 0.0f;
}

// (1 - |x|) * 2 * dy, left to right as larq evaluates it.
LOWBIT_FN float lowbit_approx_sign_grad(float x, float dy) {
    float a = fabsf(x);
    return a <= 1.0f ? (1.0f - a) * 2.0f * dy : 0.0f;
}

// exp(x) for x <= 0: Cephes' method, as scalar::exp_neg (0 below -87.3).
LOWBIT_FN float lowbit_exp_neg(float x) {
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const float p0 = 1.9875691500e-4f, p1 = 1.3981999507e-3f, p2 = 8.3334519073e-3f,
                p3 = 4.1665795894e-2f, p4 = 1.6666665459e-1f, p5 = 5.0000001201e-1f;
    const float round = 12582912.0f; // 1.5 * 2^23: round to nearest even
    const float low = -87.3f;
    // Clamped (NaN passes) so that n stays in [-126, 0] and 2^n is normal.
    float xc = x < low ? low : x;
    float shifted = xc * log2e + round;
    float n = shifted - round;
    float r = (xc - n * ln2_hi) - n * ln2_lo;
    float p = p0;
    p = p * r + p1;
    p = p * r + p2;
    p = p * r + p3;
    p = p * r + p4;
    p = p * r + p5;
    float y = (p * (r * r) + r) + 1.0f;
    // shifted's low mantissa bits hold n itself: 2^n from its bits.
    unsigned n_bits = (unsigned)__float_as_int(shifted) - (unsigned)__float_as_int(round);
    float scaled = y * __int_as_float((int)((n_bits + 127u) << 23));
    return x < low ? 0.0f : scaled;
}

// dy * beta * (2 - bx tanh(bx/2)) / (1 + cosh bx) through e = exp(-|bx|),
// as scalar::swish_sign_grad: never overflows, 0 (the limit) at +-inf.
LOWBIT_FN float lowbit_swish_sign_grad(float x, float dy, float beta) {
    float a = fabsf(beta * x);
    float e = lowbit_exp_neg(-a);
    float t = (1.0f - e) / (1.0f + e);
    float s = 1.0f + e;
    float g = dy * beta * (2.0f - a * t) * (2.0f * e / (s * s));
    return e == 0.0f ? 0.0f : g;
}

// A NaN operand's own NaN (scalar.rs's own_nan): where x (or dy) and a
// reduced value are both NaN, the result must not depend on operand order.
LOWBIT_FN float lowbit_own_nan(float nan) { return nan + nan; }

// sign(sign(x + t) + sign(x - t)) with tf.sign: x = +-t maps to +-1.
LOWBIT_FN float lowbit_ternarize(float x, float threshold) {
    if (isnan(x)) return lowbit_own_nan(x);
    return lowbit_tf_sign(lowbit_tf_sign(x + threshold) + lowbit_tf_sign(x - threshold));
}

// 0.7 * mean|x|, in double as the CPU computes it: (0.7 * sum) / count.
LOWBIT_FN float lowbit_twn_threshold(double sum_abs, uint64_t count) {
    if (count == 0) return 0.0f;
    return (float)(0.7 * sum_abs / (double)count);
}

LOWBIT_FN float lowbit_magnitude_aware_sign(float x, float scale) {
    if (isnan(x)) return lowbit_own_nan(x);
    return scale * lowbit_sign(x);
}

// The scale is a constant for the gradient.
LOWBIT_FN float lowbit_magnitude_aware_sign_pass_grad(bool passes, float dy, float scale) {
    return lowbit_pass_grad(passes, isnan(dy) ? lowbit_own_nan(dy) : scale * dy);
}

LOWBIT_FN float lowbit_magnitude_aware_sign_grad(float x, float dy, float scale,
                                                 uint32_t has_clip, float clip) {
    return lowbit_magnitude_aware_sign_pass_grad(lowbit_ste_passes(x, has_clip, clip), dy, scale);
}

LOWBIT_FN float lowbit_mean_abs(double sum_abs, uint64_t count) {
    if (count == 0) return 0.0f;
    return (float)(sum_abs / (double)count);
}

// rsign (ReActNet): sign(x - alpha), one f32 subtraction of the widened
// values. Without flush-to-zero (nvcc's default) the difference is zero only
// at x == alpha, so its sign is the exact one.
LOWBIT_FN float lowbit_rsign(float x, float alpha) { return lowbit_sign(x - alpha); }

// ApproxSign's gradient at u = x - alpha.
LOWBIT_FN float lowbit_rsign_grad(float x, float dy, float alpha) {
    return lowbit_approx_sign_grad(x - alpha, dy);
}

// d(alpha) = -sum(dx), written 0 - sum so that an all-zero sum gives +0.
LOWBIT_FN float lowbit_rsign_dalpha(double sum_dx) { return (float)(0.0 - sum_dx); }

// Round to nearest, ties to even, of a non-negative v (scalar.rs's
// round_half_even): adding 2^23 leaves no fraction bits and rounds to nearest
// even; from 2^23 on every float is an integer. Equal to rintf(v) for v >= 0,
// kept literal so the two files read the same.
LOWBIT_FN float lowbit_round_half_even(float v) {
    const float two_23 = 8388608.0f;
    return v < two_23 ? (v + two_23) - two_23 : v;
}

// round_half_even(clip(x, 0, 1) * n) / n. The clip is written out: like
// tf.clip_by_value it maps -0 to +0; NaN fails both tests and passes through.
LOWBIT_FN float lowbit_dorefa_quantize(float x, float n) {
    float clipped = x <= 0.0f ? 0.0f : x;
    clipped = clipped >= 1.0f ? 1.0f : clipped;
    return lowbit_round_half_even(clipped * n) / n;
}

// 0 <= x <= 1 (-0 included, NaN not): where the activation gradient passes.
LOWBIT_FN bool lowbit_dorefa_activations_passes(float x) { return x >= 0.0f && x <= 1.0f; }

LOWBIT_FN float lowbit_dorefa_activations_grad(float x, float dy) {
    return lowbit_pass_grad(lowbit_dorefa_activations_passes(x), dy);
}

// Eigen's rational tanh, as TensorFlow's CPU kernels compute it in f32. The
// DoReFa weight gradient multiplies by 1 - tanh^2, which magnifies a one-ulp
// tanh difference to 1e-4 relative, so the correctly rounded tanhf won't do.
LOWBIT_FN float lowbit_tanh(float x) {
    const float clamp = 7.90738964080810547f;
    const float a0 = 1.394553628e-8f, a1 = 2.102733560e-5f, a2 = 3.520756727e-3f,
                a3 = 1.340216100e-1f;
    const float b0 = 8.015776984e-7f, b1 = 3.326951409e-4f, b2 = 2.597254514e-2f,
                b3 = 4.673548340e-1f, b4 = 1.0f;
    // Past the clamp the approximation is exactly +-1; NaN passes through.
    x = lowbit_clamp(x, -clamp, clamp);
    float x2 = x * x;
    float x3 = x2 * x;
    float p = a0;
    p = x2 * p + a1;
    p = x2 * p + a2;
    p = x2 * p + a3;
    float q = b0;
    q = x2 * q + b1;
    q = x2 * q + b2;
    q = x2 * q + b3;
    q = x2 * q + b4;
    return (x3 * p + x) / q;
}

// 2 * quantize(tanh x / (2 max|tanh|) + 0.5) - 1, with 0/0 -> 0
// (TensorFlow's divide_no_nan).
LOWBIT_FN float lowbit_dorefa_weights(float x, float max_abs_tanh, float n) {
    float t = lowbit_tanh(x);
    float denom = 2.0f * max_abs_tanh;
    float v = (denom == 0.0f ? 0.0f : t / denom) + 0.5f;
    return 2.0f * lowbit_dorefa_quantize(v, n) - 1.0f;
}

// In TensorFlow's order: dy * 2 / (2 max), then TanhGrad's * (1 - t^2).
LOWBIT_FN float lowbit_dorefa_weights_grad(float x, float dy, float max_abs_tanh) {
    float denom = 2.0f * max_abs_tanh;
    if (denom == 0.0f) return 0.0f;
    float t = lowbit_tanh(x);
    return (dy * 2.0f / denom) * (1.0f - t * t);
}

// The packed bit of lowbit_sign(x): 1 for -1, that is x < 0; +-0 and NaN give 0.
LOWBIT_FN uint32_t lowbit_sign_bit(float x) { return x < 0.0f ? 1u : 0u; }

// The value of a packed bit (its lowest bit) times its channel's scale.
// The sign flip is a bit operation: neg.f32 of a NaN gives an unspecified
// NaN (PTX ISA), where the CPU's negation keeps the payload.
LOWBIT_FN float lowbit_unpack_bit(uint32_t bit, float scale) {
    return __uint_as_float(__float_as_uint(scale) ^ ((bit & 1u) << 31));
}

// Signs that differ between two packed words.
LOWBIT_FN uint32_t lowbit_flips(uint32_t previous, uint32_t next) {
    return (uint32_t)__popc(previous ^ next);
}

// max where a NaN wins: one select, as scalar::nan_max.
// IR-Net's EDE: dy * k*t * (1 - tanh^2(t*x)), k*t = max(t, 1).
LOWBIT_FN float lowbit_ede_grad(float x, float dy, float t) {
    float kt = t > 1.0f ? t : 1.0f;
    float th = lowbit_tanh(t * x);
    return dy * kt * (1.0f - th * th);
}

// bitorch's ProgressiveSign in training: hardtanh(x / divisor), NaN passing
// through and -0 kept, as src/scalar.rs's progressive_sign. An IEEE division
// (NVRTC's default -prec-div=true), not an approximation.
LOWBIT_FN float lowbit_progressive_sign(float x, float divisor) {
    float v = x / divisor;
    if (v < -1.0f) return -1.0f;
    if (v > 1.0f) return 1.0f;
    return v;
}

LOWBIT_FN float lowbit_nan_max(float a, float b) { return (a > b || isnan(a)) ? a : b; }

// Element types: widened to f32 once on load, rounded to nearest even once on
// store, as the CPU's half crate does.
LOWBIT_FN float lowbit_to_float(float v) { return v; }
LOWBIT_FN float lowbit_to_float(__half v) { return __half2float(v); }
LOWBIT_FN float lowbit_to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> LOWBIT_FN T lowbit_from_float(float v);
template <> LOWBIT_FN float lowbit_from_float<float>(float v) { return v; }
template <> LOWBIT_FN __half lowbit_from_float<__half>(float v) { return __float2half_rn(v); }
template <> LOWBIT_FN __nv_bfloat16 lowbit_from_float<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}
