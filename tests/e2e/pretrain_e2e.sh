#!/usr/bin/env bash
# pretrain_e2e.sh: the GPT engine end to end through the real binary and real ranks, on the bundled
# corpus that launch/prepare_data.sh builds (${ORTHOTRON_DATA}, default ~/.cache/orthotron/data):
#   1. 2 ranks train the tiny config and the validation loss falls by at least 1 nat;
#   2. data parallel 2 equals data parallel 1 at the same global batch, and micro batch 4 x
#      accumulation 2 equals micro batch 8, per iteration, within an fp32 reduction-order tolerance;
#      the element-wise shard layout (B) gives the owner-aligned one's (A) losses bit for bit, and
#      so does reducing gradients during backward (parallel.overlap_backward) against after it;
#   3. a NaN loss is skipped and counted (on_nonfinite: skip), or stops the job (stop); the
#      all-AdamW variant of the config (two --set overrides) trains;
#   4. a misspelled --set key stops every rank with a message naming the override.
#   usage: pretrain_e2e.sh SOURCE_DIR PRETRAIN_BINARY
set -euo pipefail
src=$1
bin=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=1  # the same thread count in every run (see the tolerance below)
launch() { timeout --kill-after=5 300 bash "$src/launch/launch.sh" "$@"; }
fail() { echo "pretrain_e2e: FAIL: $*" >&2; exit 1; }
cfg="$src/configs/gpt_tiny.yaml"
common=(--set logging.progress=false --set logging.log_interval=1)

# 1. Validation loss falls on 2 ranks.
launch 2 "$bin" --config "$cfg" "${common[@]}" --set training.train_iters=40 --set training.eval_interval=20 \
  --set training.eval_iters=2 --set logging.output_dir="$work/fall" >"$work/fall.log" 2>&1 || { cat "$work/fall.log"; fail "2-rank run exited non-zero"; }
grep -q "iteration       40/      40 | consumed samples:          640 |" "$work/fall.log" || fail "no Megatron-style line for iteration 40"
python3 - "$work/fall/metrics.jsonl" <<'PY' || fail "validation loss did not fall"
import json, sys
val = [json.loads(l) for l in open(sys.argv[1]) if '"validation"' in l]
first, last = val[0]["val_loss"], val[-1]["val_loss"]
print(f"pretrain_e2e: validation loss {first:.4f} -> {last:.4f} over {[v['iteration'] for v in val]}")
sys.exit(0 if last < first - 1.0 else 1)
PY

# 2. The same global batch of 16 three ways: 2 ranks x 8, 1 rank x 16, 1 rank x 8 x accumulation 2.
short=(--config "$cfg" "${common[@]}" --set training.train_iters=8 --set training.lr_schedule.warmup=2 --set training.eval_interval=0 --set training.eval_iters=1)
launch 2 "$bin" "${short[@]}" --set training.micro_batch_size=8 --set logging.output_dir="$work/dp2" >"$work/dp2.log" 2>&1 || fail "dp2 run"
launch 1 "$bin" "${short[@]}" --set training.micro_batch_size=16 --set logging.output_dir="$work/dp1" >"$work/dp1.log" 2>&1 || fail "dp1 run"
launch 1 "$bin" "${short[@]}" --set training.micro_batch_size=8 --set training.gradient_accumulation=2 \
  --set logging.output_dir="$work/acc2" >"$work/acc2.log" 2>&1 || fail "accumulation run"
# Tolerance: the three runs see the same samples in the same model and differ only in the order
# fp32 sums are taken (per-rank means averaged across ranks, micro-batch gradients accumulated,
# and the reduce-scatter's order), which moves the last bits of each step; Muon's normalization
# carries that into later steps: the worst relative difference measured here was 2e-4. 1e-3 on the
# loss and the gradient norm still catches a wrong batch: half the batch (a missing rank) differed
# by up to 2.0e-2 and another sample order by up to 1.3e-2 over these 8 iterations.
python3 "$src/tests/e2e/compare_runs.py" "pretrain_e2e: dp2 / accumulation 2 vs dp1" 8 1e-3 "$work/dp1/metrics.jsonl" \
  "$work/dp2/metrics.jsonl" "$work/acc2/metrics.jsonl" || fail "runs with the same global batch differ"

# 2b. Layout B (parallel.shard_layout: element_wise) trains as layout A: the same averaged gradients
#     (a sum of two is exact in any order) and the same Muon and AdamW arithmetic on other shards. With
#     clipping off the losses agree bit for bit; the logged gradient norm is a float32 sum taken shard
#     by shard, so it depends on the layout (up to 7e-6 relative measured), hence 1e-4 for it. With
#     clipping on, that difference enters the clip factor and grows like any reduction-order difference
#     (2e-5 measured by iteration 4). The optimizer step itself is bitwise (test_distributed_muon).
#     Both run in buckets of 1 MiB (several per step).
for layout in owner_aligned element_wise; do
  launch 2 "$bin" "${short[@]}" --set training.micro_batch_size=8 --set training.max_grad_norm=0 \
    --set parallel.shard_layout=$layout --set parallel.bucket_mb=1 \
    --set logging.output_dir="$work/noclip_$layout" >"$work/noclip_$layout.log" 2>&1 ||
    { cat "$work/noclip_$layout.log"; fail "dp2 $layout run"; }
  grep -q "shard layout: set to $layout" "$work/noclip_$layout.log" || fail "the $layout layout is not logged"
done
for layout in owner_aligned element_wise; do
  grep -Eq "all-gather: ([2-9]|[1-9][0-9]+) overlapped bucket\(s\)" "$work/noclip_$layout.log" ||
    fail "layout $layout did not run in several buckets"
done
grep -q "shard layout: auto: .*: owner_aligned" "$work/dp2.log" || fail "auto's choice is not logged"
python3 "$src/tests/e2e/compare_runs.py" "pretrain_e2e: dp2 layout B vs layout A, no clipping" 8 1e-4 \
  "$work/noclip_owner_aligned/metrics.jsonl" "$work/noclip_element_wise/metrics.jsonl" ||
  fail "layout B trains differently from layout A"
python3 - "$work/noclip_owner_aligned/metrics.jsonl" "$work/noclip_element_wise/metrics.jsonl" <<'PY' ||
import json, sys
a, b = ([r["loss"] for r in map(json.loads, open(p)) if r.get("kind") == "train"] for p in sys.argv[1:3])
sys.exit(0 if a == b and len(a) == 8 else f"losses differ: {a} vs {b}")
PY
  fail "layout B's losses are not bitwise layout A's"

# 2c. Reduce-scatters started during backward (parallel.overlap_backward, on above) change no bit:
#     the same bytes are reduced in the same order, so losses and gradient norms equal a run that
#     reduces after backward, under either layout (layout B's buckets are runs of the backward
#     order, so they leave during backward as layout A's do). The log says how many buckets left.
for layout in owner_aligned element_wise; do
  launch 2 "$bin" "${short[@]}" --set training.micro_batch_size=8 --set training.max_grad_norm=0 \
    --set parallel.shard_layout=$layout --set parallel.bucket_mb=1 --set parallel.overlap_backward=false \
    --set logging.output_dir="$work/no_overlap_$layout" >"$work/no_overlap_$layout.log" 2>&1 ||
    { cat "$work/no_overlap_$layout.log"; fail "overlap off run, $layout"; }
  grep -Eq "; [1-9][0-9.]* of [0-9]+ gradient bucket\(s\) reduced during backward\)" "$work/noclip_$layout.log" ||
    { grep "done:" "$work/noclip_$layout.log"; fail "no bucket was reduced during backward under $layout"; }
  grep -Eq "; 0\.0 of [0-9]+ gradient bucket\(s\) reduced during backward\)" "$work/no_overlap_$layout.log" ||
    { grep "done:" "$work/no_overlap_$layout.log"; fail "overlap_backward: false still reduced during backward"; }
  python3 - "$work/noclip_$layout/metrics.jsonl" "$work/no_overlap_$layout/metrics.jsonl" <<'PY' ||
import json, sys
a, b = ([(r["loss"], r["grad_norm"]) for r in map(json.loads, open(p)) if r.get("kind") == "train"] for p in sys.argv[1:3])
sys.exit(0 if a == b and len(a) == 8 else f"runs differ: {a} vs {b}")
PY
    fail "reducing during backward changed the losses or gradient norms under $layout"
done

# 3. A NaN loss at iteration 3: skipped and counted, or the end of the run.
ORTHOTRON_FAULT_NAN_LOSS_AT=3 launch 2 "$bin" "${short[@]}" --set logging.output_dir="$work/nan" >"$work/nan.log" 2>&1 ||
  { cat "$work/nan.log"; fail "a skipped NaN iteration ended the run"; }
grep -q "iteration        8/       8 .*number of skipped iterations:   1 | number of nan iterations:   1 |" "$work/nan.log" ||
  fail "the NaN iteration was not counted"
if ORTHOTRON_FAULT_NAN_LOSS_AT=3 launch 2 "$bin" "${short[@]}" --set training.on_nonfinite=stop \
  --set logging.output_dir="$work/stop" >"$work/stop.log" 2>&1; then
  fail "on_nonfinite: stop did not stop"
fi
grep -q "iteration 3: the loss (nan) .* is not finite; stopping" "$work/stop.log" || { cat "$work/stop.log"; fail "no stop message"; }

# 3b. The AdamW baseline is two overrides of the same file (the lines atop configs/gpt_tiny.yaml).
launch 1 "$bin" "${short[@]}" --set training.train_iters=3 --set logging.output_dir="$work/adamw" \
  --set 'optimizer.groups={adamw: {lr: 0.003, betas: [0.9, 0.95], weight_decay: 0.0}}' \
  --set 'optimizer.rules=[{name: all, match: "*", group: adamw}]' >"$work/adamw.log" 2>&1 ||
  { cat "$work/adamw.log"; fail "the all-AdamW overrides did not run"; }
grep -q "iteration        3/       3 .*learning rate: adamw [0-9.E+-]* | global" "$work/adamw.log" ||
  { cat "$work/adamw.log"; fail "the all-AdamW run did not train every parameter with AdamW alone"; }

# 4. A misspelled override ends the job with the key named.
if launch 2 "$bin" --config "$cfg" --set training.train_iter=5 >"$work/typo.log" 2>&1; then fail "a misspelled key was accepted"; fi
grep -q "\-\-set training.train_iter=5: unknown key 'train_iter' in training; did you mean 'train_iters'?" "$work/typo.log" ||
  { cat "$work/typo.log"; fail "the error does not name the override"; }
echo "pretrain_e2e: OK"
