// elementwise.cu: forward and backward of every quantizer, for f32, f16, bf16.
//
// One template walks the tensor; each quantizer is a functor of functors.cuh
// (shared with mask.cu) holding its parameters and calling the formulas of
// quantize.cuh. LOWBIT_QUANTIZER
// stamps out `<q>_fwd_<dt>` and `<q>_bwd_<dt>` for the three types. Launch
// contract: see lowbit.h.
#include "functors.cuh"
#include "lowbit.h"
#include "quantize.cuh"

namespace {

// One 16-byte access: 4 f32 or 8 f16/bf16.
template <typename T> struct alignas(LOWBIT_VECTOR_BYTES) Pack {
    static constexpr unsigned N = LOWBIT_VECTOR_BYTES / sizeof(T);
    T v[N];
};

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

#define LOWBIT_ELEMENTWISE(name, Q) LOWBIT_QUANTIZER(name, Q)
#include "kernels.def"

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
