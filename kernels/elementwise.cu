// elementwise.cu: forward and backward of every quantizer, for f32, f16, bf16.
//
// One template walks the tensor; each quantizer is a small struct holding its
// parameters and calling the formulas of quantize.cuh. LOWBIT_QUANTIZER
// stamps out `<q>_fwd_<dt>` and `<q>_bwd_<dt>` for the three types. Launch
// contract: see lowbit.h.
#include "lowbit.h"
#include "quantize.cuh"

namespace {

// One 16-byte access: 4 f32 or 8 f16/bf16.
template <typename T> struct alignas(LOWBIT_VECTOR_BYTES) Pack {
    static constexpr unsigned N = LOWBIT_VECTOR_BYTES / sizeof(T);
    T v[N];
};

// Which per-element scale a quantizer reads: none, its channel (i % n, the
// last axis) or its row (i / n, the first axis).
enum class Index { None, Channel, Row };

// The scale index of consecutive elements from i on, with one 64-bit
// division to start rather than one per element.
template <Index I> struct Cursor {
    uint64_t n, row, col;
    LOWBIT_FN Cursor(uint64_t i, uint64_t n_) : n(n_), row(0), col(0) {
        if (I != Index::None) {
            row = i / n;
            col = i - row * n;
        }
    }
    LOWBIT_FN uint64_t index() const { return I == Index::Channel ? col : row; }
    LOWBIT_FN void next() {
        if (I != Index::None && ++col == n) {
            col = 0;
            ++row;
        }
    }
};

// Elements from p up to the next 16-byte boundary.
template <typename T> LOWBIT_FN uint64_t head_len(const T *p) {
    constexpr uint64_t n = Pack<T>::N;
    return (n - ((uintptr_t)p / sizeof(T)) % n) % n;
}

// Computes out[i] = fwd(x[i]) (or bwd(x[i], dy[i])) for every i < len.
//
// Vector accesses need x, dy and out at the same offset from a 16-byte
// boundary; then a scalar head reaches the boundary, vectors cover the body
// and a scalar tail the rest. Otherwise (offsets differ) every element goes
// the scalar way: slower, same results, since each element's value depends
// only on its own inputs and index.
// `n` is the channel count or the row length, as Q::index asks.
template <typename T, bool Bwd, typename Q>
__device__ void map(const Q q, uint64_t len, uint64_t n, const T *x, const T *dy, T *out) {
    constexpr unsigned N = Pack<T>::N;
    const uint64_t first = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;

    uint64_t head = head_len(x);
    bool aligned = head == head_len(out) && (!Bwd || head == head_len(dy));
    if (!aligned || head > len) head = len;
    const uint64_t vectors = (len - head) / N;
    const uint64_t tail = head + vectors * N;

    for (uint64_t v = first; v < vectors; v += stride) {
        const uint64_t i = head + v * N;
        const Pack<T> xs = *reinterpret_cast<const Pack<T> *>(x + i);
        Pack<T> ds, ys;
        if (Bwd) ds = *reinterpret_cast<const Pack<T> *>(dy + i);
        Cursor<Q::index> c(i, n);
#pragma unroll
        for (unsigned j = 0; j < N; ++j) {
            const float xf = lowbit_to_float(xs.v[j]);
            const uint64_t k = c.index();
            const float r = Bwd ? q.bwd(xf, lowbit_to_float(ds.v[j]), k) : q.fwd(xf, k);
            ys.v[j] = lowbit_from_float<T>(r);
            c.next();
        }
        *reinterpret_cast<Pack<T> *>(out + i) = ys;
    }

    // Head and tail as one index range: s < head is the head, the rest the tail.
    const uint64_t scalars = head + (len - tail);
    for (uint64_t s = first; s < scalars; s += stride) {
        const uint64_t i = s < head ? s : tail + (s - head);
        const uint64_t c = Cursor<Q::index>(i, n).index();
        const float xf = lowbit_to_float(x[i]);
        const float r = Bwd ? q.bwd(xf, lowbit_to_float(dy[i]), c) : q.fwd(xf, c);
        out[i] = lowbit_from_float<T>(r);
    }
}

// The quantizers. fwd/bwd take the element's scale index, which only the
// scaled ones read (index tells map() which index to track).

struct SteSign {
    static constexpr Index index = Index::None;
    uint32_t has_clip;
    float clip;
    LOWBIT_FN explicit SteSign(const LowbitElementwise &p) : has_clip(p.has_clip), clip(p.clip) {}
    LOWBIT_FN float fwd(float x, uint64_t) const { return lowbit_sign(x); }
    LOWBIT_FN float bwd(float x, float dy, uint64_t) const {
        return lowbit_ste_grad(x, dy, has_clip, clip);
    }
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
};

struct Ede {
    static constexpr Index index = Index::None;
    float t;
    LOWBIT_FN explicit Ede(const LowbitElementwise &p) : t(p.ede_t) {}
    LOWBIT_FN float fwd(float x, uint64_t) const { return lowbit_sign(x); }
    LOWBIT_FN float bwd(float x, float dy, uint64_t) const { return lowbit_ede_grad(x, dy, t); }
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
};

struct DorefaActivations {
    static constexpr Index index = Index::None;
    float levels;
    LOWBIT_FN explicit DorefaActivations(const LowbitElementwise &p) : levels(p.levels) {}
    LOWBIT_FN float fwd(float x, uint64_t) const { return lowbit_dorefa_quantize(x, levels); }
    LOWBIT_FN float bwd(float x, float dy, uint64_t) const {
        return lowbit_dorefa_activations_grad(x, dy);
    }
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

// What Cursor divides by: the channel count or the row length.
template <typename Q> LOWBIT_FN uint64_t index_size(const LowbitElementwise &p) {
    return Q::index == Index::Row ? p.inner : p.channels;
}

// rsign: one threshold per channel, in the tensor's type, read where it
// lives (the caller's buffer) rather than through LowbitElementwise.
template <typename T> struct RSign {
    static constexpr Index index = Index::Channel;
    const T *alpha;
    LOWBIT_FN float fwd(float x, uint64_t c) const {
        return lowbit_rsign(x, lowbit_to_float(alpha[c]));
    }
    LOWBIT_FN float bwd(float x, float dy, uint64_t c) const {
        return lowbit_rsign_grad(x, dy, lowbit_to_float(alpha[c]));
    }
};

} // namespace

#define LOWBIT_KERNELS(name, Q, T, dt)                                                        \
    extern "C" __global__ void __launch_bounds__(LOWBIT_THREADS)                              \
        name##_fwd_##dt(LowbitElementwise p, const T *x, T *y) {                              \
        map<T, false>(Q(p), p.len, index_size<Q>(p), x, (const T *)nullptr, y);               \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(LOWBIT_THREADS)                              \
        name##_bwd_##dt(LowbitElementwise p, const T *x, const T *dy, T *dx) {                \
        map<T, true>(Q(p), p.len, index_size<Q>(p), x, dy, dx);                               \
    }

#define LOWBIT_QUANTIZER(name, Q)                                                             \
    LOWBIT_KERNELS(name, Q, float, f32)                                                       \
    LOWBIT_KERNELS(name, Q, __half, f16)                                                      \
    LOWBIT_KERNELS(name, Q, __nv_bfloat16, bf16)

LOWBIT_QUANTIZER(ste_sign, SteSign)
LOWBIT_QUANTIZER(approx_sign, ApproxSign)
LOWBIT_QUANTIZER(swish_sign, SwishSign)
LOWBIT_QUANTIZER(ste_heaviside, SteHeaviside)
LOWBIT_QUANTIZER(magnitude_aware_sign, MagnitudeAwareSign)
LOWBIT_QUANTIZER(ste_tern, SteTern)
LOWBIT_QUANTIZER(dorefa_activations, DorefaActivations)
LOWBIT_QUANTIZER(dorefa_weights, DorefaWeights)
LOWBIT_QUANTIZER(ede, Ede)
LOWBIT_QUANTIZER(ste_sign_scaled, RowScaled<SteSign>)
LOWBIT_QUANTIZER(approx_sign_scaled, RowScaled<ApproxSign>)
LOWBIT_QUANTIZER(swish_sign_scaled, RowScaled<SwishSign>)

// rsign's kernels take alpha after x (lowbit.h); p.len and p.channels only.
#define LOWBIT_RSIGN_KERNELS(T, dt)                                                           \
    extern "C" __global__ void __launch_bounds__(LOWBIT_THREADS)                              \
        rsign_fwd_##dt(LowbitElementwise p, const T *x, const T *alpha, T *y) {               \
        map<T, false>(RSign<T>{alpha}, p.len, p.channels, x, (const T *)nullptr, y);          \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(LOWBIT_THREADS) rsign_bwd_##dt(              \
        LowbitElementwise p, const T *x, const T *alpha, const T *dy, T *dx) {                \
        map<T, true>(RSign<T>{alpha}, p.len, p.channels, x, dy, dx);                          \
    }

LOWBIT_RSIGN_KERNELS(float, f32)
LOWBIT_RSIGN_KERNELS(__half, f16)
LOWBIT_RSIGN_KERNELS(__nv_bfloat16, bf16)
