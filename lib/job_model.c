/* Model inputs: opening a container or any checkpoint (converted on the fly),
 * what a model file is in words, and the temporary files of outputs made in
 * two steps. */
#include "job_internal.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../convert/convert.h"
#include "../quant/quant.h"
#include "../verify/verify.h"

static void upper(char *dst, size_t n, const char *src)
{
    size_t i = 0;
    for (; src[i] && i + 1 < n; i++) dst[i] = (char)toupper((unsigned char)src[i]);
    dst[i] = '\0';
}

void llmpack_model_describe(const lpk_reader *r, llmpack_model_desc *d)
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

int llmpack_is_container(const char *path)
{
    unsigned char m[4] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t k = fd >= 0 ? read(fd, m, sizeof m) : -1;
    if (fd >= 0) close(fd);
    return k == 4 && (!memcmp(m, "GGUF", 4) || !memcmp(m, "\x89LPK", 4));
}

const char *llmpack_model_convert_kind(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return NULL;
    const char *kind = cv_source_kind(path);
    if (S_ISDIR(sb.st_mode)) return kind ? kind : "folder"; /* convert says what it lacks */
    size_t n = strlen(path);
    /* named or made as a container: the reader says what is wrong with it */
    if (!S_ISREG(sb.st_mode) || (n > 4 && !strcasecmp(path + n - 4, ".lpk")) ||
        (n > 5 && !strcasecmp(path + n - 5, ".gguf")) || llmpack_is_container(path))
        return NULL;
    return kind;
}

/* MemAvailable of /proc/meminfo in bytes (0: unknown). */
static uint64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    if (f) fclose(f);
    return (uint64_t)kb * 1024;
}

const char *llmpack_tmpdir(void)
{
    const char *d = getenv("TMPDIR");
    return d && *d ? d : "/tmp";
}

int job_open_input(llmpack_job *j, const char *path, unsigned flags, lpk_reader **r)
{
    int st = lpk_reader_open_flags(path, flags, r, job_err(j));
    if (!st && lpk_reader_kind(*r) == LPK_KIND_GGUF) st = vf_model_check(*r, job_err(j));
    if (st) {
        lpk_reader_close(*r);
        *r = NULL;
    }
    return st;
}

int llmpack_open_input(llmpack_job *j, const char *path, unsigned flags, lpk_reader **r)
{
    job_start(j);
    return job_finish(j, job_open_input(j, path, flags, r));
}

/* What a conversion on the fly writes into. */
typedef struct spool {
    llmpack_job *j;
    const char *path, *kind;
    int fd;
} spool;

/* cv_options.out_fd: a memfd when the container takes at most
 * LLMPACK_MEMFD_MAX bytes (default: half of MemAvailable), else an unlinked
 * file in TMPDIR (page cache the kernel can write back, where a memfd's pages
 * could only go to swap). A notice says which. */
static int open_spool(void *ctx, uint64_t bytes, lpk_error *err)
{
    spool *s = ctx;
    const char *env = getenv("LLMPACK_MEMFD_MAX");
    uint64_t avail = mem_available(), limit = avail / 2;
    if (env && *env) limit = strtoull(env, NULL, 10);
    const double mib = (double)bytes / (1 << 20);
    if (bytes <= limit) {
        s->fd = memfd_create("llmpack-converted", MFD_CLOEXEC);
        if (s->fd < 0)
            return lpk_err(err, LPK_EIO, "%s: memfd_create: %s", s->path, strerror(errno));
        job_notice(s->j, "converting %s (%s, source precision kept) into memory: %.1f MiB, "
                   "nothing written to disk", s->path, s->kind, mib);
        return s->fd;
    }
    const char *dir = llmpack_tmpdir();
    s->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (s->fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        /* a file system without O_TMPFILE: a named file, unlinked at once */
        char *t = malloc(strlen(dir) + 32);
        if (!t) return lpk_err(err, LPK_ENOMEM, "out of memory");
        sprintf(t, "%s/.llmpack-converted-XXXXXX", dir);
        s->fd = mkostemp(t, O_CLOEXEC);
        if (s->fd >= 0) unlink(t);
        free(t);
    }
    if (s->fd < 0) {
        int e = errno;
        return lpk_err(err, e == ENOSPC ? LPK_ENOSPC : LPK_EIO,
                       "%s: cannot create a temporary file in %s (TMPDIR): %s", s->path, dir,
                       strerror(e));
    }
    job_notice(s->j, "converting %s (%s, source precision kept) into an unlinked temporary "
               "file in %s: %.1f MiB, more than %s", s->path, s->kind, dir, mib,
               env && *env ? "LLMPACK_MEMFD_MAX" : "half the available memory");
    return s->fd;
}

/* cv_options.progress: bytes converted, and a cancellation check. */
static int convert_progress(void *ctx, uint64_t done, uint64_t total)
{
    spool *s = ctx;
    s->j->total = total;
    return job_update(s->j, done, NULL, s->path);
}

int job_open_model(llmpack_job *j, const char *path, unsigned flags, lpk_reader **r)
{
    *r = NULL;
    const char *kind = llmpack_model_convert_kind(path);
    if (!kind) return job_open_input(j, path, flags, r);
    spool s = {.j = j, .path = path, .kind = kind, .fd = -1};
    int st = job_begin(j, "converting", "B", 0, path);
    cv_options o = {.src = path, .out = path, .spool_dir = llmpack_tmpdir(),
                    .out_fd = open_spool, .out_fd_ctx = &s, .progress = convert_progress,
                    .progress_ctx = &s};
    cv_report rep;
    if (!st) {
        st = cv_convert(&o, &rep, job_err(j));
        /* within the stage, as every notice of the conversion */
        if (rep.warning[0]) job_notice(j, "%s: warning: %s", path, rep.warning);
        job_end(j);
        cv_report_free(&rep);
    }
    if (!st) st = lpk_reader_open_fd(s.fd, path, flags, r, job_err(j));
    if (s.fd >= 0) close(s.fd);
    return st;
}

int llmpack_open_model(llmpack_job *j, const char *path, unsigned flags, lpk_reader **r)
{
    job_start(j);
    return job_finish(j, job_open_model(j, path, flags, r));
}

/* ---------------------------------------------------------------- temporary outputs */
/* The temporary containers of this process: the path, its slot in the
 * signal-cleanup registry (lpk_temp_register) and the lock job_tmp_hold takes. */
#define TMP_SLOTS 20 /* quantize: one per GGUF output (at most 16) */
#define TMP_PATH 4096
static char tmp_path[TMP_SLOTS][TMP_PATH];
static int tmp_fd[TMP_SLOTS];
static int tmp_reg[TMP_SLOTS];
static int tmp_used[TMP_SLOTS];

int job_tmp_beside(const char *out, char *path, size_t n, lpk_error *err)
{
    const char *slash = strrchr(out, '/');
    int dl = slash ? (int)(slash - out + 1) : 0;
    const char *base = slash ? slash + 1 : out;
    if (n > TMP_PATH) n = TMP_PATH;
    if ((size_t)snprintf(path, n, "%.*s.%s.tmp-XXXXXX", dl, out, base) >= n)
        return lpk_err(err, LPK_EINVAL, "%s: path too long", out);
    int slot = -1;
    for (int i = 0; i < TMP_SLOTS && slot < 0; i++)
        if (!tmp_used[i]) slot = i;
    if (slot < 0) return lpk_err(err, LPK_ENOMEM, "%s: too many temporary files", out);
    /* no signal between creating the name and registering it */
    lpk_cleanup_block();
    int fd = mkostemp(path, O_CLOEXEC), e = errno, reg = -1;
    if (fd >= 0) {
        close(fd);
        reg = lpk_temp_register(path);
        if (reg < 0) unlink(path);
    }
    lpk_cleanup_unblock();
    if (fd < 0)
        return lpk_err(err, e == ENOSPC ? LPK_ENOSPC : LPK_EIO,
                       "%s: cannot create a temporary file beside it: %s", out, strerror(e));
    if (reg < 0) return lpk_err(err, LPK_ENOMEM, "%s: cannot register a temporary file", out);
    memcpy(tmp_path[slot], path, strlen(path) + 1);
    tmp_fd[slot] = -1;
    tmp_reg[slot] = reg;
    tmp_used[slot] = 1;
    return LPK_OK;
}

static int tmp_slot(const char *path)
{
    for (int i = 0; i < TMP_SLOTS; i++)
        if (tmp_used[i] && !strcmp(tmp_path[i], path)) return i;
    return -1;
}

void job_tmp_hold(const char *path)
{
    int i = tmp_slot(path);
    if (i < 0) return;
    if (tmp_fd[i] >= 0) close(tmp_fd[i]); /* a file written again: lock the new one */
    /* the writer's lock went with its file descriptor; a later run's sweep
     * (lpk_sweep_stale) leaves a locked file alone */
    tmp_fd[i] = open(path, O_RDONLY | O_CLOEXEC);
    if (tmp_fd[i] >= 0) flock(tmp_fd[i], LOCK_SH | LOCK_NB);
}

void job_tmp_remove(const char *path)
{
    int i = tmp_slot(path);
    if (i < 0) return;
    lpk_cleanup_block();
    unlink(tmp_path[i]);
    lpk_temp_unregister(tmp_reg[i]);
    lpk_cleanup_unblock();
    if (tmp_fd[i] >= 0) close(tmp_fd[i]);
    tmp_fd[i] = -1;
    tmp_used[i] = 0;
}

char *job_name_from_path(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    char *n = strdup(b);
    if (!n) return NULL;
    char *dot = strrchr(n, '.');
    if (dot && dot != n) *dot = '\0';
    return n;
}
