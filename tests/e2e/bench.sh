#!/usr/bin/env bash
# bench.sh: `lfm2 bench` end to end on a small model: the JSON object's fields, the table, bad options.
# Speeds are never asserted here (tests/bench/vs-llama.sh reports them); only shape and sanity.
set -u
cd "$(dirname "$0")/../.."
: "${LFM2:?set LFM2 to the lfm2 binary}" "${TMPDIR:?}"
M=tests/data/models/mini-Q4_0.gguf
fail=0
die() { echo "FAIL: $*"; fail=1; }

# 1. --json: one object with every field, consistent statistics
"$LFM2" bench -m $M -p 40 -n 6 -b 1,3,5 -t 2 -r 3 --json >"$TMPDIR/b.json" 2>"$TMPDIR/b.err" ||
  die "bench --json failed: $(cat "$TMPDIR/b.err")"
[ "$(wc -l <"$TMPDIR/b.json")" = 1 ] || die "--json printed more than one line: $(cat "$TMPDIR/b.json")"
node -e '
const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const bad = [];
const num = (k, v) => { if (typeof v !== "number" || !(v > 0) || !isFinite(v)) bad.push(`${k} = ${v}`); };
for (const k of ["pp_tok_s", "pp_min", "pp_max", "tg_tok_s", "tg_min", "tg_max", "peak_rss_mib", "rss_after_load_mib", "file_mib",
                 "decode_weights_mib", "mem_read_gbs", "tg_ceiling_tok_s"]) num(k, j[k]);
// the ceiling is bandwidth / weights; the weights a step reads are most of the file (tied head)
if (Math.abs(j.tg_ceiling_tok_s - j.mem_read_gbs * 1e9 / (j.decode_weights_mib * 1048576)) > 0.01 * j.tg_ceiling_tok_s)
    bad.push(`tg_ceiling_tok_s ${j.tg_ceiling_tok_s} is not mem_read_gbs / decode_weights_mib`);
if (!(j.decode_weights_mib > 0.5 * j.file_mib && j.decode_weights_mib < 1.2 * j.file_mib))
    bad.push(`decode_weights_mib ${j.decode_weights_mib} vs file_mib ${j.file_mib}`);
for (const [lo, mid, hi] of [["pp_min", "pp_tok_s", "pp_max"], ["tg_min", "tg_tok_s", "tg_max"]])
    if (!(j[lo] <= j[mid] && j[mid] <= j[hi])) bad.push(`${lo} <= ${mid} <= ${hi} fails: ${j[lo]} ${j[mid]} ${j[hi]}`);
const keys = Object.keys(j.batched_tok_s ?? {}).join(",");
if (keys !== "1,3,5") bad.push(`batched_tok_s keys ${keys}, expected 1,3,5`);
for (const b of ["1", "3", "5"]) {
    num(`batched_tok_s.${b}`, j.batched_tok_s?.[b]);
    if (!(j.batched_min[b] <= j.batched_tok_s[b] && j.batched_tok_s[b] <= j.batched_max[b])) bad.push(`batched ${b} stats`);
}
if (j.threads !== 2) bad.push(`threads ${j.threads}`);
if (j.p !== 40 || j.n !== 6 || j.reps !== 3) bad.push(`p/n/reps ${j.p}/${j.n}/${j.reps}`);
if (!["scalar", "avx2", "avx-vnni", "avx512-vnni"].includes(j.kernel)) bad.push(`kernel ${j.kernel}`);
if (typeof j.openblas_core !== "string" || !j.openblas_core.length) bad.push(`openblas_core ${j.openblas_core}`);
if (j.peak_rss_mib < j.rss_after_load_mib) bad.push("peak RSS below RSS after load");
// the bandwidth probe runs after every repetition with a 512 MiB buffer the peak must not count
if (j.peak_rss_mib > j.rss_after_load_mib + 256)
    bad.push(`peak RSS ${j.peak_rss_mib} MiB counts the bandwidth probe (after load ${j.rss_after_load_mib})`);
if (bad.length) { console.log(bad.join("\n")); process.exit(1); }
' "$TMPDIR/b.json" || die "bad --json object: $(cat "$TMPDIR/b.json")"

# 2. the table; -p 0 (decode from position 0) and -b 0 (no batched runs) work
"$LFM2" bench -m $M -p 16 -n 4 -b 2 -r 1 >"$TMPDIR/t.txt" 2>&1 || die "bench (table) failed: $(cat "$TMPDIR/t.txt")"
for w in "kernel" "OpenBLAS core" "peak RSS" "prefill" "decode (4 tok @ 16)" "batched decode x2" "decode ceiling"; do
  grep -qF "$w" "$TMPDIR/t.txt" || die "table lacks '$w': $(cat "$TMPDIR/t.txt")"
done
"$LFM2" bench -m $M -p 0 -n 3 -b 0 -r 1 --json >"$TMPDIR/z.json" 2>&1 || die "-p 0 -b 0 failed: $(cat "$TMPDIR/z.json")"
grep -q '"batched_tok_s":{}' "$TMPDIR/z.json" || die "-b 0 still ran batches: $(cat "$TMPDIR/z.json")"
# the kernel named is the one LFM2_KERNEL forces
LFM2_KERNEL=scalar "$LFM2" bench -m $M -p 8 -n 2 -b 0 -r 1 --json 2>/dev/null | grep -q '"kernel":"scalar"' ||
  die "LFM2_KERNEL=scalar not reported as the kernel"

# --snap-every: the prefill again with conv snapshots, its speed and the on/off ratio
"$LFM2" bench -m $M -p 40 -n 2 -b 0 -r 2 --snap-every 8 --json >"$TMPDIR/s.json" 2>&1 ||
  die "--snap-every failed: $(cat "$TMPDIR/s.json")"
node -e '
const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
if (j.snap_every !== 8 || !(j.pp_snap_tok_s > 0) || !(j.snap_ratio > 0) ||
    !(j.snap_ratio_min <= j.snap_ratio && j.snap_ratio <= j.snap_ratio_max)) process.exit(1);
' "$TMPDIR/s.json" || die "--snap-every fields: $(cat "$TMPDIR/s.json")"
"$LFM2" bench -m $M -p 16 -n 2 -b 0 -r 1 --snap-every 4 >"$TMPDIR/s.txt" 2>&1 &&
  grep -q "prefill, snap every 4" "$TMPDIR/s.txt" || die "table lacks the snapshot row"

# 3. bad options: non-zero exit and a message
expect_err() { # expect_err WHAT STATUS PATTERN ARGS...  (status 1: the work failed, 2: bad usage)
  local what=$1 want=$2 pat=$3 rc; shift 3
  if "$LFM2" bench "$@" >"$TMPDIR/e.out" 2>"$TMPDIR/e.log"; then rc=0; else rc=$?; fi
  [ "$rc" = "$want" ] || die "$what: exit status $rc, expected $want"
  grep -qi -- "$pat" "$TMPDIR/e.log" || die "$what: message lacks '$pat': $(head -2 "$TMPDIR/e.log")"
}
expect_err "no model" 2 "use -m FILE"
expect_err "missing model file" 1 "no such file" -m "$TMPDIR/none.gguf"
expect_err "not a model" 1 "bad magic" -m tests/data/models/README.md
expect_err "bad batch list" 2 "comma-separated list" -m $M -b 1,x
expect_err "batch too big" 2 "each in \[1, 64\]" -m $M -b 65
expect_err "bad -n" 2 "expected an integer" -m $M -n 0
expect_err "bad -r" 2 "expected an integer" -m $M -r 0
expect_err "bad -t" 2 "expected an integer" -m $M -t -1
expect_err "bad --snap-every" 2 "expected an integer" -m $M --snap-every 0
expect_err "unknown option" 2 "unknown option" -m $M --fast

[ $fail = 0 ] && echo "bench.sh: ok"
exit $fail
