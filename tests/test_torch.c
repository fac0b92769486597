/* convert/ torch reader: the restricted unpickler on hand-written pickle bytes
 * (built from the pickle spec, protocol 2 and 4 opcodes), torch zip files
 * built here byte by byte, crafted bad inputs (each with its own error), Meta
 * shard merging on synthetic shards, and the shared Meta checkpoints against
 * the same models' HF safetensors read independently (un-permuted here). */
#include "tutil.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "../convert/cv_torch.h"

/* ---------------------------------------------------------------- byte buffer */
typedef tu_buf buf;
static void b_u8(buf *b, unsigned v) { uint8_t x = (uint8_t)v; tu_buf_put(b, &x, 1); }
static void b_le(buf *b, uint64_t v, int k)
{
    for (int i = 0; i < k; i++) b_u8(b, (unsigned)(v >> (8 * i)) & 0xff);
}

/* ---------------------------------------------------------------- pickle writer */
/* Opcodes from Python's Lib/pickle.py (the spec of the format). */
static void pk_str(buf *b, const char *s)
{
    b_u8(b, 'X');  /* BINUNICODE: u32 length + utf-8 */
    b_le(b, strlen(s), 4);
    tu_buf_put(b, s, strlen(s));
}
static void pk_int(buf *b, int64_t v)
{
    if (v >= 0 && v < 256) { b_u8(b, 'K'); b_le(b, (uint64_t)v, 1); }
    else if (v >= 0 && v < 65536) { b_u8(b, 'M'); b_le(b, (uint64_t)v, 2); }
    else if (v >= INT32_MIN && v <= INT32_MAX) { b_u8(b, 'J'); b_le(b, (uint64_t)v, 4); }
    else { b_u8(b, 0x8a); b_u8(b, 8); b_le(b, (uint64_t)v, 8); }  /* LONG1 */
}
static void pk_global(buf *b, const char *mod, const char *name)
{
    b_u8(b, 'c');
    tu_buf_put(b, mod, strlen(mod));
    b_u8(b, '\n');
    tu_buf_put(b, name, strlen(name));
    b_u8(b, '\n');
}
static void pk_ints(buf *b, int n, const int64_t *v)
{
    b_u8(b, '(');
    for (int i = 0; i < n; i++) pk_int(b, v[i]);
    b_u8(b, 't');
}
/* _rebuild_tensor_v2((storage pid), offset, size, stride, False, OrderedDict()) */
static void pk_tensor(buf *b, const char *stype, const char *key, int64_t numel, int64_t off,
                      int nd, const int64_t *dims, const int64_t *strides)
{
    pk_global(b, "torch._utils", "_rebuild_tensor_v2");
    b_u8(b, '(');
    b_u8(b, '(');
    pk_str(b, "storage");
    pk_global(b, "torch", stype);
    pk_str(b, key);
    pk_str(b, "cpu");
    pk_int(b, numel);
    b_u8(b, 't');
    b_u8(b, 'Q');  /* BINPERSID */
    pk_int(b, off);
    pk_ints(b, nd, dims);
    pk_ints(b, nd, strides);
    b_u8(b, 0x89);  /* NEWFALSE */
    pk_global(b, "collections", "OrderedDict");
    b_u8(b, ')');
    b_u8(b, 'R');
    b_u8(b, 't');
    b_u8(b, 'R');
}

typedef struct tspec {
    const char *name, *stype, *key;
    int64_t numel, off;
    int nd;
    int64_t dims[4], strides[4];
} tspec;

static void contiguous(tspec *t)
{
    int64_t s = 1;
    for (int d = t->nd - 1; d >= 0; d--) { t->strides[d] = s; s *= t->dims[d]; }
}

/* A protocol-2 state dict: {name: tensor, ...} as torch.save writes it. */
static buf pk_state_dict(const tspec *t, size_t n)
{
    buf b = {0};
    b_u8(&b, 0x80); b_u8(&b, 2);
    b_u8(&b, '}');
    b_u8(&b, '(');
    for (size_t i = 0; i < n; i++) {
        pk_str(&b, t[i].name);
        pk_tensor(&b, t[i].stype, t[i].key, t[i].numel, t[i].off, t[i].nd, t[i].dims,
                  t[i].strides);
    }
    b_u8(&b, 'u');
    b_u8(&b, '.');
    return b;
}

/* ---------------------------------------------------------------- zip writer */
static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c >> 1 ^ (0xedb88320u & (0u - (c & 1)));
    }
    return ~c;
}

typedef struct zmember {
    const char *name;
    const void *data;
    size_t n;
} zmember;

/* A stored zip; data aligned to 64 bytes with a padding extra field, as
 * torch's writer does. */
static buf zip_build(const zmember *m, size_t n)
{
    buf b = {0}, cd = {0};
    for (size_t i = 0; i < n; i++) {
        uint64_t off = b.n;
        size_t nl = strlen(m[i].name);
        size_t pad = (64 - (off + 30 + nl + 4) % 64) % 64;
        uint32_t crc = crc32_of(m[i].data, m[i].n);
        b_le(&b, 0x04034b50, 4); b_le(&b, 20, 2); b_le(&b, 0, 2); b_le(&b, 0, 2);
        b_le(&b, 0, 4); b_le(&b, crc, 4); b_le(&b, m[i].n, 4); b_le(&b, m[i].n, 4);
        b_le(&b, nl, 2); b_le(&b, 4 + pad, 2);
        tu_buf_put(&b, m[i].name, nl);
        b_le(&b, 0x4246, 2); b_le(&b, pad, 2);
        for (size_t k = 0; k < pad; k++) b_u8(&b, 'Z');
        tu_buf_put(&b, m[i].data, m[i].n);
        b_le(&cd, 0x02014b50, 4); b_le(&cd, 20, 2); b_le(&cd, 20, 2); b_le(&cd, 0, 2);
        b_le(&cd, 0, 2); b_le(&cd, 0, 4); b_le(&cd, crc, 4); b_le(&cd, m[i].n, 4);
        b_le(&cd, m[i].n, 4); b_le(&cd, nl, 2); b_le(&cd, 0, 2); b_le(&cd, 0, 2);
        b_le(&cd, 0, 2); b_le(&cd, 0, 2); b_le(&cd, 0, 4); b_le(&cd, off, 4);
        tu_buf_put(&cd, m[i].name, nl);
    }
    uint64_t cd_off = b.n;
    tu_buf_put(&b, cd.p, cd.n);
    b_le(&b, 0x06054b50, 4); b_le(&b, 0, 2); b_le(&b, 0, 2); b_le(&b, n, 2); b_le(&b, n, 2);
    b_le(&b, cd.n, 4); b_le(&b, cd_off, 4); b_le(&b, 0, 2);
    free(cd.p);
    return b;
}

typedef struct storage {
    const char *key;
    const void *data;
    size_t n;
} storage;

/* Writes ARCHIVE/data.pkl + ARCHIVE/data/KEY... (+ byteorder) as torch.save does. */
static void write_pth(const char *path, const char *arch, const buf *pkl, const storage *st,
                      size_t ns, int byteorder)
{
    zmember m[64];
    char *names[64];
    size_t n = 0;
    names[n] = tu_fmt("%s/data.pkl", arch);
    m[n] = (zmember){names[n], pkl->p, pkl->n}; n++;
    if (byteorder) {
        names[n] = tu_fmt("%s/byteorder", arch);
        m[n] = (zmember){names[n], "little", 6}; n++;
    }
    for (size_t i = 0; i < ns; i++) {
        names[n] = tu_fmt("%s/data/%s", arch, st[i].key);
        m[n] = (zmember){names[n], st[i].data, st[i].n}; n++;
    }
    names[n] = tu_fmt("%s/version", arch);
    m[n] = (zmember){names[n], "3\n", 2}; n++;
    buf z = zip_build(m, n);
    assert_int_equal(tu_write_file(path, z.p, z.n), 0);
    free(z.p);
    for (size_t i = 0; i < n; i++) free(names[i]);
}

/* ---------------------------------------------------------------- unpickler */
static void test_pickle_state_dict(void **state)
{
    (void)state;
    /* Two tensors sharing storage "0" (a view at element offset 6), and one
     * half tensor in storage "1"; protocol 2 with memo puts/gets. */
    buf b = {0};
    b_u8(&b, 0x80); b_u8(&b, 2);
    b_u8(&b, '}'); b_u8(&b, 'q'); b_u8(&b, 0);         /* EMPTY_DICT, BINPUT 0 */
    b_u8(&b, '(');
    pk_str(&b, "a.weight");
    pk_global(&b, "torch._utils", "_rebuild_tensor_v2");
    b_u8(&b, 'q'); b_u8(&b, 1);
    b_u8(&b, '('); b_u8(&b, '(');
    pk_str(&b, "storage"); b_u8(&b, 'q'); b_u8(&b, 2);
    pk_global(&b, "torch", "FloatStorage"); b_u8(&b, 'q'); b_u8(&b, 3);
    pk_str(&b, "0");
    pk_str(&b, "cpu"); b_u8(&b, 'r'); b_le(&b, 40, 4);  /* LONG_BINPUT 40 */
    pk_int(&b, 12);
    b_u8(&b, 't'); b_u8(&b, 'q'); b_u8(&b, 5);            /* pid tuple memo 5 */
    b_u8(&b, 'Q');
    pk_int(&b, 0);
    pk_int(&b, 2); pk_int(&b, 3); b_u8(&b, 0x86);          /* TUPLE2 */
    pk_int(&b, 3); pk_int(&b, 1); b_u8(&b, 0x86);
    b_u8(&b, 0x89);
    pk_global(&b, "collections", "OrderedDict"); b_u8(&b, ')'); b_u8(&b, 'R');
    b_u8(&b, 't'); b_u8(&b, 'R');
    pk_str(&b, "b.bias");
    /* _rebuild_parameter(_rebuild_tensor_v2(same storage via BINGET 5), False, OD()) */
    pk_global(&b, "torch._utils", "_rebuild_parameter");
    b_u8(&b, '(');
    b_u8(&b, 'h'); b_u8(&b, 1);
    b_u8(&b, '(');
    b_u8(&b, 'h'); b_u8(&b, 5); b_u8(&b, 'Q');
    pk_int(&b, 6);
    pk_int(&b, 6); b_u8(&b, 0x85);                          /* TUPLE1 */
    pk_int(&b, 1); b_u8(&b, 0x85);
    b_u8(&b, 0x88);
    b_u8(&b, '}'); b_u8(&b, 't'); b_u8(&b, 'R');
    b_u8(&b, 0x89); b_u8(&b, '}');
    b_u8(&b, 't'); b_u8(&b, 'R');
    b_u8(&b, 'u');
    /* SETITEM with a half tensor built from a LONG1 sized storage */
    pk_str(&b, "c");
    b_u8(&b, 'h'); b_u8(&b, 1);
    b_u8(&b, '(');
    b_u8(&b, '('); b_u8(&b, 'h'); b_u8(&b, 2); pk_global(&b, "torch", "HalfStorage");
    pk_str(&b, "1"); b_u8(&b, 'j'); b_le(&b, 40, 4);        /* LONG_BINGET 40 */
    b_u8(&b, 0x8a); b_u8(&b, 1); b_u8(&b, 4); b_u8(&b, 't'); b_u8(&b, 'Q');
    pk_int(&b, 0);
    b_u8(&b, ')'); b_u8(&b, ')');                            /* 0-dim tensor */
    b_u8(&b, 0x89); b_u8(&b, 'N');
    b_u8(&b, 't'); b_u8(&b, 'R');
    b_u8(&b, 's');
    /* BUILD state on the dict (as OrderedDict._metadata is pickled) */
    b_u8(&b, '}'); b_u8(&b, 'b');
    b_u8(&b, '.');

    cv_pk_tensor *t;
    size_t n;
    lpk_error err = {0};
    assert_int_equal(cv_pickle_state_dict(b.p, b.n, "mem", &t, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(t[0].name, "a.weight");
    assert_int_equal(t[0].stype, CV_PT_FLOAT);
    assert_string_equal(t[0].key, "0");
    assert_int_equal(t[0].storage_numel, 12);
    assert_int_equal(t[0].n_dims, 2);
    assert_int_equal(t[0].dims[0], 2);
    assert_int_equal(t[0].dims[1], 3);
    assert_int_equal(t[0].strides[0], 3);
    assert_string_equal(t[1].name, "b.bias");
    assert_string_equal(t[1].key, "0");
    assert_int_equal(t[1].offset, 6);
    assert_int_equal(t[1].n_dims, 1);
    assert_int_equal(t[1].dims[0], 6);
    assert_string_equal(t[2].name, "c");
    assert_int_equal(t[2].stype, CV_PT_HALF);
    assert_int_equal(t[2].storage_numel, 4);
    assert_int_equal(t[2].n_dims, 0);
    free(t);

    /* Every truncation fails cleanly (no crash, no leak under ASan). */
    for (size_t k = 0; k < b.n; k++) {
        lpk_error e2 = {0};
        int st = cv_pickle_state_dict(b.p, k, "mem", &t, &n, &e2);
        /* ends early, or a cut through a newline-terminated operand */
        if (st != LPK_ETRUNC && st != LPK_ECORRUPT)
            fail_msg("cut at %zu of %zu: status %d (%s)", k, b.n, st, e2.msg);
        assert_null(t);
    }
    /* Single-byte corruptions never crash and either parse or fail. */
    uint64_t rs = 99;
    for (int it = 0; it < 3000; it++) {
        uint8_t *c = malloc(b.n);
        memcpy(c, b.p, b.n);
        c[tu_rand(&rs) % b.n] = (uint8_t)tu_rand(&rs);
        lpk_error e2 = {0};
        if (cv_pickle_state_dict(c, b.n, "mem", &t, &n, &e2) == 0) free(t);
        else assert_true(e2.msg[0] != 0);
        free(c);
    }
    free(b.p);
}

static void test_pickle_protocol4(void **state)
{
    (void)state;
    /* torch.save(pickle_protocol=4): FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE */
    buf b = {0};
    b_u8(&b, 0x80); b_u8(&b, 4);
    b_u8(&b, 0x95); b_le(&b, 0, 8);
    b_u8(&b, '}'); b_u8(&b, 0x94);
    b_u8(&b, 0x8c); b_u8(&b, 1); b_u8(&b, 'w'); b_u8(&b, 0x94);
    b_u8(&b, 0x8c); b_u8(&b, 12); tu_buf_put(&b, "torch._utils", 12);
    b_u8(&b, 0x8c); b_u8(&b, 18); tu_buf_put(&b, "_rebuild_tensor_v2", 18);
    b_u8(&b, 0x93); b_u8(&b, 0x94);
    b_u8(&b, '(');
    b_u8(&b, '(');
    b_u8(&b, 0x8c); b_u8(&b, 7); tu_buf_put(&b, "storage", 7);
    b_u8(&b, 0x8c); b_u8(&b, 5); tu_buf_put(&b, "torch", 5);
    b_u8(&b, 0x8c); b_u8(&b, 15); tu_buf_put(&b, "BFloat16Storage", 15);
    b_u8(&b, 0x93);
    b_u8(&b, 0x8c); b_u8(&b, 1); b_u8(&b, '7');
    b_u8(&b, 0x8c); b_u8(&b, 3); tu_buf_put(&b, "cpu", 3);
    pk_int(&b, 8);
    b_u8(&b, 't'); b_u8(&b, 'Q');
    pk_int(&b, 0);
    pk_int(&b, 8); b_u8(&b, 0x85);
    pk_int(&b, 1); b_u8(&b, 0x85);
    b_u8(&b, 0x89); b_u8(&b, 'N');
    b_u8(&b, 't'); b_u8(&b, 'R');
    b_u8(&b, 's');
    b_u8(&b, '.');
    cv_pk_tensor *t;
    size_t n;
    lpk_error err = {0};
    assert_int_equal(cv_pickle_state_dict(b.p, b.n, "p4", &t, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(t[0].name, "w");
    assert_int_equal(t[0].stype, CV_PT_BFLOAT16);
    assert_string_equal(t[0].key, "7");
    free(t);
    free(b.p);
}

static int pickle_fails(const buf *b, int status, const char *needle)
{
    cv_pk_tensor *t = NULL;
    size_t n;
    lpk_error err = {0};
    int rc = cv_pickle_state_dict(b->p, b->n, "evil.pkl", &t, &n, &err);
    free(t);
    if (rc != status || !strstr(err.msg, needle)) {
        print_message("got %d '%s', wanted %d with '%s'\n", rc, err.msg, status, needle);
        return 0;
    }
    return 1;
}

static void test_pickle_malicious(void **state)
{
    (void)state;
    /* The classic payload: os.system("echo pwned") via GLOBAL + REDUCE. */
    buf b = {0};
    b_u8(&b, 0x80); b_u8(&b, 2);
    pk_global(&b, "os", "system");
    pk_str(&b, "touch /tmp/llmpack-pwned");
    b_u8(&b, 0x85); b_u8(&b, 'R'); b_u8(&b, '.');
    assert_true(pickle_fails(&b, LPK_EUNSUPPORTED, "'os.system'"));
    assert_false(tu_exists("/tmp/llmpack-pwned"));
    free(b.p);
    /* builtins.eval, posix.system via STACK_GLOBAL, inside a state dict */
    const char *bad[][2] = {{"builtins", "eval"}, {"posix", "system"},
                            {"torch", "load"}, {"torch._utils", "_rebuild_qtensor"}};
    for (int i = 0; i < 4; i++) {
        buf c = {0};
        b_u8(&c, 0x80); b_u8(&c, 4);
        b_u8(&c, '}'); pk_str(&c, "x");
        pk_str(&c, bad[i][0]); pk_str(&c, bad[i][1]); b_u8(&c, 0x93);
        b_u8(&c, ')'); b_u8(&c, 'R'); b_u8(&c, 's'); b_u8(&c, '.');
        char *want = tu_fmt("'%s.%s'", bad[i][0], bad[i][1]);
        assert_true(pickle_fails(&c, LPK_EUNSUPPORTED, want));
        free(want);
        free(c.p);
    }
    /* Allowed names in the wrong module (or a module/name that only shares a
     * prefix with an allowed one) are refused at the global itself, via GLOBAL
     * and via STACK_GLOBAL. The control: the same pickle with the right module
     * is read (an empty OrderedDict, a state dict of no tensors). */
    const char *wrong[][2] = {{"os", "OrderedDict"},
                              {"collections.abc", "OrderedDict"},
                              {"torch", "OrderedDict"},
                              {"builtins", "_rebuild_tensor_v2"},
                              {"torch._utilsX", "_rebuild_tensor"},
                              {"torch._util", "_rebuild_tensor"},
                              {"torch._utils", "_rebuild_tensor_v"},
                              {"torch._utils", "_rebuild_tensor_v2X"},
                              {"torch._tensor", "_rebuild_tensor_v2"},
                              {"torch._utils", "_rebuild_from_type_v2"},
                              {"torch", "_rebuild_parameter"},
                              {"torch.nn", "Parameter"},
                              {"torch.nn.parameter", "Tensor"},
                              {"collections", "Tensor"},
                              {"torchX", "FloatStorage"},
                              {"torch._utils", "FloatStorage"},
                              {"numpy", "HalfStorage"},
                              {"torch", "FloatStorag"},
                              {"collections", "OrderedDic"},
                              {"collection", "OrderedDict"}};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++)
        for (int stack = 0; stack < 2; stack++) {
            buf c = {0};
            b_u8(&c, 0x80); b_u8(&c, 4);
            if (stack) { pk_str(&c, wrong[i][0]); pk_str(&c, wrong[i][1]); b_u8(&c, 0x93); }
            else pk_global(&c, wrong[i][0], wrong[i][1]);
            b_u8(&c, ')'); b_u8(&c, 'R'); b_u8(&c, '.');
            char *want = tu_fmt("'%s.%s' at offset", wrong[i][0], wrong[i][1]);
            if (!pickle_fails(&c, LPK_EUNSUPPORTED, want))
                fail_msg("%s.%s (%s) was not refused", wrong[i][0], wrong[i][1],
                         stack ? "STACK_GLOBAL" : "GLOBAL");
            free(want);
            free(c.p);
        }
    for (int stack = 0; stack < 2; stack++) {
        buf c = {0};
        b_u8(&c, 0x80); b_u8(&c, 4);
        if (stack) { pk_str(&c, "collections"); pk_str(&c, "OrderedDict"); b_u8(&c, 0x93); }
        else pk_global(&c, "collections", "OrderedDict");
        b_u8(&c, ')'); b_u8(&c, 'R'); b_u8(&c, '.');
        cv_pk_tensor *t = NULL;
        size_t n = 99;
        lpk_error err = {0};
        assert_int_equal(cv_pickle_state_dict(c.p, c.n, "ok.pkl", &t, &n, &err), LPK_OK);
        assert_int_equal(n, 0);
        free(t);
        free(c.p);
    }
    /* A whitelisted global that is not callable */
    buf d = {0};
    b_u8(&d, 0x80); b_u8(&d, 2);
    pk_global(&d, "torch", "FloatStorage"); b_u8(&d, ')'); b_u8(&d, 'R'); b_u8(&d, '.');
    assert_true(pickle_fails(&d, LPK_EUNSUPPORTED, "not callable"));
    free(d.p);
}

static void test_pickle_bad_opcodes(void **state)
{
    (void)state;
    /* INST ('i'), OBJ ('o'), NEWOBJ (0x81), text INT ('I'), EXT1 (0x82), 0xff */
    const uint8_t ops[] = {'i', 'o', 0x81, 'I', 0x82, 0xff, 'P', 'V'};
    for (size_t i = 0; i < sizeof ops; i++) {
        buf b = {0};
        b_u8(&b, 0x80); b_u8(&b, 2);
        b_u8(&b, '}');
        b_u8(&b, ops[i]);
        tu_buf_put(&b, "os\nsystem\n", 10);
        b_u8(&b, '.');
        char *want = tu_fmt("opcode 0x%02x", ops[i]);
        assert_true(pickle_fails(&b, LPK_EUNSUPPORTED, want));
        free(want);
        free(b.p);
    }
    /* malformed: string longer than the pickle, memo index never set, stack
     * underflow, protocol 1, not a dict, trailing bytes */
    struct { const char *bytes; size_t n; int status; const char *needle; } cases[] = {
        {"\x80\x02X\xff\xff\xff\x7f" "abc.", 12, LPK_ETRUNC, "only"},
        {"\x80\x02h\x07.", 5, LPK_ECORRUPT, "memo"},
        {"\x80\x02s.", 4, LPK_ECORRUPT, "underflow"},
        {"\x80\x01}.", 4, LPK_EUNSUPPORTED, "protocol 1"},
        {"\x80\x02]." , 4, LPK_EUNSUPPORTED, "list, not a state dict"},
        {"\x80\x02}.xx", 6, LPK_ECORRUPT, "after the pickle"},
        {"\x80\x02}", 3, LPK_ETRUNC, "without STOP"},
        {"\x80\x02q\x00.", 5, LPK_ECORRUPT, "underflow"},
        {"\x80\x02}r\xff\xff\xff\x0f.", 9, LPK_ECORRUPT, "memo index larger"},
        {"\x80\x02}X\x01\x00\x00\x00" "aK\x01s.", 13, LPK_EUNSUPPORTED, "'a' is a int"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf b = {(uint8_t *)cases[i].bytes, cases[i].n, cases[i].n};
        assert_true(pickle_fails(&b, cases[i].status, cases[i].needle));
    }
}

/* ---------------------------------------------------------------- torch files */
/* The zip record decoders on hand-built records: a zip64 field replaces
 * exactly the values that read 0xffffffff, in its order; a short or missing
 * field is an error (the values before it are replaced); data descriptors of
 * both widths. */
static void test_zip_records(void **state)
{
    (void)state;
    buf x = {0};
    b_le(&x, 0x5455, 2); b_le(&x, 5, 2); b_le(&x, 0, 5);      /* another field first */
    b_le(&x, 1, 2); b_le(&x, 16, 2);
    b_le(&x, 0x123456789ull, 8); b_le(&x, 0xfffffffffull, 8);
    uint64_t us = 0xffffffffu, cs = 7, off = 0xffffffffu;
    int found = -1;
    assert_int_equal(cv_zip64_extra(x.p, x.n, &us, &cs, &off, &found), 0);
    assert_int_equal(found, 1);
    assert_true(us == 0x123456789ull && cs == 7 && off == 0xfffffffffull);
    us = cs = off = 0xffffffffu;  /* three wanted, two there */
    assert_int_equal(cv_zip64_extra(x.p, x.n, &us, &cs, &off, &found), -1);
    assert_true(found == 1 && us == 0x123456789ull && cs == 0xfffffffffull && off == 0xffffffffu);
    us = 0xffffffffu;
    assert_int_equal(cv_zip64_extra(x.p, 9, &us, NULL, NULL, &found), -1);  /* no field */
    assert_true(found == 0 && us == 0xffffffffu);
    assert_int_equal(cv_zip64_extra(x.p, 9, &cs, NULL, NULL, &found), 0);   /* none wanted */
    assert_int_equal(cv_zip64_extra(x.p, 8, &us, NULL, NULL, &found), -1);  /* overrun */
    free(x.p);

    buf h = {0};
    b_le(&h, 0x04034b50, 4); b_le(&h, 45, 2); b_le(&h, 8, 2); b_le(&h, 0, 2);
    b_le(&h, 0, 4); b_le(&h, 0xdeadbeef, 4); b_le(&h, 1000, 4); b_le(&h, 2000, 4);
    b_le(&h, 12, 2); b_le(&h, 20, 2);
    cv_zip_local l;
    assert_int_equal(h.n, CV_ZIP_LOCAL_SIZE);
    assert_int_equal(cv_zip_local_read(h.p, &l), 0);
    assert_true(l.flag == 8 && l.method == 0 && l.csize == 1000 && l.usize == 2000 &&
                l.name_len == 12 && l.extra_len == 20);
    h.p[0] ^= 1;
    assert_int_equal(cv_zip_local_read(h.p, &l), -1);
    free(h.p);

    buf d = {0};
    b_le(&d, 0xcafe, 4); b_le(&d, 300, 4); b_le(&d, 400, 4); b_le(&d, 5, 4); b_le(&d, 0, 4);
    uint64_t dc, du;
    cv_zip_descriptor_read(d.p, 0, &dc, &du);
    assert_true(dc == 300 && du == 400);
    cv_zip_descriptor_read(d.p, 1, &dc, &du);
    assert_true(dc == (400ull << 32 | 300) && du == 5);  /* 4 + 8 + 8 bytes */
    free(d.p);
}

static void test_torch_file(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    float s0[12];
    for (int i = 0; i < 12; i++) s0[i] = (float)i * 0.5f;
    uint16_t s1[4] = {0x3c00, 0x4000, 0x4200, 0x4400};
    tspec ts[3] = {
        {"w", "FloatStorage", "0", 12, 0, 2, {2, 3}, {0}},
        {"view", "FloatStorage", "0", 12, 6, 2, {3, 2}, {0}},
        {"h", "HalfStorage", "1", 4, 1, 1, {3}, {0}},
    };
    for (int i = 0; i < 3; i++) contiguous(&ts[i]);
    buf pkl = pk_state_dict(ts, 3);
    storage st[2] = {{"0", s0, sizeof s0}, {"1", s1, sizeof s1}};
    for (int bo = 0; bo < 2; bo++) {
        char *p = tu_fmt("%s/m%d.pth", dir, bo);
        write_pth(p, bo ? "archive" : "m0", &pkl, st, 2, bo);
        cv_torch_file *f;
        lpk_error err = {0};
        assert_int_equal(cv_torch_file_open(p, &f, &err), 0);
        assert_int_equal(f->n_tensors, 3);
        const cv_pt_tensor *w = cv_torch_file_find(f, "w"), *v = cv_torch_file_find(f, "view"),
                           *h = cv_torch_file_find(f, "h");
        assert_non_null(w); assert_non_null(v); assert_non_null(h);
        assert_int_equal(w->type, LPK_TYPE_F32);
        assert_int_equal(w->nbytes, 24);
        assert_memory_equal(w->data, s0, 24);
        assert_int_equal(v->nbytes, 24);
        assert_memory_equal(v->data, s0 + 6, 24);     /* storage offset honoured */
        assert_int_equal(h->type, LPK_TYPE_F16);
        assert_memory_equal(h->data, s1 + 1, 6);
        cv_torch_file_release(f, w->data, w->nbytes);
        assert_memory_equal(w->data, s0, 24);          /* still readable after release */
        cv_torch_file_close(f);
        free(p);
    }
    free(pkl.p);
    tu_rmtree(dir);
    free(dir);
}

static int torch_fails(const char *path, int status, const char *needle)
{
    cv_torch_file *f = NULL;
    lpk_error err = {0};
    int rc = cv_torch_file_open(path, &f, &err);
    cv_torch_file_close(f);
    if (rc != status || !strstr(err.msg, needle) || !strstr(err.msg, path)) {
        print_message("got %d '%s', wanted %d with '%s'\n", rc, err.msg, status, needle);
        return 0;
    }
    return 1;
}

static void test_torch_bad_files(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    float s0[12] = {0};
    storage st[1] = {{"0", s0, sizeof s0}};
    /* non-contiguous: a transposed view */
    tspec tr = {"layers.0.attention.wq.weight", "FloatStorage", "0", 12, 0, 2, {3, 4}, {1, 3}};
    buf pkl = pk_state_dict(&tr, 1);
    char *p = tu_fmt("%s/nc.pth", dir);
    write_pth(p, "nc", &pkl, st, 1, 1);
    assert_true(torch_fails(p, LPK_EUNSUPPORTED,
                            "'layers.0.attention.wq.weight' is not contiguous"));
    free(p); free(pkl.p);
    /* tensor larger than its storage; storage member missing */
    tspec big = {"w", "FloatStorage", "0", 12, 4, 1, {9}, {1}};
    pkl = pk_state_dict(&big, 1);
    p = tu_fmt("%s/big.pth", dir);
    write_pth(p, "big", &pkl, st, 1, 0);
    assert_true(torch_fails(p, LPK_ECORRUPT, "does not fit its storage"));
    free(p); free(pkl.p);
    tspec miss = {"w", "FloatStorage", "5", 12, 0, 1, {12}, {1}};
    pkl = pk_state_dict(&miss, 1);
    p = tu_fmt("%s/miss.pth", dir);
    write_pth(p, "miss", &pkl, st, 1, 0);
    assert_true(torch_fails(p, LPK_ECORRUPT, "no member miss/data/5"));
    /* truncated zip: every cut loses the end-of-central-directory record */
    size_t n;
    char *whole = tu_read_file(p, &n);
    char *q = tu_fmt("%s/trunc.pth", dir);
    assert_int_equal(tu_write_file(q, whole, n - 30), 0);
    assert_true(torch_fails(q, LPK_ETRUNC, "truncated"));
    assert_int_equal(tu_write_file(q, whole, n / 2), 0);
    assert_true(torch_fails(q, LPK_ETRUNC, "truncated"));
    for (size_t k = 0; k < n; k += 7) {      /* no cut crashes */
        cv_torch_file *f = NULL;
        lpk_error e = {0};
        assert_int_equal(tu_write_file(q, whole, k), 0);
        int rc = cv_torch_file_open(q, &f, &e);
        /* ends early (the empty file: not a non-empty file) */
        if (rc != LPK_ETRUNC && (rc != LPK_ECORRUPT || k))
            fail_msg("cut at %zu of %zu: status %d (%s)", k, n, rc, e.msg);
    }
    free(whole); free(q); free(p); free(pkl.p);
    /* legacy (pre-1.6) format: a bare pickle starting with the magic number */
    static const uint8_t legacy[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                     0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e, 0x80, 0x02, 0x4d,
                                     0xe9, 0x03, 0x2e};
    p = tu_fmt("%s/legacy.pth", dir);
    assert_int_equal(tu_write_file(p, legacy, sizeof legacy), 0);
    assert_true(torch_fails(p, LPK_EUNSUPPORTED, "legacy torch format, re-save with torch>=1.6"));
    free(p);
    /* a malicious pickle inside a well-formed torch zip */
    buf evil = {0};
    b_u8(&evil, 0x80); b_u8(&evil, 2);
    pk_global(&evil, "os", "system"); pk_str(&evil, "true"); b_u8(&evil, 0x85);
    b_u8(&evil, 'R'); b_u8(&evil, '.');
    p = tu_fmt("%s/evil.pth", dir);
    write_pth(p, "evil", &evil, st, 1, 0);
    assert_true(torch_fails(p, LPK_EUNSUPPORTED, "'os.system'"));
    free(p); free(evil.p);
    tu_rmtree(dir);
    free(dir);
}

/* A file whose pickle CPython's own Pickler wrote (protocols 2 and 4, with
 * its memo and framing), in torch.save's layout: tests/fuzz/corpus_torch. */
static void test_torch_cpython_pickles(void **state)
{
    (void)state;
    const char *files[] = {"tests/fuzz/corpus_torch/ok_p2.pth", "tests/fuzz/corpus_torch/ok_p4.pth"};
    for (int i = 0; i < 2; i++) {
        cv_torch_file *f;
        lpk_error err = {0};
        if (cv_torch_file_open(files[i], &f, &err)) fail_msg("%s", err.msg);
        assert_int_equal(f->n_tensors, 5);
        const cv_pt_tensor *e = cv_torch_file_find(f, "tok_embeddings.weight"),
                           *v = cv_torch_file_find(f, "view"),
                           *q = cv_torch_file_find(f, "layers.0.attention.wq.weight"),
                           *h = cv_torch_file_find(f, "h"), *sc = cv_torch_file_find(f, "scalar");
        assert_true(e && v && q && h && sc);
        float want[12];
        for (int k = 0; k < 12; k++) want[k] = (float)k;
        assert_int_equal(e->n_dims, 2);
        assert_int_equal(e->dims[0], 3);
        assert_memory_equal(e->data, want, 24);
        assert_memory_equal(v->data, want + 6, 24);   /* view at element 6 of storage 0 */
        assert_int_equal(q->type, LPK_TYPE_BF16);     /* through _rebuild_parameter */
        uint8_t b[16];
        for (int k = 0; k < 16; k++) b[k] = (uint8_t)k;
        assert_memory_equal(q->data, b, 16);
        assert_int_equal(h->nbytes, 6);
        assert_true(h->data == sc->data + 2);         /* shared storage, offset 1 */
        assert_int_equal(sc->n_dims, 0);
        cv_torch_file_close(f);
    }
}

/* ---------------------------------------------------------------- synthetic Meta */
/* A tiny LLaMA split into S model-parallel shards the way Meta's code splits
 * it. Values are a function of (tensor, merged row, merged col) so merged
 * reads can be checked against the formula. */
enum { TD = 8, TL = 1, TH = 2, TV = 6, TF = 24 };

static float tval(int ti, int64_t r, int64_t c) { return (float)(ti * 10000 + r * 100 + c); }

typedef struct tdef {
    const char *meta;
    int64_t rows, cols;  /* merged; cols 0 = 1-D */
    int split;           /* 0: dim 0, 1: dim 1, 2: replicated */
} tdef;

static const tdef tiny[] = {
    {"tok_embeddings.weight", TV, TD, 1}, {"norm.weight", TD, 0, 2},
    {"output.weight", TV * 2, TD, 0},
    {"layers.0.attention.wq.weight", TD, TD, 0}, {"layers.0.attention.wk.weight", TD, TD, 0},
    {"layers.0.attention.wv.weight", TD, TD, 0}, {"layers.0.attention.wo.weight", TD, TD, 1},
    {"layers.0.feed_forward.w1.weight", TF, TD, 0},
    {"layers.0.feed_forward.w2.weight", TD, TF, 1},
    {"layers.0.feed_forward.w3.weight", TF, TD, 0},
    {"layers.0.attention_norm.weight", TD, 0, 2}, {"layers.0.ffn_norm.weight", TD, 0, 2},
    {"rope.freqs", 2, 0, 2},
};
#define NTINY (sizeof tiny / sizeof tiny[0])

/* How to spoil shard 1: 0 none, 1 drop a tensor, 2 norm differs, 3 shape differs,
 * 4 dtype differs; emb_dim0: LLaMA 3 style embedding split along rows. */
static void write_tiny_meta(const char *dir, int S, int spoil, int emb_dim0)
{
    char *pp = tu_fmt("%s/params.json", dir);
    const char *params = "{\"dim\": 8, \"multiple_of\": 4, \"n_heads\": 2, \"n_layers\": 1, "
                         "\"norm_eps\": 1e-06, \"vocab_size\": -1, \"use_scaled_rope\": true}";
    assert_int_equal(tu_write_file(pp, params, strlen(params)), 0);
    free(pp);
    for (int s = 0; s < S; s++) {
        tspec ts[NTINY];
        storage st[NTINY];
        float *data[NTINY];
        char keys[NTINY][8];
        size_t n = 0;
        for (size_t i = 0; i < NTINY; i++) {
            const tdef *d = &tiny[i];
            if (spoil == 1 && s == 1 && i == 4) continue;
            int split = d->split;
            if (emb_dim0 && i == 0) split = 0;
            int64_t r = d->rows, c = d->cols ? d->cols : d->rows;
            int64_t pr = split == 0 ? r / S : r, pc = split == 1 ? c / S : c;
            if (!d->cols) pr = 1;
            if (spoil == 3 && s == 1 && i == 7) pr -= 1;
            data[n] = malloc((size_t)(pr * pc) * 4);
            for (int64_t y = 0; y < pr; y++)
                for (int64_t x = 0; x < pc; x++) {
                    int64_t gr = split == 0 ? s * pr + y : y, gc = split == 1 ? s * pc + x : x;
                    float v = d->cols ? tval((int)i, gr, gc) : tval((int)i, 0, gc);
                    if (spoil == 2 && s == 1 && i == 11 && x == 3) v += 1;
                    data[n][y * pc + x] = v;
                }
            snprintf(keys[n], sizeof keys[n], "%zu", i);
            ts[n] = (tspec){d->meta, spoil == 4 && s == 1 && i == 5 ? "HalfStorage"
                                                                    : "FloatStorage",
                            keys[n], pr * pc, 0, d->cols ? 2 : 1, {0}, {0}};
            if (d->cols) { ts[n].dims[0] = pr; ts[n].dims[1] = pc; }
            else ts[n].dims[0] = pc;
            contiguous(&ts[n]);
            st[n] = (storage){keys[n], data[n], (size_t)(pr * pc) * 4};
            n++;
        }
        buf pkl = pk_state_dict(ts, n);
        char *p = tu_fmt("%s/consolidated.%02d.pth", dir, s);
        char *arch = tu_fmt("consolidated.%02d", s);
        write_pth(p, arch, &pkl, st, n, s == 0);
        free(p); free(arch); free(pkl.p);
        for (size_t i = 0; i < n; i++) free(data[i]);
    }
}

static const cv_tensor *src_find(const cv_source *s, const char *name)
{
    for (size_t i = 0; i < s->n_tensors; i++)
        if (!strcmp(s->tensors[i].name, name)) return &s->tensors[i];
    return NULL;
}

static void test_meta_merge(void **state)
{
    (void)state;
    for (int S = 1; S <= 2; S++)
        for (int e0 = 0; e0 < 2; e0++) {
            char *dir = tu_tmpdir();
            write_tiny_meta(dir, S, 0, e0);
            cv_source *s;
            lpk_error err = {0};
            assert_int_equal(cv_meta_open(dir, NULL, &s, &err), 0);
            assert_int_equal(s->n_tensors, NTINY - 1);
            for (size_t i = 0; i + 1 < NTINY; i++) {
                const tdef *d = &tiny[i];
                const cv_tensor *t = NULL;
                for (size_t k = 0; k < s->n_tensors; k++)
                    if (!strcmp(s->tensors[k].src_name, d->meta)) t = &s->tensors[k];
                assert_non_null(t);
                assert_int_equal(t->dtype, LPK_TYPE_F32);
                int64_t rows = d->cols ? d->rows : 1, cols = d->cols ? d->cols : d->rows;
                assert_int_equal(t->dims[0], d->cols ? rows : cols);
                if (d->cols) assert_int_equal(t->dims[1], cols);
                float *got = malloc((size_t)(rows * cols) * 4);
                /* read in two pieces, the second starting mid-tensor */
                int64_t half = rows / 2;
                assert_int_equal(s->ops->read_rows(s, t, 0, half, got, &err), 0);
                assert_int_equal(s->ops->read_rows(s, t, half, rows - half, got + half * cols,
                                                   &err), 0);
                for (int64_t r = 0; r < rows; r++)
                    for (int64_t c = 0; c < cols; c++)
                        assert_true(got[r * cols + c] == tval((int)i, r, c));
                s->ops->release(s, t);
                free(got);
            }
            const lpk_meta *m = s->meta;
            uint32_t u;
            float f;
            assert_int_equal(lpk_meta_get_u32(m, "llama.feed_forward_length", &u), 0);
            assert_int_equal(u, TF);
            assert_int_equal(lpk_meta_get_u32(m, "llama.vocab_size", &u), 0);
            assert_int_equal(u, TV);
            assert_int_equal(lpk_meta_get_u32(m, "llama.attention.head_count_kv", &u), 0);
            assert_int_equal(u, TH);
            assert_int_equal(lpk_meta_get_u32(m, "llama.context_length", &u), 0);
            /* norm_eps 1e-6, no Llama 3 vocabulary: a LLaMA 1 release (cv_meta.c) */
            assert_int_equal(u, 2048);
            assert_int_equal(lpk_meta_get_f32(m, "llama.rope.freq_base", &f), 0);
            assert_true(f == 10000.0f);
            assert_int_equal(lpk_meta_get_f32(m, "llama.attention.layer_norm_rms_epsilon", &f),
                             0);
            assert_true(f == 1e-6f);
            assert_string_equal(lpk_meta_get_str(m, "llama.rope.scaling.type"), "llama3");
            assert_int_equal(lpk_meta_get_f32(m, "llama.rope.scaling.factor", &f), 0);
            assert_true(f == 8.0f);
            assert_int_equal(lpk_meta_get_u32(m, "llama.rope.scaling.original_context_length",
                                              &u), 0);
            assert_int_equal(u, 8192);
            assert_int_equal(s->n_skipped, 1);
            assert_string_equal(s->skipped[0], "rope.freqs");
            s->ops->close(s);
            tu_rmtree(dir);
            free(dir);
        }
    /* --context-length wins */
    char *dir = tu_tmpdir();
    write_tiny_meta(dir, 1, 0, 0);
    cv_torch_opts o = {.context_length = 777};
    cv_source *s;
    lpk_error err = {0};
    assert_int_equal(cv_meta_open(dir, &o, &s, &err), 0);
    uint32_t u;
    assert_int_equal(lpk_meta_get_u32(s->meta, "llama.context_length", &u), 0);
    assert_int_equal(u, 777);
    s->ops->close(s);
    tu_rmtree(dir);
    free(dir);
}

static void test_meta_bad_shards(void **state)
{
    (void)state;
    static const struct { int spoil; int status; const char *needle; } cases[] = {
        {1, LPK_ECORRUPT, "shards disagree: 'layers.0.attention.wk.weight' is in"},
        {2, LPK_ECORRUPT, "replicated tensor 'layers.0.ffn_norm.weight' differs between"},
        {3, LPK_ECORRUPT, "shards disagree: 'layers.0.feed_forward.w1.weight' is [12, 8]"},
        {4, LPK_ECORRUPT, "'layers.0.attention.wv.weight' is FloatStorage"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *dir = tu_tmpdir();
        write_tiny_meta(dir, 2, cases[i].spoil, 0);
        cv_source *s = NULL;
        lpk_error err = {0};
        int rc = cv_meta_open(dir, NULL, &s, &err);
        if (rc != cases[i].status || !strstr(err.msg, cases[i].needle) ||
            !strstr(err.msg, "consolidated.01.pth"))
            fail_msg("case %zu: got %d '%s'", i, rc, err.msg);
        assert_null(s);
        tu_rmtree(dir);
        free(dir);
    }
    /* a gap in the shard numbering */
    char *dir = tu_tmpdir();
    write_tiny_meta(dir, 2, 0, 0);
    char *a = tu_fmt("%s/consolidated.01.pth", dir), *b = tu_fmt("%s/consolidated.02.pth", dir);
    assert_int_equal(rename(a, b), 0);
    cv_source *s = NULL;
    lpk_error err = {0};
    assert_int_equal(cv_meta_open(dir, NULL, &s, &err), LPK_ENOTFOUND);
    assert_non_null(strstr(err.msg, "consolidated.01.pth is missing"));
    free(a); free(b);
    tu_rmtree(dir);
    free(dir);
}

/* ---------------------------------------------------------------- shared models */
/* Independent HF safetensors reader for the comparisons: file bytes + JSON. */
typedef struct st_file {
    char *bytes;
    size_t n;
    json_t *hdr;
    size_t data0;
} st_file;

static void st_load(st_file *f, const char *path)
{
    f->bytes = tu_read_file(path, &f->n);
    assert_non_null(f->bytes);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)(uint8_t)f->bytes[i] << (8 * i);
    f->hdr = json_loadb(f->bytes + 8, hl, 0, NULL);
    assert_non_null(f->hdr);
    f->data0 = 8 + hl;
}

/* HF name for a canonical name (docs/MODEL.md table); *perm: 0 none, else head count. */
static void hf_name(const char *canon, char *out, size_t n, int *which)
{
    static const char *map[][2] = {
        {"attn_norm.weight", "input_layernorm.weight"}, {"attn_q.weight", "self_attn.q_proj.weight"},
        {"attn_k.weight", "self_attn.k_proj.weight"}, {"attn_v.weight", "self_attn.v_proj.weight"},
        {"attn_output.weight", "self_attn.o_proj.weight"},
        {"ffn_norm.weight", "post_attention_layernorm.weight"},
        {"ffn_gate.weight", "mlp.gate_proj.weight"}, {"ffn_down.weight", "mlp.down_proj.weight"},
        {"ffn_up.weight", "mlp.up_proj.weight"}};
    *which = 0;
    if (!strcmp(canon, "token_embd.weight")) snprintf(out, n, "model.embed_tokens.weight");
    else if (!strcmp(canon, "output_norm.weight")) snprintf(out, n, "model.norm.weight");
    else if (!strcmp(canon, "output.weight")) snprintf(out, n, "lm_head.weight");
    else {
        int l, used;
        assert_int_equal(sscanf(canon, "blk.%d.%n", &l, &used), 1);
        for (size_t i = 0; i < 9; i++)
            if (!strcmp(canon + used, map[i][0])) {
                snprintf(out, n, "model.layers.%d.%s", l, map[i][1]);
                if (i == 1) *which = 1;
                if (i == 2) *which = 2;
                return;
            }
        fail_msg("no HF name for %s", canon);
    }
}

/* Compares every tensor of a Meta source with the HF safetensors files (q/k
 * rows un-permuted here per docs/MODEL.md); output.weight, absent from a tied
 * HF checkpoint, is compared with the embedding. Returns the xxh3 of all
 * tensors' bytes in source order. */
static uint64_t compare_with_hf(cv_source *s, st_file *files, size_t nf, int n_head, int n_kv,
                                int hd)
{
    XXH3_state_t *x = XXH3_createState();
    XXH3_64bits_reset(x);
    for (size_t i = 0; i < s->n_tensors; i++) {
        const cv_tensor *t = &s->tensors[i];
        char hn[256];
        int which;
        hf_name(t->name, hn, sizeof hn, &which);
        json_t *e = NULL;
        st_file *f = NULL;
        for (size_t k = 0; k < nf && !e; k++)
            if ((e = json_object_get(files[k].hdr, hn))) f = &files[k];
        if (!e && !strcmp(t->name, "output.weight")) {
            hf_name("token_embd.weight", hn, sizeof hn, &which);
            for (size_t k = 0; k < nf && !e; k++)
                if ((e = json_object_get(files[k].hdr, hn))) f = &files[k];
        }
        if (!e) fail_msg("%s (%s) not in the HF files", t->name, hn);
        const char *dt = json_string_value(json_object_get(e, "dtype"));
        assert_int_equal(t->dtype, !strcmp(dt, "F32") ? LPK_TYPE_F32 : LPK_TYPE_BF16);
        json_t *off = json_object_get(e, "data_offsets");
        size_t b0 = (size_t)json_integer_value(json_array_get(off, 0));
        size_t b1 = (size_t)json_integer_value(json_array_get(off, 1));
        int64_t rows = t->n_dims == 2 ? t->dims[0] : 1;
        size_t rb = (b1 - b0) / (size_t)rows;
        uint8_t *got = malloc(b1 - b0);
        lpk_error err = {0};
        assert_int_equal(s->ops->read_rows(s, t, 0, rows, got, &err), 0);
        const uint8_t *hf = (const uint8_t *)f->bytes + f->data0 + b0;
        int heads = which == 1 ? n_head : n_kv;
        (void)heads;
        for (int64_t r = 0; r < rows; r++) {
            int64_t src = r;
            if (which) {  /* Meta row h*hd + 2j + t is HF row h*hd + t*hd/2 + j */
                int64_t h = r / hd, q = r % hd;
                src = h * hd + (q % 2) * (hd / 2) + q / 2;
            }
            if (memcmp(got + (size_t)r * rb, hf + (size_t)src * rb, rb))
                fail_msg("%s row %lld differs from HF %s", t->name, (long long)r, hn);
        }
        XXH3_64bits_update(x, got, b1 - b0);
        s->ops->release(s, t);
        free(got);
    }
    uint64_t h = XXH3_64bits_digest(x);
    XXH3_freeState(x);
    return h;
}

static void test_shared_stories260k(void **state)
{
    (void)state;
    TU_NEED_SHARED(meta, "models/stories260K/meta");
    char *mdir = strdup(meta);
    TU_NEED_SHARED(hfp, "models/stories260K/hf/model.safetensors");
    st_file f;
    st_load(&f, hfp);
    cv_source *s;
    lpk_error err = {0};
    assert_int_equal(cv_meta_open(mdir, NULL, &s, &err), 0);
    assert_int_equal(s->n_tensors, 3 + 5 * 9);
    assert_non_null(src_find(s, "output.weight"));  /* Meta stores the copy */
    compare_with_hf(s, &f, 1, 8, 4, 8);
    uint32_t u;
    assert_int_equal(lpk_meta_get_u32(s->meta, "llama.context_length", &u), 0);
    assert_int_equal(u, 512);  /* max_seq_len */
    assert_int_equal(lpk_meta_get_u32(s->meta, "llama.feed_forward_length", &u), 0);
    assert_int_equal(u, 172);
    assert_int_equal(lpk_meta_get_u32(s->meta, "llama.attention.head_count_kv", &u), 0);
    assert_int_equal(u, 4);
    assert_int_equal(s->n_skipped, 0);
    s->ops->close(s);
    json_decref(f.hdr);
    free(f.bytes);
    free(mdir);
}

static void test_shared_llama2_20m(void **state)
{
    (void)state;
    TU_NEED_SHARED(meta, "models/llama2-20m/meta");
    char *mdir = strdup(meta);
    TU_NEED_SHARED(hf, "models/llama2-20m/hf");
    char *hdir = strdup(hf);
    st_file f[2];
    for (int i = 0; i < 2; i++) {
        char *p = tu_fmt("%s/model-0000%d-of-00002.safetensors", hdir, i + 1);
        st_load(&f[i], p);
        free(p);
    }
    cv_source *s;
    lpk_error err = {0};
    assert_int_equal(cv_meta_open(mdir, NULL, &s, &err), 0);
    assert_int_equal(s->n_tensors, 3 + 6 * 9);
    compare_with_hf(s, f, 2, 8, 4, 32);
    uint32_t u;
    float fl;
    assert_int_equal(lpk_meta_get_u32(s->meta, "llama.vocab_size", &u), 0);
    assert_int_equal(u, 32000);
    assert_int_equal(lpk_meta_get_u32(s->meta, "llama.context_length", &u), 0);
    assert_int_equal(u, 4096);
    assert_int_equal(lpk_meta_get_u32(s->meta, "llama.attention.head_count_kv", &u), 0);
    assert_int_equal(u, 4);
    assert_int_equal(lpk_meta_get_u32(s->meta, "llama.feed_forward_length", &u), 0);
    assert_int_equal(u, 768);
    assert_int_equal(lpk_meta_get_f32(s->meta, "llama.rope.freq_base", &fl), 0);
    assert_true(fl == 10000.0f);
    assert_int_equal(s->n_skipped, 1);
    assert_string_equal(s->skipped[0], "rope.freqs");
    s->ops->close(s);
    for (int i = 0; i < 2; i++) {
        json_decref(f[i].hdr);
        free(f[i].bytes);
    }
    free(mdir);
    free(hdir);
}

/* ---------------------------------------------------------------- end to end (CLI) */
static void same_lpk(const char *a, const char *b)
{
    char why[512];
    if (tu_lpk_same_tensors(a, b, why, sizeof why)) fail_msg("%s vs %s: %s", a, b, why);
}

static void test_cli_meta_equals_hf(void **state)
{
    (void)state;
    TU_NEED_SHARED(models, "models");
    char *mdir = strdup(models);
    char *dir = tu_tmpdir();
    const char *names[] = {"stories260K", "llama2-20m"};
    for (int i = 0; i < 2; i++) {
        char *out = NULL;
        int rc = tu_llmpack(&out, "convert '%s/%s/meta' -o '%s/m.lpk'", mdir, names[i], dir);
        if (rc) fail_msg("%s", out);
        free(out);
        rc = tu_llmpack(&out, "convert '%s/%s/hf' -o '%s/h.lpk'", mdir, names[i], dir);
        if (rc) fail_msg("%s", out);
        free(out);
        char *a = tu_fmt("%s/m.lpk", dir), *b = tu_fmt("%s/h.lpk", dir);
        same_lpk(a, b);
        unlink(a); unlink(b);
        free(a); free(b);
    }
    tu_rmtree(dir);
    free(dir);
    free(mdir);
}

/* pytorch_model*.bin written here from the HF safetensors of a model (plus a
 * rotary_emb.inv_freq buffer, as old HF checkpoints carry), converted, and
 * compared with the safetensors conversion. */
static void write_hf_bins(const char *hf, const char *dir, int n_files)
{
    st_file f[2];
    char *single = tu_fmt("%s/model.safetensors", hf);
    int nsf = tu_exists(single) ? 1 : 2;
    free(single);
    for (int i = 0; i < nsf; i++) {
        char *p = nsf == 1 ? tu_fmt("%s/model.safetensors", hf)
                           : tu_fmt("%s/model-0000%d-of-00002.safetensors", hf, i + 1);
        st_load(&f[i], p);
        free(p);
    }
    tspec ts[2][200];
    storage st[2][200];
    char keys[2][200][8];
    size_t n[2] = {0, 0};
    float inv[4] = {1, 0.1f, 0.01f, 0.001f};
    json_t *wmap = json_object();
    size_t total = 0;
    for (int i = 0; i < nsf; i++) {
        const char *k;
        json_t *e;
        json_object_foreach(f[i].hdr, k, e) {
            if (!strcmp(k, "__metadata__")) continue;
            int o = (int)(total++ % (size_t)n_files);
            size_t j = n[o]++;
            assert_true(j < 199);
            const char *dt = json_string_value(json_object_get(e, "dtype"));
            json_t *shape = json_object_get(e, "shape"), *off = json_object_get(e, "data_offsets");
            size_t b0 = (size_t)json_integer_value(json_array_get(off, 0));
            size_t b1 = (size_t)json_integer_value(json_array_get(off, 1));
            snprintf(keys[o][j], 8, "%zu", j);
            tspec *t = &ts[o][j];
            *t = (tspec){k, !strcmp(dt, "F32") ? "FloatStorage"
                            : !strcmp(dt, "F16") ? "HalfStorage" : "BFloat16Storage",
                         keys[o][j], 0, 0, (int)json_array_size(shape), {0}, {0}};
            int64_t ne = 1;
            for (int d = 0; d < t->nd; d++) {
                t->dims[d] = json_integer_value(json_array_get(shape, (size_t)d));
                ne *= t->dims[d];
            }
            t->numel = ne;
            contiguous(t);
            st[o][j] = (storage){keys[o][j], f[i].bytes + f[i].data0 + b0, b1 - b0};
            char *fname = n_files == 1 ? tu_fmt("pytorch_model.bin")
                                       : tu_fmt("pytorch_model-0000%d-of-00002.bin", o + 1);
            json_object_set_new(wmap, k, json_string(fname));
            free(fname);
        }
    }
    /* the buffer HF's old LlamaRotaryEmbedding saved */
    size_t j = n[0]++;
    snprintf(keys[0][j], 8, "%zu", j);
    ts[0][j] = (tspec){"model.layers.0.self_attn.rotary_emb.inv_freq", "FloatStorage",
                       keys[0][j], 4, 0, 1, {4}, {1}};
    st[0][j] = (storage){keys[0][j], inv, sizeof inv};
    json_object_set_new(wmap, ts[0][j].name, json_string(n_files == 1 ? "pytorch_model.bin"
                                                         : "pytorch_model-00001-of-00002.bin"));
    for (int o = 0; o < n_files; o++) {
        buf pkl = pk_state_dict(ts[o], n[o]);
        char *p = n_files == 1 ? tu_fmt("%s/pytorch_model.bin", dir)
                               : tu_fmt("%s/pytorch_model-0000%d-of-00002.bin", dir, o + 1);
        write_pth(p, "archive", &pkl, st[o], n[o], 1);
        free(p);
        free(pkl.p);
    }
    if (n_files > 1) {
        json_t *idx = json_pack("{s:{s:i}, s:o}", "metadata", "total_size", 0, "weight_map", wmap);
        char *ip = tu_fmt("%s/pytorch_model.bin.index.json", dir);
        assert_int_equal(json_dump_file(idx, ip, 0), 0);
        json_decref(idx);
        free(ip);
    } else {
        json_decref(wmap);
    }
    const char *copy[] = {"config.json", "tokenizer.model"};
    for (int i = 0; i < 2; i++) {
        char *a = tu_fmt("%s/%s", hf, copy[i]), *b = tu_fmt("%s/%s", dir, copy[i]);
        assert_int_equal(symlink(a, b), 0);
        free(a); free(b);
    }
    for (int i = 0; i < nsf; i++) {
        json_decref(f[i].hdr);
        free(f[i].bytes);
    }
}

/* The demo model (f16) always; ../shared's stories260K (f32) and llama2-20m
 * (bf16, two shards) when present. */
static void test_cli_hf_bin(void **state)
{
    (void)state;
    char *hfs[3] = {realpath("examples/stories260K", NULL)};  /* symlink targets */
    const char *more[] = {"models/stories260K/hf", "models/llama2-20m/hf"};
    int nhf = 1;
    for (int i = 0; i < 2; i++) {
        const char *p = tu_shared(more[i]);
        if (p) hfs[nhf++] = realpath(p, NULL);
    }
    if (nhf < 3) print_message("NOTE: ../shared/models not found: only the demo model checked\n");
    char *dir = tu_tmpdir();
    for (int i = 0; i < nhf; i++)
        for (int nf = 1; nf <= 2; nf++) {
            const char *hf = hfs[i];
            assert_non_null(hf);
            char *bins = tu_fmt("%s/bins", dir);
            assert_int_equal(mkdir(bins, 0700), 0);
            write_hf_bins(hf, bins, nf);
            char *out = NULL;
            int rc = tu_llmpack(&out, "convert '%s' -o '%s/b.lpk' --json", bins, dir);
            if (rc) fail_msg("%s", out);
            assert_non_null(strstr(out, "\"source_format\": \"hf-pytorch\""));
            assert_non_null(strstr(out, "model.layers.0.self_attn.rotary_emb.inv_freq"));
            free(out);
            rc = tu_llmpack(&out, "convert '%s' -o '%s/h.lpk'", hf, dir);
            if (rc) fail_msg("%s", out);
            free(out);
            char *a = tu_fmt("%s/b.lpk", dir), *b = tu_fmt("%s/h.lpk", dir);
            same_lpk(a, b);
            unlink(a); unlink(b);
            free(a); free(b);
            tu_rmtree(bins);
            free(bins);
        }
    for (int i = 0; i < nhf; i++) free(hfs[i]);
    tu_rmtree(dir);
    free(dir);
}

/* Crafted bad inputs through `llmpack convert`: exit 3 and a message that says
 * what is wrong. */
static void expect_exit3(const char *src, const char *outdir, const char *needle)
{
    char *out = NULL;
    int rc = tu_llmpack(&out, "convert '%s' -o '%s/x.lpk'", src, outdir);
    if (rc != 3 || !out || !strstr(out, needle))
        fail_msg("convert %s: exit %d, output '%s', wanted exit 3 and '%s'", src, rc,
                 out ? out : "", needle);
    free(out);
    char *x = tu_fmt("%s/x.lpk", outdir);
    assert_false(tu_exists(x));
    free(x);
}

static void test_cli_bad_inputs(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    /* Meta folders with one bad shard file each */
    const char *params = "{\"dim\": 8, \"multiple_of\": 4, \"n_heads\": 2, \"n_layers\": 1, "
                         "\"norm_eps\": 1e-06, \"vocab_size\": -1}";
    float s0[12] = {0};
    storage st[1] = {{"0", s0, sizeof s0}};
    struct badcase { const char *name; buf pkl; const char *needle; } bad[3];
    /* os.system */
    buf b = {0};
    b_u8(&b, 0x80); b_u8(&b, 2); b_u8(&b, '}'); pk_str(&b, "x");
    pk_global(&b, "os", "system"); pk_str(&b, "touch /tmp/llmpack-pwned"); b_u8(&b, 0x85);
    b_u8(&b, 'R'); b_u8(&b, 's'); b_u8(&b, '.');
    bad[0] = (struct badcase){"evil", b, "'os.system'"};
    /* unknown opcode */
    buf c = {0};
    b_u8(&c, 0x80); b_u8(&c, 2); b_u8(&c, '}'); b_u8(&c, 'i'); tu_buf_put(&c, "os\nsystem\n", 10);
    b_u8(&c, '.');
    bad[1] = (struct badcase){"opcode", c, "pickle opcode 0x69"};
    /* non-contiguous */
    tspec tr = {"layers.0.attention.wq.weight", "FloatStorage", "0", 12, 0, 2, {3, 4}, {1, 3}};
    bad[2] = (struct badcase){"strides", pk_state_dict(&tr, 1),
                              "'layers.0.attention.wq.weight' is not contiguous"};
    for (int i = 0; i < 3; i++) {
        char *m = tu_fmt("%s/%s", dir, bad[i].name);
        assert_int_equal(mkdir(m, 0700), 0);
        char *pp = tu_fmt("%s/params.json", m), *pth = tu_fmt("%s/consolidated.00.pth", m);
        assert_int_equal(tu_write_file(pp, params, strlen(params)), 0);
        write_pth(pth, "consolidated.00", &bad[i].pkl, st, 1, 0);
        expect_exit3(m, dir, bad[i].needle);
        free(bad[i].pkl.p);
        free(pp); free(m);
        /* legacy format and truncated zip: same folder, other shard bytes */
        if (i == 2) {
            static const uint8_t legacy[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                             0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};
            assert_int_equal(tu_write_file(pth, legacy, sizeof legacy), 0);
            char *m2 = tu_fmt("%s/strides", dir);
            expect_exit3(m2, dir, "legacy torch format, re-save with torch>=1.6");
            buf ok = pk_state_dict(&tr, 1);
            write_pth(pth, "consolidated.00", &ok, st, 1, 0);
            free(ok.p);
            size_t n;
            char *whole = tu_read_file(pth, &n);
            assert_int_equal(tu_write_file(pth, whole, n / 2), 0);
            expect_exit3(m2, dir, "truncated");
            free(whole);
            free(m2);
        }
        free(pth);
    }
    assert_false(tu_exists("/tmp/llmpack-pwned"));
    /* shards that disagree, norms that differ */
    for (int spoil = 1; spoil <= 2; spoil++) {
        char *m = tu_fmt("%s/shards%d", dir, spoil);
        assert_int_equal(mkdir(m, 0700), 0);
        write_tiny_meta(m, 2, spoil, 0);
        expect_exit3(m, dir, spoil == 1 ? "shards disagree: 'layers.0.attention.wk.weight'"
                                        : "replicated tensor 'layers.0.ffn_norm.weight' "
                                          "differs between");
        free(m);
    }
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pickle_state_dict),
        cmocka_unit_test(test_pickle_protocol4),
        cmocka_unit_test(test_pickle_malicious),
        cmocka_unit_test(test_pickle_bad_opcodes),
        cmocka_unit_test(test_zip_records),
        cmocka_unit_test(test_torch_file),
        cmocka_unit_test(test_torch_bad_files),
        cmocka_unit_test(test_torch_cpython_pickles),
        cmocka_unit_test(test_meta_merge),
        cmocka_unit_test(test_meta_bad_shards),
        cmocka_unit_test(test_shared_stories260k),
        cmocka_unit_test(test_shared_llama2_20m),
        cmocka_unit_test(test_cli_meta_equals_hf),
        cmocka_unit_test(test_cli_hf_bin),
        cmocka_unit_test(test_cli_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
