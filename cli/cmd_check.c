/* llmpack check: every structural rule and every checksum of a container:
 * arguments and the verdict over the check job (llmpack_check). */
#include "cli.h"

#include <getopt.h>
#include <string.h>

static void check_help(FILE *f)
{
    fprintf(f,
            "usage: llmpack check FILE [--json]\n\n"
            "Verifies a container: every structural rule of docs/FORMAT.md, the header+\n"
            "metadata+directory checksum, the padding and every tensor's xxh3. Prints 'ok'\n"
            "or the first problem (tensor, offset, expected vs found). GGUF files carry no\n"
            "checksums: their structure is checked only.\n\n"
            "  --json     machine-readable result\n"
            "  -q, --quiet  no progress display\n"
            "  -m FILE    FILE as an option (also --model)\n"
            "  -h, --help this text\n\n"
            "example: llmpack check model.q4_k_m.lpk && echo intact\n\n"
            "exit status: 0 all is well; 3 the file has a problem (structure, checksum,\n"
            "unsupported type or version); 1 it does not exist or cannot be read (not a\n"
            "regular file, no permission, I/O or mmap failure, out of memory); 2 bad command\n"
            "line\n");
}

/* The check's progress, labelled "checking" as it always was. */
typedef struct check_display {
    int quiet;
    cli_progress p;
} check_display;

static void on_progress(void *user, const llmpack_progress *pg)
{
    check_display *d = user;
    if (pg->event == LLMPACK_PROGRESS_BEGIN)
        cli_progress_start(&d->p, "checking", pg->unit, pg->total, d->quiet);
    else if (pg->event == LLMPACK_PROGRESS_UPDATE)
        cli_progress_update(&d->p, pg->done, NULL);
    else
        cli_progress_end(&d->p);
}

int cmd_check(int argc, char **argv)
{
    enum { O_JSON = 256 };
    static const struct option opts[] = {{"json", no_argument, NULL, O_JSON},
                                         {"model", required_argument, NULL, 'm'},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int json = 0, quiet = 0, c;
    const char *path = NULL;
    cli_getopt_start();
    while ((c = cli_getopt("check", argc, argv, "hm:q", opts)) != -1) {
        switch (c) {
        case O_JSON: json = 1; break;
        case 'm':
            if (cli_set_operand("check", &path, optarg)) return CLI_EXIT_USAGE;
            break;
        case 'q': quiet = 1; break;
        case 'h': check_help(stdout); return CLI_EXIT_OK;
        default: return CLI_EXIT_USAGE;
        }
    }
    if (cli_operands("check", argc, argv, &path)) return CLI_EXIT_USAGE;
    if (!path) return cli_usage_error("check", "no FILE given");
    if ((c = cli_inputs_exist("check", &path, 1))) return c;
    cli_job cj;
    if (cli_job_init(&cj, "check", 1)) {
        fprintf(stderr, "llmpack check: out of memory\n");
        return CLI_EXIT_RUNTIME;
    }
    check_display d = {.quiet = json || quiet};
    llmpack_job_set_progress(cj.j, on_progress, &d);
    llmpack_check_opts o = {.path = path};
    llmpack_check_result res;
    int st = llmpack_check(cj.j, &o, &res);
    const lpk_error *err = llmpack_job_lpk_error(cj.j);
    int gguf = res.opened && res.kind == LPK_KIND_GGUF;
    if (json) {
        json_t *jo = json_pack("{s:s, s:b, s:s}", "file", path, "ok", st == LPK_OK, "status",
                               lpk_status_name(st));
        if (st) json_object_set_new(jo, "error", json_string(err->msg[0] ? err->msg : ""));
        if (res.failed) {
            json_object_set_new(jo, "tensor", json_string(res.tensor));
            json_object_set_new(jo, "offset", json_integer((json_int_t)res.offset));
        }
        if (res.opened) {
            json_object_set_new(jo, "kind", json_string(gguf ? "gguf" : "lpk"));
            json_object_set_new(jo, "checksums", json_boolean(!gguf));
            json_object_set_new(jo, "tensors_checked", json_integer((json_int_t)res.tensors_checked));
        }
        cli_json_print(jo);
    } else if (st) {
        cli_print_error("check", err);
    } else {
        printf("ok\n");
        if (gguf) fprintf(stderr, "llmpack check: GGUF has no checksums: structure checked only\n");
    }
    cli_job_free(&cj);
    return cli_exit_for(st);
}
