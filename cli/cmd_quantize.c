/* llmpack quantize: the command line and the report over the quantize job
 * (llmpack_quantize, lib/job_quantize.c). A container (.lpk or GGUF) -> one
 * output with a recipe's types, or several (--type A,B,C into a folder) from
 * one read. */
#include "cli.h"

#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <sys/stat.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../quant/quant.h"

/* One line per recipe with its bits per weight over all tensors, computed by
 * planning it on two reference shapes. */
static void recipe_table(FILE *f)
{
    static const quant_model_shape l2 = {32, 4096, 11008, 32, 32, 32000, 0};
    static const quant_model_shape l3 = {32, 4096, 14336, 32, 8, 128256, 0};
    size_t n2 = quant_shape_tensors(&l2, NULL), n3 = quant_shape_tensors(&l3, NULL);
    lpk_tensor *t2 = calloc(n2, sizeof *t2), *t3 = calloc(n3, sizeof *t3);
    if (!t2 || !t3) { free(t2); free(t3); return; }
    quant_shape_tensors(&l2, t2);
    quant_shape_tensors(&l3, t3);
    fprintf(f, "  %-8s %11s %11s\n", "type", "Llama-2-7B", "Llama-3-8B");
    for (size_t i = 0; i < quant_recipe_count(); i++) {
        const char *alias = NULL, *name = quant_recipe_name(i, &alias);
        double b2 = 0, b3 = 0;
        if (quant_plan_bpw(name, 0, NULL, t2, n2, &b2, NULL) ||
            quant_plan_bpw(name, 0, NULL, t3, n3, &b3, NULL))
            continue;
        if (alias) fprintf(f, "  %-8s same as %s\n", name, alias);
        else fprintf(f, "  %-8s %7.3f bpw %7.3f bpw\n", name, b2, b3);
    }
    free(t2);
    free(t3);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: llmpack quantize IN -o OUT.lpk|OUT.gguf --type T [options]\n"
            "       llmpack quantize IN -o DIR/ --type T1,T2,... [--format lpk|gguf] [options]\n\n"
            "IN is a container (.lpk or GGUF). T is one of the types below (any case).\n"
            "OUT's name says the format: .lpk writes a container, .gguf a GGUF for\n"
            "llama.cpp (through a temporary container beside it, removed at the end).\n"
            "Several types (or -o ending in '/'): IN is read once and DIR/NAME-T.lpk is\n"
            "written for each T (.gguf with --format gguf), each file the same bytes as\n"
            "the run of that type alone; NAME is --name, else IN's general.name, else\n"
            "IN's file name, made a file name; T as typed, in upper case. DIR must exist.\n"
            "The options apply to every output (--target-bpw, --max-size: one file only).\n"
            "A failure or a signal keeps the outputs completed before it, nothing else.\n"
            "Without --pure, tensors get llama.cpp's per-tensor types for that file type\n"
            "(e.g. the output matrix at q6_k; attn_v and ffn_down with more bits in the _m\n"
            "mixes; q3_k, q4_k, q5_k mean q3_k_m, q4_k_m, q5_k_m as in llama.cpp); 1-D\n"
            "tensors stay f32; rows that do not fit a type fall back (q2_k, q3_k, iq4_xs ->\n"
            "iq4_nl, q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0, then f16).\n\n"
            "Bits per weight over all tensors (as `llmpack info` counts them) of each type\n"
            "on two model shapes, without an importance matrix:\n");
    recipe_table(f);
    fprintf(f,
            "\noptions:\n"
            "  -o, --output OUT       output: OUT.lpk or OUT.gguf, or a folder DIR/\n"
            "  --format F             lpk | gguf, for an OUT named neither .lpk nor .gguf,\n"
            "                         or for the files in DIR/ (default lpk)\n"
            "  --type T               recipe (see above), or several: T1,T2,... (at most 16)\n"
            "  --pure                 every 2-D tensor at T (fallbacks still apply)\n"
            "  --imatrix FILE         importance matrix (llmpack calibrate, llama-imatrix;\n"
            "                         legacy or GGUF layout) weighting every scale search\n"
            "  --calib TEXT           calibrate on TEXT first (ctx 512, every chunk), then\n"
            "                         quantize with that matrix (IN needs f32/f16/bf16 weights)\n"
            "  --target-bpw X         instead of --type: each matrix's type chosen from the\n"
            "                         menu (q2_k .. q8_0, iq4_xs, iq4_nl) to minimise the\n"
            "                         expected KL divergence with X bits per weight over all\n"
            "                         tensors (as `llmpack info` counts them); needs --calib\n"
            "                         TEXT: each matrix's sensitivity is measured on it (that\n"
            "                         matrix alone at q3_k, KLD on chunks of 512 tokens), and\n"
            "                         the importance matrix (--imatrix, else from TEXT)\n"
            "                         weighs each type's error\n"
            "  --max-size N           the same for an output file of at most N bytes\n"
            "                         (suffixes KB MB GB, KiB MiB GiB)\n"
            "  --calib-chunks N       chunks of TEXT for the sensitivities (default 4)\n"
            "  --method M             rtn (round to nearest, default) or gptq (error-compensating,\n"
            "                         needs --calib: Hessians of every layer input on TEXT)\n"
            "  --chunks N             calibrate on the first N chunks of 512 tokens only\n"
            "  --damp X               gptq: dampening, fraction of mean diag(H) (default 0.01)\n"
            "  --act-order            gptq: columns by decreasing activation energy, every\n"
            "                         block's scales chosen up front (--order act-order)\n"
            "  --order O              gptq: none (default), act-order or block-act-order\n"
            "  --inputs I             gptq: each block's Hessians from the inputs the blocks\n"
            "                         before it give as quantized (quantized) or from the\n"
            "                         original model's (original; default)\n"
            "  -t, --threads N        worker threads (default, or 0: all cores)\n"
            "  --name NAME            general.name of OUT (default: IN's)\n"
            "  --force                replace OUT if it exists\n"
            "  --allow-requantize     quantize already quantized tensors to another type\n"
            "                         (they are dequantized first)\n"
            "  --json                 machine-readable report on stdout\n"
            "  -q, --quiet            no table, no progress\n"
            "  -m, --model IN         IN as an option\n"
            "  -h, --help             this help\n"
            "Options take their value as --opt VALUE or --opt=VALUE.\n\n"
            "examples (llama-quantize [--imatrix F] IN.gguf OUT.gguf Q4_K_M):\n"
            "  llmpack quantize model.f16.lpk -o model-Q4_K_M.gguf --type Q4_K_M\n"
            "  llmpack quantize model.f16.gguf -o model.q4_k_m.lpk --type q4_k_m --imatrix F\n"
            "  llmpack quantize model.f16.lpk -o dist/ --type Q4_K_M,Q5_K_M,Q8_0 --format gguf\n");
}

static void shape_str(const lpk_tensor *t, char *buf, size_t n)
{
    size_t k = 0;
    buf[0] = '\0';
    for (int d = 0; d < t->n_dims && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, d ? "x%lld" : "%lld", (long long)t->dims[d]);
}

static const char *tname(int type)
{
    const lpk_type_info *ti = lpk_type_get(type);
    return ti ? ti->name : "?";
}

/* "123", "14.5MB", "2GiB" -> bytes; -1 when not a size. */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    double v = strtod(s, &end);
    static const struct { const char *sfx; double mul; } units[] = {
        {"", 1},          {"B", 1},           {"KB", 1e3},      {"MB", 1e6},
        {"GB", 1e9},      {"KiB", 1024.0},    {"MiB", 1048576.0}, {"GiB", 1073741824.0},
    };
    if (end == s || !(v > 0)) return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].sfx) != 0) continue;
        double b = v * units[i].mul;
        if (!(b >= 1 && b < 1.8e19)) return -1;
        *out = (uint64_t)b;
        return 0;
    }
    return -1;
}

/* One output's totals: bytes out (all tensors, and the 2-D ones with their
 * bytes in and weights), the pooled rel. RMSE over 2-D tensors, the file. */
typedef struct out_totals {
    uint64_t out_bytes, bytes2, in2, w2, all_elems, file_bytes;
    double pooled, bpw2;
} out_totals;

static void totals_of(const llmpack_quantize_report *rep, const llmpack_quantize_output *q,
                      out_totals *tt)
{
    double sse = 0, ssx = 0;
    memset(tt, 0, sizeof *tt);
    for (size_t i = 0; i < rep->n_tensors; i++) {
        const llmpack_quantize_tensor *x = &q->tensors[i];
        const lpk_tensor *t = &x->in;
        tt->out_bytes += x->size;
        tt->all_elems += lpk_tensor_nelems(t);
        if (t->n_dims >= 2) {
            sse += x->sse;
            ssx += x->ssx;
            tt->bytes2 += x->size;
            tt->in2 += t->size;
            tt->w2 += lpk_tensor_nelems(t);
        }
    }
    tt->pooled = ssx > 0 ? sqrt(sse / ssx) : 0.0;
    tt->bpw2 = tt->w2 ? 8.0 * (double)tt->bytes2 / (double)tt->w2 : 0.0;
    tt->file_bytes = q->file_size;
}

/* The report of one output: the table and totals (text), or its JSON object. */
static void report_text(const llmpack_quantize_opts *o, const llmpack_quantize_report *run,
                        const llmpack_quantize_out *qo, const llmpack_quantize_output *q)
{
    size_t n = run->n_tensors;
    out_totals tt;
    totals_of(run, q, &tt);
    printf("%-28s %-12s %-14s %10s\n", "tensor", "shape", "type", "rel. RMSE");
    for (size_t i = 0; i < n; i++) {
        const llmpack_quantize_tensor *x = &q->tensors[i];
        const lpk_tensor *t = &x->in;
        char shape[64], types[32], rm[16] = "-";
        shape_str(t, shape, sizeof shape);
        snprintf(types, sizeof types, "%s -> %s", tname(t->type), tname(x->type));
        if (x->has_err) snprintf(rm, sizeof rm, "%.5f", x->ssx > 0 ? sqrt(x->sse / x->ssx) : 0.0);
        printf("%-28s %-12s %-14s %10s%s%s\n", t->name, shape, types, rm,
               x->note[0] ? "  " : "", x->note);
    }
    printf("size: %.2f MB -> %.2f MB (2-D tensors: %.2f MB -> %.2f MB, %.4f bits per weight)\n",
           (double)run->in_bytes / 1e6, (double)tt.out_bytes / 1e6, (double)tt.in2 / 1e6,
           (double)tt.bytes2 / 1e6, tt.bpw2);
    printf("pooled rel. RMSE over 2-D tensors: %.5f   (%.2f s, %s)\n", tt.pooled, run->seconds,
           lpk_cpu_describe());
    if (!qo->recipe)
        printf("target %s: tensors %" PRIu64 " bytes predicted, %" PRIu64 " written (budget %"
               PRIu64 ", %.4f bits per weight over all tensors); file %" PRIu64
               " bytes; predicted KLD %.6f (sum over tensors)\n",
               run->target, run->target_bytes, tt.out_bytes, run->target_budget,
               tt.all_elems ? 8.0 * (double)tt.out_bytes / (double)tt.all_elems : 0.0,
               tt.file_bytes, run->target_error);
    const lpk_imatrix *im = run->imatrix;
    if (im) {
        printf("importance matrix: %s (%zu entries, %d chunks, xxh3 %016llx)\n",
               o->imatrix ? o->imatrix : o->calib_text, im->n, im->chunks,
               (unsigned long long)im->hash);
        size_t n_no = 0;
        for (size_t i = 0; i < n; i++) n_no += q->tensors[i].no_entry;
        if (n_no) {
            printf("no entry, default weighting:");
            for (size_t i = 0; i < n; i++)
                if (q->tensors[i].no_entry) printf(" %s", q->tensors[i].in.name);
            printf("\n");
        }
    }
}

static json_t *report_json(const llmpack_quantize_opts *o, const llmpack_quantize_report *run,
                           const llmpack_quantize_out *qo, const llmpack_quantize_output *q)
{
    size_t n = run->n_tensors;
    out_totals tt;
    totals_of(run, q, &tt);
    json_t *j = json_object(), *arr = json_array();
    json_object_set_new(j, "input", json_string(o->in));
    json_object_set_new(j, "output", json_string(qo->path));
    json_object_set_new(j, "format", json_string(qo->format == LLMPACK_FMT_GGUF ? "gguf" : "lpk"));
    json_object_set_new(j, "type", json_string(qo->recipe ? qo->recipe : "target"));
    if (!qo->recipe) {
        json_t *tj = json_object();
        json_object_set_new(tj, "limit", json_string(run->target));
        json_object_set_new(tj, "budget_bytes", json_integer((json_int_t)run->target_budget));
        json_object_set_new(tj, "predicted_bytes", json_integer((json_int_t)run->target_bytes));
        json_object_set_new(tj, "achieved_bytes", json_integer((json_int_t)tt.out_bytes));
        json_object_set_new(tj, "file_bytes", json_integer((json_int_t)tt.file_bytes));
        json_object_set_new(tj, "bpw", json_real(tt.all_elems ? 8.0 * (double)tt.out_bytes /
                                                               (double)tt.all_elems
                                                         : 0.0));
        json_object_set_new(tj, "predicted_kld", json_real(run->target_error));
        json_object_set_new(j, "target", tj);
    }
    json_object_set_new(j, "pure", json_boolean(o->pure));
    json_object_set_new(j, "method", json_string(run->gptq ? "gptq" : "rtn"));
    for (size_t i = 0; i < n; i++) {
        const llmpack_quantize_tensor *x = &q->tensors[i];
        const lpk_tensor *t = &x->in;
        json_t *e = json_object(), *shape = json_array();
        json_object_set_new(e, "name", json_string(t->name));
        for (int d = 0; d < t->n_dims; d++) json_array_append_new(shape, json_integer(t->dims[d]));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "type_in", json_string(tname(t->type)));
        json_object_set_new(e, "type_out", json_string(tname(x->type)));
        json_object_set_new(e, "bytes_in", json_integer((json_int_t)t->size));
        json_object_set_new(e, "bytes_out", json_integer((json_int_t)x->size));
        json_object_set_new(e, "bpw", json_real(8.0 * (double)x->size /
                                                (double)lpk_tensor_nelems(t)));
        if (x->has_err)
            json_object_set_new(e, "rel_rmse",
                                json_real(x->ssx > 0 ? sqrt(x->sse / x->ssx) : 0.0));
        if (x->fallback_from >= 0)
            json_object_set_new(e, "fallback_from", json_string(tname(x->fallback_from)));
        if (x->note[0]) json_object_set_new(e, "note", json_string(x->note));
        json_array_append_new(arr, e);
    }
    json_object_set_new(j, "tensors", arr);
    const lpk_imatrix *im = run->imatrix;
    if (im) {
        json_t *ij = json_object(), *ne = json_array();
        char h[24];
        snprintf(h, sizeof h, "%016llx", (unsigned long long)im->hash);
        json_object_set_new(ij, "file", o->imatrix ? json_string(o->imatrix) : json_null());
        json_object_set_new(ij, "calibration_text",
                            o->calib_text ? json_string(o->calib_text) : json_null());
        json_object_set_new(ij, "hash", json_string(h));
        json_object_set_new(ij, "dataset", im->dataset ? json_string(im->dataset) : json_null());
        json_object_set_new(ij, "entries", json_integer((json_int_t)im->n));
        json_object_set_new(ij, "chunks", json_integer(im->chunks));
        for (size_t i = 0; i < n; i++)
            if (q->tensors[i].no_entry)
                json_array_append_new(ne, json_string(q->tensors[i].in.name));
        json_object_set_new(ij, "default_weighting", ne);
        json_object_set_new(j, "imatrix", ij);
    }
    json_t *tot = json_object();
    json_object_set_new(tot, "bytes_in", json_integer((json_int_t)run->in_bytes));
    json_object_set_new(tot, "bytes_out", json_integer((json_int_t)tt.out_bytes));
    json_object_set_new(tot, "bpw_2d", json_real(tt.bpw2));
    json_object_set_new(tot, "rel_rmse_2d", json_real(tt.pooled));
    json_object_set_new(tot, "seconds", json_real(run->seconds));
    json_object_set_new(j, "totals", tot);
    return j;
}

int cli_quantize_gptq_opt(const char *opt, const char *v, llmpack_quantize_opts *o)
{
    long n;
    char *end;
    if (!strcmp(opt, "act-order")) {
        o->gptq_order = QUANT_GPTQ_ORDER_STATIC;
        return 0;
    }
    if (!v) return 1;
    if (!strcmp(opt, "method")) {
        o->gptq = !strcmp(v, "gptq");
        return !o->gptq && strcmp(v, "rtn");
    }
    if (!strcmp(opt, "chunks")) {
        if (cli_parse_int(v, 1, INT32_MAX, &n)) return 1;
        o->chunks = (int)n;
        return 0;
    }
    if (!strcmp(opt, "damp")) {
        o->gptq_damp = strtod(v, &end);
        return *end || end == v || !(o->gptq_damp >= 0.0 && o->gptq_damp <= 10.0);
    }
    if (!strcmp(opt, "order")) {
        o->gptq_order = quant_gptq_order_parse(v);
        return o->gptq_order < 0;
    }
    if (!strcmp(opt, "inputs")) {
        o->gptq_sequential = !strcmp(v, "quantized");
        return !o->gptq_sequential && strcmp(v, "original");
    }
    return 1;
}

void cli_quantize_report(const llmpack_quantize_opts *o, const llmpack_quantize_report *run,
                         const llmpack_quantize_out *out, int json)
{
    if (json) cli_json_print(report_json(o, run, out, &run->outputs[0]));
    else report_text(o, run, out, &run->outputs[0]);
}

/* ---------------------------------------------------------------- several outputs */
/* The recipe a name stands for (aliases resolved: q4_k -> q4_k_m), or NULL. */
static const char *recipe_canonical(const char *name)
{
    for (size_t i = 0; i < quant_recipe_count(); i++) {
        const char *alias = NULL, *r = quant_recipe_name(i, &alias);
        if (!strcasecmp(r, name)) return alias ? alias : r;
    }
    return NULL;
}

int cmd_quantize(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *recipe = NULL, *format = NULL;
    int json = 0, quiet = 0;
    long threads = 0;
    const char *target_bpw_s = NULL, *max_size_s = NULL;
    long calib_chunks = 4;
    llmpack_quantize_opts o;
    llmpack_quantize_opts_init(&o);
    enum { O_TYPE = 256, O_IMATRIX, O_CALIB, O_TARGET_BPW, O_MAX_SIZE, O_CALIB_CHUNKS,
           O_FORMAT, O_METHOD, O_CHUNKS, O_DAMP, O_ORDER, O_ACT_ORDER, O_INPUTS, O_PURE, O_FORCE,
           O_JSON, O_REQUANT, O_NAME };
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},          {"output", required_argument, NULL, 'o'},
        {"model", required_argument, NULL, 'm'},   {"threads", required_argument, NULL, 't'},
        {"quiet", no_argument, NULL, 'q'},         {"type", required_argument, NULL, O_TYPE},
        {"imatrix", required_argument, NULL, O_IMATRIX},
        {"calib", required_argument, NULL, O_CALIB},
        {"target-bpw", required_argument, NULL, O_TARGET_BPW},
        {"max-size", required_argument, NULL, O_MAX_SIZE},
        {"calib-chunks", required_argument, NULL, O_CALIB_CHUNKS},
        {"format", required_argument, NULL, O_FORMAT},
        {"method", required_argument, NULL, O_METHOD},
        {"chunks", required_argument, NULL, O_CHUNKS},
        {"damp", required_argument, NULL, O_DAMP},
        {"order", required_argument, NULL, O_ORDER},
        {"act-order", no_argument, NULL, O_ACT_ORDER},
        {"inputs", required_argument, NULL, O_INPUTS},
        {"pure", no_argument, NULL, O_PURE},
        {"force", no_argument, NULL, O_FORCE},
        {"name", required_argument, NULL, O_NAME},
        {"json", no_argument, NULL, O_JSON},
        {"allow-requantize", no_argument, NULL, O_REQUANT},
        {NULL, 0, NULL, 0}};
    int oc;
    cli_getopt_start();
    while ((oc = cli_getopt("quantize", argc, argv, "ho:m:t:q", opts)) != -1) {
        const char *v = optarg;
        int bad = 0;
        switch (oc) {
        case 'h': usage(stdout); return CLI_EXIT_OK;
        case 'o': out = v; break;
        case 'm':
            if (cli_set_operand("quantize", &in, v)) return CLI_EXIT_USAGE;
            break;
        case 't':
            if (cli_parse_threads("quantize", v, &threads)) return CLI_EXIT_USAGE;
            break;
        case 'q': quiet = 1; break;
        case O_TYPE: recipe = v; break;
        case O_IMATRIX: o.imatrix = v; break;
        case O_CALIB: o.calib_text = v; break;
        case O_FORMAT: format = v; break;
        case O_TARGET_BPW:
            target_bpw_s = v;
            if (cli_parse_double(v, &o.target_bpw) || !(o.target_bpw > 0 && o.target_bpw <= 32))
                return cli_usage_error("quantize", "--target-bpw: '%s' is not a number of "
                                       "bits per weight (0 < X <= 32)", v);
            break;
        case O_MAX_SIZE:
            max_size_s = v;
            if (parse_size(v, &o.max_size))
                return cli_usage_error("quantize", "--max-size: '%s' is not a size (bytes, "
                                       "or with KB MB GB KiB MiB GiB)", v);
            break;
        case O_CALIB_CHUNKS:
            if (cli_parse_int(v, 1, 100000, &calib_chunks))
                return cli_usage_error("quantize", "--calib-chunks: '%s' is not a count", v);
            break;
        case O_METHOD: case O_CHUNKS: case O_DAMP: case O_ORDER: case O_ACT_ORDER:
        case O_INPUTS: bad = cli_quantize_gptq_opt(cli_opt_name(opts, oc), v, &o); break;
        case O_PURE: o.pure = 1; break;
        case O_FORCE: o.force = 1; break;
        case O_NAME:
            if (!*optarg) return cli_usage_error("quantize", "--name wants a non-empty name");
            o.name = optarg;
            break;
        case O_JSON: json = 1; break;
        case O_REQUANT: o.allow_requantize = 1; break;
        default: return CLI_EXIT_USAGE;
        }
        if (bad)
            return cli_usage_error("quantize", "--%s: bad value '%s'", cli_opt_name(opts, oc), v);
    }
    if (cli_operands("quantize", argc, argv, &in)) return CLI_EXIT_USAGE;
    if (!in) return cli_usage_error("quantize", "no input container given");
    if (!out) return cli_usage_error("quantize", "no output given (-o OUT.lpk)");
    o.in = in;
    o.calib_chunks = (int)calib_chunks;
    const int target = target_bpw_s || max_size_s;
    if (target && (recipe || o.pure))
        return cli_usage_error("quantize", "--target-bpw / --max-size choose the types: no "
                               "--type or --pure with them");
    if (target_bpw_s && max_size_s)
        return cli_usage_error("quantize", "--target-bpw and --max-size exclude each other");
    if (target && !o.calib_text)
        return cli_usage_error("quantize", "--target-bpw / --max-size need --calib TEXT (the "
                               "sensitivities are measured on it)");
    if (!target && !recipe) return cli_usage_error("quantize", "no --type given (one of: %s)",
                                                   quant_recipe_list());
    /* --type A,B,C: several outputs, into a folder */
    char types_buf[1024];
    const char *types[LLMPACK_QUANTIZE_MAX_OUTPUTS];
    size_t n_types = 0;
    if (recipe) {
        if (strlen(recipe) >= sizeof types_buf)
            return cli_usage_error("quantize", "--type: list too long");
        memcpy(types_buf, recipe, strlen(recipe) + 1);
        for (char *p = types_buf, *next; p; p = next) {
            next = strchr(p, ',');
            if (next) *next++ = '\0';
            if (!*p) return cli_usage_error("quantize", "--type '%s': an empty type in the list",
                                            recipe);
            if (!quant_recipe_valid(p))
                return cli_usage_error("quantize", "unknown --type '%s' (one of: %s)", p,
                                       quant_recipe_list());
            if (n_types == LLMPACK_QUANTIZE_MAX_OUTPUTS)
                return cli_usage_error("quantize", "--type: at most %d types in one run",
                                       LLMPACK_QUANTIZE_MAX_OUTPUTS);
            for (size_t k = 0; k < n_types; k++)
                if (!strcmp(recipe_canonical(types[k]), recipe_canonical(p)))
                    return cli_usage_error("quantize", "--type: %s and %s are the same recipe "
                                           "(%s)", types[k], p, recipe_canonical(p));
            types[n_types++] = p;
        }
    }
    /* with a size target both may be given: the matrix from the file, the
     * sensitivities from the text */
    if (o.imatrix && o.calib_text && !target)
        return cli_usage_error("quantize", "--imatrix and --calib exclude each other");
    if (o.gptq && !o.calib_text)
        return cli_usage_error("quantize", "--method gptq needs --calib TEXT");
    struct stat sb;
    size_t ol = strlen(out);
    /* the folder form: -o DIR/, or several types and -o an existing folder; one
     * type and a folder without the '/' stays the mistake it was (exit 2) */
    const int is_dir = stat(out, &sb) == 0 && S_ISDIR(sb.st_mode);
    const int folder = (ol && out[ol - 1] == '/') || (n_types > 1 && is_dir);
    if (is_dir && !folder)
        return cli_usage_error("quantize", "%s is a folder (to write %s/<name>-<TYPE>.lpk into "
                               "it, end it with '/')", out, out);
    if (o.gptq && o.gptq_sequential && n_types > 1)
        return cli_usage_error("quantize", "--inputs quantized makes one output at a time (each "
                               "type's blocks see their own quantized inputs)");
    if (n_types > 1 && !folder)
        return cli_usage_error("quantize", "%s: several types write one file each into a folder "
                               "(-o DIR/)", out);
    if (folder && target)
        return cli_usage_error("quantize", "--target-bpw / --max-size write one file: -o "
                               "OUT.lpk|OUT.gguf, not a folder");
    int fmt = 0, urc;
    if (!folder) {
        urc = cli_output_format("quantize", out, format, &fmt);
    } else {
        fmt = !format || !strcasecmp(format, "lpk") ? LLMPACK_FMT_LPK
              : !strcasecmp(format, "gguf")         ? LLMPACK_FMT_GGUF
                                                    : 0;
        urc = fmt ? 0 : cli_usage_error("quantize", "--format: '%s' is not gguf or lpk", format);
    }
    if (urc) return urc;
    const char *inputs[] = {in, o.imatrix, o.calib_text};
    if ((urc = cli_inputs_exist("quantize", inputs, 3))) return urc;
    if (folder && (stat(out, &sb) != 0 || !S_ISDIR(sb.st_mode))) {
        fprintf(stderr, "llmpack quantize: %s: no such folder (create it first)\n", out);
        return CLI_EXIT_RUNTIME;
    }
    if (threads > 0) omp_set_num_threads((int)threads);
    char label[96] = "";
    if (target_bpw_s) snprintf(label, sizeof label, "bpw %s", target_bpw_s);
    else if (max_size_s) snprintf(label, sizeof label, "max-size %s", max_size_s);
    o.target_label = label[0] ? label : NULL;

    cli_job cj;
    if (cli_job_init(&cj, "quantize", quiet || json)) {
        fprintf(stderr, "llmpack quantize: out of memory\n");
        return CLI_EXIT_RUNTIME;
    }
    /* stages labelled by their names ("export", "gptq calibration"), as when each
     * was a step of its own; GPTQ's block passes on a line of their own */
    cj.stage_label = 1;
    llmpack_quantize_out outs[LLMPACK_QUANTIZE_MAX_OUTPUTS];
    char *paths[LLMPACK_QUANTIZE_MAX_OUTPUTS] = {NULL};
    size_t n_out = folder ? n_types : 1;
    memset(outs, 0, sizeof outs);
    int rc = LPK_OK;
    if (folder) {
        /* DIR/<name>-<TYPE>.lpk|.gguf, TYPE as spelled, in upper case */
        char name[128];
        if (llmpack_quantize_name(cj.j, in, o.name, name, sizeof name)) {
            int ec = cli_job_fail(&cj);
            cli_job_free(&cj);
            return ec;
        }
        while (ol > 1 && out[ol - 1] == '/') ol--;
        for (size_t k = 0; k < n_out && !rc; k++) {
            char up[32];
            size_t tl = strlen(types[k]);
            for (size_t c = 0; c <= tl && c < sizeof up; c++)
                up[c] = (char)toupper((unsigned char)types[k][c]);
            up[sizeof up - 1] = '\0';
            size_t pl = ol + strlen(name) + strlen(up) + 8;
            paths[k] = malloc(pl);
            if (!paths[k]) {
                rc = LPK_ENOMEM;
                break;
            }
            snprintf(paths[k], pl, "%.*s%s%s-%s.%s", (int)ol, out, out[ol - 1] == '/' ? "" : "/",
                     name, up, fmt == LLMPACK_FMT_GGUF ? "gguf" : "lpk");
            outs[k].path = paths[k];
            outs[k].recipe = types[k];
            outs[k].format = fmt;
        }
    } else {
        outs[0].path = out;
        outs[0].recipe = target ? NULL : types[0];
        outs[0].format = fmt;
    }
    llmpack_quantize_report run;
    memset(&run, 0, sizeof run);
    int ec = CLI_EXIT_OK;
    if (rc) {
        fprintf(stderr, "llmpack quantize: out of memory\n");
        ec = CLI_EXIT_RUNTIME;
    } else if (llmpack_quantize(cj.j, &o, outs, n_out, &run)) {
        ec = cli_job_fail(&cj);
        for (size_t k = 0; k < run.n_out; k++)
            if (run.outputs[k].written)
                fprintf(stderr, "llmpack quantize: %s was completed before the failure and "
                        "stays\n", outs[k].path);
    } else if (json && !folder) {
        cli_json_print(report_json(&o, &run, &outs[0], &run.outputs[0]));
    } else if (json) {
        json_t *j = json_object(), *arr = json_array();
        json_object_set_new(j, "input", json_string(in));
        json_object_set_new(j, "folder", json_string(out));
        json_object_set_new(j, "format", json_string(fmt == LLMPACK_FMT_GGUF ? "gguf" : "lpk"));
        for (size_t k = 0; k < n_out; k++)
            json_array_append_new(arr, report_json(&o, &run, &outs[k], &run.outputs[k]));
        json_object_set_new(j, "outputs", arr);
        json_object_set_new(j, "seconds", json_real(run.seconds));
        cli_json_print(j);
    } else if (!quiet) {
        for (size_t k = 0; k < n_out; k++) {
            if (folder) printf("%s== %s (%s)\n", k ? "\n" : "", outs[k].path, outs[k].recipe);
            report_text(&o, &run, &outs[k], &run.outputs[k]);
        }
        if (folder)
            printf("\n%zu files from one read of %s in %.2f s\n", n_out, in, run.seconds);
    }
    llmpack_quantize_report_free(&run);
    cli_job_free(&cj);
    for (size_t k = 0; k < n_out; k++) free(paths[k]);
    return ec;
}
