/* convert/ internal helpers shared by the readers (safetensors, llama2.c,
 * torch zip+pickle, Meta shards, archives) and the pipeline. Not a public
 * header: only convert/ includes it. */
#ifndef CV_INTERNAL_H
#define CV_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "../format/lpk.h"
#include "../tok/tok.h"
#include "convert.h"
#include "cv_source.h"
#include "cv_torch.h"

/* ---------------------------------------------------------------- names */
/* Maps a checkpoint tensor name to its canonical name (docs/MODEL.md).
 * Returns CV_NAME_OK (out filled; *permute set to CV_PERMUTE_Q / _K for HF
 * q_proj / k_proj, which must be un-permuted, else CV_PERMUTE_NONE),
 * CV_NAME_SKIP (a tensor the model does not need: rope.freqs,
 * *.rotary_emb.inv_freq) or CV_NAME_UNKNOWN. The layer index is not checked
 * against the layer count here (the expected-set check does that). */
enum { CV_NAME_OK = 0, CV_NAME_SKIP = 1, CV_NAME_UNKNOWN = 2 };
enum { CV_PERMUTE_NONE = 0, CV_PERMUTE_Q = 1, CV_PERMUTE_K = 2 };
int cv_name_from_hf(const char *hf, char *out, size_t n, int *permute);
int cv_name_from_meta(const char *meta_name, char *out, size_t n);

/* HF q_proj/k_proj rows are permuted for rotate_half; canonical (Meta) row
 * `h*hd + 2*j + t` is HF row `h*hd + t*(hd/2) + j`. Returns the HF row that
 * holds canonical row `row` for head dim hd (hd even; hd <= 1 maps identity). */
static inline int64_t cv_unpermute_row(int64_t row, int64_t hd)
{
    if (hd <= 1) return row;
    int64_t h = row / hd, r = row % hd;
    return h * hd + (r % 2) * (hd / 2) + r / 2;
}

/* ---------------------------------------------------------------- hparams */
/* Hyperparameters, as the config implies them. 0 = not given. */
typedef struct cv_hparams {
    int64_t dim, ffn, n_layers, n_head, n_kv, vocab, head_dim, ctx;
    double eps, rope_theta;
    int tie;                  /* CV_TIE_* */
} cv_hparams;

/* Writes general.architecture and the llama.* keys of hp into meta. */
int cv_hparams_to_meta(const cv_hparams *hp, lpk_meta *meta, lpk_error *err);
/* Reads the llama.* keys back (after overrides), for the expected-set check. */
int cv_hparams_from_meta(const lpk_meta *meta, cv_hparams *hp, const char *what, lpk_error *err);

/* HF config.json (buffer, `name` for messages): checks the architecture
 * (LlamaForCausalLM / model_type llama, else LPK_EUNSUPPORTED), fills hp and
 * writes llama.* keys (incl. rope scaling: linear, llama3) plus bos/eos ids to
 * meta. */
int cv_hf_config_parse(const char *name, const uint8_t *buf, size_t n, cv_hparams *hp,
                       lpk_meta *meta, lpk_error *err);
/* generation_config.json: bos/eos ids; a list of eos ids -> tokenizer.eos_token_ids. */
int cv_hf_genconfig_parse(const char *name, const uint8_t *buf, size_t n, lpk_meta *meta,
                          lpk_error *err);
/* Everything an HF folder says besides its weights: config.json (required),
 * generation_config.json, the tokenizer (tokenizer_path if non-NULL, else
 * tokenizer.model or tokenizer.json in dir) and tokenizer_config.json;
 * general.name = folder name. Every file read is added to s->files (the
 * pipeline writes source.files/file_sizes/xxh3 from that list). A missing tokenizer is not an error: *warn gets a
 * message (warn may be NULL). */
int cv_hf_folder_meta(const char *dir, const char *tokenizer_path, cv_hparams *hp,
                      cv_source *s, char *warn, size_t warn_n, lpk_error *err);
/* Loads a tokenizer file into s->meta and adds it to s->files. While the
 * tokenizer readers are not built, fills warn ("no tokenizer") and returns OK. */
int cv_load_tokenizer(const char *path, cv_source *s, char *warn, size_t warn_n,
                      lpk_error *err);

/* Reads a whole small file (JSON configs); rejects files > max bytes.
 * *buf is malloc'ed and NUL-terminated. LPK_ENOTFOUND if it does not exist. */
int cv_read_small_file(const char *path, size_t max, uint8_t **buf, size_t *n, lpk_error *err);
/* general.name from a path: the folder or file name without extension
 * ("models/foo/hf" -> "foo", since "hf" says little). */
void cv_default_name(const char *path, char *out, size_t n);
/* dir + "/" + name into out; LPK_EINVAL if it does not fit. */
int cv_path_join(char *out, size_t n, const char *dir, const char *name);

/* ---------------------------------------------------------------- json, vocabulary */
/* Parses a JSON object (jansson flags), integers of any size allowed (those
 * past int64 become reals, lpk_json_relax_bigints). NULL on error (err set,
 * naming `name`). */
struct json_t;
struct json_t *cv_json_load(const char *name, const uint8_t *buf, size_t n, size_t flags,
                            lpk_error *err);

/* Special ids of the tokenizer file itself, taken before the folder's JSON
 * files say anything: bos, eos, unk, sep, pad, cls, mask (-1: none). */
#define CV_N_SPECIAL 7
typedef struct cv_special_ids {
    int64_t id[CV_N_SPECIAL];
} cv_special_ids;
void cv_special_snapshot(const lpk_meta *m, cv_special_ids *own);
/* Completes tokenizer.* in m for an embedding of n_rows rows, as llama.cpp's
 * converter does (convert/cv_vocab.c): added_tokens.json and tokenizer_config's
 * added_tokens_decoder join the tokens at their ids, [PAD<id>] pads up to
 * n_rows, added tokens at or past n_rows are dropped (listed in warn), special
 * ids by llama.cpp's precedence (own: the tokenizer file's), Code Llama's infill
 * ids, add_prefix_space, chat_template.json. dir (NULL: no folder files) holds
 * the JSON files. Nothing happens without tokenizer.ggml.tokens. A base
 * vocabulary larger than n_rows is LPK_EBADVALUE. */
int cv_vocab_finish(const char *dir, lpk_meta *m, int64_t n_rows, const cv_special_ids *own,
                    char *warn, size_t warn_n, lpk_error *err);

/* ---------------------------------------------------------------- safetensors */
typedef struct cv_st_entry {
    char name[LPK_MAX_NAME + 1];
    int dtype;                 /* LPK_TYPE_F32/F16/BF16 */
    int n_dims;
    int64_t dims[LPK_MAX_DIMS];
    uint64_t begin, end;       /* relative to the data section */
} cv_st_entry;

/* Parses a safetensors JSON header (json, len bytes; `name` for messages) whose
 * data section holds data_size bytes. Checks: valid JSON object, dtype known
 * and one of F32/F16/BF16 (else LPK_EUNSUPPORTED naming the tensor and dtype),
 * shape non-negative with <= LPK_MAX_DIMS dims, data_offsets within the data
 * section, end >= begin, end - begin == product(shape) * elem size (overflow
 * checked), no two tensors overlapping. *out is malloc'ed (*n entries, in
 * header order). */
int cv_st_parse_header(const char *name, const uint8_t *json, size_t len, uint64_t data_size,
                       cv_st_entry **out, size_t *n, lpk_error *err);
/* Reads the 8-byte header length prefix of a safetensors file of file_size
 * bytes: rejects > 100 MB and > file_size - 8. */
#define CV_ST_MAX_HEADER (100ull * 1000 * 1000)
int cv_st_header_len(const char *name, const uint8_t *prefix8, uint64_t file_size,
                     uint64_t *len, lpk_error *err);
typedef struct cv_msrc cv_msrc;
/* Maps a safetensors file into m and parses its header: *entries (malloc'ed,
 * *n of them), *data_off = where the data section starts in the file. Returns
 * the file index in m (>= 0) or a negative status. */
int cv_st_open_file(cv_msrc *m, const char *path, cv_st_entry **entries, size_t *n,
                    uint64_t *data_off, lpk_error *err);

/* ---------------------------------------------------------------- mapped files */
typedef struct cv_mapfile {
    char path[4096];
    const uint8_t *base;       /* NULL for an empty file */
    uint64_t size;
} cv_mapfile;
int cv_mapfile_open(cv_mapfile *f, const char *path, lpk_error *err);
void cv_mapfile_close(cv_mapfile *f);
/* Drops the whole pages inside [off, off + len) from this process (the page
 * cache keeps them): keeps peak RSS bounded while streaming a large file. */
void cv_mapfile_release(const cv_mapfile *f, uint64_t off, uint64_t len);

/* A source whose tensors are contiguous row-major ranges of mapped files
 * (safetensors, llama2.c, stored zip entries). The source owns the files. */
int cv_msrc_new(const char *path, cv_msrc **out, lpk_error *err);
/* Maps a file; returns its index (>= 0) or a negative status. */
int cv_msrc_add_file(cv_msrc *m, const char *path, lpk_error *err);
const cv_mapfile *cv_msrc_file(const cv_msrc *m, int idx);
/* Adds a tensor stored at [offset, offset + nbytes) of file `file`.
 * permute_hd > 1: the rows are in HF rotate_half order per head of that size and
 * are un-permuted on read (ignored when the rows are not whole heads: the
 * expected-set check rejects that shape). Checks the range against the file. */
int cv_msrc_add_tensor(cv_msrc *m, const char *name, const char *src_name, int dtype,
                       int n_dims, const int64_t *dims, int file, uint64_t offset,
                       int64_t permute_hd, lpk_error *err);
/* Turns m into the cv_source (m is consumed, even on error). */
cv_source *cv_msrc_source(cv_msrc *m);
lpk_meta *cv_msrc_meta(cv_msrc *m);

/* ---------------------------------------------------------------- sources */
/* Checkpoint kinds the pipeline recognises. */
enum cv_kind {
    CV_KIND_UNKNOWN = 0,
    CV_KIND_HF_SAFETENSORS,
    CV_KIND_HF_TORCH,
    CV_KIND_META,
    CV_KIND_LLAMA2C,
    CV_KIND_ARCHIVE
};
const char *cv_kind_name(int kind);
/* Looks at path (a folder or a file) and says what it is; *why explains
 * CV_KIND_UNKNOWN (which files were looked for). */
int cv_detect_kind(const char *path, char *why, size_t why_n);
/* Does the folder hold pytorch_model*.bin files? */
int cv_dir_has_torch_bins(const char *dir);

/* Options every source constructor takes. */
typedef struct cv_open_opts {
    const char *tokenizer;     /* --tokenizer FILE, or NULL */
    char warn[1024];           /* out: non-fatal problems (e.g. no tokenizer) */
    char note[512];            /* out: which files were chosen and why */
} cv_open_opts;

/* Constructors. Each fills (*out)->meta with general.*, llama.*, tokenizer.*
 * and source.format, adds every file it reads to files (the pipeline adds
 * source.files/file_sizes/xxh3/tool), lists the tensors with canonical names
 * (skipped ones in skipped), and sets tie_hint. */
int cv_hf_safetensors_open(const char *dir, cv_open_opts *o, cv_source **out, lpk_error *err);
int cv_llama2c_open(const char *path, cv_open_opts *o, cv_source **out, lpk_error *err);
/* HF folder with pytorch_model*.bin (torch reader, cv_hftorch.c).
 * Meta folders and archives: cv_meta_open / cv_archive_open in cv_torch.h. */
int cv_hftorch_open(const char *dir, const cv_torch_opts *opts, cv_source **out,
                    lpk_error *err);

/* ---------------------------------------------------------------- checks */
/* The expected-set check: every tensor the hyperparameters imply exists with
 * the implied shape (output.weight optional), no other tensor exists, no name
 * twice, dtypes are f32/f16/bf16. Names the first offender. */
int cv_check_tensors(const cv_hparams *hp, const cv_tensor *t, size_t n, const char *what,
                     lpk_error *err);

#endif
