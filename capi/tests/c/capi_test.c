/* Links lowbit through its C ABI, runs each quantizer on host memory and
 * checks the results against values computed here, then the error paths,
 * calls from a forked child and from a thread-exit handler.
 * Built and run by tests/capi.rs. Prints "N passed, N failed". */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lowbit.h"

static int passed, failed;

#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (cond) {                                       \
            passed++;                                     \
        } else {                                          \
            failed++;                                     \
            printf("FAILED %s:%d: ", __FILE__, __LINE__); \
            printf(__VA_ARGS__);                          \
            printf("\n");                                 \
        }                                                 \
    } while (0)

static lowbit_quantizer *make(const char *spec) {
    lowbit_quantizer *q = NULL;
    lowbit_status s = lowbit_quantizer_new(spec, &q);
    CHECK(s == LOWBIT_OK && q != NULL, "new(%s): %s", spec, lowbit_last_error());
    return q;
}

/* Runs forward and backward of `spec` on x (dy = 1) and compares with the
 * expectations given by the caller's functions. */
typedef float (*fn1)(float x);
typedef float (*fn2)(float x, float dy);

static float sign_(float x) { return x < 0 ? -1.0f : 1.0f; }
static float ste_(float x, float dy) { return fabsf(x) <= 1.0f ? dy : 0.0f; }
static float heaviside_(float x) { return x > 0 ? 1.0f : 0.0f; }
static float approx_(float x, float dy) { return fabsf(x) <= 1.0f ? (1.0f - fabsf(x)) * 2.0f * dy : 0.0f; }
static float tern_(float x) { return x >= 0.1f ? 1.0f : x <= -0.1f ? -1.0f : 0.0f; }
static float dorefa_(float x) {
    float c = x <= 0 ? 0.0f : x >= 1 ? 1.0f : x;
    return rintf(c * 3.0f) / 3.0f;
}
static float dorefa_grad_(float x, float dy) { return x >= 0 && x <= 1 ? dy : 0.0f; }
static float ident_(float x) { return x; }
static float pass_(float x, float dy) { (void)x; return dy; }

static void elementwise(const char *spec, fn1 fwd, fn2 bwd) {
    float x[] = {-2.0f, -1.0f, -0.6f, -0.1f, -0.05f, -0.0f, 0.0f, 0.05f, 0.1f, 0.4f, 0.5f, 0.6f, 1.0f, 1.5f};
    enum { N = sizeof x / sizeof x[0] };
    float dy[N], y[N], dx[N];
    for (int i = 0; i < N; i++) dy[i] = 1.0f;
    size_t shape[1] = {N};
    lowbit_quantizer *q = make(spec);
    CHECK(lowbit_forward(q, LOWBIT_F32, x, y, shape, 1) == LOWBIT_OK, "%s forward: %s", spec, lowbit_last_error());
    CHECK(lowbit_backward(q, LOWBIT_F32, x, dy, dx, shape, 1) == LOWBIT_OK, "%s backward", spec);
    for (int i = 0; i < N; i++) {
        CHECK(y[i] == fwd(x[i]), "%s y(%g) = %g, want %g", spec, x[i], y[i], fwd(x[i]));
        CHECK(dx[i] == bwd(x[i], dy[i]), "%s dx(%g) = %g, want %g", spec, x[i], dx[i], bwd(x[i], dy[i]));
    }
    lowbit_quantizer_free(q);
}

static void magnitude_aware(void) {
    /* Two rows of two channels: scales are mean|x| per channel. */
    float x[] = {0.5f, -2.0f, -1.5f, 1.0f}, y[4];
    size_t shape[2] = {2, 2};
    lowbit_quantizer *q = make("magnitude_aware_sign");
    CHECK(lowbit_forward(q, LOWBIT_F32, x, y, shape, 2) == LOWBIT_OK, "mas: %s", lowbit_last_error());
    float want[] = {1.0f, -1.5f, -1.0f, 1.5f};
    for (int i = 0; i < 4; i++) CHECK(y[i] == want[i], "mas y[%d] = %g, want %g", i, y[i], want[i]);
    lowbit_quantizer_free(q);
}

static void half_types(void) {
    /* f16 bit patterns: -1.5, 0.0, 0.25, 2.0; bf16: -1.5, 0.0, 0.25, 2.0 */
    uint16_t xh[] = {0xBE00, 0x0000, 0x3400, 0x4000}, yh[4];
    uint16_t xb[] = {0xBFC0, 0x0000, 0x3E80, 0x4000}, yb[4];
    size_t shape[1] = {4};
    lowbit_quantizer *q = make("ste_sign");
    CHECK(lowbit_forward(q, LOWBIT_F16, xh, yh, shape, 1) == LOWBIT_OK, "f16");
    CHECK(yh[0] == 0xBC00 && yh[1] == 0x3C00 && yh[2] == 0x3C00 && yh[3] == 0x3C00, "f16 signs %04x %04x", yh[0], yh[1]);
    CHECK(lowbit_forward(q, LOWBIT_BF16, xb, yb, shape, 1) == LOWBIT_OK, "bf16");
    CHECK(yb[0] == 0xBF80 && yb[1] == 0x3F80 && yb[2] == 0x3F80 && yb[3] == 0x3F80, "bf16 signs %04x", yb[0]);
    lowbit_quantizer_free(q);
}

static void spec_round_trip(void) {
    lowbit_quantizer *q = make("ste_tern(threshold_value=0.2, clip_value=none)");
    char buf[128];
    CHECK(lowbit_quantizer_spec(q, buf, sizeof buf) == LOWBIT_OK, "spec");
    CHECK(strcmp(buf, "ste_tern(threshold_value=0.2, ternary_weight_networks=false, clip_value=none)") == 0, "spec = %s", buf);
    CHECK(lowbit_quantizer_spec(q, buf, 5) == LOWBIT_ERR_SHAPE, "a short buffer is an error");
    lowbit_quantizer_free(q);
}

static void errors(void) {
    lowbit_quantizer *q = NULL;
    CHECK(lowbit_quantizer_new("ste_sgn", &q) == LOWBIT_ERR_SPEC && q == NULL, "unknown name");
    CHECK(strstr(lowbit_last_error(), "ste_sgn") != NULL, "message names it: %s", lowbit_last_error());
    CHECK(lowbit_quantizer_new("ste_sign(clip_value=-1)", &q) == LOWBIT_ERR_SPEC, "negative clip");
    CHECK(strstr(lowbit_last_error(), "clip_value") != NULL, "message: %s", lowbit_last_error());
    CHECK(lowbit_quantizer_new(NULL, &q) == LOWBIT_ERR_NULL, "null spec");
    CHECK(lowbit_quantizer_new("ste_sign", NULL) == LOWBIT_ERR_NULL, "null out");

    q = make("ste_sign");
    float x[3] = {1, 2, 3}, y[3] = {7, 7, 7};
    size_t shape[1] = {3};
    CHECK(lowbit_forward(NULL, LOWBIT_F32, x, y, shape, 1) == LOWBIT_ERR_NULL, "null handle");
    CHECK(lowbit_forward(q, LOWBIT_F32, NULL, y, shape, 1) == LOWBIT_ERR_NULL, "null x");
    CHECK(lowbit_forward(q, LOWBIT_F32, x, NULL, shape, 1) == LOWBIT_ERR_NULL, "null y");
    CHECK(lowbit_forward(q, LOWBIT_F32, x, y, NULL, 1) == LOWBIT_ERR_NULL, "null shape");
    CHECK(lowbit_forward(q, 9, x, y, shape, 1) == LOWBIT_ERR_SHAPE, "unknown dtype");
    CHECK(lowbit_backward(q, LOWBIT_F32, x, NULL, y, shape, 1) == LOWBIT_ERR_NULL, "null dy");
    size_t huge[2] = {(size_t)-1, 2};
    CHECK(lowbit_forward(q, LOWBIT_F32, x, y, huge, 2) == LOWBIT_ERR_SHAPE, "overflowing shape");
    CHECK(y[0] == 7 && y[1] == 7 && y[2] == 7, "nothing written on error");
    size_t empty[1] = {0};
    CHECK(lowbit_forward(q, LOWBIT_F32, NULL, NULL, empty, 1) == LOWBIT_OK, "empty tensor: %s", lowbit_last_error());
    /* The device path checks its pointers before touching a GPU. */
    CHECK(lowbit_forward_device(q, LOWBIT_F32, NULL, y, shape, 1, NULL) == LOWBIT_ERR_NULL, "null device x");
    lowbit_quantizer_free(q);
    lowbit_quantizer_free(NULL);

    /* rsign needs its thresholds, which these calls do not take
     * (lowbit_forward_with_thresholds does). */
    q = make("rsign");
    CHECK(lowbit_forward(q, LOWBIT_F32, x, y, shape, 1) == LOWBIT_ERR_UNSUPPORTED, "rsign forward");
    CHECK(strstr(lowbit_last_error(), "thresholds") != NULL, "message: %s", lowbit_last_error());
    CHECK(lowbit_backward(q, LOWBIT_F32, x, x, y, shape, 1) == LOWBIT_ERR_UNSUPPORTED, "rsign backward");
    CHECK(lowbit_forward_device(q, LOWBIT_F32, x, y, shape, 1, NULL) == LOWBIT_ERR_UNSUPPORTED, "rsign on a device");
    CHECK(y[0] == 7 && y[1] == 7 && y[2] == 7, "nothing written for rsign");
    lowbit_quantizer_free(q);
}

static void masks(void) {
    /* 40 elements: two mask words, the second one partly used. */
    enum { N = 40 };
    float x[N], dy[N], y[N], y_plain[N], dx[N], dx_plain[N];
    uint32_t mask[2] = {0xFFFFFFFFu, 0xFFFFFFFFu};
    for (int i = 0; i < N; i++) {
        x[i] = (float)(i - 24) / 10.0f; /* -2.4 .. 1.5 */
        dy[i] = (float)(i + 1);
    }
    size_t shape[1] = {N}, scale_len = 99;
    CHECK(lowbit_mask_words(N) == 2 && lowbit_mask_words(0) == 0 && lowbit_mask_words(32) == 1,
          "mask words");
    lowbit_quantizer *q = make("ste_sign");
    CHECK(lowbit_saved_scale_len(q, shape, 1, &scale_len) == LOWBIT_OK && scale_len == 0,
          "ste_sign saves no scale: %zu", scale_len);
    CHECK(lowbit_forward_with_mask(q, LOWBIT_F32, x, y, mask, NULL, shape, 1) == LOWBIT_OK,
          "masked forward: %s", lowbit_last_error());
    CHECK(lowbit_forward(q, LOWBIT_F32, x, y_plain, shape, 1) == LOWBIT_OK, "forward");
    CHECK(memcmp(y, y_plain, sizeof y) == 0, "masked forward gives the forward's bits");
    /* |x| <= 1 for i = 14..34: bits 14..31 of word 0, bits 0..2 of word 1. */
    CHECK(mask[0] == 0xFFFFC000u && mask[1] == 0x7u, "mask %08x %08x", mask[0], mask[1]);
    CHECK(lowbit_backward_from_mask(q, LOWBIT_F32, mask, NULL, dy, dx, shape, 1) == LOWBIT_OK,
          "backward from mask: %s", lowbit_last_error());
    CHECK(lowbit_backward(q, LOWBIT_F32, x, dy, dx_plain, shape, 1) == LOWBIT_OK, "backward");
    CHECK(memcmp(dx, dx_plain, sizeof dx) == 0, "backward from the mask = backward from x");
    CHECK(lowbit_forward_with_mask(q, LOWBIT_F32, x, y, NULL, NULL, shape, 1) == LOWBIT_ERR_NULL,
          "null mask");
    lowbit_quantizer_free(q);

    /* magnitude_aware_sign also saves each channel's scale. */
    float xm[] = {0.5f, -2.0f, -1.5f, 1.0f}, ym[4], scale[2], ones[4] = {1, 1, 1, 1}, dxm[4], dxp[4];
    uint32_t maskm[1];
    size_t shape2[2] = {2, 2};
    q = make("magnitude_aware_sign");
    CHECK(lowbit_saved_scale_len(q, shape2, 2, &scale_len) == LOWBIT_OK && scale_len == 2,
          "one scale per channel: %zu", scale_len);
    CHECK(lowbit_forward_with_mask(q, LOWBIT_F32, xm, ym, maskm, NULL, shape2, 2) == LOWBIT_ERR_NULL,
          "magnitude_aware_sign needs its scale buffer");
    CHECK(lowbit_forward_with_mask(q, LOWBIT_F32, xm, ym, maskm, scale, shape2, 2) == LOWBIT_OK,
          "mas masked forward: %s", lowbit_last_error());
    CHECK(scale[0] == 1.0f && scale[1] == 1.5f, "scales %g %g", scale[0], scale[1]);
    CHECK(lowbit_backward_from_mask(q, LOWBIT_F32, maskm, scale, ones, dxm, shape2, 2) == LOWBIT_OK,
          "mas backward from mask: %s", lowbit_last_error());
    CHECK(lowbit_backward(q, LOWBIT_F32, xm, ones, dxp, shape2, 2) == LOWBIT_OK, "mas backward");
    CHECK(memcmp(dxm, dxp, sizeof dxm) == 0, "mas: backward from the mask = backward from x");
    lowbit_quantizer_free(q);

    /* approx_sign's gradient needs x itself: refused, nothing written. */
    q = make("approx_sign");
    y[0] = 7.0f;
    CHECK(lowbit_forward_with_mask(q, LOWBIT_F32, x, y, mask, NULL, shape, 1) == LOWBIT_ERR_UNSUPPORTED,
          "approx_sign has no mask");
    CHECK(strstr(lowbit_last_error(), "approx_sign") != NULL, "message: %s", lowbit_last_error());
    CHECK(y[0] == 7.0f, "nothing written");
    CHECK(lowbit_forward_with_mask_device(q, LOWBIT_F32, x, y, mask, NULL, shape, 1, NULL) ==
              LOWBIT_ERR_UNSUPPORTED,
          "approx_sign has no mask on a device either");
    CHECK(lowbit_saved_scale_len(q, shape, 1, NULL) == LOWBIT_ERR_NULL, "null out");
    lowbit_quantizer_free(q);

    /* The device path checks its pointers before touching a GPU. */
    q = make("ste_sign");
    CHECK(lowbit_backward_from_mask_device(q, LOWBIT_F32, NULL, NULL, dy, dx, shape, 1, NULL) ==
              LOWBIT_ERR_NULL,
          "null device mask");
    lowbit_quantizer_free(q);
}

static void thresholds(void) {
    size_t shape[2] = {2, 2};
    lowbit_quantizer *q = make("rsign");
    /* y = sign(x - alpha[c]) */
    float x[] = {0.4f, -0.5f, 0.5f, -1.5f}, alpha[] = {0.5f, -1.0f}, y[4];
    CHECK(lowbit_forward_with_thresholds(q, LOWBIT_F32, x, alpha, y, shape, 2) == LOWBIT_OK,
          "rsign forward: %s", lowbit_last_error());
    float want_y[] = {-1.0f, 1.0f, 1.0f, -1.0f};
    for (int i = 0; i < 4; i++) CHECK(y[i] == want_y[i], "rsign y[%d] = %g", i, y[i]);

    /* u = x - alpha = {0.25, 3.0, -0.5, 0.0}: dx = (1 - |u|) * 2 * dy inside |u| <= 1,
     * dalpha[c] = -(sum of dx over channel c). */
    float xb[] = {0.75f, 2.0f, 0.0f, -1.0f}, dy[] = {1, 1, 1, 1}, dx[4], dalpha[2];
    CHECK(lowbit_backward_with_thresholds(q, LOWBIT_F32, xb, alpha, dy, dx, dalpha, shape, 2) ==
              LOWBIT_OK,
          "rsign backward: %s", lowbit_last_error());
    float want_dx[] = {1.5f, 0.0f, 1.0f, 2.0f};
    for (int i = 0; i < 4; i++) CHECK(dx[i] == want_dx[i], "rsign dx[%d] = %g", i, dx[i]);
    CHECK(dalpha[0] == -2.5f && dalpha[1] == -2.0f, "dalpha %g %g", dalpha[0], dalpha[1]);

    y[0] = 7.0f;
    CHECK(lowbit_forward_with_thresholds(q, LOWBIT_F32, x, NULL, y, shape, 2) == LOWBIT_ERR_NULL,
          "null alpha");
    CHECK(lowbit_backward_with_thresholds(q, LOWBIT_F32, xb, alpha, dy, dx, NULL, shape, 2) ==
              LOWBIT_ERR_NULL,
          "null dalpha");
    CHECK(lowbit_forward_with_thresholds_device(q, LOWBIT_F32, x, NULL, y, shape, 2, NULL) ==
              LOWBIT_ERR_NULL,
          "null device alpha");
    CHECK(y[0] == 7.0f, "nothing written");
    lowbit_quantizer_free(q);

    /* Only rsign takes thresholds. */
    q = make("ste_sign");
    CHECK(lowbit_forward_with_thresholds(q, LOWBIT_F32, x, alpha, y, shape, 2) ==
              LOWBIT_ERR_UNSUPPORTED,
          "ste_sign takes no thresholds");
    CHECK(lowbit_forward_with_thresholds_device(q, LOWBIT_F32, x, alpha, y, shape, 2, NULL) ==
              LOWBIT_ERR_UNSUPPORTED,
          "nor on a device");
    CHECK(y[0] == 7.0f, "nothing written");
    lowbit_quantizer_free(q);
}

/* Sizes the ABI can refuse before it touches memory: a tensor larger than
 * any buffer, and an ndim far beyond any shape array. */
static void hostile_sizes(void) {
    lowbit_quantizer *q = (lowbit_quantizer *)&passed; /* not NULL: must be reset */
    CHECK(lowbit_quantizer_new("ste_sgn", &q) == LOWBIT_ERR_SPEC && q == NULL,
          "a failed new sets *out to NULL");
    q = (lowbit_quantizer *)&passed;
    CHECK(lowbit_quantizer_new(NULL, &q) == LOWBIT_ERR_NULL && q == NULL, "also for a NULL spec");

    q = make("ste_sign");
    float x[4] = {1, 2, 3, 4}, y[4] = {7, 7, 7, 7};
    uint32_t mask[1];
    size_t one[1] = {4};
    /* (1 << 62) floats are 2^64 bytes, (1 << 61) are 2^63: neither fits. */
    size_t sizes[][2] = {{(size_t)1 << 62, 1}, {(size_t)1 << 61, 1}, {1, (size_t)1 << 61}};
    for (int i = 0; i < 3; i++) {
        size_t *s = sizes[i];
        CHECK(lowbit_forward(q, LOWBIT_F32, x, y, s, 2) == LOWBIT_ERR_SHAPE, "forward %zu x %zu: %s", s[0], s[1], lowbit_last_error());
        CHECK(lowbit_backward(q, LOWBIT_F32, x, x, y, s, 2) == LOWBIT_ERR_SHAPE, "backward %zu", s[0]);
        CHECK(lowbit_forward_with_mask(q, LOWBIT_F32, x, y, mask, NULL, s, 2) == LOWBIT_ERR_SHAPE, "masked %zu", s[0]);
        CHECK(lowbit_backward_from_mask(q, LOWBIT_F32, mask, NULL, x, y, s, 2) == LOWBIT_ERR_SHAPE, "from mask %zu", s[0]);
        CHECK(lowbit_forward_device(q, LOWBIT_F32, x, y, s, 2, NULL) == LOWBIT_ERR_SHAPE, "device %zu: %s", s[0], lowbit_last_error());
    }
    size_t f16_too_big[1] = {(size_t)1 << 62}; /* 2^63 bytes of f16 */
    CHECK(lowbit_forward(q, LOWBIT_F16, x, y, f16_too_big, 1) == LOWBIT_ERR_SHAPE, "f16: %s", lowbit_last_error());
    /* ndim is checked before `shape` is read: one[] holds a single size. */
    CHECK(lowbit_forward(q, LOWBIT_F32, x, y, one, SIZE_MAX) == LOWBIT_ERR_SHAPE, "ndim SIZE_MAX");
    CHECK(lowbit_forward(q, LOWBIT_F32, x, y, one, (size_t)1 << 40) == LOWBIT_ERR_SHAPE, "ndim 2^40");
    CHECK(strstr(lowbit_last_error(), "LOWBIT_MAX_NDIM") != NULL, "message: %s", lowbit_last_error());
    CHECK(lowbit_forward(q, LOWBIT_F32, x, y, one, LOWBIT_MAX_NDIM + 1) == LOWBIT_ERR_SHAPE, "ndim 65");
    size_t ones[LOWBIT_MAX_NDIM];
    for (int i = 0; i < LOWBIT_MAX_NDIM; i++) ones[i] = 1;
    CHECK(lowbit_forward(q, LOWBIT_F32, x, y, ones, LOWBIT_MAX_NDIM) == LOWBIT_OK && y[0] == 1.0f, "64 dimensions: %s", lowbit_last_error());
    CHECK(y[1] == 7 && y[2] == 7 && y[3] == 7, "nothing written past the tensor");
    size_t scale_len = 0;
    CHECK(lowbit_saved_scale_len(q, one, SIZE_MAX, &scale_len) == LOWBIT_ERR_SHAPE, "saved_scale_len ndim");
    lowbit_quantizer_free(q);

    q = make("rsign");
    CHECK(lowbit_forward_with_thresholds(q, LOWBIT_F32, x, x, y, sizes[0], 2) == LOWBIT_ERR_SHAPE, "rsign");
    CHECK(lowbit_forward_with_thresholds(q, LOWBIT_F32, x, x, y, sizes[2], 2) == LOWBIT_ERR_SHAPE, "rsign alpha 2^61");
    CHECK(lowbit_forward_with_thresholds_device(q, LOWBIT_F32, x, x, y, sizes[0], 2, NULL) == LOWBIT_ERR_SHAPE, "rsign device");
    lowbit_quantizer_free(q);

    /* An empty tensor along a huge axis is done at once, nothing allocated. */
    q = make("magnitude_aware_sign");
    size_t empty_wide[2] = {0, (size_t)1 << 62};
    CHECK(lowbit_forward(q, LOWBIT_F32, NULL, NULL, empty_wide, 2) == LOWBIT_OK, "(0, 2^62): %s", lowbit_last_error());
    lowbit_quantizer_free(q);
}

/* A call from a pthread key destructor, which runs after the thread's Rust
 * thread-locals (lowbit's last-error slot among them) are gone. */
static pthread_key_t exit_key;
static lowbit_status exit_failing = LOWBIT_OK, exit_working = LOWBIT_ERR_INTERNAL;
static const char *exit_message;
static float exit_y[4];

static void on_thread_exit(void *arg) {
    lowbit_quantizer *q = arg;
    float x[4] = {-2, -0.5f, 0.5f, 2};
    size_t shape[1] = {4};
    exit_failing = lowbit_forward(q, LOWBIT_F32, NULL, exit_y, shape, 1);
    exit_message = lowbit_last_error();
    exit_working = lowbit_forward(q, LOWBIT_F32, x, exit_y, shape, 1);
}

static void *exiting_thread(void *arg) {
    /* A failure first, so that this thread's error slot exists and is
     * destroyed before the key's destructor runs. */
    float y[1];
    size_t shape[1] = {1};
    lowbit_forward(arg, LOWBIT_F32, NULL, y, shape, 1);
    pthread_setspecific(exit_key, arg);
    return NULL;
}

static void thread_exit(void) {
    lowbit_quantizer *q = make("ste_sign");
    pthread_t t;
    CHECK(pthread_key_create(&exit_key, on_thread_exit) == 0, "pthread_key_create");
    CHECK(pthread_create(&t, NULL, exiting_thread, q) == 0, "pthread_create");
    pthread_join(t, NULL);
    CHECK(exit_failing == LOWBIT_ERR_NULL, "a failing call at thread exit: %d", exit_failing);
    CHECK(exit_message != NULL, "lowbit_last_error at thread exit is a string");
    CHECK(exit_working == LOWBIT_OK, "a working call at thread exit: %d", exit_working);
    CHECK(exit_y[0] == -1 && exit_y[1] == -1 && exit_y[2] == 1 && exit_y[3] == 1, "its results");
    pthread_key_delete(exit_key);
    lowbit_quantizer_free(q);
}

/* After the parent has used lowbit (its worker threads started), a forked
 * child has none of them: its calls must still work. The parent waits with
 * a timeout, so a hang fails instead of hanging the test. */
static void forked_child(void) {
    enum { N = 1 << 20 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    for (int i = 0; i < N; i++) x[i] = (float)(i % 7) - 3.0f;
    size_t shape[2] = {N / 64, 64};
    lowbit_quantizer *q = make("ste_sign"), *m = make("magnitude_aware_sign");
    CHECK(lowbit_forward(q, LOWBIT_F32, x, y, shape, 2) == LOWBIT_OK, "parent: %s", lowbit_last_error());
    CHECK(lowbit_forward(m, LOWBIT_F32, x, y, shape, 2) == LOWBIT_OK, "parent mas");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int ok = lowbit_forward(q, LOWBIT_F32, x, y, shape, 2) == LOWBIT_OK;
        for (int i = 0; i < N; i++) ok &= y[i] == sign_(x[i]);
        ok &= lowbit_forward(m, LOWBIT_F32, x, y, shape, 2) == LOWBIT_OK;
        _exit(ok ? 0 : 1);
    }
    CHECK(pid > 0, "fork");
    int status = 0;
    pid_t done = 0;
    struct timespec tick = {0, 10 * 1000 * 1000};
    for (int waited = 0; pid > 0 && done == 0 && waited < 3000; waited++) {
        done = waitpid(pid, &status, WNOHANG);
        if (done == 0) nanosleep(&tick, NULL);
    }
    if (pid > 0 && done == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        CHECK(0, "the forked child's call hung (killed after 30 s)");
    } else {
        CHECK(done == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0, "the forked child's calls failed");
    }
    lowbit_quantizer_free(q);
    lowbit_quantizer_free(m);
    free(x);
    free(y);
}

int main(void) {
    elementwise("ste_sign", sign_, ste_);
    elementwise("approx_sign", sign_, approx_);
    elementwise("ste_heaviside", heaviside_, ste_);
    elementwise("ste_tern(threshold_value=0.1)", tern_, ste_);
    elementwise("dorefa(k_bit=2)", dorefa_, dorefa_grad_);
    elementwise("noop(precision=8)", ident_, pass_);
    magnitude_aware();
    half_types();
    spec_round_trip();
    errors();
    masks();
    thresholds();
    hostile_sizes();
    thread_exit();
    forked_child();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
