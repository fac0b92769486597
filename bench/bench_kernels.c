/* vf_matmul throughput against the machine's measured peak.
 *
 *   bench_kernels [--threads 1,2] [--types f32,q4_0,...] [--shapes large,small,1b]
 *                 [--min-time S] [--jsonl FILE] [--describe]
 *
 * --jsonl appends one JSON object per line to FILE (the peaks, then one per
 * measurement); --describe prints the SIMD paths in use and exits.
 *
 * Peak: a register-only loop of independent FMAs (fp32) and of vpdpbusd (int8,
 * VNNI) or vpmaddubsw + vpmaddwd + vpaddd (int8, AVX2), in the widest vectors the
 * CPU has, on every thread. GEMM rates count 2 operations per multiply-add:
 * 2 * n_out * n_in * n_tok per call. Weights are random but valid blocks. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "../format/lpk.h"
#include "../verify/vf_gemm.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process (all threads). The machine is shared, so
 * rates are also given per CPU-second actually received: ops / cpu * threads,
 * the rate the threads would reach with a core each. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- peak loops */
static volatile float sink_f;
static volatile int sink_i;

#if defined(__x86_64__)
#define PEAK_ITERS 20000000L

/* Register-only loops: 12 independent accumulators (named, so they stay in
 * registers) hide the 4-5 cycle latency on every execution port. */
#define ACC12(OP)                                                                  \
    do {                                                                           \
        a0 = OP(a0); a1 = OP(a1); a2 = OP(a2); a3 = OP(a3); a4 = OP(a4); a5 = OP(a5); \
        a6 = OP(a6); a7 = OP(a7); a8 = OP(a8); a9 = OP(a9); a10 = OP(a10); a11 = OP(a11); \
    } while (0)
/* declares the 12 accumulators a0..a11 of type T, a_k = INIT(k) */
#define DECL12(T, INIT)                                                            \
    T a0 = INIT(0), a1 = INIT(1), a2 = INIT(2), a3 = INIT(3), a4 = INIT(4), a5 = INIT(5), \
      a6 = INIT(6), a7 = INIT(7), a8 = INIT(8), a9 = INIT(9), a10 = INIT(10), a11 = INIT(11)
#define SUM12(ADD) ADD(ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7))), \
                       ADD(ADD(a8, a9), ADD(a10, a11)))

__attribute__((target("avx512f"))) static double peak_fma512(long n)
{
    __m512 b = _mm512_set1_ps(sink_f + 1.0f), c = _mm512_set1_ps(sink_f + 0.5f);
#define I512(k) _mm512_set1_ps(sink_f + (float)(k))
    DECL12(__m512, I512);
#define F512(a) _mm512_fmadd_ps(a, b, c)
    for (long i = 0; i < n; i++) ACC12(F512);
    sink_f = _mm512_reduce_add_ps(SUM12(_mm512_add_ps));
    return (double)n * 12 * 16 * 2;
}

__attribute__((target("avx2,fma"))) static double peak_fma256(long n)
{
    __m256 b = _mm256_set1_ps(sink_f + 1.0f), c = _mm256_set1_ps(sink_f + 0.5f);
#define I256(k) _mm256_set1_ps(sink_f + (float)(k))
    DECL12(__m256, I256);
#define F256(a) _mm256_fmadd_ps(a, b, c)
    for (long i = 0; i < n; i++) ACC12(F256);
    float t[8];
    _mm256_storeu_ps(t, SUM12(_mm256_add_ps));
    sink_f = t[0];
    return (double)n * 12 * 8 * 2;
}

/* 64 u8 x s8 multiply-adds per vpdpbusd */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static double peak_vnni512(long n)
{
    __m512i b = _mm512_set1_epi8((char)(sink_i + 3)), c = _mm512_set1_epi8((char)(sink_i + 5));
#define J512(k) _mm512_set1_epi32(sink_i + (k))
    DECL12(__m512i, J512);
#define D512(a) _mm512_dpbusd_epi32(a, b, c)
    for (long i = 0; i < n; i++) ACC12(D512);
    sink_i = _mm512_reduce_add_epi32(SUM12(_mm512_add_epi32));
    return (double)n * 12 * 64 * 2;
}

/* 64 u8 x s8 multiply-adds per vpmaddubsw + vpmaddwd + vpaddd (zmm); the
 * inputs change every iteration so the products cannot be hoisted. */
__attribute__((target("avx512f,avx512bw"))) static double peak_maddubs512(long n)
{
    __m512i b = _mm512_set1_epi8((char)(sink_i + 3));
    __m512i one = _mm512_set1_epi16(1);
    DECL12(__m512i, J512);
#define M512(a) _mm512_add_epi32(a, _mm512_madd_epi16(_mm512_maddubs_epi16(b, a), one))
    for (long i = 0; i < n; i++) ACC12(M512);
    sink_i = _mm512_reduce_add_epi32(SUM12(_mm512_add_epi32));
    return (double)n * 12 * 64 * 2;
}

__attribute__((target("avx2"))) static double peak_maddubs256(long n)
{
    __m256i b = _mm256_set1_epi8((char)(sink_i + 3));
    __m256i one = _mm256_set1_epi16(1);
#define J256(k) _mm256_set1_epi32(sink_i + (k))
    DECL12(__m256i, J256);
#define M256(a) _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(b, a), one))
    for (long i = 0; i < n; i++) ACC12(M256);
    int t[8];
    _mm256_storeu_si256((__m256i *)(void *)t, SUM12(_mm256_add_epi32));
    sink_i = t[0];
    return (double)n * 12 * 32 * 2;
}

/* Runs fn on `threads` threads at once; returns total operations per CPU-
 * normalised second (see cpu_now), best of 3. */
static double run_peak(double (*fn)(long), int threads)
{
    double ops = 0, best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double c0 = cpu_now();
        ops = 0;
#pragma omp parallel num_threads(threads) reduction(+ : ops)
        ops += fn(PEAK_ITERS / 4);
        double r = ops / (cpu_now() - c0) * threads;
        if (r > best) best = r;
    }
    return best;
}
#endif

/* ---------------------------------------------------------------- weights */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_u64(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static float next_f(void) { return (float)((int64_t)(next_u64() >> 40) - (1 << 23)) / (float)(1 << 23); }

static void put_half(uint8_t *p, float v)
{
    uint16_t h = lpk_f32_to_f16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* Random quant bytes with normal-sized f16 scales (no subnormals or NaN). */
static uint8_t *make_weights(int t, int64_t n_out, int64_t n_in, size_t *bytes)
{
    uint64_t rb;
    if (lpk_type_nbytes(t, (uint64_t)n_in, &rb) != LPK_OK) return NULL;
    size_t n = (size_t)rb * (size_t)n_out;
    uint8_t *w = malloc(n);
    if (!w) return NULL;
    const lpk_type_info *ti = lpk_type_get(t);
    if (t == LPK_TYPE_F32) {
        for (size_t i = 0; i < n / 4; i++) ((float *)(void *)w)[i] = 0.05f * next_f();
    } else if (t == LPK_TYPE_F16 || t == LPK_TYPE_BF16) {
        for (size_t i = 0; i < n / 2; i++) {
            uint16_t h = t == LPK_TYPE_F16 ? lpk_f32_to_f16(0.05f * next_f())
                                           : lpk_f32_to_bf16(0.05f * next_f());
            memcpy(w + 2 * i, &h, 2);
        }
    } else {
        for (size_t i = 0; i < n; i += 8) {
            uint64_t r = next_u64();
            memcpy(w + i, &r, n - i < 8 ? n - i : 8);
        }
        for (size_t b = 0; b < n / (size_t)ti->type_size; b++) {
            uint8_t *p = w + b * (size_t)ti->type_size;
            /* the f16 scales where each layout has them (quant/quant.h) */
            if (t == LPK_TYPE_Q6_K) { put_half(p + 208, 0.001f); continue; }
            if (t == LPK_TYPE_Q3_K) { put_half(p + 108, 0.001f); continue; }
            if (t == LPK_TYPE_Q2_K) { put_half(p + 80, 0.003f); put_half(p + 82, 0.002f); continue; }
            put_half(p, 0.003f);
            if (t == LPK_TYPE_Q4_1 || t == LPK_TYPE_Q5_1 || t == LPK_TYPE_Q4_K || t == LPK_TYPE_Q5_K)
                put_half(p + 2, 0.002f);
        }
    }
    *bytes = n;
    return w;
}

/* ---------------------------------------------------------------- main */
/* cls: the group --shapes selects it by (besides its name): "large" (7B),
 * "small" (llama2-20m) or "1b" (TinyLlama-1.1B: wq/wo, ffn_gate/up, ffn_down;
 * not in the default set) */
typedef struct { const char *name; int64_t n_out, n_in; const char *cls; } shape;

static const shape shapes[] = {
    {"4096x4096", 4096, 4096, "large"}, {"4096x11008", 4096, 11008, "large"},
    {"256x256", 256, 256, "small"},     {"768x256", 768, 256, "small"},
    {"256x768", 256, 768, "small"},     {"32000x256", 32000, 256, "small"},
    {"2048x2048", 2048, 2048, "1b"},    {"5632x2048", 5632, 2048, "1b"},
    {"2048x5632", 2048, 5632, "1b"},
};

static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && strncmp(p, name, n) == 0) return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

/* Waiting OpenMP threads sleep (as in llmpack itself) unless the caller chose
 * a policy: spinning workers would add their waits on a shared machine to the
 * CPU time the per-CPU-second rates divide by. libgomp reads the policy before
 * main(), hence the one re-execution. */
static void passive_openmp(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    execv("/proc/self/exe", argv);
}

int main(int argc, char **argv)
{
    passive_openmp(argv);
    const char *threads_s = "1,2", *types_s = "f32,f16,bf16,q8_0,q4_0,q4_1,q5_0,q5_1,q4_k,q6_k,"
                                                   "q5_k,q3_k,q2_k,iq4_nl,iq4_xs";
    const char *shapes_s = "large,small", *json_path = NULL;
    double min_time = 0.5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads_s = argv[++i];
        else if (!strcmp(argv[i], "--types") && i + 1 < argc) types_s = argv[++i];
        else if (!strcmp(argv[i], "--shapes") && i + 1 < argc) shapes_s = argv[++i];
        else if (!strcmp(argv[i], "--min-time") && i + 1 < argc) min_time = atof(argv[++i]);
        else if (!strcmp(argv[i], "--jsonl") && i + 1 < argc) json_path = argv[++i];
        else if (!strcmp(argv[i], "--describe")) {
            printf("%s (vf_matmul: fp32 %s, int8 %s)\n", lpk_cpu_describe(),
                   vf_gemm_path_name(LPK_TYPE_F16), vf_gemm_path_name(LPK_TYPE_Q4_0));
            return 0;
        }
        else { fprintf(stderr, "usage: bench_kernels [--threads 1,2] [--types LIST] "
                               "[--shapes large,small,1b] [--min-time S] [--jsonl FILE] [--describe]\n"); return 2; }
    }
    int thr[8], n_thr = 0;
    for (const char *p = threads_s; p && *p && n_thr < 8;) {
        thr[n_thr++] = atoi(p);
        p = strchr(p, ',');
        if (p) p++;
    }
    FILE *js = json_path ? fopen(json_path, "a") : NULL;
    if (json_path && !js) { perror(json_path); return 1; }

    /* peaks */
    unsigned f = lpk_cpu_features();
    double pf[8] = {0}, pi[8] = {0};
    const char *pf_name = "none", *pi_name = "none";
#if defined(__x86_64__)
    const unsigned avx512 = LPK_CPU_AVX512F | LPK_CPU_AVX512BW | LPK_CPU_AVX512VL;
    double (*ff)(long) = NULL, (*fi)(long) = NULL;
    if ((f & avx512) == avx512) { ff = peak_fma512; pf_name = "vfmadd231ps zmm"; }
    else if (f & LPK_CPU_AVX2) { ff = peak_fma256; pf_name = "vfmadd231ps ymm"; }
    if ((f & avx512) == avx512 && (f & LPK_CPU_AVX512VNNI)) { fi = peak_vnni512; pi_name = "vpdpbusd zmm"; }
    else if ((f & avx512) == avx512) { fi = peak_maddubs512; pi_name = "vpmaddubsw+vpmaddwd+vpaddd zmm"; }
    else if (f & LPK_CPU_AVX2) { fi = peak_maddubs256; pi_name = "vpmaddubsw+vpmaddwd+vpaddd ymm"; }
    for (int k = 0; k < n_thr; k++) {
        if (ff) pf[k] = run_peak(ff, thr[k]);
        if (fi) pi[k] = run_peak(fi, thr[k]);
    }
#endif
    printf("SIMD: %s (peaks per CPU-second received x threads)\n", lpk_cpu_describe());
    for (int k = 0; k < n_thr; k++)
        printf("peak, %d thread%s: fp32 %.1f GFLOP/s (%s), int8 %.1f GOP/s (%s)\n", thr[k],
               thr[k] > 1 ? "s" : "", pf[k] / 1e9, pf_name, pi[k] / 1e9, pi_name);
    for (int k = 0; js && k < n_thr; k++)
        fprintf(js, "{\"bench\": \"peak\", \"threads\": %d, \"fp32_gflops\": %.2f, "
                    "\"fp32_loop\": \"%s\", \"int8_gops\": %.2f, \"int8_loop\": \"%s\"}\n",
                thr[k], pf[k] / 1e9, pf_name, pi[k] / 1e9, pi_name);
    printf("\nG(FL)OP/s: wall = per wall-clock second; cpu = per CPU-second received x threads\n");
    printf("of peak: of the peak measured at the start; of local: of the same peak loop run\n"
           "right before and right after the calls (the higher)\n");
    printf("%-6s %-12s %-11s %5s %4s %10s %10s %10s %8s %8s\n", "type", "path", "W shape", "n_tok",
           "thr", "ms/call", "wall", "cpu", "of peak", "of local");
    const int64_t n_tok = 512;
    const char *tn[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q6_k",
                        "q5_k", "q3_k", "q2_k", "iq4_nl", "iq4_xs"};
    float *x = malloc(sizeof(float) * (size_t)(n_tok * 11008));
    float *y = malloc(sizeof(float) * (size_t)(n_tok * 32000));
    if (!x || !y) return 1;
    for (int64_t i = 0; i < n_tok * 11008; i++) x[i] = next_f();
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        if (!in_list(shapes_s, shapes[s].cls) && !in_list(shapes_s, shapes[s].name))
            continue;
        for (size_t ti = 0; ti < sizeof tn / sizeof tn[0]; ti++) {
            if (!in_list(types_s, tn[ti])) continue;
            int t = lpk_type_from_name(tn[ti]);
            size_t nbytes;
            uint8_t *w = make_weights(t, shapes[s].n_out, shapes[s].n_in, &nbytes);
            if (!w) { fprintf(stderr, "out of memory\n"); return 1; }
            int fp = t == LPK_TYPE_F32 || t == LPK_TYPE_F16 || t == LPK_TYPE_BF16;
            for (int k = 0; k < n_thr; k++) {
                omp_set_num_threads(thr[k]);
                double ops = 2.0 * (double)shapes[s].n_out * (double)shapes[s].n_in * (double)n_tok;
                if (vf_matmul(w, t, shapes[s].n_out, shapes[s].n_in, x, n_tok, y) != 0) return 1;
                double (*pfn)(long) = NULL;
#if defined(__x86_64__)
                pfn = fp ? ff : fi;
#endif
                double lpeak = pfn ? run_peak(pfn, thr[k]) : 0;
                int reps = 0;
                double t0 = now(), c0 = cpu_now(), el;
                do {
                    vf_matmul(w, t, shapes[s].n_out, shapes[s].n_in, x, n_tok, y);
                    reps++;
                    el = now() - t0;
                } while (el < min_time);
                double cpu = cpu_now() - c0;
                double wall_rate = ops * reps / el, rate = ops * reps / cpu * thr[k];
                double peak = fp ? pf[k] : pi[k];
                double frac = peak > 0 ? rate / peak : 0;
                /* the same peak loop right before and right after the calls
                 * (the higher of the two): on a machine whose cores are shared
                 * with other guests the throughput a CPU-second buys drifts,
                 * and this ratio shares the drift */
                if (pfn) {
                    double p2 = run_peak(pfn, thr[k]);
                    lpeak = p2 > lpeak ? p2 : lpeak;
                }
                double lfrac = lpeak > 0 ? rate / lpeak : 0;
                printf("%-6s %-12s %-11s %5lld %4d %10.2f %10.1f %10.1f %7.1f%% %7.1f%%\n", tn[ti],
                       vf_gemm_path_name(t), shapes[s].name, (long long)n_tok, thr[k],
                       el / reps * 1e3, wall_rate / 1e9, rate / 1e9, frac * 100, lfrac * 100);
                fflush(stdout);
                if (js)
                    fprintf(js, "{\"bench\": \"kernels\", \"type\": \"%s\", \"path\": \"%s\", \"shape\": \"%s\", "
                                "\"n_out\": %lld, \"n_in\": %lld, \"n_tok\": %lld, \"threads\": %d, "
                                "\"ms_per_call\": %.3f, \"%s_wall\": %.2f, \"%s\": %.2f, \"frac_of_peak\": %.4f, "
                                "\"local_peak\": %.2f, \"frac_of_local_peak\": %.4f}\n",
                            tn[ti], vf_gemm_path_name(t), shapes[s].name,
                            (long long)shapes[s].n_out, (long long)shapes[s].n_in,
                            (long long)n_tok, thr[k], el / reps * 1e3,
                            fp ? "gflops" : "gops", wall_rate / 1e9, fp ? "gflops" : "gops",
                            rate / 1e9, frac, lpeak / 1e9, lfrac);
            }
            free(w);
        }
    }
    if (js) fclose(js);
    free(x);
    free(y);
    return 0;
}
