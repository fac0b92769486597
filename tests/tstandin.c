/* Stand-in tokenizers (tstandin.h): the published formats written from
 * scratch, SentencePiece's ModelProto and Hugging Face's tokenizer.json. */
#include "tutil.h"
#include "tstandin.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

static char *standin_dir;
static pid_t standin_owner;

static void standin_cleanup(void)
{
    if (standin_dir && getpid() == standin_owner) tu_rmtree(standin_dir);
}

/* The made-up ordinary pieces: letters, every other one after "▁". */
void ts_llama2_piece(int id, char *out, size_t cap, float *score, int *type)
{
    static const char *const special[] = {"<unk>", "<s>", "</s>"};
    *score = 0.0f;
    if (id < 3) {
        snprintf(out, cap, "%s", special[id]);
        *type = id ? 3 : 2;
    } else if (id < 259) {
        snprintf(out, cap, "<0x%02X>", id - 3);
        *type = 6;
    } else {
        int k = id - 259, o = 0;
        *score = -(float)(k + 1);
        *type = 1;
        if (k & 1) o = snprintf(out, cap, "\xe2\x96\x81");
        char rev[16];
        int nr = 0;
        for (int v = k / 2 + 1; v > 0; v = (v - 1) / 26) rev[nr++] = (char)('a' + (v - 1) % 26);
        while (nr) out[o++] = rev[--nr];
        out[o] = 0;
    }
}


static void pb_varint(tu_buf *b, uint64_t v)
{
    uint8_t t[10];
    int n = 0;
    do {
        t[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    tu_buf_put(b, t, (size_t)n);
}

static void pb_field_varint(tu_buf *b, uint32_t field, uint64_t v)
{
    pb_varint(b, (uint64_t)field << 3);
    pb_varint(b, v);
}

static void pb_field_bytes(tu_buf *b, uint32_t field, const void *d, size_t n)
{
    pb_varint(b, (uint64_t)field << 3 | 2);
    pb_varint(b, n);
    tu_buf_put(b, d, n);
}

/* A SentencePiece ModelProto (sentencepiece_model.proto) of Llama 2's shape:
 * 32000 pieces (llama2_piece), trainer_spec BPE with byte fallback, unk 0,
 * bos 1, eos 2, pad -1, normalizer "identity" with add_dummy_prefix. */
static void write_llama2_standin(const char *dest)
{
    tu_buf b = {0}, sub = {0};
    char s[64];
    for (int id = 0; id < 32000; id++) {
        float score;
        int type;
        ts_llama2_piece(id, s, sizeof s, &score, &type);
        sub.n = 0;
        pb_field_bytes(&sub, 1, s, strlen(s));
        uint8_t f[5] = {2 << 3 | 5};
        memcpy(f + 1, &score, 4);
        tu_buf_put(&sub, f, 5);
        if (type != 1) pb_field_varint(&sub, 3, (uint64_t)type);
        pb_field_bytes(&b, 1, sub.p, sub.n);
    }
    sub.n = 0;
    pb_field_varint(&sub, 3, 2);          /* model_type BPE */
    pb_field_varint(&sub, 4, 32000);      /* vocab_size */
    pb_field_varint(&sub, 35, 1);         /* byte_fallback */
    pb_field_varint(&sub, 40, 0);         /* unk_id */
    pb_field_varint(&sub, 41, 1);         /* bos_id */
    pb_field_varint(&sub, 42, 2);         /* eos_id */
    pb_field_varint(&sub, 43, UINT64_MAX); /* pad_id -1 */
    pb_field_bytes(&b, 2, sub.p, sub.n);
    sub.n = 0;
    pb_field_bytes(&sub, 1, "identity", 8);
    pb_field_varint(&sub, 3, 1);          /* add_dummy_prefix */
    pb_field_varint(&sub, 4, 0);          /* remove_extra_whitespaces */
    pb_field_bytes(&b, 3, sub.p, sub.n);
    assert_int_equal(tu_write_file(dest, b.p, b.n), 0);
    free(b.p);
    free(sub.p);
}

/* Code point of byte b in GPT-2's byte-level alphabet. */
static uint32_t cp_of_byte(int b)
{
    int k = 0;
    for (int x = 0; x < 256; x++) {
        int printable = (x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || x >= 0xae;
        if (x == b) return printable ? (uint32_t)x : 0x100u + (uint32_t)k;
        if (!printable) k++;
    }
    return 0;
}

/* The alphabet's i-th character in UTF-8 (Llama 3's ids 0..255: the printable
 * bytes in order, then the others from U+0100 up). */
static void alpha_utf8(int i, char *out)
{
    static int order[256], done;
    if (!done) {
        int o = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int x = 0; x < 256; x++)
                if ((cp_of_byte(x) < 0x100) == !pass) order[o++] = x;
        done = 1;
    }
    uint32_t cp = cp_of_byte(order[i]);
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

/* Llama 3's names of the 256 special tokens (3.0: 128002..128005 reserved 0..3,
 * header ids, 128008 reserved 4, eot_id, then reserved 5..250). */
static void llama3_name(int i, char *out, size_t cap)
{
    static const char *const fixed[] = {"<|begin_of_text|>", "<|end_of_text|>", NULL, NULL,
                                        NULL, NULL, "<|start_header_id|>",
                                        "<|end_header_id|>", NULL, "<|eot_id|>"};
    if (i < 10 && fixed[i]) snprintf(out, cap, "%s", fixed[i]);
    else snprintf(out, cap, "<|reserved_special_token_%d|>", i < 6 ? i - 2 : i == 8 ? 4 : i - 5);
}

/* A byte-level BPE tokenizer.json of Llama 3's shape: 128000 tokens (the 256
 * alphabet characters, then made-up two- and three-character tokens, each with
 * the merge that makes it), Llama 3's pre-tokenizer pattern, ByteLevel
 * post-processor and decoder, and the 256 special tokens at 128000..128255. */
static void write_llama3_standin(const char *dest)
{
    json_t *vocab = json_object(), *merges = json_array(), *added = json_array();
    char a[8], c[8], tok[32], mg[48];
    int id = 0;
    for (int i = 0; i < 256; i++, id++) {
        alpha_utf8(i, a);
        json_object_set_new(vocab, a, json_integer(id));
    }
    for (int i = 0; i < 256; i++)
        for (int j = 0; j < 256; j++, id++) {
            alpha_utf8(i, a);
            alpha_utf8(j, c);
            snprintf(tok, sizeof tok, "%s%s", a, c);
            snprintf(mg, sizeof mg, "%s %s", a, c);
            json_object_set_new(vocab, tok, json_integer(id));
            json_array_append_new(merges, json_string(mg));
        }
    for (int t = 0; id < 128000; t++, id++) {
        alpha_utf8(t / 256 / 256, a);
        alpha_utf8(t / 256 % 256, c);
        snprintf(tok, sizeof tok, "%s%s", a, c);
        alpha_utf8(t % 256, c);
        snprintf(mg, sizeof mg, "%s %s", tok, c);
        strcat(tok, c);
        json_object_set_new(vocab, tok, json_integer(id));
        json_array_append_new(merges, json_string(mg));
    }
    for (int i = 0; i < 256; i++) {
        llama3_name(i, tok, sizeof tok);
        json_array_append_new(added,
                              json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", 128000 + i,
                                        "content", tok, "single_word", 0, "lstrip", 0, "rstrip",
                                        0, "normalized", 0, "special", 1));
    }
    static const char pattern[] =
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
        " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    json_t *root = json_pack(
        "{s:s, s:n, s:n, s:o, s:n,"
        " s:{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]},"
        " s:{s:s, s:b, s:b, s:b}, s:{s:s, s:b, s:b, s:b},"
        " s:{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}}",
        "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer",
        "pre_tokenizer", "type", "Sequence", "pretokenizers", "type", "Split", "pattern", "Regex",
        pattern, "behavior", "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space", 0,
        "trim_offsets", 1, "use_regex", 0,
        "post_processor", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 0,
        "use_regex", 1,
        "decoder", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1, "use_regex", 1,
        "model", "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix",
        "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 1, "vocab",
        vocab, "merges", merges);
    assert_non_null(root);
    assert_int_equal(json_dump_file(root, dest, JSON_COMPACT), 0);
    json_decref(root);
}

/* Llama 3's tokenizer_config.json as far as a converter reads it: the 256
 * special tokens in added_tokens_decoder, bos/eos names, transformers' 1e30
 * model_max_length, and a chat template (the test's own text: the check is that
 * the file's template is carried). */
static void write_llama3_config_standin(const char *dest)
{
    json_t *dec = json_object();
    char nm[64], idt[16];
    for (int i = 0; i < 256; i++) {
        llama3_name(i, nm, sizeof nm);
        snprintf(idt, sizeof idt, "%d", 128000 + i);
        json_object_set_new(dec, idt,
                            json_pack("{s:s, s:b, s:b, s:b, s:b, s:b}", "content", nm, "lstrip", 0,
                                      "normalized", 0, "rstrip", 0, "single_word", 0, "special",
                                      1));
    }
    json_t *root = json_pack(
        "{s:o, s:s, s:s, s:b, s:s, s:[s, s], s:s}", "added_tokens_decoder", dec, "bos_token",
        "<|begin_of_text|>", "chat_template",
        "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
        "'<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
        "{% endif %}",
        "clean_up_tokenization_spaces", 1, "eos_token", "<|end_of_text|>", "model_input_names",
        "input_ids", "attention_mask", "tokenizer_class", "PreTrainedTokenizerFast");
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    assert_non_null(text);
    /* a number jansson cannot hold: int(1e30) as transformers writes it */
    char *out = tu_fmt("{\n  \"model_max_length\": 1000000000000000019884624838656,%s", text + 1);
    assert_int_equal(tu_write_file(dest, out, strlen(out)), 0);
    free(out);
    free(text);
    json_decref(root);
}

const char *ts_tokenizer(const char *rel, int *standin)
{
    const char *s = tu_shared(rel);
    if (s) return s;
    static const struct {
        const char *rel, *base;
        void (*write)(const char *);
    } known[] = {
        {"tokenizers/llama2/tokenizer.model", "llama2.model", write_llama2_standin},
        {"tokenizers/llama3/tokenizer.json", "llama3.json", write_llama3_standin},
        {"tokenizers/llama3/tokenizer_config.json", "llama3_config.json",
         write_llama3_config_standin},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (strcmp(rel, known[i].rel)) continue;
        if (!standin_dir) {
            standin_dir = tu_tmpdir();
            standin_owner = getpid();
            atexit(standin_cleanup);
        }
        static char path[4096];
        snprintf(path, sizeof path, "%s/%s", standin_dir, known[i].base);
        if (!tu_exists(path)) known[i].write(path);
        *standin = 1;
        return path;
    }
    fail_msg("../shared/%s not found and no stand-in for it", rel);
    return NULL;
}
