# floorpost - one Makefile, -MMD dependencies, warnings are errors.
#
#   make deps     install missing Debian packages (needs root or sudo)
#   make          build build/floorpost
#   make run      deps + build + start the demo plant (embedded default config)
#   make test     deps + unit and end-to-end tests, again under ASan+UBSan, brief fuzz
#   make fuzz     run the libFuzzer target for the batch parser (FUZZ_SECONDS=60)
#   make bench    the micro benchmarks in bench/

DEB_PACKAGES := build-essential pkg-config clang libzmq3-dev libflatbuffers-dev \
  flatbuffers-compiler libjemalloc-dev liblmdb-dev libxxhash-dev libjansson-dev \
  python3-zmq python3-flatbuffers gnuplot-nox

BUILD   ?= build
SAN     ?=
CC      := gcc
CXX     := g++
WARN    := -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes -Wno-unused-parameter
WARNXX  := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
OPT     ?= -O2 -g
CPPFLAGS := -Isrc -I$(BUILD)/gen -D_GNU_SOURCE -MMD -MP
CFLAGS  := -std=c11 $(OPT) $(WARN) -pthread
CXXFLAGS := -std=c++17 $(OPT) $(WARNXX) -fno-exceptions -fno-rtti
LDLIBS  := -lzmq -lflatbuffers -lxxhash -ljansson -llmdb -lpthread -lm

ifeq ($(SAN),1)
  # jemalloc and ASan both want to be the allocator: ASan wins in this build.
  CFLAGS   += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  CXXFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS  += -fsanitize=address,undefined
else
  LDLIBS   += -ljemalloc
endif

SRC_C    := $(filter-out src/main.c,$(wildcard src/*.c))
SRC_CXX  := src/codec.cc
OBJ      := $(SRC_C:src/%.c=$(BUILD)/obj/%.o) $(SRC_CXX:src/%.cc=$(BUILD)/obj/%.o)
GEN      := $(BUILD)/gen/telemetry_generated.h $(BUILD)/gen/checkpoint_generated.h
PYGEN    := $(BUILD)/py/floorpost/__init__.py
TESTS    := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
BENCHES  := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))

.PHONY: all deps run test test-unit test-e2e test-san fuzz fuzz-brief bench clean
all: $(BUILD)/floorpost $(PYGEN)

deps:
	@tools/deps.sh $(DEB_PACKAGES)

$(BUILD)/gen/%_generated.h: schema/%.fbs
	@mkdir -p $(@D)
	flatc --cpp --scoped-enums -o $(@D) $<

$(PYGEN): schema/telemetry.fbs schema/checkpoint.fbs
	@mkdir -p $(BUILD)/py
	flatc --python -o $(BUILD)/py $^
	@touch $@

$(BUILD)/obj/%.o: src/%.c | $(GEN)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/%.o: src/%.cc $(GEN)
	@mkdir -p $(@D)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c -o $@ $<

$(BUILD)/libfloorpost.a: $(OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/floorpost: $(BUILD)/obj/main.o $(BUILD)/libfloorpost.a
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/test.h $(BUILD)/libfloorpost.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -Itests -c -o $@.o $<
	$(CXX) $(LDFLAGS) -o $@ $@.o $(BUILD)/libfloorpost.a $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libfloorpost.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@.o $<
	$(CXX) $(LDFLAGS) -o $@ $@.o $(BUILD)/libfloorpost.a $(LDLIBS)

run: deps
	@$(MAKE) --no-print-directory all
	$(BUILD)/floorpost run

test: deps
	@$(MAKE) --no-print-directory test-unit test-e2e
	@$(MAKE) --no-print-directory BUILD=build-san SAN=1 OPT="-O1 -g" test-unit test-e2e
	@$(MAKE) --no-print-directory fuzz-brief

test-unit: $(TESTS) $(BUILD)/floorpost
	@tools/run-tests.sh $(TESTS)

test-e2e: $(BUILD)/floorpost $(PYGEN)
	FLOORPOST=$(BUILD)/floorpost FP_PYGEN=$(BUILD)/py /usr/bin/python3 tests/e2e/run.py

FUZZ_SECONDS ?= 60
$(BUILD)/fuzz/fuzz_batch: fuzz/fuzz_batch.cc src/codec.cc $(GEN)
	@mkdir -p $(@D)
	clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Isrc -I$(BUILD)/gen \
	  -o $@ fuzz/fuzz_batch.cc src/codec.cc -lflatbuffers

fuzz: $(BUILD)/fuzz/fuzz_batch
	@mkdir -p $(BUILD)/fuzz/corpus
	$< -max_total_time=$(FUZZ_SECONDS) -max_len=65536 $(BUILD)/fuzz/corpus fuzz/seeds

fuzz-brief:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=20

bench: $(BENCHES) $(BUILD)/floorpost
	@for b in $(BENCHES); do echo "== $$b"; $$b || exit 1; done

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
