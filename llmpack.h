/* llmpack: the one header a program using the library includes
 * (`#include <llmpack/llmpack.h>`, flags from `pkg-config --cflags --libs llmpack`).
 *
 * The modules, bottom up (docs/ARCHITECTURE.md), each with its own prefix:
 *   format/lpk.h       lpk_   status codes, errors, type table, metadata, .lpk/GGUF I/O
 *   tok/tok.h          tok_   tokenizers: files -> metadata, encode, decode
 *   quant/quant.h      quant_ block quantizers, recipes
 *   convert/convert.h  cv_    checkpoint readers, the convert pipeline
 *   verify/verify.h    vf_    forward passes, perplexity, divergence
 *   calib/calib.h      calib_ importance matrices, GPTQ
 *   lib/jobs.h         llmpack_ the jobs of the llmpack command (export, convert,
 *                      quantize, verify, ...): progress, cancellation, errors
 * LPK_VERSION_STRING is the version of these headers; lpk_version() the linked
 * library's. */
#ifndef LLMPACK_H
#define LLMPACK_H

#include "format/lpk.h"
#include "tok/tok.h"
#include "quant/quant.h"
#include "convert/convert.h"
#include "verify/verify.h"
#include "calib/calib.h"
#include "lib/jobs.h"

#endif
