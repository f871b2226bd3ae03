#!/usr/bin/env bash
# checkpoint_full_disk.sh: a checkpoint directory on a file system that fills up (a tmpfs sized to
# hold one checkpoint of the tiny GPT and part of a second), through the real binary at 2 ranks:
#   1. the save that does not fit stops the run with "No space left on device", naming the rank
#      and the path; the previous checkpoint stays committed and intact, the partial save leaves no
#      temporary directory (its space is given back), and `auto` resumes from the previous one;
#   2. under checkpoint.on_save_error: warn, every save that does not fit is logged and training
#      goes on to its last iteration.
# Needs permission to mount a tmpfs (root); exits 77 (CTest: skipped) where it cannot.
#   usage: checkpoint_full_disk.sh SOURCE_DIR PRETRAIN_BINARY
set -euo pipefail
src=$1
bin=$2
work=$(mktemp -d)
disk="$work/disk"
mkdir -p "$disk"
cleanup() {
  umount "$disk" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# One checkpoint of the tiny GPT at 2 ranks is about 18.5 MB: 28 MB hold one and part of another.
if ! mount -t tmpfs -o size=28m orthotron_full_disk "$disk" 2>/dev/null; then
  echo "checkpoint_full_disk: SKIPPED: cannot mount a tmpfs here (needs root)"
  exit 77
fi
export OMP_NUM_THREADS=1
launch() { timeout --kill-after=5 300 bash "$src/launch/launch.sh" "$@"; }
fail() { echo "checkpoint_full_disk: FAIL: $*" >&2; exit 1; }
common=(--config "$src/configs/gpt_tiny.yaml" --set logging.progress=false --set logging.log_interval=1
  --set training.train_iters=8 --set training.lr_schedule.warmup=2 --set training.eval_interval=0
  --set training.eval_iters=1 --set training.micro_batch_size=2 --set checkpoint.keep_last=2)

# 1. Stop: the save of iteration 4 does not fit beside iteration 2's.
ck="$disk/stop"
if launch 2 "$bin" "${common[@]}" --set checkpoint.save_interval=2 --set checkpoint.dir="$ck" \
  --set logging.output_dir="$work/stop_out" >"$work/stop.log" 2>&1; then
  fail "stop: the run did not stop on a full disk"
fi
grep -q "save_checkpoint of iteration 4 under '$ck': rank [01]: .*No space left on device" "$work/stop.log" ||
  { cat "$work/stop.log"; fail "stop: the error does not say the disk is full, naming the rank and path"; }
[[ "$(ls "$ck" | tr '\n' ' ')" == "iter_0000002 latest " ]] || fail "stop: left $(ls "$ck" | tr '\n' ' ')"
[[ "$(cat "$ck/latest")" == "iter_0000002" ]] || fail "stop: latest is $(cat "$ck/latest")"
echo "checkpoint_full_disk: the full save stopped the run: $(grep -o 'rank [01]: [^;]*No space left on device' "$work/stop.log" | head -1)"
# auto resumes from iteration 2 (verified: sizes and CRC-32s) and trains on without saving.
launch 2 "$bin" "${common[@]}" --set checkpoint.dir="$ck" --set checkpoint.resume=auto \
  --set checkpoint.save_at_end=false --set training.train_iters=4 \
  --set logging.output_dir="$work/resume_out" >"$work/resume.log" 2>&1 || { cat "$work/resume.log"; fail "resume: run"; }
grep -q "resumed from checkpoint '$ck/iter_0000002' at iteration 2" "$work/resume.log" ||
  { cat "$work/resume.log"; fail "resume: did not resume from iteration 2"; }
grep -q "iteration        4/       4" "$work/resume.log" || fail "resume: training did not go on"
rm -rf "$ck"

# 2. Warn: saves at 2 (fits), 4, 6 and 8 (do not) are logged; training reaches iteration 8.
ck="$disk/warn"
launch 2 "$bin" "${common[@]}" --set checkpoint.save_interval=2 --set checkpoint.dir="$ck" \
  --set checkpoint.on_save_error=warn --set logging.output_dir="$work/warn_out" >"$work/warn.log" 2>&1 ||
  { cat "$work/warn.log"; fail "warn: run"; }
warnings=$(grep -c "warning: save_checkpoint of iteration [468] .*No space left on device.*training goes on" "$work/warn.log" || true)
[[ $warnings == 3 ]] || { cat "$work/warn.log"; fail "warn: $warnings full-disk warnings, expected 3"; }
grep -q "iteration        8/       8" "$work/warn.log" || fail "warn: training did not go on"
[[ "$(ls "$ck" | tr '\n' ' ')" == "iter_0000002 latest " ]] || fail "warn: left $(ls "$ck" | tr '\n' ' ')"
echo "checkpoint_full_disk: under on_save_error: warn, 3 full saves logged, training reached iteration 8, iteration 2 kept"
