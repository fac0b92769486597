/* llmpack tokenize: encode text with a container's tokenizer (or straight from
 * a tokenizer.model / tokenizer.json file) and print the ids: the tokenizer
 * from llmpack_open_tokenizer, the text read here, tok_encode, the printing. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "../tok/tok.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: llmpack tokenize MODEL (--text TEXT | --file FILE) [options]\n\n"
            "MODEL is a container (.lpk or GGUF), a checkpoint folder or archive that\n"
            "convert reads (converted in memory first, the whole model), or a tokenizer\n"
            "file (SentencePiece or Llama 3 tokenizer.model, Hugging Face tokenizer.json).\n\n"
            "options:\n"
            "  --text TEXT   text to encode (also -p, --prompt)\n"
            "  -f, --file FILE  encode the bytes of FILE ('-' reads stdin)\n"
            "  -m, --model MODEL  MODEL as an option\n"
            "  --no-bos      do not prepend the BOS token\n"
            "  --special     parse special-token text (e.g. <|eot_id|>) as special tokens\n"
            "  --pieces      print each token's text beside its id\n"
            "  --json        {\"ids\": [...], \"n_tokens\": N} (with --pieces: \"pieces\")\n"
            "  -h, --help    this help\n"
            "Options take their value as --opt VALUE or --opt=VALUE.\n\n"
            "examples (llama-tokenize -m MODEL -p TEXT):\n"
            "  llmpack tokenize model.gguf -p 'Hello world' --pieces\n"
            "  llmpack tokenize tokenizer.model -f wiki.test.raw --json\n");
}

static char *read_input(const char *path, size_t *n, lpk_error *err)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        lpk_err(err, LPK_EIO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (len == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int bad = buf && ferror(f);
    if (f != stdin) fclose(f);
    if (!buf) {
        lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    if (bad) {
        free(buf);
        lpk_err(err, LPK_EIO, "%s: read error", path);
        return NULL;
    }
    *n = len;
    return buf;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *text = NULL, *file = NULL;
    int bos = 1, special = 0, pieces = 0, json = 0;
    enum { O_TEXT = 256, O_NO_BOS, O_SPECIAL, O_PIECES, O_JSON };
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},         {"model", required_argument, NULL, 'm'},
        {"file", required_argument, NULL, 'f'},   {"text", required_argument, NULL, O_TEXT},
        {"prompt", required_argument, NULL, 'p'}, {"no-bos", no_argument, NULL, O_NO_BOS},
        {"special", no_argument, NULL, O_SPECIAL}, {"pieces", no_argument, NULL, O_PIECES},
        {"json", no_argument, NULL, O_JSON},      {NULL, 0, NULL, 0}};
    int oc;
    cli_getopt_start();
    while ((oc = cli_getopt("tokenize", argc, argv, "hm:f:p:", opts)) != -1) {
        switch (oc) {
        case 'h': usage(stdout); return CLI_EXIT_OK;
        case 'm':
            if (cli_set_operand("tokenize", &model, optarg)) return CLI_EXIT_USAGE;
            break;
        case 'f': file = optarg; break;
        case 'p': case O_TEXT: text = optarg; break;
        case O_NO_BOS: bos = 0; break;
        case O_SPECIAL: special = 1; break;
        case O_PIECES: pieces = 1; break;
        case O_JSON: json = 1; break;
        default: return CLI_EXIT_USAGE;
        }
    }
    if (cli_operands("tokenize", argc, argv, &model)) return CLI_EXIT_USAGE;
    if (!model) return cli_usage_error("tokenize", "no MODEL given");
    if (!text == !file) return cli_usage_error("tokenize", "give exactly one of --text, --file");
    const char *inputs[] = {model, file};
    if ((oc = cli_inputs_exist("tokenize", inputs, 2))) return oc;

    cli_job cj;
    if (cli_job_init(&cj, "tokenize", json)) {
        fprintf(stderr, "llmpack tokenize: out of memory\n");
        return CLI_EXIT_RUNTIME;
    }
    tok_tokenizer *tok = NULL;
    int rc = llmpack_open_tokenizer(cj.j, model, &tok);
    lpk_error err = *llmpack_job_lpk_error(cj.j);
    cli_job_free(&cj);
    char *buf = NULL;
    int32_t *ids = NULL;
    size_t n_text = 0, n_ids = 0;
    if (!rc && file && !(buf = read_input(file, &n_text, &err))) rc = err.status;
    if (!rc && text) n_text = strlen(text);
    if (!rc) rc = tok_encode(tok, buf ? buf : text, n_text, bos, special, &ids, &n_ids, &err);
    if (rc) {
        cli_print_error("tokenize", &err);
        free(buf);
        tok_tokenizer_free(tok);
        return cli_exit_for(rc);
    }

    char piece[1024];
    if (json) {
        json_t *o = json_object(), *a = json_array(), *p = pieces ? json_array() : NULL;
        for (size_t i = 0; i < n_ids; i++) {
            json_array_append_new(a, json_integer(ids[i]));
            if (p) {
                int len = tok_decode_token(tok, ids[i], piece, sizeof piece);
                /* Pieces that are not valid UTF-8 on their own (byte tokens) go as
                 * null; their id says what they are. */
                json_t *s = json_stringn(piece, len > 0 ? (size_t)len : 0);
                if (!s) s = json_null();
                json_array_append_new(p, s);
            }
        }
        json_object_set_new(o, "ids", a);
        if (p) json_object_set_new(o, "pieces", p);
        json_object_set_new(o, "n_tokens", json_integer((json_int_t)n_ids));
        cli_json_print(o);
    } else if (pieces) {
        for (size_t i = 0; i < n_ids; i++) {
            int len = tok_decode_token(tok, ids[i], piece, sizeof piece);
            printf("%d\t'", ids[i]);
            for (int j = 0; j < len; j++) {
                unsigned char c = (unsigned char)piece[j];
                if (c == '\n') fputs("\\n", stdout);
                else if (c == '\t') fputs("\\t", stdout);
                else if (c == '\r') fputs("\\r", stdout);
                else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
                else putchar(c);
            }
            fputs("'\n", stdout);
        }
    } else {
        for (size_t i = 0; i < n_ids; i++) printf("%s%d", i ? " " : "", ids[i]);
        putchar('\n');
    }
    free(ids);
    free(buf);
    tok_tokenizer_free(tok);
    return CLI_EXIT_OK;
}
