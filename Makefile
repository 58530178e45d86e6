# floorpost - one Makefile, -MMD dependencies, warnings are errors.
#
#   make deps     install missing Debian packages (needs root or sudo)
#   make          build build/floorpost
#   make run      deps + build + start the demo plant (embedded default config)
#   make test     deps + unit and end-to-end tests, again under ASan+UBSan, brief fuzz
#   make fuzz     run every libFuzzer target in fuzz/ for FUZZ_SECONDS each (60; fuzz/README.md)
#   make bench    quick benchmark suite (bench/run.py, < 5 min); make bench-full: all of it
#   make bench-peer  floorpost vs a Fluent Bit binary: FLUENT_BIT=/path/to/fluent-bit

DEB_PACKAGES := build-essential pkg-config clang libzmq3-dev libflatbuffers-dev \
  flatbuffers-compiler libjemalloc-dev liblmdb-dev libxxhash-dev libjansson-dev libmicrohttpd-dev \
  libcurl4-openssl-dev tzdata \
  python3-zmq python3-flatbuffers gnuplot-nox \
  python3-venv python3-pip python3-setuptools python3-wheel python3-yaml prometheus \
  libpq-dev postgresql postgresql-client python3-psycopg2

BUILD   ?= build
SAN     ?=
CC      := gcc
CXX     := g++
WARN    := -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes -Wno-unused-parameter
WARNXX  := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
OPT     ?= -O2 -g
# src/ is in folders by what runs where (docs/architecture.md, "Layout");
# headers are included by bare name from every folder.
SRC_DIRS := $(sort $(patsubst %/,%,$(dir $(wildcard src/*/*.h src/*/*.c src/*/*.cc))))
CPPFLAGS := $(addprefix -I,$(SRC_DIRS)) -I$(BUILD)/gen -I/usr/include/postgresql -D_GNU_SOURCE -MMD -MP
CFLAGS  := -std=c11 $(OPT) $(WARN) -pthread
CXXFLAGS := -std=c++17 $(OPT) $(WARNXX) -fno-exceptions -fno-rtti
LDLIBS  := -lzmq -lflatbuffers -lxxhash -ljansson -llmdb -lmicrohttpd -lcurl -lpq -lpthread -lm

# FUZZ=1 (make fuzz does it, with BUILD=build-fuzz): the library again with
# clang, instrumented for libFuzzer, under ASan+UBSan (fuzz/README.md).
ifeq ($(FUZZ),1)
  CC       := clang
  CXX      := clang++
  SAN      := 1
  CFLAGS   += -fsanitize=fuzzer-no-link
  CXXFLAGS += -fsanitize=fuzzer-no-link
endif

ifeq ($(SAN),1)
  # jemalloc and ASan both want to be the allocator: ASan wins in this build.
  CFLAGS   += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  CXXFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS  += -fsanitize=address,undefined
else
  LDLIBS   += -ljemalloc
endif

# The verbs (main.c, cmd_*.c) make the binary; everything else the library.
CMD_C    := src/cli/main.c $(wildcard src/cli/cmd_*.c)
SRC_C    := $(filter-out $(CMD_C),$(wildcard src/*/*.c))
SRC_CXX  := src/codec/codec.cc
OBJ      := $(SRC_C:src/%.c=$(BUILD)/obj/%.o) $(SRC_CXX:src/%.cc=$(BUILD)/obj/%.o)
GEN      := $(BUILD)/gen/telemetry_generated.h $(BUILD)/gen/checkpoint_generated.h
PYGEN    := $(BUILD)/py/floorpost/__init__.py
TESTS    := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/*/test_*.c))
BENCHES  := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))

.PHONY: all deps run test test-unit test-e2e test-san fuzz fuzz-brief bench bench-full bench-smoke bench-peer clean test-crash-long
all: $(BUILD)/floorpost $(PYGEN) $(BUILD)/libfloorpost-gateway.a

deps:
	@tools/deps.sh $(DEB_PACKAGES)

$(BUILD)/gen/%_generated.h: schema/%.fbs
	@mkdir -p $(@D)
	flatc --cpp --scoped-enums -o $(@D) $<

# The PostgreSQL sink's DDL as a C string (sink_pg.c): each line quoted,
# backslashes and quotes escaped.
$(BUILD)/gen/postgresql_sql.h: schema/sql/postgresql.sql
	@mkdir -p $(@D)
	@{ echo '/* generated from $< by the Makefile */'; \
	  echo 'static const char fp_sql_postgresql[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$$/\\n"/' $<; \
	  echo '    ;'; } > $@.tmp && mv $@.tmp $@
$(BUILD)/obj/sinks/sink_pg.o: $(BUILD)/gen/postgresql_sql.h

# flatc makes its folders 0750: a readable tree for whoever runs the tests.
$(PYGEN): schema/telemetry.fbs schema/checkpoint.fbs
	@mkdir -p $(BUILD)/py
	flatc --python -o $(BUILD)/py $^
	chmod -R a+rX $(BUILD)/py
	@touch $@

# The same readers, vendored in the Python package (python/floorpost/): run
# after a schema change; tests/e2e/t_client.py fails while they differ.
.PHONY: python-readers
python-readers: $(PYGEN)
	rm -rf python/floorpost/checkpoint python/floorpost/telemetry
	cp -r $(BUILD)/py/floorpost/checkpoint $(BUILD)/py/floorpost/telemetry python/floorpost/
	chmod -R u+rw,go+rX-w python/floorpost

$(BUILD)/obj/%.o: src/%.c | $(GEN)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/%.o: src/%.cc $(GEN)
	@mkdir -p $(@D)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c -o $@ $<

$(BUILD)/libfloorpost.a: $(OBJ)
	@rm -f $@
	ar rcs $@ $^

# The gateway library: what a gateway or MES adapter (producer.h) or a
# subscriber (subscriber.h) links, and nothing else of floorpost (no log, no
# config, no threads of ours). Linked alone by tests/install_test.sh
# (tests/gateway/gateway_min.c, examples/subscriber.c) and by the example.
GATEWAY_OBJ := $(BUILD)/obj/gateway/producer.o $(BUILD)/obj/gateway/strtab.o \
  $(BUILD)/obj/gateway/curve.o $(BUILD)/obj/gateway/subscriber.o $(BUILD)/obj/codec/codec.o
GATEWAY_LIBS := -lzmq -lflatbuffers -ljansson -lstdc++
GATEWAY_HEADERS := src/gateway/producer.h src/core/record.h src/gateway/curve.h \
  src/gateway/subscriber.h src/core/domain.h src/codec/codec.h
$(BUILD)/libfloorpost-gateway.a: $(GATEWAY_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The installed headers, staged as <floorpost/*.h>: the examples build
# against them the way a subscriber's own code does.
$(BUILD)/include/floorpost/.stamp: $(GATEWAY_HEADERS)
	@mkdir -p $(@D)
	cp $^ $(@D)/
	@touch $@

$(BUILD)/floorpost: $(CMD_C:src/%.c=$(BUILD)/obj/%.o) $(BUILD)/libfloorpost.a
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# A test or tool links the objects it depends on beyond its own (below).
$(BUILD)/tests/%: tests/%.c tests/test.h $(BUILD)/libfloorpost.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -Itests -c -o $@.o $<
	$(CXX) $(LDFLAGS) -o $@ $@.o $(filter %.o,$^) $(BUILD)/libfloorpost.a $(LDLIBS)

$(BUILD)/tools/%.o: tests/tools/%.c | $(GEN)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/tools/%: tests/tools/%.c $(BUILD)/libfloorpost.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@.o $<
	$(CXX) $(LDFLAGS) -o $@ $@.o $(filter %.o,$^) $(BUILD)/libfloorpost.a $(LDLIBS)

# crashgen's ground truth (tests/tools/truth.h), checked against agg.c by test_agg.
$(BUILD)/tools/crashgen $(BUILD)/tests/core/test_agg: $(BUILD)/tools/truth.o

$(BUILD)/bench/%: bench/%.c $(BUILD)/libfloorpost.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@.o $<
	$(CXX) $(LDFLAGS) -o $@ $@.o $(BUILD)/libfloorpost.a $(LDLIBS)

run: deps
	@$(MAKE) --no-print-directory all
	$(BUILD)/floorpost run

# The tally file collects every suite's counts for the closing line.
export FP_TALLY := $(CURDIR)/build/test-tally
test: deps
	@mkdir -p build && rm -f $(FP_TALLY)
	@$(MAKE) --no-print-directory test-unit test-e2e
	@$(MAKE) --no-print-directory test-install bench-smoke
	@$(MAKE) --no-print-directory BUILD=build-san SAN=1 OPT="-O1 -g" test-unit test-e2e
	@$(MAKE) --no-print-directory fuzz-brief
	@awk '{p += $$1; f += $$2} END {print "total: " p " passed, " f " failed"; exit f > 0}' $(FP_TALLY)

test-unit: $(TESTS) $(BUILD)/floorpost
	@tools/run-tests.sh $(TESTS)

test-e2e: $(BUILD)/floorpost $(PYGEN) $(BUILD)/tools/crashgen
	FLOORPOST=$(BUILD)/floorpost FP_PYGEN=$(BUILD)/py FP_SAN=$(SAN) /usr/bin/python3 tests/e2e/run.py

# The long crash run (issue 4): 50 kill -9 over 5 M records. Not in `test`.
test-crash-long: $(BUILD)/floorpost $(PYGEN) $(BUILD)/tools/crashgen
	FLOORPOST=$(BUILD)/floorpost FP_PYGEN=$(BUILD)/py /usr/bin/python3 tests/e2e/run.py \
	  crash_long_fifty_kills_five_million_records

# ---- Fuzzing (fuzz/README.md): one libFuzzer target per parser of
# untrusted or on-disk bytes, fuzz/fuzz_NAME.c or .cc, seeds in
# fuzz/seeds/NAME/, past findings in fuzz/regressions/NAME/ (replayed at the
# start of every run), an optional dictionary fuzz/NAME.dict. Built in
# build-fuzz against the library built there with clang (FUZZ=1 above); a
# finding is left in build-fuzz/fuzz/findings/NAME/ and fails the run.
FUZZ_SECONDS ?= 60
FUZZ_BRIEF_TOTAL ?= 60
FUZZ_MAX_LEN ?= 65536
FUZZ_NAMES := $(sort $(patsubst fuzz/fuzz_%,%,$(basename $(wildcard fuzz/fuzz_*.c fuzz/fuzz_*.cc))))
FUZZ_BIN   := $(FUZZ_NAMES:%=build-fuzz/fuzz/fuzz_%)
FUZZ_BRIEF_EACH = $(shell e=$$(( $(FUZZ_BRIEF_TOTAL) / $(words $(FUZZ_NAMES)) )); [ $$e -ge 2 ] && echo $$e || echo 2)
.PHONY: fuzz-build fuzz-run fuzz-bins

$(BUILD)/fuzz/fuzz_%: fuzz/fuzz_%.c $(BUILD)/libfloorpost.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@.o $<
	$(CXX) $(LDFLAGS) -fsanitize=fuzzer -o $@ $@.o $(BUILD)/libfloorpost.a $(LDLIBS)

$(BUILD)/fuzz/fuzz_%: fuzz/fuzz_%.cc $(BUILD)/libfloorpost.a
	@mkdir -p $(@D)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c -o $@.o $<
	$(CXX) $(LDFLAGS) -fsanitize=fuzzer -o $@ $@.o $(BUILD)/libfloorpost.a $(LDLIBS)

fuzz-build:
	@$(MAKE) --no-print-directory BUILD=build-fuzz FUZZ=1 OPT="-O1 -g" fuzz-bins
fuzz-bins: $(GEN) $(FUZZ_BIN)
	@:

# Each target for FUZZ_SECONDS over its seeds and its own corpus (kept
# between runs in build-fuzz/fuzz/corpus/NAME); "ok"/"FAIL" per target into
# the test tally. FUZZ_ONLY="a b" runs only those.
fuzz: fuzz-build
	@$(MAKE) --no-print-directory fuzz-run

fuzz-run:
	@fail=0; for n in $(or $(FUZZ_ONLY),$(FUZZ_NAMES)); do \
	  mkdir -p build-fuzz/fuzz/corpus/$$n build-fuzz/fuzz/findings/$$n; \
	  log=build-fuzz/fuzz/$$n.log; t0=$$(date +%s); \
	  if build-fuzz/fuzz/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_MAX_LEN) \
	     -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	     -artifact_prefix=build-fuzz/fuzz/findings/$$n/ \
	     $$([ -f fuzz/$$n.dict ] && echo -dict=fuzz/$$n.dict) \
	     build-fuzz/fuzz/corpus/$$n fuzz/seeds/$$n \
	     $$([ -d fuzz/regressions/$$n ] && echo fuzz/regressions/$$n) > $$log 2>&1; then \
	    echo "ok   fuzz $$n: $$(sed -n 's/^stat::number_of_executed_units: *//p' $$log) runs in $$(( $$(date +%s) - t0 )) s, $$(grep -o 'cov: [0-9]*' $$log | tail -1), $$(ls build-fuzz/fuzz/corpus/$$n | wc -l) inputs in the corpus"; \
	    { echo "1 0" >> $(FP_TALLY); } 2>/dev/null; \
	  else \
	    echo "FAIL fuzz $$n (log: $$log; input: build-fuzz/fuzz/findings/$$n/)"; tail -40 $$log; \
	    { echo "0 1" >> $(FP_TALLY); } 2>/dev/null; fail=1; \
	  fi; \
	done; exit $$fail

# `make test`: every target briefly, FUZZ_BRIEF_TOTAL seconds for all together.
fuzz-brief: fuzz-build
	@$(MAKE) --no-print-directory fuzz-run FUZZ_SECONDS=$(FUZZ_BRIEF_EACH)

# Quick suite (< 5 min) / everything; see docs/benchmarks.md. Results in
# $(BUILD)/bench/results/; exits non-zero if any run's totals are not exact
# (or a check fails; --rss-bounds: a run above its peak RSS bound).
bench: $(BENCHES) $(BUILD)/floorpost
	/usr/bin/python3 bench/run.py --build $(BUILD)

bench-full: $(BENCHES) $(BUILD)/floorpost
	/usr/bin/python3 bench/run.py --build $(BUILD) --full

# The suite's own test (in `test`, about 20 s): tiny ceiling, max, dedup-heavy,
# counter-reading and generate-while-sending runs through bench/run.py, and
# its self-checks (peak RSS, bounds, the ceiling's HWM, free ports, clean-up
# after a failed start); fails unless exact and every self-check passes.
bench-smoke: $(BENCHES) $(BUILD)/floorpost
	@if /usr/bin/python3 bench/run.py --build $(BUILD) --smoke --out $(BUILD)/bench/smoke; \
	then echo "ok   bench smoke"; [ -z "$(FP_TALLY)" ] || echo "1 0" >> $(FP_TALLY); \
	else echo "FAIL bench smoke"; [ -z "$(FP_TALLY)" ] || echo "0 1" >> $(FP_TALLY); exit 1; fi

# floorpost against a peer, alternating (bench/peer.py; not in `test`): the
# Fluent Bit binary the user points FLUENT_BIT at; nothing of it is built or
# fetched here. Refuses (exit 2) before building anything when FLUENT_BIT is
# unset or not an executable file.
bench-peer:
	@if [ -z "$(FLUENT_BIT)" ] || [ -d "$(FLUENT_BIT)" ] || [ ! -x "$(FLUENT_BIT)" ]; then \
	  echo "bench-peer: FLUENT_BIT='$(FLUENT_BIT)' is not an executable file; run" \
	       "FLUENT_BIT=/path/to/fluent-bit make bench-peer (docs/benchmarks.md)" >&2; exit 2; fi
	@$(MAKE) --no-print-directory $(BENCHES) $(BUILD)/floorpost
	/usr/bin/python3 bench/peer.py --build $(BUILD) --fluent-bit "$(FLUENT_BIT)"

# ---- Subscriber examples (docs/subscribers.md); run by tests/e2e/run.py ----
.PHONY: examples install uninstall test-install
EXAMPLES := $(BUILD)/examples/subscriber
examples: $(EXAMPLES)
all: $(EXAMPLES)
test-e2e: $(EXAMPLES)

# Only the staged headers and the gateway library: what `make install` gives.
$(BUILD)/examples/%: examples/%.c $(BUILD)/libfloorpost-gateway.a $(BUILD)/include/floorpost/.stamp
	@mkdir -p $(@D)
	$(CC) -std=c11 $(OPT) $(WARN) $(filter -fsanitize% -fno-%,$(CFLAGS)) -MMD -MP -I$(BUILD)/include \
	  $(LDFLAGS) -o $@ $< $(BUILD)/libfloorpost-gateway.a $(GATEWAY_LIBS)

# ---- make install / uninstall (docs/operations.md) ----
# The unit goes to $(PREFIX)/lib/systemd/system: systemd searches both
# /usr/local/lib/systemd/system and /usr/lib/systemd/system, and
# /etc/systemd/system stays the admin's place for overrides. The config goes
# to /etc/floorpost (the unit's ConfigurationDirectory) and is never
# overwritten; the reference copy in $(DATADIR) is, so an upgrade can diff.
PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
DATADIR    ?= $(PREFIX)/share/floorpost
DOCDIR     ?= $(PREFIX)/share/doc/floorpost
INCLUDEDIR ?= $(PREFIX)/include
LIBDIR     ?= $(PREFIX)/lib
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
FP_VERSION := $(shell sed -n 's/^\#define FP_VERSION "\(.*\)"/\1/p' src/core/version.h)

# pkg-config --cflags --libs floorpost (the library is static: its
# dependencies are in Libs). Paths under PREFIX are written as ${prefix}/...
# so --define-variable=prefix=... relocates them.
define FLOORPOST_PC
prefix=$(PREFIX)
includedir=$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))
libdir=$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))

Name: floorpost
Description: floorpost client library: gateways (floorpost/producer.h) and subscribers (floorpost/subscriber.h)
Version: $(FP_VERSION)
Cflags: -I$${includedir}
Libs: -L$${libdir} -lfloorpost-gateway $(GATEWAY_LIBS)
endef

# The same file in the tree (PREFIX's paths; tests/e2e/t_client.py points
# includedir and libdir at $(BUILD) to build the docs' quick start with it).
$(BUILD)/floorpost.pc: Makefile src/core/version.h | $(BUILD)/include/floorpost/.stamp
	$(file >$@,$(FLOORPOST_PC))
all: $(BUILD)/floorpost.pc
test-e2e: $(BUILD)/floorpost.pc

install: $(BUILD)/floorpost $(BUILD)/libfloorpost-gateway.a
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DATADIR)/schema \
	  $(DESTDIR)$(INCLUDEDIR)/floorpost $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) \
	  $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(SYSCONFDIR)/floorpost
	install -m 0755 $(BUILD)/floorpost $(DESTDIR)$(BINDIR)/floorpost
	sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/usr/local/share/doc/floorpost|$(DOCDIR)|g' \
	  -e 's|/etc/floorpost/|$(SYSCONFDIR)/floorpost/|g' configs/floorpost.service \
	  > $(DESTDIR)$(UNITDIR)/floorpost.service.tmp
	chmod 0644 $(DESTDIR)$(UNITDIR)/floorpost.service.tmp
	mv -f $(DESTDIR)$(UNITDIR)/floorpost.service.tmp $(DESTDIR)$(UNITDIR)/floorpost.service
	install -m 0644 schema/telemetry.fbs schema/checkpoint.fbs $(DESTDIR)$(DATADIR)/schema/
	install -m 0644 $(GATEWAY_HEADERS) $(DESTDIR)$(INCLUDEDIR)/floorpost/
	install -m 0644 $(BUILD)/libfloorpost-gateway.a $(DESTDIR)$(LIBDIR)/
	$(file >$(BUILD)/floorpost.pc,$(FLOORPOST_PC))
	install -m 0644 $(BUILD)/floorpost.pc $(DESTDIR)$(PKGCONFIGDIR)/floorpost.pc
	install -m 0644 configs/floorpost.ini $(DESTDIR)$(DATADIR)/floorpost.ini
	install -m 0644 configs/floorpost-rules.yml configs/grafana-floorpost.json $(DESTDIR)$(DATADIR)/
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 examples/subscriber.py examples/subscriber.c $(DESTDIR)$(DOCDIR)/examples/
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/floorpost/floorpost.ini ]; then \
	  echo "kept $(DESTDIR)$(SYSCONFDIR)/floorpost/floorpost.ini; the new reference is $(DESTDIR)$(DATADIR)/floorpost.ini"; \
	else \
	  install -m 0644 configs/floorpost.ini $(DESTDIR)$(SYSCONFDIR)/floorpost/floorpost.ini; \
	  echo "installed $(DESTDIR)$(SYSCONFDIR)/floorpost/floorpost.ini"; \
	fi
	@if [ -z "$(DESTDIR)" ]; then \
	  if ! id -u floorpost >/dev/null 2>&1; then \
	    useradd --system --user-group --home-dir /var/lib/floorpost --no-create-home \
	      --shell /usr/sbin/nologin --comment "floorpost service" floorpost && \
	    echo "created system user floorpost"; \
	  fi; \
	  echo "next: systemctl daemon-reload && systemctl enable --now floorpost"; \
	fi

# Leaves the operator's config in $(SYSCONFDIR)/floorpost, the state in
# /var/lib/floorpost and the floorpost user.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/floorpost $(DESTDIR)$(UNITDIR)/floorpost.service
	rm -rf $(DESTDIR)$(DATADIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(INCLUDEDIR)/floorpost
	rm -f $(DESTDIR)$(LIBDIR)/libfloorpost-gateway.a $(DESTDIR)$(PKGCONFIGDIR)/floorpost.pc
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/floorpost, /var/lib/floorpost and the floorpost user"

test-install: $(BUILD)/floorpost $(BUILD)/libfloorpost-gateway.a
	BUILD=$(BUILD) GATEWAY_LIBS="$(GATEWAY_LIBS)" tests/install_test.sh

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
