// mask.cu: forward passes that also save a 1-bit mask of where the gradient
// passes, and the backward pass from that mask alone, for f32, f16, bf16.
//
// The bit is the predicate the gradient from x selects with (the functors'
// passes(), from functors.cuh, whose gradients elementwise.cu runs), so the
// gradient from the mask has the gradient from x's bits. Element i is bit
// i % 32 of word i / 32.
//
// Forward: one warp makes one mask word per step. Lane j handles element
// 32w + j and __ballot_sync gathers the 32 predicates into the word, which
// lane 0 stores: loads and stores stay coalesced, no other thread writes the
// word (no atomics), and lanes past len vote 0, which zeroes the last word's
// trailing bits. Backward: one element per thread, each reading its word
// (the warp's 32 lanes read the same one). Launch contract: see lowbit.h.
#include "functors.cuh"
#include "lowbit.h"
#include "quantize.cuh"

static_assert(LOWBIT_THREADS % 32 == 0, "the mask kernels need whole warps");
static_assert(LOWBIT_MASK_BITS == 32, "one mask word per warp");

namespace {

constexpr unsigned kFullWarp = 0xffffffffu;

// y[i] = fwd(x[i]) and mask word w = the warp's ballot of passes(x[i]).
template <typename T, typename Q>
__device__ void forward(const Q q, uint64_t len, uint64_t channels, const T *x, T *y,
                        uint32_t *mask) {
    const unsigned lane = threadIdx.x % 32;
    const uint64_t warp = ((uint64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const uint64_t warps = (uint64_t)gridDim.x * blockDim.x / 32;
    const uint64_t words = (len + 31) / 32;
    // w is the same in every lane, so the whole warp reaches each ballot.
    for (uint64_t w = warp; w < words; w += warps) {
        const uint64_t i = w * 32 + lane;
        bool passes = false;
        if (i < len) {
            const float xf = lowbit_to_float(x[i]);
            y[i] = lowbit_from_float<T>(q.fwd(xf, Q::index == Index::Channel ? i % channels : 0));
            passes = q.passes(xf);
        }
        const uint32_t word = __ballot_sync(kFullWarp, passes);
        if (lane == 0) mask[w] = word;
    }
}

// dx[i] = dy[i] (times its channel's saved scale) where bit i is set, else +0.
template <typename T, bool PerChannel>
__device__ void backward(uint64_t len, uint64_t channels, const uint32_t *mask, const T *scale,
                         const T *dy, T *dx) {
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride) {
        const bool passes = (mask[i / 32] >> (i % 32)) & 1u;
        const float g = lowbit_to_float(dy[i]);
        const float r = PerChannel ? lowbit_magnitude_aware_sign_pass_grad(
                                         passes, g, lowbit_to_float(scale[i % channels]))
                                   : lowbit_pass_grad(passes, g);
        dx[i] = lowbit_from_float<T>(r);
    }
}

} // namespace

#define LOWBIT_MASK_FORWARD(name, Q, T, dt)                                                   \
    extern "C" __global__ void __launch_bounds__(LOWBIT_THREADS)                              \
        name##_fwd_mask_##dt(LowbitElementwise p, const T *x, T *y, uint32_t *mask, T *scale) { \
        const Q q(p);                                                                         \
        forward<T>(q, p.len, p.channels, x, y, mask);                                         \
        /* The caller keeps the scale for the backward pass. Exact: the                       \
         * reduction rounded it through T already. */                                         \
        if (Q::index == Index::Channel) {                                                                 \
            const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;                         \
            for (uint64_t c = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; c < p.channels; \
                 c += stride)                                                                 \
                scale[c] = lowbit_from_float<T>(p.reduced[c]);                                \
        }                                                                                     \
    }

#define LOWBIT_MASK_KERNELS(T, dt)                                                            \
    extern "C" __global__ void __launch_bounds__(LOWBIT_THREADS) pass_bwd_mask_##dt(          \
        LowbitElementwise p, const uint32_t *mask, const T *scale, const T *dy, T *dx) {      \
        backward<T, false>(p.len, p.channels, mask, scale, dy, dx);                           \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(LOWBIT_THREADS)                              \
        magnitude_aware_sign_bwd_mask_##dt(LowbitElementwise p, const uint32_t *mask,         \
                                           const T *scale, const T *dy, T *dx) {              \
        backward<T, true>(p.len, p.channels, mask, scale, dy, dx);                            \
    }

LOWBIT_MASK_KERNELS(float, f32)
LOWBIT_MASK_KERNELS(__half, f16)
LOWBIT_MASK_KERNELS(__nv_bfloat16, bf16)

#define LOWBIT_MASKED(name, Q)                                                                \
    LOWBIT_MASK_FORWARD(name, Q, float, f32)                                                  \
    LOWBIT_MASK_FORWARD(name, Q, __half, f16)                                                 \
    LOWBIT_MASK_FORWARD(name, Q, __nv_bfloat16, bf16)
#include "kernels.def"

// noop's mask: every one of the len bits set, the trailing bits 0. Its y and
// dx are copies, as in its unmasked passes.
extern "C" __global__ void __launch_bounds__(LOWBIT_THREADS)
    all_pass_mask(LowbitElementwise p, uint32_t *mask) {
    const uint64_t words = (p.len + 31) / 32;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t w = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; w < words; w += stride) {
        const uint64_t left = p.len - w * 32;
        mask[w] = left >= 32 ? 0xffffffffu : (1u << left) - 1u;
    }
}
