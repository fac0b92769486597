/* cli/: argument parsing, progress and printing. No format or math logic here. */
#ifndef CLI_H
#define CLI_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "../format/lpk.h"
#include "../lib/jobs.h"

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
/* llmpack_open_input (lib/jobs.h) with the error in err. */
int cli_open_input(const char *path, unsigned flags, lpk_reader **r, lpk_error *err);
/* The inputs named on a command line (n paths; NULL entries: options not given,
 * "-": stdin) are checked before any work: one that does not exist prints
 * "llmpack CMD: PATH: cannot open: ..." and gives CLI_EXIT_RUNTIME (exit 1,
 * as `llmpack --help` documents), not the bad-input 3 the readers' "not
 * found" would give. Returns 0 when all exist. */
int cli_inputs_exist(const char *cmd, const char *const *paths, size_t n);
/* Prints "llmpack CMD: MESSAGE" to stderr (message from err, or its status name). */
void cli_print_error(const char *cmd, const lpk_error *err);
/* Usage error: prints the message and "try 'llmpack CMD --help'"; returns 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints a JSON value to stdout (indented, key order kept) and frees it. */
void cli_json_print(json_t *v);
/* Option parsing, the same for every command: getopt_long (`--opt value`,
 * `--opt=value`, options and operands in any order, `--` ends the options)
 * with the state reset, so commands can run one after another in a process.
 * Call cli_getopt_start, then cli_getopt until it returns -1: it returns the
 * option's val, or CLI_OPT_BAD after printing the usage error (unknown option,
 * missing value); the operands are argv[optind..argc). shorts must not start
 * with ':' (added here). */
struct option;
#define CLI_OPT_BAD (-2)
void cli_getopt_start(void);
int cli_getopt(const char *cmd, int argc, char **argv, const char *shorts,
               const struct option *longs);
/* A command's one input, from -m or an operand: sets *slot to v; a second
 * one is a usage error naming both (returns CLI_EXIT_USAGE, else 0).
 * cli_operands does the same for each of argv[optind..argc). */
int cli_set_operand(const char *cmd, const char **slot, const char *v);
int cli_operands(const char *cmd, int argc, char **argv, const char **slot);
/* The long name of the option whose val is `val` ("?" if none). */
const char *cli_opt_name(const struct option *longs, int val);
/* --threads N: 0 means all cores (the default), else 1..1024. Returns 0, or
 * prints the usage error and returns -1. */
int cli_parse_threads(const char *cmd, const char *v, long *out);
/* Parses a positive integer option value; returns 0 on success. */
int cli_parse_int(const char *s, long min, long max, long *out);
int cli_parse_double(const char *s, double *out);
/* Peak resident set size of this process in bytes (VmHWM). */
uint64_t cli_peak_rss(void);
double cli_now(void); /* monotonic seconds */

/* Model outputs (convert, quantize, export): the format a path asks for.
 * Sets *fmt (LLMPACK_FMT_*) from format_opt (--format's value: "gguf" or "lpk", any case; NULL
 * when not given) or else from out's name (.gguf, .lpk, any case). A name
 * without either suffix and no --format, a --format the name contradicts, or
 * something other than a regular file at out (a device, FIFO, folder, link):
 * prints the usage error naming out and returns CLI_EXIT_USAGE; else 0. */
int cli_output_format(const char *cmd, const char *out, const char *format_opt, int *fmt);


/* llmpack_open_model (lib/jobs.h) for command cmd: unless quiet, its notice
 * ("converting ... into memory") on stderr and a progress display. */
int cli_open_model(const char *cmd, const char *path, unsigned flags, int quiet, lpk_reader **r,
                   lpk_error *err);

/* quantize's GPTQ options, also convert's: opt names the option ("method",
 * "chunks", "damp", "order", "act-order", "inputs"), v is its value (NULL for
 * act-order). Sets o's field; returns 1 for a bad value (the caller prints the
 * usage error), else 0. */
int cli_quantize_gptq_opt(const char *opt, const char *v, llmpack_quantize_opts *o);
/* quantize's report of run's first output (out) on stdout: the table, or JSON. */
void cli_quantize_report(const llmpack_quantize_opts *o, const llmpack_quantize_report *run,
                         const llmpack_quantize_out *out, int json);

/* A job run by command cmd: progress on stderr (cli_progress below, the label
 * "CMD" or "CMD: STAGE") and notices as "llmpack CMD: MESSAGE" lines, none
 * with quiet. cli_job_init returns LPK_ENOMEM when the handle cannot be made. */
typedef struct cli_job cli_job;
int cli_job_init(cli_job *cj, const char *cmd, int quiet);
void cli_job_free(cli_job *cj);
/* The progress display of cli_job_init's callback, for a command's own callback. */
void cli_job_progress(cli_job *cj, const llmpack_progress *p);
/* Prints the job's error as "llmpack CMD: MESSAGE" and returns its exit code. */
int cli_job_fail(const cli_job *cj);

/* Progress on stderr (none with quiet). On a tty a live line, redrawn at most
 * every 0.2 s. Otherwise (a CI log) plain lines "llmpack LABEL: done / total
 * (P%), rate, ETA ...": none during the first 10 s (short runs print
 * nothing), then one every 10 s or at each further 10% of the total,
 * whichever comes first, and "llmpack LABEL: done in T" at the end if any was
 * printed. LLMPACK_PROGRESS_INTERVAL=SECONDS replaces the 10 s (tests use a
 * short one). `total` in units of work (bytes, chunks; 0: unknown); the label
 * says what is going on. */
typedef struct cli_progress {
    int enabled, tty;
    const char *label;
    const char *unit;     /* "B" prints sizes; anything else prints counts */
    uint64_t total;
    double t0, last, interval;
    int tenth, lines;     /* plain lines: the last 10% step printed, lines printed */
} cli_progress;
void cli_progress_start(cli_progress *p, const char *label, const char *unit, uint64_t total,
                        int quiet);
/* `extra` (may be NULL) is appended, e.g. "ppl 5.86". */
void cli_progress_update(cli_progress *p, uint64_t done, const char *extra);
void cli_progress_end(cli_progress *p);

struct cli_job {
    llmpack_job *j;
    const char *cmd;
    int quiet;
    int stage_label;  /* label a stage with its name alone ("export"), not "CMD: STAGE" */
    cli_progress pr;
    char label[96];
    cli_progress inner; /* "gptq blocks", shown inside the quantize stage */
    int inner_started;
};

#endif
