/* The quantize job: a container (.lpk or GGUF) -> one or several outputs,
 * each with a recipe's types, streamed tensor by tensor: every source tensor
 * is read (and its checksum verified) once, converted to f32 once, and
 * quantized, measured and written once per output. A GGUF output is a
 * container beside it, exported (job_export.c) and removed. */
#include "job_internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "../calib/calib.h"
#include "../quant/quant.h"
#include "../verify/verify.h"

/* One output while the job runs. */
typedef struct qout {
    const llmpack_quantize_out *o;
    llmpack_quantize_output *rep;
    lpk_tensor *decls;         /* n: the output's tensors (type, size) */
    quant_choice *ch;          /* n: the plan */
    llmpack_quantize_tensor *t;/* n: the report's entries (rep->tensors once planned) */
    char tmp[4096];            /* a GGUF output's temporary container, or "" */
    lpk_writer *w;
    void *qbuf;                /* the tensor being quantized */
    void *qbuf2;               /* the previous one, while it is written */
} qout;

/* What the outputs share. */
typedef struct qrun {
    llmpack_job *j;
    const llmpack_quantize_opts *o;
    lpk_reader *r;
    size_t n;
    int64_t *per;              /* n: the rows of each piece of tensor i, 0: whole */
    lpk_imatrix *im;
    calib_gptq *g;
    quant_target_result tres;
    llmpack_quantize_report *rep;
    uint64_t done_bytes;       /* the quantize stage's bytes so far */
    char item[96];             /* the item of a "gptq blocks" update */
    int gptq_events;           /* "gptq blocks" updates were sent (an end is due) */
} qrun;

static const char *tname(int type)
{
    const lpk_type_info *ti = lpk_type_get(type);
    return ti ? ti->name : "?";
}

void llmpack_quantize_opts_init(llmpack_quantize_opts *o)
{
    memset(o, 0, sizeof *o);
    calib_gptq_opts go;
    calib_gptq_opts_default(&go);
    o->gptq_damp = go.damp;
    o->gptq_order = go.order;
    o->calib_chunks = 4;
}

void llmpack_quantize_report_free(llmpack_quantize_report *rep)
{
    if (!rep) return;
    for (size_t k = 0; k < rep->n_out && rep->outputs; k++) free(rep->outputs[k].tensors);
    free(rep->outputs);
    lpk_imatrix_free(rep->imatrix);
    memset(rep, 0, sizeof *rep);
}

/* Source tensor -> f32 (dequantizing block types). */
static int to_f32(const lpk_tensor *t, const void *bytes, float *x, lpk_error *err)
{
    int64_t nr = lpk_tensor_nrows(t), nc = lpk_tensor_ncols(t);
    int rc = quant_type_is_block(t->type) ? quant_dequantize_rows(t->type, bytes, nr, nc, x)
                                          : lpk_to_f32_row(t->type, bytes, x, (size_t)(nr * nc));
    if (rc) return lpk_err(err, LPK_EUNSUPPORTED, "%s: cannot read type %s", t->name,
                           tname(t->type));
    return LPK_OK;
}

/* Bytes of a GGUF file of the keys in m and the n tensors that are not
 * tensor data (the header, key/values, tensor infos, alignment padding at
 * most): what export adds to the tensors, near enough for a budget (its keys
 * are m's give or take a few; the exported file's exact size is checked). */
static uint64_t gguf_overhead(const lpk_meta *m, const lpk_tensor *decls, size_t n)
{
    uint64_t b = 4 + 4 + 8 + 8 + 31;
    for (size_t i = 0; i < lpk_meta_count(m); i++) {
        const lpk_kv *kv = lpk_meta_at(m, i);
        b += 8 + strlen(kv->key) + 4;
        if (kv->type == LPK_V_STR) {
            b += 8 + kv->str.n;
        } else if (kv->type != LPK_V_ARR) {
            b += lpk_vtype_size(kv->type);
        } else {
            b += 4 + 8;
            if (kv->elem != LPK_V_STR) b += kv->count * lpk_vtype_size(kv->elem);
            else for (uint64_t k = 0; k < kv->count; k++) b += 8 + lpk_kv_str_at(kv, k).n;
        }
    }
    for (size_t i = 0; i < n; i++)
        b += 8 + strlen(decls[i].name) + 4 + 8 * (uint64_t)decls[i].n_dims + 4 + 8 + 31;
    return b;
}

/* The container path an output's tensors go to: the output itself, or a GGUF
 * output's temporary container. */
static const char *container_of(const qout *q)
{
    return q->o->format == LLMPACK_FMT_GGUF ? q->tmp : q->o->path;
}

/* The size-target plan of the single output (budget in bytes of tensors). */
static int plan_target(qrun *run, qout *q, const float *const *imw, const double *gains,
                       uint64_t budget)
{
    lpk_error *err = job_err(run->j);
    for (size_t i = 0; i < run->n; i++) q->decls[i] = *lpk_reader_tensor(run->r, i);
    int rc = quant_plan_target(q->decls, run->n, imw, gains, NULL, 0, budget, q->ch,
                               &run->tres, err);
    if (rc == LPK_ENOSPC) {
        /* a budget no plan fits: the limit asked for is the problem (exit 2) */
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        rc = lpk_err(err, LPK_EINVAL, "%s: %s", run->o->in, msg);
    }
    return rc;
}

/* Everything about output q that follows from its plan: the refusal of a
 * tensor to requantize, the declarations' sizes, the metadata, its buffer;
 * then its writer is opened. */
static int prepare_output(qrun *run, qout *q)
{
    const llmpack_quantize_opts *o = run->o;
    lpk_error *err = job_err(run->j);
    lpk_reader *r = run->r;
    uint64_t max_bytes = 1; /* what qbuf holds: a tensor quantized whole, or a piece */
    for (size_t i = 0; i < run->n; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        int src = t->type, dst = q->ch[i].type;
        if (quant_type_is_block(src) && src != dst && !o->allow_requantize)
            return lpk_err(err, LPK_EINVAL,
                           "%s: %s is already %s; quantizing it to %s would dequantize it "
                           "first (add --allow-requantize)", o->in, t->name, tname(src),
                           tname(dst));
        q->decls[i] = *t;
        q->decls[i].type = dst;
        q->decls[i].data = NULL;
        if (lpk_type_nbytes(dst, lpk_tensor_nelems(t), &q->decls[i].size))
            return lpk_err(err, LPK_EINVAL, "%s: %s does not fit type %s", o->in, t->name,
                           tname(dst));
        uint64_t b = src == dst ? 0 : q->decls[i].size;
        if (run->per[i]) b = b / (uint64_t)lpk_tensor_nrows(t) * (uint64_t)run->per[i];
        if (b > max_bytes) max_bytes = b;
    }
    if (o->allow_requantize)
        for (size_t i = 0; i < run->n; i++) {
            const lpk_tensor *t = lpk_reader_tensor(r, i);
            if (quant_type_is_block(t->type) && t->type != q->ch[i].type)
                job_notice(run->j, "%s: dequantizing %s to requantize it as %s", t->name,
                           tname(t->type), tname(q->ch[i].type));
        }
    lpk_meta *meta = lpk_meta_new();
    int rc = meta ? lpk_meta_copy(meta, lpk_reader_meta(r)) : LPK_ENOMEM;
    if (!rc && o->name) rc = lpk_meta_set_str(meta, "general.name", o->name);
    if (!rc)
        rc = q->o->recipe
                 ? quant_plan_record(q->o->recipe, o->pure, q->decls, q->ch, run->n, meta)
                 : quant_plan_record_target(run->rep->target, &run->tres, q->decls, q->ch,
                                            run->n, meta);
    if (!rc && run->im) rc = lpk_imatrix_record(run->im, o->imatrix, meta);
    if (!rc && run->g) rc = calib_gptq_record(run->g, meta);
    if (rc) {
        lpk_meta_free(meta);
        return lpk_err(err, rc, "cannot record the recipe in the metadata");
    }
    if (max_bytes > SIZE_MAX || !(q->qbuf = lpk_alloc_big((size_t)max_bytes)) ||
        !(q->qbuf2 = lpk_alloc_big((size_t)max_bytes))) {
        lpk_meta_free(meta);
        return lpk_err(err, LPK_ENOMEM, "out of memory");
    }
    /* the temporary container of a GGUF output exists already (empty), and is
     * removed once exported: not synced, and left in the page cache for the
     * export to read. A container output is written directly: nothing reads
     * it back, and its writes block only the writes thread (qwrites) */
    unsigned flags = q->o->format == LLMPACK_FMT_GGUF ? LPK_WRITE_FORCE | LPK_WRITE_SCRATCH
                     : o->force ? LPK_WRITE_FORCE | LPK_WRITE_DIRECT
                                : LPK_WRITE_DIRECT;
    rc = lpk_writer_open(container_of(q), meta, q->decls, run->n, flags, &q->w, err);
    lpk_meta_free(meta);
    return rc;
}

/* All outputs together must fit the free space of their folder (each writer
 * checks its own file only): the containers, and the largest GGUF beside
 * them while it is exported. */
static int check_space(const qout *outs, size_t n_out, lpk_error *err)
{
    uint64_t need = 0, gguf = 0;
    for (size_t k = 0; k < n_out; k++) {
        uint64_t s = lpk_writer_file_size(outs[k].w);
        need += s;
        if (outs[k].o->format == LLMPACK_FMT_GGUF && s > gguf) gguf = s;
    }
    need += gguf;
    char dir[4096];
    const char *path = outs[0].o->path, *slash = strrchr(path, '/');
    int dl = slash ? (int)(slash - path) + 1 : 0;
    snprintf(dir, sizeof dir, "%.*s", dl, dl ? path : ".");
    struct statvfs vs;
    if (statvfs(dir, &vs) != 0 || !vs.f_frsize || vs.f_bavail > UINT64_MAX / vs.f_frsize)
        return LPK_OK;
    uint64_t avail = (uint64_t)vs.f_bavail * vs.f_frsize;
    if (avail < need)
        return lpk_err(err, LPK_ENOSPC, "%s: the %zu outputs need about %" PRIu64 " bytes, %"
                       PRIu64 " free", dir, n_out, need, avail);
    return LPK_OK;
}

/* Output q's version of tensor i (t, its bytes, its f32 values in x when
 * converted, else NULL: quantized from the f32/f16/bf16 bytes row by row):
 * quantized (or the source bytes), measured, written. */
/* Rows r0..r1 of tensor i for output q, from those rows of the input (bytes,
 * or x, its f32 copy, where one is needed): quantized into dst (*out = dst) or,
 * when the output keeps the source type, the bytes themselves (*out = bytes;
 * whole tensors only). Rows after the first of a tensor add their error sums
 * to those of the rows before. GPTQ takes whole tensors from x. */
static int prepare_rows(qrun *run, qout *q, size_t i, const lpk_tensor *t, const void *bytes,
                        const float *x, float *wbuf, int64_t r0, int64_t r1, void *dst,
                        const void **out)
{
    const void *src = x ? (const void *)x : bytes;
    lpk_error *err = job_err(run->j);
    int64_t nr = r1 - r0, nc = lpk_tensor_ncols(t);
    int type = q->ch[i].type, rc = LPK_OK;
    llmpack_quantize_tensor *st = &q->t[i];
    if (t->type != type) {
        lpk_error qe = {0};
        const float *iw = NULL, *cov = NULL;
        if (run->im && quant_type_is_block(type)) {
            const lpk_imatrix_entry *e = lpk_imatrix_find(run->im, t->name);
            if (e) {
                lpk_imatrix_weights(e, wbuf);
                iw = wbuf;
                /* the input's covariance blocks, where the matrix has them
                 * (wbuf holds 33 floats a column then; docs/QUANT.md) */
                if (quant_type_uses_cov(type) && lpk_imatrix_cov32(run->im, t->name, nc, wbuf + nc))
                    cov = wbuf + nc;
            } else {
                /* no entry: the weighting used without a matrix (docs/QUANT.md) */
                st->no_entry = 1;
            }
        }
        int gptq = run->g && calib_gptq_applies(run->g, t->name, type);
        int measure = t->n_dims >= 2;
        if (gptq)
            rc = calib_gptq_quantize(run->g, t->name, type, x, nr, nc, dst, &qe);
        else
            /* the error sums come with the rows, while they are in cache */
            rc = quant_quantize_rows_err(type, x ? LPK_TYPE_F32 : t->type, src, nr, nc, dst,
                                         iw, cov,
                                         quant_rows_flags(t->name, q->decls, run->n) |
                                             (r0 ? QUANT_ROWS_ADD_ERR : 0u),
                                         measure ? &st->sse : NULL, measure ? &st->ssx : NULL,
                                         &qe);
        if (rc == LPK_EINTR) return lpk_err(err, rc, "%s: cancelled", run->o->in);
        if (rc) return lpk_err(err, rc, "%s: tensor %s: %s", run->o->in, t->name, qe.msg);
        if (measure && gptq) quant_error(type, x, dst, nr, nc, &st->sse, &st->ssx);
        st->has_err = measure;
        *out = dst;
        return LPK_OK;
    }
    if (t->n_dims >= 2) {
        /* copied as is: no error, but its weights count in the pooled figure */
        for (uint64_t k = 0; k < lpk_tensor_nelems(t); k++) st->ssx += (double)x[k] * x[k];
        st->has_err = 1;
    }
    *out = bytes;
    return rc;
}

/* Tensor i's bytes into output q's container. */
static int write_out(qout *q, size_t i, const char *name, const void *bytes, lpk_error *err)
{
    int rc = lpk_writer_tensor_begin(q->w, name, err);
    if (!rc) rc = lpk_writer_tensor_write(q->w, bytes, (size_t)q->decls[i].size, err);
    if (!rc) rc = lpk_writer_tensor_end(q->w, err);
    return rc;
}

/* The writes of quantized bytes (each output's qbuf2: checksum and copy into
 * the file) on a thread of their own while the next rows are quantized into
 * qbuf: a whole tensor, or the rows of one piece of a tensor quantized piece
 * by piece (the first begins the tensor, the last ends it). The containers are
 * written in tensor order all the same: the next writes start only once these
 * are joined. */
typedef struct qwrites {
    qout *outs;
    size_t n_out, i;
    const char *name;
    int64_t r0, r1;  /* the rows of tensor i in qbuf2 */
    int begin, end;  /* they begin / end the tensor (both: all of it) */
    pthread_t th;
    int active, rc;
    lpk_error err;
} qwrites;

static void *qwrites_run(void *arg)
{
    qwrites *b = arg;
    for (size_t k = 0; k < b->n_out && !b->rc; k++) {
        qout *q = &b->outs[k];
        const lpk_tensor *d = &q->decls[b->i];
        size_t len = (size_t)d->size;
        if (!b->begin || !b->end) len = (size_t)(d->size / (uint64_t)lpk_tensor_nrows(d)) *
                                         (size_t)(b->r1 - b->r0);
        if (b->begin) b->rc = lpk_writer_tensor_begin(q->w, b->name, &b->err);
        if (!b->rc) b->rc = lpk_writer_tensor_write(q->w, q->qbuf2, len, &b->err);
        if (!b->rc && b->end) b->rc = lpk_writer_tensor_end(q->w, &b->err);
    }
    return NULL;
}

/* The input read ahead of the quantize loop on a thread of its own, in
 * pieces: a tensor whole, or a large one in pieces of whole rows (the loop
 * quantizes and writes each piece while the next are read; docs/
 * PERFORMANCE.md, "Pieces"). The pieces after the one being quantized are
 * read and checked in order (the checksum, over a tensor's pieces together;
 * the finiteness check), at most QAHEAD_LEAD bytes of them beyond the next
 * one, so the loop finds them checked. Each piece is taken by one side only:
 * the loop takes the one it needs itself when the thread has not begun it,
 * and otherwise waits until the thread is done with it; the next piece of the
 * same tensor waits until the one before is read (its checksum is one hash
 * over them in order). An error is kept with its piece and reported by the
 * loop when it gets there.
 *
 * Every piece of a tensor read in pieces, and whole tensors of QREAD_MIN
 * bytes or more (LLMPACK_QUANT_READ_MIN), are read (lpk_reader_part_read,
 * lpk_reader_tensor_read) into buffers kept for the next pieces instead of
 * through the input's mapping: pages of a new mapping,
 * or new pages of the process, cost more on their first touch than a copy
 * into pages already in use (docs/PERFORMANCE.md, "Reading the input"), so
 * the pieces keep the memory in use small. */
#define QAHEAD_LEAD ((uint64_t)32 << 20)
#define QREAD_MIN ((uint64_t)1 << 20)
/* LLMPACK_QUANT_READ_MIN sets QREAD_MIN (bytes), for tests of the read path
 * on small models. */
static uint64_t read_min(void)
{
    const char *e = getenv("LLMPACK_QUANT_READ_MIN");
    return e && *e ? strtoull(e, NULL, 10) : QREAD_MIN;
}

/* Tensors of at least two pieces' bytes are read and quantized in pieces of
 * about QPIECE_BYTES (whole groups of 64 rows) where every output quantizes
 * them from the input as it is. LLMPACK_QUANT_SLICE sets the bytes (0: every
 * tensor whole), for tests. */
#define QPIECE_BYTES ((uint64_t)8 << 20)
static uint64_t piece_bytes(void)
{
    const char *e = getenv("LLMPACK_QUANT_SLICE");
    return e && *e ? strtoull(e, NULL, 10) : QPIECE_BYTES;
}

/* The rows of each piece of tensor i, 0 when it is read and quantized whole. */
static int64_t piece_rows(const qrun *run, const qout *outs, size_t n_out, size_t i)
{
    const lpk_tensor *t = lpk_reader_tensor(run->r, i);
    uint64_t bytes = piece_bytes();
    int plain = t->type == LPK_TYPE_F32 || t->type == LPK_TYPE_F16 || t->type == LPK_TYPE_BF16;
    int64_t nr = lpk_tensor_nrows(t);
    if (!bytes || !plain || t->n_dims < 2 || nr < 128 || t->size / 2 < bytes) return 0;
    for (size_t k = 0; k < n_out; k++) {
        int dst = outs[k].ch[i].type;
        if (dst == t->type || !quant_type_is_block(dst) ||
            (run->g && calib_gptq_applies(run->g, t->name, dst)))
            return 0;
    }
    /* (bytes <= size / 2: no overflow for any tensor a reader accepts) */
    int64_t per = (int64_t)(((double)bytes * (double)nr / (double)t->size + 63) / 64) * 64;
    return per < 64 ? 64 : per;
}

typedef struct qslot {
    void *p;
    size_t cap;
    int busy;
} qslot;

typedef struct qpiece {
    size_t i;           /* the tensor */
    int64_t r0, r1;     /* its rows */
    uint64_t off, len;  /* its bytes */
    int first, last;    /* it begins / ends the tensor (both: all of it) */
    const void *data;   /* once read: the bytes */
    void *buf;          /* the buffer holding them, or NULL (the mapping) */
    int ready, rc;      /* read (rc: how it went) */
    lpk_error *err;     /* the message of a failed read */
} qpiece;

typedef struct qahead {
    lpk_reader *r;
    qpiece *pc;         /* the pieces in order */
    size_t np;
    lpk_part_read **part; /* per tensor: its checks while its pieces are read */
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t cur;         /* the piece the loop needs or works on */
    size_t claim;       /* the next piece to take: those before were taken */
    int stop, active, locks, bufs;
    uint64_t read_min;  /* pieces of this many bytes or more are read into buffers */
    qslot *slot;        /* the buffers, in use or free for the next pieces */
    size_t n_slot;
} qahead;

/* A buffer of at least size bytes: the smallest free one that holds it, or a
 * new one (NULL when out of memory). */
static void *qslot_get(qahead *a, size_t size)
{
    qslot *best = NULL;
    for (size_t k = 0; k < a->n_slot; k++)
        if (!a->slot[k].busy && a->slot[k].cap >= size && (!best || a->slot[k].cap < best->cap))
            best = &a->slot[k];
    if (!best) {
        qslot *s = realloc(a->slot, (a->n_slot + 1) * sizeof *s);
        if (!s) return NULL;
        a->slot = s;
        void *p = lpk_alloc_big(size);
        if (!p) return NULL;
        best = &a->slot[a->n_slot++];
        *best = (qslot){.p = p, .cap = size};
    }
    best->busy = 1;
    return best->p;
}

static void qslot_put(qahead *a, void *p)
{
    for (size_t k = 0; p && k < a->n_slot; k++)
        if (a->slot[k].p == p) a->slot[k].busy = 0;
}

static void qahead_lock(qahead *a)
{
    if (a->locks) pthread_mutex_lock(&a->mu);
}

static void qahead_unlock(qahead *a)
{
    if (a->locks) pthread_mutex_unlock(&a->mu);
}

/* Reads and checks piece p into its fields (on error: rc, err, nothing held). */
static void qahead_read(qahead *a, size_t p)
{
    qpiece *c = &a->pc[p];
    const lpk_tensor *t = lpk_reader_tensor(a->r, c->i);
    lpk_error e = {0};
    int whole = c->first && c->last;
    void *buf = NULL;
    const void *data = NULL;
    int rc = LPK_OK;
    if (a->bufs && (!whole || t->size >= a->read_min)) {
        qahead_lock(a);
        buf = qslot_get(a, (size_t)c->len);
        qahead_unlock(a);
        if (!buf && !whole) rc = lpk_err(&e, LPK_ENOMEM, "out of memory for a piece of %s", t->name);
    }
    if (rc) {
        /* nothing read */
    } else if (whole && !buf) {
        rc = lpk_reader_tensor_data(a->r, c->i, &data, &e);
    } else if (whole) {
        rc = lpk_reader_tensor_read(a->r, c->i, buf, &e);
    } else {
        if (c->first) rc = lpk_reader_part_begin(a->r, c->i, &a->part[c->i], &e);
        else if (!a->part[c->i]) rc = lpk_err(&e, LPK_EINVAL, "%s: a piece out of order", t->name);
        if (!rc) rc = lpk_reader_part_read(a->part[c->i], buf, c->len, &e);
        if (rc || c->last) {
            lpk_reader_part_end(a->part[c->i]);
            a->part[c->i] = NULL;
        }
    }
    if (!rc && buf) data = buf;
    if (rc && buf) {
        qahead_lock(a);
        qslot_put(a, buf);
        qahead_unlock(a);
        buf = NULL;
    }
    if (rc && !(c->err = malloc(sizeof *c->err))) rc = LPK_ENOMEM;
    if (c->err) *c->err = e;
    c->data = rc ? NULL : data;
    c->buf = buf;
    c->rc = rc;
}

/* May the thread take piece claim (lock held)? */
static int qahead_may(const qahead *a)
{
    if (a->claim >= a->np) return 0;
    /* a tensor's pieces are hashed in order */
    if (!a->pc[a->claim].first && !a->pc[a->claim - 1].ready) return 0;
    if (a->claim <= a->cur + 1) return 1;
    uint64_t lead = 0;
    for (size_t k = a->cur + 2; k <= a->claim; k++) lead += a->pc[k].len;
    return lead <= QAHEAD_LEAD;
}

static void *qahead_run(void *arg)
{
    qahead *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stop && a->claim < a->np && !qahead_may(a)) pthread_cond_wait(&a->cv, &a->mu);
        if (a->stop || a->claim >= a->np) break;
        size_t p = a->claim++;
        pthread_mutex_unlock(&a->mu);
        qahead_read(a, p);
        pthread_mutex_lock(&a->mu);
        a->pc[p].ready = 1;
        pthread_cond_broadcast(&a->cv);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* Starts a helper thread with the termination signals blocked (it inherits
 * the mask), so that they are taken on the threads that block them while a
 * temporary file is created and not yet registered for removal (lpk_writer);
 * a signal taken here in that window would leave the file behind. */
static int start_thread(pthread_t *th, void *(*fn)(void *), void *arg)
{
    lpk_cleanup_block();
    int rc = pthread_create(th, NULL, fn, arg);
    lpk_cleanup_unblock();
    return rc;
}

/* The pieces of a pass (per[i]: the rows of tensor i's pieces, 0: whole), and
 * with ahead the thread that reads them into buffers (the loop reads them
 * itself when it cannot start); without, the loop reads every tensor whole
 * through the mapping. The buffers of an earlier pass are kept. */
static int qahead_start(qahead *a, lpk_reader *r, const int64_t *per, int ahead, lpk_error *err)
{
    size_t n = lpk_reader_n_tensors(r), np = 0;
    for (size_t i = 0; i < n; i++)
        np += per[i] ? (size_t)((lpk_tensor_nrows(lpk_reader_tensor(r, i)) + per[i] - 1) / per[i])
                     : 1;
    a->r = r;
    a->bufs = ahead;
    a->read_min = read_min();
    a->cur = a->claim = 0;
    a->stop = 0;
    a->pc = calloc(np ? np : 1, sizeof *a->pc);
    a->part = calloc(n ? n : 1, sizeof *a->part);
    if (!a->pc || !a->part) return lpk_err(err, LPK_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        int64_t nr = lpk_tensor_nrows(t), step = per[i] ? per[i] : nr;
        uint64_t row = nr ? t->size / (uint64_t)nr : 0;
        for (int64_t r0 = 0; r0 < nr || (r0 == 0 && !nr); r0 += step) {
            int64_t r1 = per[i] && nr - r0 > step ? r0 + step : nr;
            qpiece *c = &a->pc[a->np++];
            *c = (qpiece){.i = i, .r0 = r0, .r1 = r1, .first = r0 == 0, .last = r1 == nr};
            c->off = per[i] ? (uint64_t)r0 * row : 0;
            c->len = per[i] ? (uint64_t)(r1 - r0) * row : t->size;
            if (!nr) break;
        }
    }
    if (!ahead) return LPK_OK;
    if (!a->locks) {
        if (pthread_mutex_init(&a->mu, NULL)) return LPK_OK;
        if (pthread_cond_init(&a->cv, NULL)) {
            pthread_mutex_destroy(&a->mu);
            return LPK_OK;
        }
        a->locks = 1;
    }
    if (start_thread(&a->th, qahead_run, a) == 0) a->active = 1;
    return LPK_OK;
}

/* The loop's piece p, checked: what the thread read, or read here when the
 * thread has not begun it. On error, the piece's message in err. */
static int qahead_take(qahead *a, size_t p, const void **data, lpk_error *err)
{
    qpiece *c = &a->pc[p];
    int mine = 1;
    if (a->active) {
        pthread_mutex_lock(&a->mu);
        a->cur = p;
        mine = a->claim <= p;
        if (mine) a->claim = p + 1;
        else
            while (!c->ready) pthread_cond_wait(&a->cv, &a->mu);
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
    }
    if (mine) {
        qahead_read(a, p);
        qahead_lock(a);
        c->ready = 1;
        pthread_cond_broadcast(&a->cv);
        qahead_unlock(a);
    }
    *data = c->data;
    if (c->rc && err) *err = c->err ? *c->err : (lpk_error){c->rc, "out of memory"};
    return c->rc;
}

/* The loop is done with piece p: its buffer is free for the next ones. */
static void qahead_release(qahead *a, size_t p)
{
    qpiece *c = &a->pc[p];
    if (c->buf) {
        qahead_lock(a);
        qslot_put(a, c->buf);
        c->buf = NULL;
        qahead_unlock(a);
    } else if (c->last) {
        lpk_reader_release_tensor(a->r, c->i);
    }
}

/* Ends the thread and forgets the pieces; the buffers stay for another pass
 * (qahead_free). */
static void qahead_stop(qahead *a)
{
    if (a->active) {
        pthread_mutex_lock(&a->mu);
        a->stop = 1;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->th, NULL);
        a->active = 0;
    }
    size_t n = a->r ? lpk_reader_n_tensors(a->r) : 0;
    for (size_t i = 0; a->part && i < n; i++) lpk_reader_part_end(a->part[i]);
    for (size_t p = 0; p < a->np; p++) free(a->pc[p].err);
    free(a->part);
    free(a->pc);
    a->part = NULL;
    a->pc = NULL;
    a->np = 0;
    for (size_t k = 0; k < a->n_slot; k++) a->slot[k].busy = 0;
}

static void qahead_free(qahead *a)
{
    qahead_stop(a);
    if (a->locks) {
        pthread_cond_destroy(&a->cv);
        pthread_mutex_destroy(&a->mu);
    }
    for (size_t k = 0; k < a->n_slot; k++) free(a->slot[k].p);
    free(a->slot);
    memset(a, 0, sizeof *a);
}

/* Waits for the writes under way; their status (and message into err). */
static int qwrites_join(qwrites *b, lpk_error *err)
{
    if (!b->active) return LPK_OK;
    pthread_join(b->th, NULL);
    b->active = 0;
    if (b->rc && err) *err = b->err;
    return b->rc;
}

/* Starts the writes of rows r0..r1 of tensor i (every output quantized them
 * into qbuf; begin, end: see qwrites): the buffers are swapped, so the next
 * rows are quantized into the other one. Writes on this thread when no thread
 * can be started. */
static int qwrites_launch(qwrites *b, qout *outs, size_t n_out, size_t i, const char *name,
                          int64_t r0, int64_t r1, int begin, int end, lpk_error *err)
{
    for (size_t k = 0; k < n_out; k++) {
        void *t = outs[k].qbuf;
        outs[k].qbuf = outs[k].qbuf2;
        outs[k].qbuf2 = t;
    }
    *b = (qwrites){.outs = outs, .n_out = n_out, .i = i, .name = name, .r0 = r0, .r1 = r1,
                   .begin = begin, .end = end};
    if (start_thread(&b->th, qwrites_run, b) == 0) {
        b->active = 1;
        return LPK_OK;
    }
    qwrites_run(b);
    if (b->rc && err) *err = b->err;
    return b->rc;
}

/* Forgets what a pass over the tensors did to the outputs (before another). */
static void reset_outputs(qout *outs, size_t n_out, size_t n)
{
    for (size_t k = 0; k < n_out; k++) {
        lpk_writer_abort(outs[k].w);
        outs[k].w = NULL;
        free(outs[k].qbuf);
        free(outs[k].qbuf2);
        outs[k].qbuf = outs[k].qbuf2 = NULL;
        memset(outs[k].t, 0, n * sizeof *outs[k].t);
    }
}

/* The options that do not go together, and the outputs. */
static int check_opts(const llmpack_quantize_opts *o, const llmpack_quantize_out *outs,
                      size_t n_out, lpk_error *err)
{
    const int target = o->target_bpw > 0 || o->max_size > 0;
    if (!o->in) return lpk_err(err, LPK_EINVAL, "quantize: no input given");
    if (!n_out || n_out > LLMPACK_QUANTIZE_MAX_OUTPUTS)
        return lpk_err(err, LPK_EINVAL, "quantize: %zu outputs (1 to %d)", n_out,
                       LLMPACK_QUANTIZE_MAX_OUTPUTS);
    if (target && n_out != 1)
        return lpk_err(err, LPK_EINVAL, "quantize: a size target writes one output, not %zu",
                       n_out);
    if (o->target_bpw > 0 && o->max_size > 0)
        return lpk_err(err, LPK_EINVAL, "quantize: a bits-per-weight target and a size limit "
                       "exclude each other");
    if (target && !o->calib_text)
        return lpk_err(err, LPK_EINVAL, "quantize: a size target needs a calibration text");
    if (o->imatrix && o->calib_text && !target)
        return lpk_err(err, LPK_EINVAL, "quantize: an importance matrix file and a "
                       "calibration text exclude each other");
    if (o->gptq && !o->calib_text)
        return lpk_err(err, LPK_EINVAL, "quantize: GPTQ needs a calibration text");
    if (o->gptq && o->gptq_sequential && n_out > 1)
        return lpk_err(err, LPK_EINVAL, "quantize: GPTQ with quantized inputs makes one "
                       "output at a time");
    for (size_t k = 0; k < n_out; k++) {
        const llmpack_quantize_out *q = &outs[k];
        if (!q->path) return lpk_err(err, LPK_EINVAL, "quantize: output %zu has no path", k);
        if (q->format != LLMPACK_FMT_LPK && q->format != LLMPACK_FMT_GGUF)
            return lpk_err(err, LPK_EINVAL, "%s: unknown output format %d", q->path, q->format);
        if (target ? q->recipe != NULL : !q->recipe)
            return lpk_err(err, LPK_EINVAL, "%s: %s", q->path, target
                           ? "a size target chooses the types: no recipe with it"
                           : "no recipe given");
        if (q->recipe && !quant_recipe_valid(q->recipe))
            return lpk_err(err, LPK_EINVAL, "%s: unknown recipe '%s' (one of: %s)", q->path,
                           q->recipe, quant_recipe_list());
    }
    return LPK_OK;
}

/* The importance matrix (read, or computed from the text) or GPTQ's
 * Hessians: once for all outputs. src: the input's declarations. */
static int weighting(qrun *run, const lpk_tensor *src)
{
    const llmpack_quantize_opts *o = run->o;
    llmpack_job *j = run->j;
    lpk_error *err = job_err(j);
    int rc = LPK_OK;
    job_chunks cs = {.j = j, .what = o->calib_text};
    if (o->imatrix) {
        rc = lpk_imatrix_read(o->imatrix, &run->im, err);
    } else if (o->calib_text && o->gptq) {
        calib_gptq_opts go;
        calib_gptq_opts_default(&go);
        go.chunks = o->chunks;
        go.damp = o->gptq_damp;
        go.order = o->gptq_order;
        go.sequential = o->gptq_sequential;
        rc = job_begin(j, "gptq calibration", "chunks", 0, o->calib_text);
        if (!rc)
            rc = calib_gptq_collect(run->r, o->calib_text, &go, job_chunk_progress, &cs, &run->g,
                                    err);
        job_end(j);
        run->rep->gptq = run->g != NULL;
    } else if (o->calib_text) {
        calib_opts co = {.ctx = 512, .max_chunks = o->chunks, .progress = job_chunk_progress,
                         .user = &cs};
        job_notice(j, "calibrating on %s", o->calib_text);
        rc = job_begin(j, "calibrating", "chunks", 0, o->calib_text);
        if (!rc) rc = calib_reader(run->r, o->calib_text, &co, &run->im, err);
        job_end(j);
    }
    if (!rc && run->im)
        rc = lpk_imatrix_check(run->im, o->imatrix ? o->imatrix : o->calib_text, src, run->n,
                               err);
    return rc;
}

/* vf_sens_progress_fn over the job: tensors looked at; a cancellation point. */
static int on_sens(void *user, size_t done, size_t total)
{
    const qrun *run = user;
    (void)total;
    return job_update(run->j, done, NULL, run->o->in) != LPK_OK;
}

/* The size target's budget in bytes of tensors, and the sensitivities and
 * importance rows of every tensor (*gains, *imw: n each), then the plan. */
static int target_plan(qrun *run, qout *q, uint64_t *budget, double **gains, float ***imw)
{
    const llmpack_quantize_opts *o = run->o;
    lpk_error *err = job_err(run->j);
    lpk_reader *r = run->r;
    size_t n = run->n;
    const lpk_tensor *src = q->decls; /* the input's declarations until planned */
    /* bits per weight over every tensor, or the file size less the input's
     * non-tensor bytes and some slack (the writer's exact size is checked later) */
    uint64_t elems = 0, in_tensors = 0;
    for (size_t i = 0; i < n; i++) {
        elems += lpk_tensor_nelems(&src[i]);
        in_tensors += src[i].size;
    }
    char *label = run->rep->target;
    size_t ln = sizeof run->rep->target;
    if (o->target_bpw > 0) {
        *budget = (uint64_t)(o->target_bpw * (double)elems / 8.0);
        if (o->target_label) snprintf(label, ln, "%s", o->target_label);
        else snprintf(label, ln, "bpw %g", o->target_bpw);
    } else {
        uint64_t fsz = lpk_reader_file_size(r);
        uint64_t overhead = q->o->format == LLMPACK_FMT_GGUF
                                ? gguf_overhead(lpk_reader_meta(r), src, n)
                                : fsz > in_tensors ? fsz - in_tensors : 0;
        overhead += 4096 + 64 * (uint64_t)n;
        *budget = o->max_size > overhead ? o->max_size - overhead : 0;
        if (o->target_label) snprintf(label, ln, "%s", o->target_label);
        else snprintf(label, ln, "max-size %" PRIu64, o->max_size);
    }
    *gains = calloc(n ? n : 1, sizeof **gains);
    *imw = calloc(n ? n : 1, sizeof **imw);
    if (!*gains || !*imw) return lpk_err(err, LPK_ENOMEM, "out of memory");
    for (size_t i = 0; i < n && run->im; i++) {
        const lpk_imatrix_entry *e = lpk_imatrix_find(run->im, src[i].name);
        if (!e) continue;
        if (!((*imw)[i] = malloc((size_t)e->n * sizeof(float))))
            return lpk_err(err, LPK_ENOMEM, "out of memory");
        lpk_imatrix_weights(e, (*imw)[i]);
    }
    job_notice(run->j, "measuring each matrix's sensitivity on %s", o->calib_text);
    int rc = job_begin(run->j, "sensitivities", "tensors", n, o->in);
    if (!rc)
        rc = vf_target_gains_text(r, o->calib_text, 512, o->calib_chunks,
                                  (const float *const *)*imw, *gains, on_sens, run, err);
    job_end(run->j);
    if (!rc) rc = plan_target(run, q, (const float *const *)*imw, *gains, *budget);
    return rc;
}

/* GPTQ's block passes inside the quantize stage: events of stage "gptq blocks"
 * (chunks) that do not end the quantize stage (jobs.h). */
static void gptq_event(qrun *run, int event, uint64_t done, uint64_t total)
{
    llmpack_job *j = run->j;
    if (!j->progress) return;
    llmpack_progress p = {.event = event, .stage = "gptq blocks", .unit = "chunks", .done = done,
                          .total = total, .item = event == LLMPACK_PROGRESS_UPDATE ? run->item
                                                                                  : NULL};
    j->progress(j->progress_user, &p);
}

/* calib_gptq_set_progress's callback: a chunk through a block; a cancellation point. */
static int on_gptq_blocks(void *user, int done, int total, uint64_t tokens, double seconds)
{
    qrun *run = user;
    snprintf(run->item, sizeof run->item, "%.0f tokens/s",
             seconds > 0 ? (double)tokens / seconds : 0.0);
    run->gptq_events = 1;
    gptq_event(run, LLMPACK_PROGRESS_UPDATE, (uint64_t)done, (uint64_t)total);
    return job_check_cancel(run->j, run->o->in) != LPK_OK;
}

/* One pass: every tensor read once and written to every output, the outputs
 * completed in order, the GGUF ones exported. *excess > 0 when a size target
 * was missed by that many bytes (nothing kept: plan again). */
static int quantize_pass(qrun *run, qahead *ra, qout *outs, size_t n_out, float *x,
                         float *wbuf, int *tries, uint64_t *excess)
{
    const llmpack_quantize_opts *o = run->o;
    llmpack_job *j = run->j;
    lpk_error *err = job_err(j);
    lpk_reader *r = run->r;
    int rc = job_begin(j, "quantize", "B", run->rep->in_bytes, o->in);
    run->done_bytes = 0;
    if (run->g) calib_gptq_set_progress(run->g, on_gptq_blocks, run);
    double t0 = job_now();
    qwrites bw = {0};
    const void **out = calloc(n_out ? n_out : 1, sizeof *out);
    if (!out && !rc) rc = lpk_err(err, LPK_ENOMEM, "out of memory");
    size_t p = 0; /* the piece */
    for (size_t i = 0; i < run->n && !rc; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        const void *bytes;
        if (ra->pc[p].first && !ra->pc[p].last) {
            /* in pieces: each quantized while the one before is written */
            for (int last = 0; !last && !rc; p++) {
                qpiece *c = &ra->pc[p];
                last = c->last;
                rc = qahead_take(ra, p, &bytes, err);
                for (size_t k = 0; k < n_out && !rc; k++)
                    rc = prepare_rows(run, &outs[k], i, t, bytes, NULL, wbuf, c->r0, c->r1,
                                      outs[k].qbuf, &out[k]);
                int wrc = qwrites_join(&bw, err);
                if (!rc) rc = wrc;
                if (!rc)
                    rc = qwrites_launch(&bw, outs, n_out, i, t->name, c->r0, c->r1, c->first,
                                        c->last, err);
                qahead_release(ra, p);
            }
            run->done_bytes += t->size;
            if (!rc) rc = job_update(j, run->done_bytes, t->name, o->in);
            continue;
        }
        rc = qahead_take(ra, p, &bytes, err);
        if (rc) break;
        /* an f32 copy only where something needs one: a block type's source
         * (dequantized), GPTQ, the squared sum of a matrix copied as is; the
         * quantizers read f32/f16/bf16 rows as they are */
        int plain = t->type == LPK_TYPE_F32 || t->type == LPK_TYPE_F16 ||
                    t->type == LPK_TYPE_BF16, need_f32 = 0;
        for (size_t k = 0; k < n_out; k++) {
            int dst = outs[k].ch[i].type;
            if (t->type == dst) need_f32 |= t->n_dims >= 2;
            else need_f32 |= !plain || (run->g && calib_gptq_applies(run->g, t->name, dst));
        }
        if (need_f32) rc = to_f32(t, bytes, x, err);
        /* quantized while the previous tensor is written */
        int all_q = 1;
        for (size_t k = 0; k < n_out && !rc; k++) {
            rc = prepare_rows(run, &outs[k], i, t, bytes, need_f32 ? x : NULL, wbuf, 0,
                              lpk_tensor_nrows(t), outs[k].qbuf, &out[k]);
            all_q &= out[k] == outs[k].qbuf;
        }
        int wrc = qwrites_join(&bw, err);
        if (!rc) rc = wrc;
        if (!rc && all_q) {
            rc = qwrites_launch(&bw, outs, n_out, i, t->name, 0, lpk_tensor_nrows(t), 1, 1, err);
        } else {
            /* a tensor copied as is is written from the input's mapping, here */
            for (size_t k = 0; k < n_out && !rc; k++)
                rc = write_out(&outs[k], i, t->name, out[k], err);
        }
        qahead_release(ra, p++);
        run->done_bytes += t->size;
        if (!rc) rc = job_update(j, run->done_bytes, t->name, o->in);
    }
    qahead_stop(ra);
    {
        int wrc = qwrites_join(&bw, rc ? NULL : err);
        if (!rc) rc = wrc;
    }
    free(out);
    if (run->g) calib_gptq_set_progress(run->g, NULL, NULL);
    if (run->gptq_events) gptq_event(run, LLMPACK_PROGRESS_END, 0, 0);
    run->gptq_events = 0;
    job_end(j);
    /* complete each output in order; a GGUF output's container waits */
    for (size_t k = 0; k < n_out && !rc; k++) {
        rc = lpk_writer_finish(outs[k].w, err);
        outs[k].w = NULL;
        if (!rc && outs[k].o->format == LLMPACK_FMT_GGUF) job_tmp_hold(outs[k].tmp);
        else if (!rc) outs[k].rep->written = 1;
    }
    for (size_t k = 0; k < n_out && !rc; k++) {
        qout *q = &outs[k];
        if (q->o->format != LLMPACK_FMT_GGUF) continue;
        llmpack_export_result es;
        char *name = job_name_from_path(q->o->path);
        llmpack_export_opts eo = {.in = q->tmp, .out = q->o->path, .format = LLMPACK_FMT_GGUF,
                                  .name = name, .force = o->force, .max_size = o->max_size};
        rc = name ? job_export(j, &eo, &es) : lpk_err(err, LPK_ENOMEM, "out of memory");
        free(name);
        if (rc == LPK_ENOSPC && o->max_size && es.file_size > o->max_size && (*tries)++ < 8) {
            /* the GGUF came out larger than estimated: quantize again */
            *excess = es.file_size - o->max_size + ((uint64_t)4096 << *tries);
            lpk_error_clear(err);
            return LPK_OK;
        }
        /* the container is not needed any more, whatever happened */
        job_tmp_remove(q->tmp);
        q->tmp[0] = '\0';
        if (!rc) q->rep->written = 1;
    }
    run->rep->seconds = job_now() - t0;
    return rc;
}

/* The report's figures of each output once the run is over. */
static void fill_report(qrun *run, qout *outs, size_t n_out)
{
    llmpack_quantize_report *rep = run->rep;
    rep->target_budget = run->tres.budget;
    rep->target_bytes = run->tres.bytes;
    rep->target_error = run->tres.err;
    for (size_t k = 0; k < n_out; k++) {
        qout *q = &outs[k];
        if (q->rep->written) {
            struct stat sb;
            if (stat(q->o->path, &sb) == 0) q->rep->file_size = (uint64_t)sb.st_size;
        }
        if (!q->t || !q->ch) continue;
        for (size_t i = 0; i < run->n; i++) {
            llmpack_quantize_tensor *t = &q->t[i];
            t->in = *lpk_reader_tensor(run->r, i);
            t->in.data = NULL;
            t->type = q->ch[i].type;
            t->size = q->decls[i].size;
            t->fallback_from = q->ch[i].fallback_from;
            memcpy(t->note, q->ch[i].note, sizeof t->note);
            t->note[sizeof t->note - 1] = '\0';
        }
        q->rep->tensors = q->t;
        q->t = NULL;
    }
}

static int quantize(qrun *run, const llmpack_quantize_out *given, qout *outs, size_t n_out)
{
    const llmpack_quantize_opts *o = run->o;
    llmpack_job *j = run->j;
    lpk_error *err = job_err(j);
    llmpack_quantize_report *rep = run->rep;
    const int target = o->target_bpw > 0 || o->max_size > 0;
    double *gains = NULL;
    float **imw = NULL, *x = NULL, *wbuf = NULL;
    uint64_t budget = 0;
    int tries = 0;
    qahead ra = {0};
    int rc = check_opts(o, given, n_out, err);
    if (!rc && !(rep->outputs = calloc(n_out, sizeof *rep->outputs)))
        rc = lpk_err(err, LPK_ENOMEM, "out of memory");
    if (rc) return rc;
    rep->n_out = n_out;
    for (size_t k = 0; k < n_out; k++) {
        outs[k].o = &given[k];
        outs[k].rep = &rep->outputs[k];
    }
    /* every target before any work; GGUF outputs get their temporary container */
    for (size_t k = 0; k < n_out && !rc; k++) {
        rc = lpk_writer_check_target(given[k].path, o->force ? LPK_WRITE_FORCE : 0, err);
        if (!rc && given[k].format == LLMPACK_FMT_GGUF)
            rc = job_tmp_beside(given[k].path, outs[k].tmp, sizeof outs[k].tmp, err);
    }
    if (!rc) rc = job_open_input(j, o->in, lpk_reader_default_flags(), &run->r);
    if (rc) goto done;
    lpk_reader *r = run->r;
    size_t n = run->n = rep->n_tensors = lpk_reader_n_tensors(r);
    for (size_t k = 0; k < n_out && !rc; k++) {
        outs[k].decls = calloc(n ? n : 1, sizeof *outs[k].decls);
        outs[k].ch = calloc(n ? n : 1, sizeof *outs[k].ch);
        outs[k].t = calloc(n ? n : 1, sizeof *outs[k].t);
        if (!outs[k].decls || !outs[k].ch || !outs[k].t)
            rc = lpk_err(err, LPK_ENOMEM, "out of memory");
        for (size_t i = 0; i < n && !rc; i++) outs[k].decls[i] = *lpk_reader_tensor(r, i);
    }
    if (rc) goto done;
    for (size_t i = 0; i < n; i++) rep->in_bytes += lpk_reader_tensor(r, i)->size;

    if ((rc = weighting(run, outs[0].decls))) goto done;

    /* the plans */
    if (target) {
        rc = target_plan(run, &outs[0], &budget, &gains, &imw);
    } else {
        unsigned flags = (o->pure ? QUANT_PLAN_PURE : 0u) |
                         (run->im || run->g ? QUANT_PLAN_IMATRIX : 0u);
        for (size_t k = 0; k < n_out && !rc; k++)
            rc = quant_plan(given[k].recipe, flags, lpk_reader_meta(r), outs[k].decls, n,
                            outs[k].ch, err);
    }
    if (rc) goto done;

    /* one f32 copy of the largest tensor, one importance row */
    uint64_t max_elems = 1;
    int64_t max_cols = 1;
    for (size_t i = 0; i < n; i++) {
        const lpk_tensor *t = lpk_reader_tensor(r, i);
        if (lpk_tensor_nelems(t) > max_elems) max_elems = lpk_tensor_nelems(t);
        if (lpk_tensor_ncols(t) > max_cols) max_cols = lpk_tensor_ncols(t);
    }
    if (max_elems > SIZE_MAX / sizeof(float)) {
        rc = lpk_err(err, LPK_ENOMEM, "tensor too large");
        goto done;
    }
    x = malloc((size_t)max_elems * sizeof *x);
    /* a row's importance, and the covariance blocks of a matrix that has them */
    size_t wcols = run->im && lpk_imatrix_n_cov32(run->im) ? 33 : 1;
    wbuf = run->im ? malloc((size_t)max_cols * wcols * sizeof *wbuf) : NULL;
    if (!x || (run->im && !wbuf)) { rc = lpk_err(err, LPK_ENOMEM, "out of memory"); goto done; }

    /* the input is read ahead from here on (the outputs' metadata is encoded
     * meanwhile); each pass ends it. Not beside GPTQ, whose quantized-input
     * passes read the input themselves: the loop reads through the mapping. */
    if (!(run->per = calloc(n ? n : 1, sizeof *run->per))) {
        rc = lpk_err(err, LPK_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n && !run->g; i++) run->per[i] = piece_rows(run, outs, n_out, i);
    if ((rc = qahead_start(&ra, r, run->per, !run->g, err))) goto done;
    for (;;) { /* more than once only when a size target is missed */
        uint64_t excess = 0;
        for (size_t k = 0; k < n_out && !rc; k++) rc = prepare_output(run, &outs[k]);
        if (rc) goto done;
        if (o->max_size && given[0].format == LLMPACK_FMT_LPK &&
            lpk_writer_file_size(outs[0].w) > o->max_size) {
            if (tries++ >= 8) {
                rc = lpk_err(err, LPK_ENOSPC, "%s: no plan found within %" PRIu64 " bytes",
                             given[0].path, o->max_size);
                goto done;
            }
            /* the metadata and alignment took more than estimated: plan again with
             * a budget smaller by the excess and a step that doubles each time (the
             * plan moves in whole tensors' steps) */
            excess = lpk_writer_file_size(outs[0].w) - o->max_size + ((uint64_t)4096 << tries);
        }
        if (!excess && n_out > 1) rc = check_space(outs, n_out, err);
        if (rc) goto done;
        if (!excess) {
            rc = quantize_pass(run, &ra, outs, n_out, x, wbuf, &tries, &excess);
            if (rc || !excess) break;
        }
        reset_outputs(outs, n_out, n);
        budget = budget > excess ? budget - excess : 0;
        rc = plan_target(run, &outs[0], (const float *const *)imw, gains, budget);
        if (rc) goto done;
        qahead_stop(&ra);
        for (size_t i = 0; i < n && !run->g; i++) run->per[i] = piece_rows(run, outs, n_out, i);
        if ((rc = qahead_start(&ra, r, run->per, !run->g, err))) goto done;
    }

done:
    qahead_free(&ra);
    fill_report(run, outs, n_out);
    for (size_t k = 0; k < n_out; k++) {
        lpk_writer_abort(outs[k].w);
        if (outs[k].tmp[0]) job_tmp_remove(outs[k].tmp);
        free(outs[k].qbuf);
        free(outs[k].qbuf2);
        free(outs[k].decls);
        free(outs[k].ch);
        free(outs[k].t);
    }
    free(x);
    free(wbuf);
    free(run->per);
    run->per = NULL;
    free(gains);
    for (size_t i = 0; imw && i < run->n; i++) free(imw[i]);
    free(imw);
    return rc;
}

int llmpack_quantize(llmpack_job *j, const llmpack_quantize_opts *o,
                     const llmpack_quantize_out *outs, size_t n_out,
                     llmpack_quantize_report *rep)
{
    llmpack_quantize_report local;
    qout q[LLMPACK_QUANTIZE_MAX_OUTPUTS];
    memset(q, 0, sizeof q);
    qrun run = {.j = j, .o = o, .rep = rep ? rep : &local};
    memset(run.rep, 0, sizeof *run.rep);
    job_start(j);
    int rc = quantize(&run, outs, q, n_out);
    run.rep->imatrix = run.im;
    calib_gptq_free(run.g);
    lpk_reader_close(run.r);
    if (!rep) llmpack_quantize_report_free(&local);
    return job_finish(j, rc);
}

/* ---------------------------------------------------------------- file names */
/* A model name as a file name (llmpack_quantize_name's rules). */
static void file_name_of(const char *name, char *buf, size_t n)
{
    size_t k = 0;
    for (const char *p = name; *p && k + 1 < n && k < 100; p++) {
        unsigned char c = (unsigned char)*p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '+' || c == '-';
        if (!ok) c = '-';
        if (c == '-' && k > 0 && buf[k - 1] == '-') continue;
        if ((c == '-' || c == '.') && k == 0) continue;
        buf[k++] = (char)c;
    }
    while (k > 0 && buf[k - 1] == '-') k--;
    buf[k] = '\0';
    if (!k) snprintf(buf, n, "model");
}

int llmpack_quantize_name(llmpack_job *j, const char *in, const char *name, char *buf, size_t n)
{
    job_start(j);
    if (n < 8) return job_finish(j, lpk_err(job_err(j), LPK_EINVAL, "quantize: name buffer "
                                            "of %zu bytes", n));
    if (name) {
        file_name_of(name, buf, n);
        return job_finish(j, LPK_OK);
    }
    lpk_reader *r = NULL;
    int rc = job_open_input(j, in, lpk_reader_default_flags(), &r);
    if (!rc) {
        const char *g = lpk_meta_get_str(lpk_reader_meta(r), "general.name");
        char *base = g && *g ? NULL : job_name_from_path(in);
        file_name_of(g && *g ? g : base ? base : "", buf, n);
        free(base);
    }
    lpk_reader_close(r);
    return job_finish(j, rc);
}
