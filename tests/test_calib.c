/* calib/: importance matrices from calibration text. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <omp.h>

#include "tutil.h"

#include <jansson.h>
#include "../calib/calib.h"
#include "../tok/tok.h"

#define S260 "gguf/stories260K-f32.gguf"
#define S260_ARGS "--type f32" /* without ../shared: llmpack's f32 GGUF of the demo model */
#define TINY "text/TinyStories-valid-sample.txt"

/* blk.0's q/k/v see rmsnorm(embedding) * attn_norm: computed here straight
 * from the weights (in double), it must equal what the forward pass handed the
 * hook; q, k and v hold the same statistics; counts are chunks x ctx. */
static void test_layer0_independent(void **state)
{
    (void)state;
    const char *m0 = tu_shared_or_demo(S260, S260_ARGS);
    char *model = strdup(m0);
    TU_NEED_SHARED(t0, TINY);
    char *text = strdup(t0);
    lpk_error err = {0};
    calib_opts o = {.ctx = 128};
    lpk_imatrix *im = NULL;
    assert_int_equal(calib_file(model, text, &o, &im, &err), LPK_OK);
    /* 5 layers x 7 + the tied output (token_embd) */
    assert_int_equal(im->n, 36);
    assert_int_equal(im->chunk_size, 128);
    assert_int_equal(im->chunks, 121);
    assert_string_equal(im->dataset, text);
    assert_string_equal(im->e[im->n - 1].name, "token_embd.weight");
    const lpk_imatrix_entry *q = lpk_imatrix_find(im, "blk.0.attn_q.weight"),
                            *k = lpk_imatrix_find(im, "blk.0.attn_k.weight"),
                            *v = lpk_imatrix_find(im, "blk.0.attn_v.weight"),
                            *d = lpk_imatrix_find(im, "blk.4.ffn_down.weight");
    assert_non_null(q);
    assert_non_null(d);
    assert_int_equal(d->n, 172);
    assert_int_equal(q->count, 121 * 128);
    assert_int_equal(q->ncall, 121);
    assert_memory_equal(q->sum2, k->sum2, (size_t)q->n * 4);
    assert_memory_equal(q->sum2, v->sum2, (size_t)q->n * 4);

    lpk_reader *r = NULL;
    tok_tokenizer *tok = NULL;
    assert_int_equal(lpk_reader_open(model, &r, &err), LPK_OK);
    assert_int_equal(tok_tokenizer_new(lpk_reader_meta(r), &tok, &err), LPK_OK);
    char *t;
    size_t nt, nid;
    int32_t *ids;
    assert_int_equal(vf_read_text(text, &t, &nt, &err), LPK_OK);
    assert_int_equal(tok_encode(tok, t, nt, 1, 0, &ids, &nid, &err), LPK_OK);
    const lpk_tensor *emb = lpk_reader_find(r, "token_embd.weight"),
                     *nw = lpk_reader_find(r, "blk.0.attn_norm.weight");
    assert_int_equal(emb->type, LPK_TYPE_F32);
    int dim = (int)lpk_tensor_ncols(emb);
    const float *E = emb->data, *W = nw->data;
    double *want = calloc((size_t)dim, sizeof(double));
    for (size_t c = 0; c < 121; c++)
        for (size_t i = 0; i < 128; i++) {
            int32_t id = i == 0 ? tok_tokenizer_bos(tok) : ids[c * 128 + i];
            const float *e = E + (size_t)id * dim;
            double ss = 0;
            for (int j = 0; j < dim; j++) ss += (double)e[j] * e[j];
            double sc = 1.0 / sqrt(ss / dim + 1e-5);
            for (int j = 0; j < dim; j++) {
                double y = W[j] * (e[j] * sc);
                want[j] += y * y;
            }
        }
    for (int j = 0; j < dim; j++)
        if (fabs(q->sum2[j] - want[j]) > 1e-4 * want[j])
            fail_msg("column %d: %g, want %g", j, (double)q->sum2[j], want[j]);
    free(want);
    free(ids);
    free(t);
    tok_tokenizer_free(tok);
    lpk_reader_close(r);
    lpk_imatrix_free(im);
    free(model);
    free(text);
}

/* The same bytes for 1 and 2 threads; --chunks takes a prefix. */
static void test_threads_and_prefix(void **state)
{
    (void)state;
    const char *m0 = tu_shared_or_demo(S260, S260_ARGS);
    char *model = strdup(m0);
    TU_NEED_SHARED(t0, TINY);
    char *text = strdup(t0);
    lpk_error err = {0};
    lpk_imatrix *a = NULL, *b = NULL;
    calib_opts o = {.ctx = 64, .max_chunks = 20, .no_output = 1};
    omp_set_num_threads(1);
    assert_int_equal(calib_file(model, text, &o, &a, &err), LPK_OK);
    omp_set_num_threads(2);
    assert_int_equal(calib_file(model, text, &o, &b, &err), LPK_OK);
    assert_int_equal(a->n, 35);
    assert_int_equal(a->chunks, 20);
    assert_true(a->hash == b->hash);
    /* the cov32 blocks too: every weight but ffn_down (172 columns) */
    assert_int_equal(lpk_imatrix_n_cov32(a), 30);
    for (size_t i = 0; i < a->n; i++) {
        assert_string_equal(a->e[i].name, b->e[i].name);
        assert_true(a->e[i].count == 20 * 64);
        assert_memory_equal(a->e[i].sum2, b->e[i].sum2, (size_t)a->e[i].n * 4);
        assert_true(!a->e[i].cov32 == !!strstr(a->e[i].name, "ffn_down"));
        if (a->e[i].cov32)
            assert_memory_equal(a->e[i].cov32, b->e[i].cov32, (size_t)a->e[i].n * 32 * 4);
    }
    /* no_cov: the same plain entries, no blocks (llama-imatrix's file) */
    lpk_imatrix_free(b);
    o.no_cov = 1;
    assert_int_equal(calib_file(model, text, &o, &b, &err), LPK_OK);
    o.no_cov = 0;
    assert_int_equal(b->n, 35);
    assert_int_equal(lpk_imatrix_n_cov32(b), 0);
    for (size_t i = 0; i < a->n; i++)
        assert_memory_equal(a->e[i].sum2, b->e[i].sum2, (size_t)a->e[i].n * 4);
    lpk_imatrix_free(a);
    lpk_imatrix_free(b);
    /* too short a text for one chunk */
    o.ctx = 1 << 16;
    o.max_chunks = 0;
    lpk_error_clear(&err);
    assert_int_equal(calib_file(model, text, &o, &a, &err), LPK_EINVAL);
    assert_null(a);
    free(model);
    free(text);
}

/* The text is read and tokenized a block at a time (calib_text): its ids are
 * the whole text's for any block size, and calib_reader's matrix files are
 * byte for byte those calib_run makes from the whole text's ids (the path
 * calibrate took before it streamed), with blocks and contexts that put the
 * text's cuts and the chunk boundaries in awkward places. */
static void check_stream(const char *model, const char *text, const int *ctxs, int n_ctx,
                         int chunks, const size_t *blocks, int n_blocks)
{
    lpk_error err = {0};
    lpk_reader *r = NULL;
    vf_model *m = NULL;
    tok_tokenizer *tok = NULL;
    assert_int_equal(lpk_reader_open(model, &r, &err), LPK_OK);
    assert_int_equal(vf_model_open(r, &m, &err), LPK_OK);
    assert_int_equal(tok_tokenizer_new(lpk_reader_meta(r), &tok, &err), LPK_OK);
    char *t;
    size_t nt, nid;
    int32_t *ids;
    assert_int_equal(vf_read_text(text, &t, &nt, &err), LPK_OK);
    assert_int_equal(tok_encode(tok, t, nt, 1, 0, &ids, &nid, &err), LPK_OK);
    free(t);
    int32_t *got = malloc((nid + 100) * sizeof *got);
    for (int b = 0; b < n_blocks; b++) {
        calib_text *s = NULL;
        assert_int_equal(calib_text_open(text, tok, blocks[b], &s, &err), LPK_OK);
        assert_false(calib_text_whole(s));
        size_t n = 0, k, count;
        assert_int_equal(calib_text_count(s, SIZE_MAX, &count, &err), LPK_OK);
        assert_int_equal(count, nid);
        /* reads of odd sizes */
        for (size_t want = 1; ; want = want % 613 + 37) {
            assert_int_equal(calib_text_read(s, got + n, want, &k, &err), LPK_OK);
            n += k;
            if (k < want) break;
        }
        assert_int_equal(n, nid);
        if (memcmp(got, ids, nid * sizeof *ids)) fail_msg("block %zu: ids differ", blocks[b]);
        calib_text_close(s);
    }
    free(got);
    char *dir = tu_tmpdir();
    for (int c = 0; c < n_ctx; c++) {
        calib_opts o = {.ctx = ctxs[c], .max_chunks = chunks, .dataset = text};
        lpk_imatrix *a = NULL;
        assert_int_equal(calib_run(m, ids, nid, tok_tokenizer_bos(tok), &o, &a, &err), LPK_OK);
        char *pa = tu_fmt("%s/whole.dat", dir), *ga = tu_fmt("%s/whole.gguf", dir);
        assert_int_equal(lpk_imatrix_write(pa, a, LPK_IMATRIX_AUTO, LPK_WRITE_FORCE, &err), LPK_OK);
        assert_int_equal(lpk_imatrix_write(ga, a, LPK_IMATRIX_AUTO, LPK_WRITE_FORCE, &err), LPK_OK);
        size_t na, nga;
        char *fa = tu_read_file(pa, &na), *fga = tu_read_file(ga, &nga);
        for (int b = 0; b < n_blocks; b++) {
            lpk_imatrix *s = NULL;
            o.text_block = blocks[b];
            assert_int_equal(calib_reader(r, text, &o, &s, &err), LPK_OK);
            char *pb = tu_fmt("%s/stream.dat", dir), *gb = tu_fmt("%s/stream.gguf", dir);
            assert_int_equal(lpk_imatrix_write(pb, s, LPK_IMATRIX_AUTO, LPK_WRITE_FORCE, &err),
                             LPK_OK);
            assert_int_equal(lpk_imatrix_write(gb, s, LPK_IMATRIX_AUTO, LPK_WRITE_FORCE, &err),
                             LPK_OK);
            size_t nb, ngb;
            char *fb = tu_read_file(pb, &nb), *fgb = tu_read_file(gb, &ngb);
            if (nb != na || memcmp(fa, fb, na) || ngb != nga || memcmp(fga, fgb, nga))
                fail_msg("ctx %d, block %zu: the files differ", ctxs[c], blocks[b]);
            free(fb);
            free(fgb);
            free(pb);
            free(gb);
            lpk_imatrix_free(s);
        }
        print_message("%s, ctx %d: %d chunks, the same bytes from %d block sizes\n", text, ctxs[c],
                      a->chunks, n_blocks);
        free(fa);
        free(fga);
        free(pa);
        free(ga);
        lpk_imatrix_free(a);
    }
    tu_rmtree(dir);
    free(dir);
    free(ids);
    tok_tokenizer_free(tok);
    vf_model_free(m);
    lpk_reader_close(r);
}

static void test_stream_demo(void **state)
{
    (void)state;
    const char *m0 = tu_shared_or_demo(S260, S260_ARGS);
    char *model = strdup(m0);
    TU_NEED_SHARED(t0, TINY);
    char *text = strdup(t0);
    /* the first 40 chunks of 97 (ids: the whole text) */
    static const int ctx = 97;
    static const size_t blocks[] = {1, 2, 3, 7, 100, 4093, 0};
    check_stream(model, text, &ctx, 1, 40, blocks, 7);

    /* a pipe cannot be counted and read again: read whole, the same matrix
     * (every chunk to the end of the text) as the file read a piece at a time */
    char *dir = tu_tmpdir(), *fifo = tu_fmt("%s/text.fifo", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        size_t n;
        char *b = tu_read_file(text, &n);
        FILE *f = fopen(fifo, "wb");
        _exit(b && f && fwrite(b, 1, n, f) == n && fclose(f) == 0 ? 0 : 1);
    }
    lpk_error err = {0};
    calib_opts o = {.ctx = 97, .dataset = text};
    lpk_imatrix *a = NULL, *b = NULL;
    assert_int_equal(calib_file(model, fifo, &o, &a, &err), LPK_OK);
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    assert_int_equal(calib_file(model, text, &o, &b, &err), LPK_OK);
    assert_true(a->hash == b->hash);
    lpk_imatrix_free(a);
    lpk_imatrix_free(b);
    tu_rmtree(dir);
    free(fifo);
    free(dir);
    free(model);
    free(text);
}

/* llama2-20m on docs-calib.txt (when ../shared has them): 8 chunks of 512 and
 * 12 of 300. */
static void test_stream_llama2_20m(void **state)
{
    (void)state;
    TU_NEED_SHARED(hf0, "models/llama2-20m/hf");
    char *hf = strdup(hf0);
    TU_NEED_SHARED(t0, "text/docs-calib.txt");
    char *text = strdup(t0);
    char *dir = tu_tmpdir();
    char *lpk = tu_fmt("%s/m.lpk", dir), *out = NULL;
    assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s'", hf, lpk), 0);
    free(out);
    static const int ctxs[] = {512, 300};
    static const size_t blocks[] = {1, 4093, 0};
    check_stream(lpk, text, ctxs, 1, 8, blocks, 3);
    check_stream(lpk, text, ctxs + 1, 1, 12, blocks + 1, 1);
    tu_rmtree(dir);
    free(dir);
    free(lpk);
    free(hf);
    free(text);
}

/* The CLI writes both layouts, which read back to the library's values; a
 * quantized model is refused with exit 3; an interrupted run leaves no file. */
static void test_cli(void **state)
{
    (void)state;
    const char *m0 = tu_shared_or_demo(S260, S260_ARGS);
    char *model = strdup(m0);
    TU_NEED_SHARED(t0, TINY);
    char *text = strdup(t0);
    char *dir = tu_tmpdir();
    char *out = NULL;
    lpk_error err = {0};
    char *leg = tu_fmt("%s/s.imatrix", dir), *gg = tu_fmt("%s/s.gguf", dir);
    assert_int_equal(tu_llmpack(&out, "calibrate '%s' --text '%s' --ctx 128 --chunks 10 -o '%s' "
                                "--json", model, text, leg), 0);
    assert_non_null(strstr(out, "\"entries\": 36"));
    assert_non_null(strstr(out, "\"cov32_entries\": 31"));   /* all but ffn_down */
    free(out);
    assert_int_equal(tu_llmpack(&out, "calibrate '%s' --text '%s' --ctx 128 --chunks 10 -o '%s' "
                                "-q", model, text, gg), 0);
    free(out);
    /* --no-cov: llama-imatrix's entries only, the same as the file's plain ones */
    char *nc = tu_fmt("%s/nc.imatrix", dir);
    assert_int_equal(tu_llmpack(&out, "calibrate '%s' --text '%s' --ctx 128 --chunks 10 -o '%s' "
                                "--no-cov --json", model, text, nc), 0);
    assert_non_null(strstr(out, "\"cov32_entries\": 0"));
    free(out);
    lpk_imatrix *p0 = NULL, *p1 = NULL;
    assert_int_equal(lpk_imatrix_read(nc, &p0, &err), LPK_OK);
    assert_int_equal(lpk_imatrix_read(leg, &p1, &err), LPK_OK);
    assert_int_equal(lpk_imatrix_n_cov32(p0), 0);
    assert_int_equal(lpk_imatrix_n_cov32(p1), 31);
    assert_int_equal(p0->n, p1->n);
    for (size_t i = 0; i < p0->n; i++)
        assert_memory_equal(p0->e[i].sum2, p1->e[i].sum2, (size_t)p0->e[i].n * 4);
    lpk_imatrix_free(p0);
    lpk_imatrix_free(p1);
    free(nc);
    lpk_imatrix *a = NULL, *b = NULL;
    assert_int_equal(lpk_imatrix_read(leg, &a, &err), LPK_OK);
    assert_int_equal(lpk_imatrix_read(gg, &b, &err), LPK_OK);
    assert_int_equal(a->format, LPK_IMATRIX_LEGACY);
    assert_int_equal(b->format, LPK_IMATRIX_GGUF);
    assert_int_equal(a->n, b->n);
    assert_int_equal(b->chunks, 10);
    for (size_t i = 0; i < a->n; i++) {
        const lpk_imatrix_entry *x = &a->e[i], *y = lpk_imatrix_find(b, x->name);
        assert_non_null(y);
        float *wx = malloc((size_t)x->n * 4), *wy = malloc((size_t)x->n * 4);
        lpk_imatrix_weights(x, wx);
        lpk_imatrix_weights(y, wy);
        for (int64_t k = 0; k < x->n; k++) assert_true(fabsf(wx[k] - wy[k]) <= 1e-6f * wy[k]);
        free(wx);
        free(wy);
    }
    lpk_imatrix_free(a);
    lpk_imatrix_free(b);
    /* an existing file is kept without --force */
    assert_int_equal(tu_llmpack(&out, "calibrate '%s' --text '%s' --ctx 128 -o '%s'", model, text,
                                leg), 1);
    free(out);
    /* usage */
    assert_int_equal(tu_llmpack(&out, "calibrate '%s' -o x", model), 2);
    free(out);
    /* Ctrl-C halfway (a text of 60 copies: ~1M tokens, minutes of work):
     * nothing at the target */
    const char *bin = getenv("LLMPACK_BIN");
    if (bin && *bin) {
        size_t n;
        char *body = tu_read_file(text, &n), *big = tu_fmt("%s/big.txt", dir);
        FILE *f = fopen(big, "wb");
        for (int i = 0; i < 60; i++) fwrite(body, 1, n, f);
        fclose(f);
        char *x = tu_fmt("%s/int.imatrix", dir);
        char *cmd = tu_fmt("timeout -s INT 3 '%s' calibrate '%s' --text '%s' --ctx 64 -o '%s' -q "
                           ">/dev/null 2>&1", bin, model, big, x);
        int rc = system(cmd);
        assert_false(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
        assert_false(tu_exists(x));
        free(cmd);
        free(x);
        free(big);
        free(body);
    }
    free(leg);
    free(gg);
    free(model);
    free(text);
    tu_rmtree(dir);
    free(dir);
}

/* quantize/convert --imatrix: the matrix is checked against the model (one
 * made for another model: exit 3 naming the entry), tensors without an entry
 * are listed, and the container and its GGUF export carry the provenance. */
static void test_quantize_imatrix(void **state)
{
    (void)state;
    const char *m0 = tu_shared_or_demo(S260, S260_ARGS);
    char *model = strdup(m0);
    TU_NEED_SHARED(t0, TINY);
    char *text = strdup(t0);
    char *dir = tu_tmpdir(), *out = NULL;
    /* another model's matrix: llama-imatrix's for llama2-20m, else one made here
     * with llama2-20m's first entry (256 columns; stories260K's rows have 64) */
    const char *l0 = tu_shared("gguf/llama2-20m-docs-calib.imatrix");
    char *other = l0 ? strdup(l0) : tu_fmt("%s/other.imatrix", dir);
    if (!l0) {
        lpk_imatrix *o = lpk_imatrix_new();
        lpk_imatrix_entry *e = NULL;
        assert_int_equal(lpk_imatrix_add(o, "blk.0.attn_q.weight", 256, &e), LPK_OK);
        for (int i = 0; i < 256; i++) e->sum2[i] = 1.0f;
        e->count = 1;
        e->ncall = 1;
        lpk_error werr = {0};
        assert_int_equal(lpk_imatrix_write(other, o, LPK_IMATRIX_LEGACY, 0, &werr), LPK_OK);
        lpk_imatrix_free(o);
    }
    char *im = tu_fmt("%s/s.imatrix", dir), *q = tu_fmt("%s/q.lpk", dir),
         *g = tu_fmt("%s/q.gguf", dir);
    assert_int_equal(tu_llmpack(&out, "calibrate '%s' --text '%s' --ctx 128 --no-output -q -o '%s'",
                                model, text, im), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q4_k_m --imatrix '%s' --json",
                                model, q, im), 0);
    /* token_embd (the tied output) has no entry without the output matrix */
    assert_non_null(strstr(out, "\"default_weighting\": [\n      \"token_embd.weight\"\n"));
    assert_non_null(strstr(out, "\"entries\": 35"));
    free(out);
    lpk_error err = {0};
    lpk_reader *r = NULL;
    assert_int_equal(lpk_reader_open(q, &r, &err), LPK_OK);
    const lpk_meta *m = lpk_reader_meta(r);
    uint32_t v;
    assert_int_equal(lpk_meta_get_u32(m, "quantize.imatrix.entries_count", &v), LPK_OK);
    assert_int_equal(v, 35);
    assert_int_equal(lpk_meta_get_u32(m, "quantize.imatrix.chunks_count", &v), LPK_OK);
    assert_int_equal(v, 121);
    assert_string_equal(lpk_meta_get_str(m, "quantize.imatrix.dataset"), text);
    assert_string_equal(lpk_meta_get_str(m, "quantize.imatrix.file"), im);
    lpk_imatrix *imx = NULL;
    assert_int_equal(lpk_imatrix_read(im, &imx, &err), LPK_OK);
    char h[24];
    snprintf(h, sizeof h, "%016llx", (unsigned long long)imx->hash);
    assert_string_equal(lpk_meta_get_str(m, "quant.imatrix.hash"), h);
    lpk_imatrix_free(imx);
    lpk_reader_close(r);
    /* llama.cpp's keys survive the export (stripped or not) */
    assert_int_equal(tu_llmpack(&out, "export '%s' -o '%s'", q, g), 0);
    free(out);
    assert_int_equal(lpk_reader_open(g, &r, &err), LPK_OK);
    assert_int_equal(lpk_meta_get_u32(lpk_reader_meta(r), "quantize.imatrix.entries_count", &v),
                     LPK_OK);
    assert_int_equal(v, 35);
    lpk_reader_close(r);
    /* --calib: the same in one go; the same bytes as --imatrix of that matrix */
    char *q2 = tu_fmt("%s/q2.lpk", dir), *q3 = tu_fmt("%s/q3.lpk", dir),
         *im2 = tu_fmt("%s/full.imatrix", dir);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q4_0 --calib '%s' -q", model,
                                q2, text), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "calibrate '%s' --text '%s' -q -o '%s'", model, text, im2),
                     0);
    free(out);
    /* (default ctx 512: 30 chunks) */
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q4_0 --imatrix '%s' -q",
                                model, q3, im2), 0);
    free(out);
    char why[256];
    assert_int_equal(tu_lpk_same_tensors(q2, q3, why, sizeof why), 0);
    /* another model's matrix: exit 3 naming the entry, no output */
    char *bad = tu_fmt("%s/bad.lpk", dir);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q4_k_m --imatrix '%s'",
                                model, bad, other), 3);
    assert_non_null(strstr(out, ".weight"));
    assert_non_null(strstr(out, "another model"));
    free(out);
    assert_false(tu_exists(bad));
    /* the same through convert (the f32 source, else the demo model: its f16
     * values are what the f32 GGUF made from it holds) */
    const char *hf0 = tu_shared("models/stories260K/hf");
    char *hf = strdup(hf0 ? hf0 : "examples/stories260K");
    assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s' --type q4_k_m --imatrix '%s'", hf, bad,
                                other), 3);
    assert_non_null(strstr(out, "another model"));
    free(out);
    assert_false(tu_exists(bad));
    char *c = tu_fmt("%s/c.lpk", dir);
    assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s' --type q4_k_m --imatrix '%s'", hf, c,
                                im), 0);
    assert_non_null(strstr(out, "default weighting: token_embd.weight"));
    free(out);
    /* convert from the f32 source = quantize of the f32 GGUF, same matrix */
    assert_int_equal(tu_lpk_same_tensors(c, q, why, sizeof why), 0);
    free(c);
    free(hf);
    free(bad);
    free(q2);
    free(q3);
    free(im2);
    free(im);
    free(q);
    free(g);
    free(model);
    free(text);
    free(other);
    tu_rmtree(dir);
    free(dir);
}

/* test-long: the whole of docs-calib.txt through llama2-20m, against
 * llama-imatrix's own file for the same model, text and ctx: every column of
 * every entry within 1e-4 relative (measured: 3e-5 at most). */
static void test_llama_imatrix(void **state)
{
    (void)state;
    if (!tu_long()) {
        print_message("SKIP: the 206-chunk comparison with llama-imatrix runs in make test-long\n");
        skip();
    }
    TU_NEED_SHARED(hf0, "models/llama2-20m/hf");
    char *hf = strdup(hf0);
    TU_NEED_SHARED(ref_path, "gguf/llama2-20m-docs-calib.imatrix");
    char *ref_s = strdup(ref_path);
    TU_NEED_SHARED(text, "text/docs-calib.txt");
    char *text_s = strdup(text);
    char *dir = tu_tmpdir();
    char *lpk = tu_fmt("%s/m.lpk", dir), *out = NULL;
    assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s'", hf, lpk), 0);
    free(out);
    lpk_error err = {0};
    lpk_imatrix *ours = NULL, *ref = NULL;
    calib_opts o = {.ctx = 512};
    assert_int_equal(calib_file(lpk, text_s, &o, &ours, &err), LPK_OK);
    assert_int_equal(lpk_imatrix_read(ref_s, &ref, &err), LPK_OK);
    assert_int_equal(ours->chunks, ref->chunks);
    assert_int_equal(ours->n, ref->n + 1);   /* + output.weight */
    double worst = 0;
    for (size_t i = 0; i < ref->n; i++) {
        const lpk_imatrix_entry *r = &ref->e[i], *e = lpk_imatrix_find(ours, r->name);
        assert_non_null(e);
        assert_int_equal(e->n, r->n);
        float *a = malloc((size_t)r->n * 4), *b = malloc((size_t)r->n * 4);
        lpk_imatrix_weights(r, a);
        lpk_imatrix_weights(e, b);
        for (int64_t k = 0; k < r->n; k++) {
            double rel = fabs((double)a[k] - b[k]) / a[k];
            worst = rel > worst ? rel : worst;
            if (rel > 1e-4) fail_msg("%s column %lld: %g vs llama.cpp %g", r->name, (long long)k,
                                     (double)b[k], (double)a[k]);
        }
        free(a);
        free(b);
    }
    print_message("llama2-20m vs llama-imatrix: worst column %.2e relative\n", worst);
    lpk_imatrix_free(ours);
    lpk_imatrix_free(ref);
    free(lpk);
    free(ref_s);
    free(text_s);
    free(hf);
    tu_rmtree(dir);
    free(dir);
}

/* test-long: the quality the issue asks for, measured the way docs/QUANT.md's
 * table is (llama2-20m, calibrated on docs-calib.txt, KLD against the bf16
 * original on docs-valid.txt, ctx 512, first 40 chunks): Q4_K_M at or below
 * llama.cpp's KLD without an importance matrix (0.000734) and with one at or
 * below 0.9x llama.cpp's (0.000620); Q4_0 likewise (0.001152, 0.000940); pure
 * q4_k at or below llama.cpp's (0.001570); each lower with the matrix than
 * without. */
static double kld_of(const char *ref, const char *q, const char *text)
{
    char *out = NULL;
    assert_int_equal(tu_llmpack(&out, "verify '%s' --ref '%s' --text '%s' --ctx 512 --chunks 40 "
                                "--json", q, ref, text), 0);
    /* verify --json (docs/verify.schema.json): results[0].kld_mean */
    json_error_t je;
    json_t *doc = json_loads(out, 0, &je);
    if (!doc) fail_msg("not JSON (%s): %s", je.text, out);
    json_t *k = json_object_get(json_array_get(json_object_get(doc, "results"), 0), "kld_mean");
    if (!json_is_number(k)) fail_msg("no results[0].kld_mean in: %s", out);
    double v = json_number_value(k);
    json_decref(doc);
    free(out);
    return v;
}

static void test_quality(void **state)
{
    (void)state;
    if (!tu_long()) {
        print_message("SKIP: the KLD targets run in make test-long\n");
        skip();
    }
    TU_NEED_SHARED(hf0, "models/llama2-20m/hf");
    char *hf = strdup(hf0);
    TU_NEED_SHARED(c0, "text/docs-calib.txt");
    char *calib = strdup(c0);
    TU_NEED_SHARED(v0, "text/docs-valid.txt");
    char *valid = strdup(v0);
    char *dir = tu_tmpdir(), *out = NULL;
    char *ref = tu_fmt("%s/ref.lpk", dir), *im = tu_fmt("%s/c.imatrix", dir),
         *q = tu_fmt("%s/q.lpk", dir);
    assert_int_equal(tu_llmpack(&out, "convert '%s' -o '%s'", hf, ref), 0);
    free(out);
    assert_int_equal(tu_llmpack(&out, "calibrate '%s' --text '%s' -q -o '%s'", ref, calib, im), 0);
    free(out);
    static const struct { const char *recipe; double no, with; } want[] = {
        {"q4_k_m", 0.000734, 0.000620},
        {"q4_0", 0.001152, 0.000940},
        {"q4_k --pure", 0.001570, 1.0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        double k[2];
        for (int w = 0; w < 2; w++) {
            assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type %s --force -q %s%s",
                                        ref, q, want[i].recipe, w ? "--imatrix " : "",
                                        w ? im : ""), 0);
            free(out);
            k[w] = kld_of(ref, q, valid);
        }
        print_message("%s: KLD %.6f without, %.6f with the importance matrix\n", want[i].recipe,
                      k[0], k[1]);
        assert_true(k[0] <= want[i].no);
        assert_true(k[1] <= want[i].with);
        assert_true(k[1] < k[0]);
    }
    free(ref); free(im); free(q); free(hf); free(calib); free(valid);
    tu_rmtree(dir);
    free(dir);
}

/* Issue #15's direction on a second model: stories260K (dim 64, every tensor a
 * 32-block type or a fallback) quantized to q4_0 with an importance matrix of
 * one half of TinyStories-valid-sample.txt (calibrate's default file: the
 * plain entries and the cov32 blocks) is closer to the f32 original on the
 * other half than without one, on both ways of splitting the text. The
 * difference is paired on the same positions (verify's vs_first); measured
 * -0.0258 +- 0.0017 and -0.0229 +- 0.0023 (docs/QUANT.md): the test wants more
 * than five standard errors. */
static void test_direction_stories260K(void **state)
{
    (void)state;
    const char *m0 = tu_shared_or_demo(S260, S260_ARGS);
    char *model = strdup(m0);
    TU_NEED_SHARED(t0, TINY);
    size_t n = 0;
    char *text = tu_read_file(t0, &n);
    assert_non_null(text);
    /* cut at the first space at or after the middle */
    size_t cut = n / 2;
    while (cut < n && text[cut] != ' ') cut++;
    assert_true(cut > 0 && cut < n);
    char *dir = tu_tmpdir(), *out = NULL;
    char *half[2] = {tu_fmt("%s/a.txt", dir), tu_fmt("%s/b.txt", dir)};
    tu_write_file(half[0], text, cut);
    tu_write_file(half[1], text + cut + 1, n - cut - 1);
    char *im = tu_fmt("%s/im.dat", dir), *q0 = tu_fmt("%s/q0.lpk", dir),
         *q1 = tu_fmt("%s/q1.lpk", dir);
    assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q4_0 -q", model, q0), 0);
    free(out);
    for (int s = 0; s < 2; s++) {
        assert_int_equal(tu_llmpack(&out, "calibrate '%s' --text '%s' --ctx 128 -q -o '%s' --force",
                                    model, half[s], im), 0);
        free(out);
        assert_int_equal(tu_llmpack(&out, "quantize '%s' -o '%s' --type q4_0 --imatrix '%s' "
                                    "--force -q", model, q1, im), 0);
        free(out);
        assert_int_equal(tu_llmpack(&out, "verify '%s' '%s' --ref '%s' --text '%s' --ctx 128 "
                                    "--json", q0, q1, model, half[1 - s]), 0);
        json_error_t je;
        json_t *doc = json_loads(out, 0, &je);
        if (!doc) fail_msg("not JSON (%s): %s", je.text, out);
        json_t *r = json_object_get(doc, "results");
        double k0 = json_number_value(json_object_get(json_array_get(r, 0), "kld_mean"));
        double k1 = json_number_value(json_object_get(json_array_get(r, 1), "kld_mean"));
        json_t *vs = json_object_get(json_array_get(r, 1), "vs_first");
        double d = json_number_value(json_object_get(vs, "kld_mean_diff"));
        double se = json_number_value(json_object_get(vs, "kld_mean_diff_stderr"));
        print_message("split %c: q4_0 KLD %.6f without, %.6f with the matrix (%+.6f +- %.6f)\n",
                      "AB"[s], k0, k1, d, se);
        assert_true(k0 > 0 && k1 > 0 && se > 0);
        assert_true(fabs(d - (k1 - k0)) < 1e-9);
        assert_true(d < -5 * se);
        json_decref(doc);
        free(out);
    }
    free(half[0]); free(half[1]); free(im); free(q0); free(q1); free(text); free(model);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layer0_independent),
        cmocka_unit_test(test_threads_and_prefix),
        cmocka_unit_test(test_stream_demo),
        cmocka_unit_test(test_stream_llama2_20m),
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_quantize_imatrix),
        cmocka_unit_test(test_llama_imatrix),
        cmocka_unit_test(test_direction_stories260K),
        cmocka_unit_test(test_quality),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
