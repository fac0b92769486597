/* Fuzz target: archive listing and unpacking (.tar, .tar.zst, .zip ... by
 * content): member names, links, sizes, the streaming scan of safetensors
 * members and the small files it hands to the folder readers. The bytes go to
 * a file in a private temporary folder (libarchive reads files); the folder
 * reader is a stub, so everything up to it runs. Nothing may be left in the
 * folder but the input itself, and every failure has a message. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../convert/cv_torch.h"
#include "../../convert/cv_source.h"

const char *fuzz_corpus_dir = "tests/fuzz/corpus_archive";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int stub_open(const char *dir, const cv_torch_opts *o, cv_source **out, lpk_error *err)
{
    (void)o;
    *out = NULL;
    return lpk_err(err, LPK_ENOTFOUND, "%s: (fuzz) no checkpoint reader", dir);
}

static char dir[64];

static int leftovers(void)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "a.tar")) n++;
    if (d) closedir(d);
    return n;
}

/* The private folder goes when the process ends (replay or fuzzer). */
static void remove_dir(void)
{
    char p[128];
    snprintf(p, sizeof p, "%s/a.tar", dir);
    unlink(p);
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/llmpack-fuzz-XXXXXX");
        if (!mkdtemp(dir)) abort();
        atexit(remove_dir);
    }
    char path[128];
    snprintf(path, sizeof path, "%s/a.tar", dir);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f)) abort();
    cv_torch_opts o = {.spool_dir = dir};
    cv_source *s = NULL;
    lpk_error err = {0};
    int rc = cv_archive_open(path, &o, stub_open, &s, &err);
    if (rc == LPK_OK) {
        s->ops->close(s);
    } else if (err.status == LPK_OK || !err.msg[0]) {
        abort();
    }
    if (leftovers()) abort(); /* the unpack folder went with the failure */
    return 0;
}
