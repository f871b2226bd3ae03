#!/usr/bin/env bash
# reshard_e2e.sh: resuming a sharded checkpoint at another data-parallel size (engine/checkpoint/
# reshard.h), through the real binary and real ranks:
#   1. save at 4 ranks (iteration 4) and resume at 2 and at 3; save at 2 and resume at 4. Each
#      resume saves again right away (train_iters = 4, the end save) and an independent Python
#      safetensors reader proves that the union of the new shards equals the old union bitwise:
#      every model parameter, every Muon momentum and every element of the AdamW moments present
#      exactly once in each, same dtypes and bytes, same step counts, iteration and data position;
#   2. each resharded resume also trains on to iteration 7 at the new size: the losses are finite;
#   3. a checkpoint of another model saved at another size is refused naming the parameter;
#   4. resume=auto picks a checkpoint of another size and reshards it.
#   5. layout B resumes under another bucket size (another cut) with bitwise the same losses.
#   usage: reshard_e2e.sh SOURCE_DIR PRETRAIN_BINARY
set -euo pipefail
src=$1
bin=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=1
launch() { timeout --kill-after=5 300 bash "$src/launch/launch.sh" "$@"; }
fail() { echo "reshard_e2e: FAIL: $*" >&2; exit 1; }
common=(--config "$src/configs/gpt_tiny.yaml" --set logging.progress=false --set logging.log_interval=1
  --set training.lr_schedule.warmup=2 --set training.eval_interval=0 --set training.eval_iters=1
  --set training.micro_batch_size=2)

# The union of a checkpoint's shards, assembled through its own manifest's layout record, equals
# another's bitwise; each tensor of each shard is used exactly once.
union_equal() {
  PYTHONPATH="$src/tests/e2e" python3 - "$@" <<'PY'
import json, os, sys
from checkpoint_shards import read_shard
old_dir, new_dir, new_world = sys.argv[1], sys.argv[2], int(sys.argv[3])

def union(d):
    m = json.load(open(os.path.join(d, "manifest.json")))
    world, layout = m["world_size"], m["layout"]
    shards, states = [], []
    for r in range(world):
        t, meta = read_shard(os.path.join(d, "rank%05d-of-%05d.safetensors" % (r, world)))
        shards.append(t)
        states.append(json.loads(meta["orthotron.state"]))
    used = set()
    out, steps = {}, {}
    def take(r, key):
        if (r, key) in used: sys.exit(f"{d}: rank {r} tensor {key} used twice")
        used.add((r, key))
        return shards[r][key]
    for name, r in layout["owners"].items():
        out["model/" + name] = take(r, "model/" + name)
        if "muon/%s/momentum" % name in shards[r]:
            out["muon/%s/momentum" % name] = take(r, "muon/%s/momentum" % name)
        steps[name] = states[r]["muon"]["params"][name]["step"]
    for name, runs in layout["adamw_ranges"].items():
        runs = sorted(runs, key=lambda x: x[1])
        pos = 0
        for key in ["model/" + name, "adamw/%s/exp_avg" % name, "adamw/%s/exp_avg_sq" % name]:
            pieces = [(r, shards[r].get(key)) for r, b, e in runs]
            if key != "model/" + name and all(p is None for _, p in pieces): continue
            if any(p is None for _, p in pieces): sys.exit(f"{d}: {key} present on some ranks only")
            dtypes = {p[0] for _, p in pieces}
            if len(dtypes) != 1: sys.exit(f"{d}: {key} has dtypes {dtypes}")
            out[key] = (dtypes.pop(), [sum(e - b for _, b, e in runs)], b"".join(take(r, key)[2] for r, _ in pieces))
        for r, b, e in runs:
            if b != pos: sys.exit(f"{d}: {name} runs leave a gap or overlap at element {pos} (next run starts at {b})")
            pos = e
            s = states[r]["adamw"]["params"][name]["step"]
            if steps.setdefault(name, s) != s: sys.exit(f"{d}: {name} step differs between ranks")
            if states[r]["adamw"]["params"][name]["range"] != [b, e]: sys.exit(f"{d}: {name} range mismatch on rank {r}")
    left = {(r, k) for r in range(world) for k in shards[r]} - used
    if left: sys.exit(f"{d}: tensors not accounted for by the layout record: {sorted(left)[:5]}")
    return m, out, steps

mo, a, sa = union(old_dir)
mn, b, sb = union(new_dir)
if mn["world_size"] != new_world: sys.exit(f"new checkpoint has world size {mn['world_size']}, expected {new_world}")
if mn["world_size"] == mo["world_size"]: sys.exit("the checkpoints have the same world size")
for k in ("iteration", "consumed_samples", "skipped_iterations", "nan_iterations"):
    if mo[k] != mn[k]: sys.exit(f"{k}: {mo[k]} saved, {mn[k]} after the reshard")
if sorted(a) != sorted(b): sys.exit(f"tensor sets differ: {sorted(set(a) ^ set(b))[:5]}")
if sa != sb: sys.exit("step counts differ: " + str({k: (sa[k], sb.get(k)) for k in sa if sa[k] != sb.get(k)}))
if not any(k.startswith("muon/") for k in a) or not any(k.startswith("adamw/") for k in a):
    sys.exit("no Muon momentum or no AdamW moments in the checkpoint")
for k in a:
    if a[k][0] != b[k][0] or a[k][2] != b[k][2]:
        sys.exit(f"{k}: differs after resharding ({a[k][0]} vs {b[k][0]}, {len(a[k][2])} vs {len(b[k][2])} bytes)")
print(f"reshard_e2e: {len(a)} tensors ({sum(len(v[2]) for v in a.values())} bytes) equal bitwise, "
      f"{mo['world_size']} -> {mn['world_size']} ranks, each present exactly once")
PY
}

finite_losses() {  # finite_losses METRICS FIRST LAST
  python3 - "$@" <<'PY'
import json, math, sys
path, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = {r["iteration"]: r["loss"] for r in (json.loads(l) for l in open(path)) if r.get("kind") == "train"}
want = list(range(first, last + 1))
if sorted(rows) != want: sys.exit(f"{path}: iterations {sorted(rows)}, expected {want}")
bad = {i: rows[i] for i in want if not math.isfinite(rows[i])}
if bad: sys.exit(f"{path}: non-finite losses {bad}")
print("reshard_e2e: losses " + ", ".join(f"{rows[i]:.4f}" for i in want))
PY
}

# 1 + 2. Save at 4 and at 2; reshard 4 -> 2, 4 -> 3, 2 -> 4.
for w in 4 2; do
  launch "$w" "$bin" "${common[@]}" --set training.train_iters=4 --set checkpoint.dir="$work/w$w" \
    --set logging.output_dir="$work/w${w}_out" >"$work/w$w.log" 2>&1 || { cat "$work/w$w.log"; fail "save at $w ranks"; }
  [[ -f "$work/w$w/iter_0000004/manifest.json" ]] || fail "no checkpoint at $w ranks"
done
for pair in 4:2 4:3 2:4; do
  old=${pair%%:*}
  np=${pair##*:}
  ck="$work/w$old/iter_0000004"
  name="r${old}to$np"
  launch "$np" "$bin" "${common[@]}" --set training.train_iters=4 --set checkpoint.resume="$ck" \
    --set checkpoint.dir="$work/$name" --set logging.output_dir="$work/${name}_out" >"$work/$name.log" 2>&1 ||
    { cat "$work/$name.log"; fail "$name: resharded resume"; }
  line=$(grep "resumed from checkpoint '$ck' at iteration 4, $((8 * old)) consumed samples" "$work/$name.log") ||
    { cat "$work/$name.log"; fail "$name: no resume line"; }
  echo "reshard_e2e: $name: ${line#*] }"
  [[ -f "$work/$name/iter_0000004/manifest.json" ]] || { cat "$work/$name.log"; fail "$name: no save right after the load"; }
  union_equal "$ck" "$work/$name/iter_0000004" "$np" || fail "$name: the resharded state differs from the saved one"
  launch "$np" "$bin" "${common[@]}" --set training.train_iters=7 --set checkpoint.resume="$ck" \
    --set logging.output_dir="$work/${name}_train_out" >"$work/${name}_train.log" 2>&1 ||
    { cat "$work/${name}_train.log"; fail "$name: training on after the resharded resume"; }
  grep -q "iteration        7/       7" "$work/${name}_train.log" || fail "$name: did not reach iteration 7"
  finite_losses "$work/${name}_train_out/metrics.jsonl" 5 7 || fail "$name: losses after the resharded resume"
done

# 3. A checkpoint of another model (a narrower MLP) saved at 4 ranks, resumed at 2: refused, naming it.
if launch 2 "$bin" "${common[@]}" --set training.train_iters=4 --set model.ffn_hidden_size=320 \
  --set checkpoint.resume="$work/w4/iter_0000004" --set logging.output_dir="$work/other_out" >"$work/other.log" 2>&1; then
  fail "other: a checkpoint of another model was accepted at another world size"
fi
grep -q "checkpoint of another model (saved at data-parallel size 4, this job runs 2): rank [01]: parameter '.*mlp.linear_fc1.weight' has shape \\[704, 128\\] in the checkpoint, this model's is \\[640, 128\\]" "$work/other.log" ||
  { cat "$work/other.log"; fail "other: the error does not name the parameter and shapes"; }
# 4. resume=auto finds the 4-rank checkpoint and reshards it at 3 ranks, then trains and saves at 3.
cp -r "$work/w4" "$work/auto"
launch 3 "$bin" "${common[@]}" --set training.train_iters=5 --set checkpoint.resume=auto --set checkpoint.dir="$work/auto" \
  --set logging.output_dir="$work/auto_out" >"$work/auto.log" 2>&1 || { cat "$work/auto.log"; fail "auto: run"; }
grep -q "resumed from checkpoint '$work/auto/iter_0000004' at iteration 4" "$work/auto.log" || { cat "$work/auto.log"; fail "auto: no resharded resume"; }
grep -q '"world_size": 3' "$work/auto/iter_0000005/manifest.json" || fail "auto: iteration 5 was not saved at 3 ranks"
# 5. Layout B's cut follows its buckets: a checkpoint saved at iteration 4 with 1 MiB buckets resumes
#    with 2 MiB ones (another cut, so resharded) and trains on to iteration 7 with the same losses, bit
#    for bit, as the run that never stopped: the reduce-scatter sums each element in rank order and
#    Newton-Schulz is per matrix, whatever the cut. Clipping is off because the logged gradient norm
#    is a float32 sum taken shard by shard, which the cut moves in its last bits.
layout_b=(--set parallel.shard_layout=element_wise --set training.max_grad_norm=0 --set training.train_iters=7)
launch 2 "$bin" "${common[@]}" "${layout_b[@]}" --set parallel.bucket_mb=1 --set checkpoint.dir="$work/b1" \
  --set checkpoint.save_interval=4 --set logging.output_dir="$work/b1_out" >"$work/b1.log" 2>&1 ||
  { cat "$work/b1.log"; fail "layout B, 1 MiB buckets: run"; }
grep -Eq "all-gather: ([2-9]|[1-9][0-9]+) overlapped bucket" "$work/b1.log" || fail "layout B: 1 MiB is one bucket here"
launch 2 "$bin" "${common[@]}" "${layout_b[@]}" --set parallel.bucket_mb=2 --set checkpoint.resume="$work/b1/iter_0000004" \
  --set logging.output_dir="$work/b2_out" >"$work/b2.log" 2>&1 || { cat "$work/b2.log"; fail "layout B, 2 MiB buckets: resume"; }
grep -q "resumed from checkpoint '$work/b1/iter_0000004' at iteration 4.*saved on another grid" "$work/b2.log" ||
  { cat "$work/b2.log"; fail "layout B: another bucket size was not resharded"; }
python3 - "$work/b1_out/metrics.jsonl" "$work/b2_out/metrics.jsonl" <<'PY' || fail "layout B: the resumed run's losses differ"
import json, sys
a, b = ({r["iteration"]: r["loss"] for r in map(json.loads, open(p)) if r.get("kind") == "train"} for p in sys.argv[1:3])
want = [5, 6, 7]
if sorted(b) != want: sys.exit(f"resumed iterations {sorted(b)}, expected {want}")
if any(a[i] != b[i] for i in want): sys.exit(f"losses differ: {[a[i] for i in want]} vs {[b[i] for i in want]}")
print("reshard_e2e: layout B, 1 MiB -> 2 MiB buckets: losses " + ", ".join(f"{b[i]:.6f}" for i in want) + " bitwise")
PY
echo "reshard_e2e: OK"
