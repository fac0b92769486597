/* Fuzz target: the restricted unpickler alone (a torch zip's data.pkl) on
 * arbitrary bytes. What it accepts must be self-consistent: names, dims and
 * strides in range, storages referenced by key. Every failure has a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../convert/cv_torch.h"

const char *fuzz_corpus_dir = "tests/fuzz/corpus_pickle";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cv_pk_tensor *t = NULL;
    size_t n = 0;
    lpk_error err = {0};
    int rc = cv_pickle_state_dict(data, size, "fuzz.pkl", &t, &n, &err);
    if (rc != LPK_OK) {
        if (err.status == LPK_OK || !err.msg[0]) abort();
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (t[i].n_dims < 0 || t[i].n_dims > LPK_MAX_DIMS) abort();
        if (!memchr(t[i].name, 0, sizeof t[i].name)) abort();
        volatile int c = cv_pk_contiguous(&t[i]);
        (void)c;
    }
    free(t);
    return 0;
}
