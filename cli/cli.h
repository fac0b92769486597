/* cli/: argument parsing, progress and printing. No format or math logic here. */
#ifndef CLI_H
#define CLI_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "../format/lpk.h"

/* Exit codes, documented in `llmpack --help` and docs/CLI.md. */
enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_RUNTIME = 1,   /* I/O failure, out of space, out of memory, interrupted */
    CLI_EXIT_USAGE = 2,     /* bad command line */
    CLI_EXIT_BADINPUT = 3,  /* anything wrong with the input file(s) */
    CLI_EXIT_LIMIT = 4      /* a verification limit was exceeded */
};

/* Commands: argv[0] is the command name. Each returns a cli_exit code. */
int cmd_info(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_export(int argc, char **argv);

/* Maps a status to an exit code: bad-input statuses (corrupt, truncated,
 * unsupported, checksum, badvalue, notfound) -> 3, invalid -> 2, others -> 1. */
int cli_exit_for(int status);
/* Opens an input container (lpk_reader_open_flags with the process default
 * flags, or `flags`); a GGUF is also checked the way verify checks it
 * (vf_model_check: hyperparameters, required tensors, shapes). On failure *r
 * is NULL. */
int cli_open_input(const char *path, unsigned flags, lpk_reader **r, lpk_error *err);
/* Prints "llmpack CMD: MESSAGE" to stderr (message from err, or its status name). */
void cli_print_error(const char *cmd, const lpk_error *err);
/* Usage error: prints the message and "try 'llmpack CMD --help'"; returns 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints a JSON value to stdout (indented, key order kept) and frees it. */
void cli_json_print(json_t *v);
/* Parses a positive integer option value; returns 0 on success. */
int cli_parse_int(const char *s, long min, long max, long *out);
int cli_parse_double(const char *s, double *out);
/* Peak resident set size of this process in bytes (VmHWM). */
uint64_t cli_peak_rss(void);
double cli_now(void); /* monotonic seconds */

/* Progress on a tty (stderr), silent otherwise. `total` in units of work
 * (bytes, chunks); the label says what is going on. */
typedef struct cli_progress {
    int enabled;
    const char *label;
    const char *unit;     /* "B" prints sizes; anything else prints counts */
    uint64_t total;
    double t0, last;
} cli_progress;
void cli_progress_start(cli_progress *p, const char *label, const char *unit, uint64_t total,
                        int quiet);
/* `extra` (may be NULL) is appended, e.g. "ppl 5.86". */
void cli_progress_update(cli_progress *p, uint64_t done, const char *extra);
void cli_progress_end(cli_progress *p);
/* A calib_progress_fn over a cli_progress (user): chunks done of total, with
 * the token rate; the clock starts at the first chunk. */
void cli_chunk_progress(void *user, int done, int total, uint64_t tokens, double seconds);

#endif
