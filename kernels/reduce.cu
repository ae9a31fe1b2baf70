// reduce.cu: the reductions some quantizers need before their elementwise pass:
// TWN's sum|x|, DoReFa's max|tanh x|, magnitude_aware_sign's per-channel mean|x|,
// XNOR-Net's per-row mean|x|; and the one rsign needs after it,
// d(alpha) = -(per-channel sum of dx).
//
// Deterministic by construction: a fixed grid (LOWBIT_REDUCE_BLOCKS x
// LOWBIT_REDUCE_THREADS) where thread t always owns the same elements and
// adds them in index order, a fixed shared-memory tree per block, partials
// written to scratch, and a finalize kernel that combines them in a fixed
// order. No float atomics, nothing that depends on the device. Sums of |x|
// are in double, as on the CPU. Launch contract: see lowbit.h.
#include "lowbit.h"
#include "quantize.cuh"

namespace {

constexpr uint64_t kGridThreads = (uint64_t)LOWBIT_REDUCE_BLOCKS * LOWBIT_REDUCE_THREADS;
static_assert((LOWBIT_REDUCE_THREADS & (LOWBIT_REDUCE_THREADS - 1)) == 0,
              "block_reduce halves the block: LOWBIT_REDUCE_THREADS must be a power of two");

// The summation order is tied to the launch shape: refuse any other shape
// rather than return a silently different (or partial) result.
LOWBIT_FN void require_shape(unsigned blocks) {
    if (blockDim.x != LOWBIT_REDUCE_THREADS || blockDim.y != 1 || blockDim.z != 1 ||
        (blocks != 0 && gridDim.x != blocks))
        __trap();
}

struct Add {
    LOWBIT_FN double operator()(double a, double b) const { return a + b; }
};
struct NanMax {
    LOWBIT_FN float operator()(float a, float b) const { return lowbit_nan_max(a, b); }
};
struct AddAbs {
    LOWBIT_FN double operator()(double acc, float v) const { return acc + (double)fabsf(v); }
};
struct AddValue {
    LOWBIT_FN double operator()(double acc, float v) const { return acc + (double)v; }
};
struct MaxAbsTanh {
    LOWBIT_FN float operator()(float acc, float v) const {
        return lowbit_nan_max(acc, fabsf(lowbit_tanh(v)));
    }
};

// Folds x[i], x[i + stride], ... (below len) into acc in index order. Eight
// loads are issued before their adds so that several are in flight per
// thread; the order of the adds is that of the plain loop, so are the bits.
template <typename T, typename Acc, typename F>
LOWBIT_FN Acc fold_strided(const T *x, uint64_t i, uint64_t len, uint64_t stride, Acc acc, F f) {
    constexpr int unroll = 8;
    const uint64_t span = (unroll - 1) * stride; // the batch's last load is at i + span
    for (; len > span && i < len - span; i += unroll * stride) {
        float v[unroll];
#pragma unroll
        for (int u = 0; u < unroll; ++u) v[u] = lowbit_to_float(x[i + u * stride]);
#pragma unroll
        for (int u = 0; u < unroll; ++u) acc = f(acc, v[u]);
    }
    for (; i < len; i += stride) acc = f(acc, lowbit_to_float(x[i]));
    return acc;
}

// Fixed-order tree over the block's LOWBIT_REDUCE_THREADS values; the result
// is valid in thread 0. Block-uniform control flow only (it syncs).
template <typename Acc, typename Op> LOWBIT_FN Acc block_reduce(Acc v, Op op) {
    __shared__ Acc buf[LOWBIT_REDUCE_THREADS];
    const unsigned t = threadIdx.x;
    __syncthreads(); // a previous call's buf[0] may still be in use
    buf[t] = v;
    __syncthreads();
    for (unsigned s = LOWBIT_REDUCE_THREADS / 2; s > 0; s /= 2) {
        if (t < s) buf[t] = op(buf[t], buf[t + s]);
        __syncthreads();
    }
    return buf[0];
}

template <typename T, typename Acc, typename F, typename Op>
LOWBIT_FN void partial(const LowbitReduce &p, const T *x, Acc *partials, Acc zero, F f, Op op) {
    require_shape(LOWBIT_REDUCE_BLOCKS);
    const uint64_t first = (uint64_t)blockIdx.x * LOWBIT_REDUCE_THREADS + threadIdx.x;
    const Acc v = block_reduce(fold_strided(x, first, p.len, kGridThreads, zero, f), op);
    if (threadIdx.x == 0) partials[blockIdx.x] = v;
}

// Combines the LOWBIT_REDUCE_BLOCKS partials of a whole-tensor reduction.
template <typename Acc, typename Op>
LOWBIT_FN Acc combine(const Acc *partials, Acc zero, Op op) {
    require_shape(1);
    Acc v = zero;
    for (unsigned b = threadIdx.x; b < LOWBIT_REDUCE_BLOCKS; b += LOWBIT_REDUCE_THREADS)
        v = op(v, partials[b]);
    return block_reduce(v, op);
}

// Per-channel sums of f(x). Item k = g * channels + c sums x[k], x[k + items],
// ...: rows g, g + groups, ... of channel c. Consecutive threads own
// consecutive items, hence consecutive addresses, for any channel count.
template <typename T, typename F>
LOWBIT_FN void channel_partial(const LowbitReduce &p, const T *x, double *partials, F f) {
    require_shape(LOWBIT_REDUCE_BLOCKS);
    const uint64_t items = LOWBIT_CHANNEL_SCRATCH(p.rows, p.channels);
    for (uint64_t k = (uint64_t)blockIdx.x * LOWBIT_REDUCE_THREADS + threadIdx.x; k < items;
         k += kGridThreads)
        partials[k] = fold_strided(x, k, p.len, items, 0.0, f);
}

// scales[r] = mean|x| of row r (XNOR-Net's first-axis scale). A block sums a
// row with a fixed stride and tree, so the bits depend on the row alone, not
// on the grid. Rows are block-uniform, as block_reduce needs.
template <typename T>
LOWBIT_FN void row_mean(const LowbitReduce &p, const T *x, float *scales) {
    require_shape(0);
    const uint64_t inner = p.rows == 0 ? 0 : p.len / p.rows;
    for (uint64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const double sum = block_reduce(
            fold_strided(x + r * inner, threadIdx.x, inner, LOWBIT_REDUCE_THREADS, 0.0, AddAbs()),
            Add());
        if (threadIdx.x == 0) scales[r] = lowbit_mean_abs(sum, inner);
    }
}

// Calls store(c, sum) with each channel's sum over its groups' partials.
// Few groups (wide channels): one thread per channel, in group order. Many
// groups (few channels, many rows): one block per channel, thread t adding
// groups t, t + LOWBIT_REDUCE_THREADS, ... in order, then the fixed tree.
// Which way is a function of (rows, channels) only, and neither depends on
// the grid. src/cpu/rsign.rs repeats this order exactly.
template <typename Store>
LOWBIT_FN void channel_finalize(const LowbitReduce &p, const double *partials, Store store) {
    require_shape(0);
    const uint64_t groups = LOWBIT_CHANNEL_GROUPS(p.rows, p.channels);
    if (groups < LOWBIT_CHANNEL_TREE_GROUPS) {
        const uint64_t stride = (uint64_t)gridDim.x * LOWBIT_REDUCE_THREADS;
        for (uint64_t c = (uint64_t)blockIdx.x * LOWBIT_REDUCE_THREADS + threadIdx.x;
             c < p.channels; c += stride) {
            double sum = 0.0;
            for (uint64_t g = 0; g < groups; ++g) sum += partials[g * p.channels + c];
            store(c, sum);
        }
    } else {
        for (uint64_t c = blockIdx.x; c < p.channels; c += gridDim.x) {
            double sum = 0.0;
            for (uint64_t g = threadIdx.x; g < groups; g += LOWBIT_REDUCE_THREADS)
                sum += partials[g * p.channels + c];
            sum = block_reduce(sum, Add());
            if (threadIdx.x == 0) store(c, sum);
        }
    }
}

// Rounded through T: larq holds the scale in the tensor's dtype, and a
// masked forward hands it to the caller in that type.
template <typename T> struct StoreMeanAbs {
    float *scales;
    uint64_t rows;
    LOWBIT_FN void operator()(uint64_t c, double sum) const {
        scales[c] = lowbit_to_float(lowbit_from_float<T>(lowbit_mean_abs(sum, rows)));
    }
};

template <typename T> struct StoreDalpha {
    T *dalpha;
    LOWBIT_FN void operator()(uint64_t c, double sum) const {
        dalpha[c] = lowbit_from_float<T>(lowbit_rsign_dalpha(sum));
    }
};

} // namespace

#define LOWBIT_REDUCE_KERNELS(T, dt)                                                          \
    extern "C" __global__ void __launch_bounds__(LOWBIT_REDUCE_THREADS)                       \
        sum_abs_partial_##dt(LowbitReduce p, const T *x, double *partials) {                  \
        partial(p, x, partials, 0.0, AddAbs(), Add());                                        \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(LOWBIT_REDUCE_THREADS)                       \
        twn_threshold_finalize_##dt(LowbitReduce p, const double *partials, float *out) {     \
        const double sum = combine(partials, 0.0, Add());                                     \
        /* Rounded through T: larq casts the threshold to the tensor's dtype. */              \
        if (threadIdx.x == 0)                                                                 \
            out[0] = lowbit_to_float(lowbit_from_float<T>(lowbit_twn_threshold(sum, p.len))); \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(LOWBIT_REDUCE_THREADS)                       \
        max_abs_tanh_partial_##dt(LowbitReduce p, const T *x, float *partials) {              \
        partial(p, x, partials, 0.0f, MaxAbsTanh(), NanMax());                                \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(LOWBIT_REDUCE_THREADS)                       \
        channel_sum_abs_partial_##dt(LowbitReduce p, const T *x, double *partials) {          \
        channel_partial(p, x, partials, AddAbs());                                            \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(LOWBIT_REDUCE_THREADS)                       \
        row_mean_abs_##dt(LowbitReduce p, const T *x, float *scales) {                        \
        row_mean(p, x, scales);                                                               \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(LOWBIT_REDUCE_THREADS)                       \
        rsign_dalpha_partial_##dt(LowbitReduce p, const T *dx, double *partials) {            \
        channel_partial(p, dx, partials, AddValue());                                         \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(LOWBIT_REDUCE_THREADS)                       \
        rsign_dalpha_finalize_##dt(LowbitReduce p, const double *partials, T *dalpha) {       \
        channel_finalize(p, partials, StoreDalpha<T>{dalpha});                                \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(LOWBIT_REDUCE_THREADS)                       \
        channel_mean_finalize_##dt(LowbitReduce p, const double *partials, float *scales) {   \
        channel_finalize(p, partials, StoreMeanAbs<T>{scales, p.rows});                       \
    }

LOWBIT_REDUCE_KERNELS(float, f32)
LOWBIT_REDUCE_KERNELS(__half, f16)
LOWBIT_REDUCE_KERNELS(__nv_bfloat16, bf16)

// max|tanh x| is the same in every type once the elements are floats.
extern "C" __global__ void __launch_bounds__(LOWBIT_REDUCE_THREADS)
    max_abs_tanh_finalize(LowbitReduce p, const float *partials, float *out) {
    (void)p;
    const float m = combine(partials, 0.0f, NanMax());
    if (threadIdx.x == 0) out[0] = m;
}
