# lfm2: one entry point. `make run` and `make test` are the two commands a new user needs.
# Every .c under engine/ quant/ api/ config/ server/ is part of build/lfm2;
# every tests/test_*.c is a unit-test program linked against the same objects.

CC      ?= cc
BUILD   ?= build
OPT     ?= -O2 -g
CFLAGS  += -std=c11 -Wall -Wextra -Wpedantic -D_GNU_SOURCE $(OPT) -I. -pthread
LDLIBS  += -lpcre2-8 -lmicrohttpd -lcjson -lopenblas -luv -lm -pthread

DEB_PKGS := build-essential pkg-config libpcre2-dev libmicrohttpd-dev libcjson-dev \
            libopenblas-dev libuv1-dev curl
# Node.js and npm (tests only) count as present when the commands exist, whichever package
# provides them (nodesource's nodejs bundles npm and conflicts with Debian's npm package).
MODULES  := engine quant synth api config server server/cmd
SRCS     := $(foreach m,$(MODULES),$(wildcard $(m)/*.c))
OBJS     := $(SRCS:%.c=$(BUILD)/%.o)
LIBOBJS  := $(filter-out $(BUILD)/server/main.o,$(OBJS))
TESTS    := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
DEMO     := $(BUILD)/demo.gguf
MODEL    ?= $(DEMO)

.PHONY: all deps test asan run clean format bench oracle e2e-deps image
all: $(BUILD)/lfm2

# Installs only what is missing; silent and fast when everything is present.
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/lfm2: $(OBJS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(LIBOBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -o $@ $< $(LIBOBJS) $(LDLIBS)

$(DEMO): $(BUILD)/lfm2
	$(BUILD)/lfm2 mkmodel --preset tiny --seed 1 -o $@

# The oracle (node-llama-cpp): regenerates goldens, runs beside lfm2 in the benchmarks, and is
# run by the e2e tests that compare with llama.cpp live (broken_gguf_oracle, mkmodel_oracle,
# quantize).
oracle:
	@cd tests/oracle && [ -d node_modules/node-llama-cpp ] || \
	  npm install --no-audit --no-fund --omit=optional --no-save node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1

# The official OpenAI Node SDK for the end-to-end tests of `lfm2 serve` (tests/e2e/package.json),
# and nginx with its njs module for the balancer test (tests/e2e/serve_nginx.sh runs its own
# nginx on loopback ports, and skips when these cannot be installed; on a machine with systemd
# the package also starts the system nginx).
E2E_PKGS := nginx libnginx-mod-http-js
e2e-deps:
	@missing=""; for p in $(E2E_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; } || \
	    echo "warning: cannot install$$missing: tests/e2e/serve_nginx.sh will skip"; \
	fi
	@cd tests/e2e && [ -d node_modules/openai ] || npm install --no-audit --no-fund --no-save

test: deps oracle e2e-deps
	$(MAKE) --no-print-directory $(BUILD)/lfm2 $(TESTS)
	BUILD=$(BUILD) tests/run.sh

asan:
	$(MAKE) --no-print-directory test BUILD=build-asan OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"

run: deps
	$(MAKE) --no-print-directory $(BUILD)/lfm2 $(if $(filter $(DEMO),$(MODEL)),$(DEMO))
	$(BUILD)/lfm2 serve -m $(MODEL) $(ARGS)

bench: deps oracle
	$(MAKE) --no-print-directory $(BUILD)/lfm2
	tests/bench/vs-llama.sh

# docker/Dockerfile into lfm2:latest with podman (installed when missing); when
# debian:bookworm-slim cannot be pulled, a stand-in is debootstrapped from apt's mirror
# (docker/build-image.sh). IMAGE=name:tag picks another tag.
image:
	docker/build-image.sh $(if $(IMAGE),--tag $(IMAGE))

format:
	clang-format -i $(SRCS) $(wildcard */*.h) $(wildcard tests/*.c)

clean:
	rm -rf build build-asan

# Fuzzing (tests/fuzz). Each harness tests/fuzz/fuzz_X.c is also a unit test without libFuzzer:
# linked with tests/fuzz/replay.c as $(BUILD)/tests/test_fuzz_X, it runs the corpus
# tests/fuzz/corpus/X plus seeded mutations, so `make test` and `make asan` replay them.
# `make fuzz` builds them with clang's libFuzzer + ASan/UBSan (only the modules they reach:
# engine/kern.c needs gcc) and runs each for FUZZ_SECONDS; FUZZERS=tok picks some.
FUZZERS      := gguf request tok stop config sample toolcall schema
FUZZ_REPLAYS := $(FUZZERS:%=$(BUILD)/tests/test_fuzz_%)
TESTS        += $(FUZZ_REPLAYS)
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build/libfuzzer
FUZZ_CC      ?= clang
FUZZ_PKGS    := clang libclang-rt-14-dev
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -I. -pthread -O1 -g -fno-omit-frame-pointer \
                -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_SRCS    := engine/gguf.c engine/model.c engine/tok.c quant/quant.c $(wildcard api/*.c) \
                config/config.c engine/sample.c engine/cpu.c engine/gram.c
FUZZ_OBJS    := $(FUZZ_SRCS:%.c=$(FUZZ_DIR)/%.o)
.PHONY: fuzz fuzz-deps

$(BUILD)/tests/test_fuzz_%: tests/fuzz/replay.c tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(LIBOBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DFUZZ_NAME='"$*"' -o $@ tests/fuzz/replay.c tests/fuzz/fuzz_$*.c $(LIBOBJS) $(LDLIBS)

$(FUZZ_DIR)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_OBJS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJS) -lpcre2-8 -lcjson -lm -pthread

fuzz-deps:
	@missing=""; for p in $(FUZZ_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# New inputs go to $(FUZZ_DIR)/corpus/X, crashes to $(FUZZ_DIR)/crashes/X-*; copy a crash into
# tests/fuzz/corpus/X/ (as crash-NAME) once fixed, so the replay keeps checking it.
fuzz: deps fuzz-deps
	$(MAKE) --no-print-directory $(FUZZERS:%=$(FUZZ_DIR)/fuzz_%)
	@rc=0; for f in $(FUZZERS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$f $(FUZZ_DIR)/crashes; \
	  dict=""; [ -f tests/fuzz/$$f.dict ] && dict=-dict=tests/fuzz/$$f.dict; \
	  echo "== fuzz_$$f for $(FUZZ_SECONDS) s"; \
	  $(FUZZ_DIR)/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -timeout=30 -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_DIR)/crashes/$$f- $$dict $(FUZZ_ARGS) \
	    $(FUZZ_DIR)/corpus/$$f tests/fuzz/corpus/$$f || rc=1; \
	done; exit $$rc

-include $(FUZZ_OBJS:.o=.d)

-include $(OBJS:.o=.d) $(TESTS:=.d)

# Only the 350M-shape F32 fidelity check (test_eng also runs it within `make test`).
.PHONY: fidelity-350m
fidelity-350m: deps
	$(MAKE) --no-print-directory $(BUILD)/tests/test_eng
	BUILD=$(BUILD) tests/fidelity_350m.sh

# By-hand prefill matmul benchmark (tests/bench/gemm_bench.c): kern_matmul vs sgemm vs gemm_matmul.
$(BUILD)/gemm_bench: tests/bench/gemm_bench.c $(LIBOBJS)
	$(CC) $(CFLAGS) -o $@ $< $(LIBOBJS) $(LDLIBS)

# By-hand attention benchmark (tests/bench/attn_bench.c): prefill and decode units per path.
$(BUILD)/attn_bench: tests/bench/attn_bench.c $(LIBOBJS)
	$(CC) $(CFLAGS) -o $@ $< $(LIBOBJS) $(LDLIBS)

# By-hand constrained-decoding benchmark (tests/bench/gram_bench.c): a decode step with and without
# a json_schema constraint, single and batched, and a 100-property schema's compile time.
$(BUILD)/gram_bench: tests/bench/gram_bench.c $(LIBOBJS)
	$(CC) $(CFLAGS) -o $@ $< $(LIBOBJS) $(LDLIBS)
