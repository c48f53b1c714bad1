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
MODULES  := engine quant api config server
SRCS     := $(foreach m,$(MODULES),$(wildcard $(m)/*.c))
OBJS     := $(SRCS:%.c=$(BUILD)/%.o)
LIBOBJS  := $(filter-out $(BUILD)/server/main.o,$(OBJS))
TESTS    := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
DEMO     := $(BUILD)/demo.gguf
MODEL    ?= $(DEMO)

.PHONY: all deps test asan run clean format bench oracle e2e-deps
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

# The oracle (node-llama-cpp) is only needed to regenerate goldens and for benchmarks.
oracle:
	@cd tests/oracle && [ -d node_modules/node-llama-cpp ] || \
	  npm install --no-audit --no-fund --omit=optional --no-save node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1

# The official OpenAI Node SDK for the end-to-end tests of `lfm2 serve` (tests/e2e/package.json).
e2e-deps:
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

format:
	clang-format -i $(SRCS) $(wildcard */*.h) $(wildcard tests/*.c)

clean:
	rm -rf build build-asan

-include $(OBJS:.o=.d) $(TESTS:=.d)
