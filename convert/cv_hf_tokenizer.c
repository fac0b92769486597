/* Hugging Face tokenizer.json -> tokenizer.* metadata. */
#include "cv_tok.h"

int cv_hfjson_parse(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                    lpk_error *err)
{
    (void)buf; (void)n; (void)meta;
    return lpk_err(err, LPK_EUNSUPPORTED, "%s: tokenizer.json not supported yet", name);
}
