# llmpack build. `make` builds ./llmpack, libllmpack.a and libllmpack.so; see README.md.
CC ?= cc
O ?= build
PREFIX ?= /usr/local
PKGS = libzstd libarchive libxxhash jansson libpcre2-8

WARN = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -Wformat=2 -Werror
OPT ?= -O2 -g
# The version is set in one place, format/lpk.h (LPK_VERSION_MAJOR/MINOR/PATCH).
version_part = $(shell sed -n 's/^\#define LPK_VERSION_$(1) \([0-9][0-9]*\)$$/\1/p' format/lpk.h)
VERSION_MAJOR := $(call version_part,MAJOR)
VERSION := $(VERSION_MAJOR).$(call version_part,MINOR).$(call version_part,PATCH)
SONAME = libllmpack.so.$(VERSION_MAJOR)
SHLIB = $(O)/libllmpack.so.$(VERSION)

CPPFLAGS += -D_GNU_SOURCE
# -fPIC: the same objects go into libllmpack.a, libllmpack.so and the programs.
CFLAGS += -std=c11 $(OPT) $(WARN) -fopenmp -fno-strict-aliasing -fPIC $(SAN) \
          $(shell pkg-config --cflags $(PKGS))
LDLIBS += $(shell pkg-config --libs $(PKGS)) -lm
LDFLAGS += -fopenmp $(SAN)

MODULES = format tok quant convert verify calib lib
# Installed under include/llmpack/: the entry header and each module's public header.
PUBLIC_HEADERS = $(wildcard format/lpk.h tok/tok.h quant/quant.h convert/convert.h \
                 verify/verify.h calib/calib.h lib/jobs.h)
LIB_SRC = $(foreach m,$(MODULES),$(wildcard $(m)/*.c))
LIB_OBJ = $(LIB_SRC:%.c=$(O)/%.o)
CLI_SRC = $(wildcard cli/*.c)
CLI_OBJ = $(CLI_SRC:%.c=$(O)/%.o)
TEST_SRC = $(wildcard tests/test_*.c)
TEST_BIN = $(TEST_SRC:tests/%.c=$(O)/tests/%)
TEST_SUPPORT = $(filter-out $(TEST_SRC),$(wildcard tests/*.c))
TEST_SUPPORT_OBJ = $(TEST_SUPPORT:%.c=$(O)/%.o)
FUZZ_SRC = $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_REPLAY = $(FUZZ_SRC:tests/fuzz/%.c=$(O)/tests/replay_%)
BENCH_SRC = $(wildcard bench/*.c)
BENCH_BIN = $(BENCH_SRC:bench/%.c=$(O)/bench/%)

ifeq ($(O),build)
BIN = llmpack
else
BIN = $(O)/llmpack
endif

.SECONDARY:
.PHONY: all test test-long test-noshared asan mutants fuzz bench bench-convert bench-quant bench-quant-multi bench-calib bench-peer-quant bench-peer-verify bench-gptq \
        install clean tests check-deps
all: $(BIN) $(O)/libllmpack.a $(SHLIB)

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(O)/libllmpack.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The shared library carries its dependencies (DT_NEEDED), so `-lllmpack` alone links.
$(SHLIB): $(LIB_OBJ)
	@echo "  LD      $@"
	@$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--no-undefined $(LDFLAGS) -o $@ $(LIB_OBJ) $(LDLIBS)
	@ln -sf libllmpack.so.$(VERSION) $(O)/$(SONAME)
	@ln -sf $(SONAME) $(O)/libllmpack.so

# Programs link the library's objects themselves (the same ones as the archive).
$(BIN): $(CLI_OBJ) $(LIB_OBJ)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIB_OBJ) $(LDLIBS)

$(O)/tests/%: $(O)/tests/%.o $(TEST_SUPPORT_OBJ) $(LIB_OBJ)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) -o $@ $< $(TEST_SUPPORT_OBJ) $(LIB_OBJ) $(LDLIBS) -lcmocka

$(O)/tests/replay_%: $(O)/tests/fuzz/%.o $(O)/tests/fuzz/replay_main.o $(LIB_OBJ)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) -o $@ $< $(O)/tests/fuzz/replay_main.o $(LIB_OBJ) $(LDLIBS)

$(O)/bench/%: $(O)/bench/%.o $(LIB_OBJ)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) -o $@ $< $(LIB_OBJ) $(LDLIBS)

# Module layering and no call cycles between files (docs/ARCHITECTURE.md).
check-deps: $(LIB_OBJ) $(CLI_OBJ)
	@sh scripts/check-deps.sh $(O)

tests: all $(TEST_BIN) $(FUZZ_REPLAY) $(O)/bench/gen_ckpt

# Each test binary runs under a time limit (seconds; a hang fails naming the test).
TEST_TIMEOUT ?= 600
TEST_TIMEOUT_LONG ?= 3600

# Fast tier: what CI runs (< 5 min). Tests needing ../shared skip without it.
test: tests
	@LLMPACK_SAN="$(SAN)" LLMPACK_TEST_TIMEOUT=$(TEST_TIMEOUT) LLMPACK_BIN=$(abspath $(BIN)) LLMPACK_GEN_CKPT=$(abspath $(O)/bench/gen_ckpt) sh tests/run.sh $(O)

# The fast tier as a fresh clone runs it, without ../shared (LLMPACK_SHARED set
# to a folder that does not exist): the closing line counts the skips
# (docs/TESTING.md, "Without ../shared").
test-noshared: tests
	@LLMPACK_SHARED=$(abspath $(O))/no-shared LLMPACK_TEST_TIMEOUT=$(TEST_TIMEOUT) LLMPACK_BIN=$(abspath $(BIN)) LLMPACK_GEN_CKPT=$(abspath $(O)/bench/gen_ckpt) sh tests/run.sh $(O)

# Full runs on the real models (whole perplexity tables, big fixtures).
test-long: tests
	@LLMPACK_TEST_TIMEOUT=$(TEST_TIMEOUT_LONG) LLMPACK_TEST_LONG=1 LLMPACK_BIN=$(abspath $(BIN)) LLMPACK_GEN_CKPT=$(abspath $(O)/bench/gen_ckpt) sh tests/run.sh $(O)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer (about 3x
# slower: three times the per-test time limit).
asan:
	$(MAKE) O=build-asan OPT="-O1 -g -fno-omit-frame-pointer" TEST_TIMEOUT=$$(( $(TEST_TIMEOUT) * 3 )) \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" test

# One-line bugs (scripts/mutants.list) each put into a scratch copy of the tree and
# the suite run on it; reports the survivors (slow; not CI). MUTANTS="id ..." for a subset.
mutants:
	@sh scripts/mutants.sh $(MUTANTS)

# libFuzzer builds of every fuzz target (clang, ASan + UBSan); `make test` replays
# the corpora. The library is compiled once (fuzzer-no-link) and linked into each target.
FUZZ_OBJ_DIR = $(O)/fuzz-obj
FUZZ_CFLAGS = $(CPPFLAGS) -std=c11 -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fopenmp \
	$(shell pkg-config --cflags $(PKGS))
FUZZ_LIB_OBJ = $(LIB_SRC:%.c=$(FUZZ_OBJ_DIR)/%.o)
FUZZ_BIN = $(FUZZ_SRC:tests/fuzz/%.c=$(O)/fuzz/%)

$(FUZZ_OBJ_DIR)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CLANG   $<"
	@clang $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@

$(O)/fuzz/%: $(FUZZ_OBJ_DIR)/tests/fuzz/%.o $(FUZZ_LIB_OBJ)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@clang -fsanitize=fuzzer,address,undefined -fopenmp -o $@ $^ $(LDLIBS)

fuzz: $(FUZZ_BIN)

bench: all $(BENCH_BIN)
	@sh bench/run.sh $(O)

bench-convert: all $(BENCH_BIN)
	@sh bench/run.sh $(O) convert

bench-quant: all $(BENCH_BIN)
	@sh bench/run.sh $(O) quant

bench-quant-multi: all $(BENCH_BIN)
	@sh bench/run.sh $(O) quant-multi

bench-calib: all $(BENCH_BIN)
	@sh bench/run.sh $(O) calib

# llmpack quantize against llama-quantize (LLAMA_CPP_DIR=path of a llama.cpp build)
bench-peer-quant: all $(BENCH_BIN)
	@sh bench/run.sh $(O) peer-quant

bench-peer-verify: all $(BENCH_BIN)
	@sh bench/run.sh $(O) peer-verify

bench-gptq: all $(BENCH_BIN)
	@sh bench/run.sh $(O) gptq

# bin/llmpack, lib/libllmpack.{a,so.$(VERSION)} (+ soname links), lib/pkgconfig/llmpack.pc,
# include/llmpack/llmpack.h (the entry header) and the module headers it includes.
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig \
	    $(addprefix $(DESTDIR)$(PREFIX)/include/llmpack/,$(sort $(dir $(PUBLIC_HEADERS))))
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/llmpack
	install -m 644 $(O)/libllmpack.a $(DESTDIR)$(PREFIX)/lib/libllmpack.a
	install -m 755 $(SHLIB) $(DESTDIR)$(PREFIX)/lib/libllmpack.so.$(VERSION)
	ln -sf libllmpack.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libllmpack.so
	install -m 644 llmpack.h $(DESTDIR)$(PREFIX)/include/llmpack/llmpack.h
	for h in $(PUBLIC_HEADERS); do \
	  install -m 644 $$h $(DESTDIR)$(PREFIX)/include/llmpack/$$h || exit 1; done
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@PKGS@|$(PKGS)|' -e 's|@VERSION@|$(VERSION)|' \
	    llmpack.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/llmpack.pc

clean:
	rm -rf build build-asan llmpack

-include $(shell find $(O) -name '*.d' 2>/dev/null)
