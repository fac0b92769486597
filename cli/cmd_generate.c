/* llmpack generate: greedy (or sampled) continuation of a prompt, a smoke test
 * of a model and its tokenizer: arguments and printing over the generate job
 * (llmpack_generate), the tokens printed as they come. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: llmpack generate MODEL --prompt TEXT [-n N] [options]\n"
    "\n"
    "Continues TEXT with up to N tokens (default 64), stopping at end-of-sequence.\n"
    "MODEL: a container (.lpk, GGUF) or a checkpoint convert reads (a folder, an\n"
    "archive; converted in memory first).\n"
    "\n"
    "options:\n"
    "  -p, --prompt TEXT  the prompt (BOS is prepended)\n"
    "  -n, --n-predict N  tokens to generate (default 64)\n"
    "  --temp T        0 (default): greedy; > 0: sample from softmax(logits / T)\n"
    "  --seed S        random seed for sampling (default 1)\n"
    "  -t, --threads N OpenMP threads (default, or 0: all cores)\n"
    "  --json          machine-readable output\n"
    "  -m, --model MODEL  MODEL as an option\n"
    "  -h, --help      this help\n"
    "Options take their value as --opt VALUE or --opt=VALUE.\n\n"
    "example (llama-cli -m MODEL -p TEXT -n 32):\n"
    "  llmpack generate model.q4_k_m.gguf -p 'Once upon a time' -n 32\n";

/* What the token callback prints or collects. */
typedef struct gen_out {
    int json, prompt_shown, oom;
    const char *prompt;
    json_t *ids;
    char *text;
    size_t len, cap;
} gen_out;

static void show_prompt(gen_out *g)
{
    if (g->json || g->prompt_shown) return;
    fputs(g->prompt, stdout);
    fflush(stdout);
    g->prompt_shown = 1;
}

/* Each token as it comes: its text on stdout (after the prompt), or into the
 * JSON's text and ids. */
static int on_token(void *user, int32_t id, const char *piece, size_t len)
{
    gen_out *g = user;
    show_prompt(g);
    if (!g->json) {
        fwrite(piece, 1, len, stdout);
        fflush(stdout);
        return 0;
    }
    if (g->len + len + 1 > g->cap) {
        size_t nc = (g->cap + len + 1) * 2;
        char *nt = realloc(g->text, nc);
        if (!nt) return g->oom = 1;
        g->text = nt;
        g->cap = nc;
    }
    memcpy(g->text + g->len, piece, len);
    g->len += len;
    g->text[g->len] = 0;
    json_array_append_new(g->ids, json_integer(id));
    return 0;
}

int cmd_generate(int argc, char **argv)
{
    const char *cmd = "generate", *path = NULL, *prompt = NULL;
    long n_gen = 64, threads = 0, seed = 1;
    double temp = 0;
    int json = 0;
    enum { O_JSON = 256, O_TEMP, O_SEED };
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},           {"model", required_argument, NULL, 'm'},
        {"prompt", required_argument, NULL, 'p'},   {"n-predict", required_argument, NULL, 'n'},
        {"threads", required_argument, NULL, 't'},  {"temp", required_argument, NULL, O_TEMP},
        {"seed", required_argument, NULL, O_SEED},  {"json", no_argument, NULL, O_JSON},
        {NULL, 0, NULL, 0}};
    int oc;
    cli_getopt_start();
    while ((oc = cli_getopt(cmd, argc, argv, "hm:p:n:t:", opts)) != -1) {
        switch (oc) {
        case 'h': fputs(usage_text, stdout); return CLI_EXIT_OK;
        case 'm':
            if (cli_set_operand(cmd, &path, optarg)) return CLI_EXIT_USAGE;
            break;
        case 'p': prompt = optarg; break;
        case 'n':
            if (cli_parse_int(optarg, 0, 1 << 20, &n_gen))
                return cli_usage_error(cmd, "-n wants an integer in 0..%d", 1 << 20);
            break;
        case 't':
            if (cli_parse_threads(cmd, optarg, &threads)) return CLI_EXIT_USAGE;
            break;
        case O_TEMP:
            if (cli_parse_double(optarg, &temp) || temp < 0)
                return cli_usage_error(cmd, "--temp wants a number >= 0");
            break;
        case O_SEED:
            if (cli_parse_int(optarg, 0, 1L << 62, &seed))
                return cli_usage_error(cmd, "--seed wants a non-negative integer");
            break;
        case O_JSON: json = 1; break;
        default: return CLI_EXIT_USAGE;
        }
    }
    if (cli_operands(cmd, argc, argv, &path)) return CLI_EXIT_USAGE;
    if (!path || !prompt) return cli_usage_error(cmd, !path ? "no MODEL given" : "--prompt is required");
    if ((oc = cli_inputs_exist(cmd, &path, 1))) return oc;
    cli_job cj;
    if (cli_job_init(&cj, cmd, json)) {
        fprintf(stderr, "llmpack %s: out of memory\n", cmd);
        return CLI_EXIT_RUNTIME;
    }
    gen_out g = {.json = json, .prompt = prompt, .ids = json ? json_array() : NULL};
    llmpack_generate_opts go = {.model = path, .prompt = prompt, .n_predict = n_gen,
                                .temp = temp, .seed = (uint64_t)seed, .threads = (int)threads,
                                .on_token = on_token, .user = &g};
    llmpack_generate_result res;
    int rc = CLI_EXIT_OK;
    if (llmpack_generate(cj.j, &go, &res)) {
        if (!json) fputc('\n', stdout);
        if (g.oom) {
            fprintf(stderr, "llmpack %s: out of memory\n", cmd);
            rc = CLI_EXIT_RUNTIME;
        } else {
            rc = cli_job_fail(&cj);
        }
    } else if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "model", json_string(path));
        json_object_set_new(o, "prompt", json_string(prompt));
        json_object_set_new(o, "prompt_tokens", json_integer((json_int_t)res.n_prompt));
        json_object_set_new(o, "temp", json_real(temp));
        json_object_set_new(o, "tokens", g.ids);
        g.ids = NULL;
        json_object_set_new(o, "text", json_stringn_nocheck(g.text ? g.text : "", g.len));
        json_object_set_new(o, "prompt_seconds", json_real(res.prompt_seconds));
        json_object_set_new(o, "tokens_per_second",
                            json_real(res.gen_seconds > 0 ? res.n_generated / res.gen_seconds : 0));
        cli_json_print(o);
    } else {
        show_prompt(&g);
        fputc('\n', stdout);
        fprintf(stderr, "%ld tokens, %.1f tokens/s (prompt: %zu tokens in %.3fs)\n",
                res.n_generated, res.gen_seconds > 0 ? res.n_generated / res.gen_seconds : 0,
                res.n_prompt, res.prompt_seconds);
    }
    cli_job_free(&cj);
    json_decref(g.ids);
    free(g.text);
    return rc;
}
