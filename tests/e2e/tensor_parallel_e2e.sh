#!/usr/bin/env bash
# tensor_parallel_e2e.sh: tensor parallelism through the real binary and real ranks on the bundled
# corpus: the tiny config at the same global batch of 16 as TP 1 x DP 1 (1 rank), TP 2 x DP 1
# (2 ranks) and TP 2 x DP 2 (4 ranks) gives the same loss and gradient norm per iteration within
# an fp32 tolerance; a TP size that does not divide the query groups, and one that does not divide
# the world, stop the job naming the keys.
#   usage: tensor_parallel_e2e.sh SOURCE_DIR PRETRAIN_BINARY
set -euo pipefail
src=$1
bin=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=1
launch() { timeout --kill-after=5 300 bash "$src/launch/launch.sh" "$@"; }
fail() { echo "tensor_parallel_e2e: FAIL: $*" >&2; exit 1; }
cfg="$src/configs/gpt_tiny.yaml"
short=(--config "$cfg" --set logging.progress=false --set logging.log_interval=1 --set training.train_iters=8
       --set training.lr_schedule.warmup=2 --set training.eval_interval=0 --set training.eval_iters=1)

launch 1 "$bin" "${short[@]}" --set training.micro_batch_size=16 --set logging.output_dir="$work/tp1" >"$work/tp1.log" 2>&1 ||
  { cat "$work/tp1.log"; fail "TP 1 x DP 1 run"; }
launch 2 "$bin" "${short[@]}" --set parallel.tensor_parallel=2 --set training.micro_batch_size=16 \
  --set logging.output_dir="$work/tp2" >"$work/tp2.log" 2>&1 || { cat "$work/tp2.log"; fail "TP 2 x DP 1 run"; }
launch 4 "$bin" "${short[@]}" --set parallel.tensor_parallel=2 --set training.micro_batch_size=8 \
  --set logging.output_dir="$work/tp2dp2" >"$work/tp2dp2.log" 2>&1 || { cat "$work/tp2dp2.log"; fail "TP 2 x DP 2 run"; }
grep -q "4 rank(s): tensor-parallel 2 x data-parallel 2" "$work/tp2dp2.log" || fail "the grid is not logged"
grep -q "tensor-parallel: TP=2 x DP=2; Muon parameters gathered to one TP owner" "$work/tp2dp2.log" ||
  fail "the grid plan is not logged"
# Tolerance: the runs see the same samples; TP sums the attention and MLP outputs, the embedding and
# the softmax over the vocabulary across ranks, and DP averages gradients, each in another order
# than one rank does, which moves the last bits of every step (as between DP sizes, see
# pretrain_e2e.sh). Measured worst when written: 2.7e-4 relative; the script prints it each run.
python3 "$src/tests/e2e/compare_runs.py" "tensor_parallel_e2e: TP 2 x DP 1 and TP 2 x DP 2 vs TP 1" 8 1e-3 \
  "$work/tp1/metrics.jsonl" "$work/tp2/metrics.jsonl" "$work/tp2dp2/metrics.jsonl" || fail "TP runs differ from TP 1"

if launch 4 "$bin" "${short[@]}" --set parallel.tensor_parallel=4 >"$work/groups.log" 2>&1; then
  fail "TP 4 with 2 query groups was accepted"
fi
grep -q "model.num_query_groups = 2 does not divide by parallel.tensor_parallel = 4" "$work/groups.log" ||
  { cat "$work/groups.log"; fail "no message naming the query groups"; }
if launch 2 "$bin" "${short[@]}" --set parallel.tensor_parallel=4 >"$work/world.log" 2>&1; then
  fail "TP 4 on 2 ranks was accepted"
fi
grep -q "parallel.tensor_parallel = 4 does not divide the world size 2" "$work/world.log" ||
  { cat "$work/world.log"; fail "no message naming the world size"; }
echo "tensor_parallel_e2e: OK"
