/* Size-targeted recipes: one type per tensor, chosen from a menu to minimise
 * the sum of the tensors' expected errors under a byte budget.
 *
 * quant_alloc is a multiple-choice knapsack: an exact dynamic program over the
 * budget cut into U units (every candidate's size rounded up to whole units, so
 * the result never exceeds the budget), then a local search with the exact
 * byte counts that spends what the rounding left over (single upgrades and
 * upgrade/downgrade pairs that lower the total error). Everything is in a fixed
 * order, so the choice is deterministic. */
#include "quant_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int item_ok(const quant_alloc_item *it)
{
    if (!it || it->n < 1 || !it->bytes || !it->err) return 0;
    for (int c = 0; c < it->n; c++)
        if (!(it->err[c] >= 0.0) || !isfinite(it->err[c])) return 0;
    return 1;
}

/* Total error and bytes of a pick. */
static void pick_totals(const quant_alloc_item *items, size_t n, const int *pick, double *e,
                        uint64_t *b)
{
    double se = 0;
    uint64_t sb = 0;
    for (size_t i = 0; i < n; i++) {
        se += items[i].err[pick[i]];
        sb += items[i].bytes[pick[i]];
    }
    *e = se;
    *b = sb;
}

/* The DP: pick minimising the error with the rounded sizes within U units. */
static int alloc_dp(const quant_alloc_item *items, size_t n, uint64_t budget, int *pick)
{
    /* as fine as 65536 units, within about 4e8 steps */
    size_t U = 65536, maxc0 = 1;
    for (size_t i = 0; i < n; i++) maxc0 = (size_t)items[i].n > maxc0 ? (size_t)items[i].n : maxc0;
    if (U > 400000000 / (n * maxc0)) U = 400000000 / (n * maxc0);
    if (U < 1024) U = 1024;
    uint64_t unit = budget / U + 1; /* U * unit > budget; rounding up stays inside */
    U = (size_t)(budget / unit);
    double *cur = malloc((U + 1) * sizeof *cur), *nxt = malloc((U + 1) * sizeof *nxt);
    uint8_t *choice = malloc(n * (U + 1));
    size_t *cost = NULL;
    int maxc = 0;
    for (size_t i = 0; i < n; i++) maxc = items[i].n > maxc ? items[i].n : maxc;
    cost = malloc((size_t)maxc * sizeof *cost);
    if (!cur || !nxt || !choice || !cost || maxc > 255) {
        free(cur); free(nxt); free(choice); free(cost);
        return LPK_ENOMEM;
    }
    /* cur[u]: least error of the items so far within u units (INFINITY: none) */
    for (size_t u = 0; u <= U; u++) cur[u] = 0.0;
    for (size_t i = 0; i < n; i++) {
        const quant_alloc_item *it = &items[i];
        for (int c = 0; c < it->n; c++) {
            uint64_t k = it->bytes[c] / unit + (it->bytes[c] % unit != 0);
            cost[c] = k > U ? U + 1 : (size_t)k;
        }
        uint8_t *ch = choice + i * (U + 1);
        for (size_t u = 0; u <= U; u++) {
            double best = INFINITY;
            int bc = 0;
            for (int c = 0; c < it->n; c++) {
                if (cost[c] > u) continue;
                double v = cur[u - cost[c]] + it->err[c];
                if (v < best) { best = v; bc = c; }
            }
            nxt[u] = best;
            ch[u] = (uint8_t)bc;
        }
        double *t = cur; cur = nxt; nxt = t;
    }
    int rc = isfinite(cur[U]) ? LPK_OK : LPK_ENOSPC;
    if (!rc) {
        size_t u = U;
        for (size_t i = n; i-- > 0;) {
            int c = choice[i * (U + 1) + u];
            pick[i] = c;
            uint64_t k = items[i].bytes[c] / unit + (items[i].bytes[c] % unit != 0);
            u -= (size_t)k;
        }
    }
    free(cur); free(nxt); free(choice); free(cost);
    return rc;
}

/* Local search with exact sizes: the best single change, or upgrade/downgrade
 * pair, that lowers the total error and stays within the budget; repeated. */
static void alloc_improve(const quant_alloc_item *items, size_t n, uint64_t budget, int *pick)
{
    double e;
    uint64_t b;
    pick_totals(items, n, pick, &e, &b);
    for (size_t iter = 0; iter < 256; iter++) {
        double best = 0;
        size_t bi = 0, bj = 0;
        int bci = -1, bcj = -1;
        for (size_t i = 0; i < n; i++) {
            const quant_alloc_item *a = &items[i];
            for (int ci = 0; ci < a->n; ci++) {
                if (ci == pick[i]) continue;
                double de = a->err[ci] - a->err[pick[i]];
                int64_t db = (int64_t)a->bytes[ci] - (int64_t)a->bytes[pick[i]];
                if (db <= 0 || (uint64_t)db <= budget - b) {
                    if (de < best - 1e-12 * fabs(e)) { best = de; bi = i; bci = ci; bcj = -1; }
                    continue;
                }
                /* too big alone: pay for it with another tensor's downgrade */
                if (de >= best) continue;
                for (size_t j = 0; j < n; j++) {
                    if (j == i) continue;
                    const quant_alloc_item *d = &items[j];
                    for (int cj = 0; cj < d->n; cj++) {
                        int64_t db2 = (int64_t)d->bytes[cj] - (int64_t)d->bytes[pick[j]];
                        if (db2 >= 0 || db + db2 > (int64_t)(budget - b)) continue;
                        double de2 = de + d->err[cj] - d->err[pick[j]];
                        if (de2 < best - 1e-12 * fabs(e)) {
                            best = de2; bi = i; bci = ci; bj = j; bcj = cj;
                        }
                    }
                }
            }
        }
        if (bci < 0) break;
        pick[bi] = bci;
        if (bcj >= 0) pick[bj] = bcj;
        pick_totals(items, n, pick, &e, &b);
    }
}

int quant_alloc(const quant_alloc_item *items, size_t n, uint64_t budget, int *pick,
                lpk_error *err)
{
    if (n && (!items || !pick)) return lpk_err(err, LPK_EINVAL, "quant_alloc: NULL arguments");
    uint64_t least = 0;
    for (size_t i = 0; i < n; i++) {
        if (!item_ok(&items[i]))
            return lpk_err(err, LPK_EINVAL, "quant_alloc: item %zu has no candidates or a "
                                            "negative or non-finite error", i);
        uint64_t m = UINT64_MAX;
        for (int c = 0; c < items[i].n; c++) m = items[i].bytes[c] < m ? items[i].bytes[c] : m;
        least += m;
    }
    if (least > budget)
        return lpk_err(err, LPK_ENOSPC,
                       "the smallest types of the menu need %llu bytes, more than the %llu "
                       "bytes allowed", (unsigned long long)least, (unsigned long long)budget);
    if (!n) return LPK_OK;
    int rc = alloc_dp(items, n, budget, pick);
    if (rc == LPK_ENOSPC) {
        /* the rounding up made the smallest pick look too big: start from it */
        for (size_t i = 0; i < n; i++) {
            int s = 0;
            for (int c = 1; c < items[i].n; c++)
                if (items[i].bytes[c] < items[i].bytes[s]) s = c;
            pick[i] = s;
        }
        rc = LPK_OK;
    }
    if (rc) return lpk_err(err, rc, "out of memory");
    alloc_improve(items, n, budget, pick);
    return LPK_OK;
}

int quant_weighted_error(int type, const float *src, int64_t nrows, int64_t ncols,
                         const float *imatrix, int64_t row_step, double *out, lpk_error *err)
{
    const lpk_type_info *ti = lpk_type_get(type);
    if (!ti || !src || !out || nrows < 0 || row_step < 1 || !quant_row_fits(type, ncols))
        return lpk_err(err, LPK_EINVAL, "cannot estimate the error of %s rows of %lld values",
                       ti ? ti->name : "(unknown type)", (long long)ncols);
    int64_t ns = (nrows + row_step - 1) / row_step;
    uint64_t qb = 0;
    if (lpk_type_nbytes(type, (uint64_t)(ns * ncols), &qb))
        return lpk_err(err, LPK_EINVAL, "tensor too large");
    float *x = malloc((size_t)(ns * ncols) * sizeof *x);
    float *y = malloc((size_t)(ns * ncols) * sizeof *y);
    void *q = malloc(qb ? (size_t)qb : 1);
    if (!x || !y || !q) {
        free(x); free(y); free(q);
        return lpk_err(err, LPK_ENOMEM, "out of memory");
    }
    for (int64_t s = 0; s < ns; s++)
        memcpy(x + s * ncols, src + s * row_step * ncols, (size_t)ncols * sizeof *x);
    int rc = quant_quantize_rows(type, x, ns, ncols, q, imatrix, err);
    if (!rc) rc = quant_dequantize_rows(type, q, ns, ncols, y);
    if (!rc) {
        /* per column over the sampled rows, then weighted: a fixed order */
        double total = 0;
        for (int64_t c = 0; c < ncols; c++) {
            double s2 = 0;
            for (int64_t s = 0; s < ns; s++) {
                double d = (double)x[s * ncols + c] - (double)y[s * ncols + c];
                s2 += d * d;
            }
            total += (imatrix ? (double)imatrix[c] : 1.0) * s2;
        }
        *out = ns ? total * (double)nrows / (double)ns : 0.0;
    }
    free(x); free(y); free(q);
    return rc;
}

/* ---------------------------------------------------------------- target plans */
/* The menu: k-quants and iq4 for rows of 256, the 32-block types where only
 * those fit, f16 last. */
static const int menu_256[] = {LPK_TYPE_Q2_K,  LPK_TYPE_Q3_K, LPK_TYPE_IQ4_XS, LPK_TYPE_IQ4_NL,
                               LPK_TYPE_Q4_K,  LPK_TYPE_Q5_K, LPK_TYPE_Q6_K,  LPK_TYPE_Q8_0};
static const int menu_32[] = {LPK_TYPE_IQ4_NL, LPK_TYPE_Q4_0, LPK_TYPE_Q5_0, LPK_TYPE_Q5_1,
                              LPK_TYPE_Q8_0,   LPK_TYPE_F16};
#define MENU_MAX 16

/* The candidate types of a tensor whose rows have ncols values: those of the
 * menu (or the default menus) that quant/ can make for such rows. */
static int tensor_menu(const int *menu, int n_menu, int64_t ncols, int *out)
{
    int k = 0;
    if (menu) {
        for (int i = 0; i < n_menu && k < MENU_MAX; i++)
            if (quant_row_fits(menu[i], ncols)) out[k++] = menu[i];
    } else {
        for (size_t i = 0; i < sizeof menu_256 / sizeof menu_256[0]; i++)
            if (quant_row_fits(menu_256[i], ncols)) out[k++] = menu_256[i];
        if (!k)
            for (size_t i = 0; i < sizeof menu_32 / sizeof menu_32[0]; i++)
                if (quant_row_fits(menu_32[i], ncols)) out[k++] = menu_32[i];
    }
    if (!k) out[k++] = LPK_TYPE_F16;
    return k;
}

/* A tensor's values as f32 (from f32, f16, bf16 or a block type). */
static int tensor_f32(const lpk_tensor *t, float *x, lpk_error *err)
{
    int64_t nr = lpk_tensor_nrows(t), nc = lpk_tensor_ncols(t);
    int rc = t->data ? (quant_type_is_block(t->type)
                            ? quant_dequantize_rows(t->type, t->data, nr, nc, x)
                            : lpk_to_f32_row(t->type, t->data, x, (size_t)(nr * nc)))
                     : LPK_EINVAL;
    return rc ? lpk_err(err, LPK_EINVAL, "%s: cannot read its values (type %d)", t->name,
                        t->type)
              : LPK_OK;
}

/* The expected error of t (values x) as type, as quant_plan_target weighs it. */
static int target_error(const lpk_tensor *t, const float *x, int type, const float *imatrix,
                        double *out, lpk_error *err)
{
    int64_t nr = lpk_tensor_nrows(t), nc = lpk_tensor_ncols(t);
    /* about 2^20 values sampled per tensor and type */
    int64_t step = (int64_t)(lpk_tensor_nelems(t) >> 20) + 1;
    int rc = quant_weighted_error(type, x, nr, nc, imatrix, step, out, err);
    /* the embedding is a lookup table: each token reads one row, so the error a
     * token sees is a row's (uniform token frequencies) */
    if (!rc && strcmp(t->name, "token_embd.weight") == 0 && nr > 0) *out /= (double)nr;
    return rc;
}

int quant_tensor_expected_error(const lpk_tensor *t, int type, const float *imatrix,
                                double *out, lpk_error *err)
{
    if (!t || !out || t->n_dims < 2) return lpk_err(err, LPK_EINVAL, "not a matrix");
    float *x = malloc((size_t)lpk_tensor_nelems(t) * sizeof *x);
    if (!x) return lpk_err(err, LPK_ENOMEM, "out of memory");
    int rc = tensor_f32(t, x, err);
    if (!rc) rc = target_error(t, x, type, imatrix, out, err);
    free(x);
    return rc;
}

int quant_plan_target(const lpk_tensor *tensors, size_t n, const float *const *imatrix,
                      const double *gain, const int *menu, int n_menu, uint64_t budget,
                      quant_choice *choices,
                      quant_target_result *res, lpk_error *err)
{
    if (n && (!tensors || !choices)) return lpk_err(err, LPK_EINVAL, "quant_plan_target: NULL");
    if (menu && (n_menu < 1 || n_menu > MENU_MAX))
        return lpk_err(err, LPK_EINVAL, "quant_plan_target: menu of %d types", n_menu);
    size_t nq = 0;
    uint64_t fixed = 0, max_elems = 0;
    for (size_t i = 0; i < n; i++) {
        const lpk_tensor *t = &tensors[i];
        quant_choice *c = &choices[i];
        c->fallback_from = -1;
        c->note[0] = '\0';
        uint64_t ne = lpk_tensor_nelems(t), b = 0;
        if (quant_tensor_quantizable(t)) {
            nq++;
            max_elems = ne > max_elems ? ne : max_elems;
            continue;
        }
        c->type = t->n_dims < 2 ? LPK_TYPE_F32
                  : t->type == LPK_TYPE_F16 || t->type == LPK_TYPE_BF16 ? t->type : LPK_TYPE_F32;
        if (lpk_type_nbytes(c->type, ne, &b)) return lpk_err(err, LPK_EINVAL, "%s: bad size", t->name);
        fixed += b;
    }
    if (fixed > budget)
        return lpk_err(err, LPK_ENOSPC, "the unquantized tensors (norms) alone take %llu bytes, "
                       "more than the %llu allowed", (unsigned long long)fixed,
                       (unsigned long long)budget);
    quant_alloc_item *items = calloc(nq ? nq : 1, sizeof *items);
    int *types = calloc((nq ? nq : 1) * MENU_MAX, sizeof *types);
    uint64_t *bytes = calloc((nq ? nq : 1) * MENU_MAX, sizeof *bytes);
    double *errs = calloc((nq ? nq : 1) * MENU_MAX, sizeof *errs);
    int *pick = calloc(nq ? nq : 1, sizeof *pick);
    size_t *idx = calloc(nq ? nq : 1, sizeof *idx);
    float *x = malloc((size_t)(max_elems ? max_elems : 1) * sizeof *x);
    int rc = items && types && bytes && errs && pick && idx && x ? LPK_OK
             : lpk_err(err, LPK_ENOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const lpk_tensor *t = &tensors[i];
        if (!quant_tensor_quantizable(t)) continue;
        int64_t nr = lpk_tensor_nrows(t), nc = lpk_tensor_ncols(t);
        int *ty = types + k * MENU_MAX;
        int nm = tensor_menu(menu, n_menu, nc, ty);
        (void)nr;
        rc = tensor_f32(t, x, err);
        for (int c = 0; c < nm && !rc; c++) {
            double e = 0;
            rc = lpk_type_nbytes(ty[c], lpk_tensor_nelems(t), &bytes[k * MENU_MAX + c]);
            if (!rc) rc = target_error(t, x, ty[c], imatrix ? imatrix[i] : NULL, &e, err);
            errs[k * MENU_MAX + c] = e * (gain ? gain[i] : 1.0);
        }
        items[k] = (quant_alloc_item){nm, ty, bytes + k * MENU_MAX, errs + k * MENU_MAX};
        idx[k++] = i;
    }
    if (!rc) rc = quant_alloc(items, nq, budget - fixed, pick, err);
    if (!rc) {
        uint64_t total = fixed;
        double e = 0;
        for (size_t j = 0; j < nq; j++) {
            quant_choice *c = &choices[idx[j]];
            c->type = items[j].types[pick[j]];
            total += items[j].bytes[pick[j]];
            e += items[j].err[pick[j]];
            snprintf(c->note, sizeof c->note, "expected error %.4g", items[j].err[pick[j]]);
        }
        if (res) {
            res->budget = budget;
            res->bytes = total;
            res->err = e;
        }
    }
    free(items); free(types); free(bytes); free(errs); free(pick); free(idx); free(x);
    return rc;
}
