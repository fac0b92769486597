/* llmpack convert: a checkpoint into a container or a GGUF: arguments and the
 * report over the convert job (llmpack_convert); --method gptq's options and
 * report are quantize's. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../convert/convert.h"
#include "../quant/quant.h"

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
            "                         runs quantize --method gptq on it (also --chunks,\n"
            "                         --damp, --order, --act-order, --inputs; see llmpack\n"
            "                         quantize --help)\n"
            "  --tokenizer FILE       tokenizer.model / tokenizer.json / llama2.c tokenizer.bin\n"
            "                         to embed (default: the checkpoint's own)\n"
            "  --no-tokenizer         convert a checkpoint that has no tokenizer (the\n"
            "                         container then cannot be verified or exported)\n"
            "  --context-length N     override the training context length\n"
            "  --name NAME            general.name (default: the model's own name, from\n"
            "                         config.json's _name_or_path or the folder's name)\n"
            "  --hash-sources         record the xxh3 of every input file\n"
            "  -t, --threads N        worker threads (default, or 0: all cores)\n"
            "  --force                replace OUT if it exists\n"
            "  --json                 print a JSON summary\n"
            "  -q, --quiet            no progress, no summary (errors and warnings only)\n"
            "  -m, --model SRC        SRC as an option\n"
            "  -h, --help             this help\n"
            "Options take their value as --opt VALUE or --opt=VALUE.\n");
}

/* The job's notices: its warning also with -q and --json, the rest unless quiet. */
static void on_notice(void *user, const char *msg)
{
    const cli_job *cj = user;
    if (!cj->quiet || !strncmp(msg, "warning: ", 9)) fprintf(stderr, "llmpack convert: %s\n", msg);
}

/* The report on stdout: JSON, or a line (and the tensors without an
 * importance-matrix entry, the tensors skipped). */
static void print_report(const llmpack_convert_opts *co, const cv_report *rep, int json,
                         double secs)
{
    int gguf = co->format == LLMPACK_FMT_GGUF;
    if (json) {
        json_t *j = json_object();
        json_t *sk = json_array(), *types = json_object();
        for (size_t i = 0; i < rep->n_skipped; i++)
            json_array_append_new(sk, json_string(rep->skipped[i]));
        for (int t = 0; t < LPK_TYPE_COUNT; t++)
            if (rep->n_by_type[t])
                json_object_set_new(types, lpk_type_get(t)->name,
                                    json_integer((json_int_t)rep->n_by_type[t]));
        json_object_set_new(j, "source", json_string(co->src));
        json_object_set_new(j, "source_format", json_string(rep->source_format));
        json_object_set_new(j, "output", json_string(co->out));
        json_object_set_new(j, "format", json_string(gguf ? "gguf" : "lpk"));
        json_object_set_new(j, "tensors", json_integer((json_int_t)rep->n_tensors));
        json_object_set_new(j, "types", types);
        json_object_set_new(j, "bytes_in", json_integer((json_int_t)rep->bytes_in));
        json_object_set_new(j, "bytes_out", json_integer((json_int_t)rep->bytes_out));
        json_object_set_new(j, "seconds", json_real(secs));
        json_object_set_new(j, "peak_rss", json_integer((json_int_t)cli_peak_rss()));
        json_object_set_new(j, "tied", json_boolean(rep->tied));
        json_object_set_new(j, "skipped_tensors", sk);
        if (co->imatrix) {
            json_t *ne = json_array();
            for (size_t i = 0; i < rep->n_no_imatrix; i++)
                json_array_append_new(ne, json_string(rep->no_imatrix[i]));
            json_object_set_new(j, "imatrix_default_weighting", ne);
        }
        json_object_set_new(j, "warning", rep->warning[0] ? json_string(rep->warning) : json_null());
        json_object_set_new(j, "note", rep->note[0] ? json_string(rep->note) : json_null());
        json_object_set_new(j, "tokenizer", rep->tokenizer[0] ? json_string(rep->tokenizer)
                                                              : json_null());
        cli_json_print(j);
        return;
    }
    char types[256] = "";
    size_t off = 0;
    for (int t = 0; t < LPK_TYPE_COUNT && off < sizeof types; t++)
        if (rep->n_by_type[t])
            off += (size_t)snprintf(types + off, sizeof types - off, "%s%zu %s", off ? ", " : "",
                                    rep->n_by_type[t], lpk_type_get(t)->name);
    printf("%s: %s%zu tensors (%s)%s, %.1f MiB from %s in %.1f s (%.0f MB/s)\n", co->out,
           gguf ? "GGUF, " : "", rep->n_tensors, types, rep->tied ? ", tied output" : "",
           (double)rep->bytes_out / (1 << 20), rep->source_format, secs,
           secs > 0 ? (double)rep->bytes_in / secs / 1e6 : 0.0);
    if (rep->n_no_imatrix) {
        printf("no importance-matrix entry, default weighting:");
        for (size_t i = 0; i < rep->n_no_imatrix; i++) printf(" %s", rep->no_imatrix[i]);
        printf("\n");
    }
    if (rep->n_skipped) {
        printf("skipped:");
        for (size_t i = 0; i < rep->n_skipped; i++) printf(" %s", rep->skipped[i]);
        printf("\n");
    }
}

int cmd_convert(int argc, char **argv)
{
    llmpack_convert_opts o;
    memset(&o, 0, sizeof o);
    int json = 0, quiet = 0, gptq_opts = 0, c;
    const char *format = NULL;
    llmpack_quantize_opts qo;
    llmpack_quantize_opts_init(&qo);
    enum { O_FORMAT = 256, O_TYPE, O_PURE, O_IMATRIX, O_METHOD, O_CALIB, O_CHUNKS, O_DAMP,
           O_ORDER, O_INPUTS, O_ACT_ORDER, O_TOKENIZER, O_NO_TOKENIZER, O_CTX_LEN, O_NAME, O_HASH,
           O_FORCE, O_JSON };
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},          {"output", required_argument, NULL, 'o'},
        {"model", required_argument, NULL, 'm'},   {"threads", required_argument, NULL, 't'},
        {"quiet", no_argument, NULL, 'q'},         {"format", required_argument, NULL, O_FORMAT},
        {"type", required_argument, NULL, O_TYPE}, {"pure", no_argument, NULL, O_PURE},
        {"imatrix", required_argument, NULL, O_IMATRIX},
        {"method", required_argument, NULL, O_METHOD},
        {"calib", required_argument, NULL, O_CALIB},
        {"chunks", required_argument, NULL, O_CHUNKS},
        {"damp", required_argument, NULL, O_DAMP},
        {"order", required_argument, NULL, O_ORDER},
        {"inputs", required_argument, NULL, O_INPUTS},
        {"act-order", no_argument, NULL, O_ACT_ORDER},
        {"tokenizer", required_argument, NULL, O_TOKENIZER},
        {"no-tokenizer", no_argument, NULL, O_NO_TOKENIZER},
        {"context-length", required_argument, NULL, O_CTX_LEN},
        {"name", required_argument, NULL, O_NAME},
        {"hash-sources", no_argument, NULL, O_HASH},
        {"force", no_argument, NULL, O_FORCE},
        {"json", no_argument, NULL, O_JSON},
        {NULL, 0, NULL, 0}};
    cli_getopt_start();
    while ((c = cli_getopt("convert", argc, argv, "ho:m:t:q", opts)) != -1) {
        long v;
        switch (c) {
        case 'h': usage(stdout); return CLI_EXIT_OK;
        case 'o': o.out = optarg; break;
        case 'm':
            if (cli_set_operand("convert", &o.src, optarg)) return CLI_EXIT_USAGE;
            break;
        case 't':
            if (cli_parse_threads("convert", optarg, &v)) return CLI_EXIT_USAGE;
            o.threads = (int)v;
            break;
        case 'q': quiet = 1; break;
        case O_FORMAT: format = optarg; break;
        case O_TYPE: o.type = optarg; break;
        case O_PURE: o.pure = 1; break;
        case O_IMATRIX: o.imatrix = optarg; break;
        case O_CALIB:
            qo.calib_text = optarg;
            gptq_opts = 1;
            break;
        case O_METHOD: case O_CHUNKS: case O_DAMP: case O_ORDER: case O_ACT_ORDER: case O_INPUTS:
            /* quantize's, for its GPTQ step */
            if (cli_quantize_gptq_opt(cli_opt_name(opts, c), optarg, &qo))
                return cli_usage_error("convert", "--%s: bad value '%s'", cli_opt_name(opts, c),
                                       optarg);
            gptq_opts = 1; /* --method rtn included, as before: convert has no other method */
            break;
        case O_TOKENIZER: o.tokenizer = optarg; break;
        case O_NO_TOKENIZER: o.no_tokenizer = 1; break;
        case O_CTX_LEN:
            if (cli_parse_int(optarg, 1, UINT32_MAX, &v))
                return cli_usage_error("convert", "--context-length needs a positive integer");
            o.context_length = (uint32_t)v;
            break;
        case O_NAME:
            if (!*optarg) return cli_usage_error("convert", "--name wants a non-empty name");
            o.name = optarg;
            break;
        case O_HASH: o.hash_sources = 1; break;
        case O_FORCE: o.force = 1; break;
        case O_JSON: json = 1; break;
        default: return CLI_EXIT_USAGE;
        }
    }
    if (cli_operands("convert", argc, argv, &o.src)) return CLI_EXIT_USAGE;
    if (!o.src) return cli_usage_error("convert", "no source given");
    if (!o.out) return cli_usage_error("convert", "no output given (-o OUT.lpk)");
    if (o.pure && !o.type) return cli_usage_error("convert", "--pure needs --type");
    if (o.imatrix && !o.type) return cli_usage_error("convert", "--imatrix needs --type");
    if (gptq_opts && !qo.gptq)
        return cli_usage_error("convert", "--calib, --chunks, --damp, --inputs and the orders need "
                               "--method gptq");
    int urc = cli_output_format("convert", o.out, format, &o.format);
    if (urc) return urc;
    if (o.format == LLMPACK_FMT_GGUF && o.no_tokenizer)
        return cli_usage_error("convert", "a GGUF output needs the tokenizer (no --no-tokenizer)");
    const char *inputs[] = {o.src, o.tokenizer, o.imatrix, qo.calib_text};
    if ((urc = cli_inputs_exist("convert", inputs, 4))) return urc;
    if (qo.gptq) {
        if (!o.type || !qo.calib_text)
            return cli_usage_error("convert", "--method gptq needs --type and --calib TEXT");
        if (o.imatrix)
            return cli_usage_error("convert", "--imatrix and --method gptq exclude each other");
        if (!quant_recipe_valid(o.type))
            return cli_usage_error("convert", "unknown --type '%s' (one of: %s)", o.type,
                                   quant_recipe_list());
        o.quantize = &qo;
    }

    cli_job cj;
    if (cli_job_init(&cj, "convert", quiet || json)) {
        fprintf(stderr, "llmpack convert: out of memory\n");
        return CLI_EXIT_RUNTIME;
    }
    cj.stage_label = 1; /* a GGUF's second stage shows as "export", as export's own */
    llmpack_job_set_notice(cj.j, on_notice, &cj);
    llmpack_convert_result res;
    double t0 = cli_now();
    int rc = llmpack_convert(cj.j, &o, &res) ? cli_job_fail(&cj) : CLI_EXIT_OK;
    if (!rc && res.quantize && (json || !quiet)) {
        /* quantize's report; its input is the source (the container it read is gone) */
        llmpack_quantize_out qout = {.path = o.out, .recipe = o.type, .format = o.format};
        qo.in = o.src;
        qo.pure = o.pure;
        cli_quantize_report(&qo, res.quantize, &qout, json);
    } else if (!rc && (json || !quiet)) {
        print_report(&o, &res.report, json, cli_now() - t0);
    }
    cli_job_free(&cj);
    llmpack_convert_result_free(&res);
    return rc;
}
