#!/bin/sh
# make check-deps: the module picture of docs/ARCHITECTURE.md, checked.
#  1. includes: a file in module M includes headers of M and of the modules M
#     may use (ALLOWED below), nothing else;
#  2. calls between modules follow the same table (from the objects' symbols);
#  3. no call cycle between files: file A uses a symbol defined in file B and
#     B (directly or through other files) one defined in A.
# Usage: sh scripts/check-deps.sh BUILD_DIR [SOURCE_ROOT]   (the objects of `make`;
# SOURCE_ROOT defaults to this repository, tests pass a small tree of their own)
set -u
O=${1:-build}
cd "${2:-$(dirname "$0")/..}" || exit 1

# module: the modules it may use (besides itself).
ALLOWED='format:
quant:format
tok:format
convert:format quant tok
verify:format quant tok
calib:format quant tok verify
lib:format quant tok convert verify calib
cli:format quant tok convert verify calib lib'
MODULES=$(printf '%s\n' "$ALLOWED" | cut -d: -f1)

fail=0
allowed() { # allowed FROM TO
    [ "$1" = "$2" ] && return 0
    for a in $(printf "%s\n" "$ALLOWED" | sed -n "s/^$1://p"); do
        [ "$a" = "$2" ] && return 0
    done
    return 1
}

# 1. includes
for m in $MODULES; do
    [ -d "$m" ] || continue
    for f in "$m"/*.c "$m"/*.h; do
        [ -f "$f" ] || continue
        for inc in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f"); do
            case "$inc" in
            ../*/*) to=$(printf '%s' "$inc" | cut -d/ -f2) ;;
            */*) to=$(printf '%s' "$inc" | cut -d/ -f1) ;;
            *) to=$m ;;
            esac
            if ! allowed "$m" "$to"; then
                echo "check-deps: $f includes \"$inc\": $m/ may not use $to/" >&2
                fail=1
            fi
        done
    done
done

# 2 and 3: the file-level symbol graph of the library and CLI objects.
objs=
for m in $MODULES; do
    for c in "$m"/*.c; do
        [ -f "$c" ] || continue
        o=$O/${c%.c}.o
        if [ ! -f "$o" ]; then
            echo "check-deps: $o missing (run make first)" >&2
            exit 1
        fi
        objs="$objs $o"
    done
done
if [ -z "$objs" ]; then
    echo "check-deps: no objects under $O/ (run make first)" >&2
    exit 1
fi
ALLOWED_FLAT=$(printf '%s\n' "$ALLOWED" | tr '\n' ';')
for o in $objs; do
    f=${o#"$O"/}
    f=${f%.o}.c
    nm -P "$o" | awk -v f="$f" '$2 ~ /^[TDBRVWCGS]$/ { print f, "D", $1 } $2 == "U" { print f, "U", $1 }'
done | awk -v allowed="$ALLOWED_FLAT" '
function mod(file) { sub(/\/.*/, "", file); return file }
BEGIN {
    na = split(allowed, lines, ";")
    for (i = 1; i <= na; i++) {
        if (lines[i] == "") continue
        split(lines[i], kv, ":"); ok[kv[1], kv[1]] = 1
        nm = split(kv[2], ms, " ")
        for (j = 1; j <= nm; j++) ok[kv[1], ms[j]] = 1
    }
}
$2 == "D" { if (!($3 in def)) def[$3] = $1; files[$1] = 1; next }
$2 == "U" { nu++; uf[nu] = $1; us[nu] = $3; files[$1] = 1 }
END {
    n = 0
    for (f in files) name[++n] = f
    # sort names for stable output
    for (i = 2; i <= n; i++) { v = name[i]; j = i - 1
        while (j > 0 && name[j] > v) { name[j + 1] = name[j]; j-- } name[j + 1] = v }
    for (i = 1; i <= n; i++) idx[name[i]] = i
    bad = 0
    for (k = 1; k <= nu; k++) {
        if (!(us[k] in def)) continue
        a = uf[k]; b = def[us[k]]
        if (a == b) continue
        if (!((mod(a), mod(b)) in ok)) {
            printf "check-deps: %s calls %s (defined in %s): %s/ may not use %s/\n", a, us[k], b, mod(a), mod(b) > "/dev/stderr"
            bad = 1
        }
        i = idx[a]; j = idx[b]
        if (!((i, j) in r)) { r[i, j] = 1; why[i, j] = us[k] }
    }
    # transitive closure (Floyd-Warshall over reachability)
    for (k = 1; k <= n; k++)
        for (i = 1; i <= n; i++) {
            if (!((i, k) in r)) continue
            for (j = 1; j <= n; j++) if ((k, j) in r) r[i, j] = 1
        }
    for (i = 1; i <= n; i++) {
        if (seen[i] || !((i, i) in r)) continue
        list = name[i]; seen[i] = 1; cnt = 1
        for (j = i + 1; j <= n; j++)
            if (((i, j) in r) && ((j, i) in r)) { list = list " " name[j]; seen[j] = 1; cnt++ }
        printf "check-deps: files calling each other in a cycle: %s\n", list > "/dev/stderr"
        # the direct edges inside the cycle, with one symbol each
        for (a = 1; a <= n; a++) {
            if (!(((i, a) in r) && ((a, i) in r)) && a != i) continue
            for (b = 1; b <= n; b++) {
                if (a == b || !((a, b) in why)) continue
                if (!(((i, b) in r) && ((b, i) in r)) && b != i) continue
                printf "    %s -> %s (%s)\n", name[a], name[b], why[a, b] > "/dev/stderr"
            }
        }
        bad = 1
    }
    exit bad
}' || fail=1
[ $fail = 0 ] && echo "check-deps: ok ($(echo $objs | wc -w) objects)"
exit $fail
