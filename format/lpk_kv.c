/* The metadata section's key/value encoding (docs/FORMAT.md, "Metadata"). */
#include "lpk.h"
#include "lpk_internal.h"

#include <stdlib.h>
#include <string.h>

#include "lpk_xxh.h"

uint64_t lpk_header_hash(const uint8_t *buf, uint64_t n)
{
    static const uint8_t zero[8];
    XXH3_state_t *st = XXH3_createState();
    if (!st) return 0;
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, buf, LPK_H_HEADER_XXH3);
    XXH3_64bits_update(st, zero, 8);
    XXH3_64bits_update(st, buf + LPK_H_HEADER_XXH3 + 8, (size_t)(n - LPK_H_HEADER_XXH3 - 8));
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

/* ---------------------------------------------------------------- encode */
typedef struct obuf {
    uint8_t *p;
    uint64_t n, cap;
    int failed;
} obuf;

static uint8_t *ob_room(obuf *b, uint64_t n)
{
    if (b->failed) return NULL;
    if (n > SIZE_MAX - b->n) { b->failed = 1; return NULL; }
    if (b->n + n > b->cap) {
        uint64_t nc = b->cap ? b->cap : 4096;
        while (nc < b->n + n) {
            if (nc > SIZE_MAX / 2) { b->failed = 1; return NULL; }
            nc *= 2;
        }
        uint8_t *q = realloc(b->p, (size_t)nc);
        if (!q) { b->failed = 1; return NULL; }
        b->p = q;
        b->cap = nc;
    }
    uint8_t *r = b->p + b->n;
    b->n += n;
    return r;
}

static void ob_u32(obuf *b, uint32_t v)
{
    uint8_t *p = ob_room(b, 4);
    if (p) lpk_wr32(p, v);
}

static void ob_u64(obuf *b, uint64_t v)
{
    uint8_t *p = ob_room(b, 8);
    if (p) lpk_wr64(p, v);
}

static void ob_bytes(obuf *b, const void *s, uint64_t n)
{
    uint8_t *p = ob_room(b, n);
    if (p && n) memcpy(p, s, (size_t)n);
}

static void ob_str(obuf *b, const char *s, uint64_t n)
{
    ob_u64(b, n);
    ob_bytes(b, s, n);
}

int lpk_kv_encode(const lpk_meta *m, uint8_t **out, uint64_t *out_size, lpk_error *err)
{
    obuf b = {0};
    size_t n = lpk_meta_count(m);
    *out = NULL;
    *out_size = 0;
    if (n > LPK_META_MAX_KEYS)
        return lpk_err(err, LPK_EINVAL, "metadata has %zu keys (at most %u)", n,
                       LPK_META_MAX_KEYS);
    for (size_t i = 0; i < n; i++) {
        const lpk_kv *kv = lpk_meta_at(m, i);
        size_t kl = strlen(kv->key);
        if (kl == 0 || kl > LPK_KEY_MAX) {
            free(b.p);
            return lpk_err(err, LPK_EINVAL, "metadata key '%.64s': length %zu not in 1..%u",
                           kv->key, kl, LPK_KEY_MAX);
        }
        ob_str(&b, kv->key, kl);
        ob_u32(&b, (uint32_t)kv->type);
        if (kv->type == LPK_V_STR) {
            ob_str(&b, kv->str.p, kv->str.n);
        } else if (kv->type == LPK_V_ARR) {
            ob_u32(&b, (uint32_t)kv->elem);
            ob_u64(&b, kv->count);
            if (kv->elem == LPK_V_STR) {
                for (uint64_t j = 0; j < kv->count; j++) {
                    lpk_str s = lpk_kv_str_at(kv, j);
                    ob_str(&b, s.p, s.n);
                }
            } else {
                /* host order is little-endian (lpk_internal.h) */
                uint64_t es = lpk_vtype_size(kv->elem);
                if (kv->count > UINT64_MAX / es) b.failed = 1;
                else ob_bytes(&b, kv->data, kv->count * es);
            }
        } else {
            ob_bytes(&b, kv->data, lpk_vtype_size(kv->type));
        }
        if (b.failed) break;
    }
    if (b.failed) {
        free(b.p);
        return lpk_err(err, LPK_ENOMEM, "out of memory encoding metadata");
    }
    if (b.n > LPK_META_MAX) {
        free(b.p);
        return lpk_err(err, LPK_EINVAL, "metadata encodes to %llu bytes (at most %llu)",
                       (unsigned long long)b.n, (unsigned long long)LPK_META_MAX);
    }
    *out = b.p;
    *out_size = b.n;
    return LPK_OK;
}

/* ---------------------------------------------------------------- decode */
typedef struct cursor {
    const uint8_t *p;
    uint64_t n, pos;
    const char *what;
    lpk_error *err;
} cursor;

static int need(cursor *c, uint64_t n, const char *field)
{
    if (n > c->n - c->pos)
        return lpk_err(c->err, LPK_ECORRUPT,
                       "%s: %s at byte %llu needs %llu bytes, only %llu left", c->what, field,
                       (unsigned long long)c->pos, (unsigned long long)n,
                       (unsigned long long)(c->n - c->pos));
    return LPK_OK;
}

static int get_u32(cursor *c, uint32_t *v, const char *field)
{
    int st = need(c, 4, field);
    if (st) return st;
    *v = lpk_rd32(c->p + c->pos);
    c->pos += 4;
    return LPK_OK;
}

static int get_u64(cursor *c, uint64_t *v, const char *field)
{
    int st = need(c, 8, field);
    if (st) return st;
    *v = lpk_rd64(c->p + c->pos);
    c->pos += 8;
    return LPK_OK;
}

/* A length-prefixed string; *s points into the buffer. */
static int get_str(cursor *c, const char **s, uint64_t *len, const char *field)
{
    uint64_t at = c->pos;
    int st = get_u64(c, len, field);
    if (st) return st;
    if (*len > c->n - c->pos)
        return lpk_err(c->err, LPK_ECORRUPT,
                       "%s: %s at byte %llu declares %llu bytes, only %llu left", c->what,
                       field, (unsigned long long)at, (unsigned long long)*len,
                       (unsigned long long)(c->n - c->pos));
    *s = (const char *)c->p + c->pos;
    c->pos += *len;
    return LPK_OK;
}

static int decode_one(cursor *c, lpk_meta *m, uint64_t idx)
{
    const char *kp;
    uint64_t kl, at = c->pos;
    int st = get_str(c, &kp, &kl, "key length");
    if (st) return st;
    if (kl == 0 || kl > LPK_KEY_MAX || memchr(kp, 0, (size_t)kl))
        return lpk_err(c->err, LPK_ECORRUPT,
                       "%s: key #%llu at byte %llu: length %llu not in 1..%u or contains NUL",
                       c->what, (unsigned long long)idx, (unsigned long long)at,
                       (unsigned long long)kl, LPK_KEY_MAX);
    char key[LPK_KEY_MAX + 1];
    memcpy(key, kp, (size_t)kl);
    key[kl] = '\0';
    if (lpk_meta_find(m, key))
        return lpk_err(c->err, LPK_ECORRUPT, "%s: duplicate key '%.200s' at byte %llu", c->what,
                       key, (unsigned long long)at);
    uint32_t type;
    uint64_t tpos = c->pos;
    if ((st = get_u32(c, &type, "value type"))) return st;
    if (type >= LPK_V_COUNT)
        return lpk_err(c->err, LPK_ECORRUPT, "%s: key '%.200s': unknown value type %u at byte %llu",
                       c->what, key, type, (unsigned long long)tpos);
    if (type == LPK_V_STR) {
        const char *s;
        uint64_t n;
        if ((st = get_str(c, &s, &n, "string length"))) return st;
        st = lpk_meta_set_strn(m, key, s, n);
    } else if (type == LPK_V_ARR) {
        uint32_t elem;
        uint64_t count, cpos;
        if ((st = get_u32(c, &elem, "array element type"))) return st;
        if (elem >= LPK_V_COUNT || elem == LPK_V_ARR)
            return lpk_err(c->err, LPK_ECORRUPT,
                           "%s: key '%.200s': bad array element type %u at byte %llu", c->what,
                           key, elem, (unsigned long long)(c->pos - 4));
        cpos = c->pos;
        if ((st = get_u64(c, &count, "array count"))) return st;
        uint64_t min_elem = elem == LPK_V_STR ? 8 : lpk_vtype_size((int)elem);
        if (count > (c->n - c->pos) / min_elem)
            return lpk_err(c->err, LPK_ECORRUPT,
                           "%s: key '%.200s': array count %llu at byte %llu does not fit in the "
                           "%llu bytes left",
                           c->what, key, (unsigned long long)count, (unsigned long long)cpos,
                           (unsigned long long)(c->n - c->pos));
        if (elem == LPK_V_STR) {
            /* count <= bytes left / 8, so these allocations are bounded by the section */
            const char **ps = malloc((size_t)(count ? count : 1) * sizeof *ps);
            uint64_t *ls = malloc((size_t)(count ? count : 1) * sizeof *ls);
            if (!ps || !ls) {
                free(ps);
                free(ls);
                return lpk_err(c->err, LPK_ENOMEM, "%s: out of memory for key '%.200s'",
                               c->what, key);
            }
            for (uint64_t i = 0; i < count && !st; i++)
                st = get_str(c, &ps[i], &ls[i], "array string length");
            if (!st) st = lpk_meta_set_str_arr(m, key, ps, ls, count);
            free(ps);
            free(ls);
        } else {
            const uint8_t *d = c->p + c->pos;
            if (elem == LPK_V_BOOL)
                for (uint64_t i = 0; i < count; i++)
                    if (d[i] > 1)
                        return lpk_err(c->err, LPK_ECORRUPT,
                                       "%s: key '%.200s': bool element %llu is %u (must be 0 or 1)",
                                       c->what, key, (unsigned long long)i, d[i]);
            c->pos += count * min_elem;
            st = lpk_meta_set_arr(m, key, (int)elem, d, count);
        }
    } else {
        uint64_t sz = lpk_vtype_size((int)type);
        if ((st = need(c, sz, "value"))) return st;
        const uint8_t *d = c->p + c->pos;
        if (type == LPK_V_BOOL && d[0] > 1)
            return lpk_err(c->err, LPK_ECORRUPT, "%s: key '%.200s': bool is %u (must be 0 or 1)",
                           c->what, key, d[0]);
        c->pos += sz;
        st = lpk_meta_set_scalar(m, key, (int)type, d);
    }
    if (st) return lpk_err(c->err, st, "%s: cannot store key '%.200s'", c->what, key);
    return LPK_OK;
}

int lpk_kv_decode(const uint8_t *buf, uint64_t size, uint64_t count, lpk_meta *m,
                  const char *what, lpk_error *err)
{
    cursor c = {buf, size, 0, what, err};
    if (count > LPK_META_MAX_KEYS)
        return lpk_err(err, LPK_ECORRUPT, "%s: %llu keys declared (at most %u)", what,
                       (unsigned long long)count, LPK_META_MAX_KEYS);
    for (uint64_t i = 0; i < count; i++) {
        int st = decode_one(&c, m, i);
        if (st) return st;
    }
    if (c.pos != size)
        return lpk_err(err, LPK_ECORRUPT, "%s: %llu bytes left after the last of %llu keys", what,
                       (unsigned long long)(size - c.pos), (unsigned long long)count);
    return LPK_OK;
}
