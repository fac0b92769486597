/* Model outputs of convert, quantize and export: which format a path asks
 * for, and the temporary container a GGUF output is made through. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <unistd.h>

static int has_suffix(const char *s, const char *sfx)
{
    size_t n = strlen(s), k = strlen(sfx);
    return n > k && s[n - k - 1] != '/' && !strcasecmp(s + n - k, sfx);
}

int cli_output_format(const char *cmd, const char *out, const char *format_opt, int *fmt)
{
    /* something that is not a regular file at the path: the writer's message
     * (what it is) rather than one about its name */
    lpk_error err = {0};
    if (lpk_writer_check_target(out, LPK_WRITE_FORCE, &err)) {
        cli_print_error(cmd, &err);
        return CLI_EXIT_USAGE;
    }
    int by_name = has_suffix(out, ".gguf") ? CLI_FMT_GGUF
                  : has_suffix(out, ".lpk") ? CLI_FMT_LPK
                                             : 0;
    if (!format_opt) {
        if (!by_name)
            return cli_usage_error(cmd, "%s: cannot tell the output format from the name (name "
                                   "it .gguf or .lpk, or add --format gguf|lpk)", out);
        *fmt = by_name;
        return CLI_EXIT_OK;
    }
    int f = !strcasecmp(format_opt, "gguf") ? CLI_FMT_GGUF
            : !strcasecmp(format_opt, "lpk") ? CLI_FMT_LPK
                                              : 0;
    if (!f) return cli_usage_error(cmd, "--format: '%s' is not gguf or lpk", format_opt);
    if (by_name && by_name != f)
        return cli_usage_error(cmd, "%s names a %s file but --format says %s", out,
                               by_name == CLI_FMT_GGUF ? "GGUF" : ".lpk", format_opt);
    *fmt = f;
    return CLI_EXIT_OK;
}

/* The temporary containers of this process: the path, its slot in the
 * signal-cleanup registry (lpk_temp_register) and the lock cli_tmp_hold takes. */
#define CLI_TMP_SLOTS 20 /* quantize: one per GGUF output (CLI_QUANT_MAX_OUTPUTS) */
#define CLI_TMP_PATH 4096
static char tmp_path[CLI_TMP_SLOTS][CLI_TMP_PATH];
static int tmp_fd[CLI_TMP_SLOTS];
static int tmp_reg[CLI_TMP_SLOTS];
static int tmp_used[CLI_TMP_SLOTS];

int cli_tmp_beside(const char *out, char *path, size_t n, lpk_error *err)
{
    const char *slash = strrchr(out, '/');
    int dl = slash ? (int)(slash - out + 1) : 0;
    const char *base = slash ? slash + 1 : out;
    if (n > CLI_TMP_PATH) n = CLI_TMP_PATH;
    if ((size_t)snprintf(path, n, "%.*s.%s.tmp-XXXXXX", dl, out, base) >= n)
        return lpk_err(err, LPK_EINVAL, "%s: path too long", out);
    int slot = -1;
    for (int i = 0; i < CLI_TMP_SLOTS && slot < 0; i++)
        if (!tmp_used[i]) slot = i;
    if (slot < 0) return lpk_err(err, LPK_ENOMEM, "%s: too many temporary files", out);
    /* no signal between creating the name and registering it */
    lpk_cleanup_block();
    int fd = mkostemp(path, O_CLOEXEC), e = errno, reg = -1;
    if (fd >= 0) {
        close(fd);
        reg = lpk_temp_register(path);
        if (reg < 0) unlink(path);
    }
    lpk_cleanup_unblock();
    if (fd < 0)
        return lpk_err(err, e == ENOSPC ? LPK_ENOSPC : LPK_EIO,
                       "%s: cannot create a temporary file beside it: %s", out, strerror(e));
    if (reg < 0) return lpk_err(err, LPK_ENOMEM, "%s: cannot register a temporary file", out);
    memcpy(tmp_path[slot], path, strlen(path) + 1);
    tmp_fd[slot] = -1;
    tmp_reg[slot] = reg;
    tmp_used[slot] = 1;
    return LPK_OK;
}

static int tmp_slot(const char *path)
{
    for (int i = 0; i < CLI_TMP_SLOTS; i++)
        if (tmp_used[i] && !strcmp(tmp_path[i], path)) return i;
    return -1;
}

void cli_tmp_hold(const char *path)
{
    int i = tmp_slot(path);
    if (i < 0) return;
    if (tmp_fd[i] >= 0) close(tmp_fd[i]); /* a file written again: lock the new one */
    /* the writer's lock went with its file descriptor; a later run's sweep
     * (lpk_sweep_stale) leaves a locked file alone */
    tmp_fd[i] = open(path, O_RDONLY | O_CLOEXEC);
    if (tmp_fd[i] >= 0) flock(tmp_fd[i], LOCK_SH | LOCK_NB);
}

void cli_tmp_remove(const char *path)
{
    int i = tmp_slot(path);
    if (i < 0) return;
    lpk_cleanup_block();
    unlink(tmp_path[i]);
    lpk_temp_unregister(tmp_reg[i]);
    lpk_cleanup_unblock();
    if (tmp_fd[i] >= 0) close(tmp_fd[i]);
    tmp_fd[i] = -1;
    tmp_used[i] = 0;
}

char *cli_name_from_path(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    char *n = strdup(b);
    if (!n) return NULL;
    char *dot = strrchr(n, '.');
    if (dot && dot != n) *dot = '\0';
    return n;
}
