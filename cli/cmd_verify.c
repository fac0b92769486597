/* llmpack verify: perplexity of models on a text, and their divergence from a
 * reference (llama.cpp's protocol; see docs/VERIFY.md). */
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../tok/tok.h"
#include "../verify/verify.h"

static const char *usage_text =
    "usage: llmpack verify MODEL... [--ref REF] --text FILE [options]\n"
    "\n"
    "Perplexity of each MODEL on FILE (llama.cpp's protocol: the file as bytes, one\n"
    "trailing newline dropped, BOS first, chunks of --ctx tokens whose first token is\n"
    "BOS, positions ctx/2 .. ctx-2 scored). With --ref, the reference runs on the\n"
    "same chunks and each model's report adds the reference PPL, their ratio and\n"
    "difference, KL(P_ref || P_model) and top-1 agreement.\n"
    "\n"
    "options:\n"
    "  --ref REF            reference model (e.g. the f16/bf16 original)\n"
    "  -f, --text FILE      evaluation text (required)\n"
    "  -c, --ctx N          tokens per chunk (default 512)\n"
    "  --chunks N           only the first N chunks\n"
    "  -t, --threads N      OpenMP threads (default, or 0: all cores; results do not\n"
    "                       depend on it)\n"
    "  --max-ppl-delta X    limit on ppl - ref_ppl       } exceeded: exit code 4\n"
    "  --max-ppl-ratio X    limit on ppl / ref_ppl       }\n"
    "  --max-kld X          limit on the mean KLD        }\n"
    "  --tensor-errors      per-tensor rel. RMSE against the reference's tensors\n"
    "  --json               machine-readable output\n"
    "  -q, --quiet          no progress line\n"
    "  -m, --model MODEL    a MODEL as an option (repeatable)\n"
    "  -h, --help           this help\n"
    "Options take their value as --opt VALUE or --opt=VALUE.\n\n"
    "example (llama-perplexity -m MODEL -f TEXT -c 512, and the KL divergence too):\n"
    "  llmpack verify model.q4_k_m.gguf --ref model.f16.lpk -f wiki.test.raw -c 512\n";

/* One loaded container + model. */
typedef struct loaded {
    const char *path;
    lpk_reader *r;
    vf_model *m;
} loaded;

/* say: print the no-checksums notice (not with --json, whose output has
 * "checksums": "none" instead). */
static int load(const char *path, loaded *out, int say, lpk_error *err)
{
    out->path = path;
    int st = lpk_reader_open(path, &out->r, err);
    if (!st && say && !lpk_reader_has_checksums(out->r))
        lpk_notice("%s: GGUF carries no checksums: its bytes cannot be verified", path);
    if (!st) st = vf_model_open(out->r, &out->m, err);
    return st;
}

static void unload(loaded *l)
{
    vf_model_free(l->m);
    lpk_reader_close(l->r);
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

typedef struct limits {
    double ppl_delta, ppl_ratio, kld; /* NAN: not set */
} limits;

/* Names of the limits r exceeds (written to names, up to 3); returns the count. */
static int check_limits(const limits *l, const vf_ppl_result *r, const char **names)
{
    int n = 0;
    if (!isnan(l->ppl_delta) && !(r->ppl_delta <= l->ppl_delta)) names[n++] = "max-ppl-delta";
    if (!isnan(l->ppl_ratio) && !(r->ppl_ratio <= l->ppl_ratio)) names[n++] = "max-ppl-ratio";
    if (!isnan(l->kld) && !(r->kld_mean <= l->kld)) names[n++] = "max-kld";
    return n;
}

/* null for what was not measured: jansson has no NaN/Inf and would drop the key */
static json_t *jnum_or_null(int has, double v)
{
    return has && isfinite(v) ? json_real(v) : json_null();
}

static const char *checksums_state(const lpk_reader *r)
{
    if (!r) return NULL;
    if (!lpk_reader_has_checksums(r)) return "none";
    return lpk_reader_default_flags() & LPK_OPEN_NO_VERIFY ? "skipped" : "verified";
}

/* One model's report. Every key is present in every case: r NULL (verify
 * failed before measuring) gives nulls, limits_ok false and the error. */
static json_t *result_json(const char *path, const vf_ppl_result *r, const char **ex, int n_ex,
                           const vf_tensor_error *te, size_t n_te, const lpk_reader *rd,
                           const char *error)
{
    static const vf_ppl_result none;
    json_t *o = json_object();
    int ok = r != NULL;
    if (!r) r = &none;
    int h = ok && r->has_ref;
    json_object_set_new(o, "model", json_string(path));
    json_object_set_new(o, "ctx", ok ? json_integer(r->ctx) : json_null());
    json_object_set_new(o, "chunks", ok ? json_integer(r->chunks) : json_null());
    json_object_set_new(o, "tokens_scored",
                        ok ? json_integer((json_int_t)r->tokens_scored) : json_null());
    json_object_set_new(o, "ppl", jnum_or_null(ok, r->ppl));
    json_object_set_new(o, "ppl_stderr", jnum_or_null(ok, r->ppl_stderr));
    json_object_set_new(o, "ref_ppl", jnum_or_null(h, r->ref_ppl));
    json_object_set_new(o, "ref_ppl_stderr", jnum_or_null(h, r->ref_ppl_stderr));
    json_object_set_new(o, "ppl_ratio", jnum_or_null(h, r->ppl_ratio));
    json_object_set_new(o, "ppl_ratio_stderr", jnum_or_null(h, r->ppl_ratio_stderr));
    json_object_set_new(o, "ppl_delta", jnum_or_null(h, r->ppl_delta));
    json_object_set_new(o, "ppl_delta_stderr", jnum_or_null(h, r->ppl_delta_stderr));
    json_object_set_new(o, "kld_mean", jnum_or_null(h, r->kld_mean));
    json_object_set_new(o, "kld_median", jnum_or_null(h, r->kld_median));
    json_object_set_new(o, "kld_p99", jnum_or_null(h, r->kld_p99));
    json_object_set_new(o, "kld_max", jnum_or_null(h, r->kld_max));
    json_object_set_new(o, "top1_agreement", jnum_or_null(h, r->top1_agreement));
    json_object_set_new(o, "tokens_per_second", jnum_or_null(ok, r->tokens_per_second));
    const char *cs = checksums_state(rd);
    json_object_set_new(o, "checksums", cs ? json_string(cs) : json_null());
    json_object_set_new(o, "limits_ok", json_boolean(ok && n_ex == 0));
    json_t *a = json_array();
    for (int i = 0; i < n_ex; i++) json_array_append_new(a, json_string(ex[i]));
    json_object_set_new(o, "limits_exceeded", a);
    if (te) {
        json_t *t = json_array();
        for (size_t i = 0; i < n_te; i++) {
            json_t *e = json_object();
            json_object_set_new(e, "name", json_string(te[i].name));
            json_object_set_new(e, "type", json_string(lpk_type_get(te[i].type)->name));
            json_object_set_new(e, "ref_type", json_string(lpk_type_get(te[i].ref_type)->name));
            json_object_set_new(e, "rel_rmse", json_real(te[i].rel_rmse));
            json_array_append_new(t, e);
        }
        json_object_set_new(o, "tensor_errors", t);
    }
    json_object_set_new(o, "error", error ? json_string(error) : json_null());
    return o;
}

static void result_text(const char *path, const char *ref, const vf_ppl_result *r,
                        const limits *lim, const char **ex, int n_ex, const vf_tensor_error *te,
                        size_t n_te)
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
    if (!isnan(lim->ppl_delta) || !isnan(lim->ppl_ratio) || !isnan(lim->kld)) {
        if (!n_ex) {
            printf("  limits     ok\n");
        } else {
            printf("  limits     EXCEEDED:");
            for (int i = 0; i < n_ex; i++) {
                if (!strcmp(ex[i], "max-ppl-delta"))
                    printf(" ppl delta %.4f > %g;", r->ppl_delta, lim->ppl_delta);
                else if (!strcmp(ex[i], "max-ppl-ratio"))
                    printf(" ppl ratio %.6f > %g;", r->ppl_ratio, lim->ppl_ratio);
                else
                    printf(" kld mean %.6f > %g;", r->kld_mean, lim->kld);
            }
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
static void print_failed(const char **paths, const loaded *models, int n, const lpk_error *err)
{
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, result_json(paths[i], NULL, NULL, 0, NULL, 0,
                                               models ? models[i].r : NULL,
                                               err->msg[0] ? err->msg : lpk_status_name(err->status)));
    if (n == 1) {
        json_t *one = json_incref(json_array_get(arr, 0));
        json_decref(arr);
        arr = one;
    }
    cli_json_print(arr);
}

int cmd_verify(int argc, char **argv)
{
    const char *cmd = "verify", *ref_path = NULL, *text_path = NULL;
    long ctx = 512, max_chunks = 0, threads = 0;
    int json = 0, quiet = 0, tensor_errors = 0;
    limits lim = {NAN, NAN, NAN};
    const char **paths = calloc((size_t)argc, sizeof *paths);
    int n_paths = 0;
    if (!paths) return CLI_EXIT_RUNTIME;
    enum { O_REF = 256, O_CHUNKS, O_MAX_DELTA, O_MAX_RATIO, O_MAX_KLD, O_TENSOR_ERRORS,
           O_JSON };
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},          {"model", required_argument, NULL, 'm'},
        {"text", required_argument, NULL, 'f'},    {"ctx", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 't'}, {"quiet", no_argument, NULL, 'q'},
        {"ref", required_argument, NULL, O_REF},   {"chunks", required_argument, NULL, O_CHUNKS},
        {"max-ppl-delta", required_argument, NULL, O_MAX_DELTA},
        {"max-ppl-ratio", required_argument, NULL, O_MAX_RATIO},
        {"max-kld", required_argument, NULL, O_MAX_KLD},
        {"tensor-errors", no_argument, NULL, O_TENSOR_ERRORS},
        {"json", no_argument, NULL, O_JSON},
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
        case O_JSON: json = 1; break;
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
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads((int)threads);
#endif

    lpk_error err = {0};
    int st = LPK_OK, rc = CLI_EXIT_OK;
    loaded ref = {0};
    loaded *models = calloc((size_t)n_paths, sizeof *models);
    vf_model **mv = calloc((size_t)n_paths, sizeof *mv);
    tok_tokenizer *tok = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t n_text = 0, n_ids = 0;
    vf_eval *ev = NULL;
    if (!models || !mv) st = lpk_err(&err, LPK_ENOMEM, "out of memory");
    if (!st && ref_path) st = load(ref_path, &ref, !json, &err);
    for (int i = 0; !st && i < n_paths; i++) {
        st = load(paths[i], &models[i], !json, &err);
        mv[i] = models[i].m;
    }
    const lpk_reader *tok_src = ref_path ? ref.r : st ? NULL : models[0].r;
    if (!st) st = tok_tokenizer_new(lpk_reader_meta(tok_src), &tok, &err);
    if (!st) st = vf_read_text(text_path, &text, &n_text, &err);
    if (!st) st = tok_encode(tok, text, n_text, 1, 0, &ids, &n_ids, &err);
    if (!st)
        st = vf_eval_new(ref_path ? ref.m : NULL, mv, n_paths, ids, n_ids, tok_tokenizer_bos(tok),
                         (int)ctx, (int)max_chunks, &ev, &err);
    if (st) {
        cli_print_error(cmd, &err);
        rc = cli_exit_for(st);
        if (json) print_failed(paths, models, n_paths, &err);
        goto done;
    }

    int n_chunks = vf_eval_n_chunks(ev);
    if (!json && !quiet)
        fprintf(stderr, "%s: %zu tokens, %d chunks of %ld, %d model%s%s\n", base_name(text_path),
                n_ids, n_chunks, ctx, n_paths, n_paths > 1 ? "s" : "",
                ref_path ? " + reference" : "");
    cli_progress prog;
    cli_progress_start(&prog, "verify", "chunks", (uint64_t)n_chunks, quiet);
    for (int c = 0; (st = vf_eval_step(ev, &err)) == 1; c++) {
        vf_ppl_result r;
        vf_eval_result(ev, 0, &r);
        char extra[128];
        if (r.has_ref)
            snprintf(extra, sizeof extra, "ppl %.4f (ref %.4f), kld %.6f, %.0f tok/s", r.ppl,
                     r.ref_ppl, r.kld_mean, r.tokens_per_second);
        else
            snprintf(extra, sizeof extra, "ppl %.4f, %.0f tok/s", r.ppl, r.tokens_per_second);
        cli_progress_update(&prog, (uint64_t)c + 1, extra);
    }
    cli_progress_end(&prog);
    if (st < 0) {
        cli_print_error(cmd, &err);
        rc = cli_exit_for(st);
        if (json) print_failed(paths, models, n_paths, &err);
        goto done;
    }

    json_t *arr = json ? json_array() : NULL;
    int any_exceeded = 0;
    for (int i = 0; i < n_paths; i++) {
        vf_ppl_result r;
        vf_eval_result(ev, i, &r);
        const char *ex[3];
        int n_ex = r.has_ref ? check_limits(&lim, &r, ex) : 0;
        any_exceeded |= n_ex > 0;
        vf_tensor_error *te = NULL;
        size_t n_te = 0;
        if (tensor_errors && (st = vf_tensor_errors(models[i].r, ref.r, &te, &n_te, &err))) {
            cli_print_error(cmd, &err);
            rc = cli_exit_for(st);
            json_decref(arr);
            if (json) print_failed(paths, models, n_paths, &err);
            goto done;
        }
        if (json)
            json_array_append_new(arr, result_json(paths[i], &r, ex, n_ex, te, n_te, models[i].r,
                                                   NULL));
        else result_text(paths[i], ref_path, &r, &lim, ex, n_ex, te, n_te);
        free(te);
    }
    if (json) {
        if (n_paths == 1) {
            json_t *one = json_incref(json_array_get(arr, 0));
            json_decref(arr);
            arr = one;
        }
        cli_json_print(arr);
    }
    if (any_exceeded) {
        if (!json) fprintf(stderr, "llmpack verify: a limit was exceeded\n");
        rc = CLI_EXIT_LIMIT;
    }

done:
    vf_eval_free(ev);
    free(ids);
    free(text);
    tok_tokenizer_free(tok);
    for (int i = 0; models && i < n_paths; i++) unload(&models[i]);
    unload(&ref);
    free(models);
    free(mv);
    free(paths);
    return rc;
}
