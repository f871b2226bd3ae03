#!/usr/bin/env bash
# demo_e2e.sh: the main job end to end through the real binary and real ranks: orthotron_demo on
# 2 ranks must lower the loss, save per-rank optimizer state, resume from it on 2 ranks, and refuse
# (non-zero exit, clear message, no hang) to resume it on 3 ranks.
#   usage: demo_e2e.sh SOURCE_DIR DEMO_BINARY
set -euo pipefail
src=$1 demo=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
launch() { timeout --kill-after=5 120 bash "$src/launch/launch.sh" "$@"; }

launch 2 "$demo" --config "$src/configs/demo.yaml" --steps 60 --save "$work/state.safetensors" >"$work/run1.log" 2>&1
cat "$work/run1.log" | grep -E "^step|saved"
first=$(grep -m1 '^step' "$work/run1.log" | sed -E 's/.*lm loss ([0-9.]+).*/\1/')
last=$(grep '^step' "$work/run1.log" | tail -1 | sed -E 's/.*lm loss ([0-9.]+).*/\1/')
awk -v a="$first" -v b="$last" 'BEGIN { if (!(b < a - 1.0)) { print "FAIL: loss went from " a " to " b; exit 1 } }'
test -f "$work/state.rank00000-of-00002.safetensors"
test -f "$work/state.rank00001-of-00002.safetensors"

launch 2 "$demo" --config "$src/configs/demo.yaml" --steps 5 --resume "$work/state.safetensors" >"$work/run2.log" 2>&1
grep -q "resumed optimizer state" "$work/run2.log"

if launch 3 "$demo" --config "$src/configs/demo.yaml" --steps 5 --resume "$work/state.safetensors" >"$work/run3.log" 2>&1; then
  echo "FAIL: resuming 2-rank state on 3 ranks succeeded"
  exit 1
fi
grep -q "fatal on rank" "$work/run3.log"
# Every shipped config trains the demo model (a config that cannot is a broken example).
for cfg in "$src"/configs/*.yaml; do
  launch 1 "$demo" --config "$cfg" --steps 1 >"$work/cfg.log" 2>&1 || { cat "$work/cfg.log"; echo "FAIL: $cfg"; exit 1; }
done
# A malformed option names itself.
if launch 1 "$demo" --steps abc >"$work/bad.log" 2>&1; then echo "FAIL: --steps abc accepted"; exit 1; fi
grep -q -- "--steps must be an integer in \[0, 100000000\], got 'abc'" "$work/bad.log"

echo "demo_e2e: OK (loss $first -> $last; resume on 2 ranks worked; on 3 ranks refused)"
