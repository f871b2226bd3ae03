#!/usr/bin/env bash
# checkpoint_e2e.sh: sharded checkpoints through the real binary and real ranks (engine/checkpoint/):
#   1. exact resume at 1, 2 and 4 ranks: train 8 iterations saving at 4 and 8; resume from 4 and
#      train to 8; the losses of iterations 5..8 and every tensor of the final checkpoint (model
#      shards and optimizer state) are bitwise equal to the uninterrupted run's;
#   2. faults at 2 ranks: a flipped byte and a truncated shard are detected (the message names the
#      file, and the tensor for the flipped byte) and `auto` falls back to the previous committed
#      checkpoint; a temporary directory of an unfinished save and a directory without a manifest
#      are ignored by `auto`; an explicitly named damaged checkpoint stops the job;
#   3. keep_last; a failed save stops the run (or warns and trains on); a checkpoint of another
#      model is an error naming the parameter;
#   4. async saves (checkpoint.async) at 2 ranks: bitwise equal to the synchronous saves, an exact
#      resume from an async-saved checkpoint, the blocked and total times reported; a job killed
#      (SIGKILL to every process) while an async write is in flight (held open by the test hook
#      ORTHOTRON_FAULT_SLOW_SAVE_MS) leaves the previous committed checkpoint, which auto resumes.
#   usage: checkpoint_e2e.sh SOURCE_DIR PRETRAIN_BINARY
set -euo pipefail
src=$1
bin=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=1  # the same thread count in every run: bitwise comparisons
launch() { timeout --kill-after=5 300 bash "$src/launch/launch.sh" "$@"; }
fail() { echo "checkpoint_e2e: FAIL: $*" >&2; exit 1; }
common=(--config "$src/configs/gpt_tiny.yaml" --set logging.progress=false --set logging.log_interval=1
  --set training.train_iters=8 --set training.lr_schedule.warmup=2 --set training.eval_interval=0
  --set training.eval_iters=1 --set training.micro_batch_size=2 --set checkpoint.save_interval=4)

# Compares train losses of iterations 5..8 (exactly) and every tensor of two checkpoint directories.
compare() {
  python3 - "$@" <<'PY'
import json, os, struct, sys
ref_metrics, got_metrics, ref_ckpt, got_ckpt = sys.argv[1:5]
def losses(path):
    rows = [json.loads(l) for l in open(path) if '"kind":"train"' in l]
    return {r["iteration"]: r["loss"] for r in rows if r["iteration"] >= 5}
a, b = losses(ref_metrics), losses(got_metrics)
if sorted(a) != [5, 6, 7, 8] or sorted(b) != [5, 6, 7, 8]:
    sys.exit(f"iterations logged: {sorted(a)} vs {sorted(b)}")
for it in a:
    if a[it] != b[it]:
        sys.exit(f"iteration {it}: loss {b[it]!r} after the resume, {a[it]!r} uninterrupted")
def tensors(path):  # a safetensors reader: u64 header length, JSON header, data
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    return {k: data[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in header.items() if k != "__metadata__"}
files = sorted(f for f in os.listdir(ref_ckpt) if f.endswith(".safetensors"))
if not files or files != sorted(f for f in os.listdir(got_ckpt) if f.endswith(".safetensors")):
    sys.exit(f"shard files differ: {files}")
count = 0
for f in files:
    x, y = tensors(os.path.join(ref_ckpt, f)), tensors(os.path.join(got_ckpt, f))
    if sorted(x) != sorted(y):
        sys.exit(f"{f}: tensor names differ")
    if not any(k.startswith("model/") for k in x) or not any(k.startswith(("muon/", "adamw/")) for k in x):
        sys.exit(f"{f}: no model or no optimizer tensors")
    for k in x:
        if x[k] != y[k]:
            sys.exit(f"{f}: tensor {k} differs after the resume")
        count += 1
print(f"checkpoint_e2e: losses 5..8 and {count} tensors in {len(files)} shard(s) bitwise equal")
PY
}

# 1. Exact resume at 1, 2 and 4 ranks.
for np in 1 2 4; do
  d="$work/np$np"
  launch "$np" "$bin" "${common[@]}" --set checkpoint.dir="$d/ref" --set logging.output_dir="$d/ref_out" \
    >"$d.ref.log" 2>&1 || { cat "$d.ref.log"; fail "np$np: uninterrupted run"; }
  [[ -f "$d/ref/iter_0000004/manifest.json" && -f "$d/ref/iter_0000008/manifest.json" ]] || fail "np$np: checkpoints 4 and 8 missing"
  [[ "$(cat "$d/ref/latest")" == iter_0000008 ]] || fail "np$np: latest is not iter_0000008"
  launch "$np" "$bin" "${common[@]}" --set checkpoint.resume="$d/ref/iter_0000004" --set checkpoint.dir="$d/resumed" \
    --set logging.output_dir="$d/resumed_out" >"$d.resumed.log" 2>&1 || { cat "$d.resumed.log"; fail "np$np: resumed run"; }
  grep -q "resumed from checkpoint '$d/ref/iter_0000004' at iteration 4, $((8 * np)) consumed samples" "$d.resumed.log" ||
    { cat "$d.resumed.log"; fail "np$np: no resume line"; }
  grep -q "iteration        1/" "$d.resumed.log" && fail "np$np: the resumed run started again at iteration 1"
  compare "$d/ref_out/metrics.jsonl" "$d/resumed_out/metrics.jsonl" "$d/ref/iter_0000008" "$d/resumed/iter_0000008" ||
    fail "np$np: the resumed run differs from the uninterrupted one"
  grep -h "saved checkpoint" "$d.ref.log" | sed 's/^/checkpoint_e2e: np'"$np"':/'
done

# 2. Faults, at 2 ranks, on copies of the 2-rank checkpoints.
ref="$work/np2/ref"
auto_run() {  # auto_run NAME: resume auto from $work/NAME, output to $work/NAME_out, log $work/NAME.log
  launch 2 "$bin" "${common[@]}" --set checkpoint.resume=auto --set checkpoint.dir="$work/$1" \
    --set logging.output_dir="$work/$1_out" >"$work/$1.log" 2>&1 || { cat "$work/$1.log"; fail "$1: run"; }
}
# 2a. A flipped byte in a tensor of rank 1's shard of iteration 8: skipped, naming the tensor; resume from 4.
cp -r "$ref" "$work/flip"
shard="$work/flip/iter_0000008/rank00001-of-00002.safetensors"
python3 - "$shard" <<'PY'
import sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
data[len(data) - 4096] ^= 0x10
open(path, "wb").write(bytes(data))
PY
auto_run flip
grep -q "warning: skipping checkpoint '$work/flip/iter_0000008': rank 1: shard '.*rank00001-of-00002.safetensors' has CRC-32 .*tensor '.*' differs" "$work/flip.log" ||
  { cat "$work/flip.log"; fail "flip: no warning naming the shard and tensor"; }
grep -q "resumed from checkpoint '$work/flip/iter_0000004' at iteration 4" "$work/flip.log" || fail "flip: did not fall back to iteration 4"
compare "$work/np2/ref_out/metrics.jsonl" "$work/flip_out/metrics.jsonl" "$ref/iter_0000008" "$work/flip/iter_0000008" ||
  fail "flip: the run resumed from 4 differs"
# 2b. A truncated shard of rank 0: skipped as truncated.
cp -r "$ref" "$work/trunc"
shard="$work/trunc/iter_0000008/rank00000-of-00002.safetensors"
truncate -s $(($(stat -c %s "$shard") - 1000)) "$shard"
auto_run trunc
grep -q "warning: skipping checkpoint '$work/trunc/iter_0000008': rank 0: shard '.*' has [0-9]* bytes, the manifest says [0-9]* (truncated" "$work/trunc.log" ||
  { cat "$work/trunc.log"; fail "trunc: no truncation warning"; }
grep -q "resumed from checkpoint '$work/trunc/iter_0000004' at iteration 4" "$work/trunc.log" || fail "trunc: did not fall back to iteration 4"
compare "$work/np2/ref_out/metrics.jsonl" "$work/trunc_out/metrics.jsonl" "$ref/iter_0000008" "$work/trunc/iter_0000008" ||
  fail "trunc: the replacement of the damaged iteration 8 differs"
# 2c. An unfinished save (a temporary directory with one shard) and a directory without its manifest
#     (a rank killed mid-save) are ignored: auto resumes from the newest committed checkpoint, 8.
cp -r "$ref" "$work/partial"
mkdir "$work/partial/iter_0000012.tmp.00000000deadbeef"
cp "$ref/iter_0000008/rank00000-of-00002.safetensors" "$work/partial/iter_0000012.tmp.00000000deadbeef/"
cp -r "$ref/iter_0000008" "$work/partial/iter_0000010"
rm "$work/partial/iter_0000010/manifest.json"
auto_run partial
grep -q "warning: skipping checkpoint '$work/partial/iter_0000010': rank 0: '.*manifest.json' is missing" "$work/partial.log" ||
  { cat "$work/partial.log"; fail "partial: no warning for the directory without a manifest"; }
grep -q "resumed from checkpoint '$work/partial/iter_0000008' at iteration 8" "$work/partial.log" || fail "partial: did not resume from 8"
grep -q "iter_0000012" "$work/partial.log" && fail "partial: the temporary directory was considered"
# 2d. An explicitly named damaged checkpoint is an error that names the file. (The auto run above
#     replaced trunc's damaged iteration 8 with its own save, which also checks the replacement.)
cp -r "$ref" "$work/named"
shard="$work/named/iter_0000008/rank00000-of-00002.safetensors"
truncate -s $(($(stat -c %s "$shard") - 1000)) "$shard"
if launch 2 "$bin" "${common[@]}" --set checkpoint.resume="$work/named/iter_0000008" --set logging.output_dir="$work/named_out" \
  >"$work/named.log" 2>&1; then
  fail "named: a damaged checkpoint was accepted"
fi
grep -q "checkpoint '$work/named/iter_0000008' is incomplete or damaged: rank 0: shard .*rank00000-of-00002.safetensors' has" "$work/named.log" ||
  { cat "$work/named.log"; fail "named: the error does not name the shard"; }

# 3. Retention, failed saves and a checkpoint of another model, at 2 ranks.
# 3a. keep_last 1 with a save every 2 iterations: only iteration 8 stays, no temporary leftovers.
launch 2 "$bin" "${common[@]}" --set checkpoint.save_interval=2 --set checkpoint.keep_last=1 --set checkpoint.dir="$work/keep" \
  --set logging.output_dir="$work/keep_out" >"$work/keep.log" 2>&1 || { cat "$work/keep.log"; fail "keep: run"; }
[[ "$(ls "$work/keep" | tr '\n' ' ')" == "iter_0000008 latest " ]] || fail "keep: left $(ls "$work/keep" | tr '\n' ' ')"
# 3b. An unwritable checkpoint directory (a path under a regular file) stops the run naming it ...
touch "$work/not_a_dir"
if launch 2 "$bin" "${common[@]}" --set checkpoint.dir="$work/not_a_dir/ck" --set logging.output_dir="$work/bad_out" \
  >"$work/bad.log" 2>&1; then
  fail "bad: a failed save did not stop the run"
fi
grep -q "save_checkpoint of iteration 4 under '$work/not_a_dir/ck': rank 0: cannot create directory" "$work/bad.log" ||
  { cat "$work/bad.log"; fail "bad: the error does not name the directory"; }
# ... or, under on_save_error: warn, is logged while training goes on.
launch 2 "$bin" "${common[@]}" --set checkpoint.dir="$work/not_a_dir/ck" --set checkpoint.on_save_error=warn \
  --set logging.output_dir="$work/warn_out" >"$work/warn.log" 2>&1 || { cat "$work/warn.log"; fail "warn: run"; }
[[ $(grep -c "warning: save_checkpoint of iteration [48] .*training goes on" "$work/warn.log") == 2 ]] || fail "warn: no warnings"
grep -q "iteration        8/       8" "$work/warn.log" || fail "warn: training did not go on"
# 3c. A checkpoint of another model (a narrower MLP) is an error naming the parameter and shapes.
if launch 2 "$bin" "${common[@]}" --set model.ffn_hidden_size=320 --set checkpoint.resume="$ref/iter_0000004" \
  --set logging.output_dir="$work/other_out" >"$work/other.log" 2>&1; then
  fail "other: a checkpoint of another model was accepted"
fi
grep -Eq "checkpoint of another model: rank [01]: parameter '[^']*mlp.linear_fc(1.weight' has shape \\[704, 128\\] Float in the checkpoint, this model's is \\[640, 128\\]|2.weight' has shape \\[128, 352\\] Float in the checkpoint, this model's is \\[128, 320\\])" "$work/other.log" ||
  { cat "$work/other.log"; fail "other: the error does not name the parameter"; }
# 4. Async saves at 2 ranks.
a="$work/async"
mkdir -p "$a"
launch 2 "$bin" "${common[@]}" --set checkpoint.async=true --set checkpoint.dir="$a/ref" \
  --set logging.output_dir="$a/ref_out" >"$a/ref.log" 2>&1 || { cat "$a/ref.log"; fail "async: uninterrupted run"; }
[[ -f "$a/ref/iter_0000004/manifest.json" && -f "$a/ref/iter_0000008/manifest.json" ]] || fail "async: checkpoints 4 and 8 missing"
[[ "$(cat "$a/ref/latest")" == iter_0000008 ]] || fail "async: latest is not iter_0000008"
grep -q "async save of iteration 4 started (training blocked [0-9.]* ms for the host copy)" "$a/ref.log" ||
  { cat "$a/ref.log"; fail "async: no start line with the blocked time"; }
grep -q "saved checkpoint '$a/ref/iter_0000004' at iteration 4 in [0-9.]* ms (training blocked [0-9.]* ms)" "$a/ref.log" ||
  { cat "$a/ref.log"; fail "async: no commit line"; }
python3 - "$a/ref_out/metrics.jsonl" <<'PY' || fail "async: checkpoint records"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"kind":"checkpoint"' in l]
if [r["iteration"] for r in rows] != [4, 8]:
    sys.exit(f"checkpoint records: {rows}")
for r in rows:
    if r["async"] is not True or not (0 < r["blocked_ms"] <= r["total_ms"]):
        sys.exit(f"checkpoint record: {r}")
print("checkpoint_e2e: async blocked/total ms: " + ", ".join(f'{r["blocked_ms"]:.1f}/{r["total_ms"]:.1f}' for r in rows))
PY
compare "$work/np2/ref_out/metrics.jsonl" "$a/ref_out/metrics.jsonl" "$work/np2/ref/iter_0000008" "$a/ref/iter_0000008" ||
  fail "async: the async-saved checkpoint differs from the synchronous one"
launch 2 "$bin" "${common[@]}" --set checkpoint.async=true --set checkpoint.resume="$a/ref/iter_0000004" \
  --set checkpoint.dir="$a/resumed" --set logging.output_dir="$a/resumed_out" >"$a/resumed.log" 2>&1 ||
  { cat "$a/resumed.log"; fail "async: resumed run"; }
grep -q "resumed from checkpoint '$a/ref/iter_0000004' at iteration 4" "$a/resumed.log" || fail "async: no resume line"
compare "$a/ref_out/metrics.jsonl" "$a/resumed_out/metrics.jsonl" "$a/ref/iter_0000008" "$a/resumed/iter_0000008" ||
  fail "async: the run resumed from an async save differs from the uninterrupted one"
# 4b. Killed while the write of iteration 8 is in flight: iteration 4 stays committed and auto resumes from it.
cp -r "$a/ref" "$a/kill"
rm -rf "$a/kill/iter_0000008"
echo iter_0000004 >"$a/kill/latest"
ORTHOTRON_FAULT_SLOW_SAVE_MS=20000 setsid bash "$src/launch/launch.sh" 2 "$bin" "${common[@]}" --set checkpoint.async=true \
  --set checkpoint.resume=auto --set checkpoint.dir="$a/kill" --set logging.output_dir="$a/kill_out" >"$a/kill.log" 2>&1 &
job=$!
for _ in $(seq 1200); do
  grep -q "async save of iteration 8 started" "$a/kill.log" && break
  sleep 0.1
done
sleep 1
kill -9 -- -"$job" 2>/dev/null || true
wait "$job" 2>/dev/null || true
grep -q "async save of iteration 8 started" "$a/kill.log" || { cat "$a/kill.log"; fail "kill: the save of iteration 8 never started"; }
grep -q "saved checkpoint" "$a/kill.log" && fail "kill: the save committed before the kill (the slow-save hook did not hold it)"
sleep 1
pgrep -f "$a/kill" >/dev/null && fail "kill: processes of the killed job survived"
[[ -e "$a/kill/iter_0000008" ]] && fail "kill: an uncommitted iteration 8 has its final name"
launch 2 "$bin" "${common[@]}" --set checkpoint.async=true --set checkpoint.resume=auto --set checkpoint.dir="$a/kill" \
  --set logging.output_dir="$a/after_out" >"$a/after.log" 2>&1 || { cat "$a/after.log"; fail "kill: the run after the kill"; }
grep -q "resumed from checkpoint '$a/kill/iter_0000004' at iteration 4" "$a/after.log" ||
  { cat "$a/after.log"; fail "kill: auto did not resume from the committed iteration 4"; }
compare "$a/ref_out/metrics.jsonl" "$a/after_out/metrics.jsonl" "$a/ref/iter_0000008" "$a/kill/iter_0000008" ||
  fail "kill: the run resumed after the kill differs"
echo "checkpoint_e2e: OK"
