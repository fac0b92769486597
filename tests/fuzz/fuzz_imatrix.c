/* Fuzz target: the importance-matrix reader (llama.cpp's legacy binary layout
 * and its GGUF layout, detected from the bytes). What it accepts must keep the
 * reader's promises: named entries with a positive value count, every value
 * finite and not negative, a positive count; and the legacy bytes of an
 * accepted matrix read back to the same entries. Every failure has a message. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../format/lpk.h"

const char *fuzz_corpus_dir = "tests/fuzz/corpus_imatrix";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lpk_imatrix *im = NULL;
    lpk_error err = {0};
    int rc = lpk_imatrix_read_buffer(data, size, "fuzz.imatrix", &im, &err);
    if (rc != LPK_OK) {
        if (im || err.status == LPK_OK || !err.msg[0]) abort();
        return 0;
    }
    if (!im->n) abort();
    for (size_t i = 0; i < im->n; i++) {
        const lpk_imatrix_entry *e = &im->e[i];
        if (!memchr(e->name, 0, sizeof e->name) || !e->name[0] || e->n < 1) abort();
        if (!(e->count > 0) || !isfinite(e->count)) abort();
        for (int64_t j = 0; j < e->n; j++)
            if (!isfinite(e->sum2[j]) || e->sum2[j] < 0) abort();
        if (e->cov32 && e->n % 32) abort();
        for (int64_t j = 0; e->cov32 && j < e->n * 32; j++)
            if (!isfinite(e->cov32[j]) || (j % 1024 % 33 == 0 && e->cov32[j] < 0)) abort();
    }
    uint8_t *b = NULL;
    size_t n = 0;
    if (lpk_imatrix_legacy_bytes(im, &b, &n) == LPK_OK) {
        lpk_imatrix *back = NULL;
        if (lpk_imatrix_read_buffer(b, n, "fuzz.legacy", &back, &err) != LPK_OK) abort();
        if (back->n != im->n) abort();
        for (size_t i = 0; i < im->n; i++)
            if (strcmp(back->e[i].name, im->e[i].name) || back->e[i].n != im->e[i].n ||
                !back->e[i].cov32 != !im->e[i].cov32)
                abort();
        lpk_imatrix_free(back);
        free(b);
    }
    lpk_imatrix_free(im);
    return 0;
}
