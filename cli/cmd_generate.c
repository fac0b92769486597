/* llmpack generate: greedy (or sampled) continuation of a prompt, a smoke test
 * of a model and its tokenizer. Runs the prompt as one batch, then one token per
 * step over the KV cache. */
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../tok/tok.h"
#include "../verify/verify.h"

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

static int pick(const float *logits, int n, double temp, uint64_t *rng)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    if (temp <= 0) return best;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((logits[i] - logits[best]) / temp);
    /* xorshift64*: a uniform double in [0, 1) */
    *rng ^= *rng >> 12; *rng ^= *rng << 25; *rng ^= *rng >> 27;
    double u = (double)((*rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0 * sum;
    for (int i = 0; i < n; i++) {
        u -= exp((logits[i] - logits[best]) / temp);
        if (u < 0) return i;
    }
    return best;
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
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads((int)threads);
#endif

    lpk_error err = {0};
    lpk_reader *r = NULL;
    vf_model *m = NULL;
    tok_tokenizer *tok = NULL;
    int32_t *ids = NULL, *seq = NULL;
    float *logits = NULL;
    size_t n_ids = 0;
    json_t *out_ids = json ? json_array() : NULL;
    char *text = NULL;
    size_t text_len = 0, text_cap = 0;
    int rc = CLI_EXIT_OK;
    int st = cli_open_model(cmd, path, lpk_reader_default_flags(), json, &r, &err);
    if (!st) st = vf_model_open(r, &m, &err);
    if (!st) st = tok_tokenizer_new(lpk_reader_meta(r), &tok, &err);
    if (!st) st = tok_encode(tok, prompt, strlen(prompt), 1, 0, &ids, &n_ids, &err);
    if (!st && (n_ids == 0 || n_ids > (size_t)INT32_MAX - (size_t)n_gen))
        st = lpk_err(&err, LPK_EINVAL, "the prompt has %zu tokens", n_ids);
    const vf_config *c = st ? NULL : vf_model_config(m);
    if (!st) {
        logits = malloc((size_t)c->vocab_size * sizeof(float));
        seq = malloc((n_ids + (size_t)n_gen) * sizeof *seq);
        if (!logits || !seq) st = lpk_err(&err, LPK_ENOMEM, "out of memory");
    }
    if (!st) memcpy(seq, ids, n_ids * sizeof *seq);
    double t0 = cli_now();
    if (!st) st = vf_forward(m, seq, (int)n_ids, 0, 1, logits, &err);
    double t_prompt = cli_now() - t0;
    int n_seq = (int)n_ids, produced = 0;
    uint64_t rng = (uint64_t)seed * 0x9E3779B97F4A7C15ULL + 1;
    int32_t eos = st ? -1 : tok_tokenizer_eos(tok);
    if (!st && !json) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
    t0 = cli_now();
    while (!st && produced < n_gen) {
        int next = pick(logits, c->vocab_size, temp, &rng);
        if (next == eos) break;
        seq[n_seq++] = next;
        produced++;
        char piece[256];
        int len = tok_decode_token(tok, next, piece, sizeof piece);
        if (len > 0) {
            if (json) {
                if (text_len + (size_t)len + 1 > text_cap) {
                    size_t nc = (text_cap + (size_t)len + 1) * 2;
                    char *nt = realloc(text, nc);
                    if (!nt) { st = lpk_err(&err, LPK_ENOMEM, "out of memory"); break; }
                    text = nt;
                    text_cap = nc;
                }
                memcpy(text + text_len, piece, (size_t)len);
                text_len += (size_t)len;
                text[text_len] = 0;
            } else {
                fwrite(piece, 1, (size_t)len, stdout);
                fflush(stdout);
            }
        }
        if (json) json_array_append_new(out_ids, json_integer(next));
        if (produced < n_gen) st = vf_forward(m, &seq[n_seq - 1], 1, n_seq - 1, 1, logits, &err);
    }
    double t_gen = cli_now() - t0;
    if (st) {
        if (!json) fputc('\n', stdout);
        cli_print_error(cmd, &err);
        rc = cli_exit_for(st);
    } else if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "model", json_string(path));
        json_object_set_new(o, "prompt", json_string(prompt));
        json_object_set_new(o, "prompt_tokens", json_integer((json_int_t)n_ids));
        json_object_set_new(o, "temp", json_real(temp));
        json_object_set_new(o, "tokens", out_ids);
        out_ids = NULL;
        json_object_set_new(o, "text", json_stringn_nocheck(text ? text : "", text_len));
        json_object_set_new(o, "prompt_seconds", json_real(t_prompt));
        json_object_set_new(o, "tokens_per_second",
                            json_real(t_gen > 0 ? produced / t_gen : 0));
        cli_json_print(o);
    } else {
        fputc('\n', stdout);
        fprintf(stderr, "%d tokens, %.1f tokens/s (prompt: %zu tokens in %.3fs)\n", produced,
                t_gen > 0 ? produced / t_gen : 0, n_ids, t_prompt);
    }
    json_decref(out_ids);
    free(text);
    free(logits);
    free(seq);
    free(ids);
    tok_tokenizer_free(tok);
    vf_model_free(m);
    lpk_reader_close(r);
    return rc;
}
