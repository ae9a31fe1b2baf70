/* How long reading a buffer takes beside copying it, on two threads: the
 * floor of a pass that reduces before it maps (BENCHMARKS.md, issue 16).
 *
 *   cc -O2 -mavx512f -pthread scripts/read_vs_copy.c -o /tmp/read_vs_copy
 *   /tmp/read_vs_copy 33554432     # 32 MiB, an f16 tensor of 2^24
 *   /tmp/read_vs_copy 1073741824   # 1 GiB, past a 300 MiB L3
 *
 * Each line is the median of 15 runs; a run starts its two threads anew.
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static size_t n;
static char *src, *dst;
static volatile uint64_t sink;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

struct half { int id, read; };

static void *work(void *p) {
    struct half *h = p;
    size_t len = n / 2, at = h->id * len;
    if (!h->read) {
        memcpy(dst + at, src + at, len);
        return 0;
    }
    /* Four independent sums, so the adds never wait on each other. */
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = at; i < at + len; i += 256) {
        s0 = _mm512_add_epi64(s0, _mm512_load_si512(src + i));
        s1 = _mm512_add_epi64(s1, _mm512_load_si512(src + i + 64));
        s2 = _mm512_add_epi64(s2, _mm512_load_si512(src + i + 128));
        s3 = _mm512_add_epi64(s3, _mm512_load_si512(src + i + 192));
    }
    sink += _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
    return 0;
}

static double run(int read) {
    pthread_t t[2];
    struct half h[2];
    double start = now();
    for (int i = 0; i < 2; i++) {
        h[i] = (struct half){i, read};
        pthread_create(&t[i], 0, work, &h[i]);
    }
    for (int i = 0; i < 2; i++) pthread_join(t[i], 0);
    return now() - start;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    n = argc > 1 ? strtoull(argv[1], 0, 10) & ~(size_t)511 : (size_t)32 << 20;
    src = aligned_alloc(64, n);
    dst = aligned_alloc(64, n);
    if (!src || !dst) return 1;
    memset(src, 1, n);
    memset(dst, 2, n);
    double ms[2];
    for (int read = 0; read < 2; read++) {
        double t[15];
        for (int k = 0; k < 15; k++) t[k] = run(read);
        qsort(t, 15, sizeof t[0], by_value);
        ms[read] = t[7] * 1e3;
    }
    printf("%zu bytes: copy %.3f ms, read %.3f ms, read/copy %.2f\n", n, ms[0], ms[1], ms[1] / ms[0]);
    return 0;
}
