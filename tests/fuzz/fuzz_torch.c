/* Fuzz target: the torch zip + restricted unpickler on arbitrary bytes.
 * Whatever it accepts must be self-consistent: every tensor's bytes inside the
 * buffer and sized for its shape and storage type. Corpus: small torch.save
 * layouts written by CPython's pickler (protocols 2 and 4, views, shared and
 * 0-dim storages), a non-contiguous tensor, the legacy format, a truncated zip. */
#include <stdint.h>
#include <stdlib.h>

#include "../../convert/cv_torch.h"

const char *fuzz_corpus_dir = "tests/fuzz/corpus_torch";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cv_torch_file *f = NULL;
    lpk_error err = {0};
    if (cv_torch_file_open_mem("fuzz.pth", data, size, &f, &err) == LPK_OK) {
        for (size_t i = 0; i < f->n_tensors; i++) {
            const cv_pt_tensor *t = &f->tensors[i];
            uint64_t ne = 1;
            for (int d = 0; d < t->n_dims; d++) ne *= (uint64_t)t->dims[d];
            if (t->nbytes != ne * (uint64_t)cv_pt_stype_size(t->stype)) abort();
            if (t->data < data || (uint64_t)(t->data - data) > size ||
                t->nbytes > size - (uint64_t)(t->data - data))
                abort();
            volatile uint8_t sink = 0;
            if (t->nbytes) sink ^= t->data[t->nbytes - 1];
            (void)sink;
        }
        cv_torch_file_close(f);
    } else if (err.status == LPK_OK || !err.msg[0] || f) {
        abort(); /* every failure carries a message and leaves nothing open */
    }
    return 0;
}
