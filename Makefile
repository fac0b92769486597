# llmpack build. `make` builds ./llmpack and libllmpack.a; see README.md.
CC ?= cc
O ?= build
PREFIX ?= /usr/local
PKGS = libzstd libarchive libxxhash jansson libpcre2-8

WARN = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -Wformat=2 -Werror
OPT ?= -O2 -g
CPPFLAGS += -D_GNU_SOURCE -DLLMPACK_VERSION=\"0.1.0\"
CFLAGS += -std=c11 $(OPT) $(WARN) -fopenmp -fno-strict-aliasing $(SAN) \
          $(shell pkg-config --cflags $(PKGS))
LDLIBS += $(shell pkg-config --libs $(PKGS)) -lm
LDFLAGS += -fopenmp $(SAN)

MODULES = format tok quant convert verify calib
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
.PHONY: all test test-long asan mutants fuzz bench bench-convert bench-quant install clean tests
all: $(BIN) $(O)/libllmpack.a

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(O)/libllmpack.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# Programs link the objects themselves (not the archive), so a strong definition
# always overrides a weak fallback regardless of archive member order.
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

tests: $(BIN) $(TEST_BIN) $(FUZZ_REPLAY) $(O)/bench/gen_ckpt

# Each test binary runs under a time limit (seconds; a hang fails naming the test).
TEST_TIMEOUT ?= 600
TEST_TIMEOUT_LONG ?= 3600

# Fast tier: what CI runs (< 5 min). Tests needing ../shared skip without it.
test: tests
	@LLMPACK_TEST_TIMEOUT=$(TEST_TIMEOUT) LLMPACK_BIN=$(abspath $(BIN)) LLMPACK_GEN_CKPT=$(abspath $(O)/bench/gen_ckpt) sh tests/run.sh $(O)

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

# libFuzzer builds of every fuzz target (clang); `make test` replays the corpora.
fuzz:
	@mkdir -p $(O)/fuzz
	for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  clang $(CPPFLAGS) -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined \
	    $$(pkg-config --cflags $(PKGS)) $$f $(LIB_SRC) -o $(O)/fuzz/$$n -fopenmp \
	    $(LDLIBS) || exit 1; done

bench: all $(BENCH_BIN)
	@sh bench/run.sh $(O)

bench-convert: all $(BENCH_BIN)
	@sh bench/run.sh $(O) convert

bench-quant: all $(BENCH_BIN)
	@sh bench/run.sh $(O) quant

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig \
	    $(DESTDIR)$(PREFIX)/include/llmpack/format $(DESTDIR)$(PREFIX)/include/llmpack/quant \
	    $(DESTDIR)$(PREFIX)/include/llmpack/convert $(DESTDIR)$(PREFIX)/include/llmpack/verify \
	    $(DESTDIR)$(PREFIX)/include/llmpack/calib
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/llmpack
	install -m 644 $(O)/libllmpack.a $(DESTDIR)$(PREFIX)/lib/libllmpack.a
	for h in format/lpk.h quant/quant.h convert/convert.h verify/verify.h calib/calib.h; do \
	  [ -f $$h ] && install -m 644 $$h $(DESTDIR)$(PREFIX)/include/llmpack/$$h; done; true
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@PKGS@|$(PKGS)|' llmpack.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/llmpack.pc

clean:
	rm -rf build build-asan llmpack

-include $(shell find $(O) -name '*.d' 2>/dev/null)
