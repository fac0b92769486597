/* llmpack: one binary over convert/, quant/, format/, verify/ and calib/. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} commands[] = {
    {"convert", cmd_convert, "read a Meta / Hugging Face / llama2.c checkpoint into a .lpk"},
    {"quantize", cmd_quantize, "quantize a container to q8_0, q4_0, q4_k, ... (recipes)"},
    {"calibrate", cmd_calibrate, "importance matrix (llama.cpp's imatrix) from calibration text"},
    {"verify", cmd_verify, "perplexity, KL divergence and top-1 agreement vs a reference"},
    {"info", cmd_info, "describe a container (.lpk or GGUF)"},
    {"check", cmd_check, "verify every checksum and structural rule of a container"},
    {"export", cmd_export, "write a container as GGUF for llama.cpp"},
    {"tokenize", cmd_tokenize, "encode text with a model's tokenizer"},
    {"generate", cmd_generate, "greedy text generation (smoke test)"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: llmpack COMMAND [options]   (llmpack COMMAND --help for details)\n\n"
               "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nEvery command takes --json for machine-readable output.\n\n"
               "exit codes:\n"
               "  0  success\n"
               "  1  runtime failure (I/O error, out of space or memory, interrupted)\n"
               "  2  usage error (bad command line)\n"
               "  3  bad input file (corrupt, truncated, unsupported, checksum mismatch,\n"
               "     NaN/Inf weights, missing tensors)\n"
               "  4  a verification limit (--max-ppl-delta, --max-ppl-ratio, --max-kld) was exceeded\n");
}

/* OpenMP workers that spin while waiting make every parallel region as slow as
 * the slowest descheduled thread when the machine has other work (a laptop, a
 * CI runner): on 2 busy cores a 2-thread verify ran 4x slower than 1 thread.
 * Passive waiting costs microseconds per region on an idle machine. libgomp
 * reads the policy before main() runs, so it is set by re-executing once; a
 * policy the user chose is kept. */
static void prefer_passive_openmp(char **argv)
{
    if (getenv("OMP_WAIT_POLICY")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc): carry on with the default policy */
}

int main(int argc, char **argv)
{
    prefer_passive_openmp(argv);
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("llmpack %s (simd: %s)\n", LPK_VERSION_STRING, lpk_cpu_describe());
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "llmpack: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return CLI_EXIT_USAGE;
}
