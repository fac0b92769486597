/* Quantizer benchmark and quality report over real weights.
 *
 *   bench_quant [--types q8_0,q4_0,...] [--threads 1,2] [--quality] FILE...
 *
 * FILE: .safetensors (f32/f16/bf16) files; every 2-D tensor is used. Speed:
 * the weights are held as f16 (the usual input of `quantize`), and each run
 * converts rows to f32 and quantizes them; the rate is bytes of f16 input per
 * second, printed beside the read bandwidth of the input files from the page
 * cache. --quality prints the pooled relative RMSE and bits per weight. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../format/lpk.h"
#include "../quant/quant.h"

typedef struct {
    char name[256];
    int64_t rows, cols;
    uint16_t *h; /* f16 values */
    float *f;    /* original values (--quality) */
} btensor;

static int keep_f32;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of this process (all threads): a load-independent cost figure. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return NULL; }
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r <= 0) { free(buf); buf = NULL; break; }
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    return buf;
}

/* Appends the 2-D tensors of a safetensors file. */
static int load_st(const char *path, btensor **ts, size_t *n)
{
    size_t len;
    uint8_t *buf = slurp(path, &len);
    if (!buf || len < 8) { fprintf(stderr, "%s: cannot read\n", path); free(buf); return -1; }
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)buf[i] << (8 * i);
    if (hl > len - 8) { fprintf(stderr, "%s: bad header\n", path); free(buf); return -1; }
    json_error_t je;
    json_t *root = json_loadb((const char *)buf + 8, hl, 0, &je);
    if (!root) { fprintf(stderr, "%s: bad json\n", path); free(buf); return -1; }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        json_t *shape = json_object_get(v, "shape"), *offs = json_object_get(v, "data_offsets");
        const char *dt = json_string_value(json_object_get(v, "dtype"));
        if (!shape || json_array_size(shape) != 2 || !dt || !offs) continue;
        int64_t r = json_integer_value(json_array_get(shape, 0));
        int64_t c = json_integer_value(json_array_get(shape, 1));
        uint64_t o0 = (uint64_t)json_integer_value(json_array_get(offs, 0));
        uint64_t o1 = (uint64_t)json_integer_value(json_array_get(offs, 1));
        int es = !strcmp(dt, "F32") ? 4 : (!strcmp(dt, "F16") || !strcmp(dt, "BF16")) ? 2 : 0;
        if (!es || r <= 0 || c <= 0 || o1 < o0 || o1 - o0 != (uint64_t)(r * c * es) ||
            o1 > len - 8 - hl)
            continue;
        const uint8_t *p = buf + 8 + hl + o0;
        *ts = realloc(*ts, (*n + 1) * sizeof **ts);
        btensor *t = &(*ts)[(*n)++];
        snprintf(t->name, sizeof t->name, "%s", key);
        t->rows = r;
        t->cols = c;
        t->h = malloc((size_t)(r * c) * 2);
        t->f = keep_f32 ? malloc((size_t)(r * c) * 4) : NULL;
        for (int64_t i = 0; i < r * c; i++) {
            float f;
            if (es == 4) memcpy(&f, p + 4 * i, 4);
            else {
                uint16_t u;
                memcpy(&u, p + 2 * i, 2);
                f = !strcmp(dt, "F16") ? lpk_f16_to_f32(u) : lpk_bf16_to_f32(u);
            }
            t->h[i] = lpk_f32_to_f16(f);
            if (t->f) t->f[i] = f;
        }
    }
    json_decref(root);
    free(buf);
    return 0;
}

/* Bytes per second of reading the files from the page cache (second pass). */
static double read_bw(int nf, char **files)
{
    double best = 0;
    for (int pass = 0; pass < 3; pass++) {
        size_t total = 0;
        double t0 = now();
        for (int i = 0; i < nf; i++) {
            int fd = open(files[i], O_RDONLY);
            if (fd < 0) continue;
            static char chunk[1 << 17];
            ssize_t r;
            while ((r = read(fd, chunk, sizeof chunk)) > 0) total += (size_t)r;
            close(fd);
        }
        double bw = (double)total / (now() - t0);
        if (pass > 0 && bw > best) best = bw;
    }
    return best;
}

int main(int argc, char **argv)
{
    const char *types = "q8_0,q4_0,q4_1,q5_0,q4_k,q6_k";
    const char *threads = "1,2";
    int quality = 0, i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--types") && i + 1 < argc) types = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = argv[++i];
        else if (!strcmp(argv[i], "--quality")) quality = 1;
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    if (i >= argc) {
        fprintf(stderr, "usage: bench_quant [--types LIST] [--threads LIST] [--quality] FILE...\n");
        return 2;
    }
    btensor *ts = NULL;
    size_t nt = 0;
    keep_f32 = quality;
    for (int f = i; f < argc; f++)
        if (load_st(argv[f], &ts, &nt) != 0) return 1;
    int64_t maxn = 0, total = 0;
    for (size_t k = 0; k < nt; k++) {
        maxn = ts[k].rows * ts[k].cols > maxn ? ts[k].rows * ts[k].cols : maxn;
        total += ts[k].rows * ts[k].cols;
    }
    float *x = malloc((size_t)maxn * 4);
    void *q = malloc((size_t)maxn * 4);
    double rbw = quality ? 0 : read_bw(argc - i, argv + i);
    printf("%zu tensors, %lld weights (%.1f MB as f16), simd %s\n", nt, (long long)total,
           total * 2 / 1e6, lpk_cpu_describe());
    if (!quality) printf("read bandwidth (page cache): %.2f GB/s\n", rbw / 1e9);
    char tl[256];
    snprintf(tl, sizeof tl, "%s", types);
    for (char *tok = strtok(tl, ","); tok; tok = strtok(NULL, ",")) {
        int type = lpk_type_from_name(tok);
        if (type < 0) { fprintf(stderr, "unknown type %s\n", tok); return 2; }
        const lpk_type_info *ti = lpk_type_get(type);
        if (quality) {
            double sse = 0, ssx = 0, bytes = 0;
            double t0 = now();
            for (size_t k = 0; k < nt; k++) {
                int64_t n = ts[k].rows * ts[k].cols;
                memcpy(x, ts[k].f, (size_t)n * 4);
                lpk_error err = {0};
                if (!quant_row_fits(type, ts[k].cols)) continue;
                if (quant_quantize_rows(type, x, ts[k].rows, ts[k].cols, q, NULL, &err)) {
                    fprintf(stderr, "%s: %s\n", ts[k].name, err.msg);
                    return 1;
                }
                double e, s;
                quant_error(type, x, q, ts[k].rows, ts[k].cols, &e, &s);
                sse += e;
                ssx += s;
                bytes += (double)n / ti->block_size * ti->type_size;
            }
            printf("%-5s bpw %.4f  pooled rel. RMSE %.5f  (%.1f s)\n", tok,
                   bytes * 8 / (double)total, sqrt(sse / ssx), now() - t0);
            continue;
        }
        char thl[64];
        snprintf(thl, sizeof thl, "%s", threads);
        char *save = NULL;
        for (char *th = strtok_r(thl, ",", &save); th; th = strtok_r(NULL, ",", &save)) {
            int nth = atoi(th);
            omp_set_num_threads(nth);
            double t0 = now(), in_bytes = 0, c0 = cpu_now();
            for (size_t k = 0; k < nt; k++) {
                int64_t n = ts[k].rows * ts[k].cols;
                if (!quant_row_fits(type, ts[k].cols)) continue;
                lpk_f16_to_f32_row(ts[k].h, x, (size_t)n);
                lpk_error err = {0};
                quant_quantize_rows(type, x, ts[k].rows, ts[k].cols, q, NULL, &err);
                in_bytes += (double)n * 2;
            }
            double gbs = in_bytes / (now() - t0);
            double cpu_ns = (cpu_now() - c0) * 1e9 / (in_bytes / 2);
            printf("%-5s threads %d  %7.3f GB/s of f16 input  %5.1f%% of read bandwidth  "
                   "%6.1f cpu-ns/weight  (%s)\n",
                   tok, nth, gbs / 1e9, 100.0 * gbs / rbw, cpu_ns, quant_path_name(type));
        }
    }
    for (size_t k = 0; k < nt; k++) {
        free(ts[k].h);
        free(ts[k].f);
    }
    free(ts);
    free(x);
    free(q);
    return 0;
}
