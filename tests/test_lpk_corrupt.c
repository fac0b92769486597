/* Deliberately broken containers, made from the golden files by patching
 * bytes at the offsets docs/FORMAT.md defines: each gets one specific status
 * and a message naming the problem, never a crash or a huge allocation.
 * LLMPACK_REGEN_GOLDEN=1 also stores every variant in the fuzz corpus. */
#include "tutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "../format/lpk.h"

/* header field offsets, from the spec */
enum { H_VERSION = 8, H_FLAGS = 12, H_FILE_SIZE = 16, H_HASH = 24, H_META_SIZE = 40,
       H_META_RAW = 48, H_META_COUNT = 56, H_DIR = 64, H_NT = 72, H_DATA = 80, H_DATA_SIZE = 88,
       H_RESERVED = 96 };
/* directory entry field offsets */
enum { D_SIZE_ = 320, D_TYPE = 256, D_NDIMS = 260, D_DIMS = 264, D_OFF = 296, D_SZ = 304,
       D_XXH = 312 };

enum stage { OPEN, HEADER, TENSORS };

static uint8_t *gold;
static size_t gold_len;
static uint8_t *zgold;
static size_t zgold_len;
static char *tmp;
static int regen;

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void wr64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Recomputes header_xxh3 as the spec says, so structural errors are seen as such. */
static void rehash(uint8_t *b)
{
    uint64_t data = rd64(b + H_DATA);
    wr64(b + H_HASH, 0);
    wr64(b + H_HASH, XXH3_64bits(b, data));
}

static uint8_t *copy(const uint8_t *src, size_t len)
{
    uint8_t *b = malloc(len + 4096);
    memcpy(b, src, len);
    memset(b + len, 0, 4096);
    return b;
}

static uint8_t *dirent(uint8_t *b, int i) { return b + rd64(b + H_DIR) + (uint64_t)D_SIZE_ * i; }

/* Byte offset of `key` (its bytes) in the file. */
static size_t find(const uint8_t *b, size_t len, const char *key)
{
    const uint8_t *p = memmem(b, len, key, strlen(key));
    assert_non_null(p);
    return (size_t)(p - b);
}

static void expect(const char *name, const uint8_t *b, size_t len, enum stage stage, int want,
                   const char *sub)
{
    char *path = tu_fmt("%s/%s.lpk", tmp, name);
    assert_int_equal(tu_write_file(path, b, len), 0);
    if (regen) {
        char *c = tu_fmt("tests/fuzz/corpus_lpk_reader/%s.lpk", name);
        tu_write_file(c, b, len);
        free(c);
    }
    lpk_error err = {0};
    lpk_reader *r = NULL;
    /* structure first: the header checksum is the HEADER stage's business here
     * (test_checksum_at_open covers the open that verifies it) */
    int st = lpk_reader_open_flags(path, LPK_OPEN_NO_VERIFY, &r, &err);
    if (stage != OPEN) {
        if (st) fail_msg("%s: open failed: %s", name, err.msg);
        st = lpk_reader_verify_header(r, &err);
        if (stage == TENSORS) {
            if (st) fail_msg("%s: header check failed: %s", name, err.msg);
            for (size_t i = 0; i < lpk_reader_n_tensors(r) && !st; i++)
                st = lpk_reader_verify_tensor(r, i, &err);
        }
        lpk_reader_close(r);
    } else {
        assert_null(r);
    }
    if (st != want || !strstr(err.msg, sub))
        fail_msg("%s: got %s '%s', want %s '...%s...'", name, lpk_status_name(st), err.msg,
                 lpk_status_name(want), sub);
    assert_non_null(strstr(err.msg, path)); /* messages name the file */
    free(path);
}

static void test_truncated(void **state)
{
    (void)state;
    uint64_t dir = rd64(gold + H_DIR), data = rd64(gold + H_DATA);
    expect("empty", gold, 0, OPEN, LPK_ETRUNC, "empty file");
    expect("trunc_magic", gold, 6, OPEN, LPK_ETRUNC, "truncated in the magic");
    expect("trunc_header", gold, 100, OPEN, LPK_ETRUNC, "truncated in the header");
    expect("trunc_meta", gold, 200, OPEN, LPK_ETRUNC, "truncated in the metadata");
    expect("trunc_dir", gold, dir + 500, OPEN, LPK_ETRUNC, "truncated in the tensor directory");
    expect("trunc_data", gold, data + 1000, OPEN, LPK_ETRUNC, "truncated in the tensor data");
    expect("trunc_last", gold, gold_len - 1, OPEN, LPK_ETRUNC, "header declares");
    expect("trunc_zmeta", zgold, 1000, OPEN, LPK_ETRUNC, "truncated in the metadata");
    uint8_t *b = copy(gold, gold_len);
    expect("appended", b, gold_len + 64, OPEN, LPK_ECORRUPT, "64 bytes after the declared end");
    free(b);
}

static void test_header(void **state)
{
    (void)state;
    uint8_t *b = copy(gold, gold_len);
    b[1] = 'X';
    expect("bad_magic", b, gold_len, OPEN, LPK_ECORRUPT, "bad magic");
    memcpy(b, gold, 128);
    wr32(b + H_VERSION, 2);
    expect("version2", b, gold_len, OPEN, LPK_EUNSUPPORTED, "format version 2");
    memcpy(b, gold, 128);
    wr32(b + H_FLAGS, 0x10);
    expect("flags", b, gold_len, OPEN, LPK_EUNSUPPORTED, "unknown header flags 0x10");
    memcpy(b, gold, 128);
    b[H_RESERVED + 5] = 1;
    expect("reserved", b, gold_len, OPEN, LPK_ECORRUPT, "reserved header byte 101");
    memcpy(b, gold, 128);
    wr64(b + 32, 0);
    expect("meta_offset", b, gold_len, OPEN, LPK_ECORRUPT, "metadata offset 0");
    memcpy(b, gold, 128);
    wr64(b + H_META_SIZE, UINT64_MAX - 100);
    expect("meta_size", b, gold_len, OPEN, LPK_ECORRUPT, "runs past the end");
    memcpy(b, gold, 128);
    wr64(b + H_DIR, rd64(gold + H_DIR) + 8);
    expect("dir_offset", b, gold_len, OPEN, LPK_ECORRUPT, "must follow the metadata");
    memcpy(b, gold, 128);
    wr64(b + H_NT, 1ull << 61);
    expect("n_tensors_huge", b, gold_len, OPEN, LPK_ECORRUPT, "directory of 2305843009213693952");
    memcpy(b, gold, 128);
    wr64(b + H_NT, 11);
    expect("n_tensors_plus1", b, gold_len, OPEN, LPK_ECORRUPT, "data offset");
    memcpy(b, gold, 128);
    wr64(b + H_DATA, rd64(gold + H_DATA) + 64);
    expect("data_offset", b, gold_len, OPEN, LPK_ECORRUPT, "data offset");
    memcpy(b, gold, 128);
    wr64(b + H_DATA_SIZE, 5);
    expect("data_size", b, gold_len, OPEN, LPK_ECORRUPT, "does not end at the end of the file");
    memcpy(b, gold, 128);
    wr64(b + H_META_COUNT, 1ull << 60);
    expect("meta_count_huge", b, gold_len, OPEN, LPK_ECORRUPT, "keys (at most 8192)");
    memcpy(b, gold, 128);
    wr64(b + H_META_COUNT, rd64(gold + H_META_COUNT) - 1);
    expect("meta_count_short", b, gold_len, OPEN, LPK_ECORRUPT, "bytes left after the last");
    memcpy(b, gold, 128);
    wr64(b + H_META_RAW, 5);
    expect("meta_raw_plain", b, gold_len, OPEN, LPK_ECORRUPT, "raw size 5 differs");
    memcpy(b, gold, 128);
    b[rd64(gold + H_DATA) - 1] = 7; /* directory padding */
    expect("dir_padding", b, gold_len, OPEN, LPK_ECORRUPT, "padding byte");
    free(b);
}

static void test_metadata(void **state)
{
    (void)state;
    uint8_t *b = copy(gold, gold_len);
    /* tokens: key, then vtype u32 (9), elem u32 (8), count u64 */
    size_t tok = find(gold, gold_len, "tokenizer.ggml.tokens") + strlen("tokenizer.ggml.tokens");
    wr64(b + tok + 8, 1ull << 62);
    expect("arr_count_huge", b, gold_len, OPEN, LPK_ECORRUPT, "array count 4611686018427387904");
    memcpy(b, gold, gold_len);
    wr64(b + tok + 16, UINT64_MAX); /* first string's length */
    expect("str_len_huge", b, gold_len, OPEN, LPK_ECORRUPT, "declares 18446744073709551615 bytes");
    memcpy(b, gold, gold_len);
    wr32(b + tok + 4, 9); /* array of arrays */
    expect("arr_of_arr", b, gold_len, OPEN, LPK_ECORRUPT, "bad array element type 9");
    memcpy(b, gold, gold_len);
    wr32(b + tok, 13);
    expect("vtype", b, gold_len, OPEN, LPK_ECORRUPT, "unknown value type 13");
    memcpy(b, gold, gold_len);
    size_t bos = find(gold, gold_len, "add_bos_token") + strlen("add_bos_token");
    b[bos + 4] = 2;
    expect("bool2", b, gold_len, OPEN, LPK_ECORRUPT, "bool is 2");
    memcpy(b, gold, gold_len);
    size_t u8k = find(gold, gold_len, "test.u8");
    memcpy(b + u8k, "test.i8", 7); /* the next key is test.i8 */
    expect("dup_key", b, gold_len, OPEN, LPK_ECORRUPT, "duplicate key 'test.i8'");
    memcpy(b, gold, gold_len);
    b[u8k + 2] = 0;
    expect("key_nul", b, gold_len, OPEN, LPK_ECORRUPT, "contains NUL");
    memcpy(b, gold, gold_len);
    wr64(b + u8k - 8, 1u << 20); /* key length */
    expect("key_len", b, gold_len, OPEN, LPK_ECORRUPT, "key length");
    /* a changed value is still well-formed: only the header hash catches it */
    memcpy(b, gold, gold_len);
    size_t arch = find(gold, gold_len, "llama");
    b[arch] = 'L';
    expect("meta_flip", b, gold_len, HEADER, LPK_ECHECKSUM, "header+metadata+directory");
    memcpy(b, gold, gold_len);
    b[rd64(gold + H_DIR) + 3] ^= 1; /* first tensor's name */
    expect("dir_flip", b, gold_len, HEADER, LPK_ECHECKSUM, "xxh3 expected");
    free(b);
}

static void test_zstd(void **state)
{
    (void)state;
    uint8_t *b = copy(zgold, zgold_len);
    wr64(b + H_META_RAW, 1ull << 40);
    expect("zraw_huge", b, zgold_len, OPEN, LPK_ECORRUPT, "metadata declares 1099511627776 bytes");
    memcpy(b, zgold, zgold_len);
    wr64(b + H_META_RAW, rd64(zgold + H_META_RAW) - 1);
    expect("zraw_small", b, zgold_len, OPEN, LPK_ECORRUPT, "header declares");
    memcpy(b, zgold, zgold_len);
    wr64(b + H_META_RAW, rd64(zgold + H_META_RAW) + 1);
    expect("zraw_big", b, zgold_len, OPEN, LPK_ECORRUPT, "decompresses to");
    memcpy(b, zgold, zgold_len);
    b[128] ^= 0xff; /* zstd frame magic */
    expect("zframe", b, zgold_len, OPEN, LPK_ECORRUPT, "zstd");
    memcpy(b, zgold, zgold_len);
    wr32(b + H_FLAGS, 0); /* compressed bytes read as plain */
    expect("zflag_off", b, zgold_len, OPEN, LPK_ECORRUPT, "raw size");
    free(b);
}

static void test_directory(void **state)
{
    (void)state;
    uint8_t *b = copy(gold, gold_len);
    uint64_t fsz = gold_len;
    wr64(dirent(b, 9) + D_OFF, (fsz + 63) / 64 * 64 + 64);
    expect("offset_past_eof", b, gold_len, OPEN, LPK_ECORRUPT, "runs past the end of the file");
    memcpy(b, gold, gold_len);
    wr64(dirent(b, 9) + D_OFF, UINT64_MAX - 63);
    expect("offset_wrap", b, gold_len, OPEN, LPK_ECORRUPT, "runs past the end of the file");
    memcpy(b, gold, gold_len);
    wr64(dirent(b, 1) + D_OFF, rd64(dirent(b, 0) + D_OFF) + 64);
    expect("overlap", b, gold_len, OPEN, LPK_ECORRUPT,
           "overlaps tensor 'token_embd.weight'");
    memcpy(b, gold, gold_len);
    wr64(dirent(b, 0) + D_OFF, rd64(dirent(b, 0) + D_OFF) + 8);
    expect("misaligned", b, gold_len, OPEN, LPK_ECORRUPT, "not 64-byte aligned");
    memcpy(b, gold, gold_len);
    wr64(dirent(b, 0) + D_OFF, 64);
    expect("offset_in_header", b, gold_len, OPEN, LPK_ECORRUPT, "before the data section");
    memcpy(b, gold, gold_len);
    wr32(dirent(b, 0) + D_TYPE, LPK_TYPE_F32); /* f16 tensor declared f32 */
    expect("type_size_mismatch", b, gold_len, OPEN, LPK_ECORRUPT,
           "size 1280 bytes, but f32 with 640 elements needs 2560");
    memcpy(b, gold, gold_len);
    wr64(dirent(b, 0) + D_SZ, 1281);
    expect("size_mismatch", b, gold_len, OPEN, LPK_ECORRUPT, "size 1281 bytes");
    memcpy(b, gold, gold_len);
    wr32(dirent(b, 0) + D_TYPE, 5);
    expect("type_unknown", b, gold_len, OPEN, LPK_EUNSUPPORTED, "unknown type id 5");
    memcpy(b, gold, gold_len);
    wr32(dirent(b, 0) + D_TYPE, 0xffffffffu);
    expect("type_huge", b, gold_len, OPEN, LPK_EUNSUPPORTED, "unknown type id 4294967295");
    memcpy(b, gold, gold_len);
    wr32(dirent(b, 0) + D_TYPE, LPK_TYPE_Q8_K);
    expect("type_q8k", b, gold_len, OPEN, LPK_ECORRUPT, "q8_k cannot be stored");
    memcpy(b, gold, gold_len);
    wr32(dirent(b, 0) + D_NDIMS, 5);
    expect("ndims5", b, gold_len, OPEN, LPK_ECORRUPT, "n_dims 5");
    memcpy(b, gold, gold_len);
    wr32(dirent(b, 0) + D_NDIMS, 0);
    expect("ndims0", b, gold_len, OPEN, LPK_ECORRUPT, "n_dims 0");
    memcpy(b, gold, gold_len);
    wr64(dirent(b, 0) + D_DIMS, 1ull << 62);
    wr64(dirent(b, 0) + D_DIMS + 8, 1ull << 8);
    expect("dims_overflow", b, gold_len, OPEN, LPK_ECORRUPT, "overflows");
    memcpy(b, gold, gold_len);
    wr64(dirent(b, 0) + D_DIMS, 0);
    expect("dim_zero", b, gold_len, OPEN, LPK_ECORRUPT, "dim 0 is 0");
    memcpy(b, gold, gold_len);
    wr64(dirent(b, 1) + D_DIMS + 24, 3);
    expect("unused_dim", b, gold_len, OPEN, LPK_ECORRUPT, "unused dim 3 is not zero");
    memcpy(b, gold, gold_len);
    wr64(dirent(b, 3) + D_DIMS + 8, 48); /* q8_0 row of 48: not whole blocks */
    expect("partial_block", b, gold_len, OPEN, LPK_ECORRUPT, "not a multiple of q8_0's block");
    memcpy(b, gold, gold_len);
    memset(dirent(b, 0), 'a', 256);
    expect("name_unterminated", b, gold_len, OPEN, LPK_ECORRUPT, "not NUL-terminated");
    memcpy(b, gold, gold_len);
    dirent(b, 0)[0] = 0;
    expect("name_empty", b, gold_len, OPEN, LPK_ECORRUPT, "name is empty");
    memcpy(b, gold, gold_len);
    dirent(b, 0)[200] = 'x';
    expect("name_garbage", b, gold_len, OPEN, LPK_ECORRUPT, "bytes after the name");
    memcpy(b, gold, gold_len);
    memset(dirent(b, 1), 0, 256);
    memcpy(dirent(b, 1), "output.weight", 13); /* same as tensor 9 */
    expect("dup_name", b, gold_len, OPEN, LPK_ECORRUPT, "'output.weight' appears twice");
    free(b);
}

static void test_data(void **state)
{
    (void)state;
    uint8_t *b = copy(gold, gold_len);
    uint64_t off = rd64(dirent(b, 3) + D_OFF);
    b[off + 17] ^= 0x40;
    expect("data_flip", b, gold_len, TENSORS, LPK_ECHECKSUM,
           "tensor 'blk.0.attn_k.weight' (offset 6208, 272 bytes): xxh3 expected");
    memcpy(b, gold, gold_len);
    wr64(dirent(b, 3) + D_XXH, 1);
    rehash(b);
    expect("xxh3_field", b, gold_len, TENSORS, LPK_ECHECKSUM, "expected 0000000000000001");
    memcpy(b, gold, gold_len);
    b[rd64(dirent(b, 2) + D_OFF) + 30 + 3] = 1; /* padding after the bf16 tensor */
    expect("data_padding", b, gold_len, TENSORS, LPK_ECORRUPT,
           "before tensor 'blk.0.attn_k.weight' is not zero");
    free(b);
}

/* The reader on every prefix of the golden file, and on random byte flips. */
static void test_prefixes_and_flips(void **state)
{
    (void)state;
    for (size_t len = 0; len < gold_len; len += 7) {
        lpk_reader *r;
        lpk_error err = {0};
        assert_int_not_equal(lpk_reader_open_buffer(gold, len, "p", &r, &err), LPK_OK);
        assert_true(err.status == LPK_ETRUNC || err.status == LPK_ECORRUPT);
    }
    uint8_t *b = copy(gold, gold_len);
    uint64_t rs = 5;
    for (int k = 0; k < 3000; k++) {
        memcpy(b, gold, gold_len);
        for (int j = 0; j < 3; j++) b[tu_rand(&rs) % gold_len] ^= (uint8_t)(1 + tu_rand(&rs) % 255);
        lpk_reader *r;
        lpk_error err = {0};
        if (lpk_reader_open_buffer(b, gold_len, "f", &r, &err) == LPK_OK) {
            lpk_reader_verify_header(r, &err);
            for (size_t i = 0; i < lpk_reader_n_tensors(r); i++) lpk_reader_verify_tensor(r, i, &err);
            lpk_reader_close(r);
        } else {
            assert_true(err.msg[0] != '\0');
        }
    }
    free(b);
}

static int setup(void **state)
{
    (void)state;
    gold = (uint8_t *)tu_read_file("tests/golden/all_types.lpk", &gold_len);
    zgold = (uint8_t *)tu_read_file("tests/golden/zstd_meta.lpk", &zgold_len);
    tmp = tu_tmpdir();
    const char *g = getenv("LLMPACK_REGEN_GOLDEN");
    regen = g && *g == '1';
    return gold && zgold && tmp ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    free(gold);
    free(zgold);
    tu_rmtree(tmp);
    free(tmp);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_truncated), cmocka_unit_test(test_header),
        cmocka_unit_test(test_metadata),  cmocka_unit_test(test_zstd),
        cmocka_unit_test(test_directory), cmocka_unit_test(test_data),
        cmocka_unit_test(test_prefixes_and_flips),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
