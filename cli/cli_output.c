/* Model outputs of convert, quantize and export: which format a path asks for. */
#include "cli.h"

#include <string.h>
#include <strings.h>

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
    int by_name = has_suffix(out, ".gguf") ? LLMPACK_FMT_GGUF
                  : has_suffix(out, ".lpk") ? LLMPACK_FMT_LPK
                                             : 0;
    if (!format_opt) {
        if (!by_name)
            return cli_usage_error(cmd, "%s: cannot tell the output format from the name (name "
                                   "it .gguf or .lpk, or add --format gguf|lpk)", out);
        *fmt = by_name;
        return CLI_EXIT_OK;
    }
    int f = !strcasecmp(format_opt, "gguf") ? LLMPACK_FMT_GGUF
            : !strcasecmp(format_opt, "lpk") ? LLMPACK_FMT_LPK
                                              : 0;
    if (!f) return cli_usage_error(cmd, "--format: '%s' is not gguf or lpk", format_opt);
    if (by_name && by_name != f)
        return cli_usage_error(cmd, "%s names a %s file but --format says %s", out,
                               by_name == LLMPACK_FMT_GGUF ? "GGUF" : ".lpk", format_opt);
    *fmt = f;
    return CLI_EXIT_OK;
}
