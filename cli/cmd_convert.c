#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../convert/convert.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: llmpack convert SRC -o OUT.lpk [options]\n\n"
            "SRC: a Hugging Face folder (config.json + *.safetensors or pytorch_model*.bin),\n"
            "a Meta folder (params.json + consolidated.*.pth), a llama2.c .bin, or a\n"
            ".tar / .tar.zst / .zip of a folder.\n\n"
            "options:\n"
            "  -o, --output FILE      container to write (written atomically)\n"
            "  --type T               f32 | f16 | bf16 | q8_0 | q4_0 | q4_1 | q5_0 | q5_1 |\n"
            "                         q4_k | q4_k_m | q4_k_s | q6_k (default: keep the\n"
            "                         source precision; 1-D tensors are always f32)\n"
            "  --pure                 quantize every 2-D tensor to T (no recipe)\n"
            "  --imatrix FILE         importance matrix for --type's scale searches\n"
            "                         (llmpack calibrate, llama-imatrix)\n"
            "  --method gptq          GPTQ (needs --type and --calib TEXT): converts at the\n"
            "                         source precision to OUT.src.tmp, then runs quantize\n"
            "                         --method gptq on it (also --chunks, --damp, --order,\n"
            "                         --act-order; see llmpack quantize --help)\n"
            "  --tokenizer FILE       tokenizer.model / tokenizer.json / llama2.c tokenizer.bin\n"
            "                         to embed (default: the checkpoint's own)\n"
            "  --no-tokenizer         convert a checkpoint that has no tokenizer (the\n"
            "                         container then cannot be verified or exported)\n"
            "  --context-length N     override the training context length\n"
            "  --hash-sources         record the xxh3 of every input file\n"
            "  --threads N            worker threads (default: all cores)\n"
            "  --force                replace OUT if it exists\n"
            "  --json                 print a JSON summary\n");
}

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
    cli_progress *p = ctx;
    p->total = total;
    cli_progress_update(p, done, NULL);
}

/* convert --method gptq: GPTQ needs the unquantized model for its calibration
 * pass, so convert at the source precision to a temporary file beside OUT and
 * hand that to quantize with the GPTQ options (qargs); the temporary is
 * removed whatever happens. */
static int convert_gptq(cv_options *o, int json, char **qargs, int nq)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.src.tmp", o->out) >= sizeof tmp)
        return cli_usage_error("convert", "output path too long");
    const char *out = o->out, *type = o->type;
    int pure = o->pure, force = o->force;
    o->out = tmp;
    o->type = NULL;
    o->pure = 0;
    o->force = 1;
    cv_report rep;
    lpk_error err;
    lpk_error_clear(&err);
    int rc = cv_convert(o, &rep, &err);
    if (rep.warning[0]) fprintf(stderr, "llmpack convert: warning: %s\n", rep.warning);
    cv_report_free(&rep);
    if (rc) {
        cli_print_error("convert", &err);
        unlink(tmp);
        return cli_exit_for(rc);
    }
    char thr[16];
    snprintf(thr, sizeof thr, "%d", o->threads);
    char *av[32] = {"quantize", tmp, "-o", (char *)out, "--type", (char *)type};
    int ac = 6;
    if (pure) av[ac++] = "--pure";
    if (force) av[ac++] = "--force";
    if (json) av[ac++] = "--json";
    if (o->threads > 0) { av[ac++] = "--threads"; av[ac++] = thr; }
    for (int i = 0; i < nq && ac < 31; i++) av[ac++] = qargs[i];
    rc = cmd_quantize(ac, av);
    unlink(tmp);
    return rc;
}

int cmd_convert(int argc, char **argv)
{
    cv_options o;
    memset(&o, 0, sizeof o);
    int json = 0, gptq = 0, calib = 0, nq = 0;
    char *qargs[16];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return CLI_EXIT_OK;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!has_val) return cli_usage_error("convert", "%s needs a file", a);
            o.out = argv[++i];
        } else if (!strcmp(a, "--type")) {
            if (!has_val) return cli_usage_error("convert", "--type needs a type");
            o.type = argv[++i];
        } else if (!strcmp(a, "--pure")) {
            o.pure = 1;
        } else if (!strcmp(a, "--imatrix")) {
            if (!has_val) return cli_usage_error("convert", "--imatrix needs a file");
            o.imatrix_path = argv[++i];
        } else if (!strcmp(a, "--method") || !strcmp(a, "--calib") || !strcmp(a, "--chunks") ||
                   !strcmp(a, "--damp") || !strcmp(a, "--order")) {
            if (!has_val) return cli_usage_error("convert", "%s needs a value", a);
            if (!strcmp(a, "--method")) {
                if (strcmp(argv[i + 1], "gptq") && strcmp(argv[i + 1], "rtn"))
                    return cli_usage_error("convert", "--method: bad value '%s'", argv[i + 1]);
                gptq = !strcmp(argv[i + 1], "gptq");
            }
            calib |= !strcmp(a, "--calib");
            if (nq > 12) return cli_usage_error("convert", "too many GPTQ options");
            qargs[nq++] = argv[i];
            qargs[nq++] = argv[++i];
        } else if (!strcmp(a, "--act-order")) {
            if (nq > 12) return cli_usage_error("convert", "too many GPTQ options");
            qargs[nq++] = argv[i];
        } else if (!strcmp(a, "--tokenizer")) {
            if (!has_val) return cli_usage_error("convert", "--tokenizer needs a file");
            o.tokenizer = argv[++i];
        } else if (!strcmp(a, "--no-tokenizer")) {
            o.no_tokenizer = 1;
        } else if (!strcmp(a, "--context-length")) {
            long v;
            if (!has_val || cli_parse_int(argv[++i], 1, UINT32_MAX, &v))
                return cli_usage_error("convert", "--context-length needs a positive integer");
            o.context_length = (uint32_t)v;
        } else if (!strcmp(a, "--threads")) {
            long v;
            if (!has_val || cli_parse_int(argv[++i], 1, 1024, &v))
                return cli_usage_error("convert", "--threads needs an integer in 1..1024");
            o.threads = (int)v;
        } else if (!strcmp(a, "--hash-sources")) {
            o.hash_sources = 1;
        } else if (!strcmp(a, "--force")) {
            o.force = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("convert", "unknown option '%s'", a);
        } else if (!o.src) {
            o.src = a;
        } else {
            return cli_usage_error("convert", "more than one source ('%s', '%s')", o.src, a);
        }
    }
    if (!o.src) return cli_usage_error("convert", "no source given");
    if (!o.out) return cli_usage_error("convert", "no output given (-o OUT.lpk)");
    if (o.pure && !o.type) return cli_usage_error("convert", "--pure needs --type");
    if (o.imatrix_path && !o.type) return cli_usage_error("convert", "--imatrix needs --type");
    if (nq && !gptq)
        return cli_usage_error("convert", "--calib, --chunks, --damp and the orders need --method gptq");
    if (gptq) {
        if (!o.type || !calib)
            return cli_usage_error("convert", "--method gptq needs --type and --calib TEXT");
        if (o.imatrix_path)
            return cli_usage_error("convert", "--imatrix and --method gptq exclude each other");
        return convert_gptq(&o, json, qargs, nq);
    }
    lpk_imatrix *im = NULL;
    if (o.imatrix_path) {
        lpk_error ie = {0};
        int st = lpk_imatrix_read(o.imatrix_path, &im, &ie);
        if (st) {
            cli_print_error("convert", &ie);
            return cli_exit_for(st);
        }
        o.imatrix = im;
    }

    cli_progress prog;
    cli_progress_start(&prog, "convert", "B", 0, json);
    o.progress = on_progress;
    o.progress_ctx = &prog;
    double t0 = cli_now();
    cv_report rep;
    lpk_error err;
    lpk_error_clear(&err);
    int rc = cv_convert(&o, &rep, &err);
    lpk_imatrix_free(im);
    cli_progress_end(&prog);
    double secs = cli_now() - t0;
    if (rep.warning[0]) fprintf(stderr, "llmpack convert: warning: %s\n", rep.warning);
    if (rep.note[0] && !json) fprintf(stderr, "llmpack convert: %s\n", rep.note);
    if (rc) {
        cli_print_error("convert", &err);
        cv_report_free(&rep);
        return cli_exit_for(rc);
    }
    if (json) {
        json_t *j = json_object();
        json_t *sk = json_array(), *types = json_object();
        for (size_t i = 0; i < rep.n_skipped; i++) json_array_append_new(sk, json_string(rep.skipped[i]));
        for (int t = 0; t < LPK_TYPE_COUNT; t++)
            if (rep.n_by_type[t])
                json_object_set_new(types, lpk_type_get(t)->name, json_integer((json_int_t)rep.n_by_type[t]));
        json_object_set_new(j, "source", json_string(o.src));
        json_object_set_new(j, "source_format", json_string(rep.source_format));
        json_object_set_new(j, "output", json_string(o.out));
        json_object_set_new(j, "tensors", json_integer((json_int_t)rep.n_tensors));
        json_object_set_new(j, "types", types);
        json_object_set_new(j, "bytes_in", json_integer((json_int_t)rep.bytes_in));
        json_object_set_new(j, "bytes_out", json_integer((json_int_t)rep.bytes_out));
        json_object_set_new(j, "seconds", json_real(secs));
        json_object_set_new(j, "peak_rss", json_integer((json_int_t)cli_peak_rss()));
        json_object_set_new(j, "tied", json_boolean(rep.tied));
        json_object_set_new(j, "skipped_tensors", sk);
        if (im || o.imatrix_path) {
            json_t *ne = json_array();
            for (size_t i = 0; i < rep.n_no_imatrix; i++)
                json_array_append_new(ne, json_string(rep.no_imatrix[i]));
            json_object_set_new(j, "imatrix_default_weighting", ne);
        }
        json_object_set_new(j, "warning", rep.warning[0] ? json_string(rep.warning) : json_null());
        json_object_set_new(j, "note", rep.note[0] ? json_string(rep.note) : json_null());
        json_object_set_new(j, "tokenizer", rep.tokenizer[0] ? json_string(rep.tokenizer)
                                                             : json_null());
        cli_json_print(j);
    } else {
        char types[256] = "";
        size_t off = 0;
        for (int t = 0; t < LPK_TYPE_COUNT && off < sizeof types; t++)
            if (rep.n_by_type[t])
                off += (size_t)snprintf(types + off, sizeof types - off, "%s%zu %s", off ? ", " : "",
                                        rep.n_by_type[t], lpk_type_get(t)->name);
        printf("%s: %zu tensors (%s)%s, %.1f MiB from %s in %.1f s (%.0f MB/s)\n", o.out,
               rep.n_tensors, types, rep.tied ? ", tied output" : "",
               (double)rep.bytes_out / (1 << 20), rep.source_format, secs,
               secs > 0 ? (double)rep.bytes_in / secs / 1e6 : 0.0);
        if (rep.n_no_imatrix) {
            printf("no importance-matrix entry, default weighting:");
            for (size_t i = 0; i < rep.n_no_imatrix; i++) printf(" %s", rep.no_imatrix[i]);
            printf("\n");
        }
        if (rep.n_skipped) {
            printf("skipped:");
            for (size_t i = 0; i < rep.n_skipped; i++) printf(" %s", rep.skipped[i]);
            printf("\n");
        }
    }
    cv_report_free(&rep);
    return CLI_EXIT_OK;
}
