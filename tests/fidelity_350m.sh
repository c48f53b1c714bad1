#!/usr/bin/env bash
# fidelity_350m.sh: only the F32 fidelity check on the 350M shape (regenerates the 1.4 GB model from its seed).
# test_eng runs it too (~18 s here); this runs it alone: `make fidelity-350m`. Needs build/tests/test_eng.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
TMPDIR=$scratch "$BUILD/tests/test_eng" 350m
