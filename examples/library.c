/* Converts the demo model (stories260K) to q8_0 through the library, checks every
 * checksum of the result, and measures perplexity and KL divergence against the
 * f16 original on the sample text. Run from examples/ with no arguments:
 *
 *     cc library.c $(pkg-config --cflags --libs llmpack) -o library && ./library
 *
 * Writes its two containers into a temporary folder and removes them. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <llmpack/llmpack.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int convert(const char *out, const char *type, lpk_error *err)
{
    cv_options o = {.src = "stories260K", .out = out, .type = type};
    return cv_convert(&o, NULL, err);
}

static int check(const char *path, lpk_error *err)
{
    lpk_reader *r = NULL;
    int rc = lpk_reader_open(path, &r, err);
    if (!rc) rc = lpk_reader_verify_header(r, err);
    for (size_t i = 0; !rc && i < lpk_reader_n_tensors(r); i++)
        rc = lpk_reader_verify_tensor(r, i, err);
    lpk_reader_close(r);
    return rc;
}

static int read_text(const char *path, char **text, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    *text = malloc(1 << 20);
    *n = *text ? fread(*text, 1, 1 << 20, f) : 0;
    fclose(f);
    return *text ? 0 : -1;
}

/* PPL of model against ref over the first 4 chunks of 128 tokens. */
static int measure(const char *ref_path, const char *path, vf_ppl_result *res, lpk_error *err)
{
    lpk_reader *rr = NULL, *r = NULL;
    vf_model *ref = NULL, *m = NULL;
    tok_tokenizer *tok = NULL;
    vf_eval *ev = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0, n_text = 0;
    char *text = NULL;
    int rc = read_text("TinyStories-valid-sample.txt", &text, &n_text)
                 ? lpk_err(err, LPK_EIO, "TinyStories-valid-sample.txt: cannot read")
                 : LPK_OK;
    if (!rc) rc = lpk_reader_open(ref_path, &rr, err);
    if (!rc) rc = lpk_reader_open(path, &r, err);
    if (!rc) rc = vf_model_open(rr, &ref, err);
    if (!rc) rc = vf_model_open(r, &m, err);
    if (!rc) rc = tok_tokenizer_new(lpk_reader_meta(rr), &tok, err);
    if (!rc) rc = tok_encode(tok, text, n_text, 1, 0, &ids, &n_ids, err);
    if (!rc) rc = vf_eval_new(ref, &m, 1, ids, n_ids, tok_tokenizer_bos(tok), 128, 4, &ev, err);
    while (!rc && (rc = vf_eval_step(ev, err)) == 1) rc = 0;
    if (!rc) vf_eval_result(ev, 0, res);
    vf_eval_free(ev);
    free(ids);
    free(text);
    tok_tokenizer_free(tok);
    vf_model_free(m);
    vf_model_free(ref);
    lpk_reader_close(r);
    lpk_reader_close(rr);
    return rc;
}

int main(void)
{
    char dir[] = "/tmp/llmpack-example-XXXXXX", f16[64], q8[64];
    if (!mkdtemp(dir)) return 1;
    snprintf(f16, sizeof f16, "%s/demo.f16.lpk", dir);
    snprintf(q8, sizeof q8, "%s/demo.q8_0.lpk", dir);
    lpk_error err = {0};
    vf_ppl_result res;
    int rc = convert(f16, NULL, &err);
    if (!rc) rc = convert(q8, "q8_0", &err);
    if (!rc) rc = check(q8, &err);
    if (!rc) rc = measure(f16, q8, &res, &err);
    if (rc) fprintf(stderr, "example: %s (%s)\n", err.msg, lpk_status_name(rc));
    else
        printf("llmpack %s: q8_0 PPL %.4f, f16 PPL %.4f, KLD %.6f, top-1 %.2f%%\n",
               lpk_version(), res.ppl, res.ref_ppl, res.kld_mean, 100 * res.top1_agreement);
    unlink(f16);
    unlink(q8);
    rmdir(dir);
    return rc ? 1 : 0;
}
