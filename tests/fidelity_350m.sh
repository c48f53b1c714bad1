#!/usr/bin/env bash
# fidelity_350m.sh: the slow F32 fidelity check on the 350M shape (regenerates the ~700 MB model from its seed).
# Kept out of `make test` for time; run with `make fidelity-350m`. Needs build/tests/test_eng.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
TMPDIR=$scratch "$BUILD/tests/test_eng" 350m
