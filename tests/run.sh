#!/usr/bin/env bash
# Runs every unit-test program and every end-to-end script; prints "N passed, N failed".
# Unit tests: $BUILD/tests/test_* (built by make). End-to-end: tests/e2e/*.sh, run with
# LFM2=$BUILD/lfm2 and TMPDIR pointing at a fresh scratch folder.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export LFM2="$PWD/$BUILD/lfm2" BUILD
pass=0; fail=0; failed=()
scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
run_one() {
  local name=$1; shift
  local t0=$SECONDS log="$scratch/$(basename "$name").log"
  if "$@" >"$log" 2>&1; then
    pass=$((pass+1)); printf 'PASS %-40s %3ds\n' "$name" $((SECONDS-t0))
  else
    fail=$((fail+1)); failed+=("$name"); printf 'FAIL %-40s %3ds\n' "$name" $((SECONDS-t0))
    tail -n 40 "$log" | sed 's/^/    | /'
  fi
}
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] && [ -f "$t" ] && case "$t" in *.d) continue;; esac
  [ -x "$t" ] || continue
  run_one "$(basename "$t")" env TMPDIR="$scratch" "$t"
done
# An e2e script passes only if no server or tool it started left a sanitizer report in its logs
# (under `make asan` every binary is built with ASan+UBSan; a report in a server that kept
# answering must still fail the test).
e2e_one() {
  local s=$1 d=$2
  env TMPDIR="$d" bash "$s" || return 1
  if grep -rl -e "ERROR: AddressSanitizer" -e "ERROR: LeakSanitizer" -e "runtime error:" "$d" \
      >"$d/.sanitizer" 2>/dev/null; then
    echo "sanitizer report in: $(tr '\n' ' ' <"$d/.sanitizer")"
    grep -rh -A12 -e "ERROR: AddressSanitizer" -e "ERROR: LeakSanitizer" -e "runtime error:" \
      $(cat "$d/.sanitizer") | head -n 40
    return 1
  fi
}
# The tests of the dispatched fast paths again with the level forced down (engine/cpu.h): the
# scalar twins and the AVX2 code run, and assert they ran, whatever the CPU's best.
for k in scalar avx2; do
  for t in test_cpu test_kern test_attn test_sample; do
    [ -x "$BUILD/tests/$t" ] || continue
    run_one "$t LFM2_KERNEL=$k" env TMPDIR="$scratch" LFM2_KERNEL=$k "$BUILD/tests/$t"
  done
done
for s in tests/e2e/*.sh; do
  [ -f "$s" ] || continue
  d=$(mktemp -d -p "$scratch")
  run_one "e2e/$(basename "$s")" e2e_one "$s" "$d"
done
[ ${#failed[@]} -eq 0 ] || echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
