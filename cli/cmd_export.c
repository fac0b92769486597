/* llmpack export: write a container as GGUF v3 for llama.cpp (or a GGUF as a
 * container): arguments and the report over the export job (llmpack_export). */
#include "cli.h"

#include <getopt.h>
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
    if (fmt == LLMPACK_FMT_LPK && (flags & LPK_GGUF_STRIP))
        return cli_usage_error("export", "--strip applies to GGUF outputs only");

    cli_job cj;
    if (cli_job_init(&cj, "export", quiet || json)) {
        fprintf(stderr, "llmpack export: out of memory\n");
        return CLI_EXIT_RUNTIME;
    }
    llmpack_export_opts eo = {.in = in, .out = out, .format = fmt, .set_name = set_name,
                              .strip = (flags & LPK_GGUF_STRIP) != 0, .force = force};
    llmpack_export_result s;
    double t0 = cli_now();
    if (llmpack_export(cj.j, &eo, &s)) {
        int ec = cli_job_fail(&cj);
        cli_job_free(&cj);
        return ec;
    }
    cli_job_free(&cj);
    double secs = cli_now() - t0;
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "input", json_string(in));
        json_object_set_new(o, "output", json_string(out));
        json_object_set_new(o, "format", json_string(fmt == LLMPACK_FMT_GGUF ? "gguf" : "lpk"));
        if (fmt == LLMPACK_FMT_GGUF) json_object_set_new(o, "gguf_version", json_integer(3));
        json_object_set_new(o, "tensors", json_integer((json_int_t)s.n_tensors));
        json_object_set_new(o, "tensors_added", json_integer((json_int_t)s.n_added));
        json_object_set_new(o, "keys", json_integer((json_int_t)s.n_keys));
        json_object_set_new(o, "keys_dropped", json_integer((json_int_t)s.n_dropped));
        json_object_set_new(o, "data_bytes", json_integer((json_int_t)s.data_bytes));
        json_object_set_new(o, "file_bytes", json_integer((json_int_t)s.file_size));
        json_object_set_new(o, "seconds", json_real(secs));
        cli_json_print(o);
    } else if (fmt == LLMPACK_FMT_GGUF) {
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
