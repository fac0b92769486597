/* cli/: verify --report, one self-contained HTML file (inline SVG charts, no
 * scripts, no external resources) of what verify measured. */
#ifndef REPORT_HTML_H
#define REPORT_HTML_H

#include <stddef.h>
#include <stdint.h>

#include "../format/lpk.h"
#include "../verify/verify.h"
#include "cli.h"

/* One model as the report shows it. Everything is borrowed. */
typedef struct report_model {
    const char *path;               /* as given on the command line */
    llmpack_model_desc desc;            /* type, size, bits per weight */
    vf_ppl_result res;              /* vf_eval_result */
    const vf_chunk_result *chunks;  /* res.chunks entries (vf_eval_chunk_result) */
    const float *kld;               /* n_kld positions' KLD (vf_eval_klds); NULL without --ref */
    size_t n_kld;
    const vf_tensor_error *te;      /* n_te tensors (vf_tensor_errors); NULL: not computed */
    size_t n_te;
    int n_limits;                   /* --max-* limits given */
    const char *exceeded;           /* the limits it exceeded ("max-kld"), "" when none */
} report_model;

typedef struct report_run {
    const char *ref_path;           /* NULL without --ref */
    llmpack_model_desc ref_desc;
    const char *text_path;
    uint64_t text_bytes;
    size_t n_tokens;                /* the whole text, BOS included */
    int ctx, chunks, threads;
    int kv_f16;                     /* --kv-f16 */
    uint64_t tokens_scored;         /* per model */
    const report_model *models;
    int n_models;
} report_run;

/* Writes the report to out atomically (lpk_file_write: a temporary file beside
 * it, renamed into place; flags LPK_WRITE_FORCE replaces an existing file).
 * Status, message naming out in err. */
int report_html_write(const char *out, const report_run *run, unsigned flags, lpk_error *err);

#endif
