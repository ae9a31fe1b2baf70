/*
 * lowbit.h: the C ABI of lowbit, larq's quantizers for C and C++ training
 * stacks (PyTorch extensions and others). Link liblowbit.so or liblowbit.a.
 *
 * Every function returns LOWBIT_OK (0) or an error status; the message of
 * the last failure on the calling thread is lowbit_last_error(). No function
 * aborts on bad input: null pointers, sizes that do not match the shape and
 * bad SPECs are errors, and nothing is written then. A shape has at most
 * LOWBIT_MAX_NDIM dimensions (ndim is checked before shape is read), and a
 * tensor whose byte size exceeds PTRDIFF_MAX is LOWBIT_ERR_SHAPE, before
 * any pointer is touched.
 *
 * Calls work from any thread, in a process forked after its parent used
 * lowbit (the child gets worker threads of its own), and from thread-exit
 * handlers (pthread key destructors), where lowbit_last_error() may return
 * a fixed "message was lost" text instead of the failure's own.
 *
 *   lowbit_quantizer *q;
 *   if (lowbit_quantizer_new("ste_tern(threshold_value=0.2)", &q) != LOWBIT_OK)
 *       fprintf(stderr, "%s\n", lowbit_last_error());
 *   size_t shape[2] = {rows, channels};
 *   lowbit_forward(q, LOWBIT_F32, x, y, shape, 2);          // host memory
 *   lowbit_backward_device(q, LOWBIT_F16, x, dy, dx, shape, 2, stream);  // GPU
 *   lowbit_quantizer_free(q);
 *
 * CI checks that this header declares exactly the functions the library
 * exports (scripts/check-header.sh).
 */
#ifndef LOWBIT_CAPI_H
#define LOWBIT_CAPI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lowbit_status {
    LOWBIT_OK = 0,
    LOWBIT_ERR_NULL = 1,             /* a required pointer is null */
    LOWBIT_ERR_SPEC = 2,             /* the SPEC does not parse, or a bad parameter */
    LOWBIT_ERR_SHAPE = 3,            /* sizes do not fit the shape, ndim > LOWBIT_MAX_NDIM,
                                        a tensor larger than PTRDIFF_MAX bytes, or an
                                        unknown dtype */
    LOWBIT_ERR_CUDA_UNAVAILABLE = 4, /* no usable GPU or driver; the message says why */
    LOWBIT_ERR_CUDA = 5,             /* a CUDA driver call failed */
    LOWBIT_ERR_INTERNAL = 6,         /* a bug in lowbit, or no CPU worker threads could start */
    LOWBIT_ERR_UNSUPPORTED = 7       /* not through this call: rsign takes thresholds
                                        (and only it), and approx_sign & co. no mask */
} lowbit_status;

/* Element types; f16 and bf16 are passed as their 16-bit patterns. */
typedef enum lowbit_dtype { LOWBIT_F32 = 0, LOWBIT_F16 = 1, LOWBIT_BF16 = 2 } lowbit_dtype;

/* The most dimensions a shape may have (numpy's limit). */
#define LOWBIT_MAX_NDIM 64

typedef struct lowbit_quantizer lowbit_quantizer;

/* The message of the last failed call on this thread ("" if none); valid
 * until the next lowbit call on this thread. */
const char *lowbit_last_error(void);

/* Parses larq's spelling, e.g. "ste_sign(clip_value=none)", into *out; on
 * failure *out is set to NULL (when out is not NULL itself). */
lowbit_status lowbit_quantizer_new(const char *spec, lowbit_quantizer **out);
/* Frees a handle; NULL is ignored. */
void lowbit_quantizer_free(lowbit_quantizer *q);
/* Writes the SPEC with every parameter into buf (at most len bytes, NUL included). */
lowbit_status lowbit_quantizer_spec(const lowbit_quantizer *q, char *buf, size_t len);

/* y = q(x) on host memory. x and y hold prod(shape) elements of dtype,
 * row-major; the last axis is the channel axis (magnitude_aware_sign).
 * Outputs must not overlap inputs. */
lowbit_status lowbit_forward(const lowbit_quantizer *q, uint32_t dtype, const void *x, void *y,
                             const size_t *shape, size_t ndim);
/* dx = dq/dx * dy on host memory. */
lowbit_status lowbit_backward(const lowbit_quantizer *q, uint32_t dtype, const void *x,
                              const void *dy, void *dx, const size_t *shape, size_t ndim);

/* The same on device memory (CUdeviceptr values as pointers), enqueued on
 * `stream` (a CUstream as void*) without waiting. The device calls
 * (every _device function) keep this contract:
 *   - Context: the call runs in the context `stream` belongs to. NULL (the
 *     legacy default stream) and CU_STREAM_PER_THREAD belong to the calling
 *     thread's current context; on a thread with none, to the primary
 *     context of the device that holds x (or dy). The thread's current
 *     context is the same when the call returns as before it.
 *   - Kernels are loaded once per context, on its first call.
 *   - Stream and synchronization: everything is enqueued on `stream`; no
 *     call waits for the device or for another stream, and none allocates
 *     but the first call on a stream that needs reduction scratch (or more
 *     of it than before), which grows that stream's workspace in the
 *     stream's order (cuMemAllocAsync; the old one cuMemFreeAsync).
 *     lowbit_reserve_workspace_device grows it ahead, after which calls can
 *     be captured into a CUDA graph.
 *   - Workspace lifetime: one per stream (per thread for
 *     CU_STREAM_PER_THREAD), kept for the life of the process.
 *   - Buffers: outputs may be their input exactly (in place) but must not
 *     otherwise overlap it; pointers must stay valid until the stream has
 *     run the call. */
lowbit_status lowbit_forward_device(const lowbit_quantizer *q, uint32_t dtype, const void *x,
                                    void *y, const size_t *shape, size_t ndim, void *stream);
lowbit_status lowbit_backward_device(const lowbit_quantizer *q, uint32_t dtype, const void *x,
                                     const void *dy, void *dx, const size_t *shape, size_t ndim,
                                     void *stream);
/* Grows `stream`'s workspace to what forward and backward calls of q on
 * tensors of `shape` need, as described above. */
lowbit_status lowbit_reserve_workspace_device(const lowbit_quantizer *q, const size_t *shape,
                                              size_t ndim, void *stream);

/* 1-bit masks: the forward also saves where the gradient passes, one bit per
 * element (bit i%32 of word i/32), so that the backward needs neither x nor
 * anything of its size and gives the same bits as lowbit_backward from x.
 * For ste_sign, ste_heaviside, ste_tern, magnitude_aware_sign (which also
 * saves each channel's scale, in dtype), dorefa activations and noop; the
 * others are LOWBIT_ERR_UNSUPPORTED. */
size_t lowbit_mask_words(size_t len);
/* Elements of dtype the scale holds: the channel count (last axis) for
 * magnitude_aware_sign, 0 for the others (scale may then be NULL). */
lowbit_status lowbit_saved_scale_len(const lowbit_quantizer *q, const size_t *shape, size_t ndim,
                                     size_t *out);
lowbit_status lowbit_forward_with_mask(const lowbit_quantizer *q, uint32_t dtype, const void *x,
                                       void *y, uint32_t *mask, void *scale, const size_t *shape,
                                       size_t ndim);
lowbit_status lowbit_backward_from_mask(const lowbit_quantizer *q, uint32_t dtype,
                                        const uint32_t *mask, const void *scale, const void *dy,
                                        void *dx, const size_t *shape, size_t ndim);
/* The same on device memory, enqueued on `stream` without waiting. */
lowbit_status lowbit_forward_with_mask_device(const lowbit_quantizer *q, uint32_t dtype,
                                              const void *x, void *y, uint32_t *mask, void *scale,
                                              const size_t *shape, size_t ndim, void *stream);
lowbit_status lowbit_backward_from_mask_device(const lowbit_quantizer *q, uint32_t dtype,
                                               const uint32_t *mask, const void *scale,
                                               const void *dy, void *dx, const size_t *shape,
                                               size_t ndim, void *stream);

/* rsign (ReActNet): y = sign(x - alpha[c]), alpha holding one threshold per
 * channel (the last axis) of dtype; the backward pass writes dx and
 * dalpha[c] = -sum of dx over channel c. The other quantizers are
 * LOWBIT_ERR_UNSUPPORTED here, as rsign is in lowbit_forward/backward. */
lowbit_status lowbit_forward_with_thresholds(const lowbit_quantizer *q, uint32_t dtype,
                                             const void *x, const void *alpha, void *y,
                                             const size_t *shape, size_t ndim);
lowbit_status lowbit_backward_with_thresholds(const lowbit_quantizer *q, uint32_t dtype,
                                              const void *x, const void *alpha, const void *dy,
                                              void *dx, void *dalpha, const size_t *shape,
                                              size_t ndim);
/* The same on device memory, enqueued on `stream`; dalpha is reduced there. */
lowbit_status lowbit_forward_with_thresholds_device(const lowbit_quantizer *q, uint32_t dtype,
                                                    const void *x, const void *alpha, void *y,
                                                    const size_t *shape, size_t ndim,
                                                    void *stream);
lowbit_status lowbit_backward_with_thresholds_device(const lowbit_quantizer *q, uint32_t dtype,
                                                     const void *x, const void *alpha,
                                                     const void *dy, void *dx, void *dalpha,
                                                     const size_t *shape, size_t ndim,
                                                     void *stream);

#ifdef __cplusplus
}
#endif

#endif /* LOWBIT_CAPI_H */
