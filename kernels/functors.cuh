// functors.cuh: one functor per quantizer, the C form of src/op.rs's, read by
// elementwise.cu (fwd, bwd) and mask.cu (fwd, passes). Each calls the formulas
// of quantize.cuh with the parameters of LowbitElementwise.
#pragma once

#include "lowbit.h"
#include "quantize.cuh"

namespace {

// Which per-element scale a quantizer reads: none, its channel (i % n, the
// last axis) or its row (i / n, the first axis).
enum class Index { None, Channel, Row };

// The quantizers: fwd(x, k) and bwd(x, dy, k), k the element's scale index,
// which only the scaled ones read (index says which index to track), and,
// for those that save a mask, passes(x), the window their gradient selects
// with.

struct SteSign {
    static constexpr Index index = Index::None;
    uint32_t has_clip;
    float clip;
    LOWBIT_FN explicit SteSign(const LowbitElementwise &p) : has_clip(p.has_clip), clip(p.clip) {}
    LOWBIT_FN float fwd(float x, uint64_t) const { return lowbit_sign(x); }
    LOWBIT_FN float bwd(float x, float dy, uint64_t) const {
        return lowbit_ste_grad(x, dy, has_clip, clip);
    }
    LOWBIT_FN bool passes(float x) const { return lowbit_ste_passes(x, has_clip, clip); }
};

struct ApproxSign {
    static constexpr Index index = Index::None;
    LOWBIT_FN explicit ApproxSign(const LowbitElementwise &) {}
    LOWBIT_FN float fwd(float x, uint64_t) const { return lowbit_sign(x); }
    LOWBIT_FN float bwd(float x, float dy, uint64_t) const { return lowbit_approx_sign_grad(x, dy); }
};

struct SwishSign {
    static constexpr Index index = Index::None;
    float beta;
    LOWBIT_FN explicit SwishSign(const LowbitElementwise &p) : beta(p.beta) {}
    LOWBIT_FN float fwd(float x, uint64_t) const { return lowbit_sign(x); }
    LOWBIT_FN float bwd(float x, float dy, uint64_t) const {
        return lowbit_swish_sign_grad(x, dy, beta);
    }
};

struct SteHeaviside {
    static constexpr Index index = Index::None;
    uint32_t has_clip;
    float clip;
    uint32_t unipolar;
    LOWBIT_FN explicit SteHeaviside(const LowbitElementwise &p)
        : has_clip(p.has_clip), clip(p.clip), unipolar(p.unipolar) {}
    LOWBIT_FN float fwd(float x, uint64_t) const { return lowbit_heaviside(x); }
    LOWBIT_FN float bwd(float x, float dy, uint64_t) const {
        return unipolar ? lowbit_ste_unipolar_grad(x, dy, has_clip, clip)
                        : lowbit_ste_grad(x, dy, has_clip, clip);
    }
    LOWBIT_FN bool passes(float x) const {
        return unipolar ? lowbit_ste_unipolar_passes(x, has_clip, clip)
                        : lowbit_ste_passes(x, has_clip, clip);
    }
};

struct Ede {
    static constexpr Index index = Index::None;
    float t;
    LOWBIT_FN explicit Ede(const LowbitElementwise &p) : t(p.ede_t) {}
    LOWBIT_FN float fwd(float x, uint64_t) const { return lowbit_sign(x); }
    LOWBIT_FN float bwd(float x, float dy, uint64_t) const { return lowbit_ede_grad(x, dy, t); }
};

// Its gradient, the identity, is planned as a copy of dy; bwd is here for the
// template, and for the emulator's comparison.
struct ProgressiveSign {
    static constexpr Index index = Index::None;
    float divisor;
    LOWBIT_FN explicit ProgressiveSign(const LowbitElementwise &p) : divisor(p.divisor) {}
    LOWBIT_FN float fwd(float x, uint64_t) const { return lowbit_progressive_sign(x, divisor); }
    LOWBIT_FN float bwd(float, float dy, uint64_t) const { return dy; }
};

// A sign quantizer times XNOR-Net's per-row scale: y = s_r * sign(x), and
// Q's gradient of s_r * dy (s_r held constant), as in src/cpu.
template <typename Q> struct RowScaled {
    static constexpr Index index = Index::Row;
    Q q;
    const float *scales;
    LOWBIT_FN explicit RowScaled(const LowbitElementwise &p) : q(p), scales(p.reduced) {}
    LOWBIT_FN float fwd(float x, uint64_t r) const {
        return lowbit_magnitude_aware_sign(x, scales[r]);
    }
    LOWBIT_FN float bwd(float x, float dy, uint64_t r) const { return q.bwd(x, scales[r] * dy, 0); }
};

struct MagnitudeAwareSign {
    static constexpr Index index = Index::Channel;
    uint32_t has_clip;
    float clip;
    const float *scales;
    LOWBIT_FN explicit MagnitudeAwareSign(const LowbitElementwise &p)
        : has_clip(p.has_clip), clip(p.clip), scales(p.reduced) {}
    LOWBIT_FN float fwd(float x, uint64_t c) const {
        return lowbit_magnitude_aware_sign(x, scales[c]);
    }
    LOWBIT_FN float bwd(float x, float dy, uint64_t c) const {
        return lowbit_magnitude_aware_sign_grad(x, dy, scales[c], has_clip, clip);
    }
    LOWBIT_FN bool passes(float x) const { return lowbit_ste_passes(x, has_clip, clip); }
};

struct SteTern {
    static constexpr Index index = Index::None;
    uint32_t has_clip;
    float clip;
    float threshold;
    // TWN's threshold comes from the device reduction, a fixed one from the host.
    LOWBIT_FN explicit SteTern(const LowbitElementwise &p)
        : has_clip(p.has_clip), clip(p.clip), threshold(p.reduced ? p.reduced[0] : p.threshold) {}
    LOWBIT_FN float fwd(float x, uint64_t) const { return lowbit_ternarize(x, threshold); }
    LOWBIT_FN float bwd(float x, float dy, uint64_t) const {
        return lowbit_ste_grad(x, dy, has_clip, clip);
    }
    LOWBIT_FN bool passes(float x) const { return lowbit_ste_passes(x, has_clip, clip); }
};

struct DorefaActivations {
    static constexpr Index index = Index::None;
    float levels;
    LOWBIT_FN explicit DorefaActivations(const LowbitElementwise &p) : levels(p.levels) {}
    LOWBIT_FN float fwd(float x, uint64_t) const { return lowbit_dorefa_quantize(x, levels); }
    LOWBIT_FN float bwd(float x, float dy, uint64_t) const {
        return lowbit_dorefa_activations_grad(x, dy);
    }
    LOWBIT_FN bool passes(float x) const { return lowbit_dorefa_activations_passes(x); }
};

struct DorefaWeights {
    static constexpr Index index = Index::None;
    float levels;
    float max_abs_tanh;
    LOWBIT_FN explicit DorefaWeights(const LowbitElementwise &p)
        : levels(p.levels), max_abs_tanh(p.reduced[0]) {}
    LOWBIT_FN float fwd(float x, uint64_t) const {
        return lowbit_dorefa_weights(x, max_abs_tanh, levels);
    }
    LOWBIT_FN float bwd(float x, float dy, uint64_t) const {
        return lowbit_dorefa_weights_grad(x, dy, max_abs_tanh);
    }
};

} // namespace
