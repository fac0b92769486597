/* llmpack check: every structural rule and every checksum of a container. */
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
    lpk_reader *r = NULL;
    lpk_error err = {0};
    const lpk_tensor *bad = NULL;
    size_t checked = 0;
    int st = cli_open_input(path, 0, &r, &err); /* check always verifies */
    if (!st) {
        size_t n = lpk_reader_n_tensors(r);
        uint64_t total = 0, done = 0;
        for (size_t i = 0; i < n; i++) total += lpk_reader_tensor(r, i)->size;
        cli_progress p;
        cli_progress_start(&p, "checking", "B", total, json || quiet);
        for (size_t i = 0; i < n && !st; i++) {
            const void *data;
            st = lpk_reader_tensor_data(r, i, &data, &err);
            if (st) bad = lpk_reader_tensor(r, i);
            else checked++;
            done += lpk_reader_tensor(r, i)->size;
            lpk_reader_release_tensor(r, i);
            cli_progress_update(&p, done, NULL);
        }
        cli_progress_end(&p);
    }
    int gguf = r && lpk_reader_kind(r) == LPK_KIND_GGUF;
    if (json) {
        json_t *o = json_pack("{s:s, s:b, s:s}", "file", path, "ok", st == LPK_OK, "status",
                              lpk_status_name(st));
        if (st) json_object_set_new(o, "error", json_string(err.msg[0] ? err.msg : ""));
        if (bad) {
            json_object_set_new(o, "tensor", json_string(bad->name));
            json_object_set_new(o, "offset", json_integer((json_int_t)bad->offset));
        }
        if (r) {
            json_object_set_new(o, "kind", json_string(gguf ? "gguf" : "lpk"));
            json_object_set_new(o, "checksums", json_boolean(!gguf));
            json_object_set_new(o, "tensors_checked", json_integer((json_int_t)checked));
        }
        cli_json_print(o);
    } else if (st) {
        cli_print_error("check", &err);
    } else {
        printf("ok\n");
        if (gguf) fprintf(stderr, "llmpack check: GGUF has no checksums: structure checked only\n");
    }
    lpk_reader_close(r);
    return cli_exit_for(st);
}
