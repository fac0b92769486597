/* The streaming container writer (.lpk, and GGUF through gguf_header_build()).
 *
 * The layout is fixed at open from the declarations, the header, metadata and
 * directory are written first with zero checksums, tensors stream through one
 * at a time, and finish patches the directory checksums and header hash in
 * place (docs/FORMAT.md, "Writing"), fsyncs and renames into place. Until then
 * everything lives in `.NAME.tmp-XXXXXX` beside the target. */
#include "lpk.h"
#include "lpk_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "lpk_xxh.h"
#include <zstd.h>

/* ---------------------------------------------------------------- writer */
#define WRITER_MAGIC 0x4c504b57u /* "LPKW" */
#define WBUF_SIZE ((size_t)1 << 20)
/* LPK_WRITE_DIRECT: the aligned staging buffer, and the least alignment of
 * its writes (the file system's own, from statx, when larger) */
#define DBUF_SIZE ((size_t)8 << 20)
/* ... of which there are DIO_NBUF: one filled while the others are written */
#define DIO_NBUF 3
#define DIO_ALIGN_MIN ((size_t)4096)

struct lpk_writer {
    uint32_t magic;
    unsigned flags;
    int fd;
    int slot;
    int failed;          /* a call failed: the temp file is gone, only abort/finish remain */
    int borrowed;        /* lpk_writer_open_fd: fd is the caller's (no temp file, no rename) */
    unsigned sigs;       /* lpk_signal_count() when opened: a later signal removed our temp file */
    unsigned faults;     /* lpk_map_fault_count() when opened */
    char *path, *tmp;
    lpk_tensor *t;       /* declarations with offsets and sizes filled in */
    size_t n;
    uint8_t *head;       /* everything before the data section (lpk: patched at finish) */
    uint64_t head_size;
    uint64_t file_size;
    uint64_t pos;        /* bytes handed to the file so far (incl. buffered) */
    uint64_t wpos;       /* bytes write() took so far (sequential from offset 0) */
    uint64_t wb_from;    /* writeback started for the bytes before this offset */
    int wb_off;          /* no early writeback: a borrowed file, or the call failed */
    size_t cur;          /* next tensor to begin */
    int in_tensor;
    uint64_t written;    /* bytes of the current tensor so far */
    XXH3_state_t *xs;
    uint8_t *buf;
    size_t buf_n;
    size_t buf_cap;      /* WBUF_SIZE, or DBUF_SIZE once direct */
    uint8_t *ring;       /* direct: DIO_NBUF buffers of DBUF_SIZE (buf is one of them) */
    int staged;          /* every byte through buf, written in whole aligned blocks */
    struct wio *aio;     /* direct: the thread writing the filled buffers, or NULL */
    int direct;          /* fd has O_DIRECT: whole aligned blocks from buf only */
    size_t align;        /* direct: the blocks' alignment (memory, offset and size) */
    int fault;           /* test hook (dio_fault): 0, DIO_FAULT_EINVAL or DIO_FAULT_SHORT */
    uint64_t fault_at;   /* ... at the direct write reaching past this offset */
    struct wsync *sy;    /* the early syncs' thread, once started */
    int sync_off;        /* no early syncs: a borrowed or scratch file, or no thread */
    uint64_t sync_asked; /* wpos when the last early sync was asked for */
};

/* ---------------------------------------------------------------- early syncs
 * The writer's own file (not a scratch one) is made durable as it grows: every
 * LPK_SYNC_CHUNK bytes written, a thread of the writer's fdatasyncs it, while
 * the caller goes on producing. The fsync before the rename then has only the
 * bytes since the last one to wait for, where it had all of them: on a disk
 * whose cache is flushed at fsync (a virtual machine's, often) that wait was
 * the last 0.3-0.6 s of a run writing 0.7 GB (docs/PERFORMANCE.md). Nothing
 * changes for durability: the fsync at finish still comes before the rename.
 * A failed early sync fails finish with its error (the kernel reports a write
 * error once per open file: the fsync after it might not see it again). */
/* A thread of the writer's with its lock and condition; the termination
 * signals stay with the threads that block them around the temporary file's
 * creation (make_tmp). 0, or -1 with nothing left to destroy. */
static int thread_start(pthread_t *th, pthread_mutex_t *mu, pthread_cond_t *cv,
                        void *(*fn)(void *), void *arg)
{
    if (pthread_mutex_init(mu, NULL)) return -1;
    if (pthread_cond_init(cv, NULL)) {
        pthread_mutex_destroy(mu);
        return -1;
    }
    lpk_cleanup_block();
    int rc = pthread_create(th, NULL, fn, arg);
    lpk_cleanup_unblock();
    if (!rc) return 0;
    pthread_cond_destroy(cv);
    pthread_mutex_destroy(mu);
    return -1;
}

typedef struct wsync {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int fd;
    int stop;
    int fault;       /* test hook: the first sync fails with EIO */
    uint64_t want;   /* bytes written when the caller last asked */
    uint64_t issued; /* ... for the sync under way or done */
    uint64_t done;   /* bytes from the file's start a completed sync covered */
    int err;         /* errno of the first failed sync, 0 */
} wsync;

static void *wsync_run(void *arg)
{
    wsync *y = arg;
    pthread_mutex_lock(&y->mu);
    for (;;) {
        while (!y->stop && y->want <= y->issued) pthread_cond_wait(&y->cv, &y->mu);
        if (y->stop) break;
        uint64_t upto = y->issued = y->want;
        int fault = y->fault;
        y->fault = 0;
        pthread_mutex_unlock(&y->mu);
        int r = fault ? (errno = EIO, -1) : fdatasync(y->fd);
        int e = errno;
        pthread_mutex_lock(&y->mu);
        if (r != 0 && e != EINTR && !y->err) y->err = e;
        if (r == 0) y->done = upto;
        pthread_cond_broadcast(&y->cv);
    }
    pthread_mutex_unlock(&y->mu);
    return NULL;
}

/* Asks for an early sync once LPK_SYNC_CHUNK more bytes were written; the
 * thread starts with the first (none for a small file). Without a thread the
 * fsync at finish does it all, as before. */
static void sync_ask(lpk_writer *w)
{
    if (w->sync_off || w->wpos - w->sync_asked < LPK_SYNC_CHUNK) return;
    if (!w->sy) {
        wsync *y = calloc(1, sizeof *y);
        if (y) {
            y->fd = w->fd;
            const char *e = getenv("LLMPACK_WRITE_SYNC_FAULT"); /* test hook: "eio" */
            y->fault = e && !strcmp(e, "eio");
        }
        if (!y || thread_start(&y->th, &y->mu, &y->cv, wsync_run, y)) {
            free(y);
            w->sync_off = 1;
            return;
        }
        w->sy = y;
    }
    pthread_mutex_lock(&w->sy->mu);
    w->sy->want = w->wpos;
    pthread_cond_signal(&w->sy->cv);
    pthread_mutex_unlock(&w->sy->mu);
    w->sync_asked = w->wpos;
}

/* Ends the thread (a sync under way completes first): the errno of a failed
 * early sync, or 0. */
static int sync_end(lpk_writer *w)
{
    wsync *y = w->sy;
    if (!y) return 0;
    pthread_mutex_lock(&y->mu);
    y->stop = 1;
    pthread_cond_signal(&y->cv);
    pthread_mutex_unlock(&y->mu);
    pthread_join(y->th, NULL);
    pthread_cond_destroy(&y->cv);
    pthread_mutex_destroy(&y->mu);
    int e = y->err;
    free(y);
    w->sy = NULL;
    w->sync_off = 1;
    return e;
}

uint64_t lpk_writer_synced(lpk_writer *w)
{
    if (!w || !w->sy) return 0;
    pthread_mutex_lock(&w->sy->mu);
    uint64_t d = w->sy->done;
    pthread_mutex_unlock(&w->sy->mu);
    return d;
}

/* The file written, for messages: the temporary file, or the caller's name
 * for it (lpk_writer_open_fd). */
static const char *w_file(const lpk_writer *w)
{
    return w->tmp ? w->tmp : w->path;
}

static int aio_end(lpk_writer *w, int cancel, lpk_error *err);

static void w_discard(lpk_writer *w)
{
    (void)aio_end(w, 1, NULL);
    (void)sync_end(w);
    if (w->fd >= 0 && !w->borrowed) close(w->fd);
    w->fd = -1;
    if (w->tmp) unlink(w->tmp);
    lpk_temp_unregister(w->slot);
    w->slot = -1;
}

static void w_free(lpk_writer *w)
{
    if (!w) return;
    w->magic = 0;
    free(w->path);
    free(w->tmp);
    free(w->t);
    free(w->head);
    free(w->ring ? w->ring : w->buf);
    if (w->xs) XXH3_freeState(w->xs);
    free(w);
}

/* Marks w failed, removes the temp file and returns the status. */
static int w_fail(lpk_writer *w, int st)
{
    w->failed = 1;
    w_discard(w);
    return st;
}

static int io_status(int e)
{
    return (e == ENOSPC || e == EDQUOT) ? LPK_ENOSPC : LPK_EIO;
}

/* Starts the writeback of what was written since the last call once that is
 * LPK_WB_CHUNK or more, without waiting for it: the disk then writes while
 * the rest is produced, instead of all of it in the fsync at finish (the kernel on its own waits for the dirty-page thresholds, which
 * a file of a few GB may never reach). Durability is still the fsync's. Where
 * sync_file_range is missing or refuses the file (not a regular file, a file
 * system without it), the fsync does all of the writing as before. */
static void start_writeback(lpk_writer *w)
{
    if (w->wb_off || w->direct || w->wpos - w->wb_from < LPK_WB_CHUNK) return;
#ifdef SYNC_FILE_RANGE_WRITE
    if (sync_file_range(w->fd, (off_t)w->wb_from, (off_t)(w->wpos - w->wb_from),
                        SYNC_FILE_RANGE_WRITE) != 0 &&
        errno != EINTR)
        w->wb_off = 1;
    w->wb_from = w->wpos;
#else
    w->wb_off = 1;
#endif
}

/* ---------------------------------------------------------------- direct I/O
 * LPK_WRITE_DIRECT: the temporary file is written with O_DIRECT, so its pages
 * never enter the page cache (filling fresh page-cache pages is what costs
 * there: the copy into them and, on some virtual machines, the first touch of
 * every page). Every byte passes through the aligned buffer; only whole
 * aligned blocks are written directly, from the file's start. Where a write
 * is refused (EINVAL) or leaves the position unaligned, O_DIRECT is dropped
 * and the file goes on buffered from the same position; the tail and the
 * patched head are written buffered at finish. */

enum { DIO_FAULT_EINVAL = 1, DIO_FAULT_SHORT = 2 };

/* Test hook (docs/TESTING.md): LLMPACK_WRITE_DIRECT_FAULT makes the direct
 * path meet what some file systems do: "refuse" (O_DIRECT refused at open),
 * "einval:N" (the direct write reaching past offset N fails with EINVAL),
 * "short:N" (that write stops at offset N: buffered where N is unaligned,
 * as a file system that completes part of it through the page cache). */
static int dio_fault(uint64_t *at)
{
    const char *e = getenv("LLMPACK_WRITE_DIRECT_FAULT");
    *at = UINT64_MAX;
    if (!e || !*e) return 0;
    if (!strcmp(e, "refuse")) return -1;
    int kind = !strncmp(e, "einval:", 7) ? DIO_FAULT_EINVAL
               : !strncmp(e, "short:", 6) ? DIO_FAULT_SHORT
                                          : 0;
    if (kind) *at = strtoull(strchr(e, ':') + 1, NULL, 10);
    return kind;
}

/* The direct-I/O alignment of fd's file: at least DIO_ALIGN_MIN; 0 where the
 * file system says it has no direct I/O. */
static size_t dio_align(int fd)
{
    size_t a = DIO_ALIGN_MIN;
#ifdef STATX_DIOALIGN
    struct statx sx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
        (sx.stx_mask & STATX_DIOALIGN)) {
        if (!sx.stx_dio_offset_align) return 0;
        if (sx.stx_dio_mem_align > a) a = sx.stx_dio_mem_align;
        if (sx.stx_dio_offset_align > a) a = sx.stx_dio_offset_align;
    }
#else
    (void)fd;
#endif
    return a;
}

/* Puts the writer's own temporary file in direct mode where the file system
 * takes O_DIRECT; otherwise leaves it buffered, as without the flag. */
static void aio_start(lpk_writer *w);

static void dio_start(lpk_writer *w)
{
    w->fault = dio_fault(&w->fault_at);
    size_t a = w->fault < 0 ? 0 : dio_align(w->fd);
    void *buf = NULL;
    if (!a || (a & (a - 1)) || a > DBUF_SIZE ||
        posix_memalign(&buf, a, (size_t)DIO_NBUF * DBUF_SIZE))
        return;
    int fl = fcntl(w->fd, F_GETFL);
    if (fl < 0 || fcntl(w->fd, F_SETFL, fl | O_DIRECT) != 0) {
        free(buf);
        return;
    }
    free(w->buf);
    w->buf = w->ring = buf;
    w->buf_cap = DBUF_SIZE;
    w->align = a;
    w->direct = 1;
    w->staged = 1;
    aio_start(w);
}

/* Drops O_DIRECT: the rest is written buffered from w->wpos on. -1 if the
 * file refuses (the write that follows then fails). */
static int dio_stop(lpk_writer *w)
{
    if (!w->direct) return 0;
    int fl = fcntl(w->fd, F_GETFL);
    if (fl < 0 || fcntl(w->fd, F_SETFL, fl & ~O_DIRECT) != 0) return -1;
    w->direct = 0;
    w->wb_from = w->wpos; /* the early writeback resumes from here */
    return 0;
}

/* write(2), or what the test hook makes of a direct write. */
static ssize_t w_write(lpk_writer *w, const uint8_t *b, size_t n)
{
    if (w->direct && w->fault > 0 && w->wpos + n > w->fault_at) {
        int kind = w->fault;
        w->fault = 0;
        if (kind == DIO_FAULT_EINVAL) {
            errno = EINVAL;
            return -1;
        }
        size_t k = w->fault_at > w->wpos ? (size_t)(w->fault_at - w->wpos) : 1;
        if (k % w->align == 0) return write(w->fd, b, k);
        /* a file system that completes part of it through the page cache */
        int fl = fcntl(w->fd, F_GETFL);
        if (fl < 0 || fcntl(w->fd, F_SETFL, fl & ~O_DIRECT) != 0) return -1;
        ssize_t r = write(w->fd, b, k);
        int e = errno;
        if (fcntl(w->fd, F_SETFL, fl) != 0) return -1;
        errno = e;
        return r;
    }
    return write(w->fd, b, n);
}

static int write_all(lpk_writer *w, const void *p, size_t n, lpk_error *err)
{
    const uint8_t *b = p;
    while (n) {
        if (lpk_signal_count() != w->sigs) return lpk_err(err, LPK_EINTR, "%s: interrupted", w->path);
        ssize_t k = w_write(w, b, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            /* nothing was written: the same bytes again, buffered */
            if (w->direct && (e == EINVAL || e == EOPNOTSUPP) && dio_stop(w) == 0) continue;
            return lpk_err(err, io_status(e), "%s: write failed: %s", w_file(w), strerror(e));
        }
        b += k;
        n -= (size_t)k;
        w->wpos += (uint64_t)k;
        if (w->direct && w->wpos % w->align) dio_stop(w);
    }
    start_writeback(w);
    sync_ask(w);
    return LPK_OK;
}

/* ---------------------------------------------------------------- direct writes on a thread
 * A direct write returns once the device has the bytes, so the caller of a
 * synchronous one waits for the device (this machine: about 6 ms per 8 MiB;
 * half a second of a quantize run writing 0.7 GB, spent in waits for the
 * writes). With a thread of the writer's, a full buffer is handed to it and
 * the next one filled meanwhile: the caller waits only when all DIO_NBUF are
 * taken. The thread writes them in order through write_all (so the fallbacks
 * to buffered writes, the early writeback and syncs happen there); the first
 * failure is kept, the buffers after it are dropped, and the caller's next
 * flush or the finish returns it. Without a thread, the writes are the
 * caller's as before. */
typedef struct wio {
    lpk_writer *w;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t len[DIO_NBUF];
    uint64_t head, tail; /* buffers head..tail-1 (mod DIO_NBUF) are queued, in order */
    int stop, cancel;
    int st;              /* the first failure's status (its message in e), 0 */
    lpk_error e;
} wio;

static uint8_t *aio_slot(const lpk_writer *w, uint64_t k)
{
    return w->ring + (size_t)(k % DIO_NBUF) * DBUF_SIZE;
}

static void *aio_run(void *arg)
{
    wio *a = arg;
    lpk_writer *w = a->w;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stop && a->head == a->tail) pthread_cond_wait(&a->cv, &a->mu);
        if (a->head == a->tail) break;
        if (a->st || a->cancel) {
            a->head = a->tail; /* dropped */
            pthread_cond_broadcast(&a->cv);
            continue;
        }
        uint64_t k = a->head;
        pthread_mutex_unlock(&a->mu);
        lpk_error e = {0};
        int st = write_all(w, aio_slot(w, k), a->len[k % DIO_NBUF], &e);
        pthread_mutex_lock(&a->mu);
        if (st && !a->st) {
            a->st = st;
            a->e = e;
        }
        a->head = k + 1;
        pthread_cond_broadcast(&a->cv);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static void aio_start(lpk_writer *w)
{
    wio *a = calloc(1, sizeof *a);
    if (!a) return;
    a->w = w;
    if (thread_start(&a->th, &a->mu, &a->cv, aio_run, a)) {
        free(a);
        return;
    }
    w->aio = a;
}

/* The thread's first failure, into err; 0 if none (lock held). */
static int aio_failed(wio *a, lpk_error *err)
{
    if (a->st && err) *err = a->e;
    return a->st;
}

/* Hands the first m bytes of buf (whole blocks) to the thread and goes on
 * in the next buffer, the rest copied to its start. */
static int aio_submit(lpk_writer *w, size_t m, lpk_error *err)
{
    wio *a = w->aio;
    pthread_mutex_lock(&a->mu);
    /* the next buffer must be free: at most DIO_NBUF - 1 queued after this */
    while (m && !a->st && a->tail + 1 - a->head >= DIO_NBUF) pthread_cond_wait(&a->cv, &a->mu);
    int st = aio_failed(a, err);
    if (!m || st) {
        pthread_mutex_unlock(&a->mu);
        return st;
    }
    a->len[a->tail % DIO_NBUF] = m;
    uint8_t *next = aio_slot(w, a->tail + 1);
    size_t rest = w->buf_n - m;
    /* (the thread reads only the first m bytes of this one) */
    memcpy(next, w->buf + m, rest);
    a->tail++;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    w->buf = next;
    w->buf_n = rest;
    return LPK_OK;
}

/* Ends the thread: what is queued written first (cancel: dropped). The first
 * failure, into err. The writer's own writes resume from the current buffer. */
static int aio_end(lpk_writer *w, int cancel, lpk_error *err)
{
    wio *a = w->aio;
    if (!a) return LPK_OK;
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    a->cancel |= cancel;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->th, NULL);
    int st = aio_failed(a, err);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    free(a);
    w->aio = NULL;
    return st;
}

/* Writes the buffer; direct, only its whole aligned blocks, the rest moved
 * to its start. */
static int aio_submit(lpk_writer *w, size_t m, lpk_error *err);

static int flush_buf(lpk_writer *w, lpk_error *err)
{
    size_t m = w->staged ? w->buf_n / w->align * w->align : w->buf_n;
    if (w->aio) return aio_submit(w, m, err);
    int st = write_all(w, w->buf, m, err);
    memmove(w->buf, w->buf + m, w->buf_n - m);
    w->buf_n -= m;
    return st;
}

static int put(lpk_writer *w, const void *p, size_t n, lpk_error *err)
{
    const uint8_t *b = p;
    w->pos += n;
    if (!w->staged && w->buf_n + n > w->buf_cap) {
        int st = flush_buf(w, err);
        if (st) return st;
        if (n >= w->buf_cap) return write_all(w, p, n, err);
    }
    while (n) {
        size_t k = w->buf_cap - w->buf_n < n ? w->buf_cap - w->buf_n : n;
        memcpy(w->buf + w->buf_n, b, k);
        w->buf_n += k;
        b += k;
        n -= k;
        if (w->buf_n == w->buf_cap) {
            int st = flush_buf(w, err);
            if (st) return st;
        }
    }
    return LPK_OK;
}

static int put_zeros(lpk_writer *w, uint64_t n, lpk_error *err)
{
    static const uint8_t zero[LPK_ALIGN];
    while (n) {
        size_t k = n > sizeof zero ? sizeof zero : (size_t)n;
        int st = put(w, zero, k, err);
        if (st) return st;
        n -= k;
    }
    return LPK_OK;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Checks every declaration (name, type, shape) and fills size. */
static int check_decls(lpk_tensor *t, size_t n, const char *path, lpk_error *err)
{
    if (n > LPK_MAX_TENSORS)
        return lpk_err(err, LPK_EINVAL, "%s: %zu tensors (at most %u)", path, n, LPK_MAX_TENSORS);
    for (size_t i = 0; i < n; i++) {
        size_t nl = strnlen(t[i].name, sizeof t[i].name);
        if (nl == 0 || nl > LPK_MAX_NAME)
            return lpk_err(err, LPK_EINVAL, "%s: tensor #%zu: name length not in 1..%d", path, i,
                           LPK_MAX_NAME);
        const lpk_type_info *ti = lpk_type_get(t[i].type);
        if (!ti || !ti->storable)
            return lpk_err(err, LPK_EINVAL, "%s: tensor '%s': type %d cannot be stored", path,
                           t[i].name, t[i].type);
        if (t[i].n_dims < 1 || t[i].n_dims > LPK_MAX_DIMS)
            return lpk_err(err, LPK_EINVAL, "%s: tensor '%s': n_dims %d not in 1..%d", path,
                           t[i].name, t[i].n_dims, LPK_MAX_DIMS);
        uint64_t ne = 1;
        for (int d = 0; d < t[i].n_dims; d++) {
            if (t[i].dims[d] < 1 || (uint64_t)t[i].dims[d] > UINT64_MAX / ne)
                return lpk_err(err, LPK_EINVAL, "%s: tensor '%s': bad dim %d (%lld)", path,
                               t[i].name, d, (long long)t[i].dims[d]);
            ne *= (uint64_t)t[i].dims[d];
        }
        if ((uint64_t)lpk_tensor_ncols(&t[i]) % (uint64_t)ti->block_size)
            return lpk_err(err, LPK_EINVAL,
                           "%s: tensor '%s': row length %lld is not a multiple of %s's block "
                           "size %d",
                           path, t[i].name, (long long)lpk_tensor_ncols(&t[i]), ti->name,
                           ti->block_size);
        if (lpk_type_nbytes(t[i].type, ne, &t[i].size) || t[i].size > (UINT64_MAX >> 2))
            return lpk_err(err, LPK_EINVAL, "%s: tensor '%s': size overflows", path, t[i].name);
        t[i].has_xxh3 = 0;
        t[i].xxh3 = 0;
        t[i].data = NULL;
    }
    if (n > 1) {
        const char **names = malloc(n * sizeof *names);
        if (!names) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
        for (size_t i = 0; i < n; i++) names[i] = t[i].name;
        qsort(names, n, sizeof *names, cmp_name);
        for (size_t i = 1; i < n; i++)
            if (strcmp(names[i - 1], names[i]) == 0) {
                int st = lpk_err(err, LPK_EINVAL, "%s: tensor '%s' declared twice", path,
                                 names[i]);
                free(names);
                return st;
            }
        free(names);
    }
    return LPK_OK;
}

/* Header, metadata and directory of an .lpk; offsets and sizes assigned. */
static int build_lpk_head(lpk_writer *w, const lpk_meta *meta, lpk_error *err)
{
    uint8_t *raw = NULL, *stored;
    uint64_t raw_size = 0, stored_size;
    unsigned flags = 0;
    int st = lpk_kv_encode(meta, &raw, &raw_size, err);
    if (st) return st;
    size_t meta_count = lpk_meta_count(meta);
    stored = raw;
    stored_size = raw_size;
    uint8_t *z = NULL;
    if (raw_size > LPK_META_ZSTD_MIN) {
        size_t cap = ZSTD_compressBound((size_t)raw_size);
        z = malloc(cap);
        if (!z) { free(raw); return lpk_err(err, LPK_ENOMEM, "%s: out of memory", w->path); }
        size_t zn = ZSTD_compress(z, cap, raw, (size_t)raw_size, 9);
        if (ZSTD_isError(zn)) {
            free(raw);
            free(z);
            return lpk_err(err, LPK_EIO, "%s: zstd: %s", w->path, ZSTD_getErrorName(zn));
        }
        if (zn < raw_size) {
            stored = z;
            stored_size = zn;
            flags |= LPK_FLAG_META_ZSTD;
        }
    }
    uint64_t dir_offset = LPK_HDR_SIZE + stored_size;
    uint64_t dir_end = dir_offset + (uint64_t)w->n * LPK_DIRENT_SIZE;
    uint64_t data_offset = lpk_align_up(dir_end, LPK_ALIGN);
    w->head = calloc(1, (size_t)data_offset);
    if (!w->head) {
        free(raw);
        free(z);
        return lpk_err(err, LPK_ENOMEM, "%s: out of memory", w->path);
    }
    w->head_size = data_offset;
    uint8_t *h = w->head;
    memcpy(h, LPK_MAGIC, LPK_MAGIC_LEN);
    lpk_wr32(h + LPK_H_VERSION, LPK_FORMAT_VERSION);
    lpk_wr32(h + LPK_H_FLAGS, flags);
    lpk_wr64(h + LPK_H_META_OFFSET, LPK_HDR_SIZE);
    lpk_wr64(h + LPK_H_META_SIZE, stored_size);
    lpk_wr64(h + LPK_H_META_RAW_SIZE, raw_size);
    lpk_wr64(h + LPK_H_META_COUNT, meta_count);
    lpk_wr64(h + LPK_H_DIR_OFFSET, dir_offset);
    lpk_wr64(h + LPK_H_N_TENSORS, w->n);
    lpk_wr64(h + LPK_H_DATA_OFFSET, data_offset);
    if (stored_size) memcpy(h + LPK_HDR_SIZE, stored, (size_t)stored_size);
    free(raw);
    free(z);

    uint64_t off = data_offset;
    for (size_t i = 0; i < w->n; i++) {
        lpk_tensor *t = &w->t[i];
        off = lpk_align_up(off, LPK_ALIGN);
        t->offset = off;
        off += t->size;
        uint8_t *e = h + dir_offset + (uint64_t)i * LPK_DIRENT_SIZE;
        memcpy(e + LPK_D_NAME, t->name, strlen(t->name));
        lpk_wr32(e + LPK_D_TYPE, (uint32_t)t->type);
        lpk_wr32(e + LPK_D_N_DIMS, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) lpk_wr64(e + LPK_D_DIMS + 8 * d, (uint64_t)t->dims[d]);
        lpk_wr64(e + LPK_D_OFFSET, t->offset);
        lpk_wr64(e + LPK_D_SIZE, t->size);
    }
    w->file_size = off;
    lpk_wr64(h + LPK_H_FILE_SIZE, off);
    lpk_wr64(h + LPK_H_DATA_SIZE, off - data_offset);
    return LPK_OK;
}

static int build_gguf_head(lpk_writer *w, const lpk_meta *meta, lpk_error *err)
{
    int st = gguf_header_build(meta, w->t, w->n, &w->head, &w->head_size, err);
    if (st) return st;
    uint64_t end = w->head_size;
    for (size_t i = 0; i < w->n; i++) {
        if (w->t[i].offset < end)
            return lpk_err(err, LPK_EINVAL, "%s: GGUF layout puts tensor '%s' at %llu", w->path,
                           w->t[i].name, (unsigned long long)w->t[i].offset);
        end = w->t[i].offset + w->t[i].size;
    }
    /* like llama.cpp, pad the last tensor too: the file ends on the alignment */
    uint32_t align = 32;
    const lpk_kv *a = lpk_meta_find(meta, "general.alignment");
    if (a && a->type == LPK_V_U32) memcpy(&align, a->data, 4);
    w->file_size = align ? lpk_align_up(end, align) : end;
    return LPK_OK;
}

/* Only regular files are ever replaced: a device, FIFO, socket, folder or
 * symbolic link (/dev/stdout is one) at the target is a usage error. */
static int not_regular(const char *path, const struct stat *sb, lpk_error *err)
{
    const char *what = S_ISLNK(sb->st_mode)    ? "a symbolic link"
                       : S_ISDIR(sb->st_mode)  ? "a folder"
                       : S_ISFIFO(sb->st_mode) ? "a FIFO"
                       : S_ISCHR(sb->st_mode) || S_ISBLK(sb->st_mode) ? "a device"
                                                                      : "not a regular file";
    return lpk_err(err, LPK_EINVAL,
                   "%s is %s: output goes only to a regular file path (written beside it, then "
                   "renamed into place), never to a device, FIFO, link or stdout", path, what);
}

static int make_tmp(lpk_writer *w, lpk_error *err)
{
    char *d = strdup(w->path), *b = strdup(w->path);
    if (!d || !b) {
        free(d);
        free(b);
        return lpk_err(err, LPK_ENOMEM, "%s: out of memory", w->path);
    }
    const char *dir = dirname(d), *base = basename(b);
    lpk_sweep_stale(dir);
    size_t len = strlen(dir) + strlen(base) + 16;
    w->tmp = malloc(len);
    if (w->tmp) snprintf(w->tmp, len, "%s/.%s.tmp-XXXXXX", dir, base);
    free(d);
    free(b);
    if (!w->tmp) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", w->path);
    /* Block the signals while the name exists but is not yet registered. */
    lpk_cleanup_block();
    w->fd = mkostemp(w->tmp, O_CLOEXEC);
    int e = errno;
    if (w->fd >= 0) {
        /* held until the process ends, so a later run's sweep
         * (lpk_sweep_stale) knows this file is in use */
        flock(w->fd, LOCK_EX | LOCK_NB);
        w->slot = lpk_temp_register(w->tmp);
        if (w->slot < 0) {
            close(w->fd);
            w->fd = -1;
            unlink(w->tmp);
            lpk_cleanup_unblock();
            return lpk_err(err, LPK_ENOMEM, "%s: too many containers open for writing", w->path);
        }
    }
    lpk_cleanup_unblock();
    if (w->fd < 0) {
        free(w->tmp);
        w->tmp = NULL;
        return lpk_err(err, e == ENOSPC ? LPK_ENOSPC : LPK_EIO,
                       "%s: cannot create a temporary file beside it: %s", w->path, strerror(e));
    }
    /* mkstemp's 0600 is too private for a model file: what open(2) would give */
    fchmod(w->fd, (mode_t)lpk_output_mode());
    return LPK_OK;
}

int lpk_writer_check_target(const char *path, unsigned flags, lpk_error *err)
{
    if (!path || !*path) return lpk_err(err, LPK_EINVAL, "no output path");
    struct stat sb;
    if (lstat(path, &sb) != 0) return LPK_OK;
    if (!S_ISREG(sb.st_mode)) return not_regular(path, &sb, err);
    if (!(flags & LPK_WRITE_FORCE))
        return lpk_err(err, LPK_EEXIST, "%s: already exists (use --force to replace it)", path);
    return LPK_OK;
}

/* lpk_writer_open (fd < 0: a temporary file beside path) and
 * lpk_writer_open_fd (fd: the caller's file; path names it). */
static int writer_open(const char *path, int fd, const lpk_meta *meta, const lpk_tensor *decls,
                       size_t n_tensors, unsigned flags, lpk_writer **out, lpk_error *err)
{
    if (out) *out = NULL;
    if (!path || !*path || !out || (n_tensors && !decls) ||
        (flags & ~(unsigned)(LPK_WRITE_FORCE | LPK_WRITE_GGUF | LPK_WRITE_SCRATCH |
                             LPK_WRITE_DIRECT)) ||
        (fd >= 0 && (flags & LPK_WRITE_FORCE)))
        return lpk_err(err, LPK_EINVAL, "lpk_writer_open: bad arguments");
    int st = fd >= 0 ? LPK_OK : lpk_writer_check_target(path, flags, err);
    if (st) return st;
    lpk_writer *w = calloc(1, sizeof *w);
    lpk_meta *empty = NULL;
    if (!w) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
    w->magic = WRITER_MAGIC;
    w->fd = -1;
    w->slot = -1;
    w->flags = flags;
    /* an intermediate may be read and removed before the disk needs it at all */
    w->wb_off = (flags & LPK_WRITE_SCRATCH) != 0;
    w->sync_off = w->wb_off; /* nor made durable early */
    w->sigs = lpk_signal_count();
    w->faults = lpk_map_fault_count();
    w->n = n_tensors;
    w->path = strdup(path);
    w->t = malloc((n_tensors ? n_tensors : 1) * sizeof *w->t);
    w->buf = malloc(WBUF_SIZE);
    w->buf_cap = WBUF_SIZE;
    w->xs = XXH3_createState();
    if (!meta) meta = empty = lpk_meta_new();
    if (!w->path || !w->t || !w->buf || !w->xs || !meta) {
        st = lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    if (n_tensors) memcpy(w->t, decls, n_tensors * sizeof *w->t);
    if ((st = check_decls(w->t, n_tensors, path, err))) goto fail;
    st = (flags & LPK_WRITE_GGUF) ? build_gguf_head(w, meta, err) : build_lpk_head(w, meta, err);
    if (st) goto fail;
    if (fd >= 0) {
        /* the caller's file, written from its start; nothing to create or rename */
        w->fd = fd;
        w->borrowed = 1;
        w->wb_off = 1; /* not ours to write back: the caller decides (no fsync either) */
        w->sync_off = 1;
        if (lseek(fd, 0, SEEK_SET) != 0 || ftruncate(fd, 0) != 0) {
            int e = errno;
            st = lpk_err(err, LPK_EIO, "%s: cannot write to the file given: %s", path,
                         strerror(e));
            goto fail;
        }
    } else if ((st = make_tmp(w, err))) {
        goto fail;
    } else if (flags & LPK_WRITE_DIRECT) {
        dio_start(w);
    }
    struct statvfs vs;
    /* f_blocks 0: a file system without a size (a memfd's): memory is the limit */
    if (fstatvfs(w->fd, &vs) == 0 && vs.f_blocks) {
        uint64_t avail = (uint64_t)vs.f_bavail;
        uint64_t bs = (uint64_t)vs.f_frsize;
        if (bs && avail < UINT64_MAX / bs && avail * bs < w->file_size) {
            st = lpk_err(err, LPK_ENOSPC, "%s: needs %llu bytes, %llu free", path,
                         (unsigned long long)w->file_size, (unsigned long long)(avail * bs));
            goto fail;
        }
    }
    if ((st = put(w, w->head, (size_t)w->head_size, err))) goto fail;
    lpk_meta_free(empty);
    *out = w;
    return LPK_OK;
fail:
    lpk_meta_free(empty);
    w_discard(w);
    w_free(w);
    return st;
}

int lpk_writer_open(const char *path, const lpk_meta *meta, const lpk_tensor *decls,
                    size_t n_tensors, unsigned flags, lpk_writer **out, lpk_error *err)
{
    return writer_open(path, -1, meta, decls, n_tensors, flags, out, err);
}

int lpk_writer_open_fd(int fd, const char *name, const lpk_meta *meta, const lpk_tensor *decls,
                       size_t n_tensors, unsigned flags, lpk_writer **out, lpk_error *err)
{
    if (fd < 0) return lpk_err(err, LPK_EINVAL, "lpk_writer_open_fd: no file");
    return writer_open(name, fd, meta, decls, n_tensors, flags, out, err);
}

static int usable(lpk_writer *w, lpk_error *err, const char *fn)
{
    if (!w || w->magic != WRITER_MAGIC) return lpk_err(err, LPK_EINVAL, "%s: no writer", fn);
    if (w->failed) return lpk_err(err, LPK_EINVAL, "%s: %s: an earlier call failed", fn, w->path);
    if (lpk_signal_count() != w->sigs) return lpk_err(err, LPK_EINTR, "%s: interrupted", w->path);
    return LPK_OK;
}

int lpk_writer_tensor_begin(lpk_writer *w, const char *name, lpk_error *err)
{
    int st = usable(w, err, "lpk_writer_tensor_begin");
    if (st) return st;
    if (w->in_tensor)
        return lpk_err(err, LPK_EINVAL, "%s: tensor '%s' not ended", w->path, w->t[w->cur].name);
    if (w->cur >= w->n)
        return lpk_err(err, LPK_EINVAL, "%s: all %zu tensors already written", w->path, w->n);
    lpk_tensor *t = &w->t[w->cur];
    if (!name || strcmp(name, t->name) != 0)
        return lpk_err(err, LPK_EINVAL, "%s: expected tensor '%s' (declaration order), got '%s'",
                       w->path, t->name, name ? name : "(null)");
    if ((st = put_zeros(w, t->offset - w->pos, err))) return w_fail(w, st);
    XXH3_64bits_reset(w->xs);
    w->in_tensor = 1;
    w->written = 0;
    return LPK_OK;
}

int lpk_writer_tensor_write(lpk_writer *w, const void *data, size_t n, lpk_error *err)
{
    int st = usable(w, err, "lpk_writer_tensor_write");
    if (st) return st;
    if (!w->in_tensor) return lpk_err(err, LPK_EINVAL, "%s: no tensor begun", w->path);
    lpk_tensor *t = &w->t[w->cur];
    if (n > t->size - w->written)
        return lpk_err(err, LPK_EINVAL, "%s: tensor '%s': %llu bytes written, %zu more exceed %llu",
                       w->path, t->name, (unsigned long long)w->written, n,
                       (unsigned long long)t->size);
    if (!n) return LPK_OK;
    if (!data) return lpk_err(err, LPK_EINVAL, "%s: tensor '%s': NULL data", w->path, t->name);
    XXH3_64bits_update(w->xs, data, n);
    w->written += n;
    if ((st = put(w, data, n, err))) return w_fail(w, st);
    return LPK_OK;
}

int lpk_writer_tensor_end(lpk_writer *w, lpk_error *err)
{
    int st = usable(w, err, "lpk_writer_tensor_end");
    if (st) return st;
    if (!w->in_tensor) return lpk_err(err, LPK_EINVAL, "%s: no tensor begun", w->path);
    lpk_tensor *t = &w->t[w->cur];
    if (w->written != t->size)
        return lpk_err(err, LPK_EINVAL, "%s: tensor '%s': %llu of %llu bytes written", w->path,
                       t->name, (unsigned long long)w->written, (unsigned long long)t->size);
    t->xxh3 = XXH3_64bits_digest(w->xs);
    t->has_xxh3 = 1;
    w->in_tensor = 0;
    w->cur++;
    return LPK_OK;
}

static int pwrite_all(lpk_writer *w, const uint8_t *p, size_t n, uint64_t off, lpk_error *err)
{
    while (n) {
        ssize_t k = pwrite(w->fd, p, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            return lpk_err(err, io_status(e), "%s: write failed: %s", w_file(w), strerror(e));
        }
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return LPK_OK;
}

static int place(lpk_writer *w, lpk_error *err)
{
    struct stat sb;
    if (lstat(w->path, &sb) == 0 && !S_ISREG(sb.st_mode)) return not_regular(w->path, &sb, err);
    if (w->flags & LPK_WRITE_FORCE) {
        if (rename(w->tmp, w->path) == 0) return LPK_OK;
    } else {
        if (renameat2(AT_FDCWD, w->tmp, AT_FDCWD, w->path, RENAME_NOREPLACE) == 0) return LPK_OK;
        if (errno == EINVAL || errno == ENOSYS) {
            /* file system without RENAME_NOREPLACE: link() never replaces either */
            if (link(w->tmp, w->path) == 0) {
                unlink(w->tmp);
                return LPK_OK;
            }
        }
    }
    int e = errno;
    if (e == EEXIST)
        return lpk_err(err, LPK_EEXIST, "%s: already exists (use --force to replace it)", w->path);
    return lpk_err(err, LPK_EIO, "%s: cannot rename %s into place: %s", w->path, w->tmp,
                   strerror(e));
}

static void sync_dir(const char *path)
{
    char *d = strdup(path);
    if (!d) return;
    int fd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(d);
}

int lpk_writer_finish(lpk_writer *w, lpk_error *err)
{
    int st = usable(w, err, "lpk_writer_finish");
    if (st) goto out;
    if (w->in_tensor || w->cur != w->n) {
        st = lpk_err(err, LPK_EINVAL, "%s: finish after %zu of %zu tensors", w->path, w->cur, w->n);
        goto out;
    }
    if ((st = put_zeros(w, w->file_size - w->pos, err))) goto out;
    /* the whole blocks directly; the unaligned tail and the head's patch
     * through the page cache */
    if (w->staged && (st = flush_buf(w, err))) goto out;
    if ((st = aio_end(w, 0, err))) goto out;
    w->staged = 0;
    if (dio_stop(w) != 0) {
        int e = errno;
        st = lpk_err(err, LPK_EIO, "%s: cannot leave direct I/O: %s", w_file(w), strerror(e));
        goto out;
    }
    if ((st = flush_buf(w, err))) goto out;
    if (!(w->flags & LPK_WRITE_GGUF)) {
        uint8_t *h = w->head;
        uint64_t dir = lpk_rd64(h + LPK_H_DIR_OFFSET);
        for (size_t i = 0; i < w->n; i++)
            lpk_wr64(h + dir + (uint64_t)i * LPK_DIRENT_SIZE + LPK_D_XXH3, w->t[i].xxh3);
        lpk_wr64(h + LPK_H_HEADER_XXH3, lpk_header_hash(h, w->head_size));
        if ((st = pwrite_all(w, h, (size_t)w->head_size, 0, err))) goto out;
    }
    if (w->borrowed) {
        /* the caller's file stays open and unnamed: no fsync, close or rename */
        if (lpk_signal_count() != w->sigs) st = lpk_err(err, LPK_EINTR, "%s: interrupted", w->path);
        else st = lpk_map_check_since(w->faults, err);
        w->fd = -1;
        goto out;
    }
    int se = sync_end(w);
    if (se || (!(w->flags & LPK_WRITE_SCRATCH) && fsync(w->fd) != 0)) {
        int e = se ? se : errno;
        st = lpk_err(err, io_status(e), "%s: fsync failed: %s", w_file(w), strerror(e));
        goto out;
    }
    if (close(w->fd) != 0) {
        w->fd = -1;
        int e = errno;
        st = lpk_err(err, io_status(e), "%s: close failed: %s", w_file(w), strerror(e));
        goto out;
    }
    w->fd = -1;
    if (lpk_signal_count() != w->sigs) {
        st = lpk_err(err, LPK_EINTR, "%s: interrupted", w->path);
        goto out;
    }
    /* an input that shrank while mapped fed zeros: nothing of it is placed */
    if ((st = lpk_map_check_since(w->faults, err))) goto out;
    if ((st = place(w, err))) goto out;
    lpk_temp_unregister(w->slot);
    w->slot = -1;
    free(w->tmp);
    w->tmp = NULL;
    if (!(w->flags & LPK_WRITE_SCRATCH)) sync_dir(w->path);
out:
    if (w && w->magic == WRITER_MAGIC) {
        if (st) w_discard(w);
        w_free(w);
    }
    return st;
}

void lpk_writer_abort(lpk_writer *w)
{
    if (!w || w->magic != WRITER_MAGIC) return;
    w_discard(w);
    w_free(w);
}

int lpk_file_write(const char *path, const void *data, size_t n, unsigned flags,
                   lpk_error *err)
{
    if (!path || !*path || (n && !data) || (flags & ~(unsigned)LPK_WRITE_FORCE))
        return lpk_err(err, LPK_EINVAL, "lpk_file_write: bad arguments");
    struct stat sb;
    if (!(flags & LPK_WRITE_FORCE) && lstat(path, &sb) == 0)
        return lpk_err(err, LPK_EEXIST, "%s: already exists (use --force to replace it)", path);
    lpk_writer *w = calloc(1, sizeof *w);
    if (!w) return lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
    w->magic = WRITER_MAGIC;
    w->fd = -1;
    w->slot = -1;
    w->flags = flags;
    w->sigs = lpk_signal_count();
    w->path = strdup(path);
    int st = w->path ? make_tmp(w, err) : lpk_err(err, LPK_ENOMEM, "%s: out of memory", path);
    if (!st) st = write_all(w, data, n, err);
    if (!st && fsync(w->fd) != 0) {
        int e = errno;
        st = lpk_err(err, io_status(e), "%s: fsync failed: %s", w_file(w), strerror(e));
    }
    if (!st) {
        int rc = close(w->fd), e = errno;
        w->fd = -1;
        if (rc != 0) st = lpk_err(err, io_status(e), "%s: close failed: %s", w_file(w), strerror(e));
    }
    if (!st && lpk_signal_count() != w->sigs) st = lpk_err(err, LPK_EINTR, "%s: interrupted", path);
    if (!st) st = place(w, err);
    if (!st) {
        lpk_temp_unregister(w->slot);
        w->slot = -1;
        free(w->tmp);
        w->tmp = NULL;
        sync_dir(w->path);
    } else {
        w_discard(w);
    }
    w_free(w);
    return st;
}

uint64_t lpk_writer_file_size(const lpk_writer *w) { return w ? w->file_size : 0; }

uint64_t lpk_writer_writeback_started(const lpk_writer *w) { return w ? w->wb_from : 0; }
