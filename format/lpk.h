/* llmpack format/: the floor every module stands on.
 *
 * Owns: the status/error enum and error struct, CPU feature detection, the tensor
 * type table's layout facts, f16/bf16 conversions, the in-memory metadata store,
 * and the container readers/writers (.lpk, and GGUF behind the same API).
 * Nothing here includes a header from quant/, convert/, verify/ or cli/.
 */
#ifndef LPK_H
#define LPK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The one place the version is set: the Makefile (library soname, llmpack.pc) reads
 * these three lines; `llmpack --version` prints LPK_VERSION_STRING. */
#define LPK_VERSION_MAJOR 0
#define LPK_VERSION_MINOR 1
#define LPK_VERSION_PATCH 0
#define LPK_STR_(x) #x
#define LPK_STR(x) LPK_STR_(x)
#define LPK_VERSION_STRING                                                                  \
    LPK_STR(LPK_VERSION_MAJOR) "." LPK_STR(LPK_VERSION_MINOR) "." LPK_STR(LPK_VERSION_PATCH)
/* The version of the library actually linked (LPK_VERSION_STRING of its build). */
const char *lpk_version(void);

/* ---------------------------------------------------------------- status */
/* Every function that can fail returns one of these (0 = ok, negative = error). */
enum lpk_status {
    LPK_OK = 0,
    LPK_EIO = -1,          /* read/write/open failed (errno-level problem) */
    LPK_ECORRUPT = -2,     /* input violates its format */
    LPK_ETRUNC = -3,       /* input ends before a structure it declares */
    LPK_EUNSUPPORTED = -4, /* valid but not supported (dtype, architecture, GGML type) */
    LPK_ENOMEM = -5,       /* allocation failed or a size would exceed limits */
    LPK_EINVAL = -6,       /* caller error: bad argument, wrong call order */
    LPK_EEXIST = -7,       /* target exists and overwriting was not allowed */
    LPK_ENOSPC = -8,       /* not enough free disk space */
    LPK_ECHECKSUM = -9,    /* checksum mismatch */
    LPK_EINTR = -10,       /* interrupted by a signal */
    LPK_EBADVALUE = -11,   /* NaN/Inf or otherwise unusable numbers in the input */
    LPK_ENOTFOUND = -12    /* a required key/tensor/file is missing */
};

/* Short stable name of a status ("ok", "io", "corrupt", ...). Never NULL. */
const char *lpk_status_name(int status);

/* Error detail that the caller owns and passes down. msg names the file, the
 * tensor, the offset, what was expected and what was found. */
typedef struct lpk_error {
    int status;
    char msg[1024];
} lpk_error;

/* Sets err (if non-NULL) with a printf-style message; returns status, so callers
 * can write `return lpk_err(err, LPK_ECORRUPT, "%s: ...", path);`.
 * If err already holds an error, the new message is not overwritten unless
 * err->status == LPK_OK. */
int lpk_err(lpk_error *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void lpk_error_clear(lpk_error *err);

/* ---------------------------------------------------------------- json text */
/* Hugging Face writes integers JSON parsers cannot hold in 64 bits (the
 * transformers "no limit" sentinel 1000000000000000019884624838656 in
 * tokenizer_config.json). Returns a malloc'ed, NUL-terminated copy of the n
 * bytes of JSON text in which every integer literal outside strings that does
 * not fit int64 has ".0" appended (a real number to any parser); *out_n is its
 * length. The text is not otherwise checked. NULL when out of memory. */
char *lpk_json_relax_bigints(const char *text, size_t n, size_t *out_n);

/* ---------------------------------------------------------------- guard */
/* Process-wide protection (lpk_guard.c, docs/RELIABILITY.md).
 *
 * Cleanup on signals: SIGHUP, SIGINT, SIGQUIT, SIGPIPE, SIGALRM, SIGTERM,
 * SIGUSR1/2, SIGXCPU and SIGXFSZ run every registered hook (which must be
 * async-signal-safe: unlink, rmdir), then the previous disposition of the
 * signal (the default ends the process; a program's own handler still runs;
 * a signal ignored at the first registration stays ignored). */
typedef void (*lpk_cleanup_fn)(void);
/* Registers fn once (again: no-op) and installs the handlers; LPK_ENOMEM when
 * all 8 hook slots are taken. */
int lpk_cleanup_add(lpk_cleanup_fn fn);
/* Runs the hooks now (async-signal-safe): for a program's own handlers. */
void lpk_cleanup_run(void);
/* Blocks / restores the cleanup signals in this thread, around changes to the
 * lists the hooks read. Calls nest: the outermost unblock restores the mask. */
void lpk_cleanup_block(void);
void lpk_cleanup_unblock(void);
/* Number of cleanup signals handled so far (writers compare it to fail with
 * LPK_EINTR after one). */
unsigned lpk_signal_count(void);
/* 1 if sig is one of the cleanup signals above. */
int lpk_is_term_signal(int sig);

/* Mapped files that shrink while mapped: a SIGBUS inside a guarded range is
 * caught, the rest of the range reads as zeros, and lpk_map_check reports
 * "FILE changed or was truncated while reading" (LPK_ETRUNC). A SIGBUS outside
 * every guarded range runs the cleanup hooks and ends the process as before.
 * Unguard before munmap. */
int lpk_map_guard(const void *addr, uint64_t len, const char *path);
void lpk_map_unguard(const void *addr);
/* LPK_ETRUNC naming the file if the mapping at addr faulted; addr NULL: if any
 * guarded mapping did. */
int lpk_map_check(const void *addr, lpk_error *err);
/* Faults caught so far in this process, and LPK_ETRUNC naming the latest
 * file if there were more than `count` (a writer compares with the count at
 * its open before renaming: what it wrote may come from zeros). */
unsigned lpk_map_fault_count(void);
int lpk_map_check_since(unsigned count, lpk_error *err);

/* Non-fatal notices (a stale temporary file removed, a file with no
 * checksums): silent unless a program sets a function. */
typedef void (*lpk_notice_fn)(const char *msg);
void lpk_set_notice(lpk_notice_fn fn);
void lpk_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The one registry of paths the cleanup signals remove: the writers'
 * temporary files, a program's own intermediate files, and temporary folders
 * with what was created in them (the archive reader's spool). Registers path
 * (copied) and returns its slot, or -1 when the path is too long (4096 bytes
 * or more) or memory is short. On a signal, registered files are unlinked,
 * then registered folders removed (rmdir) innermost first. Unregistering
 * does not remove the path. */
int lpk_temp_register(const char *path);
/* The same, holding fd (e.g. a folder's lock, or -1) open until the slot is
 * unregistered or removed; then fd is closed. */
int lpk_temp_register_fd(const char *path, int fd);
void lpk_temp_unregister(int slot);
/* Removes now, and unregisters, root and every registered path under root/
 * (files, then folders innermost first). */
void lpk_temp_remove(const char *root);
/* Mode for new output files: 0666 minus the process umask. */
unsigned lpk_output_mode(void);
/* Removes, from folder dir, temporary files of llmpack's naming patterns
 * (`.NAME.tmp-XXXXXX` holding an .lpk/GGUF header or nothing, and
 * `.llmpack-unpack-XXXXXX` folders) that are older than this process, owned by
 * this user, and not locked by a live writer; a notice names each. Returns how
 * many were removed. */
int lpk_sweep_stale(const char *dir);

/* ---------------------------------------------------------------- little-endian */
/* The one set of little-endian field readers/writers: every parser of a file
 * format (containers, GGUF, zip, pickle, llama2.c) decodes fields with these,
 * never by reading into a struct. p must have the bytes (callers check sizes). */
static inline uint16_t lpk_rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t lpk_rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}
static inline uint64_t lpk_rd64(const uint8_t *p)
{
    return (uint64_t)lpk_rd32(p) | ((uint64_t)lpk_rd32(p + 4) << 32);
}
/* An unsigned field of n bytes, n from 0 to 8 (pickle's 1/2/4-byte operands,
 * GGUF arrays of any element width). */
static inline uint64_t lpk_rdn(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}
/* An IEEE-754 binary32 stored little-endian. */
static inline float lpk_rdf32(const uint8_t *p)
{
    union { uint32_t u; float f; } v = {lpk_rd32(p)};
    return v.f;
}
static inline void lpk_wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static inline void lpk_wr64(uint8_t *p, uint64_t v)
{
    lpk_wr32(p, (uint32_t)v);
    lpk_wr32(p + 4, (uint32_t)(v >> 32));
}

/* ---------------------------------------------------------------- cpu */
enum lpk_cpu_flag {
    LPK_CPU_AVX2 = 1u << 0,
    LPK_CPU_FMA = 1u << 1,
    LPK_CPU_F16C = 1u << 2,
    LPK_CPU_AVX512F = 1u << 3,
    LPK_CPU_AVX512BW = 1u << 4,
    LPK_CPU_AVX512VL = 1u << 5,
    LPK_CPU_AVX512VNNI = 1u << 6,
    LPK_CPU_AVXVNNI = 1u << 7
};
/* Per-ISA code (docs/ARCHITECTURE.md, "SIMD variants"): a function compiled for
 * the instruction sets isa (e.g. "avx2,fma,f16c") and called only where
 * lpk_cpu_features() reports them. In a template included once per instruction
 * set, LPK_SIMD_FN and LPK_SIMD_INL declare a static (inlined) function for the
 * including file's SIMD_TGT. */
#define LPK_TARGET(isa) __attribute__((target(isa)))
#define LPK_TARGET_INLINE(isa) __attribute__((target(isa), always_inline)) inline
#define LPK_SIMD_FN static LPK_TARGET(SIMD_TGT)
#define LPK_SIMD_INL static LPK_TARGET_INLINE(SIMD_TGT)
/* Features of this CPU (cpuid + OS support via xgetbv), masked by the environment
 * variable LLMPACK_SIMD: "scalar" (none), "avx2" (AVX2+FMA+F16C only), "avx512"
 * or unset (all detected). Computed once; thread-safe after the first call. */
unsigned lpk_cpu_features(void);
/* malloc(n), or for n of 4 MiB and more a block aligned to 2 MiB that the
 * kernel is asked to back with huge pages: one page fault per 2 MiB on first
 * touch instead of per 4 KiB (large work buffers: the forward pass's state,
 * quantize's input pieces); free() it. */
void *lpk_alloc_big(size_t n);
/* Human-readable list of the SIMD paths in use, e.g. "avx2 fma f16c". */
const char *lpk_cpu_describe(void);

/* ---------------------------------------------------------------- types */
/* Tensor types. Ids are GGML's type ids, so GGUF import/export maps 1:1.
 * An id is usable only once it has a row in the type table (lpk_type_get). */
enum lpk_type {
    LPK_TYPE_F32 = 0,
    LPK_TYPE_F16 = 1,
    LPK_TYPE_Q4_0 = 2,
    LPK_TYPE_Q4_1 = 3,
    LPK_TYPE_Q5_0 = 6,
    LPK_TYPE_Q5_1 = 7,
    LPK_TYPE_Q8_0 = 8,
    LPK_TYPE_Q2_K = 10,
    LPK_TYPE_Q3_K = 11,
    LPK_TYPE_Q4_K = 12,
    LPK_TYPE_Q5_K = 13,
    LPK_TYPE_Q6_K = 14,
    LPK_TYPE_Q8_K = 15, /* activations only (verify's int8 path); never stored */
    LPK_TYPE_IQ4_NL = 20,
    LPK_TYPE_IQ4_XS = 23,
    LPK_TYPE_BF16 = 30,
    LPK_TYPE_COUNT = 31 /* ids are < this */
};

typedef struct lpk_type_info {
    int id;
    const char *name;   /* "f32", "q4_k", ... */
    int block_size;     /* elements per block (1 for f32/f16/bf16) */
    int type_size;      /* bytes per block */
    int storable;       /* may appear in a container */
} lpk_type_info;

/* NULL if id is not a known type. */
const lpk_type_info *lpk_type_get(int id);
/* Type id for a name (case-insensitive), or -1. */
int lpk_type_from_name(const char *name);
/* Bytes of n_elems elements of type; LPK_EINVAL if n_elems is not a multiple of
 * the block size or the type is unknown, LPK_ENOMEM on overflow. */
int lpk_type_nbytes(int type, uint64_t n_elems, uint64_t *out);

/* Checks n bytes of `type` data for non-finite numbers: every element of
 * f32/f16/bf16, the f16 scales (d, and dmin/m where the type has one) of each
 * block of the block types. Returns LPK_OK, or LPK_EBADVALUE with *where set to
 * the element (float types) or block index; types without a known layout pass. */
int lpk_check_finite(int type, const void *data, uint64_t n, uint64_t *where);

/* ---------------------------------------------------------------- half */
float lpk_f16_to_f32(uint16_t h);
uint16_t lpk_f32_to_f16(float f);   /* round to nearest even; NaN stays NaN */
float lpk_bf16_to_f32(uint16_t h);
uint16_t lpk_f32_to_bf16(float f);  /* round to nearest even; NaN stays NaN */
/* Row conversions (F16C / AVX2 when available, identical results either way). */
void lpk_f16_to_f32_row(const uint16_t *src, float *dst, size_t n);
void lpk_f32_to_f16_row(const float *src, uint16_t *dst, size_t n);
void lpk_bf16_to_f32_row(const uint16_t *src, float *dst, size_t n);
void lpk_f32_to_bf16_row(const float *src, uint16_t *dst, size_t n);
/* Any of f32/f16/bf16 (little-endian bytes) -> f32. LPK_EINVAL for other types. */
int lpk_to_f32_row(int type, const void *src, float *dst, size_t n);

/* ---------------------------------------------------------------- metadata */
/* Value types. Numbering is GGUF's, so GGUF import/export maps 1:1. */
enum lpk_vtype {
    LPK_V_U8 = 0, LPK_V_I8 = 1, LPK_V_U16 = 2, LPK_V_I16 = 3,
    LPK_V_U32 = 4, LPK_V_I32 = 5, LPK_V_F32 = 6, LPK_V_BOOL = 7,
    LPK_V_STR = 8, LPK_V_ARR = 9, LPK_V_U64 = 10, LPK_V_I64 = 11,
    LPK_V_F64 = 12,
    LPK_V_COUNT = 13
};
const char *lpk_vtype_name(int vtype);       /* "u32", "str", "arr", ... */
size_t lpk_vtype_size(int vtype);            /* bytes of a scalar; 0 for str/arr */

/* A length-counted string (not necessarily NUL-free; p[n] is always '\0'). */
typedef struct lpk_str {
    const char *p;
    uint64_t n;
} lpk_str;

/* One key/value. For scalars `data` points to the value (host order); for
 * LPK_V_STR, `str` holds it; for LPK_V_ARR, `elem` is the element type (never
 * LPK_V_ARR), `count` the number of elements and, for numeric elements, `data`
 * points to count values (host order, packed); for string elements use
 * lpk_kv_str_at(). Pointers stay valid until the store is freed or the key is
 * set again/removed. */
typedef struct lpk_kv {
    const char *key;
    int type;
    int elem;
    uint64_t count;
    const void *data;
    lpk_str str;
} lpk_kv;

typedef struct lpk_meta lpk_meta;  /* ordered key/value store; owns copies */

lpk_meta *lpk_meta_new(void);
void lpk_meta_free(lpk_meta *m);                 /* NULL is fine */
int lpk_meta_copy(lpk_meta *dst, const lpk_meta *src);  /* adds/overwrites all of src */

/* Setters copy their arguments; setting an existing key replaces it in place
 * (keeps its position). Return LPK_OK, LPK_ENOMEM or LPK_EINVAL. */
int lpk_meta_set_scalar(lpk_meta *m, const char *key, int vtype, const void *value);
int lpk_meta_set_u32(lpk_meta *m, const char *key, uint32_t v);
int lpk_meta_set_i32(lpk_meta *m, const char *key, int32_t v);
int lpk_meta_set_u64(lpk_meta *m, const char *key, uint64_t v);
int lpk_meta_set_i64(lpk_meta *m, const char *key, int64_t v);
int lpk_meta_set_f32(lpk_meta *m, const char *key, float v);
int lpk_meta_set_f64(lpk_meta *m, const char *key, double v);
int lpk_meta_set_bool(lpk_meta *m, const char *key, int v);
int lpk_meta_set_str(lpk_meta *m, const char *key, const char *v);  /* NUL-terminated */
int lpk_meta_set_strn(lpk_meta *m, const char *key, const char *v, uint64_t n);
/* Numeric array: `data` holds count packed host-order values of elem type. */
int lpk_meta_set_arr(lpk_meta *m, const char *key, int elem, const void *data, uint64_t count);
/* String array: strs[i] with lens[i] bytes (lens may be NULL: NUL-terminated). */
int lpk_meta_set_str_arr(lpk_meta *m, const char *key, const char *const *strs,
                         const uint64_t *lens, uint64_t count);
int lpk_meta_remove(lpk_meta *m, const char *key);  /* LPK_ENOTFOUND if absent */
/* Copies one key/value of another store into m: adds or replaces kv->key. */
int lpk_meta_set_kv(lpk_meta *m, const lpk_kv *kv);

size_t lpk_meta_count(const lpk_meta *m);
const lpk_kv *lpk_meta_at(const lpk_meta *m, size_t i);       /* in insertion order */
const lpk_kv *lpk_meta_find(const lpk_meta *m, const char *key);  /* NULL if absent */
lpk_str lpk_kv_str_at(const lpk_kv *kv, uint64_t i);          /* string array element */

/* Typed getters: LPK_ENOTFOUND if absent, LPK_EINVAL if the stored type does not
 * convert exactly (any integer type whose value fits; f32<->f64 for floats;
 * bool from bool). */
int lpk_meta_get_u32(const lpk_meta *m, const char *key, uint32_t *out);
int lpk_meta_get_i64(const lpk_meta *m, const char *key, int64_t *out);
int lpk_meta_get_u64(const lpk_meta *m, const char *key, uint64_t *out);
int lpk_meta_get_f32(const lpk_meta *m, const char *key, float *out);
int lpk_meta_get_f64(const lpk_meta *m, const char *key, double *out);
int lpk_meta_get_bool(const lpk_meta *m, const char *key, int *out);
/* Returns the NUL-terminated string or NULL if absent / not a string. */
const char *lpk_meta_get_str(const lpk_meta *m, const char *key);

/* ---------------------------------------------------------------- tensors */
#define LPK_MAX_DIMS 4
#define LPK_MAX_NAME 255
#define LPK_ALIGN 64

/* Dims are outermost first: [rows, cols] = [out_features, in_features];
 * rows are contiguous. */
typedef struct lpk_tensor {
    char name[LPK_MAX_NAME + 1];
    int type;
    int n_dims;
    int64_t dims[LPK_MAX_DIMS];
    uint64_t offset;      /* absolute file offset of the data */
    uint64_t size;        /* bytes */
    uint64_t xxh3;        /* xxh3-64 of the bytes (0 if has_xxh3 == 0) */
    int has_xxh3;         /* GGUF carries no checksums */
    const void *data;     /* reader: points into the mapping; writer: unused */
} lpk_tensor;

/* Number of elements (product of dims); 0 for n_dims == 0. */
uint64_t lpk_tensor_nelems(const lpk_tensor *t);
/* Row length (innermost dim) and row count (product of the others). */
int64_t lpk_tensor_ncols(const lpk_tensor *t);
int64_t lpk_tensor_nrows(const lpk_tensor *t);

/* ---------------------------------------------------------------- reader */
enum lpk_file_kind { LPK_KIND_LPK = 1, LPK_KIND_GGUF = 2 };

typedef struct lpk_reader lpk_reader;

/* Opens and maps a container (.lpk, or GGUF detected by magic), validating the
 * header, every length, every offset and size against the file size, and each
 * tensor's size against its type and shape, and (.lpk) the header+metadata+
 * directory checksum unless the process default says LPK_OPEN_NO_VERIFY;
 * tensor checksums are verified by lpk_reader_tensor_data as each is read.
 * On failure *out is NULL and err says what is wrong, naming the file. */
int lpk_reader_open(const char *path, lpk_reader **out, lpk_error *err);
enum lpk_open_flags {
    LPK_OPEN_NO_VERIFY = 1u << 0  /* skip checksum verification (--no-verify-checksums) */
};
/* Like lpk_reader_open, and (unless LPK_OPEN_NO_VERIFY, or the process default
 * set below) verifies the header+metadata+directory checksum before any
 * metadata is decoded: LPK_ECHECKSUM naming the file. lpk_reader_open uses the
 * process default flags. The file's mapping is guarded (lpk_map_guard). */
int lpk_reader_open_flags(const char *path, unsigned flags, lpk_reader **out, lpk_error *err);
/* Flags every lpk_reader_open uses (default 0: verify). */
void lpk_reader_set_default_flags(unsigned flags);
unsigned lpk_reader_default_flags(void);
/* The same over an open file (a memfd, an unlinked temporary file): maps it
 * whole; fd can be closed once this returns (the mapping keeps the file).
 * name stands for it in messages and lpk_reader_path. */
int lpk_reader_open_fd(int fd, const char *name, unsigned flags, lpk_reader **out,
                       lpk_error *err);
/* The same over bytes in memory (name is used in messages); buf must stay
 * valid and unchanged until lpk_reader_close(). */
int lpk_reader_open_buffer(const void *buf, size_t size, const char *name, lpk_reader **out,
                           lpk_error *err);
void lpk_reader_close(lpk_reader *r);            /* NULL is fine */

int lpk_reader_kind(const lpk_reader *r);         /* LPK_KIND_* */
uint32_t lpk_reader_version(const lpk_reader *r);
uint64_t lpk_reader_file_size(const lpk_reader *r);
const char *lpk_reader_path(const lpk_reader *r);
const lpk_meta *lpk_reader_meta(const lpk_reader *r);
size_t lpk_reader_n_tensors(const lpk_reader *r);
const lpk_tensor *lpk_reader_tensor(const lpk_reader *r, size_t i);
const lpk_tensor *lpk_reader_find(const lpk_reader *r, const char *name);  /* NULL if absent */
/* Recomputes the xxh3 of tensor i and compares; LPK_ECHECKSUM with detail on
 * mismatch, LPK_OK if it matches or the file carries no checksum. For .lpk
 * also checks that the padding before the tensor is zero (LPK_ECORRUPT). */
int lpk_reader_verify_tensor(const lpk_reader *r, size_t i, lpk_error *err);
/* Recomputes the header+metadata+directory xxh3 (docs/FORMAT.md) and compares;
 * LPK_ECHECKSUM on mismatch, LPK_OK if it matches or the file is GGUF. */
int lpk_reader_verify_header(const lpk_reader *r, lpk_error *err);
/* .lpk header flags (bit 0: metadata stored zstd-compressed); 0 for GGUF. */
unsigned lpk_reader_flags(const lpk_reader *r);
/* The bytes of tensor i with the checks every consumer needs, in one pass over
 * them: its xxh3 (first access only; not with LPK_OPEN_NO_VERIFY), zero
 * padding before it (.lpk), finite values (f32/f16/bf16 elements, the f16
 * scales of block types: LPK_EBADVALUE naming tensor and element or block),
 * and that the file did not shrink while mapped (LPK_ETRUNC). *data is NULL on
 * error. Not for concurrent calls on one reader. */
int lpk_reader_tensor_data(const lpk_reader *r, size_t i, const void **data, lpk_error *err);
/* Tensor i's bytes read into dst (its size) with read(2) instead of through
 * the mapping, with lpk_reader_tensor_data's checks done on dst: what is
 * checked is what the caller uses. For a stream over a large input into
 * buffers the caller reuses: no page of the mapping is touched (where a new
 * mapping's first touch of each page costs more than a copy; docs/
 * PERFORMANCE.md). A file that ends early: LPK_ETRUNC. A reader of a buffer
 * copies from it. Calls for different i may run concurrently. */
int lpk_reader_tensor_read(const lpk_reader *r, size_t i, void *dst, lpk_error *err);
/* Tensor i read in consecutive parts into buffers of the caller's (a stream
 * over a large tensor in bounded memory): lpk_reader_tensor_read's checks over
 * the whole. Each lpk_reader_part_read reads the next n bytes into dst (a
 * multiple of the type's block or element size, but for the last part) and
 * checks their values (an error names the element's row and column in the
 * tensor); the part that ends the tensor compares its xxh3. A part with a
 * NaN/Inf first hashes the rest of the tensor (through the mapping): a
 * checksum mismatch is reported before the value, as a whole read does. The
 * padding before the tensor is checked by lpk_reader_part_begin. One
 * lpk_part_read is for one thread; several may run on one reader. */
typedef struct lpk_part_read lpk_part_read;
int lpk_reader_part_begin(const lpk_reader *r, size_t i, lpk_part_read **p, lpk_error *err);
int lpk_reader_part_read(lpk_part_read *p, void *dst, uint64_t n, lpk_error *err);
void lpk_reader_part_end(lpk_part_read *p);
/* Index of tensor t (a pointer from lpk_reader_tensor/find) in r. */
size_t lpk_reader_index(const lpk_reader *r, const lpk_tensor *t);
/* LPK_ETRUNC if r's file shrank while mapped (see lpk_map_check). */
int lpk_reader_check_io(const lpk_reader *r, lpk_error *err);
/* 1 if the file carries checksums (.lpk), 0 if not (GGUF). */
int lpk_reader_has_checksums(const lpk_reader *r);
/* Tells the kernel the mapped pages of tensor i are no longer needed. */
void lpk_reader_release_tensor(const lpk_reader *r, size_t i);

/* ---------------------------------------------------------------- writer */
enum lpk_writer_flags {
    LPK_WRITE_FORCE = 1u << 0,   /* replace an existing target */
    LPK_WRITE_GGUF = 1u << 1,    /* write GGUF v3 instead of .lpk */
    LPK_WRITE_SCRATCH = 1u << 2, /* an intermediate file its caller removes once it is read:
                                  * renamed into place all the same, but neither it nor its
                                  * folder is fsynced and its writeback is not started */
    LPK_WRITE_DIRECT = 1u << 3   /* write the temporary file with O_DIRECT from the writer's
                                  * own aligned buffer, so the output does not pass through
                                  * (nor stay in) the page cache: for a large output that is
                                  * not read back soon, written where blocking on the device
                                  * does not hold anything up. A hint: where the file system
                                  * refuses O_DIRECT the file is written buffered, and a
                                  * caller's file (lpk_writer_open_fd) is always written as
                                  * without it. Same bytes, same fsync and rename either way */
};

typedef struct lpk_writer lpk_writer;

/* Starts a container at `path`: all tensors are declared up front (name, type,
 * n_dims, dims; offset/size/xxh3 are computed by the writer), so the layout and
 * the final size are known before any data is written. Data goes to a temporary
 * file `.NAME.tmp-XXXXXX` in the target folder; free space is checked. The
 * temporary file (mode 0666 minus the umask, flock'ed while open) is removed
 * on failure, on lpk_writer_abort() and on the cleanup signals (see "guard":
 * the previous disposition runs afterwards, so the default action still ends
 * the process and a program's own handler still runs). After such a signal the
 * writers open at that time fail with LPK_EINTR. Stale temporary files of
 * killed runs in the folder are swept first (lpk_sweep_stale). An existing
 * target: LPK_EEXIST unless LPK_WRITE_FORCE (checked here and again at the
 * final rename); a target that is not a regular file (device, FIFO, folder,
 * symbolic link): LPK_EINVAL, forced or not. lpk_writer_finish fails with
 * LPK_ETRUNC when a guarded input mapping faulted since the open. `meta` is copied (meta may be NULL: no keys). */
int lpk_writer_open(const char *path, const lpk_meta *meta, const lpk_tensor *decls,
                    size_t n_tensors, unsigned flags, lpk_writer **out, lpk_error *err);
/* The same into a file the caller has open for writing (a memfd, an unlinked
 * temporary file): truncated and written from offset 0, never closed, renamed
 * or synced (lpk_writer_finish leaves the complete container in it, readable
 * with lpk_reader_open_fd); name stands for it in messages. flags: LPK_WRITE_GGUF
 * only (LPK_WRITE_SCRATCH and LPK_WRITE_DIRECT change nothing here). On failure
 * the file's content is undefined: the caller discards it. */
int lpk_writer_open_fd(int fd, const char *name, const lpk_meta *meta, const lpk_tensor *decls,
                       size_t n_tensors, unsigned flags, lpk_writer **out, lpk_error *err);
/* What lpk_writer_open checks of the target before anything is created, for a
 * program that writes it only after a long first step: LPK_EEXIST if a file
 * is there and flags lack LPK_WRITE_FORCE; LPK_EINVAL (the message says what
 * it is) if something other than a regular file is there. */
int lpk_writer_check_target(const char *path, unsigned flags, lpk_error *err);
/* Tensors are written in declaration order: begin, any number of writes whose
 * sizes add up to the tensor's size, end. */
int lpk_writer_tensor_begin(lpk_writer *w, const char *name, lpk_error *err);
int lpk_writer_tensor_write(lpk_writer *w, const void *data, size_t n, lpk_error *err);
int lpk_writer_tensor_end(lpk_writer *w, lpk_error *err);
/* Completes the file (checksums patched, fsync) and renames it into place.
 * Frees w whatever the result. */
int lpk_writer_finish(lpk_writer *w, lpk_error *err);
/* Removes the temporary file and frees w. NULL is fine. */
void lpk_writer_abort(lpk_writer *w);
/* The size the finished file will have (known from the declarations at open). */
uint64_t lpk_writer_file_size(const lpk_writer *w);

/* Writes n bytes to path atomically: a temporary file beside it, fsync, rename
 * (the same rules and signal cleanup as lpk_writer: LPK_EEXIST unless
 * LPK_WRITE_FORCE; nothing is left at path on failure or SIGINT/SIGTERM). */
int lpk_file_write(const char *path, const void *data, size_t n, unsigned flags,
                   lpk_error *err);

/* ---------------------------------------------------------------- importance matrices */
/* Per-column statistics of the activations that multiply a weight (docs/QUANT.md,
 * "Importance matrices"), as llama.cpp's llama-imatrix collects them. Two file
 * layouts, detected from the content on reading: llama.cpp b4748's legacy
 * binary one and newer llama.cpp's GGUF one (general.type "imatrix", tensors
 * NAME.in_sum2 and NAME.counts). */
enum lpk_imatrix_format { LPK_IMATRIX_AUTO = 0, LPK_IMATRIX_LEGACY = 1, LPK_IMATRIX_GGUF = 2 };

typedef struct lpk_imatrix_entry {
    char name[LPK_MAX_NAME + 1];  /* the weight's GGUF name, blk.0.attn_q.weight */
    int64_t n;                    /* values: the weight's row length */
    float *sum2;                  /* n sums of squared activations, per column */
    float count;                  /* activations each sum is over (legacy files: ncall) */
    int32_t ncall;                /* chunks (legacy's call count) */
    /* NULL, or n * 32 sums (n a multiple of 32) over the same activations x as
     * sum2: cov32[(b*32 + i)*32 + j] = sum of x[b*32 + i] * x[b*32 + j], the
     * 32x32 diagonal blocks of X^T X (block b = columns b*32 .. b*32+31).
     * Divided by count: the blocks of the input's second-moment matrix
     * (lpk_imatrix_cov32); the diagonal is sum2 to rounding. In files: the
     * entry NAME.cov32 (docs/QUANT.md, "Importance matrices"). */
    float *cov32;
} lpk_imatrix_entry;

typedef struct lpk_imatrix {
    lpk_imatrix_entry *e;
    size_t n;
    char *dataset;                /* calibration text's name, or NULL */
    int32_t chunks;               /* chunks the matrix was computed on (0 if unknown) */
    int32_t chunk_size;           /* tokens per chunk (0 if unknown) */
    int format;                   /* LPK_IMATRIX_* the file was read as (0 if made) */
    uint64_t hash;                /* xxh3-64 of the file's bytes (read or written) */
} lpk_imatrix;

lpk_imatrix *lpk_imatrix_new(void);             /* NULL when out of memory */
void lpk_imatrix_free(lpk_imatrix *im);          /* NULL is fine */
/* Appends an entry of n zero sums (count 0); *out (may be NULL) points to it
 * until the next add. LPK_EINVAL (bad name or n; a name ending in
 * LPK_IMATRIX_COV32_SUFFIX), LPK_ENOMEM. */
int lpk_imatrix_add(lpk_imatrix *im, const char *name, int64_t n, lpk_imatrix_entry **out);
int lpk_imatrix_set_dataset(lpk_imatrix *im, const char *dataset);   /* copied; NULL clears */
const lpk_imatrix_entry *lpk_imatrix_find(const lpk_imatrix *im, const char *name);
/* The importance weight per column, sum2 / count (n values into w). */
void lpk_imatrix_weights(const lpk_imatrix_entry *e, float *w);
/* The name suffix of the 32x32 block entries in files ("blk.0.attn_q.weight.cov32"). */
#define LPK_IMATRIX_COV32_SUFFIX ".cov32"
/* Gives e zeroed cov32 sums (n * 32 floats; kept if it has them). LPK_EINVAL
 * when e->n is not a multiple of 32 or NAME.cov32 would be too long;
 * LPK_ENOMEM. */
int lpk_imatrix_add_cov32(lpk_imatrix_entry *e);
/* The 32x32 diagonal blocks of the second-moment matrix of tensor's input
 * (E[x x^T] over the calibration tokens, block b = columns b*32 .. b*32+31):
 * out[(b*32 + i)*32 + j] = mean of x[b*32 + i] * x[b*32 + j] (ncols * 32 floats,
 * cov32 / count; the diagonal equals lpk_imatrix_weights'). Returns 1, or 0
 * with out untouched when im has no such entry for tensor or its rows do not
 * have ncols values. */
int lpk_imatrix_cov32(const lpk_imatrix *im, const char *tensor, int64_t ncols, float *out);
/* Entries that carry cov32 blocks. */
size_t lpk_imatrix_n_cov32(const lpk_imatrix *im);
/* Reads either layout. Truncation: LPK_ETRUNC; bad structure: LPK_ECORRUPT;
 * NaN/Inf/negative values: LPK_EBADVALUE; each message names the file and the
 * entry. NAME.cov32 entries go to NAME's entry (cov32): one without NAME's
 * entry, one of the wrong length (not NAME's n * 32, or n not a multiple of
 * 32), twice: LPK_ECORRUPT; NaN/Inf, a negative diagonal value: LPK_EBADVALUE
 * (off-diagonal values may be negative). A legacy NAME.cov32 of another call
 * count than NAME's is rescaled to NAME's count (values / its calls * count).
 * Sets format and hash. */
int lpk_imatrix_read(const char *path, lpk_imatrix **out, lpk_error *err);
int lpk_imatrix_read_buffer(const void *buf, size_t size, const char *name, lpk_imatrix **out,
                            lpk_error *err);
/* Checks that every entry names a 2-D tensor of the list whose rows have n
 * values, once (LPK_ECORRUPT naming the entry: made for another model); so
 * the same of the cov32 blocks an entry carries. */
int lpk_imatrix_check(const lpk_imatrix *im, const char *path, const lpk_tensor *tensors,
                      size_t n_tensors, lpk_error *err);
/* Writes format (LPK_IMATRIX_AUTO: GGUF when path ends in .gguf, else legacy)
 * atomically (flags: LPK_WRITE_FORCE); sets im->hash to the written bytes'.
 * cov32 blocks: legacy, an entry NAME.cov32 (after all plain entries, in their
 * order) of n * 32 values scaled as NAME's; GGUF, an f32 tensor NAME.cov32 of
 * n/32 x 32 x 32 raw sums beside NAME.in_sum2 and NAME.counts.
 * Values the legacy layout cannot hold (sum/count * calls past a float's range,
 * possible in a GGUF matrix read back): LPK_EBADVALUE naming the entry. */
int lpk_imatrix_write(const char *path, lpk_imatrix *im, int format, unsigned flags,
                      lpk_error *err);
/* The legacy layout in memory (*out malloc'ed), e.g. to hash a matrix that is
 * never written. LPK_ENOMEM; LPK_EBADVALUE as lpk_imatrix_write. */
int lpk_imatrix_legacy_bytes(const lpk_imatrix *im, uint8_t **out, size_t *n_out);
/* Records where an importance matrix came from in meta: llama.cpp's keys
 * quantize.imatrix.file (file, may be NULL: not recorded), .dataset, .entries_count
 * (the entries llama-imatrix would have: cov32 blocks do not count) and
 * .chunks_count (i32, as llama-quantize writes them), and llmpack's
 * quant.imatrix.hash (the xxh3-64 as 16 hex digits) and, when some entries
 * carry them, quant.imatrix.cov32_count (i32). LPK_ENOMEM. */
int lpk_imatrix_record(const lpk_imatrix *im, const char *file, lpk_meta *meta);
/* Sets im->hash to the xxh3-64 of its legacy layout (a matrix made in memory
 * and never written is named by what writing it would give). LPK_ENOMEM,
 * LPK_EBADVALUE (values the legacy layout cannot hold). */
int lpk_imatrix_rehash(lpk_imatrix *im);


/* ---------------------------------------------------------------- GGUF export */
/* How a LLaMA container becomes a GGUF file for llama.cpp (docs/GGUF.md): the
 * keys with the types llama.cpp reads, the tensor declarations, and the extra
 * tensors export adds (rope_freqs.weight for LLaMA-3 RoPE scaling). */
enum lpk_gguf_flags {
    LPK_GGUF_STRIP = 1u << 0     /* drop llmpack-only keys (source.*, quant.*, ...) */
};

typedef struct lpk_gguf_plan {
    lpk_meta *meta;          /* GGUF keys in order; owned */
    lpk_tensor *decls;       /* n_tensors declarations, GGUF order; owned */
    size_t n_tensors;
    /* For each decl: index of the source tensor in the reader, or -1 for an added
     * tensor whose bytes are extra[i] (owned, decls[i].size bytes). */
    long *src;
    void **extra;
    size_t n_dropped;        /* source keys not written */
} lpk_gguf_plan;

/* Plans the export of the container open in r. `name` is general.name when the
 * container has none (may be NULL). LPK_EUNSUPPORTED if the architecture is not
 * LLaMA, LPK_ENOTFOUND naming a missing required key, LPK_ECORRUPT naming a key
 * whose type cannot be converted to the one llama.cpp reads. */
int lpk_gguf_plan_make(const lpk_reader *r, const char *name, unsigned flags,
                       lpk_gguf_plan *plan, lpk_error *err);
void lpk_gguf_plan_free(lpk_gguf_plan *plan);   /* NULL and zeroed plans are fine */
/* LLaMA-3 RoPE frequency factors as llama.cpp's converter computes them (f32):
 * n = rot_dims / 2 values. */
void lpk_gguf_llama3_rope_factors(uint32_t rot_dims, float base, float factor,
                                  float low_freq_factor, float high_freq_factor,
                                  uint32_t original_ctx, float *out);

#ifdef __cplusplus
}
#endif
#endif
