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

/* Model outputs (convert, quantize, export): the format a path asks for. */
enum cli_format { CLI_FMT_LPK = 1, CLI_FMT_GGUF = 2 };
/* Sets *fmt from format_opt (--format's value: "gguf" or "lpk", any case; NULL
 * when not given) or else from out's name (.gguf, .lpk, any case). A name
 * without either suffix and no --format, a --format the name contradicts, or
 * something other than a regular file at out (a device, FIFO, folder, link):
 * prints the usage error naming out and returns CLI_EXIT_USAGE; else 0. */
int cli_output_format(const char *cmd, const char *out, const char *format_opt, int *fmt);
/* A temporary container for a GGUF output made in two steps (a .lpk, then
 * export): creates an empty `.BASE.tmp-XXXXXX` beside out (the writers'
 * naming: what a SIGKILL leaves is swept by the next run there), its name in
 * path (n bytes), registered (lpk_temp_register) so that the cleanup signals
 * remove it. Write it with LPK_WRITE_FORCE; cli_tmp_hold once it is complete (a lock that keeps
 * other runs' sweeps off it); cli_tmp_remove on every path out. */
int cli_tmp_beside(const char *out, char *path, size_t n, lpk_error *err);
void cli_tmp_hold(const char *path);
void cli_tmp_remove(const char *path);   /* a path not registered: no-op */
/* "dir/llama2-20m.q4_k.lpk" -> "llama2-20m.q4_k" (malloc'ed; NULL when out of
 * memory): general.name for an export whose container has none. */
char *cli_name_from_path(const char *path);

/* A model file in words (info, verify). type: the recipe recorded by quantize
 * (quant.recipe, "Q4_K_M"), else the recipe of general.file_type (llama.cpp's
 * file type, as GGUF files carry it), else the tensor type holding the most
 * bytes ("F16"); type_from says which: "recipe", "file_type" or "tensors".
 * bpw: tensor bits over tensor elements, as info prints it. */
typedef struct cli_model_desc {
    char type[32];
    const char *type_from;
    uint64_t file_size, n_elements, tensor_bytes;
    double bpw;
} cli_model_desc;
void cli_model_describe(const lpk_reader *r, cli_model_desc *d);

/* A model input of verify, calibrate, generate: a container (.lpk or GGUF, by
 * name or content) opens as cli_open_input does; anything else convert reads
 * (a Hugging Face or Meta folder, a llama2.c .bin, an archive) is converted
 * first, at its source precision, into a memfd (or, when the container would
 * take more than LLMPACK_MEMFD_MAX bytes, by default half of MemAvailable,
 * into an unlinked file in TMPDIR), which the reader then maps: nothing is
 * written at or beside path. Unless quiet, one line on stderr says so (and a
 * progress display runs). Errors are convert's, naming the file. *r is NULL
 * on failure; the reader's path is `path`. */
int cli_open_model(const char *cmd, const char *path, unsigned flags, int quiet, lpk_reader **r,
                   lpk_error *err);
/* What cli_open_model would convert path as (cv_source_kind's name; "folder"
 * for a folder convert does not recognise, whose error it then gives), or
 * NULL when it opens path as a container: a file named .lpk or .gguf (any
 * case), starting with a container's magic, or that convert does not read. */
const char *cli_model_convert_kind(const char *path);
/* 1 when path starts with the magic of a GGUF or an .lpk. */
int cli_is_container(const char *path);
/* $TMPDIR, else /tmp. */
const char *cli_tmpdir(void);
/* A cv_progress_fn over a cli_progress (ctx): bytes done of total. */
void cli_bytes_progress(void *ctx, uint64_t done, uint64_t total);

/* What cli_export_gguf wrote. */
typedef struct cli_export_stats {
    size_t n_tensors, n_added, n_keys, n_dropped;
    uint64_t data_bytes;    /* tensor bytes written */
    uint64_t file_size;
} cli_export_stats;
/* export's pipeline (cmd_export.c): the model open at `in` (.lpk or GGUF) as
 * GGUF v3 at out, with general.name `name` when it has none (may be NULL), or
 * `set_name` whatever it has (export --name; NULL: none);
 * gguf_flags: LPK_GGUF_*, write_flags: LPK_WRITE_FORCE; a progress display
 * unless quiet. max_size (0: none): a file that would be larger is
 * LPK_ENOSPC before anything is written (s->file_size says how large). Nothing
 * is left at out on failure. Status, message in err. */
int cli_export_gguf(const char *in, const char *out, const char *name, const char *set_name,
                    unsigned gguf_flags,
                    unsigned write_flags, int quiet, uint64_t max_size, cli_export_stats *s,
                    lpk_error *err);

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
/* A calib_progress_fn over a cli_progress (user): chunks done of total, with
 * the token rate; the clock starts at the first chunk. */
void cli_chunk_progress(void *user, int done, int total, uint64_t tokens, double seconds);

#endif
