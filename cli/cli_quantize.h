/* quantize's pipeline (cli_quantize.c): one input read once, one or several
 * outputs written from it. cmd_quantize.c parses the command line into these
 * structs and prints the report from them. */
#ifndef CLI_QUANTIZE_H
#define CLI_QUANTIZE_H

#include "cli.h"

#include "../calib/calib.h"
#include "../quant/quant.h"

/* The most outputs one run writes (each holds a writer, a temporary file and
 * a buffer of the largest tensor in its types). */
#define CLI_QUANT_MAX_OUTPUTS 16

/* What applies to every output of a run. */
typedef struct cli_quant_opts {
    const char *in;            /* input container (.lpk or GGUF) */
    const char *im_path;       /* --imatrix FILE, or NULL */
    const char *calib_text;    /* --calib TEXT, or NULL */
    const char *name;          /* --name: general.name of the outputs (NULL: IN's) */
    int pure, force, requant;  /* --pure, --force, --allow-requantize */
    int gptq;                  /* --method gptq (needs calib_text) */
    calib_gptq_opts go;        /* GPTQ settings; go.chunks is set from chunks */
    long chunks;               /* --chunks (0: all) for the calibration */
    int quiet;                 /* no progress and no notes on stderr */
    /* size target (one output only): --target-bpw or --max-size, given as
     * text (NULL when not) and parsed */
    const char *target_bpw_s, *max_size_s;
    double target_bpw;
    uint64_t max_size;
    long calib_chunks;         /* --calib-chunks for the sensitivities */
} cli_quant_opts;

/* Per tensor of one output: squared error and squared values (2-D tensors). */
typedef struct cli_quant_stat {
    double sse, ssx;
    int has_err;
} cli_quant_stat;

/* One output. path, recipe and fmt are given; the rest is filled by
 * cli_quantize_run and freed by cli_quantize_free. */
typedef struct cli_quant_out {
    const char *path;          /* the file to write */
    const char *recipe;        /* --type as given (NULL with a size target) */
    int fmt;                   /* LLMPACK_FMT_LPK or LLMPACK_FMT_GGUF */
    lpk_tensor *decls;         /* n: the output's tensors (type, size) */
    quant_choice *ch;          /* n: the plan */
    cli_quant_stat *st;        /* n */
    const char **no_entry;     /* tensors the imatrix had no entry for */
    size_t n_no_entry;
    int written;               /* complete and renamed into place */
    char tmp[4096];            /* a GGUF output's temporary container */
    lpk_writer *w;
    void *qbuf;
} cli_quant_out;

/* What the run shares between its outputs, for the report. */
typedef struct cli_quant_run {
    lpk_reader *r;             /* the input, open until cli_quantize_free */
    size_t n;                  /* its tensors */
    uint64_t in_bytes;         /* their bytes */
    lpk_imatrix *im;           /* the importance matrix used, or NULL */
    calib_gptq *g;             /* GPTQ's Hessians, or NULL */
    quant_target_result tres;  /* size target: the plan's figures */
    char target_str[96];       /* "bpw 4.5", "max-size 14MB", or "" */
    double seconds;            /* from the first tensor read to the last output */
} cli_quant_run;

/* Quantizes o->in into the n_out outputs: reads every tensor once (checksum
 * verified, converted to f32 once when any output needs it) and writes each
 * output's version of it to that output's temporary file; at the end each
 * output is completed and renamed into place in order (a GGUF output is made
 * through a temporary container beside it, exported, then the container is
 * removed). Every output's bytes equal those of a run with that output alone.
 * On failure the outputs completed before it stay (out->written), the others
 * leave no file. Returns an lpk status (LPK_EINVAL: a usage problem found
 * once the input is open, e.g. a tensor to requantize without o->requant),
 * message in err. run and outs hold the report until cli_quantize_free, on
 * success or failure. */
int cli_quantize_run(const cli_quant_opts *o, cli_quant_out *outs, size_t n_out,
                     cli_quant_run *run, lpk_error *err);
void cli_quantize_free(cli_quant_out *outs, size_t n_out, cli_quant_run *run);

#endif
