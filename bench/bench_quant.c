/* Quantizer benchmark and quality report over real weights.
 *
 *   bench_quant [--types q8_0,q4_0,...] [--threads 1,2] [--reps N] [--quality] FILE...
 *
 * FILE: containers (.lpk or GGUF); every 2-D f32/f16/bf16 tensor is used.
 * Speed: the weights are held as f16 (the usual input of `quantize`), and each
 * run converts them to f32 row by row and quantizes them (quant_quantize_rows_from); the rate is bytes of f16 input
 * per second, beside the read bandwidth of the input from the page cache
 * (measured here before each run, or given by --read-bw BYTES_PER_SECOND), and the CPU time
 * per weight. Each (type, threads) runs N passes over all tensors (default 3) and
 * reports the fastest and the median (the machine is shared: other processes
 * slow single passes down, never speed them up). --quality prints the pooled relative RMSE and bits per weight
 * against the original values instead. */
#include <errno.h>
#include <fcntl.h>
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

/* Appends the 2-D f32/f16/bf16 tensors of a container (.lpk or GGUF). */
static int load_container(const char *path, btensor **ts, size_t *n)
{
    lpk_reader *r = NULL;
    lpk_error err = {0};
    if (lpk_reader_open(path, &r, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    for (size_t i = 0; i < lpk_reader_n_tensors(r); i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        if (t->n_dims != 2 || (t->type != LPK_TYPE_F32 && t->type != LPK_TYPE_F16 &&
                               t->type != LPK_TYPE_BF16))
            continue;
        *ts = realloc(*ts, (*n + 1) * sizeof **ts);
        btensor *b = &(*ts)[(*n)++];
        snprintf(b->name, sizeof b->name, "%s", t->name);
        b->rows = t->dims[0];
        b->cols = t->dims[1];
        size_t ne = (size_t)(b->rows * b->cols);
        float *f = malloc(ne * sizeof(float));
        lpk_to_f32_row(t->type, t->data, f, ne);
        b->h = malloc(ne * 2);
        lpk_f32_to_f16_row(f, b->h, ne);
        if (keep_f32) {
            b->f = f;
        } else {
            b->f = NULL;
            free(f);
        }
    }
    lpk_reader_close(r);
    return 0;
}

/* Bytes per second of reading the files from the page cache the way `cat`
 * does (128 KiB read() calls): best of 5 timed passes of 5 reads each, after
 * one untimed pass. */
static double read_bw(int nf, char **files)
{
    double best = 0;
    for (int pass = 0; pass < 6; pass++) {
        size_t total = 0;
        double t0 = now();
        for (int rep = 0; rep < (pass ? 5 : 1); rep++) {
            for (int i = 0; i < nf; i++) {
                int fd = open(files[i], O_RDONLY);
                if (fd < 0) continue;
                static char chunk[1 << 17];
                ssize_t r;
                while ((r = read(fd, chunk, sizeof chunk)) > 0) total += (size_t)r;
                close(fd);
            }
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
    int quality = 0, i = 1, reps = 3;
    double given_bw = 0;
    const char *jsonl = NULL; /* append one JSON object per result line */
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--types") && i + 1 < argc) types = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = argv[++i];
        else if (!strcmp(argv[i], "--quality")) quality = 1;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--read-bw") && i + 1 < argc) given_bw = atof(argv[++i]);
        else if (!strcmp(argv[i], "--jsonl") && i + 1 < argc) jsonl = argv[++i];
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    if (i >= argc) {
        fprintf(stderr, "usage: bench_quant [--types LIST] [--threads LIST] [--quality] [--read-bw B] FILE...\n");
        return 2;
    }
    btensor *ts = NULL;
    size_t nt = 0;
    keep_f32 = quality;
    for (int f = i; f < argc; f++)
        if (load_container(argv[f], &ts, &nt) != 0) return 1;
    int64_t maxn = 0, total = 0;
    for (size_t k = 0; k < nt; k++) {
        maxn = ts[k].rows * ts[k].cols > maxn ? ts[k].rows * ts[k].cols : maxn;
        total += ts[k].rows * ts[k].cols;
    }
    float *x = malloc((size_t)maxn * 4);
    void *q = malloc((size_t)maxn * 4);
    /* touch the output once: page faults are not the quantizer's cost */
    memset(q, 0, (size_t)maxn * 4);
    if (reps < 1 || reps > 99) reps = 3;
    double rbw = quality ? 0 : given_bw > 0 ? given_bw : read_bw(argc - i, argv + i);
    printf("%zu tensors, %lld weights (%.1f MB as f16), simd %s\n", nt, (long long)total,
           total * 2 / 1e6, lpk_cpu_describe());
    if (!quality) {
        double la[1] = {0};
        printf("read bandwidth (page cache): %.2f GB/s; load average %.2f (2-thread figures need "
               "an idle second core)\n", rbw / 1e9, getloadavg(la, 1) == 1 ? la[0] : -1.0);
    }
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
            FILE *jf = jsonl ? fopen(jsonl, "a") : NULL;
            if (jf) {
                fprintf(jf, "{\"bench\": \"quant-quality\", \"type\": \"%s\", \"bpw\": %.4f, "
                            "\"rel_rmse\": %.6f}\n", tok, bytes * 8 / (double)total,
                        sqrt(sse / ssx));
                fclose(jf);
            }
            continue;
        }
        char thl[64];
        snprintf(thl, sizeof thl, "%s", threads);
        char *save = NULL;
        for (char *th = strtok_r(thl, ",", &save); th; th = strtok_r(NULL, ",", &save)) {
            int nth = atoi(th);
            /* the page-cache read measured again right beside this run (the
             * memory bandwidth of a machine shared with other guests drifts),
             * unless it was given */
            if (given_bw <= 0) {
                double b = read_bw(argc - i, argv + i);
                rbw = b > 0 ? b : rbw;
            }
            omp_set_num_threads(nth);
            double wall[99], cpu[99], in_bytes = 0;
            for (int rep = 0; rep < reps; rep++) {
                double t0 = now(), c0 = cpu_now();
                in_bytes = 0;
                for (size_t k = 0; k < nt; k++) {
                    int64_t n = ts[k].rows * ts[k].cols;
                    if (!quant_row_fits(type, ts[k].cols)) continue;
                    lpk_error err = {0};
                    quant_quantize_rows_from(type, LPK_TYPE_F16, ts[k].h, ts[k].rows, ts[k].cols,
                                             q, NULL, &err);
                    in_bytes += (double)n * 2;
                }
                wall[rep] = now() - t0;
                cpu[rep] = cpu_now() - c0;
            }
            /* fastest pass, and the median wall time */
            int best = 0;
            for (int r = 1; r < reps; r++) best = wall[r] < wall[best] ? r : best;
            double med[99];
            memcpy(med, wall, sizeof(double) * (size_t)reps);
            for (int a = 1; a < reps; a++)
                for (int b = a; b > 0 && med[b] < med[b - 1]; b--) {
                    double t = med[b]; med[b] = med[b - 1]; med[b - 1] = t;
                }
            double gbs = in_bytes / wall[best], gbs_med = in_bytes / med[reps / 2];
            double cpu_ns = cpu[best] * 1e9 / (in_bytes / 2);
            printf("%-5s threads %d  %7.3f GB/s of f16 input  %5.1f%% of read bandwidth (%.2f GB/s)  "
                   "%6.2f cpu-ns/weight  (%s; median of %d passes %.3f GB/s)\n",
                   tok, nth, gbs / 1e9, 100.0 * gbs / rbw, rbw / 1e9, cpu_ns,
                   quant_path_name(type), reps, gbs_med / 1e9);
            FILE *jf = jsonl ? fopen(jsonl, "a") : NULL;
            if (jf) {
                fprintf(jf, "{\"bench\": \"quant\", \"type\": \"%s\", \"threads\": %d, "
                            "\"gb_per_s\": %.4f, \"read_gb_per_s\": %.4f, \"ratio\": %.4f, "
                            "\"cpu_ns_per_weight\": %.2f, \"path\": \"%s\", \"passes\": %d, "
                            "\"median_gb_per_s\": %.4f}\n",
                        tok, nth, gbs / 1e9, rbw / 1e9, gbs / rbw, cpu_ns, quant_path_name(type),
                        reps, gbs_med / 1e9);
                fclose(jf);
            }
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
