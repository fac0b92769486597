/* A calibration text's token ids, read and tokenized piece by piece (calib.h). */
#include "calib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <xxhash.h>

#define DEFAULT_BLOCK ((size_t)64 << 10)

struct calib_text {
    const char *path;
    const tok_tokenizer *tok;
    FILE *f;
    size_t block;         /* bytes read at a time */
    int whole;            /* the text was read and encoded whole */
    int eof, first, done; /* done: every id is in ids[] */
    char *buf;            /* (cap) bytes read but not yet encoded: buf[0..len) */
    size_t cap, len;
    int32_t *ids;         /* (n_ids) encoded, handed out from pos on */
    size_t n_ids, pos;
    XXH3_state_t *xs;     /* the text's bytes encoded so far */
    uint64_t n_text;
};

/* Bytes into buf: at least one block, or as many as it already holds (so a
 * text without a cut point costs O(n), not O(n^2)). */
static int fill(calib_text *s, lpk_error *err)
{
    size_t want = s->len > s->block ? s->len : s->block;
    if (s->cap - s->len < want) {
        if (want > SIZE_MAX / 2 - s->len)
            return lpk_err(err, LPK_ENOMEM, "%s: text too long", s->path);
        size_t nc = s->len + want;
        char *nb = realloc(s->buf, nc);
        if (!nb) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", s->path);
        s->buf = nb;
        s->cap = nc;
    }
    size_t got = fread(s->buf + s->len, 1, s->cap - s->len, s->f);
    s->len += got;
    if (got == 0) {
        if (ferror(s->f)) return lpk_err(err, LPK_EIO, "%s: read error", s->path);
        s->eof = 1;
    }
    return LPK_OK;
}

/* Encodes the next piece of text into ids (replacing those handed out). */
static int advance(calib_text *s, lpk_error *err)
{
    size_t cut = 0;
    int st;
    while (!s->eof && !(cut = tok_cut_point(s->tok, s->buf, s->len)))
        if ((st = fill(s, err))) return st;
    size_t n = cut;
    if (s->eof) { /* the rest; one trailing '\n' dropped, as vf_read_text does */
        n = s->len;
        if (n && s->buf[n - 1] == '\n') n--;
    }
    free(s->ids);
    s->ids = NULL;
    s->n_ids = s->pos = 0;
    st = s->first ? tok_encode(s->tok, s->buf, n, 1, 0, &s->ids, &s->n_ids, err)
                  : tok_encode_cont(s->tok, s->buf, n, 0, &s->ids, &s->n_ids, err);
    if (st) return st;
    s->first = 0;
    if (XXH3_64bits_update(s->xs, s->buf, n) == XXH_ERROR)
        return lpk_err(err, LPK_ENOMEM, "%s: hashing failed", s->path);
    s->n_text += n;
    if (s->eof) {
        s->done = 1;
        s->len = 0;
    } else {
        memmove(s->buf, s->buf + cut, s->len - cut);
        s->len -= cut;
    }
    return LPK_OK;
}

int calib_text_open(const char *path, const tok_tokenizer *tok, size_t block, calib_text **out,
                    lpk_error *err)
{
    *out = NULL;
    calib_text *s = calloc(1, sizeof *s);
    if (!s || !(s->xs = XXH3_createState())) {
        free(s);
        return lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
    }
    XXH3_64bits_reset(s->xs);
    s->path = path;
    s->tok = tok;
    s->block = block ? block : DEFAULT_BLOCK;
    s->first = 1;
    int st = LPK_OK;
    struct stat sb;
    if (!(s->f = fopen(path, "rb"))) {
        st = lpk_err(err, LPK_EIO, "%s: cannot open", path);
    } else if (!tok_tokenizer_can_cut(tok) || fstat(fileno(s->f), &sb) || !S_ISREG(sb.st_mode)) {
        /* no proven cut rule, or a pipe (calib_text_count cannot read it
         * twice): the whole text at once */
        s->whole = 1;
        while (!st && !s->eof) st = fill(s, err);
        if (!st) st = advance(s, err);
        free(s->buf);
        s->buf = NULL;
        s->cap = 0;
    }
    if (st) {
        calib_text_close(s);
        return st;
    }
    *out = s;
    return LPK_OK;
}

void calib_text_close(calib_text *s)
{
    if (!s) return;
    if (s->f) fclose(s->f);
    free(s->buf);
    free(s->ids);
    XXH3_freeState(s->xs);
    free(s);
}

int calib_text_whole(const calib_text *s) { return s->whole; }

int calib_text_read(calib_text *s, int32_t *ids, size_t n, size_t *got, lpk_error *err)
{
    *got = 0;
    while (*got < n) {
        if (s->pos == s->n_ids) {
            if (s->done) break;
            int st = advance(s, err);
            if (st) return st;
            continue;
        }
        size_t k = s->n_ids - s->pos;
        if (k > n - *got) k = n - *got;
        memcpy(ids + *got, s->ids + s->pos, k * sizeof *ids);
        s->pos += k;
        *got += k;
    }
    return LPK_OK;
}

int calib_text_count(const calib_text *s, size_t max, size_t *n, lpk_error *err)
{
    *n = 0;
    if (s->whole) {
        *n = s->n_ids < max ? s->n_ids : max;
        return LPK_OK;
    }
    calib_text *c = NULL;
    int32_t *tmp = malloc(DEFAULT_BLOCK * sizeof *tmp);
    int st = tmp ? calib_text_open(s->path, s->tok, s->block, &c, err)
                 : lpk_err(err, LPK_ENOMEM, "%s: out of memory", s->path);
    while (!st && *n < max) {
        size_t want = max - *n < DEFAULT_BLOCK ? max - *n : DEFAULT_BLOCK, got;
        if ((st = calib_text_read(c, tmp, want, &got, err)) || got == 0) break;
        *n += got;
    }
    calib_text_close(c);
    free(tmp);
    return st;
}

int calib_text_hash(calib_text *s, uint64_t *hash, lpk_error *err)
{
    /* the bytes not yet encoded: hashed only (the same bytes vf_read_text
     * gives, so the same hash as the whole text's) */
    while (!s->done) {
        int st = LPK_OK;
        while (!st && !s->eof) {
            size_t keep = s->len ? 1 : 0; /* the last byte may be the dropped '\n' */
            if (s->len > 1 &&
                XXH3_64bits_update(s->xs, s->buf, s->len - 1) == XXH_ERROR)
                return lpk_err(err, LPK_ENOMEM, "%s: hashing failed", s->path);
            if (s->len > 1) {
                s->n_text += s->len - 1;
                s->buf[0] = s->buf[s->len - 1];
                s->len = keep;
            }
            st = fill(s, err);
        }
        if (st) return st;
        size_t n = s->len;
        if (n && s->buf[n - 1] == '\n') n--;
        if (XXH3_64bits_update(s->xs, s->buf, n) == XXH_ERROR)
            return lpk_err(err, LPK_ENOMEM, "%s: hashing failed", s->path);
        s->n_text += n;
        s->len = 0;
        s->done = 1;
        s->pos = s->n_ids = 0;
    }
    *hash = XXH3_64bits_digest(s->xs);
    return LPK_OK;
}
