#!/usr/bin/env bash
# bench_smoke.sh: the benchmarks that print this project's speed ratios still run and print them.
# Tiny sizes, so it checks that each ratio line is there with finite positive figures, not what they
# are (speed is measured by running the benchmarks themselves; README.md, "Benchmarks").
#   bench_smoke.sh MPIRUN BENCH_NEWTON_SCHULZ BENCH_OPTIMIZER_STEP [BENCH_MUON_STEP]
# (the last where the build has a Python with torch: it runs torch.optim.Muon beside ours)
set -euo pipefail
mpirun=$1
ns_bin=$2
step_bin=$3
muon_step_bin=${4:-}
fail() { echo "bench_smoke: FAIL: $*" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# Every row of bench_newton_schulz: the shape and 11 positive finite numbers (times, rates, ratios).
"$ns_bin" --shapes 64x64,32x96,96x32 --threads 2 >"$out" 2>&1 || { cat "$out"; fail "bench_newton_schulz exited non-zero"; }
grep -q "side by side: 2 matrices of the shape, one per thread" "$out" || { cat "$out"; fail "no side-by-side header"; }
rows=$(awk '$1 ~ /^[0-9]+x[0-9]+$/ { ok = NF == 12; for (i = 2; i <= NF; ++i) if (!($i + 0 > 0)) ok = 0; if (ok) n++ } END { print n + 0 }' "$out")
[ "$rows" = 3 ] || { cat "$out"; fail "expected 3 complete rows of positive figures, got $rows"; }
if "$ns_bin" --shapes 64x >"$out" 2>&1; then fail "a malformed --shapes was accepted"; fi
grep -q "got '64x'" "$out" || { cat "$out"; fail "the --shapes error does not name the bad item"; }

# bench_optimizer_step at 2 ranks on a one-layer GPT: both single-process baselines and the speedups.
"$mpirun" --oversubscribe -np 2 "$step_bin" --layers 1 --hidden 64 --steps 1 --rounds 1 >"$out" 2>&1 ||
  { cat "$out"; fail "bench_optimizer_step exited non-zero"; }
for pattern in "single-process Muon +[0-9.]+ ms/step .*[0-9]+ thread\(s\): one rank's share" \
  "single-process Muon +[0-9.]+ ms/step .*: the machine" \
  "against one process with one rank's share \([0-9]+ thread\(s\); ideal [0-9]+x\): A in buckets [0-9.]+x, B in buckets [0-9.]+x" \
  "distributed Muon A +[0-9.]+ ms/step" "ZeRO-1 AdamW +[0-9.]+ ms/step"; do
  grep -Eq "$pattern" "$out" || { cat "$out"; fail "no line matching: $pattern"; }
done
# bench_muon_step, one round of one step: every variant's speedup over torch and the updates' ratio.
if [ -n "$muon_step_bin" ]; then
  "$muon_step_bin" --steps 1 --rounds 1 --threads 2 >"$out" 2>&1 || { cat "$out"; fail "bench_muon_step exited non-zero"; }
  n=$(grep -Ec "^step speedup over torch.optim.Muon \+ AdamW\(fused\), .*: [0-9]+\.[0-9]+x \(goal 1.5x\)$" "$out" || true)
  [ "$n" = 4 ] || { cat "$out"; fail "expected 4 step speedup lines, got $n"; }
  grep -Eq "^Muon updates: fused pass [0-9]+\.[0-9] ms, ATen reference [0-9]+\.[0-9] ms: [0-9]+\.[0-9]+x$" "$out" ||
    { cat "$out"; fail "no Muon updates line"; }
  grep -Eq "^\| whole step \| [0-9]+\.[0-9] \|" "$out" || { cat "$out"; fail "no whole-step row with torch's time"; }
fi
echo "bench_smoke: OK"
