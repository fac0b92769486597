/* verify/vf_math: the project's exp against glibc's over dense sweeps of the
 * ranges used (inputs <= 0 after the max is subtracted, down to the underflow
 * end), and every vector path against the scalar definitions written here
 * from vf_math.h, bit for bit. */
#include "tutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../verify/vf_math.h"
#include "../verify/vf_model.h"

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static uint64_t dbits(double d) { uint64_t u; memcpy(&u, &d, 8); return u; }
/* distance in units in the last place between two non-negative values */
static uint64_t ulps_f(float a, float b)
{
    uint32_t x = fbits(a), y = fbits(b);
    return x > y ? x - y : y - x;
}
static uint64_t ulps_d(double a, double b)
{
    uint64_t x = dbits(a), y = dbits(b);
    return x > y ? x - y : y - x;
}

/* Calls f(path) for every vector path this CPU has. */
static int n_paths(int *paths)
{
    int n = 0;
    for (int p = VF_MATH_PORTABLE; p <= VF_MATH_AVX512; p++) {
        vf_math_force_path(p);
        if (vf_math_path() == p) paths[n++] = p;
    }
    vf_math_force_path(-1);
    return n;
}

static void test_expf_accuracy(void **state)
{
    (void)state;
    uint64_t worst = 0;
    float worst_x = 0;
    size_t n = 0;
    /* [-104, 1]: a step of 2^-13 (about 860k inputs), then every float of the
     * subnormal end [-104, -87.3] with a step of 2^-16 */
    for (float x = -104.0f; x <= 1.0f; x += 0x1p-13f, n++) {
        uint64_t u = ulps_f(vf_expf_ref(x), expf(x));
        if (u > worst) worst = u, worst_x = x;
    }
    for (float x = -104.0f; x <= -87.0f; x += 0x1p-16f, n++) {
        uint64_t u = ulps_f(vf_expf_ref(x), expf(x));
        if (u > worst) worst = u, worst_x = x;
    }
    /* small magnitudes, where exp(x) is 1 - tiny */
    for (float x = -0x1p-10f; x < 0; x *= 0.99f, n++) {
        uint64_t u = ulps_f(vf_expf_ref(x), expf(x));
        if (u > worst) worst = u, worst_x = x;
        if (x > -0x1p-40f) break;
    }
    print_message("expf: %zu inputs, worst %llu ulp at %a\n", n, (unsigned long long)worst,
                  (double)worst_x);
    assert_true(worst <= 1);
    assert_true(vf_expf_ref(0.0f) == 1.0f);
    assert_true(vf_expf_ref(-0.0f) == 1.0f);
    assert_true(vf_expf_ref(-104.5f) == 0.0f);
    assert_true(vf_expf_ref(-INFINITY) == 0.0f);
    assert_true(vf_expf_ref(NAN) == 0.0f);
    assert_true(vf_expf_ref(-103.9f) > 0.0f);   /* subnormal, not flushed */
    assert_true(isinf(vf_expf_ref(89.0f)));
    assert_true(vf_expf_ref(88.5f) == expf(88.5f) || ulps_f(vf_expf_ref(88.5f), expf(88.5f)) <= 1);
}

static void test_exp_accuracy(void **state)
{
    (void)state;
    uint64_t worst = 0;
    double worst_x = 0;
    size_t n = 0;
    /* [-746, 1] with a step of about 2^-12 + an irrational offset (3M inputs),
     * then the subnormal end [-745.2, -708] more densely */
    double step = 0x1p-12 * 1.0000000123;
    for (double x = -746.0; x <= 1.0; x += step, n++) {
        uint64_t u = ulps_d(vf_exp_ref(x), exp(x));
        if (u > worst) worst = u, worst_x = x;
    }
    for (double x = -745.2; x <= -708.0; x += 0x1p-16 * 1.000001, n++) {
        uint64_t u = ulps_d(vf_exp_ref(x), exp(x));
        if (u > worst) worst = u, worst_x = x;
    }
    for (double x = -0x1p-10; x > -0x1p-60; x *= 0.97, n++) {
        uint64_t u = ulps_d(vf_exp_ref(x), exp(x));
        if (u > worst) worst = u, worst_x = x;
    }
    print_message("exp: %zu inputs, worst %llu ulp at %a\n", n, (unsigned long long)worst,
                  worst_x);
    assert_true(worst <= 1);
    assert_true(vf_exp_ref(0.0) == 1.0);
    assert_true(vf_exp_ref(-746.5) == 0.0);
    assert_true(vf_exp_ref(-INFINITY) == 0.0);
    assert_true(vf_exp_ref(NAN) == 0.0);
    assert_true(vf_exp_ref(-745.0) > 0.0);   /* the smallest subnormal */
    assert_true(isinf(vf_exp_ref(710.0)));
    assert_true(ulps_d(vf_exp_ref(700.0), exp(700.0)) <= 1);
}

/* Every path's vf_expf_n / vf_exp_n give vf_expf_ref / vf_exp_ref bit for bit,
 * for lengths with and without a partial last vector. */
static void test_exp_paths(void **state)
{
    (void)state;
    enum { N = 200003 };
    float *xf = malloc(N * sizeof(float)), *yf = malloc((N + 1) * sizeof(float));
    double *xd = malloc(N * sizeof(double)), *yd = malloc(N * sizeof(double));
    uint64_t rs = 7;
    for (int i = 0; i < N; i++) {
        /* mostly the used range (<= 0), some positive, some past both ends */
        double u = (double)(tu_rand(&rs) >> 11) * 0x1p-53;
        xf[i] = (float)(-110.0 + 210.0 * u);
        xd[i] = -760.0 + 1480.0 * u;
        if (i % 97 == 0) xf[i] = -(float)u * 1e-3f, xd[i] = -u * 1e-9;
    }
    xf[5] = -INFINITY, xd[5] = -INFINITY;
    xf[6] = NAN, xd[6] = NAN;   /* clamped like everything below the range: 0 */
    xf[7] = INFINITY, xd[7] = INFINITY;
    int paths[3], np = n_paths(paths);
    for (int pi = 0; pi < np; pi++) {
        vf_math_force_path(paths[pi]);
        print_message("path %s\n", vf_math_path_name());
        for (int len = N; len >= N - 17; len -= 3) {
            memset(yf, 0xff, (N + 1) * sizeof(float));
            memset(yd, 0xff, N * sizeof(double));
            vf_expf_n(yf, xf, (size_t)len);
            vf_exp_n(yd, xd, (size_t)len);
            for (int i = 0; i < len; i++) {
                if (fbits(yf[i]) != fbits(vf_expf_ref(xf[i])))
                    fail_msg("%s expf(%a) = %a, reference %a", vf_math_path_name(), (double)xf[i],
                             (double)yf[i], (double)vf_expf_ref(xf[i]));
                if (dbits(yd[i]) != dbits(vf_exp_ref(xd[i])))
                    fail_msg("%s exp(%a) = %a, reference %a", vf_math_path_name(), xd[i], yd[i],
                             vf_exp_ref(xd[i]));
            }
            assert_true(fbits(yf[len]) == 0xffffffffu);   /* nothing written past n */
        }
    }
    vf_math_force_path(-1);
    free(xf); free(yf); free(xd); free(yd);
}

/* vf_expf_glibc against libm's expf, where libm is glibc's FMA build (glibc on
 * x86-64 with AVX2 and FMA, as LLMPACK_SIMD leaves them: its expf then is
 * __expf_fma), on every 61st bit pattern of
 * the floats and on the special cases' edges; everywhere, within 1 ulp of exp
 * in double rounded to float. */
static void test_expf_glibc(void **state)
{
    (void)state;
    int same_libm = 0;
#if defined(__GLIBC__) && defined(__x86_64__)
    same_libm = (lpk_cpu_features() & (LPK_CPU_FMA | LPK_CPU_AVX2)) ==
                (LPK_CPU_FMA | LPK_CPU_AVX2);
#endif
    static const float edge[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 88.0f, -88.0f,
                                 0x1.62e42ep6f, 0x1.62e430p6f, -0x1.9fe368p6f, -0x1.9fe36ap6f,
                                 -0x1.9d1d9ep6f, -0x1.9d1da0p6f, -0x1.9d1d9cp6f, 0x1p-149f, -1e-30f};
    uint64_t n = 0, worst = 0;
    for (uint64_t b = 0; b < (1ull << 32) + 16 * 61; b += 61, n++) {
        float x;
        if (b < (1ull << 32)) {
            uint32_t u = (uint32_t)b;
            memcpy(&x, &u, 4);
        } else {
            x = edge[(b - (1ull << 32)) / 61];
        }
        float y = vf_expf_glibc(x);
        if (same_libm && fbits(y) != fbits(expf(x)))
            fail_msg("vf_expf_glibc(%a) = %a, glibc's expf %a", (double)x, (double)y, (double)expf(x));
        float e = (float)exp((double)x);
        if (isnan(x)) {
            assert_true(isnan(y));
        } else {
            uint64_t d = ulps_f(y, e);
            if (d > 1) fail_msg("vf_expf_glibc(%a) = %a, exp %a", (double)x, (double)y, (double)e);
            worst = d > worst ? d : worst;
        }
    }
    print_message("vf_expf_glibc: %llu inputs, worst %llu ulp against exp; %s\n",
                  (unsigned long long)n, (unsigned long long)worst,
                  same_libm ? "same bits as libm's expf" : "libm not compared");
}

/* Every path's vf_swiglu gives the scalar definition bit for bit (inputs past
 * the special-case edges in some vectors, lengths with partial vectors). */
static void test_swiglu_paths(void **state)
{
    (void)state;
    enum { N = 4099 };
    float *g = malloc(N * sizeof(float)), *u = malloc(N * sizeof(float));
    float *h = malloc((N + 1) * sizeof(float)), *want = malloc(N * sizeof(float));
    uint64_t rs = 11;
    for (int i = 0; i < N; i++) {
        double a = (double)(tu_rand(&rs) >> 11) * 0x1p-53, b = (double)(tu_rand(&rs) >> 11) * 0x1p-53;
        g[i] = (float)(-12.0 + 24.0 * a);
        u[i] = (float)(-4.0 + 8.0 * b);
        if (i % 331 == 5) g[i] = (float)(-120.0 + 240.0 * a); /* past +-88 */
    }
    g[3000] = INFINITY, g[3001] = -INFINITY, g[3002] = NAN, g[3003] = -0.0f, g[3004] = 0x1p-149f;
    g[3005] = -103.5f, g[3006] = 88.6f, g[3007] = -88.6f;
    for (int i = 0; i < N; i++) want[i] = g[i] / (1.0f + vf_expf_glibc(-g[i])) * u[i];
    int paths[3], np = n_paths(paths);
    for (int pi = 0; pi < np; pi++) {
        vf_math_force_path(paths[pi]);
        for (int len = N; len >= N - 17; len -= 3) {
            memcpy(h, g, (size_t)len * sizeof(float));
            h[len] = 12345.0f;
            vf_swiglu(h, u, (size_t)len);
            for (int i = 0; i < len; i++)
                if (fbits(h[i]) != fbits(want[i]))
                    fail_msg("%s swiglu(%a, %a) = %a, reference %a", vf_math_path_name(),
                             (double)g[i], (double)u[i], (double)h[i], (double)want[i]);
            assert_true(h[len] == 12345.0f);
        }
    }
    vf_math_force_path(-1);
    free(g); free(u); free(h); free(want);
}

/* ------------------------------------------------ scalar definitions (vf_math.h) */
static double ref_sum_exp(const float *x, int n, float mx)
{
    double a[VF_SUM_LANES] = {0};
    for (int i = 0; i < n; i++) a[i % VF_SUM_LANES] += vf_exp_ref((double)x[i] - (double)mx);
    return vf_sum_lanes(a);
}

static double ref_kld(const float *p, double pl, const float *q, double ql, int n)
{
    double a[VF_SUM_LANES] = {0};
    for (int i = 0; i < n; i++) {
        double lp = (double)p[i] - pl, lq = (double)q[i] - ql;
        a[i % VF_SUM_LANES] += vf_exp_ref(lp) * (lp - lq);
    }
    return vf_sum_lanes(a);
}

static void ref_softmax(float *att, int n, float scale)
{
    float mx = -INFINITY;
    for (int p = 0; p < n; p++) {
        att[p] *= scale;
        if (att[p] > mx) mx = att[p];
    }
    double a[VF_SUM_LANES] = {0};
    for (int p = 0; p < n; p++) {
        att[p] = vf_expf_ref(att[p] - mx);
        a[p % VF_SUM_LANES] += att[p];
    }
    float inv = (float)(1.0 / vf_sum_lanes(a));
    for (int p = 0; p < n; p++) att[p] *= inv;
}

static void fill(float *x, int n, uint64_t *rs, float sd)
{
    for (int i = 0; i < n; i++) x[i] = sd * tu_randn(rs);
}

static void test_reductions_paths(void **state)
{
    (void)state;
    enum { V = 32000 };
    float *p = malloc(V * sizeof(float)), *q = malloc(V * sizeof(float));
    float *a = malloc((V + 64) * sizeof(float)), *b = malloc((V + 64) * sizeof(float));
    uint64_t rs = 11;
    const int lens[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100, 255, 511, 4097, V};
    int paths[3], np = n_paths(paths);
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        int n = lens[li];
        fill(p, n, &rs, 4.0f);
        fill(q, n, &rs, 4.0f);
        for (int i = 0; i < n; i++) q[i] += p[i];
        if (n > 20) p[n / 3] = p[n - 2] = 30.0f;   /* a tie: the first index wins */
        int im = 0;
        for (int i = 1; i < n; i++)
            if (p[i] > p[im]) im = i;
        double pl = p[im] + log(ref_sum_exp(p, n, p[im]));
        double ql = 0.5;
        double want_s = ref_sum_exp(p, n, p[im]), want_k = ref_kld(p, pl, q, ql, n);
        memcpy(a, q, (size_t)n * sizeof(float));
        ref_softmax(a, n, 0.125f);
        for (int pi = 0; pi < np; pi++) {
            vf_math_force_path(paths[pi]);
            int got_i = -1;
            float got_m = vf_max_index(p, n, &got_i);
            assert_int_equal(got_i, im);
            assert_true(fbits(got_m) == fbits(p[im]));
            assert_true(dbits(vf_sum_exp(p, n, p[im])) == dbits(want_s));
            assert_true(dbits(vf_kld_sum(p, pl, q, ql, n)) == dbits(want_k));
            memcpy(b, q, (size_t)n * sizeof(float));
            vf_softmax(b, n, 0.125f);
            assert_memory_equal(a, b, (size_t)n * sizeof(float));
        }
        vf_math_force_path(-1);
    }
    /* the logsumexp of the scoring against the textbook formula */
    double direct = 0;
    for (int i = 0; i < V; i++) direct += exp((double)p[i] - 30.0);
    assert_true(fabs(vf_logsumexp(p, V, NULL) - (30.0 + log(direct))) < 1e-12);
    free(p); free(q); free(a); free(b);
}

/* Attention kernels: scores and weighted sums of 1..4 queries equal the plain
 * loops bit for bit on every path. */
static void test_attention_paths(void **state)
{
    (void)state;
    enum { NMAX = 200, LD = 256, QD = 300 };
    const int hds[] = {8, 20, 32, 48, 64, 72};
    uint64_t rs = 3;
    float *kt = malloc((size_t)72 * LD * sizeof(float)), *q = malloc(4 * QD * sizeof(float));
    float *v = malloc((size_t)NMAX * QD * sizeof(float)), *w = malloc(4 * LD * sizeof(float));
    float *want = malloc(4 * LD * sizeof(float)), *got = malloc(4 * LD * sizeof(float));
    float *wo = malloc(4 * QD * sizeof(float)), *go = malloc(4 * QD * sizeof(float));
    int paths[3], np = n_paths(paths);
    for (size_t hi = 0; hi < sizeof hds / sizeof hds[0]; hi++) {
        int hd = hds[hi];
        fill(kt, 72 * LD, &rs, 1.0f);
        fill(q, 4 * QD, &rs, 1.0f);
        fill(v, NMAX * QD, &rs, 1.0f);
        fill(w, 4 * LD, &rs, 0.1f);
        for (int nq = 1; nq <= 4; nq++)
            for (int n = 1; n <= NMAX; n += 37) {
                for (int j = 0; j < nq; j++)
                    for (int p = 0; p < n; p++) {
                        float s = 0;
                        for (int i = 0; i < hd; i++) s += q[j * QD + i] * kt[i * LD + p];
                        want[j * LD + p] = s;
                    }
                /* o = w[0..n0) v, then rows j > 0 continue to n0 + j */
                int n0 = n / 2 + 1;
                for (int j = 0; j < nq; j++)
                    for (int i = 0; i < hd; i++) {
                        float s = 0;
                        for (int p = 0; p < n0 + j; p++) s += w[j * LD + p] * v[p * QD + i];
                        wo[j * QD + i] = s;
                    }
                for (int pi = 0; pi < np; pi++) {
                    vf_math_force_path(paths[pi]);
                    vf_attn_scores(got, LD, q, QD, nq, kt, LD, hd, n);
                    for (int j = 0; j < nq; j++)
                        assert_memory_equal(want + j * LD, got + j * LD, (size_t)n * 4);
                    vf_attn_wsum(go, QD, w, LD, nq, v, QD, hd, 0, n0, 0);
                    for (int j = 1; j < nq; j++)
                        vf_attn_wsum(go + j * QD, QD, w + j * LD, LD, 1, v, QD, hd, n0, n0 + j, 1);
                    for (int j = 0; j < nq; j++)
                        assert_memory_equal(wo + j * QD, go + j * QD, (size_t)hd * 4);
                }
                vf_math_force_path(-1);
            }
    }
    free(kt); free(q); free(v); free(w); free(want); free(got); free(wo); free(go);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expf_accuracy),
        cmocka_unit_test(test_exp_accuracy),
        cmocka_unit_test(test_exp_paths),
        cmocka_unit_test(test_expf_glibc),
        cmocka_unit_test(test_swiglu_paths),
        cmocka_unit_test(test_reductions_paths),
        cmocka_unit_test(test_attention_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
