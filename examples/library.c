/* The demo model (stories260K) through the library's jobs (lib/jobs.h): converted
 * to f16, quantized to Q4_K_M, every checksum of the result checked, then measured
 * against the f16 original on the sample text (perplexity, KL divergence, top-1
 * agreement over the first 4 chunks of 128 tokens). Run from examples/ with no
 * arguments:
 *
 *     cc library.c $(pkg-config --cflags --libs llmpack) -o library && ./library
 *
 * Writes its two containers into a temporary folder and removes them. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <llmpack/llmpack.h>

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* One line on stderr as each stage of a job ends. */
static void on_progress(void *user, const llmpack_progress *p)
{
    (void)user;
    if (p->event == LLMPACK_PROGRESS_END) fprintf(stderr, "example: %s done\n", p->stage);
}

int main(void)
{
    char dir[] = "/tmp/llmpack-example-XXXXXX", f16[64], q4[64];
    if (!mkdtemp(dir)) return 1;
    snprintf(f16, sizeof f16, "%s/demo.f16.lpk", dir);
    snprintf(q4, sizeof q4, "%s/demo.q4_k_m.lpk", dir);
    llmpack_job *j = llmpack_job_new();
    if (!j) return 1;
    llmpack_job_set_progress(j, on_progress, NULL);

    /* the Hugging Face folder -> an f16 container */
    llmpack_convert_opts co = {.src = "stories260K", .out = f16, .format = LLMPACK_FMT_LPK,
                               .type = "f16"};
    llmpack_convert_result cres;
    int rc = llmpack_convert(j, &co, &cres);
    llmpack_convert_result_free(&cres);

    /* f16 -> Q4_K_M (llama.cpp's recipe, tensor by tensor) */
    llmpack_quantize_opts qo;
    llmpack_quantize_opts_init(&qo);
    qo.in = f16;
    llmpack_quantize_out out = {.path = q4, .recipe = "Q4_K_M", .format = LLMPACK_FMT_LPK};
    if (!rc) rc = llmpack_quantize(j, &qo, &out, 1, NULL);

    /* every tensor's checksum */
    llmpack_check_opts ko = {.path = q4};
    llmpack_check_result kres;
    if (!rc) rc = llmpack_check(j, &ko, &kres);

    /* Q4_K_M against its f16 original */
    const char *models[] = {q4};
    llmpack_verify_opts vo = {.models = models, .n_models = 1, .ref = f16,
                              .text = "TinyStories-valid-sample.txt", .ctx = 128,
                              .max_chunks = 4};
    llmpack_verify_result vr;
    if (!rc) {
        rc = llmpack_verify(j, &vo, &vr);
        if (!rc) {
            const vf_ppl_result *p = &vr.models[0].ppl;
            printf("llmpack %s: Q4_K_M PPL %.4f, f16 PPL %.4f, KLD %.6f, top-1 %.2f%%, "
                   "%zu tensors checked\n", lpk_version(), p->ppl, p->ref_ppl, p->kld_mean,
                   100 * p->top1_agreement, kres.tensors_checked);
        }
        llmpack_verify_result_free(&vr);
    }
    if (rc) fprintf(stderr, "example: %s (%s)\n", llmpack_job_error(j), lpk_status_name(rc));
    llmpack_job_free(j);
    unlink(f16);
    unlink(q4);
    rmdir(dir);
    return rc ? 1 : 0;
}
