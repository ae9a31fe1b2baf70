/*
 * lowbit.h: everything that crosses the Rust/CUDA boundary.
 *
 * Plain C (stdint only) so that bindgen/libclang reads the same file nvcc
 * compiles: the Rust structs are generated from here and cannot drift.
 * Function-like macros are for the C side and documentation; bindgen skips
 * them, so the Rust host re-derives those formulas (each is one line).
 *
 * Launch contract (all kernels are extern "C", in elementwise.ptx / reduce.ptx /
 * bits.ptx / mask.ptx):
 *
 * Elementwise, `<q>_fwd_<dt>(LowbitElementwise p, const T *x, T *y)` and
 * `<q>_bwd_<dt>(LowbitElementwise p, const T *x, const T *dy, T *dx)`:
 *   block = LOWBIT_THREADS (the kernels are compiled for at most that many);
 *   grid  = any >= 1 (grid-stride loops); the natural size is
 *           ceil(len / (LOWBIT_THREADS * LOWBIT_VECTOR_BYTES / sizeof(T))).
 *   Skip the launch when len == 0 (a grid of 0 blocks is a launch error).
 *   Pointers need only element alignment; buffers may be offset differently.
 *   y may alias x (and dx may alias x or dy): each element is read before
 *   it is written, by the same thread.
 *
 * Reductions (x is const T *; partials, out and scales are caller-allocated
 * device memory, apart from x; len == 0 is allowed and gives 0):
 *   sum_abs_partial_<dt>(p, x, double partials[LOWBIT_REDUCE_BLOCKS])
 *   max_abs_tanh_partial_<dt>(p, x, float partials[LOWBIT_REDUCE_BLOCKS])
 *   channel_sum_abs_partial_<dt>(p, x, double partials[LOWBIT_CHANNEL_SCRATCH(rows, channels)])
 *       grid = LOWBIT_REDUCE_BLOCKS, block = LOWBIT_REDUCE_THREADS, exactly
 *       (any other shape traps: the summation order is tied to it).
 *   twn_threshold_finalize_<dt>(p, const double *partials, float out[1])
 *   max_abs_tanh_finalize(p, const float *partials, float out[1])
 *       grid = 1, block = LOWBIT_REDUCE_THREADS, exactly.
 *   channel_mean_finalize_<dt>(p, const double *partials, float scales[channels])
 *       grid = any >= 1 (LOWBIT_REDUCE_BLOCKS is fine), block = LOWBIT_REDUCE_THREADS.
 *       Each scale is rounded through <dt>, as is TWN's threshold.
 *   row_mean_abs_<dt>(p, x, float scales[rows])
 *       mean |x| of each of p.rows rows of p.len / p.rows contiguous elements
 *       (XNOR-Net's first-axis scale); one block per row at a time, so
 *       grid = any >= 1, block = LOWBIT_REDUCE_THREADS exactly.
 *   Each finalize writes what the elementwise kernels read through
 *   LowbitElementwise.reduced, so the host can pass `out` / `scales` on as is.
 *   The fixed shapes make every result a function of the input alone, the
 *   same bits on every device and every run.
 *
 * Bits (bits.cu; LCE's layout: bit j of word w of a row is channel 32w + j,
 * 1 where x < 0, padding bits 0; see src/bits.rs):
 *   pack_<dt>(LowbitBits p, const T *x, uint32_t *packed)
 *   unpack_<dt>(LowbitBits p, const uint32_t *packed, T *y)
 *   flip_count_<dt>(LowbitBits p, const T *x, uint32_t *previous,
 *                   unsigned long long *flipped)
 *       packs x into previous and, when p.has_previous, adds the number of
 *       bits that changed to *flipped (which the host zeroes first).
 *   block = LOWBIT_THREADS (or any multiple of 32 below it: one warp per word);
 *   grid  = any >= 1 (warp-stride loops); the host uses
 *           min(ceil(rows * words / (LOWBIT_THREADS / 32)), LOWBIT_BITS_BLOCKS).
 *   Skip the launch when rows * words == 0. Results do not depend on the
 *   grid: every word is computed alone, and flips are added as integers.
 *
 * rsign (ReActNet), whose per-channel thresholds alpha (T[channels], the
 * tensor's type) come from the caller; of LowbitElementwise only len and
 * channels are read, and channels >= 1 when len > 0:
 *   rsign_fwd_<dt>(LowbitElementwise p, const T *x, const T *alpha, T *y)
 *   rsign_bwd_<dt>(LowbitElementwise p, const T *x, const T *alpha, const T *dy, T *dx)
 *       launched as the elementwise kernels; y / dx may alias x or dy but
 *       must not overlap alpha.
 *   rsign_dalpha_partial_<dt>(p, const T *dx, double partials[LOWBIT_CHANNEL_SCRATCH(rows, channels)])
 *       after rsign_bwd, on its dx; shaped as channel_sum_abs_partial.
 *   rsign_dalpha_finalize_<dt>(p, const double *partials, T dalpha[channels])
 *       shaped as channel_mean_finalize; dalpha[c] = -(sum of channel c's dx),
 *       written even when rows == 0 (then +0, and partials is not read).
 *
 * Masks (mask.ptx): element i is bit i % 32 of mask[i / 32], a uint32_t;
 * LOWBIT_MASK_WORDS(len) words, the trailing bits of the last one 0.
 *   <q>_fwd_mask_<dt>(LowbitElementwise p, const T *x, T *y, uint32_t *mask, T *scale)
 *       q = ste_sign, ste_heaviside, ste_tern, dorefa_activations,
 *       magnitude_aware_sign; p and the reductions before it as for <q>_fwd_<dt>.
 *       y is <q>_fwd_<dt>'s; mask is where the gradient passes; scale
 *       (magnitude_aware_sign only, else unused) receives the channels'
 *       scales in T, which its backward pass reads.
 *   pass_bwd_mask_<dt>(p, const uint32_t *mask, const T *scale, const T *dy, T *dx)
 *       dx = dy where the bit is set, else +0 (scale unused): the backward
 *       pass of every <q> above but magnitude_aware_sign, which is
 *   magnitude_aware_sign_bwd_mask_<dt>(p, mask, scale, dy, dx)
 *       dx = scale[i % channels] * dy where the bit is set, else +0.
 *   all_pass_mask(p, uint32_t *mask)
 *       noop's mask: all len bits set.
 *   Only p.len and p.channels matter to the last three. block =
 *   LOWBIT_THREADS (whole warps: a warp writes each forward word); grid = any
 *   >= 1 (grid-stride loops), naturally ceil(LOWBIT_MASK_WORDS(len) * 32 /
 *   LOWBIT_THREADS). Skip the launch when len == 0. y may alias x and dx dy.
 */
#ifndef LOWBIT_H
#define LOWBIT_H

#include <stdint.h>

/* Block size of the elementwise kernels (also their __launch_bounds__). */
#define LOWBIT_THREADS 256
/* Bytes each elementwise thread moves per access (4 f32 or 8 f16/bf16); the
 * host divides by sizeof(T) to size the grid. */
#define LOWBIT_VECTOR_BYTES 16

/* Most blocks a bit kernel is launched with: flip_count does one global
 * atomic add per block, and the warps loop over the words past that. */
#define LOWBIT_BITS_BLOCKS 4096

/* Elements per mask word (uint32_t), and the words of a mask of len elements. */
#define LOWBIT_MASK_BITS 32
#define LOWBIT_MASK_WORDS(len) (((uint64_t)(len) + LOWBIT_MASK_BITS - 1) / LOWBIT_MASK_BITS)

/* Fixed grid of every reduction: results do not depend on the device. */
#define LOWBIT_REDUCE_BLOCKS 256
#define LOWBIT_REDUCE_THREADS 256

/*
 * Per-channel sums are split into `groups` interleaved row groups (group g
 * holds rows g, g + groups, ...), enough that groups * channels items keep the
 * whole fixed grid busy, and never more groups than rows:
 *     groups = channels == 0 ? 0 : min(rows, ceil(65536 / channels))
 * where 65536 = LOWBIT_REDUCE_BLOCKS * LOWBIT_REDUCE_THREADS. Scratch holds
 * one double per (group, channel), group-major: groups * channels doubles,
 * never more than 65536 + channels - 1 (and never more than rows * channels).
 */
/* Groups that fill the grid: ceil(65536 / channels). */
#define LOWBIT_CHANNEL_FILL_(channels) \
    (((uint64_t)LOWBIT_REDUCE_BLOCKS * LOWBIT_REDUCE_THREADS + (channels) - 1) / (channels))
#define LOWBIT_CHANNEL_GROUPS(rows, channels)                                   \
    ((channels) == 0                                 ? (uint64_t)0              \
     : (uint64_t)(rows) < LOWBIT_CHANNEL_FILL_(channels) ? (uint64_t)(rows)     \
                                                     : LOWBIT_CHANNEL_FILL_(channels))
#define LOWBIT_CHANNEL_SCRATCH(rows, channels) \
    (LOWBIT_CHANNEL_GROUPS(rows, channels) * (uint64_t)(channels))
/* A channel's group partials are added in group order when it has fewer
 * groups than this, else in LOWBIT_REDUCE_THREADS lanes and a fixed tree. */
#define LOWBIT_CHANNEL_TREE_GROUPS 32

/* Parameters of one elementwise launch, passed by value. Fields a quantizer
 * does not use are ignored (set them to 0 / NULL). */
typedef struct LowbitElementwise {
    /* Elements in x, y, dy, dx (all the same length). */
    uint64_t len;
    /* Last-axis size: magnitude_aware_sign's scale of element i is
     * reduced[i % channels] and rsign's threshold alpha[i % channels], so it
     * must be >= 1 there. */
    uint64_t channels;
    /* Elements per first-axis index: a `<q>_scaled` kernel's scale of
     * element i is reduced[i / inner] (from row_mean_abs), so it must be >= 1
     * there. */
    uint64_t inner;
    /* 0 means clip_value=None: the straight-through gradient passes
     * everywhere, even at NaN and +-inf; a flag because no float value of
     * `clip` can say "no clip" without a special case. */
    uint32_t has_clip;
    /* clip_value, already rounded to the element type by the host, as larq
     * casts it to the tensor's dtype. */
    float clip;
    /* swish_sign's beta. */
    float beta;
    /* ede's t (its k * t is max(t, 1)). */
    float ede_t;
    /* ste_heaviside: nonzero passes the gradient for 0 <= x <= clip instead
     * of |x| <= clip. */
    uint32_t unipolar;
    /* ste_tern's fixed threshold (used when reduced is NULL), already
     * rounded to the element type by the host. */
    float threshold;
    /* DoReFa's n = 2^k - 1, computed once on the host (exact for k <= 24). */
    float levels;
    /* progressive_sign's max(1 - t, 1e-7), computed once on the host. */
    float divisor;
    /* Device pointer to a reduction's output, NULL when unused:
     * ste_tern with TWN: the threshold (1 float, from twn_threshold_finalize);
     * dorefa_weights: max|tanh x| (1 float, from max_abs_tanh_finalize);
     * magnitude_aware_sign: the per-channel scales (`channels` floats, from
     * channel_mean_finalize_<dt>). A pointer rather than a value so the reduction
     * result never round-trips through the host. */
    const float *reduced;
} LowbitElementwise;

/* Parameters of the reduction kernels, passed by value. */
typedef struct LowbitReduce {
    /* Elements in x; for the channel kernels len = rows * channels. */
    uint64_t len;
    /* Last-axis size (channel kernels only). */
    uint64_t channels;
    /* Channel kernels: len / channels, the count each channel's mean
     * divides by. row_mean_abs: the first axis, the number of rows. */
    uint64_t rows;
} LowbitReduce;

/* Parameters of the bit kernels, passed by value. A tensor is `rows` rows
 * of `channels` values; each row packs into `words` 32-bit words. */
typedef struct LowbitBits {
    /* The product of every axis but the last. */
    uint64_t rows;
    /* The last axis: values per row, bits per packed row. */
    uint64_t channels;
    /* ceil(channels / 32), computed once on the host. */
    uint64_t words;
    /* flip_count only: 0 on a metric's first update, when `previous` holds
     * no signs yet, so nothing is counted. */
    uint32_t has_previous;
    /* unpack only: NULL for +-1, else `channels` floats (device memory),
     * channel c unpacking to +-scale[c]. */
    const float *scale;
} LowbitBits;

#endif /* LOWBIT_H */
