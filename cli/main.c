/* llmpack: one binary over convert/, quant/, format/, verify/ and calib/. */
#include "cli.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} commands[] = {
    {"convert", cmd_convert, "read a Meta / Hugging Face / llama2.c checkpoint into a .lpk or GGUF"},
    {"quantize", cmd_quantize, "quantize a container to q8_0, q4_0, q4_k, ... (recipes)"},
    {"calibrate", cmd_calibrate, "importance matrix (llama.cpp's imatrix) from calibration text"},
    {"verify", cmd_verify, "perplexity, KL divergence and top-1 agreement vs a reference"},
    {"info", cmd_info, "describe a container (.lpk or GGUF)"},
    {"check", cmd_check, "verify every checksum and structural rule of a container"},
    {"export", cmd_export, "write a container as GGUF for llama.cpp (or a GGUF as a .lpk)"},
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
    fprintf(f, "\nEvery command takes --json for machine-readable output, and\n"
               "--no-verify-checksums to skip checksum verification of .lpk inputs (faster;\n"
               "structure and NaN/Inf are still checked). Killed by a signal (INT, TERM, HUP,\n"
               "QUIT, ...), llmpack removes its temporary files and exits 1; on a closed\n"
               "pipe it stops quietly (exit 1).\n\n"
               "exit codes:\n"
               "  0  success\n"
               "  1  runtime failure (an input that does not exist or cannot be read, I/O error,\n"
               "     out of space or memory, interrupted)\n"
               "  2  usage error (bad command line: unknown option, missing value or required\n"
               "     option, an output named neither .lpk nor .gguf without --format)\n"
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

static void on_notice(const char *msg) { fprintf(stderr, "llmpack: %s\n", msg); }

/* Runs after format/'s cleanup hooks (they chain to the disposition they
 * found, this one): the documented exit code instead of death by signal. */
static void on_fatal_signal(int sig)
{
    static const char msg[] = "llmpack: interrupted by a signal\n";
    lpk_cleanup_run();
    if (sig != SIGPIPE) {
        ssize_t k = write(2, msg, sizeof msg - 1);
        (void)k;
    }
    _exit(CLI_EXIT_RUNTIME);
}

static void install_signal_exit(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal_signal;
    sigfillset(&sa.sa_mask);
    for (int sig = 1; sig < 32; sig++) {
        if (!lpk_is_term_signal(sig)) continue;
        struct sigaction cur;
        if (sigaction(sig, NULL, &cur) == 0 && cur.sa_handler != SIG_IGN) sigaction(sig, &sa, NULL);
    }
}

/* Global options any command takes: removed from argv before the command sees it. */
static int global_options(int argc, char **argv)
{
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 1 && !strcmp(argv[i], "--no-verify-checksums")) {
            lpk_reader_set_default_flags(lpk_reader_default_flags() | LPK_OPEN_NO_VERIFY);
            continue;
        }
        argv[n++] = argv[i];
    }
    argv[n] = NULL;
    return n;
}

int main(int argc, char **argv)
{
    prefer_passive_openmp(argv);
    install_signal_exit();
    lpk_set_notice(on_notice);
    argc = global_options(argc, argv);
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("llmpack %s (simd: %s)\n", lpk_version(), lpk_cpu_describe());
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "llmpack: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return CLI_EXIT_USAGE;
}
