/* Process-wide protection (docs/RELIABILITY.md): cleanup on termination
 * signals, mapped files that shrink under us (SIGBUS), the notice hook, the
 * output mode and the sweep of temporary files left by killed runs.
 *
 * Everything a signal handler touches is a fixed array of volatile flags and
 * pointers; the handlers call only unlink/rmdir (through the hooks), mmap,
 * sigaction and raise. */
#include "lpk.h"
#include "lpk_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- termination signals */
/* The catchable signals whose default action ends the process (SIGBUS apart,
 * below; SIGSEGV/SIGILL/SIGFPE/SIGABRT are bugs and left to the debugger). */
static const int term_sigs[] = {SIGHUP, SIGINT, SIGQUIT, SIGPIPE, SIGALRM, SIGTERM,
                                SIGUSR1, SIGUSR2, SIGXCPU, SIGXFSZ};
#define N_TERM (sizeof term_sigs / sizeof term_sigs[0])
#define MAX_HOOKS 8

static lpk_cleanup_fn hooks[MAX_HOOKS];
static volatile sig_atomic_t n_hooks;
static volatile sig_atomic_t sig_count;
static struct sigaction old_term[N_TERM];
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local sigset_t blocked_old;
static _Thread_local int blocked_depth;

static void run_hooks(void)
{
    for (int i = 0; i < n_hooks; i++)
        if (hooks[i]) hooks[i]();
}

static void on_term(int sig)
{
    int saved = errno;
    run_hooks();
    sig_count++;
    /* Hand the signal on: the previous disposition runs once we return (the
     * signal is blocked until then), so the default action still ends the
     * process and a program's own handler (llmpack's exits 1) still runs. */
    for (size_t i = 0; i < N_TERM; i++) sigaction(term_sigs[i], &old_term[i], NULL);
    raise(sig);
    errno = saved;
}

/* Checks each signal's current disposition rather than trusting a flag: a
 * program (or a forked child) may have reset them since. */
static void install_term(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < N_TERM; i++) sigaddset(&sa.sa_mask, term_sigs[i]);
    for (size_t i = 0; i < N_TERM; i++) {
        struct sigaction cur;
        sigaction(term_sigs[i], NULL, &cur);
        if (cur.sa_handler == on_term) continue;
        /* a signal ignored when we started (nohup, a background job) stays ignored */
        if (cur.sa_handler != SIG_IGN) sigaction(term_sigs[i], &sa, &old_term[i]);
        else old_term[i] = cur;
    }
}

int lpk_cleanup_add(lpk_cleanup_fn fn)
{
    int rc = 0;
    lpk_cleanup_block();
    pthread_mutex_lock(&guard_lock);
    int have = 0;
    for (int i = 0; i < n_hooks; i++) have |= hooks[i] == fn;
    if (!have) {
        if (n_hooks < MAX_HOOKS) {
            hooks[n_hooks] = fn;
            n_hooks = n_hooks + 1;
        } else {
            rc = LPK_ENOMEM;
        }
    }
    if (!rc && n_hooks) install_term();
    pthread_mutex_unlock(&guard_lock);
    lpk_cleanup_unblock();
    return rc;
}

void lpk_cleanup_run(void) { run_hooks(); }

void lpk_cleanup_block(void)
{
    if (blocked_depth++) return; /* nested: the outermost call restores */
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < N_TERM; i++) sigaddset(&set, term_sigs[i]);
    pthread_sigmask(SIG_BLOCK, &set, &blocked_old);
}

void lpk_cleanup_unblock(void)
{
    if (blocked_depth > 0 && --blocked_depth == 0)
        pthread_sigmask(SIG_SETMASK, &blocked_old, NULL);
}

unsigned lpk_signal_count(void) { return (unsigned)sig_count; }

int lpk_is_term_signal(int sig)
{
    for (size_t i = 0; i < N_TERM; i++)
        if (term_sigs[i] == sig) return 1;
    return 0;
}

/* ---------------------------------------------------------------- mapped files */
#define MAP_SLOTS 64
static volatile uintptr_t map_base[MAP_SLOTS], map_len[MAP_SLOTS];
static volatile sig_atomic_t map_faulted[MAP_SLOTS];
static char *map_path[MAP_SLOTS];
static volatile sig_atomic_t bus_on;
static struct sigaction old_bus;
static uintptr_t page_size;
static volatile sig_atomic_t fault_count; /* faults caught so far */
static char last_fault[1024];              /* the file of the latest one */

static void on_bus(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    int saved = errno;
    uintptr_t a = (uintptr_t)si->si_addr;
    for (int i = 0; i < MAP_SLOTS; i++) {
        uintptr_t b = map_base[i], n = map_len[i];
        if (!b || a < b || a - b >= n) continue;
        /* The file shrank under the mapping. Zero pages over the rest of it let
         * the reader finish its loop; every consumer checks the flag (through
         * lpk_map_check) before trusting or writing what it read. */
        uintptr_t p = a & ~(page_size - 1), e = (b + n + page_size - 1) & ~(page_size - 1);
        if (mmap((void *)p, e - p, PROT_READ, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) ==
            MAP_FAILED)
            break;
        map_faulted[i] = 1;
        /* plain byte copy: no library call in the handler */
        const char *src = map_path[i];
        size_t k = 0;
        for (; src && src[k] && k + 1 < sizeof last_fault; k++) last_fault[k] = src[k];
        last_fault[k] = 0;
        fault_count++;
        errno = saved;
        return;
    }
    /* not one of ours: clean up, then the previous disposition (normally the
     * default: the faulting access runs again and ends the process) */
    run_hooks();
    sigaction(sig, &old_bus, NULL);
    bus_on = 0;
    errno = saved;
}

int lpk_map_guard(const void *addr, uint64_t len, const char *path)
{
    if (!addr || !len) return LPK_OK;
    char *p = strdup(path ? path : "(mapped file)");
    if (!p) return LPK_ENOMEM;
    pthread_mutex_lock(&guard_lock);
    int slot = -1;
    for (int i = 0; i < MAP_SLOTS && slot < 0; i++)
        if (!map_base[i]) slot = i;
    if (slot >= 0) {
        struct sigaction cur;
        sigaction(SIGBUS, NULL, &cur);
        if (!bus_on || cur.sa_sigaction != on_bus) {
            page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_sigaction = on_bus;
            sa.sa_flags = SA_SIGINFO;
            sigemptyset(&sa.sa_mask);
            sigaction(SIGBUS, &sa, &old_bus);
            bus_on = 1;
        }
        map_path[slot] = p;
        map_faulted[slot] = 0;
        map_len[slot] = (uintptr_t)len;
        map_base[slot] = (uintptr_t)addr;
    }
    pthread_mutex_unlock(&guard_lock);
    if (slot < 0) {
        free(p); /* unguarded: a truncation then ends the process as before */
        return LPK_ENOMEM;
    }
    return LPK_OK;
}

static int fault_err(const char *path, lpk_error *err)
{
    return lpk_err(err, LPK_ETRUNC, "%s changed or was truncated while reading", path);
}

void lpk_map_unguard(const void *addr)
{
    if (!addr) return;
    pthread_mutex_lock(&guard_lock);
    for (int i = 0; i < MAP_SLOTS; i++) {
        if (map_base[i] != (uintptr_t)addr) continue;
        map_base[i] = 0;
        map_len[i] = 0;
        map_faulted[i] = 0;
        free(map_path[i]);
        map_path[i] = NULL;
    }
    pthread_mutex_unlock(&guard_lock);
}

int lpk_map_check(const void *addr, lpk_error *err)
{
    int st = LPK_OK;
    pthread_mutex_lock(&guard_lock);
    for (int i = 0; i < MAP_SLOTS && !st; i++)
        if (map_base[i] && (!addr || map_base[i] == (uintptr_t)addr) && map_faulted[i])
            st = fault_err(map_path[i], err);
    pthread_mutex_unlock(&guard_lock);
    return st;
}

unsigned lpk_map_fault_count(void) { return (unsigned)fault_count; }

int lpk_map_check_since(unsigned count, lpk_error *err)
{
    if ((unsigned)fault_count == count) return LPK_OK;
    return fault_err(last_fault[0] ? last_fault : "an input file", err);
}

/* ---------------------------------------------------------------- notices */
static lpk_notice_fn notice_fn;

void lpk_set_notice(lpk_notice_fn fn) { notice_fn = fn; }

void lpk_notice(const char *fmt, ...)
{
    if (!notice_fn) return;
    char buf[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    notice_fn(buf);
}

/* ---------------------------------------------------------------- temporary paths */
/* The one registry of paths a termination signal removes: the writers'
 * temporary files, a program's intermediate files, and the archive reader's
 * spool folder and everything in it. Entries live in chunks that never move
 * (the first one static, later ones allocated and linked once, never freed),
 * each with a fixed path buffer, so the hook reads only memory that stays
 * valid and calls only unlink and rmdir, both async-signal-safe. */
#define TMP_CHUNK 64
#define TMP_PATH_MAX 4096
typedef struct tmp_chunk {
    char path[TMP_CHUNK][TMP_PATH_MAX];
    int fd[TMP_CHUNK];                      /* held open until unregistered, or -1 */
    volatile sig_atomic_t used[TMP_CHUNK];
    struct tmp_chunk *volatile next;
} tmp_chunk;
static tmp_chunk tmp_first;
static pthread_mutex_t tmp_lock = PTHREAD_MUTEX_INITIALIZER;

/* Files first (unlink fails on a folder), then folders, innermost first:
 * rmdir passes until one removes nothing. root: only root and paths under
 * root/ (NULL: all). */
static int tmp_match(const char *p, const char *root)
{
    if (!root) return 1;
    size_t rl = strlen(root);
    return !strncmp(p, root, rl) && (p[rl] == 0 || p[rl] == '/');
}

static void tmp_remove(const char *root)
{
    int e = errno;  /* a signal handler, or a caller that reports errno next */
    for (tmp_chunk *c = &tmp_first; c; c = c->next)
        for (int i = 0; i < TMP_CHUNK; i++)
            if (c->used[i] && tmp_match(c->path[i], root)) unlink(c->path[i]);
    for (int more = 1; more;) {
        more = 0;
        for (tmp_chunk *c = &tmp_first; c; c = c->next)
            for (int i = 0; i < TMP_CHUNK; i++)
                if (c->used[i] && tmp_match(c->path[i], root) && rmdir(c->path[i]) == 0) more = 1;
    }
    errno = e;
}

static void tmp_remove_all(void) { tmp_remove(NULL); }

int lpk_temp_register_fd(const char *path, int fd)
{
    if (strlen(path) >= TMP_PATH_MAX || lpk_cleanup_add(tmp_remove_all)) return -1;
    lpk_cleanup_block();
    pthread_mutex_lock(&tmp_lock);
    int slot = -1, base = 0;
    tmp_chunk *c = &tmp_first;
    for (;; c = c->next, base += TMP_CHUNK) {
        for (int i = 0; i < TMP_CHUNK && slot < 0; i++)
            if (!c->used[i]) slot = i;
        if (slot >= 0 || !c->next) break;
    }
    if (slot < 0) {
        tmp_chunk *n = calloc(1, sizeof *n);
        if (n) {
            c->next = n;
            c = n;
            base += TMP_CHUNK;
            slot = 0;
        }
    }
    if (slot >= 0) {
        strcpy(c->path[slot], path);
        c->fd[slot] = fd;
        c->used[slot] = 1;
        slot += base;
    }
    pthread_mutex_unlock(&tmp_lock);
    lpk_cleanup_unblock();
    return slot;
}

int lpk_temp_register(const char *path) { return lpk_temp_register_fd(path, -1); }

/* Forgets entry i of c (tmp_lock held), closing its descriptor. */
static void tmp_forget(tmp_chunk *c, int i)
{
    c->used[i] = 0;
    if (c->fd[i] >= 0) close(c->fd[i]);
    c->fd[i] = -1;
}

void lpk_temp_unregister(int slot)
{
    if (slot < 0) return;
    lpk_cleanup_block();
    pthread_mutex_lock(&tmp_lock);
    tmp_chunk *c = &tmp_first;
    for (; c && slot >= TMP_CHUNK; slot -= TMP_CHUNK) c = c->next;
    if (c && c->used[slot]) tmp_forget(c, slot);
    pthread_mutex_unlock(&tmp_lock);
    lpk_cleanup_unblock();
}

void lpk_temp_remove(const char *root)
{
    lpk_cleanup_block();
    pthread_mutex_lock(&tmp_lock);
    tmp_remove(root);
    for (tmp_chunk *c = &tmp_first; c; c = c->next)
        for (int i = 0; i < TMP_CHUNK; i++)
            if (c->used[i] && tmp_match(c->path[i], root)) tmp_forget(c, i);
    pthread_mutex_unlock(&tmp_lock);
    lpk_cleanup_unblock();
}

/* ---------------------------------------------------------------- output mode */
unsigned lpk_output_mode(void)
{
    /* umask can only be read by setting it: put it straight back */
    static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&m);
    mode_t u = umask(022);
    umask(u);
    pthread_mutex_unlock(&m);
    return 0666u & ~(unsigned)u;
}

/* ---------------------------------------------------------------- stale temporary files */
/* When this process started (seconds since the epoch): /proc/self/stat's start
 * time in ticks after boot plus the boot time; now, when /proc cannot say. */
static time_t process_start(void)
{
    time_t now = time(NULL), t = now;
    FILE *f = fopen("/proc/self/stat", "r");
    unsigned long long ticks = 0;
    if (f) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *p = strrchr(buf, ')'); /* the command name may hold spaces */
        for (int field = 2; p && field < 22; field++) p = strchr(p + 1, ' ');
        if (p) ticks = strtoull(p + 1, NULL, 10);
    }
    FILE *s = fopen("/proc/stat", "r");
    unsigned long long btime = 0;
    if (s) {
        char line[256];
        while (fgets(line, sizeof line, s))
            if (sscanf(line, "btime %llu", &btime) == 1) break;
        fclose(s);
    }
    long hz = sysconf(_SC_CLK_TCK);
    if (ticks && btime && hz > 0) t = (time_t)(btime + ticks / (unsigned long long)hz);
    return t < now ? t : now;
}

static int is_tmp_suffix(const char *s)
{
    if (strlen(s) != 6) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
            return 0;
    return 1;
}

/* 1: a writer's temporary file name (.NAME.tmp-XXXXXX), 2: an unpack folder. */
static int tmp_kind(const char *name)
{
    size_t n = strlen(name);
    if (!strncmp(name, ".llmpack-unpack-", 16)) return is_tmp_suffix(name + 16) ? 2 : 0;
    if (name[0] != '.' || n < 13 || strncmp(name + n - 11, ".tmp-", 5)) return 0;
    return is_tmp_suffix(name + n - 6) ? 1 : 0;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb; (void)f;
    return flag == FTW_DP ? rmdir(p) : unlink(p);
}

int lpk_sweep_stale(const char *dir)
{
    if (!dir || !*dir) dir = ".";
    DIR *d = opendir(dir);
    if (!d) return 0;
    time_t t0 = process_start();
    int dfd = dirfd(d), removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int kind = tmp_kind(e->d_name);
        if (!kind) continue;
        struct stat sb;
        if (fstatat(dfd, e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (sb.st_mtime >= t0 || sb.st_uid != geteuid()) continue;
        if (kind == 1 ? !S_ISREG(sb.st_mode) : !S_ISDIR(sb.st_mode)) continue;
        int fd = openat(dfd, e->d_name,
                        O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (kind == 2 ? O_DIRECTORY : 0));
        if (fd < 0) continue;
        int ours = 1;
        if (kind == 1 && sb.st_size > 0) {
            /* a writer puts its header first: only our own containers go */
            uint8_t m[LPK_MAGIC_LEN];
            ssize_t k = pread(fd, m, sizeof m, 0);
            ours = (k == (ssize_t)sizeof m && !memcmp(m, LPK_MAGIC, LPK_MAGIC_LEN)) ||
                   (k >= 4 && !memcmp(m, "GGUF", 4));
        }
        /* A live writer holds a lock on it until it ends (even by SIGKILL). */
        if (ours && flock(fd, LOCK_EX | LOCK_NB) == 0) {
            char p[4400];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            int gone = kind == 1 ? unlinkat(dfd, e->d_name, 0) == 0
                                 : nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0;
            if (gone) {
                removed++;
                lpk_notice("removed %s, left by an earlier run that was killed (%s)", p,
                           kind == 1 ? "temporary file" : "unpack folder");
            }
        }
        close(fd);
    }
    closedir(d);
    return removed;
}
