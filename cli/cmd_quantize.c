/* llmpack quantize: a container (.lpk or GGUF) -> .lpk with a recipe's types,
 * streamed tensor by tensor, with the error each tensor picked up; a GGUF
 * output is that container exported (cmd_export.c) and removed. */
#include "cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <sys/stat.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../calib/calib.h"
#include "../quant/quant.h"
#include "../verify/verify.h"

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
            "usage: llmpack quantize IN -o OUT.lpk|OUT.gguf --type T [options]\n\n"
            "IN is a container (.lpk or GGUF). T is one of the types below (any case).\n"
            "OUT's name says the format: .lpk writes a container, .gguf a GGUF for\n"
            "llama.cpp (through a temporary container beside it, removed at the end).\n"
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
            "  -o, --output OUT       output: OUT.lpk or OUT.gguf\n"
            "  --format F             lpk | gguf, for an OUT named neither .lpk nor .gguf\n"
            "  --type T               recipe (see above)\n"
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
            "  llmpack quantize model.f16.gguf -o model.q4_k_m.lpk --type q4_k_m --imatrix F\n");
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

typedef struct {
    double sse, ssx;      /* this tensor */
    int has_err;
} tstat;

/* Source tensor -> f32 (dequantizing block types). */
static int to_f32(const lpk_tensor *t, float *x, lpk_error *err)
{
    int64_t nr = lpk_tensor_nrows(t), nc = lpk_tensor_ncols(t);
    int rc = quant_type_is_block(t->type) ? quant_dequantize_rows(t->type, t->data, nr, nc, x)
                                          : lpk_to_f32_row(t->type, t->data, x,
                                                           (size_t)(nr * nc));
    if (rc) return lpk_err(err, LPK_EUNSUPPORTED, "%s: cannot read type %s", t->name,
                           tname(t->type));
    return LPK_OK;
}

/* Bytes of a GGUF file of the keys in m and the n tensors that are not
 * tensor data (the header, key/values, tensor infos, alignment padding at
 * most): what export adds to the tensors, near enough for a budget (its keys
 * are m's give or take a few; the exported file's exact size is checked). */
static uint64_t gguf_overhead(const lpk_meta *m, const lpk_tensor *decls, size_t n)
{
    uint64_t b = 4 + 4 + 8 + 8 + 31;
    for (size_t i = 0; i < lpk_meta_count(m); i++) {
        const lpk_kv *kv = lpk_meta_at(m, i);
        b += 8 + strlen(kv->key) + 4;
        if (kv->type == LPK_V_STR) {
            b += 8 + kv->str.n;
        } else if (kv->type != LPK_V_ARR) {
            b += lpk_vtype_size(kv->type);
        } else {
            b += 4 + 8;
            if (kv->elem != LPK_V_STR) b += kv->count * lpk_vtype_size(kv->elem);
            else for (uint64_t k = 0; k < kv->count; k++) b += 8 + lpk_kv_str_at(kv, k).n;
        }
    }
    for (size_t i = 0; i < n; i++)
        b += 8 + strlen(decls[i].name) + 4 + 8 * (uint64_t)decls[i].n_dims + 4 + 8 + 31;
    return b;
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
        if (!(b < 1.8e19)) return -1;
        *out = (uint64_t)b;
        return 0;
    }
    return -1;
}

int cmd_quantize(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *recipe = NULL, *im_path = NULL, *calib_text = NULL;
    const char *format = NULL, *final_out = NULL;
    char tmp_out[4096] = "";
    int pure = 0, force = 0, json = 0, quiet = 0, requant = 0, gptq = 0;
    long threads = 0, chunks = 0;
    calib_gptq_opts go;
    calib_gptq_opts_default(&go);
    const char *target_bpw_s = NULL, *max_size_s = NULL, *out_name = NULL;
    double target_bpw = 0;
    uint64_t max_size = 0;
    long calib_chunks = 4;
    enum { O_TYPE = 256, O_IMATRIX, O_CALIB, O_TARGET_BPW, O_MAX_SIZE, O_CALIB_CHUNKS,
           O_FORMAT, O_METHOD, O_CHUNKS, O_DAMP, O_ORDER, O_ACT_ORDER, O_PURE, O_FORCE, O_JSON,
           O_REQUANT, O_NAME };
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
        case O_IMATRIX: im_path = v; break;
        case O_CALIB: calib_text = v; break;
        case O_FORMAT: format = v; break;
        case O_TARGET_BPW:
            target_bpw_s = v;
            if (cli_parse_double(v, &target_bpw) || !(target_bpw > 0 && target_bpw <= 32))
                return cli_usage_error("quantize", "--target-bpw: '%s' is not a number of "
                                       "bits per weight (0 < X <= 32)", v);
            break;
        case O_MAX_SIZE:
            max_size_s = v;
            if (parse_size(v, &max_size))
                return cli_usage_error("quantize", "--max-size: '%s' is not a size (bytes, "
                                       "or with KB MB GB KiB MiB GiB)", v);
            break;
        case O_CALIB_CHUNKS:
            if (cli_parse_int(v, 1, 100000, &calib_chunks))
                return cli_usage_error("quantize", "--calib-chunks: '%s' is not a count", v);
            break;
        case O_METHOD:
            gptq = !strcmp(v, "gptq");
            bad = !gptq && strcmp(v, "rtn");
            break;
        case O_CHUNKS: bad = cli_parse_int(v, 1, INT32_MAX, &chunks); break;
        case O_DAMP: {
            char *end;
            go.damp = strtod(v, &end);
            bad = *end || end == v || !(go.damp >= 0.0 && go.damp <= 10.0);
            break;
        }
        case O_ORDER:
            go.order = quant_gptq_order_parse(v);
            bad = go.order < 0;
            break;
        case O_ACT_ORDER: go.order = QUANT_GPTQ_ORDER_STATIC; break;
        case O_PURE: pure = 1; break;
        case O_FORCE: force = 1; break;
        case O_NAME:
            if (!*optarg) return cli_usage_error("quantize", "--name wants a non-empty name");
            out_name = optarg;
            break;
        case O_JSON: json = 1; break;
        case O_REQUANT: requant = 1; break;
        default: return CLI_EXIT_USAGE;
        }
        if (bad)
            return cli_usage_error("quantize", "--%s: bad value '%s'", cli_opt_name(opts, oc), v);
    }
    if (cli_operands("quantize", argc, argv, &in)) return CLI_EXIT_USAGE;
    if (!in) return cli_usage_error("quantize", "no input container given");
    if (!out) return cli_usage_error("quantize", "no output given (-o OUT.lpk)");
    const int target = target_bpw_s || max_size_s;
    if (target && (recipe || pure))
        return cli_usage_error("quantize", "--target-bpw / --max-size choose the types: no "
                               "--type or --pure with them");
    if (target_bpw_s && max_size_s)
        return cli_usage_error("quantize", "--target-bpw and --max-size exclude each other");
    if (target && !calib_text)
        return cli_usage_error("quantize", "--target-bpw / --max-size need --calib TEXT (the "
                               "sensitivities are measured on it)");
    if (!target && !recipe) return cli_usage_error("quantize", "no --type given (one of: %s)",
                                                   quant_recipe_list());
    if (!target && !quant_recipe_valid(recipe))
        return cli_usage_error("quantize", "unknown --type '%s' (one of: %s)", recipe,
                               quant_recipe_list());
    /* with a size target both may be given: the matrix from the file, the
     * sensitivities from the text */
    if (im_path && calib_text && !target)
        return cli_usage_error("quantize", "--imatrix and --calib exclude each other");
    if (gptq && !calib_text)
        return cli_usage_error("quantize", "--method gptq needs --calib TEXT");
    int fmt = 0, urc = cli_output_format("quantize", out, format, &fmt);
    if (urc) return urc;
    const char *inputs[] = {in, im_path, calib_text};
    if ((urc = cli_inputs_exist("quantize", inputs, 3))) return urc;
    if (threads > 0) omp_set_num_threads((int)threads);

    lpk_error err = {0};
    lpk_imatrix *im = NULL;
    calib_gptq *g = NULL;
    float *wbuf = NULL;
    char **no_entry = NULL;
    size_t n_no_entry = 0;
    lpk_reader *r = NULL;
    lpk_meta *meta = NULL;
    lpk_tensor *decls = NULL;
    quant_choice *ch = NULL;
    double *gains = NULL;
    float **imw = NULL;
    quant_target_result tres = {0, 0, 0};
    char target_str[96] = "";
    uint64_t budget = 0;
    int tries = 0;
    tstat *st = NULL;
    lpk_writer *w = NULL;
    float *x = NULL;
    void *qbuf = NULL;
    size_t n = 0;
    int rc = LPK_OK;
    if (fmt == CLI_FMT_GGUF) {
        /* GGUF: quantize into a container beside OUT, then export it */
        rc = lpk_writer_check_target(out, force ? LPK_WRITE_FORCE : 0, &err);
        if (!rc) rc = cli_tmp_beside(out, tmp_out, sizeof tmp_out, &err);
        if (rc) goto done;
        final_out = out;
        out = tmp_out;
    }
    rc = cli_open_input(in, lpk_reader_default_flags(), &r, &err);
    if (rc) goto done;
    n = lpk_reader_n_tensors(r);
    decls = calloc(n ? n : 1, sizeof *decls);
    ch = calloc(n ? n : 1, sizeof *ch);
    st = calloc(n ? n : 1, sizeof *st);
    meta = lpk_meta_new();
    if (!decls || !ch || !st || !meta) {
        rc = lpk_err(&err, LPK_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) decls[i] = *lpk_reader_tensor(r, i);
    if (im_path) rc = lpk_imatrix_read(im_path, &im, &err);
    else if (calib_text && gptq) {
        go.chunks = (int)chunks;
        cli_progress cp;
        cli_progress_start(&cp, "gptq calibration", "chunks", 0, quiet || json);
        rc = calib_gptq_collect(r, calib_text, &go, cli_chunk_progress, &cp, &g, &err);
        cli_progress_end(&cp);
    } else if (calib_text) {
        calib_opts co = {.ctx = 512, .max_chunks = (int)chunks};
        if (!quiet && !json) fprintf(stderr, "llmpack quantize: calibrating on %s\n", calib_text);
        rc = calib_file(in, calib_text, &co, &im, &err);
    }
    if (!rc && im) rc = lpk_imatrix_check(im, im_path ? im_path : calib_text, decls, n, &err);
    if (rc) goto done;
    if (target) {
        /* the budget for all tensors: bits per weight over every tensor, or the
         * file size less the input's non-tensor bytes and some slack (the
         * writer's exact size is checked below) */
        uint64_t elems = 0, in_tensors = 0;
        for (size_t i = 0; i < n; i++) {
            elems += lpk_tensor_nelems(&decls[i]);
            in_tensors += decls[i].size;
        }
        if (target_bpw_s) {
            budget = (uint64_t)(target_bpw * (double)elems / 8.0);
            snprintf(target_str, sizeof target_str, "bpw %s", target_bpw_s);
        } else {
            uint64_t fsz = lpk_reader_file_size(r);
            uint64_t overhead = final_out ? gguf_overhead(lpk_reader_meta(r), decls, n)
                                          : fsz > in_tensors ? fsz - in_tensors : 0;
            overhead += 4096 + 64 * (uint64_t)n;
            budget = max_size > overhead ? max_size - overhead : 0;
            snprintf(target_str, sizeof target_str, "max-size %s", max_size_s);
        }
        gains = calloc(n ? n : 1, sizeof *gains);
        imw = calloc(n ? n : 1, sizeof *imw);
        if (!gains || !imw) { rc = lpk_err(&err, LPK_ENOMEM, "out of memory"); goto done; }
        for (size_t i = 0; i < n && im; i++) {
            const lpk_imatrix_entry *e = lpk_imatrix_find(im, decls[i].name);
            if (!e) continue;
            imw[i] = malloc((size_t)e->n * sizeof(float));
            if (!imw[i]) { rc = lpk_err(&err, LPK_ENOMEM, "out of memory"); goto done; }
            lpk_imatrix_weights(e, imw[i]);
        }
        if (!quiet && !json)
            fprintf(stderr, "llmpack quantize: measuring each matrix's sensitivity on %s\n",
                    calib_text);
        rc = vf_target_gains_text(r, calib_text, 512, (int)calib_chunks,
                                  (const float *const *)imw, gains, &err);
        if (!rc) rc = quant_plan_target(decls, n, (const float *const *)imw, gains, NULL, 0,
                                        budget, ch, &tres, &err);
        if (rc == LPK_ENOSPC) {
            fprintf(stderr, "llmpack quantize: %s: %s\n", in, err.msg);
            rc = CLI_EXIT_USAGE;
            goto done_usage;
        }
    } else {
        rc = quant_plan(recipe, (pure ? QUANT_PLAN_PURE : 0u) | (im || g ? QUANT_PLAN_IMATRIX : 0u),
                        lpk_reader_meta(r), decls, n, ch, &err);
    }
    if (rc) goto done;
planned:;
    uint64_t max_elems = 0, in_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        int src = t->type, dst = ch[i].type;
        if (quant_type_is_block(src) && src != dst && !requant) {
            fprintf(stderr,
                    "llmpack quantize: %s: %s is already %s; quantizing it to %s would "
                    "dequantize it first (add --allow-requantize)\n",
                    in, t->name, tname(src), tname(dst));
            rc = CLI_EXIT_USAGE;
            goto done_usage;
        }
        uint64_t ne = lpk_tensor_nelems(t);
        max_elems = ne > max_elems ? ne : max_elems;
        in_bytes += t->size;
        decls[i].type = dst;
        decls[i].data = NULL;
        if (lpk_type_nbytes(dst, ne, &decls[i].size)) {
            rc = lpk_err(&err, LPK_EINVAL, "%s: %s does not fit type %s", in, t->name, tname(dst));
            goto done;
        }
    }
    if (requant) {
        for (size_t i = 0; i < n; i++)
            if (quant_type_is_block(lpk_reader_tensor(r, i)->type) &&
                lpk_reader_tensor(r, i)->type != ch[i].type && !quiet && !json)
                fprintf(stderr, "llmpack quantize: %s: dequantizing %s to requantize it as %s\n",
                        lpk_reader_tensor(r, i)->name, tname(lpk_reader_tensor(r, i)->type),
                        tname(ch[i].type));
    }
    rc = lpk_meta_copy(meta, lpk_reader_meta(r));
    if (!rc && out_name) rc = lpk_meta_set_str(meta, "general.name", out_name);
    if (!rc) rc = target ? quant_plan_record_target(target_str, &tres, decls, ch, n, meta)
                         : quant_plan_record(recipe, pure, decls, ch, n, meta);
    if (!rc && im) rc = lpk_imatrix_record(im, im_path, meta);
    if (!rc && g) rc = calib_gptq_record(g, meta);
    if (rc) { lpk_err(&err, rc, "cannot record the recipe in the metadata"); goto done; }
    if (max_elems > SIZE_MAX / 8) { rc = lpk_err(&err, LPK_ENOMEM, "tensor too large"); goto done; }
    x = malloc((size_t)(max_elems ? max_elems : 1) * sizeof(float));
    qbuf = malloc((size_t)(max_elems ? max_elems : 1) * sizeof(float));
    if (!x || !qbuf) { rc = lpk_err(&err, LPK_ENOMEM, "out of memory"); goto done; }
    if (im && !wbuf) {
        int64_t maxc = 1;
        for (size_t i = 0; i < n; i++)
            if (lpk_tensor_ncols(&decls[i]) > maxc) maxc = lpk_tensor_ncols(&decls[i]);
        wbuf = malloc((size_t)maxc * sizeof(float));
        no_entry = calloc(n ? n : 1, sizeof *no_entry);
        if (!wbuf || !no_entry) { rc = lpk_err(&err, LPK_ENOMEM, "out of memory"); goto done; }
    }
    rc = lpk_writer_open(out, meta, decls, n, force || final_out ? LPK_WRITE_FORCE : 0, &w, &err);
    if (rc) goto done;
    /* a GGUF output's size is checked when it is exported, below */
    uint64_t excess = 0;
    if (max_size_s && !final_out && lpk_writer_file_size(w) > max_size && tries++ < 8) {
        /* the metadata and alignment took more than estimated: plan again with
         * a budget smaller by the excess and a step that doubles each time (the
         * plan moves in whole tensors' steps) */
        excess = lpk_writer_file_size(w) - max_size + ((uint64_t)4096 << tries);
replan:
        lpk_writer_abort(w);
        w = NULL;
        free(x);
        free(qbuf);
        x = qbuf = NULL;
        budget = budget > excess ? budget - excess : 0;
        for (size_t i = 0; i < n; i++) decls[i] = *lpk_reader_tensor(r, i);
        rc = quant_plan_target(decls, n, (const float *const *)imw, gains, NULL, 0, budget, ch,
                               &tres, &err);
        if (rc == LPK_ENOSPC) {
            fprintf(stderr, "llmpack quantize: %s: %s\n", in, err.msg);
            rc = CLI_EXIT_USAGE;
            goto done_usage;
        }
        if (rc) goto done;
        goto planned;
    }
    if (max_size_s && !final_out && lpk_writer_file_size(w) > max_size) {
        rc = lpk_err(&err, LPK_ENOSPC, "%s: no plan found within %" PRIu64 " bytes", out, max_size);
        goto done;
    }

    cli_progress prog;
    cli_progress_start(&prog, "quantize", "B", in_bytes, quiet || json);
    uint64_t done_bytes = 0;
    double t0 = cli_now();
    for (size_t i = 0; i < n && !rc; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        int64_t nr = lpk_tensor_nrows(t), nc = lpk_tensor_ncols(t);
        const void *bytes;
        rc = lpk_reader_tensor_data(r, i, &bytes, &err);
        if (rc) break;
        uint64_t size = decls[i].size;
        if (t->type != ch[i].type) {
            rc = to_f32(t, x, &err);
            if (rc) break;
            lpk_error qe = {0};
            const float *iw = NULL;
            if (im && quant_type_is_block(ch[i].type)) {
                const lpk_imatrix_entry *e = lpk_imatrix_find(im, t->name);
                if (e) {
                    lpk_imatrix_weights(e, wbuf);
                    iw = wbuf;
                } else {
                    /* no entry: every column of equal importance */
                    for (int64_t c = 0; c < nc; c++) wbuf[c] = 1.0f;
                    iw = wbuf;
                    no_entry[n_no_entry++] = (char *)t->name;
                }
            }
            if (g && calib_gptq_applies(g, t->name, ch[i].type))
                rc = calib_gptq_quantize(g, t->name, ch[i].type, x, nr, nc, qbuf, &qe);
            else
                rc = quant_quantize_rows_ex(ch[i].type, LPK_TYPE_F32, x, nr, nc, qbuf, iw,
                                            QUANT_ROWS_OUTPUT_WEIGHTING, &qe);
            if (rc) {
                lpk_err(&err, rc, "%s: tensor %s: %s", in, t->name, qe.msg);
                break;
            }
            if (t->n_dims >= 2) {
                quant_error(ch[i].type, x, qbuf, nr, nc, &st[i].sse, &st[i].ssx);
                st[i].has_err = 1;
            }
            bytes = qbuf;
        } else if (t->n_dims >= 2) {
            /* copied as is: no error, but its weights count in the pooled figure */
            rc = to_f32(t, x, &err);
            if (rc) break;
            for (uint64_t k = 0; k < lpk_tensor_nelems(t); k++) st[i].ssx += (double)x[k] * x[k];
            st[i].has_err = 1;
        }
        rc = lpk_writer_tensor_begin(w, t->name, &err);
        if (!rc) rc = lpk_writer_tensor_write(w, bytes, (size_t)size, &err);
        if (!rc) rc = lpk_writer_tensor_end(w, &err);
        lpk_reader_release_tensor(r, i);
        done_bytes += t->size;
        cli_progress_update(&prog, done_bytes, t->name);
    }
    cli_progress_end(&prog);
    if (rc) goto done;
    rc = lpk_writer_finish(w, &err);
    w = NULL;
    if (rc) goto done;
    if (final_out) {
        cli_tmp_hold(tmp_out);
        cli_export_stats es;
        char *name = cli_name_from_path(final_out);
        rc = cli_export_gguf(tmp_out, final_out, name, 0, force ? LPK_WRITE_FORCE : 0,
                             quiet || json, max_size_s ? max_size : 0, &es, &err);
        free(name);
        if (rc == LPK_ENOSPC && max_size_s && es.file_size > max_size && tries++ < 8) {
            /* the GGUF came out larger than estimated: quantize again */
            excess = es.file_size - max_size + ((uint64_t)4096 << tries);
            lpk_error_clear(&err);
            memset(st, 0, n * sizeof *st);
            n_no_entry = 0;
            goto replan;
        }
        if (rc) goto done;
        out = final_out;
    }
    double secs = cli_now() - t0;

    /* report */
    double sse = 0, ssx = 0;
    uint64_t out_bytes = 0, bytes2 = 0, in2 = 0, w2 = 0;
    for (size_t i = 0; i < n; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        out_bytes += decls[i].size;
        if (t->n_dims >= 2) {
            sse += st[i].sse;
            ssx += st[i].ssx;
            bytes2 += decls[i].size;
            in2 += t->size;
            w2 += lpk_tensor_nelems(t);
        }
    }
    double pooled = ssx > 0 ? sqrt(sse / ssx) : 0.0;
    double bpw2 = w2 ? 8.0 * (double)bytes2 / (double)w2 : 0.0;
    uint64_t all_elems = 0, file_bytes = 0;
    for (size_t i = 0; i < n; i++) all_elems += lpk_tensor_nelems(&decls[i]);
    struct stat sb;
    if (stat(out, &sb) == 0) file_bytes = (uint64_t)sb.st_size;
    if (json) {
        json_t *o = json_object(), *arr = json_array();
        json_object_set_new(o, "input", json_string(in));
        json_object_set_new(o, "output", json_string(out));
        json_object_set_new(o, "format", json_string(final_out ? "gguf" : "lpk"));
        json_object_set_new(o, "type", json_string(target ? "target" : recipe));
        if (target) {
            json_t *tj = json_object();
            json_object_set_new(tj, "limit", json_string(target_str));
            json_object_set_new(tj, "budget_bytes", json_integer((json_int_t)tres.budget));
            json_object_set_new(tj, "predicted_bytes", json_integer((json_int_t)tres.bytes));
            json_object_set_new(tj, "achieved_bytes", json_integer((json_int_t)out_bytes));
            json_object_set_new(tj, "file_bytes", json_integer((json_int_t)file_bytes));
            json_object_set_new(tj, "bpw", json_real(all_elems ? 8.0 * (double)out_bytes /
                                                                (double)all_elems : 0.0));
            json_object_set_new(tj, "predicted_kld", json_real(tres.err));
            json_object_set_new(o, "target", tj);
        }
        json_object_set_new(o, "pure", json_boolean(pure));
        json_object_set_new(o, "method", json_string(g ? "gptq" : "rtn"));
        for (size_t i = 0; i < n; i++) {
            const lpk_tensor *t = lpk_reader_tensor(r, i);
            json_t *e = json_object(), *shape = json_array();
            json_object_set_new(e, "name", json_string(t->name));
            for (int d = 0; d < t->n_dims; d++) json_array_append_new(shape, json_integer(t->dims[d]));
            json_object_set_new(e, "shape", shape);
            json_object_set_new(e, "type_in", json_string(tname(t->type)));
            json_object_set_new(e, "type_out", json_string(tname(ch[i].type)));
            json_object_set_new(e, "bytes_in", json_integer((json_int_t)t->size));
            json_object_set_new(e, "bytes_out", json_integer((json_int_t)decls[i].size));
            json_object_set_new(e, "bpw", json_real(8.0 * (double)decls[i].size /
                                                    (double)lpk_tensor_nelems(t)));
            if (st[i].has_err)
                json_object_set_new(e, "rel_rmse", json_real(st[i].ssx > 0 ? sqrt(st[i].sse / st[i].ssx) : 0.0));
            if (ch[i].fallback_from >= 0)
                json_object_set_new(e, "fallback_from", json_string(tname(ch[i].fallback_from)));
            if (ch[i].note[0]) json_object_set_new(e, "note", json_string(ch[i].note));
            json_array_append_new(arr, e);
        }
        json_object_set_new(o, "tensors", arr);
        if (im) {
            json_t *ij = json_object(), *ne = json_array();
            char h[24];
            snprintf(h, sizeof h, "%016llx", (unsigned long long)im->hash);
            json_object_set_new(ij, "file", im_path ? json_string(im_path) : json_null());
            json_object_set_new(ij, "calibration_text", calib_text ? json_string(calib_text) : json_null());
            json_object_set_new(ij, "hash", json_string(h));
            json_object_set_new(ij, "dataset", im->dataset ? json_string(im->dataset) : json_null());
            json_object_set_new(ij, "entries", json_integer((json_int_t)im->n));
            json_object_set_new(ij, "chunks", json_integer(im->chunks));
            for (size_t i = 0; i < n_no_entry; i++) json_array_append_new(ne, json_string(no_entry[i]));
            json_object_set_new(ij, "default_weighting", ne);
            json_object_set_new(o, "imatrix", ij);
        }
        json_t *tot = json_object();
        json_object_set_new(tot, "bytes_in", json_integer((json_int_t)in_bytes));
        json_object_set_new(tot, "bytes_out", json_integer((json_int_t)out_bytes));
        json_object_set_new(tot, "bpw_2d", json_real(bpw2));
        json_object_set_new(tot, "rel_rmse_2d", json_real(pooled));
        json_object_set_new(tot, "seconds", json_real(secs));
        json_object_set_new(o, "totals", tot);
        cli_json_print(o);
    } else if (!quiet) {
        printf("%-28s %-12s %-14s %10s\n", "tensor", "shape", "type", "rel. RMSE");
        for (size_t i = 0; i < n; i++) {
            const lpk_tensor *t = lpk_reader_tensor(r, i);
            char shape[64], types[32], rm[16] = "-";
            shape_str(t, shape, sizeof shape);
            snprintf(types, sizeof types, "%s -> %s", tname(t->type), tname(ch[i].type));
            if (st[i].has_err)
                snprintf(rm, sizeof rm, "%.5f", st[i].ssx > 0 ? sqrt(st[i].sse / st[i].ssx) : 0.0);
            printf("%-28s %-12s %-14s %10s%s%s\n", t->name, shape, types, rm,
                   ch[i].note[0] ? "  " : "", ch[i].note);
        }
        printf("size: %.2f MB -> %.2f MB (2-D tensors: %.2f MB -> %.2f MB, %.4f bits per weight)\n",
               (double)in_bytes / 1e6, (double)out_bytes / 1e6, (double)in2 / 1e6,
               (double)bytes2 / 1e6, bpw2);
        printf("pooled rel. RMSE over 2-D tensors: %.5f   (%.2f s, %s)\n", pooled, secs,
               lpk_cpu_describe());
        if (target)
            printf("target %s: tensors %" PRIu64 " bytes predicted, %" PRIu64 " written (budget %"
                   PRIu64 ", %.4f bits per weight over all tensors); file %" PRIu64
                   " bytes; predicted KLD %.6f (sum over tensors)\n",
                   target_str, tres.bytes, out_bytes, tres.budget,
                   all_elems ? 8.0 * (double)out_bytes / (double)all_elems : 0.0, file_bytes,
                   tres.err);
        if (im) {
            printf("importance matrix: %s (%zu entries, %d chunks, xxh3 %016llx)\n",
                   im_path ? im_path : calib_text, im->n, im->chunks,
                   (unsigned long long)im->hash);
            if (n_no_entry) {
                printf("no entry, default weighting:");
                for (size_t i = 0; i < n_no_entry; i++) printf(" %s", no_entry[i]);
                printf("\n");
            }
        }
    }

done:
    if (rc) cli_print_error("quantize", &err);
    rc = rc ? cli_exit_for(rc) : CLI_EXIT_OK;
done_usage:
    lpk_writer_abort(w);
    if (tmp_out[0]) cli_tmp_remove(tmp_out);
    lpk_imatrix_free(im);
    calib_gptq_free(g);
    free(wbuf);
    free(no_entry);
    free(x);
    free(qbuf);
    free(decls);
    free(ch);
    free(gains);
    for (size_t i = 0; imw && i < n; i++) free(imw[i]);
    free(imw);
    free(st);
    lpk_meta_free(meta);
    lpk_reader_close(r);
    return rc;
}
