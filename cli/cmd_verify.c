/* llmpack verify: perplexity of models on a text, and their divergence from a
 * reference (llama.cpp's protocol; see docs/VERIFY.md): arguments, progress and
 * the report (text, --json, --report HTML) over the verify job (llmpack_verify). */
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../verify/verify.h"
#include "report_html.h"

static const char *usage_text =
    "usage: llmpack verify MODEL... [--ref REF] --text FILE [options]\n"
    "\n"
    "Perplexity of each MODEL on FILE (llama.cpp's protocol: the file as bytes, one\n"
    "trailing newline dropped, BOS first, chunks of --ctx tokens whose first token is\n"
    "BOS, positions ctx/2 .. ctx-2 scored). With --ref, the reference runs on the\n"
    "same chunks and each model's report adds the reference PPL, their ratio and\n"
    "difference, KL(P_ref || P_model) and top-1 agreement; with several MODELs, each\n"
    "after the first also its KLD and top-1 difference to the first, paired on the same\n"
    "positions, with standard errors (\"vs first\"; in --json, vs_first).\n"
    "\n"
    "MODEL and REF are containers (.lpk, GGUF) or anything convert reads (a Hugging\n"
    "Face or Meta folder, an archive): those are converted at their source precision\n"
    "into memory first (a memfd; above LLMPACK_MEMFD_MAX bytes, default half the\n"
    "available memory, an unlinked file in TMPDIR), nothing written to disk.\n"
    "\n"
    "options:\n"
    "  --ref REF            reference model (e.g. the f16/bf16 original)\n"
    "  -f, --text FILE      evaluation text (required)\n"
    "  -c, --ctx N          tokens per chunk (default 512; above a model's trained\n"
    "                       context: measured, with a warning)\n"
    "  --chunks N           only the first N chunks\n"
    "  -t, --threads N      OpenMP threads (default, or 0: all cores; results do not\n"
    "                       depend on it)\n"
    "  --max-ppl-delta X    limit on ppl - ref_ppl       } exceeded: exit code 4\n"
    "  --max-ppl-ratio X    limit on ppl / ref_ppl       }\n"
    "  --max-kld X          limit on the mean KLD        }\n"
    "  --tensor-errors      per-tensor rel. RMSE against the reference's tensors\n"
    "  --batch N            chunks per forward pass (default 2; 1 .. 64): every weight\n"
    "                       matrix read once for N chunks; the same results, more\n"
    "                       memory (each further chunk: its logits and state)\n"
    "  --kv-f16             the MODELs' attention as llama.cpp runs it with its default\n"
    "                       f16 KV cache: keys, values, queries and softmax weights\n"
    "                       rounded to f16 (REF's stays fp32)\n"
    "  --report FILE        an HTML report (one file, charts inline): the summary, PPL,\n"
    "                       KLD and top-1 per chunk, the KLD distribution, per-tensor\n"
    "                       errors (with --ref), size against KLD\n"
    "  --force              replace an existing --report FILE\n"
    "  --json               one JSON document (docs/verify.schema.json)\n"
    "  -q, --quiet          no progress line\n"
    "  -m, --model MODEL    a MODEL as an option (repeatable)\n"
    "  -h, --help           this help\n"
    "Options take their value as --opt VALUE or --opt=VALUE.\n\n"
    "example (llama-perplexity -m MODEL -f TEXT -c 512, and the KL divergence too):\n"
    "  llmpack verify model.q4_k_m.gguf --ref model.f16.lpk -f wiki.test.raw -c 512\n"
    "  llmpack verify llama-2-7b-Q4_K_M.gguf --ref ./Llama-2-7b-hf -f wiki.test.raw\n"
    "several types against the original, with a report to compare them in:\n"
    "  llmpack verify m.q8_0.lpk m.q4_k_m.lpk m.q2_k.lpk --ref m.bf16.lpk -f wiki.test.raw \\\n"
    "      --report report.html\n";

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

typedef struct limits {
    double ppl_delta, ppl_ratio, kld; /* NAN: not set */
} limits;

/* The limits' names and bits, in the order reports list them. */
static const struct { unsigned bit; const char *name; } limit_names[] = {
    {LLMPACK_MAX_PPL_DELTA, "max-ppl-delta"},
    {LLMPACK_MAX_PPL_RATIO, "max-ppl-ratio"},
    {LLMPACK_MAX_KLD, "max-kld"}};

/* null for what was not measured: jansson has no NaN/Inf and would drop the key */
static json_t *jnum_or_null(int has, double v)
{
    return has && isfinite(v) ? json_real(v) : json_null();
}

static const char *checksums_state(int c)
{
    return c == LLMPACK_SUMS_NONE ? "none" : c == LLMPACK_SUMS_SKIPPED ? "skipped" : "verified";
}

static json_t *jstr_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* file, type, type_from, size_bytes, bits_per_weight, checksums of a model
 * (null when known is 0: it was not opened) into o. */
static void file_json(json_t *o, const char *path, const llmpack_verify_model *m, int known)
{
    const llmpack_model_desc *d = &m->desc;
    json_object_set_new(o, "file", json_string(path));
    json_object_set_new(o, "type", known ? json_string(d->type) : json_null());
    json_object_set_new(o, "type_from", known ? json_string(d->type_from) : json_null());
    json_object_set_new(o, "size_bytes", known ? json_integer((json_int_t)d->file_size)
                                               : json_null());
    json_object_set_new(o, "bits_per_weight", known ? json_real(d->bpw) : json_null());
    json_object_set_new(o, "checksums", known ? json_string(checksums_state(m->checksums))
                                              : json_null());
}

/* The measurements of one model: (key, value, has). */
typedef struct measure {
    const char *key;
    double v;
    int has;
} measure;

/* "vs_first" of a result: the paired differences to the first model (first:
 * its path), null when r has none (the first model, no reference, nothing
 * measured). */
static json_t *vs_first_json(const char *first, const vf_ppl_result *r)
{
    if (!r || !r->has_paired) return json_null();
    json_t *o = json_object();
    json_object_set_new(o, "file", json_string(first));
    json_object_set_new(o, "kld_mean_diff", jnum_or_null(1, r->kld_diff));
    json_object_set_new(o, "kld_mean_diff_stderr", jnum_or_null(1, r->kld_diff_stderr));
    json_object_set_new(o, "top1_agreement_diff", jnum_or_null(1, r->top1_diff));
    json_object_set_new(o, "top1_agreement_diff_stderr", jnum_or_null(1, r->top1_diff_stderr));
    return o;
}

/* One model's object in "results" (docs/verify.schema.json). Every key is
 * present in every case: r NULL (verify failed before measuring) gives nulls,
 * pass false and the error; a value measured but not finite is null too, with
 * the error naming it. first: the first model's path (for "vs_first"). */
static json_t *result_json(const char *path, const vf_ppl_result *r, const limits *lim,
                           int tensor_errors, const vf_tensor_error *te, size_t n_te,
                           const llmpack_verify_model *vm, const char *first, const char *error)
{
    json_t *vs = vs_first_json(first, r);
    static const vf_ppl_result none;
    json_t *o = json_object();
    int ok = r != NULL;
    if (!r) r = &none;
    int h = ok && r->has_ref;
    file_json(o, path, vm, vm->opened);
    const measure ms[] = {
        {"ppl", r->ppl, ok}, {"ppl_stderr", r->ppl_stderr, ok},
        {"ref_ppl", r->ref_ppl, h}, {"ref_ppl_stderr", r->ref_ppl_stderr, h},
        {"ppl_ratio", r->ppl_ratio, h}, {"ppl_ratio_stderr", r->ppl_ratio_stderr, h},
        {"ppl_delta", r->ppl_delta, h}, {"ppl_delta_stderr", r->ppl_delta_stderr, h},
        {"kld_mean", r->kld_mean, h}, {"kld_mean_stderr", r->kld_stderr, h},
        {"kld_median", r->kld_median, h}, {"kld_p99", r->kld_p99, h},
        {"kld_max", r->kld_max, h}, {"top1_agreement", r->top1_agreement, h},
        {"top1_agreement_stderr", r->top1_stderr, h},
        {"tokens_per_second", r->tokens_per_second, ok}};
    char bad[256] = "";
    size_t nb = 0;
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        json_object_set_new(o, ms[i].key, jnum_or_null(ms[i].has, ms[i].v));
        if (ms[i].has && !isfinite(ms[i].v) && nb < sizeof bad)
            nb += (size_t)snprintf(bad + nb, sizeof bad - nb, "%s%s", nb ? ", " : "", ms[i].key);
    }
    char nonfinite[300];
    if (!error && nb) {
        snprintf(nonfinite, sizeof nonfinite, "not a finite number: %s", bad);
        error = nonfinite;
    }
    /* each limit given: its value, what it bounds, the measured value, pass */
    const struct { const char *name, *metric; double value, measured; } ls[] = {
        {"max-ppl-delta", "ppl_delta", lim->ppl_delta, r->ppl_delta},
        {"max-ppl-ratio", "ppl_ratio", lim->ppl_ratio, r->ppl_ratio},
        {"max-kld", "kld_mean", lim->kld, r->kld_mean}};
    json_t *la = json_array();
    int pass = ok && !error;
    for (size_t i = 0; i < 3; i++) {
        if (isnan(ls[i].value)) continue;
        int lp = h && isfinite(ls[i].measured) && ls[i].measured <= ls[i].value;
        pass &= lp;
        json_t *e = json_object();
        json_object_set_new(e, "name", json_string(ls[i].name));
        json_object_set_new(e, "metric", json_string(ls[i].metric));
        json_object_set_new(e, "value", json_real(ls[i].value));
        json_object_set_new(e, "measured", jnum_or_null(h, ls[i].measured));
        json_object_set_new(e, "pass", json_boolean(lp));
        json_array_append_new(la, e);
    }
    json_object_set_new(o, "limits", la);
    json_t *t = json_null();
    if (tensor_errors && te) {
        t = json_array();
        for (size_t i = 0; i < n_te; i++) {
            json_t *e = json_object();
            json_object_set_new(e, "name", json_string(te[i].name));
            json_object_set_new(e, "type", json_string(lpk_type_get(te[i].type)->name));
            json_object_set_new(e, "ref_type", json_string(lpk_type_get(te[i].ref_type)->name));
            json_object_set_new(e, "rel_rmse", jnum_or_null(1, te[i].rel_rmse));
            json_array_append_new(t, e);
        }
    }
    json_object_set_new(o, "tensor_errors", t);
    json_object_set_new(o, "vs_first", vs);
    json_object_set_new(o, "pass", json_boolean(pass));
    json_object_set_new(o, "error", jstr_or_null(error));
    return o;
}

/* The command line as the report shows it, besides the job's result. */
typedef struct run_info {
    const char *ref_path, *text_path;
    long ctx, max_chunks;
    const limits *lim;
    int tensor_errors, kv_f16;
} run_info;

/* The whole --json document (docs/verify.schema.json): results is the array
 * of the models' objects (taken); error NULL on success. pass: every result
 * passed and nothing failed. */
static void print_json(const run_info *ri, const llmpack_verify_result *res, json_t *results,
                       const char *error)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "schema_version", json_integer(1));
    json_t *ref = json_null();
    if (ri->ref_path) {
        ref = json_object();
        file_json(ref, ri->ref_path, &res->ref, res->ref.loaded);
        json_object_set_new(ref, "error", jstr_or_null(res->ref.loaded ? NULL : error));
    }
    json_object_set_new(doc, "reference", ref);
    json_t *tx = json_object();
    json_object_set_new(tx, "file", json_string(ri->text_path));
    json_object_set_new(tx, "bytes", res->text_read ? json_integer((json_int_t)res->text_bytes)
                                                    : json_null());
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)res->text_xxh3);
    json_object_set_new(tx, "xxh3", res->text_read ? json_string(hex) : json_null());
    json_object_set_new(tx, "tokens", res->tokenized ? json_integer((json_int_t)res->n_tokens)
                                                     : json_null());
    json_object_set_new(tx, "tokens_scored", res->measured
                                                 ? json_integer((json_int_t)res->tokens_scored)
                                                 : json_null());
    json_object_set_new(tx, "error", jstr_or_null(res->measured ? NULL : error));
    json_object_set_new(doc, "text", tx);
    json_t *se = json_object();
    json_object_set_new(se, "ctx", json_integer(ri->ctx));
    json_object_set_new(se, "chunks", res->measured ? json_integer(res->chunks) : json_null());
    json_object_set_new(se, "max_chunks", ri->max_chunks ? json_integer(ri->max_chunks)
                                                         : json_null());
    json_object_set_new(se, "threads", json_integer(res->threads));
    json_t *lj = json_object();
    json_object_set_new(lj, "max_ppl_delta", jnum_or_null(1, ri->lim->ppl_delta));
    json_object_set_new(lj, "max_ppl_ratio", jnum_or_null(1, ri->lim->ppl_ratio));
    json_object_set_new(lj, "max_kld", jnum_or_null(1, ri->lim->kld));
    json_object_set_new(se, "limits", lj);
    json_object_set_new(se, "tensor_errors", json_boolean(ri->tensor_errors));
    json_object_set_new(se, "kv_f16", json_boolean(ri->kv_f16));
    json_object_set_new(doc, "settings", se);
    int pass = !error && json_array_size(results) > 0;
    for (size_t i = 0; i < json_array_size(results); i++)
        pass &= json_is_true(json_object_get(json_array_get(results, i), "pass"));
    json_object_set_new(doc, "results", results);
    json_object_set_new(doc, "pass", json_boolean(pass));
    json_object_set_new(doc, "error", jstr_or_null(error));
    cli_json_print(doc);
}

static void result_text(const char *path, const char *ref, const char *first,
                        const vf_ppl_result *r, const limits *lim, unsigned ex,
                        const vf_tensor_error *te, size_t n_te)
{
    printf("%s\n", path);
    printf("  %d chunks x %d tokens, %llu positions scored, %.0f tokens/s\n", r->chunks, r->ctx,
           (unsigned long long)r->tokens_scored, r->tokens_per_second);
    printf("  PPL        %12.4f +/- %.4f\n", r->ppl, r->ppl_stderr);
    if (r->has_ref) {
        printf("  ref PPL    %12.4f +/- %.4f   (%s)\n", r->ref_ppl, r->ref_ppl_stderr, ref);
        printf("  PPL ratio  %12.6f +/- %.6f\n", r->ppl_ratio, r->ppl_ratio_stderr);
        printf("  PPL delta  %12.4f +/- %.4f\n", r->ppl_delta, r->ppl_delta_stderr);
        printf("  KLD        mean %.6f +/- %.6f, median %.6f, p99 %.6f, max %.6f\n", r->kld_mean,
               r->kld_stderr, r->kld_median, r->kld_p99, r->kld_max);
        printf("  top-1      %.3f%% +/- %.3f%% same token as the reference\n",
               100 * r->top1_agreement, 100 * r->top1_stderr);
    }
    if (r->has_paired) {
        /* the KLD difference to the decimal of the standard error's second
         * significant digit (at least 6 decimals, as the KLD); z: the difference
         * in standard errors, none when every position's difference is the same
         * (a model against itself: all 0) */
        double se = r->kld_diff_stderr;
        int dec = se > 0 ? 1 - (int)floor(log10(se)) : 6;
        dec = dec < 6 ? 6 : dec > 12 ? 12 : dec;
        char z[32] = "z -";
        if (se > 0) snprintf(z, sizeof z, "z %+.1f", r->kld_diff / se);
        printf("  vs first   KLD %+.*f +/- %.*f (%s), top-1 %+.3f%% +/- %.3f%%   (%s)\n", dec,
               r->kld_diff, dec, se, z, 100 * r->top1_diff, 100 * r->top1_diff_stderr, first);
    }
    if (!isnan(lim->ppl_delta) || !isnan(lim->ppl_ratio) || !isnan(lim->kld)) {
        if (!ex) {
            printf("  limits     ok\n");
        } else {
            printf("  limits     EXCEEDED:");
            if (ex & LLMPACK_MAX_PPL_DELTA)
                printf(" ppl delta %.4f > %g;", r->ppl_delta, lim->ppl_delta);
            if (ex & LLMPACK_MAX_PPL_RATIO)
                printf(" ppl ratio %.6f > %g;", r->ppl_ratio, lim->ppl_ratio);
            if (ex & LLMPACK_MAX_KLD) printf(" kld mean %.6f > %g;", r->kld_mean, lim->kld);
            printf("\n");
        }
    }
    if (te) {
        printf("  tensor errors (rel. RMSE vs the reference, worst first):\n");
        for (size_t i = 0; i < n_te; i++)
            printf("    %-28s %-5s %.6f\n", te[i].name, lpk_type_get(te[i].type)->name,
                   te[i].rel_rmse);
    }
}

/* --json when verify failed: the same keys, unmeasured (null), with the error. */
static void print_failed(const run_info *ri, const llmpack_verify_result *res, const char **paths,
                         int n, const lpk_error *err)
{
    static const llmpack_verify_model unknown;
    const char *msg = err->msg[0] ? err->msg : lpk_status_name(err->status);
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, result_json(paths[i], NULL, ri->lim, ri->tensor_errors, NULL,
                                               0, i < res->n_models ? &res->models[i] : &unknown,
                                               paths[0], msg));
    print_json(ri, res, arr, msg);
}

/* --report: the measured run as HTML at path (the per-chunk values and every
 * position's KLD come from the evaluation itself). */
static int write_report(const char *path, int force, const run_info *ri,
                        const llmpack_verify_result *res, lpk_error *err)
{
    int n = res->n_models;
    report_model *rm = calloc((size_t)n, sizeof *rm);
    char (*exceeded)[48] = calloc((size_t)n, sizeof *exceeded);
    if (!rm || !exceeded) {
        free(rm);
        free(exceeded);
        return lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
    }
    const limits *l = ri->lim;
    int n_limits = !isnan(l->ppl_delta) + !isnan(l->ppl_ratio) + !isnan(l->kld);
    report_run run = {.ref_path = ri->ref_path, .text_path = ri->text_path,
                      .text_bytes = res->text_bytes, .n_tokens = res->n_tokens,
                      .ctx = (int)ri->ctx, .chunks = res->chunks, .threads = res->threads,
                      .kv_f16 = ri->kv_f16,
                      .tokens_scored = res->tokens_scored, .models = rm, .n_models = n};
    if (res->ref.loaded) run.ref_desc = res->ref.desc;
    for (int i = 0; i < n; i++) {
        const llmpack_verify_model *m = &res->models[i];
        rm[i].path = m->path;
        rm[i].desc = m->desc;
        rm[i].res = m->ppl;
        rm[i].chunks = m->chunks;
        rm[i].kld = m->kld;
        rm[i].n_kld = m->n_kld;
        rm[i].te = m->te;
        rm[i].n_te = m->n_te;
        rm[i].n_limits = n_limits;
        for (size_t k = 0; k < 3; k++)
            if (m->exceeded & limit_names[k].bit)
                snprintf(exceeded[i] + strlen(exceeded[i]),
                         sizeof exceeded[i] - strlen(exceeded[i]), "%s%s",
                         exceeded[i][0] ? ", " : "", limit_names[k].name);
        rm[i].exceeded = exceeded[i];
    }
    int st = report_html_write(path, &run, force ? LPK_WRITE_FORCE : 0, err);
    free(rm);
    free(exceeded);
    return st;
}

/* What the job's callbacks print: the conversions' notices and progress, the
 * no-checksums notice of each input as it is opened, the warnings, the text
 * line and the evaluation's progress: text tokens of chunks x ctx, advancing
 * after each block of each forward pass, and once the first tokens are timed,
 * an estimate of the whole run when it is long. */
typedef struct verify_cli {
    const run_info *ri;
    const llmpack_verify_result *res;
    int n_paths, quiet, json;
    int said;             /* inputs (the reference first) whose checksums were considered */
    int converting;       /* in stage "converting": its notices are the conversion's */
    cli_progress p;
    char label[96];
    uint64_t ctx;
    int n_chunks, n_pass;
    int estimated;
} verify_cli;

/* The no-checksums notice of each input opened since the last call (not with
 * --json, whose output has "checksums": "none" instead). */
static void say_checksums(verify_cli *v)
{
    const llmpack_verify_result *res = v->res;
    for (; v->said <= res->n_models; v->said++) {
        const llmpack_verify_model *m = v->said ? &res->models[v->said - 1] : &res->ref;
        if (!v->said && !m->path) continue;
        if (!m->opened) break;
        if (!v->json && m->checksums == LLMPACK_SUMS_NONE)
            lpk_notice("%s: GGUF carries no checksums: its bytes cannot be verified", m->path);
    }
}

/* The estimate of the whole run, once: from the first chunk (every pass: the
 * reference's and the models' may run at different speeds), or from the
 * progress after a fifth of the interval (2 s) when a chunk takes longer; said
 * when the run is expected to take over three intervals (30 s). */
static void estimate(verify_cli *vp, uint64_t done, uint64_t total)
{
    double el = cli_now() - vp->p.t0;
    if (!vp->estimated && done && (el >= vp->p.interval / 5 || done >= vp->ctx)) {
        vp->estimated = 1;
        double est = el * (double)total / (double)done;
        if (est > 3 * vp->p.interval) {
            if (vp->p.tty) fputs("\r\033[K", stderr);
            if (est >= 60)
                fprintf(stderr, "llmpack verify: estimated %.0f min", est / 60);
            else
                fprintf(stderr, "llmpack verify: estimated %.0f s", est);
            fprintf(stderr, " (%d chunk%s of %llu tokens, %d forward pass%s each)\n",
                    vp->n_chunks, vp->n_chunks > 1 ? "s" : "", (unsigned long long)vp->ctx,
                    vp->n_pass, vp->n_pass > 1 ? "es" : "");
        }
    }
}

static void on_progress(void *user, const llmpack_progress *pg)
{
    verify_cli *v = user;
    say_checksums(v);
    int evaluating = !strcmp(pg->stage, "evaluating");
    switch (pg->event) {
    case LLMPACK_PROGRESS_BEGIN:
        v->converting = !strcmp(pg->stage, "converting");
        if (evaluating) {
            const llmpack_verify_result *res = v->res;
            if (!v->json && !v->quiet)
                fprintf(stderr, "%s: %zu tokens, %d chunks of %ld, %d model%s%s\n",
                        base_name(v->ri->text_path), res->n_tokens, res->n_chunks, v->ri->ctx,
                        v->n_paths, v->n_paths > 1 ? "s" : "", v->ri->ref_path ? " + reference" : "");
            v->n_chunks = res->n_chunks;
            snprintf(v->label, sizeof v->label, "verify");
        } else {
            snprintf(v->label, sizeof v->label, "verify: %s", pg->stage);
        }
        cli_progress_start(&v->p, v->label, pg->unit, pg->total, v->quiet || v->json);
        break;
    case LLMPACK_PROGRESS_UPDATE:
        v->p.total = pg->total;
        if (evaluating && v->p.enabled) estimate(v, pg->done, pg->total);
        cli_progress_update(&v->p, pg->done, pg->item);
        break;
    case LLMPACK_PROGRESS_END:
        cli_progress_end(&v->p);
        v->converting = 0;
        break;
    }
}

/* A conversion's notices unless quiet; the warnings always. */
static void on_notice(void *user, const char *msg)
{
    verify_cli *v = user;
    say_checksums(v);
    if (!v->converting || !(v->quiet || v->json)) fprintf(stderr, "llmpack verify: %s\n", msg);
}

int cmd_verify(int argc, char **argv)
{
    const char *cmd = "verify", *ref_path = NULL, *text_path = NULL, *report_path = NULL;
    long ctx = 512, max_chunks = 0, threads = 0, batch = 0;
    int json = 0, quiet = 0, tensor_errors = 0, force = 0, kv_f16 = 0;
    limits lim = {NAN, NAN, NAN};
    const char **paths = calloc((size_t)argc, sizeof *paths);
    int n_paths = 0;
    if (!paths) return CLI_EXIT_RUNTIME;
    enum { O_REF = 256, O_CHUNKS, O_MAX_DELTA, O_MAX_RATIO, O_MAX_KLD, O_TENSOR_ERRORS,
           O_JSON, O_REPORT, O_FORCE, O_KV_F16, O_BATCH };
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},          {"model", required_argument, NULL, 'm'},
        {"text", required_argument, NULL, 'f'},    {"ctx", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 't'}, {"quiet", no_argument, NULL, 'q'},
        {"ref", required_argument, NULL, O_REF},   {"chunks", required_argument, NULL, O_CHUNKS},
        {"max-ppl-delta", required_argument, NULL, O_MAX_DELTA},
        {"max-ppl-ratio", required_argument, NULL, O_MAX_RATIO},
        {"max-kld", required_argument, NULL, O_MAX_KLD},
        {"tensor-errors", no_argument, NULL, O_TENSOR_ERRORS},
        {"kv-f16", no_argument, NULL, O_KV_F16},
        {"batch", required_argument, NULL, O_BATCH},
        {"json", no_argument, NULL, O_JSON},
        {"report", required_argument, NULL, O_REPORT},
        {"force", no_argument, NULL, O_FORCE},
        {NULL, 0, NULL, 0}};
    int oc, urc = -1;
    cli_getopt_start();
    while (urc < 0 && (oc = cli_getopt(cmd, argc, argv, "hm:f:c:t:q", opts)) != -1) {
        double d;
        switch (oc) {
        case 'h': fputs(usage_text, stdout); urc = CLI_EXIT_OK; break;
        case 'm': paths[n_paths++] = optarg; break;
        case 'f': text_path = optarg; break;
        case 'c':
            if (cli_parse_int(optarg, 4, 1 << 20, &ctx))
                urc = cli_usage_error(cmd, "--ctx wants an integer in 4..%d", 1 << 20);
            break;
        case 't':
            if (cli_parse_threads(cmd, optarg, &threads)) urc = CLI_EXIT_USAGE;
            break;
        case 'q': quiet = 1; break;
        case O_REF: ref_path = optarg; break;
        case O_CHUNKS:
            if (cli_parse_int(optarg, 1, 1L << 30, &max_chunks))
                urc = cli_usage_error(cmd, "--chunks wants a positive integer");
            break;
        case O_MAX_DELTA: case O_MAX_RATIO: case O_MAX_KLD:
            if (cli_parse_double(optarg, &d)) {
                urc = cli_usage_error(cmd, "--%s wants a number", cli_opt_name(opts, oc));
                break;
            }
            *(oc == O_MAX_DELTA ? &lim.ppl_delta : oc == O_MAX_RATIO ? &lim.ppl_ratio : &lim.kld) = d;
            break;
        case O_TENSOR_ERRORS: tensor_errors = 1; break;
        case O_KV_F16: kv_f16 = 1; break;
        case O_BATCH:
            if (cli_parse_int(optarg, 1, 64, &batch))
                urc = cli_usage_error(cmd, "--batch wants an integer in 1..64");
            break;
        case O_JSON: json = 1; break;
        case O_REPORT: report_path = optarg; break;
        case O_FORCE: force = 1; break;
        default: urc = CLI_EXIT_USAGE; break;
        }
    }
    if (urc >= 0) {
        free(paths);
        return urc;
    }
    while (optind < argc) paths[n_paths++] = argv[optind++];
    if (!n_paths || !text_path) {
        free(paths);
        return cli_usage_error(cmd, !n_paths ? "no MODEL given" : "--text FILE is required");
    }
    if (!ref_path && (tensor_errors || !isnan(lim.ppl_delta) || !isnan(lim.ppl_ratio) ||
                      !isnan(lim.kld))) {
        free(paths);
        return cli_usage_error(cmd, "--tensor-errors and the --max-* limits need --ref");
    }
    const char *inputs[] = {ref_path, text_path};
    if ((urc = cli_inputs_exist(cmd, paths, (size_t)n_paths)) ||
        (urc = cli_inputs_exist(cmd, inputs, 2))) {
        free(paths);
        return urc;
    }
    /* a report that could not be written is known before the run, not after */
    if (report_path) {
        lpk_error terr = {0};
        int tst = lpk_writer_check_target(report_path, force ? LPK_WRITE_FORCE : 0, &terr);
        if (tst) {
            cli_print_error(cmd, &terr);
            free(paths);
            return cli_exit_for(tst);
        }
    }
    cli_job cj;
    if (cli_job_init(&cj, cmd, quiet || json)) {
        fprintf(stderr, "llmpack verify: out of memory\n");
        free(paths);
        return CLI_EXIT_RUNTIME;
    }
    run_info ri = {.ref_path = ref_path, .text_path = text_path, .ctx = ctx,
                   .max_chunks = max_chunks, .lim = &lim, .tensor_errors = tensor_errors,
                   .kv_f16 = kv_f16};
    llmpack_verify_opts vo = {
        .models = paths, .n_models = n_paths, .ref = ref_path, .text = text_path,
        .ctx = (int)ctx, .max_chunks = (int)max_chunks, .threads = (int)threads,
        .max_ppl_delta = lim.ppl_delta, .max_ppl_ratio = lim.ppl_ratio, .max_kld = lim.kld,
        /* a report shows them whenever there is a reference */
        .tensor_errors = tensor_errors || (report_path && ref_path), .kv_f16 = kv_f16,
        .batch = (int)batch};
    for (size_t k = 0; k < 3; k++) {
        double v = k == 0 ? lim.ppl_delta : k == 1 ? lim.ppl_ratio : lim.kld;
        if (!isnan(v)) vo.limits |= limit_names[k].bit;
    }
    llmpack_verify_result res;
    verify_cli v = {.ri = &ri, .res = &res, .n_paths = n_paths, .quiet = quiet, .json = json,
                    .ctx = (uint64_t)ctx, .n_pass = n_paths + (ref_path != NULL)};
    llmpack_job_set_progress(cj.j, on_progress, &v);
    llmpack_job_set_notice(cj.j, on_notice, &v);
    int st = llmpack_verify(cj.j, &vo, &res), rc = CLI_EXIT_OK;
    say_checksums(&v);
    lpk_error err = *llmpack_job_lpk_error(cj.j);
    if (!st && report_path) st = write_report(report_path, force, &ri, &res, &err);
    if (st) {
        cli_print_error(cmd, &err);
        rc = cli_exit_for(st);
        if (json) print_failed(&ri, &res, paths, n_paths, &err);
        goto done;
    }
    json_t *arr = json ? json_array() : NULL;
    for (int i = 0; i < n_paths; i++) {
        const llmpack_verify_model *m = &res.models[i];
        const vf_tensor_error *te = tensor_errors ? m->te : NULL;
        size_t n_te = tensor_errors ? m->n_te : 0;
        if (json)
            json_array_append_new(arr, result_json(paths[i], &m->ppl, &lim, tensor_errors, te,
                                                   n_te, m, paths[0], NULL));
        else
            result_text(paths[i], ref_path, paths[0], &m->ppl, &lim, m->exceeded, te, n_te);
    }
    if (json) print_json(&ri, &res, arr, NULL);
    if (report_path && !json && !quiet) fprintf(stderr, "report: %s\n", report_path);
    if (res.limit_exceeded) {
        if (!json) fprintf(stderr, "llmpack verify: a limit was exceeded\n");
        rc = CLI_EXIT_LIMIT;
    }
done:
    llmpack_verify_result_free(&res);
    cli_job_free(&cj);
    free(paths);
    return rc;
}
