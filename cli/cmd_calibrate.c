/* llmpack calibrate: an importance matrix from calibration text; arguments
 * and the report over the calibrate job (llmpack_calibrate). */
#include "cli.h"

#include <getopt.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>


static void usage(FILE *f)
{
    fprintf(f,
            "usage: llmpack calibrate MODEL --text CALIB.txt -o FILE [options]\n\n"
            "Runs the fp32 reference forward pass over the text (llama-imatrix's protocol:\n"
            "BOS first, chunks of --ctx tokens whose first token is BOS) and writes, for every\n"
            "attention and feed-forward matrix and the output matrix, the per-column sum of\n"
            "squared inputs and their count (llama-imatrix's entries), and for the matrices\n"
            "whose rows are a multiple of 32 long the 32x32 diagonal blocks of the inputs'\n"
            "second moments (entries NAME.cov32, 32 values per column, for the quantizers\n"
            "that score a block's error with them; llama-quantize ignores them; --no-cov\n"
            "leaves them out; docs/QUANT.md). MODEL is a .lpk or GGUF with f32/f16/bf16\n"
            "weights, or a checkpoint convert reads (a Hugging Face or Meta folder, an\n"
            "archive), converted in memory first (docs/VERIFY.md). FILE ending in .gguf gets newer llama.cpp's GGUF layout, any other\n"
            "name llama.cpp b4748's legacy layout (both read by quantize --imatrix).\n\n"
            "options:\n"
            "  -f, --text FILE        calibration text\n"
            "  -o, --output FILE      importance matrix to write\n"
            "  -c, --ctx N            tokens per chunk (default 512)\n"
            "  --chunks N             only the first N chunks (default: all)\n"
            "  --no-output            leave out the output matrix (as llama-imatrix does)\n"
            "  --no-cov               no NAME.cov32 blocks: llama-imatrix's entries only\n"
            "  -t, --threads N        worker threads (default, or 0: all cores)\n"
            "  -m, --model MODEL      MODEL as an option\n"
            "  --force                replace FILE if it exists\n"
            "  --json                 machine-readable report on stdout\n"
            "  -q, --quiet            no progress\n"
            "  -h, --help             this help\n"
            "Options take their value as --opt VALUE or --opt=VALUE.\n\n"
            "example (llama-imatrix -m MODEL -f TEXT -o FILE -c 512):\n"
            "  llmpack calibrate model.f16.lpk -f wiki.train.raw -o model.imatrix -c 512\n");
}

int cmd_calibrate(int argc, char **argv)
{
    const char *model = NULL, *text = NULL, *out = NULL;
    long ctx = 512, chunks = 0, threads = 0;
    int force = 0, json = 0, quiet = 0, no_output = 0, no_cov = 0;
    enum { O_CHUNKS = 256, O_NO_OUTPUT, O_NO_COV, O_FORCE, O_JSON };
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},           {"output", required_argument, NULL, 'o'},
        {"model", required_argument, NULL, 'm'},    {"text", required_argument, NULL, 'f'},
        {"ctx", required_argument, NULL, 'c'},      {"chunks", required_argument, NULL, O_CHUNKS},
        {"threads", required_argument, NULL, 't'},  {"quiet", no_argument, NULL, 'q'},
        {"no-output", no_argument, NULL, O_NO_OUTPUT}, {"no-cov", no_argument, NULL, O_NO_COV},
        {"force", no_argument, NULL, O_FORCE},      {"json", no_argument, NULL, O_JSON},
        {NULL, 0, NULL, 0}};
    int c;
    cli_getopt_start();
    while ((c = cli_getopt("calibrate", argc, argv, "ho:m:f:c:t:q", opts)) != -1) {
        switch (c) {
        case 'h': usage(stdout); return CLI_EXIT_OK;
        case 'o': out = optarg; break;
        case 'm':
            if (cli_set_operand("calibrate", &model, optarg)) return CLI_EXIT_USAGE;
            break;
        case 'f': text = optarg; break;
        case 'c': case O_CHUNKS:
            if (c == 'c' ? cli_parse_int(optarg, 4, 1 << 20, &ctx)
                         : cli_parse_int(optarg, 1, 1L << 30, &chunks))
                return cli_usage_error("calibrate", "--%s: '%s' is not a valid value",
                                       cli_opt_name(opts, c), optarg);
            break;
        case 't':
            if (cli_parse_threads("calibrate", optarg, &threads)) return CLI_EXIT_USAGE;
            break;
        case 'q': quiet = 1; break;
        case O_NO_OUTPUT: no_output = 1; break;
        case O_NO_COV: no_cov = 1; break;
        case O_FORCE: force = 1; break;
        case O_JSON: json = 1; break;
        default: return CLI_EXIT_USAGE;
        }
    }
    if (cli_operands("calibrate", argc, argv, &model)) return CLI_EXIT_USAGE;
    if (!model) return cli_usage_error("calibrate", "no model given");
    if (!text) return cli_usage_error("calibrate", "no --text given");
    if (!out) return cli_usage_error("calibrate", "no output given (-o FILE)");
    const char *inputs[] = {model, text};
    if ((c = cli_inputs_exist("calibrate", inputs, 2))) return c;
    if (threads > 0) omp_set_num_threads((int)threads);

    cli_job cj;
    if (cli_job_init(&cj, "calibrate", quiet || json)) {
        fprintf(stderr, "llmpack calibrate: out of memory\n");
        return CLI_EXIT_RUNTIME;
    }
    llmpack_calibrate_opts o = {.model = model, .text = text, .out = out, .ctx = (int)ctx,
                                .chunks = (int)chunks, .no_output = no_output, .no_cov = no_cov,
                                .force = force};
    llmpack_calibrate_result res;
    if (llmpack_calibrate(cj.j, &o, &res)) {
        int ec = cli_job_fail(&cj);
        cli_job_free(&cj);
        return ec;
    }
    cli_job_free(&cj);
    const lpk_imatrix *im = res.imatrix;
    double secs = res.seconds;
    uint64_t tokens = (uint64_t)im->chunks * (uint64_t)im->chunk_size;
    if (json) {
        json_t *j = json_object(), *names = json_array();
        json_object_set_new(j, "model", json_string(model));
        json_object_set_new(j, "text", json_string(text));
        json_object_set_new(j, "output", json_string(out));
        json_object_set_new(j, "format", json_string(im->format == LPK_IMATRIX_GGUF ||
                                                     strstr(out, ".gguf") ? "gguf" : "legacy"));
        json_object_set_new(j, "ctx", json_integer(im->chunk_size));
        json_object_set_new(j, "chunks", json_integer(im->chunks));
        json_object_set_new(j, "tokens", json_integer((json_int_t)tokens));
        json_object_set_new(j, "entries", json_integer((json_int_t)im->n));
        json_object_set_new(j, "cov32_entries", json_integer((json_int_t)lpk_imatrix_n_cov32(im)));
        for (size_t i = 0; i < im->n; i++) json_array_append_new(names, json_string(im->e[i].name));
        json_object_set_new(j, "tensors", names);
        char h[32];
        snprintf(h, sizeof h, "%016llx", (unsigned long long)im->hash);
        json_object_set_new(j, "hash", json_string(h));
        json_object_set_new(j, "seconds", json_real(secs));
        json_object_set_new(j, "tokens_per_second", json_real(secs > 0 ? (double)tokens / secs : 0));
        cli_json_print(j);
    } else if (!quiet) {
        printf("%s: %zu entries (%zu with cov32 blocks) from %d chunks of %d tokens (%.1f s, "
               "%.0f tokens/s), xxh3 %016llx\n", out, im->n, lpk_imatrix_n_cov32(im), im->chunks,
               im->chunk_size, secs,
               secs > 0 ? (double)tokens / secs : 0.0, (unsigned long long)im->hash);
    }
    llmpack_calibrate_result_free(&res);
    return CLI_EXIT_OK;
}
