#!/usr/bin/env bash
# export_e2e.sh: launch/export_checkpoint.py on checkpoints the real binary writes (engine/checkpoint/):
#   1. 1-, 2- and 4-rank checkpoints of the tiny config are verified, listed and exported with
#      Megatron and Llama names; an independent reader (plain python3: struct + json, no
#      safetensors, no torch) reassembles every parameter from the raw shard bytes using the
#      manifest's layout record (owners, adamw_ranges; the exporter reads the shards' own range
#      metadata) and checks (a) the Megatron export equals it byte for byte, shape for shape, with
#      the shapes the resolved config implies, and (b) the Llama export's q/k/v re-interleaved in
#      Megatron's grouped-query order and gate;up concatenated equal linear_qkv and linear_fc1,
#      every other tensor is its renamed Megatron parameter, and nothing is left over; the 4-rank
#      checkpoint re-saved at 2 ranks by a resume at its last iteration exports bitwise the same model,
#      and so does a TP 2 x DP 2 checkpoint and its re-save at TP 1 x DP 1;
#   2. tied embeddings: the Llama export has no lm_head.weight;
#   3. bad input: a flipped byte (the error names the tensor), a truncated shard, a missing shard
#      and a directory that is no checkpoint each fail with a clear message and write no output.
#   usage: export_e2e.sh SOURCE_DIR PRETRAIN_BINARY [PYTHON]; exit 77 (skip) without a Python that
#   has safetensors and torch (ORTHOTRON_PYTHON, then PYTHON, then python3).
set -euo pipefail
src=$1
bin=$2
py=""
for cand in "${ORTHOTRON_PYTHON:-}" "${3:-}" python3; do
  if [[ -n "$cand" ]] && "$cand" -c "import safetensors, torch" >/dev/null 2>&1; then py=$cand; break; fi
done
if [[ -z "$py" ]]; then
  echo "export_e2e: SKIP: no Python with safetensors and torch (set ORTHOTRON_PYTHON)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=1
launch() { timeout --kill-after=5 300 bash "$src/launch/launch.sh" "$@"; }
fail() { echo "export_e2e: FAIL: $*" >&2; exit 1; }
export_py() { "$py" "$src/launch/export_checkpoint.py" "$@"; }
common=(--config "$src/configs/gpt_tiny.yaml" --set logging.progress=false --set training.train_iters=2
  --set training.lr_schedule.warmup=1 --set training.eval_interval=0 --set training.eval_iters=1
  --set training.micro_batch_size=2)

# The independent check: CHECKPOINT_DIR MEGATRON_EXPORT LLAMA_EXPORT.
check() {
  PYTHONPATH="$src/tests/e2e" python3 - "$@" <<'PY'
import json, os, re, struct, sys
from checkpoint_shards import read_shard as read  # safetensors by hand: no safetensors, no torch
ckpt, meg_path, llama_path = sys.argv[1:4]

m = json.load(open(os.path.join(ckpt, "manifest.json")))
layout = m["layout"]
shards = [read(os.path.join(ckpt, s["file"])) for s in m["shards"]]
# Model hyperparameters from the resolved config text (model: section, "  key: value" lines).
cfg = {}
section = None
for line in m["config"].splitlines():
    if not line.startswith(" "):
        section = line.rstrip(":")
    elif section == "model" and ":" in line:
        k, v = line.strip().split(":", 1)
        cfg[k] = v.strip()
L, H = int(cfg["num_layers"]), int(cfg["hidden_size"])
heads, groups, ffn = int(cfg["num_attention_heads"]), int(cfg["num_query_groups"]), int(cfg["ffn_hidden_size"])
V, tied = int(cfg["vocab_size"]), cfg["tie_embeddings"] == "true"
d = H // heads
expect = {"embedding.word_embeddings.weight": [V, H], "decoder.final_layernorm.weight": [H]}
if not tied:
    expect["output_layer.weight"] = [V, H]
for i in range(L):
    p = f"decoder.layers.{i}."
    expect.update({p + "self_attention.linear_qkv.weight": [(heads + 2 * groups) * d, H],
                   p + "self_attention.linear_proj.weight": [H, H], p + "mlp.linear_fc1.weight": [2 * ffn, H],
                   p + "mlp.linear_fc2.weight": [H, ffn], p + "input_layernorm.weight": [H],
                   p + "pre_mlp_layernorm.weight": [H]})
# Reassembly from the manifest's layout record.
ref = {}
for name, owner in layout["owners"].items():
    dt, shape, raw = shards[owner][0]["model/" + name]
    ref[name] = (dt, shape, raw)
for name, runs in layout["adamw_ranges"].items():
    pieces, dtype, end = [], None, 0
    for rank, b, e in sorted(runs, key=lambda r: r[1]):
        if b != end:
            sys.exit(f"{name}: layout runs leave a gap or overlap at element {b}")
        dt, shape, raw = shards[rank][0]["model/" + name]
        if shape != [e - b]:
            sys.exit(f"{name}: rank {rank} holds {shape} for [{b}, {e})")
        pieces.append(raw)
        dtype, end = dt, e
    ref[name] = (dtype, expect.get(name, [end]), b"".join(pieces))
if sorted(ref) != sorted(expect):
    sys.exit(f"checkpoint parameters {sorted(set(ref) ^ set(expect))} differ from what the config implies")
meg, meta = read(meg_path)
if meta.get("orthotron.save_id") != m["save_id"]:
    sys.exit(f"Megatron export metadata save id {meta.get('orthotron.save_id')} != {m['save_id']}")
if sorted(meg) != sorted(ref):
    sys.exit(f"Megatron export names differ: {sorted(set(meg) ^ set(ref))}")
for name, (dt, shape, raw) in ref.items():
    gdt, gshape, graw = meg[name]
    if (gdt, gshape) != (dt, expect[name]) or graw != raw or len(raw) != 4 * eval("*".join(map(str, shape))):
        sys.exit(f"Megatron export: '{name}' {gdt} {gshape} differs from the shards' {dt} {expect[name]}")
# (b) the Llama export, mapped back.
lla, _ = read(llama_path)
used = set()
def take(key):
    if key not in lla:
        sys.exit(f"Llama export has no '{key}'")
    used.add(key)
    return lla[key]
def same(key, name):
    dt, shape, raw = take(key)
    if (dt, shape, raw) != (meg[name][0], meg[name][1], meg[name][2]):
        sys.exit(f"Llama '{key}' differs from Megatron '{name}'")
same("model.embed_tokens.weight", "embedding.word_embeddings.weight")
same("model.norm.weight", "decoder.final_layernorm.weight")
if tied:
    if "lm_head.weight" in lla:
        sys.exit("tied embeddings, yet the Llama export has lm_head.weight")
else:
    same("lm_head.weight", "output_layer.weight")
row = 4 * H
qpg = heads // groups
for i in range(L):
    p, q = f"model.layers.{i}.", f"decoder.layers.{i}."
    same(p + "self_attn.o_proj.weight", q + "self_attention.linear_proj.weight")
    same(p + "mlp.down_proj.weight", q + "mlp.linear_fc2.weight")
    same(p + "input_layernorm.weight", q + "input_layernorm.weight")
    same(p + "post_attention_layernorm.weight", q + "pre_mlp_layernorm.weight")
    Q, K, Vv = (take(p + f"self_attn.{x}_proj.weight") for x in "qkv")
    if Q[1] != [heads * d, H] or K[1] != [groups * d, H] or Vv[1] != [groups * d, H]:
        sys.exit(f"layer {i}: q/k/v shapes {Q[1]} {K[1]} {Vv[1]}")
    inter = b"".join(Q[2][g * qpg * d * row:(g + 1) * qpg * d * row] + K[2][g * d * row:(g + 1) * d * row] +
                     Vv[2][g * d * row:(g + 1) * d * row] for g in range(groups))
    if inter != meg[q + "self_attention.linear_qkv.weight"][2]:
        sys.exit(f"layer {i}: q, k, v re-interleaved differ from linear_qkv")
    G, U = take(p + "mlp.gate_proj.weight"), take(p + "mlp.up_proj.weight")
    if G[1] != [ffn, H] or U[1] != [ffn, H] or G[2] + U[2] != meg[q + "mlp.linear_fc1.weight"][2]:
        sys.exit(f"layer {i}: gate;up differ from linear_fc1")
if used != set(lla):
    sys.exit(f"Llama export has unexpected tensors: {sorted(set(lla) - used)}")
print(f"export_e2e: {os.path.basename(ckpt)} at world size {m['world_size']}: {len(meg)} Megatron and {len(lla)} Llama "
      "tensors equal the shards reassembled independently")
PY
}

# 1. 1, 2 and 4 ranks.
for np in 1 2 4; do
  d="$work/np$np"
  launch "$np" "$bin" "${common[@]}" --set checkpoint.dir="$d/ck" --set logging.output_dir="$d/out" >"$d.log" 2>&1 ||
    { cat "$d.log"; fail "np$np: training run"; }
  export_py "$d/ck" --list >"$d.list" 2>&1 || { cat "$d.list"; fail "np$np: --list"; }
  grep -q "world size $np, .*: verified" "$d.list" || { cat "$d.list"; fail "np$np: no verified summary"; }
  grep -qP "^decoder\.layers\.0\.self_attention\.linear_qkv\.weight\t\[256, 128\]\tF32\trank \d: whole$" "$d.list" ||
    { cat "$d.list"; fail "np$np: listing of linear_qkv"; }
  export_py "$d/ck/iter_0000002" --out "$d/megatron.safetensors" >/dev/null || fail "np$np: Megatron export"
  export_py "$d/ck" --out "$d/llama.safetensors" --names llama --hf-config "$d/config.json" >/dev/null || fail "np$np: Llama export"
  grep -q '"num_key_value_heads": 2' "$d/config.json" || fail "np$np: config.json"
  check "$d/ck/iter_0000002" "$d/megatron.safetensors" "$d/llama.safetensors" || fail "np$np: exports differ from the shards"
done
grep ", rank [0-9]: \[" "$work/np2.list" | head -1 | sed 's/^/export_e2e: a split AdamW parameter: /' || true

# exports_equal LABEL A.safetensors B.safetensors: the same tensors, bitwise.
exports_equal() {
  PYTHONPATH="$src/tests/e2e" python3 - "$@" <<'PY'
import sys
from checkpoint_shards import read_shard
label, (a, _), (b, _) = sys.argv[1], read_shard(sys.argv[2]), read_shard(sys.argv[3])
if sorted(a) != sorted(b) or any(a[k] != b[k] for k in a):
    sys.exit(f"exports differ: {[k for k in a if a.get(k) != b.get(k)][:3]}")
print(f"export_e2e: {label}: the same {len(a)} tensors bitwise")
PY
}

# 1b. The same model under another layout: the 4-rank checkpoint resumed at 2 ranks at its last
#     iteration is saved again right away (resharded by the engine); its Megatron export must equal the
#     4-rank one tensor for tensor, bitwise.
launch 2 "$bin" "${common[@]}" --set checkpoint.resume="$work/np4/ck/iter_0000002" --set checkpoint.dir="$work/re/ck" \
  --set logging.output_dir="$work/re/out" >"$work/re.log" 2>&1 || { cat "$work/re.log"; fail "reshard: resumed run"; }
export_py "$work/re/ck" --out "$work/re/megatron.safetensors" >/dev/null || fail "reshard: Megatron export"
grep -q '"world_size": 2' "$work/re/ck/iter_0000002/manifest.json" || fail "reshard: the re-save is not a 2-rank one"
exports_equal "the 4-rank checkpoint and its 2-rank re-save" "$work/np4/megatron.safetensors" \
  "$work/re/megatron.safetensors" || fail "reshard: the exports of the same model at 4 and 2 ranks differ"

# 1c. Tensor parallelism: a TP 2 x DP 2 checkpoint (pieces joined by the manifest's cuts) exports the
#     same model as its re-save at TP 1 x DP 1, bitwise, in Megatron and Llama names.
launch 4 "$bin" "${common[@]}" --set parallel.tensor_parallel=2 --set checkpoint.dir="$work/tp/ck" \
  --set logging.output_dir="$work/tp/out" >"$work/tp.log" 2>&1 || { cat "$work/tp.log"; fail "tp: training run"; }
launch 1 "$bin" "${common[@]}" --set checkpoint.resume="$work/tp/ck/iter_0000002" --set checkpoint.dir="$work/tp1/ck" \
  --set logging.output_dir="$work/tp1/out" >"$work/tp1.log" 2>&1 || { cat "$work/tp1.log"; fail "tp: re-save at TP 1"; }
for names in megatron llama; do
  export_py "$work/tp/ck" --out "$work/tp/$names.safetensors" --names "$names" >"$work/tp.export" 2>&1 ||
    { cat "$work/tp.export"; fail "tp: $names export"; }
  export_py "$work/tp1/ck" --out "$work/tp1/$names.safetensors" --names "$names" >/dev/null || fail "tp1: $names export"
  exports_equal "TP 2 x DP 2 and its TP 1 re-save, $names names" "$work/tp/$names.safetensors" \
    "$work/tp1/$names.safetensors" || fail "tp: the $names exports at TP 2 and TP 1 differ"
done
grep -q "tensor-parallel 2" "$work/tp.export" || fail "tp: the summary does not name the TP size"

# 2. Tied embeddings: no lm_head.
launch 2 "$bin" "${common[@]}" --set model.tie_embeddings=true --set checkpoint.dir="$work/tied/ck" \
  --set logging.output_dir="$work/tied/out" >"$work/tied.log" 2>&1 || { cat "$work/tied.log"; fail "tied: training run"; }
export_py "$work/tied/ck" --out "$work/tied/megatron.safetensors" >/dev/null || fail "tied: Megatron export"
export_py "$work/tied/ck" --out "$work/tied/llama.safetensors" --names llama >/dev/null || fail "tied: Llama export"
check "$work/tied/ck/iter_0000002" "$work/tied/megatron.safetensors" "$work/tied/llama.safetensors" || fail "tied: exports"

# 3. Bad input: each fails naming the problem and writes nothing.
bad() {  # bad NAME CHECKPOINT REGEX
  if export_py "$2" --out "$work/$1.safetensors" >"$work/$1.err" 2>&1; then fail "$1: accepted"; fi
  grep -qE "$3" "$work/$1.err" || { cat "$work/$1.err"; fail "$1: the message does not match '$3'"; }
  [[ ! -e "$work/$1.safetensors" ]] || fail "$1: wrote an output"
  ls "$work" | grep -q "$1.safetensors.tmp" && fail "$1: left a temporary file"
  echo "export_e2e: $1: $(tail -1 "$work/$1.err")"
}
cp -r "$work/np2/ck/iter_0000002" "$work/flip"
python3 - "$work/flip/rank00001-of-00002.safetensors" <<'PY'
import sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
data[len(data) - 4096] ^= 0x10
open(path, "wb").write(bytes(data))
PY
bad flip "$work/flip" "shard '.*rank00001-of-00002.safetensors': tensor '[^']+' has CRC-32 0x[0-9a-f]{8}, the manifest says 0x[0-9a-f]{8}"
cp -r "$work/np2/ck/iter_0000002" "$work/trunc"
truncate -s -1000 "$work/trunc/rank00000-of-00002.safetensors"
bad trunc "$work/trunc" "shard '.*rank00000-of-00002.safetensors' has [0-9]+ bytes, the manifest says [0-9]+ \(truncated"
cp -r "$work/np2/ck/iter_0000002" "$work/missing"
rm "$work/missing/rank00001-of-00002.safetensors"
bad missing "$work/missing" "shard 1 '.*rank00001-of-00002.safetensors' is missing"
mkdir "$work/empty"
bad empty "$work/empty" "'.*empty' is not a checkpoint"
cp -r "$work/np2/ck/iter_0000002" "$work/nomanifest"
rm "$work/nomanifest/manifest.json"
bad nomanifest "$work/nomanifest" "is not a checkpoint"
echo "export_e2e: PASS"
