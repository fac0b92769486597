/* The merge loop shared by SentencePiece BPE and byte-level BPE.
 *
 * The text is a chain of symbols; every adjacent pair that may merge is a
 * candidate in a max-heap (priority: SentencePiece piece score, or minus the
 * BPE merge rank; ties go to the leftmost pair). The best candidate merges,
 * then its new neighbours become candidates. Candidates made stale by an
 * earlier merge are recognised by the length of their symbols (a symbol only
 * grows by absorbing its right neighbour, whose length becomes 0). Each merge
 * adds at most two candidates, so a whole text costs O(n log n), as
 * llama.cpp's llm_tokenizer_spm/bpe do; the order of merges is the same. */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct tok_sym {
    int32_t prev, next;     /* chain; -1 at the ends */
    uint32_t off, n;        /* bytes of the working text; n == 0: merged away */
    int32_t id;             /* token of these bytes, -1 if none */
} tok_sym;

typedef struct tok_cand {
    float prio;
    int32_t left, right;
    uint32_t size;          /* n of both symbols when the candidate was made */
    int32_t result;
} tok_cand;

typedef struct tok_heap {
    tok_cand *a;
    size_t n, cap;
} tok_heap;

static int cand_before(const tok_cand *x, const tok_cand *y)
{
    return x->prio > y->prio || (x->prio == y->prio && x->left < y->left);
}

static int heap_push(tok_heap *h, tok_cand c)
{
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 64;
        tok_cand *na = realloc(h->a, nc * sizeof *na);
        if (!na) return LPK_ENOMEM;
        h->a = na;
        h->cap = nc;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&c, &h->a[p])) break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = c;
    return LPK_OK;
}

static tok_cand heap_pop(tok_heap *h)
{
    tok_cand top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && cand_before(&h->a[c + 1], &h->a[c])) c++;
        if (!cand_before(&h->a[c], &last)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n) h->a[i] = last;
    return top;
}

static const tok_pair *pair_find(const tok_tokenizer *t, int32_t l, int32_t r)
{
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    uint64_t h = key * 0x9e3779b97f4a7c15ull;
    for (size_t i = (size_t)(h >> 20) & t->pair_mask;; i = (i + 1) & t->pair_mask) {
        if (t->pairs[i].key == key) return &t->pairs[i];
        if (t->pairs[i].key == UINT64_MAX) return NULL;
    }
}

/* Adds the candidate (l, r) if the two symbols may merge. */
static int try_pair(const tok_tokenizer *t, const char *text, const tok_sym *s, int32_t l,
                    int32_t r, tok_heap *h)
{
    if (l < 0 || r < 0) return LPK_OK;
    tok_cand c = {0, l, r, s[l].n + s[r].n, -1};
    if (t->kind == TOK_KIND_SPM) {
        c.result = tok_strmap_find(t, text + s[l].off, c.size);
        if (c.result < 0) return LPK_OK;
        c.prio = t->score[c.result];
    } else {
        if (s[l].id < 0 || s[r].id < 0) return LPK_OK;
        const tok_pair *p = pair_find(t, s[l].id, s[r].id);
        if (!p) return LPK_OK;
        c.prio = -(float)p->rank;
        c.result = p->result;
    }
    return heap_push(h, c);
}

static int merge_all(const tok_tokenizer *t, const char *text, tok_sym *s, size_t ns)
{
    tok_heap h = {0};
    int rc = LPK_OK;
    for (size_t i = 0; i + 1 < ns && !rc; i++)
        rc = try_pair(t, text, s, (int32_t)i, (int32_t)i + 1, &h);
    while (!rc && h.n) {
        tok_cand c = heap_pop(&h);
        tok_sym *l = &s[c.left], *r = &s[c.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != c.size) continue;
        l->n += r->n;
        l->id = c.result;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s[r->next].prev = c.left;
        rc = try_pair(t, text, s, l->prev, c.left, &h);
        if (!rc) rc = try_pair(t, text, s, c.left, l->next, &h);
    }
    free(h.a);
    return rc;
}

/* A symbol that is no token becomes its bytes' tokens (SentencePiece byte
 * fallback, <0xNN>); without byte tokens, one unk for the whole symbol. */
static int emit_bytes(const tok_tokenizer *t, const char *p, uint32_t n, tok_int_vec *out,
                      lpk_error *err)
{
    for (uint32_t i = 0; i < n; i++) {
        int32_t id = t->byte_tok[(uint8_t)p[i]];
        if (id < 0) {
            if (t->unk < 0)
                return lpk_err(err, LPK_EUNSUPPORTED,
                               "tokenizer: byte 0x%02x has no token and there is no unknown "
                               "token", (uint8_t)p[i]);
            return tok_ivec_push(out, t->unk) ? LPK_ENOMEM : LPK_OK;
        }
        if (tok_ivec_push(out, id)) return LPK_ENOMEM;
    }
    return LPK_OK;
}

static int emit_chain(const tok_tokenizer *t, const char *text, const tok_sym *s, size_t ns,
                      tok_int_vec *out, lpk_error *err)
{
    for (int32_t i = ns ? 0 : -1; i >= 0; i = s[i].next) {
        int rc = s[i].id >= 0 ? (tok_ivec_push(out, s[i].id) ? LPK_ENOMEM : LPK_OK)
                              : emit_bytes(t, text + s[i].off, s[i].n, out, err);
        /* out of memory gets its message here; emit_bytes set the others */
        if (rc == LPK_ENOMEM) return lpk_err(err, rc, "tokenizer: out of memory");
        if (rc) return rc;
    }
    return LPK_OK;
}

/* UTF-8 sequence length from the lead byte, as SentencePiece/llama.cpp count
 * it (a stray continuation byte is a symbol of its own). */
static uint32_t utf8_len(uint8_t b)
{
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[b >> 4];
}

int tok_spm_encode(const tok_tokenizer *t, const char *text, size_t n, int add_prefix,
                   tok_int_vec *out, lpk_error *err)
{
    /* Working text: optional dummy-prefix space, then spaces escaped as U+2581. */
    if (n > (SIZE_MAX - 3) / 3 || n > (size_t)UINT32_MAX / 3 - 1)
        return lpk_err(err, LPK_ENOMEM, "tokenizer: text of %zu bytes is too long", n);
    size_t cap = 3 * (n + 1);
    char *w = malloc(cap);
    tok_sym *s = malloc(cap * sizeof *s);
    if (!w || !s) {
        free(w);
        free(s);
        return lpk_err(err, LPK_ENOMEM, "tokenizer: out of memory for %zu bytes", n);
    }
    size_t wn = 0;
    if (add_prefix) {
        memcpy(w, "\xe2\x96\x81", 3);
        wn = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (text[i] == ' ') {
            memcpy(w + wn, "\xe2\x96\x81", 3);
            wn += 3;
        } else {
            w[wn++] = text[i];
        }
    }
    size_t ns = 0;
    for (size_t off = 0; off < wn; ns++) {
        uint32_t len = utf8_len((uint8_t)w[off]);
        if (len > wn - off) len = (uint32_t)(wn - off);
        s[ns] = (tok_sym){(int32_t)ns - 1, (int32_t)ns + 1, (uint32_t)off, len,
                         tok_strmap_find(t, w + off, len)};
        off += len;
    }
    if (ns) s[ns - 1].next = -1;
    int rc = merge_all(t, w, s, ns);
    if (rc) rc = lpk_err(err, rc, "tokenizer: out of memory while merging");
    else rc = emit_chain(t, w, s, ns, out, err);
    free(w);
    free(s);
    return rc;
}

int tok_bpe_encode_word(const tok_tokenizer *t, const char *word, size_t n, tok_int_vec *out,
                        lpk_error *err)
{
    if (n == 0) return LPK_OK;
    if (t->ignore_merges) {
        int32_t id = tok_strmap_find(t, word, n);
        if (id >= 0)
            return tok_ivec_push(out, id) ? lpk_err(err, LPK_ENOMEM, "tokenizer: out of memory")
                                         : LPK_OK;
    }
    if (n > INT32_MAX) return lpk_err(err, LPK_ENOMEM, "tokenizer: pre-token too long");
    tok_sym stack[64];
    tok_sym *s = n <= 64 ? stack : malloc(n * sizeof *s);
    if (!s) return lpk_err(err, LPK_ENOMEM, "tokenizer: out of memory");
    /* Symbols start as single bytes (byte-level BPE has a token per byte). */
    for (size_t i = 0; i < n; i++)
        s[i] = (tok_sym){(int32_t)i - 1, (int32_t)i + 1, (uint32_t)i, 1,
                        t->byte_tok[(uint8_t)word[i]]};
    s[n - 1].next = -1;
    int rc = merge_all(t, word, s, n);
    if (rc) rc = lpk_err(err, rc, "tokenizer: out of memory while merging");
    else rc = emit_chain(t, word, s, n, out, err);
    if (s != stack) free(s);
    return rc;
}
