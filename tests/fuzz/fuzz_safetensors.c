/* Fuzz target: a safetensors file (length prefix + JSON header + data) through
 * cv_st_header_len / cv_st_parse_header, and the same bytes as a config.json
 * through cv_hf_config_parse. What the header parser accepts must be
 * self-consistent: every tensor inside the data section, sized for its dtype
 * and shape, no two overlapping. Every failure carries a message. */
#include <stdint.h>
#include <stdlib.h>

#include "../../convert/cv_internal.h"

const char *fuzz_corpus_dir = "tests/fuzz/corpus_safetensors";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int cmp_begin(const void *a, const void *b)
{
    const cv_st_entry *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lpk_error err = {0};
    uint64_t hl;
    if (cv_st_header_len("fuzz.safetensors", data, size, &hl, &err) == LPK_OK) {
        if (hl > size - 8 || hl > CV_ST_MAX_HEADER) abort();
        cv_st_entry *e = NULL;
        size_t n = 0;
        uint64_t dsize = size - 8 - hl;
        lpk_error_clear(&err);
        if (cv_st_parse_header("fuzz.safetensors", data + 8, (size_t)hl, dsize, &e, &n, &err) ==
            LPK_OK) {
            for (size_t i = 0; i < n; i++) {
                uint64_t ne = 1;
                for (int d = 0; d < e[i].n_dims; d++) ne *= (uint64_t)e[i].dims[d];
                uint64_t es = e[i].dtype == LPK_TYPE_F32 ? 4 : 2;
                if (e[i].end > dsize || e[i].end < e[i].begin || e[i].end - e[i].begin != ne * es)
                    abort();
                volatile uint8_t sink = 0;
                if (e[i].end > e[i].begin) sink ^= data[8 + hl + e[i].end - 1];
                (void)sink;
            }
            qsort(e, n, sizeof *e, cmp_begin);
            for (size_t i = 1; i < n; i++)
                if (e[i].begin < e[i - 1].end) abort();
        } else if (err.status == LPK_OK || !err.msg[0]) {
            abort();
        }
        free(e);
    } else if (err.status == LPK_OK || !err.msg[0]) {
        abort();
    }
    /* the same bytes as config.json */
    cv_hparams hp;
    lpk_meta *m = lpk_meta_new();
    lpk_error_clear(&err);
    if (cv_hf_config_parse("config.json", data, size, &hp, m, &err) == LPK_OK) {
        if (hp.dim <= 0 || hp.n_head <= 0 || hp.n_kv <= 0 || hp.head_dim <= 0 ||
            hp.n_head % hp.n_kv || hp.head_dim % 2)
            abort();
    } else if (err.status == LPK_OK || !err.msg[0]) {
        abort();
    }
    lpk_meta_free(m);
    return 0;
}
