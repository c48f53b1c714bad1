#!/usr/bin/env bash
# vs-llama.sh: lfm2 bench against llama.cpp (the oracle, node-llama-cpp) on the same files and cores, with issue 4's targets.
# usage: tests/bench/vs-llama.sh [-t THREADS] [-p 512] [-n 128] [-r 3] [-b 1,4,8,16] [--json FILE] [MODEL...]
# Default models (made once, cached in build/bench/): the 350M-shape synthetic LFM2 from
# `lfm2 mkmodel --preset 350m --seed 1` in Q4_0 and in Q4_K_M. Both engines run with
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (full-speed OpenBLAS), one after the other, never
# at the same time. llama.cpp's 2-thread speed collapses when other processes keep the cores
# busy (spin barriers), so the load average before and after each run is printed: compare
# numbers only from a quiet machine. Exit status 0 even when a target is missed (a report,
# not a test); 1 when a run fails.
set -u
cd "$(dirname "$0")/../.."
LFM2=${LFM2:-build/lfm2}
T=$(nproc) P=512 N=128 R=3 B=1,4,8,16 JSON_OUT=""
models=()
while [ $# -gt 0 ]; do
  case $1 in
    -t) T=$2; shift 2;;
    -p) P=$2; shift 2;;
    -n) N=$2; shift 2;;
    -r) R=$2; shift 2;;
    -b) B=$2; shift 2;;
    --json) JSON_OUT=$2; shift 2;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
    -*) echo "vs-llama.sh: unknown option $1" >&2; exit 2;;
    *) models+=("$1"); shift;;
  esac
done
[ -x "$LFM2" ] || { echo "vs-llama.sh: $LFM2 not built (make build/lfm2)" >&2; exit 1; }
[ -d tests/oracle/node_modules/node-llama-cpp ] || { echo "vs-llama.sh: run make oracle first" >&2; exit 1; }

if [ ${#models[@]} -eq 0 ]; then
  mkdir -p build/bench
  for t in q4_0 q4_k_m; do
    f=build/bench/lfm2-350m-$t.gguf
    if [ ! -s "$f" ]; then
      echo "making $f (lfm2 mkmodel --preset 350m --type $t --seed 1)..." >&2
      "$LFM2" mkmodel --preset 350m --type $t --seed 1 -o "$f" >&2 || exit 1
    fi
    models+=("$f")
  done
fi

load() { cut -d' ' -f1 /proc/loadavg; }
results=()
for m in "${models[@]}"; do
  ftype=$("$LFM2" info -m "$m" 2>/dev/null | sed -n 's/^tensor types: //p' | head -1)
  l0=$(load)
  echo "== $m ($ftype), $T threads, load $l0" >&2
  ll=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE node tests/bench/llama_bench.mjs "$m" -p "$P" -n "$N" -t "$T" -r "$R" 2>/dev/null | tail -1)
  l1=$(load)
  ours=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$LFM2" bench -m "$m" -p "$P" -n "$N" -b "$B" -t "$T" -r "$R" --json 2>/dev/null | tail -1)
  l2=$(load)
  case $ll in "{"*) ;; *) echo "vs-llama.sh: llama_bench.mjs failed on $m" >&2; exit 1;; esac
  case $ours in "{"*) ;; *) echo "vs-llama.sh: lfm2 bench failed on $m" >&2; exit 1;; esac
  results+=("{\"model\":\"$m\",\"types\":\"$ftype\",\"load\":[\"$l0\",\"$l1\",\"$l2\"],\"llama\":$ll,\"lfm2\":$ours}")
done

all="[$(IFS=,; echo "${results[*]}")]"
[ -n "$JSON_OUT" ] && printf '%s\n' "$all" >"$JSON_OUT"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(uptime | sed 's/.*load/load/')"
node -e '
const rs = JSON.parse(process.argv[1]);
const f = (x, d = 1) => (x == null || !isFinite(x) ? "-" : x.toFixed(d));
const rows = [];
const targets = [];
console.log(`lfm2 ${rs[0]?.lfm2.kernel} kernels, OpenBLAS core ${rs[0]?.lfm2.openblas_core}, ${rs[0]?.lfm2.threads} threads; ` +
            `${rs[0]?.lfm2.reps} reps (median [min-max]); llama.cpp: ${rs[0]?.llama.engine}`);
console.log("");
const pad = (s, n) => String(s).padStart(n);
console.log(["model", "", "prefill tok/s", "decode tok/s", "batch8 tok/s", "peak RSS MiB", "load (1 min) before/mid/after"].map((s, i) => i < 2 ? s.padEnd(i ? 7 : 28) : pad(s, i == 6 ? 31 : 22)).join(" "));
for (const r of rs) {
    const L = r.llama, O = r.lfm2;
    const name = r.model.split("/").pop();
    const rng = (med, min, max) => `${f(med)} [${f(min, 0)}-${f(max, 0)}]`;
    const llRng = (runs, med) => `${f(med)} [${f(Math.min(...runs), 0)}-${f(Math.max(...runs), 0)}]`;
    console.log([name.padEnd(28), "llama".padEnd(7), pad(llRng(L.pp_runs, L.pp_tok_s), 22), pad(llRng(L.tg_runs, L.tg_tok_s), 22), pad("-", 22), pad(L.peak_rss_mib != null ? f(L.peak_rss_mib) + " (node)" : "-", 22), pad(r.load.join(" / "), 31)].join(" "));
    console.log(["".padEnd(28), "lfm2".padEnd(7), pad(rng(O.pp_tok_s, O.pp_min, O.pp_max), 22), pad(rng(O.tg_tok_s, O.tg_min, O.tg_max), 22),
                 pad(O.batched_tok_s["8"] != null ? rng(O.batched_tok_s["8"], O.batched_min["8"], O.batched_max["8"]) : "-", 22), pad(f(O.peak_rss_mib), 22)].join(" "));
    const rpp = O.pp_tok_s / L.pp_tok_s, rtg = O.tg_tok_s / L.tg_tok_s, rb8 = O.batched_tok_s["8"] / O.tg_tok_s;
    console.log(["".padEnd(28), "ratio".padEnd(7), pad(f(rpp, 2) + "x", 22), pad(f(rtg, 2) + "x", 22), pad(f(rb8, 2) + "x own decode", 22)].join(" "));
    const bs = Object.keys(O.batched_tok_s).map(b => `x${b} ${f(O.batched_tok_s[b])}`).join(", ");
    console.log(["".padEnd(28), "".padEnd(7), `batched decode (aggregate tok/s): ${bs}; file ${f(O.file_mib)} MiB, RSS after load ${f(O.rss_after_load_mib)} MiB`].join(" "));
    const q40 = /q4_0 x/.test(r.types) && !/q4_K/.test(r.types), q4km = /q4_K x/.test(r.types);
    if (q40) {
        targets.push(["Q4_0 decode vs llama.cpp", rtg, 1.4]);
        targets.push(["Q4_0 prefill 512 vs llama.cpp", rpp, 1.5]);
        targets.push(["Q4_0 batched-8 vs own single decode", rb8, 3.0]);
    }
    if (q4km) targets.push(["Q4_K_M decode vs llama.cpp", rtg, 1.4]);
}
if (targets.length) {
    const th = rs[0].lfm2.threads;
    console.log(`\nissue 4 targets (defined for the 350M-shape files at 2 threads; measured here with ${th} threads on the files above):`);
    for (const [what, got, want] of targets)
        console.log(`  ${(got >= want ? "PASS" : "FAIL").padEnd(5)} ${what.padEnd(38)} ${f(got, 2)}x (target >= ${want}x)`);
}
' "$all"
