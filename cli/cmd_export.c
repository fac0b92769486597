/* llmpack export: write a container as GGUF v3 for llama.cpp (or a GGUF as a
 * container). The mapping is format/'s (lpk_gguf_plan_make); this file
 * streams and reports. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: llmpack export IN -o OUT.gguf [options]\n"
            "       llmpack export IN.gguf -o OUT.lpk [options]\n\n"
            "Writes the LLaMA model in IN (.lpk, or GGUF) as a GGUF v3 file that llama.cpp\n"
            "loads: GGUF key names and types, GGML tensor types and dims, 32-byte alignment.\n"
            "Every tensor's checksum is verified on the way. See docs/GGUF.md.\n"
            "OUT's name says the format: .gguf writes GGUF; .lpk writes a container with\n"
            "IN's keys and tensors as they are (e.g. a GGUF from elsewhere, to get\n"
            "checksums); any other name needs --format.\n\n"
            "options:\n"
            "  -o, --output FILE  the file to write (written to a temporary file beside it\n"
            "                     and renamed into place when complete)\n"
            "  --format F         gguf | lpk, for an OUT named neither .gguf nor .lpk\n"
            "  --force            replace FILE if it exists\n"
            "  --strip            drop llmpack-only keys (source.*, quant.*, ...; GGUF only)\n"
            "  --name NAME        general.name of OUT (default: IN's; a GGUF output of an\n"
            "                     IN without one: IN's file name)\n"
            "  -q, --quiet        no progress display\n"
            "  --json             print a JSON summary\n"
            "  -m, --model IN     IN as an option\n"
            "  -h, --help         this help\n"
            "Options take their value as --opt VALUE or --opt=VALUE.\n\n"
            "examples:\n"
            "  llmpack export model.q4_k_m.lpk -o model-Q4_K_M.gguf\n"
            "  llmpack export downloaded.gguf -o downloaded.lpk\n");
}

/* Writes n tensors: decls[i]'s bytes from the reader's tensor src[i], or
 * extra[i] when src[i] < 0. */
static int write_all(const lpk_reader *r, const lpk_tensor *decls, const long *src,
                     void *const *extra, size_t n, lpk_writer *w, int quiet, uint64_t *bytes,
                     lpk_error *err)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) total += decls[i].size;
    cli_progress pr;
    cli_progress_start(&pr, "export", "B", total, quiet);
    int st = LPK_OK;
    uint64_t done = 0;
    for (size_t i = 0; i < n && !st; i++) {
        const lpk_tensor *d = &decls[i];
        const void *data = extra ? extra[i] : NULL;
        if (src[i] >= 0) {
            size_t si = (size_t)src[i];
            if ((st = lpk_reader_tensor_data(r, si, &data, err))) break;
        }
        if ((st = lpk_writer_tensor_begin(w, d->name, err))) break;
        /* in slices, so progress moves and the mapping can be released as we go */
        const size_t slice = 64u << 20;
        for (uint64_t off = 0; off < d->size && !st; off += slice) {
            size_t k = d->size - off < slice ? (size_t)(d->size - off) : slice;
            st = lpk_writer_tensor_write(w, (const uint8_t *)data + off, k, err);
            done += k;
            cli_progress_update(&pr, done, d->name);
        }
        if (!st) st = lpk_writer_tensor_end(w, err);
        if (src[i] >= 0) lpk_reader_release_tensor(r, (size_t)src[i]);
    }
    cli_progress_end(&pr);
    *bytes = done;
    return st;
}

int cli_export_gguf(const char *in, const char *out, const char *name, const char *set_name,
                    unsigned gguf_flags,
                    unsigned write_flags, int quiet, uint64_t max_size, cli_export_stats *s,
                    lpk_error *err)
{
    lpk_reader *r = NULL;
    lpk_gguf_plan plan = {0};
    lpk_writer *w = NULL;
    memset(s, 0, sizeof *s);
    int st = cli_open_input(in, lpk_reader_default_flags(), &r, err);
    if (!st) st = lpk_gguf_plan_make(r, name, gguf_flags, &plan, err);
    if (!st && set_name && lpk_meta_set_str(plan.meta, "general.name", set_name))
        st = lpk_err(err, LPK_ENOMEM, "out of memory");
    if (!st)
        st = lpk_writer_open(out, plan.meta, plan.decls, plan.n_tensors,
                             LPK_WRITE_GGUF | (write_flags & LPK_WRITE_FORCE), &w, err);
    if (!st) s->file_size = lpk_writer_file_size(w);
    if (!st && max_size && s->file_size > max_size)
        st = lpk_err(err, LPK_ENOSPC, "%s: the GGUF would be %llu bytes, over the limit of %llu",
                     out, (unsigned long long)s->file_size, (unsigned long long)max_size);
    if (!st)
        st = write_all(r, plan.decls, plan.src, plan.extra, plan.n_tensors, w, quiet,
                       &s->data_bytes, err);
    if (!st) {
        st = lpk_writer_finish(w, err); /* frees w */
        w = NULL;
    }
    lpk_writer_abort(w);
    s->n_tensors = plan.n_tensors;
    for (size_t i = 0; i < plan.n_tensors; i++) s->n_added += plan.src[i] < 0;
    s->n_keys = plan.meta ? lpk_meta_count(plan.meta) : 0;
    s->n_dropped = plan.n_dropped;
    lpk_gguf_plan_free(&plan);
    lpk_reader_close(r);
    return st;
}

/* export -o X.lpk: IN's keys and tensors as they are, into a container
 * (general.name set to set_name unless NULL). */
static int copy_container(const char *in, const char *out, const char *set_name,
                          unsigned write_flags, int quiet, cli_export_stats *s, lpk_error *err)
{
    lpk_reader *r = NULL;
    lpk_writer *w = NULL;
    lpk_meta *meta = NULL;
    lpk_tensor *decls = NULL;
    long *src = NULL;
    memset(s, 0, sizeof *s);
    int st = cli_open_input(in, lpk_reader_default_flags(), &r, err);
    size_t n = st ? 0 : lpk_reader_n_tensors(r);
    if (!st) {
        decls = calloc(n ? n : 1, sizeof *decls);
        src = calloc(n ? n : 1, sizeof *src);
        if (!decls || !src) st = lpk_err(err, LPK_ENOMEM, "out of memory");
    }
    for (size_t i = 0; !st && i < n; i++) {
        decls[i] = *lpk_reader_tensor(r, i);
        decls[i].data = NULL;
        src[i] = (long)i;
    }
    if (!st && set_name) {
        meta = lpk_meta_new();
        if (!meta || lpk_meta_copy(meta, lpk_reader_meta(r)) ||
            lpk_meta_set_str(meta, "general.name", set_name))
            st = lpk_err(err, LPK_ENOMEM, "out of memory");
    }
    if (!st)
        st = lpk_writer_open(out, meta ? meta : lpk_reader_meta(r), decls, n,
                             write_flags & LPK_WRITE_FORCE, &w, err);
    if (!st) s->file_size = lpk_writer_file_size(w);
    if (!st) st = write_all(r, decls, src, NULL, n, w, quiet, &s->data_bytes, err);
    if (!st) {
        st = lpk_writer_finish(w, err); /* frees w */
        w = NULL;
    }
    lpk_writer_abort(w);
    s->n_tensors = n;
    s->n_keys = meta ? lpk_meta_count(meta) : r ? lpk_meta_count(lpk_reader_meta(r)) : 0;
    lpk_meta_free(meta);
    free(decls);
    free(src);
    lpk_reader_close(r);
    return st;
}

int cmd_export(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *format = NULL, *set_name = NULL;
    int force = 0, json = 0, quiet = 0;
    unsigned flags = 0;
    enum { O_FORMAT = 256, O_FORCE, O_STRIP, O_JSON, O_NAME };
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},        {"output", required_argument, NULL, 'o'},
        {"model", required_argument, NULL, 'm'}, {"quiet", no_argument, NULL, 'q'},
        {"format", required_argument, NULL, O_FORMAT},
        {"force", no_argument, NULL, O_FORCE},   {"strip", no_argument, NULL, O_STRIP},
        {"json", no_argument, NULL, O_JSON},     {"name", required_argument, NULL, O_NAME},
        {NULL, 0, NULL, 0}};
    int c;
    cli_getopt_start();
    while ((c = cli_getopt("export", argc, argv, "ho:m:q", opts)) != -1) {
        switch (c) {
        case 'h': usage(stdout); return CLI_EXIT_OK;
        case 'o': out = optarg; break;
        case 'm':
            if (cli_set_operand("export", &in, optarg)) return CLI_EXIT_USAGE;
            break;
        case 'q': quiet = 1; break;
        case O_FORMAT: format = optarg; break;
        case O_FORCE: force = 1; break;
        case O_STRIP: flags |= LPK_GGUF_STRIP; break;
        case O_JSON: json = 1; break;
        case O_NAME:
            if (!*optarg) return cli_usage_error("export", "--name wants a non-empty name");
            set_name = optarg;
            break;
        default: return CLI_EXIT_USAGE;
        }
    }
    if (cli_operands("export", argc, argv, &in)) return CLI_EXIT_USAGE;
    if (!in) return cli_usage_error("export", "no input container given");
    if (!out) return cli_usage_error("export", "no output given (-o OUT.gguf)");
    int fmt = 0, rc = cli_output_format("export", out, format, &fmt);
    if (!rc) rc = cli_inputs_exist("export", &in, 1);
    if (rc) return rc;
    if (fmt == CLI_FMT_LPK && (flags & LPK_GGUF_STRIP))
        return cli_usage_error("export", "--strip applies to GGUF outputs only");

    lpk_error err = {0};
    cli_export_stats s;
    double t0 = cli_now();
    unsigned wf = force ? LPK_WRITE_FORCE : 0;
    int st;
    if (fmt == CLI_FMT_GGUF) {
        char *name = cli_name_from_path(in);
        st = cli_export_gguf(in, out, name, set_name, flags, wf, quiet || json, 0, &s, &err);
        free(name);
    } else {
        st = copy_container(in, out, set_name, wf, quiet || json, &s, &err);
    }
    if (st) {
        cli_print_error("export", &err);
        return cli_exit_for(st);
    }
    double secs = cli_now() - t0;
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "input", json_string(in));
        json_object_set_new(o, "output", json_string(out));
        json_object_set_new(o, "format", json_string(fmt == CLI_FMT_GGUF ? "gguf" : "lpk"));
        if (fmt == CLI_FMT_GGUF) json_object_set_new(o, "gguf_version", json_integer(3));
        json_object_set_new(o, "tensors", json_integer((json_int_t)s.n_tensors));
        json_object_set_new(o, "tensors_added", json_integer((json_int_t)s.n_added));
        json_object_set_new(o, "keys", json_integer((json_int_t)s.n_keys));
        json_object_set_new(o, "keys_dropped", json_integer((json_int_t)s.n_dropped));
        json_object_set_new(o, "data_bytes", json_integer((json_int_t)s.data_bytes));
        json_object_set_new(o, "file_bytes", json_integer((json_int_t)s.file_size));
        json_object_set_new(o, "seconds", json_real(secs));
        cli_json_print(o);
    } else if (fmt == CLI_FMT_GGUF) {
        printf("wrote %s: GGUF v3, %zu tensors (%zu added), %zu keys (%zu dropped), "
               "%.1f MiB of tensor data in %.2f s\n",
               out, s.n_tensors, s.n_added, s.n_keys, s.n_dropped,
               (double)s.data_bytes / (1024.0 * 1024.0), secs);
    } else {
        printf("wrote %s: .lpk container, %zu tensors, %zu keys, %.1f MiB of tensor data in "
               "%.2f s\n",
               out, s.n_tensors, s.n_keys, (double)s.data_bytes / (1024.0 * 1024.0), secs);
    }
    return CLI_EXIT_OK;
}
