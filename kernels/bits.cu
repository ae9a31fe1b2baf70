// bits.cu: binarized tensors as bits, packed as Larq Compute Engine packs
// them, and the flip count of larq's flip_ratio metric; f32, f16, bf16.
//
// A row of `channels` values packs into `words` 32-bit words: bit j of word w
// is channel 32w + j, 1 where x < 0 (lowbit_sign_bit), and the bits past the
// row's last channel are 0. One warp computes one word: lane j owns channel
// 32w + j, so a warp reads 32 consecutive values and __ballot_sync, whose
// bit j is lane j's predicate, assembles the word in LCE's bit order. Each
// word depends on its own 32 values alone, so results do not depend on the
// grid. LOWBIT_BITS_KERNELS stamps out `<op>_<dt>` for the three types.
// Launch contract: see lowbit.h.
#include "lowbit.h"
#include "quantize.cuh"

namespace {

constexpr unsigned kWarp = 32;
constexpr unsigned kAllLanes = 0xffffffffu;
static_assert(LOWBIT_THREADS % kWarp == 0, "a block holds whole warps");

// __ballot_sync needs every lane of the warp: a block of partial warps
// would hang or read garbage, so it traps instead.
LOWBIT_FN void require_whole_warps() {
    if (blockDim.x % kWarp != 0 || blockDim.y != 1 || blockDim.z != 1) __trap();
}

// Calls f(k, lane, c, i) for every word k = row * words + w, one warp per
// word: lane owns channel c = 32w + lane (no value when c >= channels) at
// element index i. The loop bound depends on the warp alone, so the whole
// warp enters f together, as the ballot in warp_word needs.
template <typename F> LOWBIT_FN void for_each_word(const LowbitBits &p, F f) {
    require_whole_warps();
    const uint64_t thread = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const uint64_t warps = (uint64_t)gridDim.x * blockDim.x / kWarp;
    const unsigned lane = threadIdx.x % kWarp;
    const uint64_t total = p.rows * p.words;
    for (uint64_t k = thread / kWarp; k < total; k += warps) {
        const uint64_t row = k / p.words;
        const uint64_t c = (k - row * p.words) * kWarp + lane;
        f(k, lane, c, row * p.channels + c);
    }
}

// Word k's value: bit j from lane j; lanes past the row's end give 0 bits.
template <typename T>
LOWBIT_FN uint32_t warp_word(const LowbitBits &p, const T *x, uint64_t c, uint64_t i) {
    const bool negative = c < p.channels && lowbit_sign_bit(lowbit_to_float(x[i]));
    return __ballot_sync(kAllLanes, negative);
}

template <typename T> LOWBIT_FN void pack_rows(const LowbitBits &p, const T *x, uint32_t *packed) {
    for_each_word(p, [&](uint64_t k, unsigned lane, uint64_t c, uint64_t i) {
        const uint32_t word = warp_word(p, x, c, i);
        if (lane == 0) packed[k] = word;
    });
}

template <typename T>
LOWBIT_FN void unpack_rows(const LowbitBits &p, const uint32_t *packed, T *y) {
    for_each_word(p, [&](uint64_t k, unsigned lane, uint64_t c, uint64_t i) {
        if (c >= p.channels) return;
        const float scale = p.scale ? p.scale[c] : 1.0f;
        y[i] = lowbit_from_float<T>(lowbit_unpack_bit(packed[k] >> lane, scale));
    });
}

template <typename T>
LOWBIT_FN void flip_count(const LowbitBits &p, const T *x, uint32_t *previous,
                          unsigned long long *flipped) {
    // Lane 0 of each warp counts its words' flips.
    unsigned long long mine = 0;
    for_each_word(p, [&](uint64_t k, unsigned lane, uint64_t c, uint64_t i) {
        const uint32_t word = warp_word(p, x, c, i);
        if (lane == 0) {
            if (p.has_previous) mine += lowbit_flips(previous[k], word);
            previous[k] = word;
        }
    });
    // One global atomic per block. Integer additions: the total is the same
    // in whatever order they land.
    __shared__ unsigned long long block;
    if (threadIdx.x == 0) block = 0;
    __syncthreads();
    if (mine != 0) atomicAdd(&block, mine);
    __syncthreads();
    if (threadIdx.x == 0 && block != 0) atomicAdd(flipped, block);
}

} // namespace

#define LOWBIT_BITS_KERNELS(T, dt)                                                            \
    extern "C" __global__ void __launch_bounds__(LOWBIT_THREADS)                              \
        pack_##dt(LowbitBits p, const T *x, uint32_t *packed) {                               \
        pack_rows(p, x, packed);                                                              \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(LOWBIT_THREADS)                              \
        unpack_##dt(LowbitBits p, const uint32_t *packed, T *y) {                             \
        unpack_rows(p, packed, y);                                                            \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(LOWBIT_THREADS) flip_count_##dt(             \
        LowbitBits p, const T *x, uint32_t *previous, unsigned long long *flipped) {          \
        flip_count(p, x, previous, flipped);                                                  \
    }

LOWBIT_BITS_KERNELS(float, f32)
LOWBIT_BITS_KERNELS(__half, f16)
LOWBIT_BITS_KERNELS(__nv_bfloat16, bf16)
