#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../convert/convert.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: llmpack convert SRC -o OUT.lpk|OUT.gguf [options]\n\n"
            "SRC: a Hugging Face folder (config.json + *.safetensors or pytorch_model*.bin),\n"
            "a Meta folder (params.json + consolidated.*.pth), a llama2.c .bin, or a\n"
            ".tar / .tar.zst / .zip of a folder.\n"
            "OUT's name says the format: .lpk writes a container; .gguf writes a GGUF for\n"
            "llama.cpp (through a temporary container beside it, removed at the end: the\n"
            "same memory as convert + export, twice the output's size on disk for a while).\n\n"
            "examples:\n"
            "  llmpack convert ./Llama-2-7b-hf -o llama-2-7b.bf16.lpk\n"
            "  llmpack convert ./Llama-2-7b-hf -o llama-2-7b-Q4_K_M.gguf --type Q4_K_M\n\n"
            "options:\n"
            "  -o, --output FILE      file to write (written atomically)\n"
            "  --format F             lpk | gguf, for a FILE named neither .lpk nor .gguf\n"
            "  --type T               f32 | f16 | bf16 | q8_0 | q4_0 | q4_1 | q5_0 | q5_1 |\n"
            "                         q4_k | q4_k_m | q4_k_s | q6_k (default: keep the\n"
            "                         source precision; 1-D tensors are always f32)\n"
            "  --pure                 quantize every 2-D tensor to T (no recipe)\n"
            "  --imatrix FILE         importance matrix for --type's scale searches\n"
            "                         (llmpack calibrate, llama-imatrix)\n"
            "  --method gptq          GPTQ (needs --type and --calib TEXT): converts at the\n"
            "                         source precision to a temporary file beside OUT, then\n"
            "                         runs quantize\n"
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
 * hand that to quantize with the GPTQ options (qargs) and the output format
 * (fmt); the temporary is removed whatever happens. */
static int convert_gptq(cv_options *o, int json, int fmt, char **qargs, int nq)
{
    char tmp[4096];
    lpk_error err;
    lpk_error_clear(&err);
    int rc = lpk_writer_check_target(o->out, o->force ? LPK_WRITE_FORCE : 0, &err);
    if (!rc) rc = cli_tmp_beside(o->out, tmp, sizeof tmp, &err);
    if (rc) {
        cli_print_error("convert", &err);
        return cli_exit_for(rc);
    }
    const char *out = o->out, *type = o->type;
    int pure = o->pure, force = o->force;
    o->out = tmp;
    o->type = NULL;
    o->pure = 0;
    o->force = 1;
    cv_report rep;
    rc = cv_convert(o, &rep, &err);
    if (rep.warning[0]) fprintf(stderr, "llmpack convert: warning: %s\n", rep.warning);
    cv_report_free(&rep);
    if (rc) {
        cli_print_error("convert", &err);
        cli_tmp_remove(tmp);
        return cli_exit_for(rc);
    }
    cli_tmp_hold(tmp);
    char thr[16];
    snprintf(thr, sizeof thr, "%d", o->threads);
    char *av[32] = {"quantize", tmp,      "-o", (char *)out, "--type", (char *)type,
                    "--format", fmt == CLI_FMT_GGUF ? "gguf" : "lpk"};
    int ac = 8;
    if (pure) av[ac++] = "--pure";
    if (force) av[ac++] = "--force";
    if (json) av[ac++] = "--json";
    if (o->threads > 0) { av[ac++] = "--threads"; av[ac++] = thr; }
    for (int i = 0; i < nq && ac < 31; i++) av[ac++] = qargs[i];
    rc = cmd_quantize(ac, av);
    cli_tmp_remove(tmp);
    return rc;
}

int cmd_convert(int argc, char **argv)
{
    cv_options o;
    memset(&o, 0, sizeof o);
    int json = 0, gptq = 0, calib = 0, nq = 0;
    const char *format = NULL;
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
        } else if (!strcmp(a, "--format")) {
            if (!has_val) return cli_usage_error("convert", "--format needs gguf or lpk");
            format = argv[++i];
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
    int fmt = 0, urc = cli_output_format("convert", o.out, format, &fmt);
    if (urc) return urc;
    if (fmt == CLI_FMT_GGUF && o.no_tokenizer)
        return cli_usage_error("convert", "a GGUF output needs the tokenizer (no --no-tokenizer)");
    if (gptq) {
        if (!o.type || !calib)
            return cli_usage_error("convert", "--method gptq needs --type and --calib TEXT");
        if (o.imatrix_path)
            return cli_usage_error("convert", "--imatrix and --method gptq exclude each other");
        return convert_gptq(&o, json, fmt, qargs, nq);
    }
    /* GGUF: convert into a container beside OUT, then export it */
    const char *final_out = NULL;
    int force_out = 0;
    char tmp[4096] = "";
    if (fmt == CLI_FMT_GGUF) {
        lpk_error te = {0};
        int st = lpk_writer_check_target(o.out, o.force ? LPK_WRITE_FORCE : 0, &te);
        if (!st) st = cli_tmp_beside(o.out, tmp, sizeof tmp, &te);
        if (st) {
            cli_print_error("convert", &te);
            return cli_exit_for(st);
        }
        final_out = o.out;
        force_out = o.force;
        o.out = tmp;
        o.force = 1;
    }
    lpk_imatrix *im = NULL;
    if (o.imatrix_path) {
        lpk_error ie = {0};
        int st = lpk_imatrix_read(o.imatrix_path, &im, &ie);
        if (st) {
            cli_print_error("convert", &ie);
            cli_tmp_remove(tmp);
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
    if (!rc && final_out) {
        cli_tmp_hold(tmp);
        cli_export_stats es;
        char *name = cli_name_from_path(final_out);
        rc = cli_export_gguf(tmp, final_out, name, 0, force_out ? LPK_WRITE_FORCE : 0, json, &es,
                             &err);
        free(name);
    }
    cli_tmp_remove(tmp);
    if (final_out) o.out = final_out;
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
        json_object_set_new(j, "format", json_string(final_out ? "gguf" : "lpk"));
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
        printf("%s: %s%zu tensors (%s)%s, %.1f MiB from %s in %.1f s (%.0f MB/s)\n", o.out,
               final_out ? "GGUF, " : "", rep.n_tensors, types, rep.tied ? ", tied output" : "",
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
