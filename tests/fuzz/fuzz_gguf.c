/* Fuzz target: gguf_parse() on arbitrary bytes. Whatever it accepts must be
 * self-consistent: every tensor inside the buffer, sized for its type and shape. */
#include <stdint.h>
#include <stdlib.h>

#include "../../format/lpk_internal.h"

const char *fuzz_corpus_dir = "tests/fuzz/corpus_gguf";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lpk_meta *m = lpk_meta_new();
    lpk_tensor *t = NULL;
    size_t n = 0;
    lpk_error err = {0};
    if (gguf_parse(data, size, "fuzz.gguf", m, &t, &n, NULL, &err) == LPK_OK) {
        for (size_t i = 0; i < n; i++) {
            uint64_t nb;
            if (t[i].offset > size || t[i].size > size - t[i].offset) abort();
            if (lpk_type_nbytes(t[i].type, lpk_tensor_nelems(&t[i]), &nb) || nb != t[i].size)
                abort();
            volatile uint8_t sink = 0;
            if (t[i].size) sink ^= ((const uint8_t *)t[i].data)[t[i].size - 1];
            (void)sink;
        }
        /* what was read can be written again */
        uint8_t *hdr = NULL;
        uint64_t hs = 0;
        lpk_error e2 = {0};
        lpk_meta_remove(m, "general.alignment");
        if (gguf_header_build(m, t, n, &hdr, &hs, &e2) == LPK_OK && !hs) abort();
        free(hdr);
    } else if (err.status == LPK_OK || !err.msg[0]) {
        abort(); /* every failure carries a message */
    }
    free(t);
    lpk_meta_free(m);
    return 0;
}
