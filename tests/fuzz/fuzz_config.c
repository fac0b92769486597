/* Fuzz target: the JSON files that map to metadata: config.json,
 * generation_config.json, tokenizer_config.json (as a file beside a small
 * vocabulary: added tokens, special ids, chat template) and Meta's
 * params.json (read by the Meta folder reader, which then finds no shards).
 * The first byte picks the file; every failure has a message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../convert/cv_internal.h"
#include "../../convert/cv_torch.h"
#include "../../tok/tok.h"

const char *fuzz_corpus_dir = "tests/fuzz/corpus_config";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

static void put(const char *name, const uint8_t *b, size_t n)
{
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f)) abort();
}

/* The private folder goes when the process ends (replay or fuzzer). */
static void remove_dir(void)
{
    char p[128];
    snprintf(p, sizeof p, "%s/params.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    unlink(p);
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size) return 0;
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/llmpack-fuzz-XXXXXX");
        if (!mkdtemp(dir)) abort();
        atexit(remove_dir);
    }
    const uint8_t *b = data + 1;
    size_t n = size - 1;
    lpk_meta *m = lpk_meta_new();
    lpk_error err = {0};
    int rc;
    switch (data[0] % 5) {
    case 0: {
        cv_hparams hp;
        memset(&hp, 0, sizeof hp);
        rc = cv_hf_config_parse("config.json", b, n, &hp, m, &err);
        break;
    }
    case 1: rc = cv_hf_genconfig_parse("generation_config.json", b, n, m, &err); break;
    case 2: rc = tok_config_load_mem("tokenizer_config.json", b, n, m, &err); break;
    case 3: {
        static const char *toks[] = {"<unk>", "<s>", "</s>", "a", "b", "c", "<pad>", "d"};
        lpk_meta_set_str(m, "tokenizer.ggml.model", "llama");
        lpk_meta_set_str_arr(m, "tokenizer.ggml.tokens", toks, NULL, 8);
        put("tokenizer_config.json", b, n);
        cv_special_ids own;
        cv_special_snapshot(m, &own);
        char warn[512] = "";
        rc = cv_vocab_finish(dir, m, 10, &own, warn, sizeof warn, &err);
        char p[128];
        snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
        unlink(p);
        break;
    }
    default: {
        put("params.json", b, n);
        cv_source *s = NULL;
        rc = cv_meta_open(dir, NULL, &s, &err);
        if (rc == LPK_OK) s->ops->close(s);
        char p[128];
        snprintf(p, sizeof p, "%s/params.json", dir);
        unlink(p);
        break;
    }
    }
    if (rc != LPK_OK && (err.status == LPK_OK || !err.msg[0])) abort();
    lpk_meta_free(m);
    return 0;
}
