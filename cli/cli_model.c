/* What a model file is, in words: shared by info and verify. */
#include "cli.h"

#include <ctype.h>
#include <string.h>

#include "../quant/quant.h"

static void upper(char *dst, size_t n, const char *src)
{
    size_t i = 0;
    for (; src[i] && i + 1 < n; i++) dst[i] = (char)toupper((unsigned char)src[i]);
    dst[i] = '\0';
}

void cli_model_describe(const lpk_reader *r, cli_model_desc *d)
{
    memset(d, 0, sizeof *d);
    uint64_t by_type[LPK_TYPE_COUNT] = {0};
    for (size_t i = 0; i < lpk_reader_n_tensors(r); i++) {
        const lpk_tensor *x = lpk_reader_tensor(r, i);
        if (x->type >= 0 && x->type < LPK_TYPE_COUNT) by_type[x->type] += x->size;
        d->n_elements += lpk_tensor_nelems(x);
        d->tensor_bytes += x->size;
    }
    d->file_size = lpk_reader_file_size(r);
    d->bpw = d->n_elements ? 8.0 * (double)d->tensor_bytes / (double)d->n_elements : 0.0;

    const lpk_meta *m = lpk_reader_meta(r);
    const char *recipe = lpk_meta_get_str(m, "quant.recipe");
    uint32_t ft;
    const char *by_ft = lpk_meta_get_u32(m, "general.file_type", &ft) == LPK_OK
                            ? quant_recipe_for_ftype(ft) : NULL;
    if (recipe && quant_recipe_valid(recipe)) {
        upper(d->type, sizeof d->type, recipe);
        d->type_from = "recipe";
    } else if (by_ft) {
        upper(d->type, sizeof d->type, by_ft);
        d->type_from = "file_type";
    } else {
        int best = -1;
        for (int t = 0; t < LPK_TYPE_COUNT; t++)
            if (by_type[t] && (best < 0 || by_type[t] > by_type[best])) best = t;
        const lpk_type_info *ti = best >= 0 ? lpk_type_get(best) : NULL;
        upper(d->type, sizeof d->type, ti ? ti->name : "none");
        d->type_from = "tensors";
    }
}
