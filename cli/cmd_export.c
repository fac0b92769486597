/* llmpack export: write a container as GGUF v3 for llama.cpp. The mapping is
 * format/'s (lpk_gguf_plan_make); this file streams and reports. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: llmpack export IN -o OUT.gguf [options]\n\n"
            "Writes the LLaMA model in IN (.lpk, or GGUF) as a GGUF v3 file that llama.cpp\n"
            "loads: GGUF key names and types, GGML tensor types and dims, 32-byte alignment.\n"
            "Every tensor's checksum is verified on the way. See docs/GGUF.md.\n\n"
            "options:\n"
            "  -o, --output FILE  the GGUF file to write (written to a temporary file\n"
            "                     beside it and renamed into place when complete)\n"
            "  --force            replace FILE if it exists\n"
            "  --strip            drop llmpack-only keys (source.*, quant.*, ...)\n"
            "  --quiet            no progress display\n"
            "  --json             print a JSON summary\n"
            "  -h, --help         this help\n");
}

/* "dir/llama2-20m.q4_k.lpk" -> "llama2-20m.q4_k" (general.name when the container has none). */
static char *name_from_path(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    char *n = strdup(b);
    if (!n) return NULL;
    char *dot = strrchr(n, '.');
    if (dot && dot != n) *dot = '\0';
    return n;
}

static int write_all(const lpk_reader *r, const lpk_gguf_plan *p, lpk_writer *w, int quiet,
                     uint64_t *bytes, lpk_error *err)
{
    uint64_t total = 0;
    for (size_t i = 0; i < p->n_tensors; i++) total += p->decls[i].size;
    cli_progress pr;
    cli_progress_start(&pr, "export", "B", total, quiet);
    int st = LPK_OK;
    uint64_t done = 0;
    for (size_t i = 0; i < p->n_tensors && !st; i++) {
        const lpk_tensor *d = &p->decls[i];
        const void *data = p->extra[i];
        if (p->src[i] >= 0) {
            size_t si = (size_t)p->src[i];
            if ((st = lpk_reader_tensor_data(r, si, &data, err))) break;
        }
        if ((st = lpk_writer_tensor_begin(w, d->name, err))) break;
        /* in slices, so progress moves and the mapping can be released as we go */
        const size_t slice = 64u << 20;
        for (uint64_t off = 0; off < d->size && !st; off += slice) {
            size_t n = d->size - off < slice ? (size_t)(d->size - off) : slice;
            st = lpk_writer_tensor_write(w, (const uint8_t *)data + off, n, err);
            done += n;
            cli_progress_update(&pr, done, d->name);
        }
        if (!st) st = lpk_writer_tensor_end(w, err);
        if (p->src[i] >= 0) lpk_reader_release_tensor(r, (size_t)p->src[i]);
    }
    cli_progress_end(&pr);
    *bytes = done;
    return st;
}

int cmd_export(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    int force = 0, json = 0, quiet = 0;
    unsigned flags = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return CLI_EXIT_OK;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (++i >= argc) return cli_usage_error("export", "%s needs a file name", a);
            out = argv[i];
        } else if (!strcmp(a, "--force")) {
            force = 1;
        } else if (!strcmp(a, "--strip")) {
            flags |= LPK_GGUF_STRIP;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("export", "unknown option '%s'", a);
        } else if (!in) {
            in = a;
        } else {
            return cli_usage_error("export", "more than one input ('%s', '%s')", in, a);
        }
    }
    if (!in) return cli_usage_error("export", "no input container given");
    if (!out) return cli_usage_error("export", "no output given (-o OUT.gguf)");

    lpk_error err = {0};
    lpk_reader *r = NULL;
    lpk_gguf_plan plan = {0};
    lpk_writer *w = NULL;
    uint64_t bytes = 0;
    double t0 = cli_now();
    char *name = name_from_path(in);
    int st = cli_open_input(in, lpk_reader_default_flags(), &r, &err);
    if (!st) st = lpk_gguf_plan_make(r, name, flags, &plan, &err);
    if (!st)
        st = lpk_writer_open(out, plan.meta, plan.decls, plan.n_tensors,
                             LPK_WRITE_GGUF | (force ? LPK_WRITE_FORCE : 0), &w, &err);
    if (!st) st = write_all(r, &plan, w, quiet || json, &bytes, &err);
    if (!st) {
        st = lpk_writer_finish(w, &err); /* frees w */
        w = NULL;
    }
    lpk_writer_abort(w);
    free(name);
    if (st) {
        cli_print_error("export", &err);
        lpk_gguf_plan_free(&plan);
        lpk_reader_close(r);
        return cli_exit_for(st);
    }
    double secs = cli_now() - t0;
    size_t n_added = 0;
    for (size_t i = 0; i < plan.n_tensors; i++) n_added += plan.src[i] < 0;
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "input", json_string(in));
        json_object_set_new(o, "output", json_string(out));
        json_object_set_new(o, "gguf_version", json_integer(3));
        json_object_set_new(o, "tensors", json_integer((json_int_t)plan.n_tensors));
        json_object_set_new(o, "tensors_added", json_integer((json_int_t)n_added));
        json_object_set_new(o, "keys", json_integer((json_int_t)lpk_meta_count(plan.meta)));
        json_object_set_new(o, "keys_dropped", json_integer((json_int_t)plan.n_dropped));
        json_object_set_new(o, "data_bytes", json_integer((json_int_t)bytes));
        json_object_set_new(o, "seconds", json_real(secs));
        cli_json_print(o);
    } else {
        printf("wrote %s: GGUF v3, %zu tensors (%zu added), %zu keys (%zu dropped), "
               "%.1f MiB of tensor data in %.2f s\n",
               out, plan.n_tensors, n_added, lpk_meta_count(plan.meta), plan.n_dropped,
               (double)bytes / (1024.0 * 1024.0), secs);
    }
    lpk_gguf_plan_free(&plan);
    lpk_reader_close(r);
    return CLI_EXIT_OK;
}
