/* A restricted unpickler for torch.save state dicts.
 *
 * It interprets the binary pickle opcodes that torch.save emits (protocol 2,
 * plus the few protocol 3/4 additions) on a private object model: no Python
 * object is ever created, nothing is called. GLOBAL may only name the tensor
 * rebuild functions, storage classes and OrderedDict; REDUCE applies our own
 * implementation of those. Every length is checked against the bytes left,
 * memo indices against the pickle size, and every object the machine creates
 * costs at least one input byte, so memory is bounded by O(pickle size). */
#include "cv_torch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- storage types */
static const struct {
    const char *name;
    int size;
    int lpk;
} stypes[CV_PT_STYPE_COUNT] = {
    [CV_PT_FLOAT] = {"FloatStorage", 4, LPK_TYPE_F32},
    [CV_PT_HALF] = {"HalfStorage", 2, LPK_TYPE_F16},
    [CV_PT_BFLOAT16] = {"BFloat16Storage", 2, LPK_TYPE_BF16},
    [CV_PT_DOUBLE] = {"DoubleStorage", 8, -1},
    [CV_PT_LONG] = {"LongStorage", 8, -1},
    [CV_PT_INT] = {"IntStorage", 4, -1},
    [CV_PT_SHORT] = {"ShortStorage", 2, -1},
    [CV_PT_CHAR] = {"CharStorage", 1, -1},
    [CV_PT_BYTE] = {"ByteStorage", 1, -1},
    [CV_PT_BOOL] = {"BoolStorage", 1, -1},
    [CV_PT_UNTYPED] = {"UntypedStorage", 1, -1},
};

const char *cv_pt_stype_name(int s) { return s >= 0 && s < CV_PT_STYPE_COUNT ? stypes[s].name : "?"; }
int cv_pt_stype_size(int s) { return s >= 0 && s < CV_PT_STYPE_COUNT ? stypes[s].size : 0; }
int cv_pt_stype_lpk(int s) { return s >= 0 && s < CV_PT_STYPE_COUNT ? stypes[s].lpk : -1; }

/* ---------------------------------------------------------------- globals */
enum pk_global {
    G_REBUILD_V2,     /* torch._utils._rebuild_tensor_v2 */
    G_REBUILD,        /* torch._utils._rebuild_tensor */
    G_PARAM,          /* torch._utils._rebuild_parameter(_with_state) */
    G_FROM_TYPE,      /* torch._tensor._rebuild_from_type_v2 */
    G_TYPE,           /* torch.Tensor, torch.nn.parameter.Parameter: a type tag */
    G_ODICT,          /* collections.OrderedDict */
    G_STORAGE         /* torch.XxxStorage; stype says which */
};

static const struct {
    const char *mod, *name;
    int id;
} whitelist[] = {
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_V2},
    {"torch._utils", "_rebuild_tensor", G_REBUILD},
    {"torch._utils", "_rebuild_parameter", G_PARAM},
    {"torch._utils", "_rebuild_parameter_with_state", G_PARAM},
    {"torch._tensor", "_rebuild_from_type_v2", G_FROM_TYPE},
    {"torch", "Tensor", G_TYPE},
    {"torch.nn.parameter", "Parameter", G_TYPE},
    {"collections", "OrderedDict", G_ODICT},
};

/* ---------------------------------------------------------------- objects */
enum pk_kind { K_NONE, K_BOOL, K_INT, K_FLOAT, K_STR, K_TUPLE, K_LIST, K_DICT, K_GLOBAL,
               K_STORAGE, K_TENSOR };

static const char *const kind_names[] = {"None", "bool", "int", "float", "str", "tuple",
                                         "list", "dict", "global", "storage", "tensor"};

typedef struct pk_obj pk_obj;
struct pk_obj {
    int kind;
    union {
        int64_t i;
        double f;
        struct { const char *p; size_t n; } s;          /* into the pickle */
        struct { pk_obj **v; size_t n, cap; } seq;        /* tuple, list, dict (2n) */
        struct { int id, stype; const char *mod, *name; } g;
        struct { int stype; const char *key; size_t keylen; int64_t numel; } st;
        struct {
            pk_obj *storage;
            int64_t offset;
            int n_dims;
            int64_t dims[CV_PK_MAX_DIMS], strides[CV_PK_MAX_DIMS];
        } t;
    } u;
};

typedef struct pk_vm {
    const uint8_t *buf;
    size_t n, pos, op_pos;
    const char *path;
    lpk_error *err;
    pk_obj **all;        /* every object, for freeing */
    size_t n_all, cap_all;
    pk_obj **stack;
    size_t sp, cap_stack;
    size_t *marks;
    size_t n_marks, cap_marks;
    pk_obj **memo;
    size_t cap_memo, memo_used;
} pk_vm;

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

static int vm_nomem(pk_vm *vm)
{
    return lpk_err(vm->err, LPK_ENOMEM, "%s: out of memory reading the pickle", vm->path);
}

static int vm_bad(pk_vm *vm, const char *what)
{
    return lpk_err(vm->err, LPK_ECORRUPT, "%s: malformed pickle at offset %zu: %s", vm->path,
                   vm->op_pos, what);
}

static pk_obj *obj_new(pk_vm *vm, int kind)
{
    if (grow((void **)&vm->all, &vm->cap_all, vm->n_all + 1, sizeof *vm->all)) return NULL;
    pk_obj *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->kind = kind;
    vm->all[vm->n_all++] = o;
    return o;
}

static int seq_add(pk_obj *o, pk_obj *v)
{
    if (grow((void **)&o->u.seq.v, &o->u.seq.cap, o->u.seq.n + 1, sizeof *o->u.seq.v)) return -1;
    o->u.seq.v[o->u.seq.n++] = v;
    return 0;
}

static int push(pk_vm *vm, pk_obj *o)
{
    if (!o) return vm_nomem(vm);
    /* Each push is paid for by at least one opcode byte. */
    if (vm->sp >= vm->n) return vm_bad(vm, "stack deeper than the pickle is long");
    if (grow((void **)&vm->stack, &vm->cap_stack, vm->sp + 1, sizeof *vm->stack))
        return vm_nomem(vm);
    vm->stack[vm->sp++] = o;
    return 0;
}

static pk_obj *pop(pk_vm *vm)
{
    size_t floor = vm->n_marks ? vm->marks[vm->n_marks - 1] : 0;
    if (vm->sp <= floor) {
        vm_bad(vm, "stack underflow");
        return NULL;
    }
    return vm->stack[--vm->sp];
}

static pk_obj *top(pk_vm *vm)
{
    size_t floor = vm->n_marks ? vm->marks[vm->n_marks - 1] : 0;
    if (vm->sp <= floor) {
        vm_bad(vm, "stack underflow");
        return NULL;
    }
    return vm->stack[vm->sp - 1];
}

/* Pops everything above the topmost mark into a new sequence object. */
static pk_obj *pop_mark(pk_vm *vm, int kind)
{
    if (!vm->n_marks) {
        vm_bad(vm, "no mark on the stack");
        return NULL;
    }
    size_t m = vm->marks[--vm->n_marks];
    pk_obj *o = obj_new(vm, kind);
    if (!o) {
        vm_nomem(vm);
        return NULL;
    }
    for (size_t i = m; i < vm->sp; i++)
        if (seq_add(o, vm->stack[i])) {
            vm_nomem(vm);
            return NULL;
        }
    vm->sp = m;
    return o;
}

/* ---------------------------------------------------------------- input */
static int need(pk_vm *vm, size_t k)
{
    if (vm->n - vm->pos < k)
        return lpk_err(vm->err, LPK_ETRUNC,
                       "%s: pickle ends inside the opcode at offset %zu (needs %zu more bytes)",
                       vm->path, vm->op_pos, k - (vm->n - vm->pos));
    return 0;
}

static uint64_t rd_le(pk_vm *vm, size_t k)
{
    uint64_t v = lpk_rdn(vm->buf + vm->pos, (unsigned)k);
    vm->pos += k;
    return v;
}

/* One newline-terminated line (GLOBAL's operands), at most 256 bytes. */
static int rd_line(pk_vm *vm, const char **p, size_t *len)
{
    size_t lim = vm->n - vm->pos < 257 ? vm->n - vm->pos : 257;
    const uint8_t *nl = memchr(vm->buf + vm->pos, '\n', lim);
    if (!nl) return vm_bad(vm, "GLOBAL operand is not a newline-terminated name");
    *p = (const char *)vm->buf + vm->pos;
    *len = (size_t)(nl - (vm->buf + vm->pos));
    vm->pos += *len + 1;
    return 0;
}

/* ---------------------------------------------------------------- globals */
static int stype_from_name(const char *p, size_t n)
{
    for (int s = 0; s < CV_PT_STYPE_COUNT; s++)
        if (strlen(stypes[s].name) == n && !memcmp(stypes[s].name, p, n)) return s;
    return -1;
}

static int is_name(const char *p, size_t n, const char *want)
{
    return strlen(want) == n && !memcmp(p, want, n);
}

static int push_global(pk_vm *vm, const char *mod, size_t mn, const char *name, size_t nn)
{
    int id = -1, stype = -1;
    const char *wm = NULL, *wn = NULL;
    for (size_t i = 0; i < sizeof whitelist / sizeof whitelist[0]; i++)
        if (is_name(mod, mn, whitelist[i].mod) && is_name(name, nn, whitelist[i].name)) {
            id = whitelist[i].id;
            wm = whitelist[i].mod;
            wn = whitelist[i].name;
        }
    if (id < 0 && is_name(mod, mn, "torch") && (stype = stype_from_name(name, nn)) >= 0) {
        id = G_STORAGE;
        wm = "torch";
        wn = stypes[stype].name;
    }
    if (id < 0) {
        /* Print the name safely: it is untrusted bytes. */
        char shown[160];
        size_t k = 0;
        for (size_t i = 0; i < mn + 1 + nn && k + 5 < sizeof shown; i++) {
            unsigned char c = i < mn ? (unsigned char)mod[i]
                              : i == mn ? '.' : (unsigned char)name[i - mn - 1];
            if (c >= 0x20 && c < 0x7f) shown[k++] = (char)c;
            else k += (size_t)snprintf(shown + k, sizeof shown - k, "\\x%02x", c);
        }
        shown[k] = 0;
        return lpk_err(vm->err, LPK_EUNSUPPORTED,
                       "%s: pickle names the global '%s' at offset %zu, which is not allowed "
                       "(only torch tensor/storage rebuilding is; nothing was executed)",
                       vm->path, shown, vm->op_pos);
    }
    pk_obj *o = obj_new(vm, K_GLOBAL);
    if (o) {
        o->u.g.id = id;
        o->u.g.stype = stype;
        o->u.g.mod = wm;
        o->u.g.name = wn;
    }
    return push(vm, o);
}

/* ---------------------------------------------------------------- REDUCE */
static int int_tuple(pk_vm *vm, const pk_obj *o, int64_t *v, int *n, const char *what)
{
    if (o->kind != K_TUPLE && o->kind != K_LIST) return vm_bad(vm, what);
    if (o->u.seq.n > CV_PK_MAX_DIMS)
        return lpk_err(vm->err, LPK_EUNSUPPORTED, "%s: tensor with %zu dims at offset %zu",
                       vm->path, o->u.seq.n, vm->op_pos);
    for (size_t i = 0; i < o->u.seq.n; i++) {
        if (o->u.seq.v[i]->kind != K_INT) return vm_bad(vm, what);
        v[i] = o->u.seq.v[i]->u.i;
    }
    *n = (int)o->u.seq.n;
    return 0;
}

static int apply(pk_vm *vm, const pk_obj *fn, const pk_obj *args, pk_obj **res)
{
    if (args->kind != K_TUPLE) return vm_bad(vm, "REDUCE arguments are not a tuple");
    pk_obj *const *a = args->u.seq.v;
    size_t na = args->u.seq.n;
    switch (fn->u.g.id) {
    case G_REBUILD_V2:
    case G_REBUILD: {
        /* (storage, storage_offset, size, stride, ...) */
        if (na < 4 || a[0]->kind != K_STORAGE || a[1]->kind != K_INT)
            return vm_bad(vm, "_rebuild_tensor arguments are not (storage, offset, size, "
                              "stride, ...)");
        pk_obj *t = obj_new(vm, K_TENSOR);
        if (!t) return vm_nomem(vm);
        int nd, ns;
        int rc = int_tuple(vm, a[2], t->u.t.dims, &nd, "tensor size is not a tuple of ints");
        if (rc) return rc;
        rc = int_tuple(vm, a[3], t->u.t.strides, &ns, "tensor stride is not a tuple of ints");
        if (rc) return rc;
        if (nd != ns) return vm_bad(vm, "tensor size and stride differ in length");
        t->u.t.n_dims = nd;
        t->u.t.storage = a[0];
        t->u.t.offset = a[1]->u.i;
        *res = t;
        return 0;
    }
    case G_PARAM:
        if (na < 1 || a[0]->kind != K_TENSOR)
            return vm_bad(vm, "_rebuild_parameter argument is not a tensor");
        *res = a[0];
        return 0;
    case G_FROM_TYPE:
        /* (func, type, args, state): the type is only a tag for us. */
        if (na < 3 || a[0]->kind != K_GLOBAL || a[1]->kind != K_GLOBAL ||
            a[1]->u.g.id != G_TYPE)
            return vm_bad(vm, "_rebuild_from_type_v2 arguments are not (func, type, args, ...)");
        if (a[0]->u.g.id == G_FROM_TYPE) return vm_bad(vm, "_rebuild_from_type_v2 nested");
        return apply(vm, a[0], a[2], res);
    case G_ODICT:
        if (na != 0) return vm_bad(vm, "OrderedDict called with arguments");
        *res = obj_new(vm, K_DICT);
        return *res ? 0 : vm_nomem(vm);
    default:
        return lpk_err(vm->err, LPK_EUNSUPPORTED,
                       "%s: pickle calls %s.%s at offset %zu, which is not callable here",
                       vm->path, fn->u.g.mod, fn->u.g.name, vm->op_pos);
    }
}

/* BINPERSID: ('storage', torch.XxxStorage, key, location, numel). */
static int persistent_load(pk_vm *vm, const pk_obj *pid, pk_obj **res)
{
    if (pid->kind != K_TUPLE || pid->u.seq.n != 5)
        return vm_bad(vm, "persistent id is not a 5-tuple ('storage', type, key, location, "
                          "numel)");
    pk_obj *const *a = pid->u.seq.v;
    if (a[0]->kind != K_STR || !is_name(a[0]->u.s.p, a[0]->u.s.n, "storage"))
        return vm_bad(vm, "persistent id does not name a storage");
    if (a[1]->kind != K_GLOBAL || a[1]->u.g.id != G_STORAGE)
        return vm_bad(vm, "persistent id's storage type is not a torch storage class");
    if (a[2]->kind != K_STR || a[2]->u.s.n == 0 || a[2]->u.s.n >= sizeof(((cv_pk_tensor *)0)->key))
        return vm_bad(vm, "storage key is not a short string");
    for (size_t i = 0; i < a[2]->u.s.n; i++) {
        char c = a[2]->u.s.p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '_' || c == '-' || c == '.') || (c == '.' && i == 0))
            return vm_bad(vm, "storage key has characters other than [0-9A-Za-z_.-]");
    }
    if (a[4]->kind != K_INT || a[4]->u.i < 0) return vm_bad(vm, "storage size is not an int");
    pk_obj *o = obj_new(vm, K_STORAGE);
    if (!o) return vm_nomem(vm);
    o->u.st.stype = a[1]->u.g.stype;
    o->u.st.key = a[2]->u.s.p;
    o->u.st.keylen = a[2]->u.s.n;
    o->u.st.numel = a[4]->u.i;
    *res = o;
    return 0;
}

/* ---------------------------------------------------------------- the machine */
static int memo_put(pk_vm *vm, uint64_t idx)
{
    pk_obj *o = top(vm);
    if (!o) return vm->err ? vm->err->status : LPK_ECORRUPT;
    if (idx >= vm->n) return vm_bad(vm, "memo index larger than the pickle");
    if (idx >= vm->cap_memo) {
        size_t old = vm->cap_memo;
        if (grow((void **)&vm->memo, &vm->cap_memo, (size_t)idx + 1, sizeof *vm->memo))
            return vm_nomem(vm);
        memset(vm->memo + old, 0, (vm->cap_memo - old) * sizeof *vm->memo);
    }
    if (!vm->memo[idx]) vm->memo_used++;
    vm->memo[idx] = o;
    return 0;
}

static int memo_get(pk_vm *vm, uint64_t idx)
{
    if (idx >= vm->cap_memo || !vm->memo[idx]) return vm_bad(vm, "memo index was never set");
    return push(vm, vm->memo[idx]);
}

static int fail_status(pk_vm *vm)
{
    return vm->err && vm->err->status ? vm->err->status : LPK_ECORRUPT;
}

static int run(pk_vm *vm, pk_obj **result)
{
    int rc;
    pk_obj *o = NULL, *a, *b;
    while (vm->pos < vm->n) {
        vm->op_pos = vm->pos;
        uint8_t op = vm->buf[vm->pos++];
        switch (op) {
        case 0x80: /* PROTO */
            if ((rc = need(vm, 1))) return rc;
            if (vm->buf[vm->pos] < 2 || vm->buf[vm->pos] > 5)
                return lpk_err(vm->err, LPK_EUNSUPPORTED,
                               "%s: pickle protocol %u is not supported (2 to 5 are)", vm->path,
                               vm->buf[vm->pos]);
            vm->pos++;
            break;
        case 0x95: /* FRAME: a length hint only */
            if ((rc = need(vm, 8))) return rc;
            vm->pos += 8;
            break;
        case '.': /* STOP */
            if (vm->n_marks) return vm_bad(vm, "STOP with an open mark");
            if (!(*result = pop(vm))) return fail_status(vm);
            return 0;
        case '(': /* MARK */
            if (grow((void **)&vm->marks, &vm->cap_marks, vm->n_marks + 1, sizeof *vm->marks))
                return vm_nomem(vm);
            vm->marks[vm->n_marks++] = vm->sp;
            break;
        case '0': /* POP */
            if (!pop(vm)) return fail_status(vm);
            break;
        case '1': /* POP_MARK */
            if (!vm->n_marks) return vm_bad(vm, "POP_MARK without a mark");
            vm->sp = vm->marks[--vm->n_marks];
            break;
        case '2': /* DUP */
            if (!(o = top(vm))) return fail_status(vm);
            if ((rc = push(vm, o))) return rc;
            break;
        case 'N': /* NONE */
            if ((rc = push(vm, obj_new(vm, K_NONE)))) return rc;
            break;
        case 0x88: /* NEWTRUE */
        case 0x89: /* NEWFALSE */
            if (!(o = obj_new(vm, K_BOOL))) return vm_nomem(vm);
            o->u.i = op == 0x88;
            if ((rc = push(vm, o))) return rc;
            break;
        case 'J': /* BININT */
        case 'K': /* BININT1 */
        case 'M': /* BININT2 */ {
            size_t k = op == 'J' ? 4 : op == 'K' ? 1 : 2;
            if ((rc = need(vm, k))) return rc;
            uint64_t v = rd_le(vm, k);
            if (!(o = obj_new(vm, K_INT))) return vm_nomem(vm);
            o->u.i = op == 'J' ? (int64_t)(int32_t)(uint32_t)v : (int64_t)v;
            if ((rc = push(vm, o))) return rc;
            break;
        }
        case 0x8a: { /* LONG1: little-endian two's complement, n <= 8 bytes */
            if ((rc = need(vm, 1))) return rc;
            size_t k = vm->buf[vm->pos++];
            if (k > 8)
                return lpk_err(vm->err, LPK_EUNSUPPORTED,
                               "%s: pickle integer of %zu bytes at offset %zu (at most 8 "
                               "supported)", vm->path, k, vm->op_pos);
            if ((rc = need(vm, k))) return rc;
            uint64_t v = rd_le(vm, k);
            if (k > 0 && k < 8 && (v >> (8 * k - 1)) & 1) v |= ~(uint64_t)0 << (8 * k);
            if (!(o = obj_new(vm, K_INT))) return vm_nomem(vm);
            o->u.i = (int64_t)v;
            if ((rc = push(vm, o))) return rc;
            break;
        }
        case 'G': { /* BINFLOAT: big-endian double */
            if ((rc = need(vm, 8))) return rc;
            uint64_t v = 0;
            for (int i = 0; i < 8; i++) v = v << 8 | vm->buf[vm->pos + (size_t)i];
            vm->pos += 8;
            if (!(o = obj_new(vm, K_FLOAT))) return vm_nomem(vm);
            memcpy(&o->u.f, &v, 8);
            if ((rc = push(vm, o))) return rc;
            break;
        }
        case 'X':  /* BINUNICODE */
        case 0x8c: /* SHORT_BINUNICODE */
        case 0x8d: /* BINUNICODE8 */
        case 'U':  /* SHORT_BINSTRING */
        case 'T':  /* BINSTRING */
        case 'C':  /* SHORT_BINBYTES */
        case 'B':  /* BINBYTES */ {
            size_t k = op == 0x8c || op == 'U' || op == 'C' ? 1 : op == 0x8d ? 8 : 4;
            if ((rc = need(vm, k))) return rc;
            uint64_t len = rd_le(vm, k);
            if (len > vm->n - vm->pos)
                return lpk_err(vm->err, LPK_ETRUNC,
                               "%s: pickle string at offset %zu is %llu bytes, only %zu left",
                               vm->path, vm->op_pos, (unsigned long long)len, vm->n - vm->pos);
            if (!(o = obj_new(vm, K_STR))) return vm_nomem(vm);
            o->u.s.p = (const char *)vm->buf + vm->pos;
            o->u.s.n = (size_t)len;
            vm->pos += (size_t)len;
            if ((rc = push(vm, o))) return rc;
            break;
        }
        case ')': /* EMPTY_TUPLE */
            if ((rc = push(vm, obj_new(vm, K_TUPLE)))) return rc;
            break;
        case 't': /* TUPLE */
            if (!(o = pop_mark(vm, K_TUPLE))) return fail_status(vm);
            if ((rc = push(vm, o))) return rc;
            break;
        case 0x85: /* TUPLE1 */
        case 0x86: /* TUPLE2 */
        case 0x87: { /* TUPLE3 */
            size_t k = (size_t)(op - 0x84);
            size_t floor = vm->n_marks ? vm->marks[vm->n_marks - 1] : 0;
            if (vm->sp - floor < k) return vm_bad(vm, "stack underflow");
            if (!(o = obj_new(vm, K_TUPLE))) return vm_nomem(vm);
            for (size_t i = vm->sp - k; i < vm->sp; i++)
                if (seq_add(o, vm->stack[i])) return vm_nomem(vm);
            vm->sp -= k;
            if ((rc = push(vm, o))) return rc;
            break;
        }
        case ']': /* EMPTY_LIST */
            if ((rc = push(vm, obj_new(vm, K_LIST)))) return rc;
            break;
        case 'l': /* LIST */
            if (!(o = pop_mark(vm, K_LIST))) return fail_status(vm);
            if ((rc = push(vm, o))) return rc;
            break;
        case '}': /* EMPTY_DICT */
            if ((rc = push(vm, obj_new(vm, K_DICT)))) return rc;
            break;
        case 'd': /* DICT */
            if (!(o = pop_mark(vm, K_DICT))) return fail_status(vm);
            if (o->u.seq.n % 2) return vm_bad(vm, "DICT with an odd number of items");
            if ((rc = push(vm, o))) return rc;
            break;
        case 'a': /* APPEND */
            if (!(b = pop(vm)) || !(a = top(vm))) return fail_status(vm);
            if (a->kind != K_LIST) return vm_bad(vm, "APPEND to something not a list");
            if (seq_add(a, b)) return vm_nomem(vm);
            break;
        case 's': /* SETITEM */
            if (!(b = pop(vm)) || !(a = pop(vm)) || !(o = top(vm))) return fail_status(vm);
            if (o->kind != K_DICT) return vm_bad(vm, "SETITEM on something not a dict");
            if (seq_add(o, a) || seq_add(o, b)) return vm_nomem(vm);
            break;
        case 'e': /* APPENDS */
        case 'u': { /* SETITEMS */
            if (!vm->n_marks) return vm_bad(vm, "APPENDS/SETITEMS without a mark");
            size_t m = vm->marks[vm->n_marks - 1];
            size_t floor = vm->n_marks > 1 ? vm->marks[vm->n_marks - 2] : 0;
            if (m <= floor) return vm_bad(vm, "APPENDS/SETITEMS without a target");
            o = vm->stack[m - 1];
            if (o->kind != (op == 'e' ? K_LIST : K_DICT))
                return vm_bad(vm, op == 'e' ? "APPENDS to something not a list"
                                            : "SETITEMS on something not a dict");
            if (op == 'u' && (vm->sp - m) % 2)
                return vm_bad(vm, "SETITEMS with an odd number of items");
            for (size_t i = m; i < vm->sp; i++)
                if (seq_add(o, vm->stack[i])) return vm_nomem(vm);
            vm->sp = m;
            vm->n_marks--;
            break;
        }
        case 'q': /* BINPUT */
        case 'r': /* LONG_BINPUT */
            if ((rc = need(vm, op == 'q' ? 1 : 4))) return rc;
            if ((rc = memo_put(vm, rd_le(vm, op == 'q' ? 1 : 4)))) return rc;
            break;
        case 0x94: /* MEMOIZE */
            if ((rc = memo_put(vm, vm->memo_used))) return rc;
            break;
        case 'h': /* BINGET */
        case 'j': /* LONG_BINGET */
            if ((rc = need(vm, op == 'h' ? 1 : 4))) return rc;
            if ((rc = memo_get(vm, rd_le(vm, op == 'h' ? 1 : 4)))) return rc;
            break;
        case 'c': { /* GLOBAL */
            const char *m, *nm;
            size_t ml, nl;
            if ((rc = rd_line(vm, &m, &ml)) || (rc = rd_line(vm, &nm, &nl))) return rc;
            if ((rc = push_global(vm, m, ml, nm, nl))) return rc;
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            if (!(b = pop(vm)) || !(a = pop(vm))) return fail_status(vm);
            if (a->kind != K_STR || b->kind != K_STR)
                return vm_bad(vm, "STACK_GLOBAL operands are not strings");
            if ((rc = push_global(vm, a->u.s.p, a->u.s.n, b->u.s.p, b->u.s.n))) return rc;
            break;
        case 'Q': /* BINPERSID */
            if (!(a = pop(vm))) return fail_status(vm);
            if ((rc = persistent_load(vm, a, &o))) return rc;
            if ((rc = push(vm, o))) return rc;
            break;
        case 'R': /* REDUCE */
            if (!(b = pop(vm)) || !(a = pop(vm))) return fail_status(vm);
            if (a->kind != K_GLOBAL)
                return vm_bad(vm, "REDUCE on something that is not a whitelisted global");
            if ((rc = apply(vm, a, b, &o))) return rc;
            if ((rc = push(vm, o))) return rc;
            break;
        case 'b': /* BUILD: object state; dicts and tensors keep none we need */
            if (!(b = pop(vm)) || !(a = top(vm))) return fail_status(vm);
            if (a->kind != K_DICT && a->kind != K_TENSOR)
                return vm_bad(vm, "BUILD on something other than a dict or tensor");
            break;
        default:
            return lpk_err(vm->err, LPK_EUNSUPPORTED,
                           "%s: pickle opcode 0x%02x ('%c') at offset %zu is not one torch.save "
                           "emits; refusing to interpret it", vm->path, op,
                           op >= 0x20 && op < 0x7f ? op : '?', vm->op_pos);
        }
    }
    return lpk_err(vm->err, LPK_ETRUNC, "%s: pickle ends without STOP (%zu bytes)", vm->path,
                   vm->n);
}

static void vm_free(pk_vm *vm)
{
    for (size_t i = 0; i < vm->n_all; i++) {
        pk_obj *o = vm->all[i];
        if (o->kind == K_TUPLE || o->kind == K_LIST || o->kind == K_DICT) free(o->u.seq.v);
        free(o);
    }
    free(vm->all);
    free(vm->stack);
    free(vm->marks);
    free(vm->memo);
}

static int to_state_dict(pk_vm *vm, const pk_obj *root, cv_pk_tensor **out, size_t *n_out)
{
    if (root->kind != K_DICT)
        return lpk_err(vm->err, LPK_EUNSUPPORTED,
                       "%s: the pickle holds a %s, not a state dict", vm->path,
                       kind_names[root->kind]);
    size_t n = root->u.seq.n / 2;
    cv_pk_tensor *t = calloc(n ? n : 1, sizeof *t);
    if (!t) return vm_nomem(vm);
    for (size_t i = 0; i < n; i++) {
        const pk_obj *k = root->u.seq.v[2 * i], *v = root->u.seq.v[2 * i + 1];
        if (k->kind != K_STR || k->u.s.n == 0 || k->u.s.n > LPK_MAX_NAME ||
            memchr(k->u.s.p, 0, k->u.s.n)) {
            free(t);
            return lpk_err(vm->err, LPK_EUNSUPPORTED,
                           "%s: state dict entry %zu has a key that is not a tensor name",
                           vm->path, i);
        }
        memcpy(t[i].name, k->u.s.p, k->u.s.n);
        if (v->kind != K_TENSOR) {
            int rc = lpk_err(vm->err, LPK_EUNSUPPORTED,
                             "%s: state dict entry '%s' is a %s, not a tensor (only flat "
                             "state dicts of tensors are supported)",
                             vm->path, t[i].name, kind_names[v->kind]);
            free(t);
            return rc;
        }
        const pk_obj *st = v->u.t.storage;
        t[i].stype = st->u.st.stype;
        memcpy(t[i].key, st->u.st.key, st->u.st.keylen);
        t[i].storage_numel = st->u.st.numel;
        t[i].offset = v->u.t.offset;
        t[i].n_dims = v->u.t.n_dims;
        memcpy(t[i].dims, v->u.t.dims, sizeof t[i].dims);
        memcpy(t[i].strides, v->u.t.strides, sizeof t[i].strides);
    }
    *out = t;
    *n_out = n;
    return 0;
}

int cv_pickle_state_dict(const uint8_t *buf, size_t n, const char *path, cv_pk_tensor **out,
                         size_t *n_out, lpk_error *err)
{
    *out = NULL;
    *n_out = 0;
    lpk_error local = {0};
    pk_vm vm = {.buf = buf, .n = n, .path = path ? path : "pickle", .err = err ? err : &local};
    pk_obj *root = NULL;
    int rc = run(&vm, &root);
    if (!rc && vm.pos != vm.n)
        rc = lpk_err(vm.err, LPK_ECORRUPT, "%s: %zu bytes after the pickle's STOP", vm.path,
                     vm.n - vm.pos);
    if (!rc) rc = to_state_dict(&vm, root, out, n_out);
    vm_free(&vm);
    return rc;
}
