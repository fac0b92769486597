/* Fuzz target: tokenizer files (SentencePiece protobuf, tiktoken,
 * tokenizer.json) on arbitrary bytes; whatever loads must build a tokenizer
 * that encodes and decodes without fault. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../tok/tok.h"

const char *fuzz_corpus_dir = "tests/fuzz/corpus_tokenizer";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lpk_meta *m = lpk_meta_new();
    lpk_error err = {0};
    int rc = tok_load_mem("fuzz", data, size, m, &err);
    if (rc != LPK_OK && (err.status == LPK_OK || !err.msg[0])) abort();
    tok_tokenizer *t = NULL;
    lpk_error_clear(&err);
    if (rc == LPK_OK && tok_tokenizer_new(m, &t, &err) == LPK_OK) {
        static const char text[] = " Hello  world!\n\t3333 caf\xc3\xa9 \xff\xfe <s> <|eot_id|>";
        for (int special = 0; special < 2; special++) {
            int32_t *ids = NULL;
            size_t n = 0;
            lpk_error_clear(&err);
            if (tok_encode(t, text, sizeof text - 1, 0, special, &ids, &n, &err) == LPK_OK) {
                char buf[64];
                for (size_t i = 0; i < n; i++)
                    if (ids[i] < 0 || ids[i] >= tok_tokenizer_n_vocab(t) ||
                        tok_decode_token(t, ids[i], buf, sizeof buf) < 0)
                        abort();
            } else if (!err.msg[0]) {
                abort();
            }
            free(ids);
        }
        tok_tokenizer_free(t);
    } else if (rc == LPK_OK && !err.msg[0]) {
        abort();
    }
    lpk_meta_free(m);
    return 0;
}
