/* Fuzz target: the container reader (.lpk, and GGUF by magic) on arbitrary
 * bytes, then everything a consumer touches: metadata, lookups, checksums. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../format/lpk.h"

const char *fuzz_corpus_dir = "tests/fuzz/corpus_lpk_reader";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lpk_reader *r;
    lpk_error err = {0};
    /* past the header checksum (mutated inputs rarely keep it), to the parser;
     * the checksum itself is called below */
    lpk_reader_set_default_flags(LPK_OPEN_NO_VERIFY);
    if (lpk_reader_open_buffer(data, size, "fuzz", &r, &err) != LPK_OK) {
        /* every failure says what is wrong */
        if (!err.msg[0] || err.status == LPK_OK) __builtin_trap();
        return 0;
    }
    const lpk_meta *m = lpk_reader_meta(r);
    volatile uint64_t sink = 0;
    for (size_t i = 0; i < lpk_meta_count(m); i++) {
        const lpk_kv *kv = lpk_meta_at(m, i);
        if (lpk_meta_find(m, kv->key) != kv) __builtin_trap();
        if (kv->type == LPK_V_STR) sink += kv->str.n + (uint8_t)kv->str.p[kv->str.n];
        else if (kv->type == LPK_V_ARR && kv->elem == LPK_V_STR && kv->count)
            sink += lpk_kv_str_at(kv, kv->count - 1).n;
        else if (kv->type == LPK_V_ARR && kv->count)
            sink += ((const uint8_t *)kv->data)[kv->count * lpk_vtype_size(kv->elem) - 1];
    }
    lpk_error e2 = {0};
    lpk_reader_verify_header(r, &e2);
    for (size_t i = 0; i < lpk_reader_n_tensors(r); i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        if (lpk_reader_find(r, t->name) != t) __builtin_trap();
        if (t->size) sink += ((const uint8_t *)t->data)[t->size - 1];
        lpk_error e3 = {0}, e4 = {0};
        lpk_reader_verify_tensor(r, i, &e3);
        const void *d;
        if (lpk_reader_tensor_data(r, i, &d, &e4) == LPK_OK && d != t->data) __builtin_trap();
    }
    (void)sink;
    lpk_reader_close(r);
    return 0;
}
