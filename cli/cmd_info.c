/* llmpack info: what a container holds (.lpk or GGUF): arguments and the text
 * and --json printing of the info job's description (llmpack_info). */
#include "cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define INFO_MAX_ARRAY 64 /* longer arrays are summarized, never dumped */

/* "xxh3" (verified at open), "xxh3-unverified" or "none" (GGUF). */
static const char *checksums(int c)
{
    return c == LLMPACK_SUMS_NONE ? "none" : c == LLMPACK_SUMS_SKIPPED ? "xxh3-unverified" : "xxh3";
}

static void info_help(FILE *f)
{
    fprintf(f,
            "usage: llmpack info FILE [--json] [--tensors]\n\n"
            "Describes a container (.lpk or GGUF): in words first (its type, e.g. Q4_K_M;\n"
            "tied output; context; rope; bos/eos/eot/pad with their pieces; chat template;\n"
            "how it was quantized), then architecture, hyperparameters, tokenizer summary,\n"
            "provenance, size, bits per weight and tensor counts per type.\n\n"
            "  --tensors  list every tensor (name, type, shape, offset, size, xxh3)\n"
            "  --json     machine-readable output (always includes the tensor list;\n"
            "             arrays of more than %d elements are summarized; the words\n"
            "             under \"summary\")\n"
            "  -m FILE    FILE as an option (also --model)\n"
            "  -h, --help this text\n\n"
            "example (gguf-dump FILE):\n"
            "  llmpack info model-Q4_K_M.gguf --tensors\n",
            INFO_MAX_ARRAY);
}

/* A JSON string from arbitrary bytes: invalid UTF-8 bytes become U+FFFD. */
static json_t *json_bytes(const char *p, uint64_t n)
{
    json_t *s = json_stringn(p, (size_t)n);
    if (s) return s;
    char *b = malloc((size_t)n * 3 + 1);
    if (!b) return json_null();
    size_t k = 0;
    for (uint64_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        json_t *one = c < 0x80 ? json_stringn(p + i, 1) : NULL;
        /* copy valid multi-byte sequences whole */
        int len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        if (!one && len > 1 && i + (uint64_t)len <= n) one = json_stringn(p + i, (size_t)len);
        if (one) {
            size_t l = c < 0x80 ? 1 : (size_t)len;
            memcpy(b + k, p + i, l);
            k += l;
            i += l - 1;
            json_decref(one);
        } else {
            memcpy(b + k, "\xef\xbf\xbd", 3);
            k += 3;
        }
    }
    s = json_stringn(b, k);
    free(b);
    return s ? s : json_null();
}

static json_t *json_u64(uint64_t v)
{
    if (v <= (uint64_t)INT64_MAX) return json_integer((json_int_t)v);
    char b[32];
    snprintf(b, sizeof b, "%" PRIu64, v);
    return json_string(b);
}

static json_t *json_double(double v)
{
    if (isfinite(v)) return json_real(v);
    return json_string(isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
}

/* One scalar of vtype at p (host order). */
static json_t *json_scalar(int vtype, const void *p)
{
    switch (vtype) {
    case LPK_V_U8: return json_integer(*(const uint8_t *)p);
    case LPK_V_I8: return json_integer(*(const int8_t *)p);
    case LPK_V_U16: { uint16_t v; memcpy(&v, p, 2); return json_integer(v); }
    case LPK_V_I16: { int16_t v; memcpy(&v, p, 2); return json_integer(v); }
    case LPK_V_U32: { uint32_t v; memcpy(&v, p, 4); return json_integer(v); }
    case LPK_V_I32: { int32_t v; memcpy(&v, p, 4); return json_integer(v); }
    case LPK_V_U64: { uint64_t v; memcpy(&v, p, 8); return json_u64(v); }
    case LPK_V_I64: { int64_t v; memcpy(&v, p, 8); return json_integer(v); }
    case LPK_V_F32: { float v; memcpy(&v, p, 4); return json_double(v); }
    case LPK_V_F64: { double v; memcpy(&v, p, 8); return json_double(v); }
    case LPK_V_BOOL: return json_boolean(*(const uint8_t *)p);
    default: return json_null();
    }
}

static json_t *json_kv(const lpk_kv *kv)
{
    if (kv->type == LPK_V_STR) return json_bytes(kv->str.p, kv->str.n);
    if (kv->type != LPK_V_ARR) return json_scalar(kv->type, kv->data);
    if (kv->count > INFO_MAX_ARRAY)
        return json_pack("{s:s, s:s, s:o}", "type", "arr", "elem", lpk_vtype_name(kv->elem),
                         "count", json_u64(kv->count));
    json_t *a = json_array();
    size_t es = lpk_vtype_size(kv->elem);
    for (uint64_t i = 0; i < kv->count; i++) {
        if (kv->elem == LPK_V_STR) {
            lpk_str s = lpk_kv_str_at(kv, i);
            json_array_append_new(a, json_bytes(s.p, s.n));
        } else {
            json_array_append_new(a, json_scalar(kv->elem, (const char *)kv->data + i * es));
        }
    }
    return a;
}

/* Short text form of a value; arrays longer than 8 are summarized. */
static void print_value(const lpk_kv *kv)
{
    if (kv->type == LPK_V_ARR && kv->count > 8) {
        printf("[%s x %" PRIu64 "]", lpk_vtype_name(kv->elem), kv->count);
        return;
    }
    json_t *v = json_kv(kv);
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(10));
    if (s && kv->type == LPK_V_STR && strlen(s) > 120) strcpy(s + 110, "...\" (long)");
    printf("%s", s ? s : "?");
    free(s);
    json_decref(v);
}

static const char *type_name(int type)
{
    const lpk_type_info *ti = lpk_type_get(type);
    return ti ? ti->name : "?";
}

static const char *kind_name(const llmpack_info_result *in)
{
    return in->kind == LPK_KIND_GGUF ? "gguf" : "lpk";
}

/* A special token as {id, piece} (null when absent). */
static json_t *token_json(const llmpack_special_token *t)
{
    if (!t->has) return json_null();
    json_t *piece = t->has_piece ? json_bytes(t->piece.p, t->piece.n) : json_null();
    return json_pack("{s:I, s:o}", "id", (json_int_t)t->id, "piece", piece);
}

/* A group of keys as an object (prefix stripped), or null when none. */
static json_t *group_json(const llmpack_key_group *g)
{
    if (!g->n) return json_null();
    json_t *o = json_object();
    for (size_t i = 0; i < g->n; i++)
        json_object_set_new(o, g->kv[i]->key + g->prefix_len, json_kv(g->kv[i]));
    return o;
}

static json_t *kv_or_null(const lpk_kv *kv)
{
    return kv ? json_kv(kv) : json_null();
}

/* What the file is, in words (JSON "summary"; info_text prints the same):
 * its type, tied output, context, rope, special tokens, chat template and how
 * it was quantized. Keys the file does not carry are null. */
static json_t *summary_json(const llmpack_info_result *in)
{
    json_t *s = json_object();
    json_object_set_new(s, "type", json_string(in->desc.type));
    json_object_set_new(s, "type_from", json_string(in->desc.type_from));
    json_object_set_new(s, "tied_output", json_boolean(in->tied_output));
    json_object_set_new(s, "output_type", in->tied_output ? json_null()
                                                          : json_string(type_name(in->output_type)));
    json_object_set_new(s, "context_length", kv_or_null(in->context_length));
    json_t *rope = json_object();
    json_object_set_new(rope, "freq_base", kv_or_null(in->rope_freq_base));
    json_object_set_new(rope, "scaling", group_json(&in->rope_scaling));
    json_object_set_new(s, "rope", rope);
    json_t *sp = json_object();
    for (size_t i = 0; i < 4; i++)
        json_object_set_new(sp, in->special[i].name, token_json(&in->special[i]));
    json_object_set_new(s, "special_tokens", sp);
    json_object_set_new(s, "chat_template",
                        json_pack("{s:b, s:o}", "present", in->chat_template, "bytes",
                                  in->chat_template ? json_u64(in->chat_template_bytes)
                                                    : json_null()));
    json_t *q = json_object();
    json_object_set_new(q, "recipe", kv_or_null(in->quant_recipe));
    json_object_set_new(q, "pure", kv_or_null(in->quant_pure));
    json_object_set_new(q, "method", in->quant_method ? json_string(in->quant_method)
                                                      : json_null());
    json_object_set_new(q, "imatrix", group_json(&in->imatrix));
    json_object_set_new(q, "gptq", group_json(&in->gptq));
    json_object_set_new(q, "target", group_json(&in->target));
    json_object_set_new(s, "quantization", q);
    return s;
}

/* A JSON value in one line ("none" for null). */
static void print_json_short(const json_t *v)
{
    if (json_is_null(v) || !v) {
        printf("none");
        return;
    }
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(10));
    printf("%s", t ? t : "?");
    free(t);
}

/* An object's members as "k v, k v" (pieces of keys_under). */
static void print_members(const json_t *o)
{
    const char *key;
    json_t *v;
    int first = 1;
    json_object_foreach((json_t *)o, key, v) {
        printf("%s%s ", first ? "" : ", ", key);
        print_json_short(v);
        first = 0;
    }
}

static void summary_text(const llmpack_info_result *in)
{
    json_t *s = summary_json(in);
    const char *from = json_string_value(json_object_get(s, "type_from"));
    printf("type:         %s (%s)\n", json_string_value(json_object_get(s, "type")),
           !strcmp(from, "recipe")      ? "the recipe quantize recorded"
           : !strcmp(from, "file_type") ? "from general.file_type"
                                        : "the type holding the most bytes");
    if (json_is_true(json_object_get(s, "tied_output")))
        printf("output:       tied (the token embedding is the output matrix)\n");
    else
        printf("output:       own matrix output.weight (%s)\n",
               json_string_value(json_object_get(s, "output_type")));
    printf("context:      ");
    print_json_short(json_object_get(s, "context_length"));
    json_t *rope = json_object_get(s, "rope");
    printf(" tokens\nrope:         freq base ");
    print_json_short(json_object_get(rope, "freq_base"));
    json_t *sc = json_object_get(rope, "scaling");
    printf(", scaling ");
    if (json_is_object(sc)) print_members(sc);
    else printf("none");
    printf("\nspecial:      ");
    const char *key;
    json_t *v;
    int first = 1;
    json_object_foreach(json_object_get(s, "special_tokens"), key, v) {
        printf("%s%s ", first ? "" : ", ", key);
        if (json_is_null(v)) {
            printf("none");
        } else {
            printf("%" JSON_INTEGER_FORMAT " ", json_integer_value(json_object_get(v, "id")));
            print_json_short(json_object_get(v, "piece"));
        }
        first = 0;
    }
    json_t *ct = json_object_get(s, "chat_template");
    if (json_is_true(json_object_get(ct, "present")))
        printf("\nchat template: yes (%" JSON_INTEGER_FORMAT " bytes)\n",
               json_integer_value(json_object_get(ct, "bytes")));
    else
        printf("\nchat template: no\n");
    json_t *q = json_object_get(s, "quantization");
    if (!json_is_null(json_object_get(q, "method"))) {
        printf("quantized:    method %s", json_string_value(json_object_get(q, "method")));
        if (json_is_string(json_object_get(q, "recipe")))
            printf(", recipe %s%s", json_string_value(json_object_get(q, "recipe")),
                   json_is_true(json_object_get(q, "pure")) ? " (pure)" : "");
        static const char *const parts[] = {"imatrix", "gptq", "target"};
        for (size_t i = 0; i < 3; i++) {
            json_t *p = json_object_get(q, parts[i]);
            if (!json_is_object(p)) continue;
            printf("; %s: ", parts[i]);
            print_members(p);
        }
        printf("\n");
    } else if (json_is_object(json_object_get(q, "imatrix"))) {
        printf("quantized:    imatrix: ");
        print_members(json_object_get(q, "imatrix"));
        printf("\n");
    } else {
        printf("quantized:    no record of how (not made by llmpack quantize)\n");
    }
    json_decref(s);
}

static json_t *info_json(const llmpack_info_result *in)
{
    const lpk_reader *r = in->r;
    const lpk_meta *m = lpk_reader_meta(r);
    json_t *meta = json_object();
    for (size_t i = 0; i < lpk_meta_count(m); i++) {
        const lpk_kv *kv = lpk_meta_at(m, i);
        json_object_set_new(meta, kv->key, json_kv(kv));
    }
    json_t *tensors = json_array();
    for (size_t i = 0; i < lpk_reader_n_tensors(r); i++) {
        const lpk_tensor *x = lpk_reader_tensor(r, i);
        json_t *shape = json_array();
        for (int d = 0; d < x->n_dims; d++) json_array_append_new(shape, json_integer(x->dims[d]));
        char hex[17];
        snprintf(hex, sizeof hex, "%016" PRIx64, x->xxh3);
        json_array_append_new(
            tensors, json_pack("{s:s, s:s, s:o, s:o, s:o, s:o}", "name", x->name, "type",
                               type_name(x->type), "shape", shape, "offset", json_u64(x->offset),
                               "size", json_u64(x->size), "xxh3",
                               x->has_xxh3 ? json_string(hex) : json_null()));
    }
    json_t *counts = json_object();
    for (int ty = 0; ty < LPK_TYPE_COUNT; ty++)
        if (in->type_count[ty])
            json_object_set_new(counts, type_name(ty), json_u64(in->type_count[ty]));
    return json_pack("{s:s, s:s, s:s, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:f, s:o}", "file",
                     lpk_reader_path(r), "kind", kind_name(in), "checksums",
                     checksums(in->checksums), "format_version", (int)in->version,
                     "metadata_compressed", json_boolean(in->metadata_compressed), "metadata",
                     meta, "tensors", tensors, "tensor_count", json_u64(in->n_tensors),
                     "type_counts", counts, "n_elements", json_u64(in->desc.n_elements),
                     "file_size", json_u64(in->desc.file_size), "bits_per_weight", in->desc.bpw,
                     "summary", summary_json(in));
}

static void print_key(const lpk_meta *m, const char *key, const char *label)
{
    const lpk_kv *kv = lpk_meta_find(m, key);
    if (!kv) return;
    printf("  %-22s ", label);
    print_value(kv);
    printf("\n");
}

static void print_prefix(const lpk_meta *m, const char *prefix, const char *const *skip)
{
    size_t pl = strlen(prefix);
    for (size_t i = 0; i < lpk_meta_count(m); i++) {
        const lpk_kv *kv = lpk_meta_at(m, i);
        if (strncmp(kv->key, prefix, pl) != 0) continue;
        int skipped = 0;
        for (const char *const *s = skip; s && *s; s++) skipped |= !strcmp(kv->key, *s);
        if (skipped) continue;
        printf("  %-40s ", kv->key);
        print_value(kv);
        printf("\n");
    }
}

static void info_text(const llmpack_info_result *in, int list_tensors)
{
    const lpk_reader *r = in->r;
    const lpk_meta *m = lpk_reader_meta(r);
    uint64_t fs = in->desc.file_size;
    printf("file:         %s\n", lpk_reader_path(r));
    printf("format:       %s v%u%s\n", kind_name(in), in->version,
           in->metadata_compressed ? " (metadata zstd-compressed)" : "");
    printf("size:         %" PRIu64 " bytes (%.2f MiB)\n", fs, (double)fs / 1048576.0);
    printf("checksums:    %s\n", in->checksums == LLMPACK_SUMS_NONE
                                     ? "none (GGUF carries no checksums: corruption cannot be "
                                       "detected)"
                                 : in->checksums == LLMPACK_SUMS_SKIPPED
                                     ? "xxh3 (not verified: --no-verify-checksums)"
                                     : "xxh3 (header, metadata and directory verified; "
                                       "'llmpack check' verifies the tensors)");
    printf("architecture: %s%s%s\n", in->arch ? in->arch : "(unknown)",
           in->name ? ", name " : "", in->name ? in->name : "");
    printf("parameters:   %" PRIu64 " in %zu tensors, %.3f bits per weight\n",
           in->desc.n_elements, in->n_tensors, in->desc.bpw);
    printf("types:       ");
    for (int ty = 0; ty < LPK_TYPE_COUNT; ty++)
        if (in->type_count[ty]) printf(" %s: %" PRIu64, type_name(ty), in->type_count[ty]);
    printf("\n");
    summary_text(in);

    const char *prefix = in->arch_prefix;
    printf("hyperparameters:\n");
    print_prefix(m, prefix, NULL);

    printf("tokenizer:\n");
    print_key(m, "tokenizer.ggml.model", "model");
    print_key(m, "tokenizer.ggml.pre", "pre-tokenizer");
    const lpk_kv *toks = lpk_meta_find(m, "tokenizer.ggml.tokens");
    if (toks && toks->type == LPK_V_ARR) printf("  %-22s %" PRIu64 "\n", "vocab size", toks->count);
    const lpk_kv *merges = lpk_meta_find(m, "tokenizer.ggml.merges");
    if (merges && merges->type == LPK_V_ARR) printf("  %-22s %" PRIu64 "\n", "merges", merges->count);
    for (size_t i = 0; i < 2; i++) { /* bos, eos */
        const llmpack_special_token *t = &in->special[i];
        if (!t->has) continue;
        printf("  %-22s %u", t->name, t->id);
        if (t->has_piece) {
            lpk_str s = t->piece;
            json_t *js = json_bytes(s.p, s.n > 40 ? 40 : s.n);
            char *d = json_dumps(js, JSON_ENCODE_ANY);
            printf(" %s", d ? d : "");
            free(d);
            json_decref(js);
        }
        printf("\n");
    }
    print_key(m, "tokenizer.ggml.add_bos_token", "add bos");
    print_key(m, "tokenizer.ggml.add_eos_token", "add eos");

    printf("provenance:\n");
    print_prefix(m, "source.", NULL);
    print_prefix(m, "quant.", NULL);

    static const char *const shown[] = {"general.architecture", "general.name", NULL};
    int header = 0;
    for (size_t i = 0; i < lpk_meta_count(m); i++) {
        const lpk_kv *kv = lpk_meta_at(m, i);
        if (!strncmp(kv->key, prefix, strlen(prefix)) || !strncmp(kv->key, "tokenizer.", 10) ||
            !strncmp(kv->key, "source.", 7) || !strncmp(kv->key, "quant.", 6) ||
            !strcmp(kv->key, shown[0]) || !strcmp(kv->key, shown[1]))
            continue;
        if (!header) printf("other metadata:\n");
        header = 1;
        printf("  %-40s ", kv->key);
        print_value(kv);
        printf("\n");
    }

    if (!list_tensors) return;
    printf("tensors:\n");
    for (size_t i = 0; i < lpk_reader_n_tensors(r); i++) {
        const lpk_tensor *x = lpk_reader_tensor(r, i);
        char shape[128];
        size_t k = 0;
        shape[k++] = '[';
        for (int d = 0; d < x->n_dims; d++)
            k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%lld", d ? ", " : "",
                                  (long long)x->dims[d]);
        snprintf(shape + k, sizeof shape - k, "]");
        printf("  %-32s %-5s %-22s offset %-12" PRIu64 " size %-12" PRIu64, x->name,
               type_name(x->type), shape, x->offset, x->size);
        if (x->has_xxh3) printf(" xxh3 %016" PRIx64, x->xxh3);
        printf("\n");
    }
}

int cmd_info(int argc, char **argv)
{
    enum { O_JSON = 256, O_TENSORS };
    static const struct option opts[] = {{"json", no_argument, NULL, O_JSON},
                                         {"tensors", no_argument, NULL, O_TENSORS},
                                         {"model", required_argument, NULL, 'm'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int json = 0, list = 0, c;
    const char *path = NULL;
    cli_getopt_start();
    while ((c = cli_getopt("info", argc, argv, "hm:", opts)) != -1) {
        switch (c) {
        case O_JSON: json = 1; break;
        case O_TENSORS: list = 1; break;
        case 'm':
            if (cli_set_operand("info", &path, optarg)) return CLI_EXIT_USAGE;
            break;
        case 'h': info_help(stdout); return CLI_EXIT_OK;
        default: return CLI_EXIT_USAGE;
        }
    }
    if (cli_operands("info", argc, argv, &path)) return CLI_EXIT_USAGE;
    if (!path) return cli_usage_error("info", "no FILE given");
    if ((c = cli_inputs_exist("info", &path, 1))) return c;
    cli_job cj;
    if (cli_job_init(&cj, "info", 1)) {
        fprintf(stderr, "llmpack info: out of memory\n");
        return CLI_EXIT_RUNTIME;
    }
    llmpack_info_opts o = {.path = path};
    llmpack_info_result in;
    int rc = CLI_EXIT_OK;
    if (llmpack_info(cj.j, &o, &in)) rc = cli_job_fail(&cj);
    else if (json) cli_json_print(info_json(&in));
    else info_text(&in, list);
    llmpack_info_result_free(&in);
    cli_job_free(&cj);
    return rc;
}
