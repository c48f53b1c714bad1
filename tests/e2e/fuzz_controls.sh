#!/usr/bin/env bash
# fuzz_controls.sh: negative controls for tests/fuzz: each harness's replay must FAIL on a copy of its module with a planted bug.
# A harness that passes on broken code tests nothing. Each control copies one source file,
# changes one line with sed (an off-by-one, a dropped byte, a wrong tie-break), builds the
# replay driver against the copy in $TMPDIR and expects a failed check. Controls whose line no
# longer exists in the source (the module was rewritten) are reported as SKIP; at least the
# controls on api/ and config/ (finished modules) must run.
set -u
cd "$(dirname "$0")/../.."
tmp=${TMPDIR:-/tmp}
BUILD=${BUILD:-build}
CC=${CC:-cc}
FLAGS=(-std=c11 -D_GNU_SOURCE -O1 -g -I. -fsanitize=address,undefined -fno-sanitize-recover=undefined)
LIBS=(-lpcre2-8 -lmicrohttpd -lcjson -lopenblas -luv -lm -pthread)
ran=0 fail=0

# control NAME HARNESS SOURCE SED-EXPR: the replay of HARNESS linked with the library objects
# of $BUILD (as make test built them), SOURCE's object replaced by the edited copy.
control() {
  local name=$1 harness=$2 src=$3 expr=$4
  local copy="$tmp/$name.c" bin="$tmp/replay_$name" objs=()
  sed "$expr" "$src" >"$copy"
  if cmp -s "$src" "$copy"; then
    echo "SKIP $name: the planted line is no longer in $src"
    return
  fi
  for o in "$BUILD"/{engine,quant,api,config,server}/*.o; do
    [ "$o" = "$BUILD/server/main.o" ] || [ "$o" = "$BUILD/${src%.c}.o" ] || objs+=("$o")
  done
  if ! $CC "${FLAGS[@]}" -DFUZZ_NAME="\"$harness\"" -o "$bin" tests/fuzz/replay.c \
      "tests/fuzz/fuzz_$harness.c" "$copy" "${objs[@]}" "${LIBS[@]}" 2>"$tmp/$name.build"; then
    echo "FAIL $name: does not build"; cat "$tmp/$name.build"; fail=$((fail + 1)); return
  fi
  ran=$((ran + 1))
  if { "$bin" -n 20000 >"$tmp/$name.out" 2>&1; } 2>/dev/null; then
    echo "FAIL $name: the $harness harness passed on code with a planted bug ($expr)"
    fail=$((fail + 1))
  else
    echo "ok   $name: $(grep -m1 -E 'check failed|runtime error|ERROR' "$tmp/$name.out")"
  fi
}

# stop matcher: the tie-break between stops that end at the same byte, and the held-back tail
control stop_tie stop api/stop.c 's/if (p + l < best_end || p < best) {/if (p + l < best_end) {/'
control stop_hold stop api/stop.c 's/k > hold; k--)/k > hold + 1; k--)/'
# config: a dumped port that does not read back
control config_dump config config/config.c \
  's|APPEND("%s = %d\\n", s->name, \*(const int \*)p);|APPEND("%s = %d\\n", s->name, *(const int *)p + (*(const int *)p == 9000));|'
# request: a temperature above the documented 2 accepted
control request_range request api/request.c \
  's/read_number(root, "temperature", 0, 2, false/read_number(root, "temperature", 0, 3, false/'
# tool calls: the splitter forgets a start tag cut between two pushes
control toolcall_split toolcall api/toolcall.c \
  's/size_t emit = final ? len : len - tail_prefix(h, len, TOOLCALL_START);/size_t emit = len;/'
api_ran=$ran
# sampler: greedy keeps the last of equal maxima instead of the first
control sample_greedy sample engine/sample.c \
  's/if (s->work\[i\] > s->work\[chosen\]) chosen = i;/if (s->work[i] >= s->work[chosen]) chosen = i;/'
# tokenizer: the streaming flush drops held bytes
control tok_flush tok engine/tok.c \
  's/    size_t n = (size_t)s->n_pending;/    size_t n = s->n_pending > 1 ? 1 : (size_t)s->n_pending;/'

echo "$ran controls ran, $fail failed"
[ "$api_ran" -ge 5 ] || { echo "FAIL: the api/config controls must run"; exit 1; }
[ "$fail" -eq 0 ]
