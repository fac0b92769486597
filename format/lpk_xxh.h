/* xxHash for the checksums: the library's run-time dispatched XXH3 (AVX2 or
 * AVX-512 where the CPU has them, chosen by libxxhash itself) on x86-64 where
 * its header is installed, else the portable one. The same hashes either way;
 * the streaming update is 2-3x faster with the vector paths (docs/
 * PERFORMANCE.md, "Pieces"). */
#ifndef LPK_XXH_H
#define LPK_XXH_H

#include <xxhash.h>

#if defined(__x86_64__) && defined(__has_include)
#if __has_include(<xxh_x86dispatch.h>)
#include <xxh_x86dispatch.h>
#endif
#endif

#endif
