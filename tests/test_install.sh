#!/bin/sh
# Installs the library into a temporary prefix and builds every examples/*.c
# against it twice: with `pkg-config --cflags --libs llmpack` (shared library) and
# with `pkg-config --static --cflags --libs llmpack` (the archive; the prefix's
# copy then has no libllmpack.so, so only the static flags can make it link).
# Runs each program from examples/ with no arguments. Also checks that the
# version agrees everywhere: format/lpk.h, llmpack.pc, `llmpack --version`, and
# the soname. Usage: sh tests/test_install.sh BUILD_DIR  (make test runs it).
O=${1:-build}
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/llmpack-install.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
fail() { echo "FAIL: $*"; exit 1; }
command -v pkg-config > /dev/null || { echo "SKIP: pkg-config not installed"; exit 77; }

make -s --no-print-directory install O="$O" PREFIX="$tmp/prefix" > "$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log"; fail "make install PREFIX=$tmp/prefix"; }
p=$tmp/prefix
for f in bin/llmpack lib/libllmpack.a lib/pkgconfig/llmpack.pc include/llmpack/llmpack.h; do
    [ -f "$p/$f" ] || fail "$f not installed"
done

# One version everywhere.
v_hdr=$(printf '#include <llmpack/llmpack.h>\nLPK_VERSION_STRING\n' |
        ${CC:-cc} -E -P -I"$p/include" - | tail -n 1 | tr -d '" ')
v_pc=$(PKG_CONFIG_PATH="$p/lib/pkgconfig" pkg-config --modversion llmpack)
v_cli=$("$p/bin/llmpack" --version | sed -n 's/^llmpack \([^ ]*\).*/\1/p')
[ -n "$v_hdr" ] && [ "$v_hdr" = "$v_pc" ] && [ "$v_pc" = "$v_cli" ] ||
    fail "versions disagree: header '$v_hdr', llmpack.pc '$v_pc', llmpack --version '$v_cli'"
[ -f "$p/lib/libllmpack.so.$v_pc" ] || fail "lib/libllmpack.so.$v_pc not installed"
soname=$(readelf -d "$p/lib/libllmpack.so.$v_pc" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libllmpack.so.${v_pc%%.*}" ] || fail "soname '$soname', want libllmpack.so.${v_pc%%.*}"
[ -L "$p/lib/$soname" ] && [ -L "$p/lib/libllmpack.so" ] || fail "soname links missing"
echo "version $v_pc (header, llmpack.pc, llmpack --version, soname $soname)"

# The static prefix: the same files without the shared library.
cp -a "$p" "$tmp/static"
rm -f "$tmp/static"/lib/libllmpack.so*
sed -i "s|^prefix=.*|prefix=$tmp/static|" "$tmp/static/lib/pkgconfig/llmpack.pc"

n=0
for src in "$root"/examples/*.c; do
    [ -f "$src" ] || continue
    name=$(basename "$src" .c)
    for mode in shared static; do
        if [ $mode = shared ]; then
            flags=$(PKG_CONFIG_PATH="$p/lib/pkgconfig" pkg-config --cflags --libs llmpack)
        else
            flags=$(PKG_CONFIG_PATH="$tmp/static/lib/pkgconfig" pkg-config --static --cflags --libs llmpack)
        fi
        exe=$tmp/$name.$mode
        # $LLMPACK_SAN: the sanitizer flags of `make asan` (the library is built with them).
        ${CC:-cc} -std=c11 -Wall -Wextra -Werror $LLMPACK_SAN "$src" -o "$exe" $flags \
            > "$tmp/cc.log" 2>&1 || { cat "$tmp/cc.log"; fail "$name ($mode): cc $src $flags"; }
        needs=$(readelf -d "$exe" | grep -c 'NEEDED.*libllmpack')
        if [ $mode = shared ] && [ "$needs" != 1 ]; then fail "$name.shared does not use libllmpack.so"; fi
        if [ $mode = static ] && [ "$needs" != 0 ]; then fail "$name.static uses libllmpack.so"; fi
        out=$(cd "$root/examples" && LD_LIBRARY_PATH="$p/lib" "$exe" 2>&1) ||
            { echo "$out"; fail "$name ($mode) exited $?"; }
        echo "$name ($mode): $out"
        n=$((n + 1))
    done
done
[ $n -gt 0 ] || fail "no examples/*.c built"
echo "PASS: $n programs built against the installed library and run"
