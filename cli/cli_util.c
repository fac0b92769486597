#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int cli_inputs_exist(const char *cmd, const char *const *paths, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct stat sb;
        if (!paths[i] || !strcmp(paths[i], "-") || stat(paths[i], &sb) == 0) continue;
        if (errno != ENOENT && errno != ENOTDIR) continue; /* the reader says what it is */
        fprintf(stderr, "llmpack %s: %s: cannot open: %s\n", cmd, paths[i], strerror(errno));
        return CLI_EXIT_RUNTIME;
    }
    return CLI_EXIT_OK;
}

int cli_exit_for(int status)
{
    switch (status) {
    case LPK_OK: return CLI_EXIT_OK;
    case LPK_ECORRUPT: case LPK_ETRUNC: case LPK_EUNSUPPORTED: case LPK_ECHECKSUM:
    case LPK_EBADVALUE: case LPK_ENOTFOUND:
        return CLI_EXIT_BADINPUT;
    case LPK_EINVAL: return CLI_EXIT_USAGE;
    default: return CLI_EXIT_RUNTIME;
    }
}

void cli_print_error(const char *cmd, const lpk_error *err)
{
    const char *m = err && err->msg[0] ? err->msg : lpk_status_name(err ? err->status : -1);
    fprintf(stderr, "llmpack %s: %s\n", cmd, m);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "llmpack %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\ntry 'llmpack %s --help'\n", cmd);
    return CLI_EXIT_USAGE;
}

void cli_json_print(json_t *v)
{
    if (!v) return;
    json_dumpf(v, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    fputc('\n', stdout);
    json_decref(v);
}

void cli_getopt_start(void)
{
    optind = 0; /* 0, not 1: glibc then resets its permutation state too */
    opterr = 0;
}

int cli_getopt(const char *cmd, int argc, char **argv, const char *shorts,
               const struct option *longs)
{
    char spec[64];
    snprintf(spec, sizeof spec, ":%s", shorts);
    int c = getopt_long(argc, argv, spec, longs, NULL);
    if (c != '?' && c != ':') return c;
    /* the word at fault: an option missing its value ends argv; an unknown
     * long option was the word just passed; an unknown short one is optopt */
    const char *w = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
    char sh[3] = {'-', (char)optopt, 0};
    if (c == ':') cli_usage_error(cmd, "option '%s' needs a value", w);
    else cli_usage_error(cmd, "unknown option '%s'", optopt ? sh : w);
    return CLI_OPT_BAD;
}

int cli_set_operand(const char *cmd, const char **slot, const char *v)
{
    if (*slot) return cli_usage_error(cmd, "more than one input ('%s', '%s')", *slot, v);
    *slot = v;
    return CLI_EXIT_OK;
}

int cli_operands(const char *cmd, int argc, char **argv, const char **slot)
{
    for (; optind < argc; optind++)
        if (cli_set_operand(cmd, slot, argv[optind])) return CLI_EXIT_USAGE;
    return CLI_EXIT_OK;
}

const char *cli_opt_name(const struct option *longs, int val)
{
    for (; longs && longs->name; longs++)
        if (!longs->flag && longs->val == val) return longs->name;
    return "?";
}

int cli_parse_threads(const char *cmd, const char *v, long *out)
{
    if (cli_parse_int(v, 0, 1024, out) == 0) return 0;
    cli_usage_error(cmd, "--threads: '%s' is not a thread count (0 = all cores, up to 1024)", v);
    return -1;
}

int cli_parse_int(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) return -1;
    *out = v;
    return 0;
}

int cli_parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

uint64_t cli_peak_rss(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    uint64_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fmt_amount(char *buf, size_t n, double v, const char *unit)
{
    if (unit && strcmp(unit, "B") == 0) {
        const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
        int i = 0;
        while (v >= 1024 && i < 4) { v /= 1024; i++; }
        snprintf(buf, n, "%.1f %s", v, u[i]);
    } else {
        snprintf(buf, n, "%.0f%s%s", v, unit && *unit ? " " : "", unit ? unit : "");
    }
}

/* "42s", "3m07s", "2h05m" */
static void fmt_duration(char *buf, size_t n, double s)
{
    long v = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
    if (v < 60) snprintf(buf, n, "%lds", v);
    else if (v < 3600) snprintf(buf, n, "%ldm%02lds", v / 60, v % 60);
    else snprintf(buf, n, "%ldh%02ldm", v / 3600, v % 3600 / 60);
}

/* Seconds between plain progress lines: LLMPACK_PROGRESS_INTERVAL (tests
 * shorten it), else 10. */
static double plain_interval(void)
{
    const char *e = getenv("LLMPACK_PROGRESS_INTERVAL");
    char *end;
    double v = e && *e ? strtod(e, &end) : 10.0;
    return e && *e && *end == '\0' && v >= 0 && v <= 86400 ? v : 10.0;
}

void cli_progress_start(cli_progress *p, const char *label, const char *unit, uint64_t total,
                        int quiet)
{
    memset(p, 0, sizeof *p);
    p->enabled = !quiet;
    p->tty = !quiet && isatty(2);
    p->interval = plain_interval();
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->t0 = p->last = cli_now();
}

/* The progress text: "3.0 MiB / 12.0 MiB (25%), 1.5 MiB/s, ETA 6s[, extra]". */
static void progress_text(const cli_progress *p, uint64_t done, double now, const char *extra,
                          char *buf, size_t n)
{
    double el = now - p->t0, rate = el > 0 ? (double)done / el : 0;
    char d[32], t[32], r[32], e[32];
    fmt_amount(d, sizeof d, (double)done, p->unit);
    fmt_amount(r, sizeof r, rate, p->unit);
    if (p->total) {
        fmt_amount(t, sizeof t, (double)p->total, p->unit);
        fmt_duration(e, sizeof e, rate > 0 && p->total > done ? (double)(p->total - done) / rate
                                                              : 0);
        snprintf(buf, n, "%s / %s (%.0f%%), %s/s, ETA %s%s%s", d, t,
                 100.0 * (double)done / (double)p->total, r, e, extra ? ", " : "",
                 extra ? extra : "");
    } else {
        snprintf(buf, n, "%s, %s/s%s%s", d, r, extra ? ", " : "", extra ? extra : "");
    }
}

void cli_progress_update(cli_progress *p, uint64_t done, const char *extra)
{
    if (!p->enabled) return;
    double now = cli_now();
    char text[256];
    if (p->tty) {
        if (now - p->last < 0.2 && done < p->total) return;
        p->last = now;
        progress_text(p, done, now, extra, text, sizeof text);
        fprintf(stderr, "\r\033[K%s: %s", p->label, text);
        return;
    }
    /* a log, not a terminal: nothing during the first interval (a short run
     * stays quiet), then a line every interval or every further 10% */
    if (now - p->t0 < p->interval) return;
    int tenth = p->total ? (int)(10.0 * (double)done / (double)p->total) : 0;
    if (p->lines && now - p->last < p->interval && tenth <= p->tenth) return;
    p->last = now;
    p->tenth = tenth;
    p->lines++;
    progress_text(p, done, now, extra, text, sizeof text);
    fprintf(stderr, "llmpack %s: %s\n", p->label, text);
}

void cli_progress_end(cli_progress *p)
{
    if (p->tty) fprintf(stderr, "\r\033[K");
    else if (p->enabled && p->lines) {
        char el[32];
        fmt_duration(el, sizeof el, cli_now() - p->t0);
        fprintf(stderr, "llmpack %s: done in %s\n", p->label, el);
    }
}
