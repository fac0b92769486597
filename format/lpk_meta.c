/* The in-memory metadata store: an ordered list of typed key/values. */
#include "lpk.h"

#include <stdlib.h>
#include <string.h>

typedef struct meta_entry {
    lpk_kv kv;        /* public view; pointers into the fields below */
    char *key;
    void *data;       /* scalar / numeric array values, or string bytes */
    uint64_t *offs;   /* string arrays: count + 1 offsets into data */
} meta_entry;

struct lpk_meta {
    meta_entry *e;
    size_t n, cap;
};

static const size_t vsize[LPK_V_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static const char *const vname[LPK_V_COUNT] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                               "bool", "str", "arr", "u64", "i64", "f64"};

const char *lpk_vtype_name(int t) { return (t >= 0 && t < LPK_V_COUNT) ? vname[t] : "?"; }
size_t lpk_vtype_size(int t) { return (t >= 0 && t < LPK_V_COUNT) ? vsize[t] : 0; }

lpk_meta *lpk_meta_new(void) { return calloc(1, sizeof(lpk_meta)); }

static void entry_clear(meta_entry *e)
{
    free(e->key);
    free(e->data);
    free(e->offs);
    memset(e, 0, sizeof *e);
}

void lpk_meta_free(lpk_meta *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n; i++) entry_clear(&m->e[i]);
    free(m->e);
    free(m);
}

static meta_entry *find_entry(const lpk_meta *m, const char *key)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->e[i].key, key) == 0) return &m->e[i];
    return NULL;
}

/* Installs a fully built entry, replacing an existing key in place. */
static int install(lpk_meta *m, meta_entry *ne)
{
    meta_entry *old = find_entry(m, ne->key);
    if (old) {
        entry_clear(old);
        *old = *ne;
        old->kv.key = old->key;
        return LPK_OK;
    }
    if (m->n == m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 16;
        meta_entry *p = realloc(m->e, nc * sizeof *p);
        if (!p) return LPK_ENOMEM;
        m->e = p;
        m->cap = nc;
    }
    m->e[m->n] = *ne;
    m->e[m->n].kv.key = m->e[m->n].key;
    m->n++;
    return LPK_OK;
}

static int start_entry(meta_entry *ne, const char *key)
{
    memset(ne, 0, sizeof *ne);
    if (!key || !*key) return LPK_EINVAL;
    ne->key = strdup(key);
    return ne->key ? LPK_OK : LPK_ENOMEM;
}

static int finish(lpk_meta *m, meta_entry *ne)
{
    int st = install(m, ne);
    if (st) entry_clear(ne);
    return st;
}

int lpk_meta_set_scalar(lpk_meta *m, const char *key, int vtype, const void *value)
{
    if (!m || vtype < 0 || vtype >= LPK_V_COUNT || vtype == LPK_V_STR || vtype == LPK_V_ARR)
        return LPK_EINVAL;
    meta_entry ne;
    int st = start_entry(&ne, key);
    if (st) return st;
    ne.data = malloc(8);
    if (!ne.data) { entry_clear(&ne); return LPK_ENOMEM; }
    memset(ne.data, 0, 8);
    memcpy(ne.data, value, vsize[vtype]);
    if (vtype == LPK_V_BOOL) *(uint8_t *)ne.data = *(const uint8_t *)value ? 1 : 0;
    ne.kv.type = vtype;
    ne.kv.elem = -1;
    ne.kv.count = 1;
    ne.kv.data = ne.data;
    return finish(m, &ne);
}

int lpk_meta_set_u32(lpk_meta *m, const char *k, uint32_t v) { return lpk_meta_set_scalar(m, k, LPK_V_U32, &v); }
int lpk_meta_set_i32(lpk_meta *m, const char *k, int32_t v) { return lpk_meta_set_scalar(m, k, LPK_V_I32, &v); }
int lpk_meta_set_u64(lpk_meta *m, const char *k, uint64_t v) { return lpk_meta_set_scalar(m, k, LPK_V_U64, &v); }
int lpk_meta_set_i64(lpk_meta *m, const char *k, int64_t v) { return lpk_meta_set_scalar(m, k, LPK_V_I64, &v); }
int lpk_meta_set_f32(lpk_meta *m, const char *k, float v) { return lpk_meta_set_scalar(m, k, LPK_V_F32, &v); }
int lpk_meta_set_f64(lpk_meta *m, const char *k, double v) { return lpk_meta_set_scalar(m, k, LPK_V_F64, &v); }
int lpk_meta_set_bool(lpk_meta *m, const char *k, int v)
{
    uint8_t b = v ? 1 : 0;
    return lpk_meta_set_scalar(m, k, LPK_V_BOOL, &b);
}

int lpk_meta_set_strn(lpk_meta *m, const char *key, const char *v, uint64_t n)
{
    if (!m || (!v && n)) return LPK_EINVAL;
    meta_entry ne;
    int st = start_entry(&ne, key);
    if (st) return st;
    if (n > SIZE_MAX - 1) { entry_clear(&ne); return LPK_ENOMEM; }
    ne.data = malloc((size_t)n + 1);
    if (!ne.data) { entry_clear(&ne); return LPK_ENOMEM; }
    if (n) memcpy(ne.data, v, (size_t)n);
    ((char *)ne.data)[n] = '\0';
    ne.kv.type = LPK_V_STR;
    ne.kv.elem = -1;
    ne.kv.count = 1;
    ne.kv.data = ne.data;
    ne.kv.str.p = ne.data;
    ne.kv.str.n = n;
    return finish(m, &ne);
}

int lpk_meta_set_str(lpk_meta *m, const char *key, const char *v)
{
    if (!v) return LPK_EINVAL;
    return lpk_meta_set_strn(m, key, v, strlen(v));
}

int lpk_meta_set_arr(lpk_meta *m, const char *key, int elem, const void *data, uint64_t count)
{
    if (!m || elem < 0 || elem >= LPK_V_COUNT || elem == LPK_V_STR || elem == LPK_V_ARR ||
        (count && !data))
        return LPK_EINVAL;
    size_t es = vsize[elem];
    if (count > SIZE_MAX / es) return LPK_ENOMEM;
    meta_entry ne;
    int st = start_entry(&ne, key);
    if (st) return st;
    ne.data = malloc(count ? (size_t)count * es : 1);
    if (!ne.data) { entry_clear(&ne); return LPK_ENOMEM; }
    if (count) memcpy(ne.data, data, (size_t)count * es);
    ne.kv.type = LPK_V_ARR;
    ne.kv.elem = elem;
    ne.kv.count = count;
    ne.kv.data = ne.data;
    return finish(m, &ne);
}

int lpk_meta_set_str_arr(lpk_meta *m, const char *key, const char *const *strs,
                         const uint64_t *lens, uint64_t count)
{
    if (!m || (count && !strs)) return LPK_EINVAL;
    if (count > SIZE_MAX / sizeof(uint64_t) - 1) return LPK_ENOMEM;
    meta_entry ne;
    int st = start_entry(&ne, key);
    if (st) return st;
    ne.offs = malloc(((size_t)count + 1) * sizeof(uint64_t));
    if (!ne.offs) { entry_clear(&ne); return LPK_ENOMEM; }
    uint64_t total = 0;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t l = lens ? lens[i] : (strs[i] ? strlen(strs[i]) : 0);
        if (l && !strs[i]) { entry_clear(&ne); return LPK_EINVAL; }
        ne.offs[i] = total;
        if (total > SIZE_MAX - l - 2) { entry_clear(&ne); return LPK_ENOMEM; }
        total += l + 1; /* each element keeps a terminating NUL */
    }
    ne.offs[count] = total;
    ne.data = malloc(total ? (size_t)total : 1);
    if (!ne.data) { entry_clear(&ne); return LPK_ENOMEM; }
    for (uint64_t i = 0; i < count; i++) {
        uint64_t l = ne.offs[i + 1] - ne.offs[i] - 1;
        if (l) memcpy((char *)ne.data + ne.offs[i], strs[i], (size_t)l);
        ((char *)ne.data)[ne.offs[i] + l] = '\0';
    }
    ne.kv.type = LPK_V_ARR;
    ne.kv.elem = LPK_V_STR;
    ne.kv.count = count;
    ne.kv.data = ne.offs; /* private: read through lpk_kv_str_at() */
    return finish(m, &ne);
}

lpk_str lpk_kv_str_at(const lpk_kv *kv, uint64_t i)
{
    lpk_str s = {"", 0};
    if (!kv || kv->type != LPK_V_ARR || kv->elem != LPK_V_STR || i >= kv->count) return s;
    const meta_entry *e = (const meta_entry *)kv; /* kv is the first member */
    s.p = (const char *)e->data + e->offs[i];
    s.n = e->offs[i + 1] - e->offs[i] - 1;
    return s;
}

int lpk_meta_remove(lpk_meta *m, const char *key)
{
    meta_entry *e = m ? find_entry(m, key) : NULL;
    if (!e) return LPK_ENOTFOUND;
    size_t i = (size_t)(e - m->e);
    entry_clear(e);
    memmove(&m->e[i], &m->e[i + 1], (m->n - i - 1) * sizeof *e);
    m->n--;
    for (size_t j = i; j < m->n; j++) m->e[j].kv.key = m->e[j].key;
    return LPK_OK;
}

int lpk_meta_set_kv(lpk_meta *dst, const lpk_kv *kv)
{
    if (!dst || !kv) return LPK_EINVAL;
    if (kv->type == LPK_V_STR) return lpk_meta_set_strn(dst, kv->key, kv->str.p, kv->str.n);
    if (kv->type == LPK_V_ARR && kv->elem == LPK_V_STR) {
        const meta_entry *e = (const meta_entry *)kv; /* kv is the first member */
        const char **p = malloc((kv->count ? kv->count : 1) * sizeof *p);
        uint64_t *l = malloc((kv->count ? kv->count : 1) * sizeof *l);
        if (!p || !l) { free(p); free(l); return LPK_ENOMEM; }
        for (uint64_t j = 0; j < kv->count; j++) {
            p[j] = (const char *)e->data + e->offs[j];
            l[j] = e->offs[j + 1] - e->offs[j] - 1;
        }
        int st = lpk_meta_set_str_arr(dst, kv->key, p, l, kv->count);
        free(p);
        free(l);
        return st;
    }
    if (kv->type == LPK_V_ARR) return lpk_meta_set_arr(dst, kv->key, kv->elem, kv->data, kv->count);
    return lpk_meta_set_scalar(dst, kv->key, kv->type, kv->data);
}

int lpk_meta_copy(lpk_meta *dst, const lpk_meta *src)
{
    for (size_t i = 0; i < src->n; i++) {
        int st = lpk_meta_set_kv(dst, &src->e[i].kv);
        if (st) return st;
    }
    return LPK_OK;
}

size_t lpk_meta_count(const lpk_meta *m) { return m ? m->n : 0; }
const lpk_kv *lpk_meta_at(const lpk_meta *m, size_t i) { return (m && i < m->n) ? &m->e[i].kv : NULL; }
const lpk_kv *lpk_meta_find(const lpk_meta *m, const char *key)
{
    const meta_entry *e = (m && key) ? find_entry(m, key) : NULL;
    return e ? &e->kv : NULL;
}

/* Reads any integer scalar as a signed/unsigned pair; returns 0 if not an integer. */
static int int_value(const lpk_kv *kv, int64_t *s, uint64_t *u, int *is_neg)
{
    const void *d = kv->data;
    *is_neg = 0;
    switch (kv->type) {
    case LPK_V_U8: *u = *(const uint8_t *)d; break;
    case LPK_V_U16: *u = *(const uint16_t *)d; break;
    case LPK_V_U32: *u = *(const uint32_t *)d; break;
    case LPK_V_U64: *u = *(const uint64_t *)d; break;
    case LPK_V_I8: *s = *(const int8_t *)d; goto sgn;
    case LPK_V_I16: *s = *(const int16_t *)d; goto sgn;
    case LPK_V_I32: *s = *(const int32_t *)d; goto sgn;
    case LPK_V_I64: *s = *(const int64_t *)d; goto sgn;
    default: return 0;
    }
    *s = *u > INT64_MAX ? INT64_MAX : (int64_t)*u;
    return 1;
sgn:
    *is_neg = *s < 0;
    *u = *is_neg ? 0 : (uint64_t)*s;
    return 1;
}

int lpk_meta_get_u64(const lpk_meta *m, const char *key, uint64_t *out)
{
    const lpk_kv *kv = lpk_meta_find(m, key);
    if (!kv) return LPK_ENOTFOUND;
    int64_t s; uint64_t u; int neg;
    if (!int_value(kv, &s, &u, &neg) || neg) return LPK_EINVAL;
    *out = u;
    return LPK_OK;
}

int lpk_meta_get_u32(const lpk_meta *m, const char *key, uint32_t *out)
{
    uint64_t u;
    int st = lpk_meta_get_u64(m, key, &u);
    if (st) return st;
    if (u > UINT32_MAX) return LPK_EINVAL;
    *out = (uint32_t)u;
    return LPK_OK;
}

int lpk_meta_get_i64(const lpk_meta *m, const char *key, int64_t *out)
{
    const lpk_kv *kv = lpk_meta_find(m, key);
    if (!kv) return LPK_ENOTFOUND;
    int64_t s; uint64_t u; int neg;
    if (!int_value(kv, &s, &u, &neg)) return LPK_EINVAL;
    if (!neg && u > INT64_MAX) return LPK_EINVAL;
    *out = s;
    return LPK_OK;
}

int lpk_meta_get_f64(const lpk_meta *m, const char *key, double *out)
{
    const lpk_kv *kv = lpk_meta_find(m, key);
    if (!kv) return LPK_ENOTFOUND;
    if (kv->type == LPK_V_F32) *out = *(const float *)kv->data;
    else if (kv->type == LPK_V_F64) *out = *(const double *)kv->data;
    else return LPK_EINVAL;
    return LPK_OK;
}

int lpk_meta_get_f32(const lpk_meta *m, const char *key, float *out)
{
    double d;
    int st = lpk_meta_get_f64(m, key, &d);
    if (!st) *out = (float)d;
    return st;
}

int lpk_meta_get_bool(const lpk_meta *m, const char *key, int *out)
{
    const lpk_kv *kv = lpk_meta_find(m, key);
    if (!kv) return LPK_ENOTFOUND;
    if (kv->type != LPK_V_BOOL) return LPK_EINVAL;
    *out = *(const uint8_t *)kv->data != 0;
    return LPK_OK;
}

const char *lpk_meta_get_str(const lpk_meta *m, const char *key)
{
    const lpk_kv *kv = lpk_meta_find(m, key);
    return (kv && kv->type == LPK_V_STR) ? kv->str.p : NULL;
}
