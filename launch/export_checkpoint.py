#!/usr/bin/env python3
"""launch/export_checkpoint.py: reads an orthotron sharded checkpoint (engine/checkpoint/checkpoint.h)
with Python's safetensors library, verifies it against its manifest, lists its parameters, and
exports the model as ONE consolidated safetensors file with Megatron or Hugging Face Llama-style
names.

  export_checkpoint.py CKPT                       verify only (prints a one-line summary)
  export_checkpoint.py CKPT --list                verify, then list every parameter: name, shape, dtype,
                                                  and where its pieces are (rank: whole or [begin, end))
  export_checkpoint.py CKPT --out model.safetensors [--names megatron|llama] [--dtype keep|float32|bfloat16|float16]
                                                  [--hf-config config.json]

CKPT is a checkpoint directory (runs/x/checkpoints/iter_0000040) or a checkpoint root; a root
resolves to its newest committed iter_NNNNNNN directory.

Verification (always, before anything is read for export): manifest.json parses and says
format "orthotron.checkpoint"; every shard it lists exists, has the recorded size and CRC-32
(zlib.crc32 over the file), carries the save's identity (metadata checkpoint.save_id, iteration,
rank), and every tensor matches its recorded CRC-32 (a damaged shard is reported naming the tensor).
Reassembly: "model/<name>" in a shard is a whole matrix (its owner's copy) or a 1-D element slice of
the flattened parameter; the ranges come from the shard metadata checkpoint.model_ranges (or the
manifest's layout record), full shapes from the optimizer state metadata. Every element of every
parameter must be covered exactly once. A checkpoint saved with tensor parallelism (manifest
"tensor_parallel" T > 1) holds pieces: shard r is tensor-parallel rank r % T; each rank's piece is
reassembled as above, then the pieces are joined by the layout record's cut ("tp_cuts": rows, in
blocks, or columns; a parameter without a cut is replicated and rank 0's copy is taken).

Llama names: linear_qkv is de-interleaved (Megatron's grouped-query layout: per key/value group, its
query heads, then one key head, then one value head) into q_proj/k_proj/v_proj with
num_attention_heads / num_query_groups from the manifest's resolved config; linear_fc1 is split into
gate_proj (first ffn rows) and up_proj; the rotary embedding is the rotate-half form, as in
Hugging Face Llama, so no row permutation is needed. lm_head.weight is omitted when the embeddings
are tied. Needs safetensors and torch (the project's torch venv has both). Exit status 1 with a
message on any error.
"""
import argparse
import json
import os
import re
import sys
import zlib

try:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
except ImportError as e:  # pragma: no cover - depends on the interpreter
    sys.exit(f"export_checkpoint: needs the safetensors and torch packages ({e}); "
             "use the torch venv, e.g. ~/.cache/orthotron/torch-2.11.0/bin/python")

MANIFEST = "manifest.json"
MODEL_PREFIX = "model/"


class CheckpointError(Exception):
    """A checkpoint that is absent, incomplete, damaged or not understood; the message says which file."""


# ---------------------------------------------------------------------------------------------
# Reading and verification


def resolve_checkpoint(path):
    """A checkpoint directory, or the newest committed iter_NNNNNNN under a checkpoint root."""
    if not os.path.isdir(path):
        raise CheckpointError(f"'{path}' is not a directory")
    if os.path.exists(os.path.join(path, MANIFEST)):
        return path
    iters = sorted(n for n in os.listdir(path) if re.fullmatch(r"iter_\d{7}", n) and os.path.isdir(os.path.join(path, n)))
    if not iters:
        raise CheckpointError(f"'{path}' is not a checkpoint: no {MANIFEST} and no committed iter_NNNNNNN directory in it")
    return os.path.join(path, iters[-1])


def read_manifest(ckpt):
    path = os.path.join(ckpt, MANIFEST)
    try:
        with open(path, "rb") as f:
            m = json.loads(f.read())
    except FileNotFoundError:
        raise CheckpointError(f"'{ckpt}' is not a committed checkpoint: '{path}' is missing")
    except ValueError as e:
        raise CheckpointError(f"'{path}' is not valid JSON: {e}")
    if not isinstance(m, dict) or m.get("format") != "orthotron.checkpoint":
        raise CheckpointError(f"'{path}' is not an orthotron checkpoint manifest "
                              f"(format {m.get('format') if isinstance(m, dict) else None!r}, expected 'orthotron.checkpoint')")
    for key in ("format_version", "save_id", "iteration", "world_size", "shards"):
        if key not in m:
            raise CheckpointError(f"'{path}' has no '{key}'")
    if not isinstance(m["shards"], list) or len(m["shards"]) != m["world_size"]:
        raise CheckpointError(f"'{path}': 'shards' must list {m['world_size']} shards (world_size)")
    return m


def file_crc32(path):
    crc, size = 0, 0
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 22)
            if not block:
                return crc & 0xFFFFFFFF, size
            crc = zlib.crc32(block, crc)
            size += len(block)


def tensor_crc32(t):
    """CRC-32 of a tensor's bytes in C order (what the engine records per tensor)."""
    return zlib.crc32(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()) & 0xFFFFFFFF


def crc_hex(v):
    return f"0x{v:08x}"


class Shard:
    """One verified shard: its tensors (read lazily through safe_open) and metadata."""

    def __init__(self, ckpt, manifest, rank):
        entry = manifest["shards"][rank]
        self.rank = rank
        self.file = entry.get("file", "")
        self.path = os.path.join(ckpt, self.file)
        if not self.file or not os.path.isfile(self.path):
            raise CheckpointError(f"shard {rank} '{self.path}' is missing (the manifest lists it)")
        crc, size = file_crc32(self.path)
        if size != entry.get("bytes"):
            raise CheckpointError(f"shard '{self.path}' has {size} bytes, the manifest says {entry.get('bytes')} "
                                  "(truncated or overwritten)")
        tensor_crcs = entry.get("tensors", {})
        whole_ok = crc_hex(crc) == entry.get("crc32")
        try:
            self.handle = safe_open(self.path, framework="pt")
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"shard '{self.path}' does not parse as safetensors: {e}")
        self.keys = list(self.handle.keys())
        for key in self.keys:
            want = tensor_crcs.get(key)
            if want is None:
                raise CheckpointError(f"shard '{self.path}': tensor '{key}' is not listed in the manifest")
            got = crc_hex(tensor_crc32(self.handle.get_tensor(key)))
            if want != got:
                raise CheckpointError(f"shard '{self.path}': tensor '{key}' has CRC-32 {got}, the manifest says {want} "
                                      "(the shard is damaged)")
        if not whole_ok:
            raise CheckpointError(f"shard '{self.path}' has CRC-32 {crc_hex(crc)}, the manifest says {entry.get('crc32')}; "
                                  "every tensor matches, so the header or metadata is damaged")
        if len(self.keys) != len(tensor_crcs):
            raise CheckpointError(f"shard '{self.path}' holds {len(self.keys)} tensors, the manifest lists {len(tensor_crcs)}")
        self.meta = self.handle.metadata() or {}
        for key, want in (("checkpoint.save_id", str(manifest["save_id"])),
                          ("checkpoint.iteration", str(manifest["iteration"])), ("checkpoint.rank", str(rank))):
            got = self.meta.get(key, "(absent)")
            if got != want:
                raise CheckpointError(f"shard '{self.path}' metadata {key} is {got}, the manifest says {want} "
                                      "(a shard of another save)")
        self.bytes = size

    def model_keys(self):
        return [k for k in self.keys if k.startswith(MODEL_PREFIX)]

    def ranges(self, manifest):
        """{name: (begin, end, whole)} of this shard's model tensors."""
        text = self.meta.get("checkpoint.model_ranges")
        if text is not None:
            return {n: (int(r["begin"]), int(r["end"]), bool(r["whole"])) for n, r in json.loads(text).items()}
        layout = manifest.get("layout") or {}  # fallback: the manifest's layout record
        out = {}
        for n, owner in (layout.get("owners") or {}).items():
            if owner == self.rank:
                out[n] = (0, None, True)
        for n, runs in (layout.get("adamw_ranges") or {}).items():
            for r, b, e in runs:
                if r == self.rank:
                    out[n] = (int(b), int(e), False)
        if not out:
            raise CheckpointError(f"shard '{self.path}': no checkpoint.model_ranges metadata and no layout record "
                                  "in the manifest: the element ranges are unknown")
        return out

    def shapes(self):
        """{name: full shape} from the optimizer state metadata (orthotron.state), when present."""
        out = {}
        try:
            state = json.loads(self.meta.get("orthotron.state", "{}"))
        except ValueError:
            return out
        for part in state.values():
            for n, p in ((part or {}).get("params") or {}).items():
                if "shape" in p:
                    out[n] = [int(x) for x in p["shape"]]
        return out


class Checkpoint:
    """A verified checkpoint: manifest, shards, and every parameter's pieces."""

    def __init__(self, path):
        self.path = resolve_checkpoint(path)
        self.manifest = read_manifest(self.path)
        self.shards = [Shard(self.path, self.manifest, r) for r in range(self.manifest["world_size"])]
        self.tp = int(self.manifest.get("tensor_parallel", 1))
        self.cuts = (self.manifest.get("layout") or {}).get("tp_cuts", {}) if self.tp > 1 else {}
        self.pieces = {}  # name -> [(rank, begin, end, whole)]
        shapes = {}
        for s in self.shards:
            ranges = s.ranges(self.manifest)
            shapes.update(s.shapes())
            for key in s.model_keys():
                name = key[len(MODEL_PREFIX):]
                if name not in ranges:
                    raise CheckpointError(f"shard '{s.path}': tensor '{key}' has no element range in its metadata")
                b, e, whole = ranges[name]
                self.pieces.setdefault(name, []).append((s.rank, b, e, whole))
            missing = set(ranges) - {k[len(MODEL_PREFIX):] for k in s.model_keys()}
            if missing:
                raise CheckpointError(f"shard '{s.path}': the ranges name {sorted(missing)[0]!r}, which the shard does not hold")
        self.piece_shapes = {}  # one tensor-parallel rank's piece (the whole parameter without TP)
        self.shapes = {}  # the whole parameter
        self.dtypes = {}
        for name, pieces in self.pieces.items():
            whole = [p for p in pieces if p[3]]
            first = self.shards[pieces[0][0]].handle.get_slice(MODEL_PREFIX + name)
            if whole:
                self.piece_shapes[name] = list(self.shards[whole[0][0]].handle.get_slice(MODEL_PREFIX + name).get_shape())
            elif name in shapes:
                self.piece_shapes[name] = shapes[name]
            else:
                raise CheckpointError(f"parameter '{name}': only element slices and no recorded full shape")
            self.shapes[name] = list(self.piece_shapes[name])
            cut = self.cuts.get(name)
            if cut is not None:
                dim = {"rows": 0, "columns": 1}.get(cut.get("cut"))
                if dim is None or dim >= len(self.shapes[name]):
                    raise CheckpointError(f"parameter '{name}': tensor-parallel cut {cut} does not fit shape {self.shapes[name]}")
                self.shapes[name][dim] *= self.tp
            self.dtypes[name] = first.get_dtype()
        self.config = parse_config_yaml(self.manifest.get("config", ""))

    def summary(self):
        m = self.manifest
        total = sum(s.bytes for s in self.shards)
        grid = f", tensor-parallel {self.tp}" if self.tp > 1 else ""
        return (f"checkpoint '{self.path}': iteration {m['iteration']}, world size {m['world_size']}{grid}, save id {m['save_id']}, "
                f"format version {m['format_version']}, {len(self.pieces)} parameters, "
                f"{sum(numel(s) for s in self.shapes.values())} elements, {total} bytes in {len(self.shards)} shard(s): verified")

    def parameter(self, name):
        """The full parameter, reassembled from its pieces; every element exactly once."""
        if self.tp == 1:
            return self.piece(name, self.pieces[name])
        by_rank = {}
        for p in self.pieces[name]:
            by_rank.setdefault(p[0] % self.tp, []).append(p)
        cut = self.cuts.get(name)
        if cut is None:  # replicated: every tensor-parallel rank holds the same copy
            return self.piece(name, by_rank.get(0, []))
        missing = [t for t in range(self.tp) if t not in by_rank]
        if missing:
            raise CheckpointError(f"parameter '{name}': no piece of tensor-parallel rank {missing[0]}")
        parts = [self.piece(name, by_rank[t]) for t in range(self.tp)]
        if cut["cut"] == "columns":
            return torch.cat(parts, 1)
        blocks = int(cut.get("blocks", 1))
        r = parts[0].shape[0] // blocks  # rows are [block 0 of every rank, block 1 of every rank, ...]
        return torch.cat([p[b * r:(b + 1) * r] for b in range(blocks) for p in parts], 0)

    def piece(self, name, pieces):
        """One tensor-parallel rank's piece of a parameter (the parameter without TP) from its whole copy or
        element slices; every element exactly once."""
        shape = self.piece_shapes[name]
        if not pieces:
            raise CheckpointError(f"parameter '{name}': no piece in any shard")
        whole = [p for p in pieces if p[3]]
        if whole:
            if len(pieces) != 1:
                raise CheckpointError(f"parameter '{name}': a whole copy on rank {whole[0][0]} and {len(pieces) - 1} more piece(s)")
            t = self.shards[whole[0][0]].handle.get_tensor(MODEL_PREFIX + name)
            if list(t.shape) != shape:
                raise CheckpointError(f"parameter '{name}': shape {list(t.shape)} on rank {whole[0][0]}, expected {shape}")
            return t
        n = numel(shape)
        flat = None
        covered = torch.zeros(n, dtype=torch.int32)
        for rank, b, e, _ in sorted(pieces, key=lambda p: p[1]):
            t = self.shards[rank].handle.get_tensor(MODEL_PREFIX + name)
            if t.dim() != 1 or t.numel() != e - b or not 0 <= b <= e <= n:
                raise CheckpointError(f"parameter '{name}': rank {rank}'s slice has shape {list(t.shape)} for elements "
                                      f"[{b}, {e}) of {n}")
            if flat is None:
                flat = torch.empty(n, dtype=t.dtype)
            flat[b:e] = t
            covered[b:e] += 1
        bad = (covered != 1).nonzero()
        if bad.numel():
            i = int(bad[0])
            raise CheckpointError(f"parameter '{name}': element {i} is covered {int(covered[i])} times by the shards' "
                                  "ranges (expected exactly once)")
        return flat.view(shape)


def numel(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


def parse_config_yaml(text):
    """The resolved config's block mappings as nested dicts of scalars (the engine writes plain block
    YAML: 'key: value' lines, two-space indentation). Lists and strings stay strings."""
    root, stack = {}, [(-1, None)]
    stack[0] = (-1, root)
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#") or ":" not in line:
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        value = value.strip()
        if value == "":
            parent[key] = {}
            stack.append((indent, parent[key]))
        else:
            parent[key] = scalar(value)
    return root


def scalar(v):
    if v in ("true", "false"):
        return v == "true"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v.strip("'\"")


# ---------------------------------------------------------------------------------------------
# Names


LAYER = re.compile(r"decoder\.layers\.(\d+)\.(.+)")


def model_config(ckpt):
    model = ckpt.config.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"'{ckpt.path}/{MANIFEST}': the resolved config has no 'model' section")
    for key in ("num_attention_heads", "num_query_groups", "hidden_size", "ffn_hidden_size"):
        if not isinstance(model.get(key), int):
            raise CheckpointError(f"'{ckpt.path}/{MANIFEST}': config model.{key} is missing or not an integer")
    return model


def deinterleave_qkv(t, heads, groups, name):
    """Megatron's interleaved [groups x (q_per_group + 2) x head_dim, ...] -> (q, k, v) in head order."""
    if heads % groups:
        raise CheckpointError(f"num_attention_heads {heads} is not a multiple of num_query_groups {groups}")
    q_per_group = heads // groups
    rows = t.shape[0]
    if rows % (heads + 2 * groups):
        raise CheckpointError(f"'{name}' has {rows} rows, not a multiple of heads + 2 x groups = {heads + 2 * groups}")
    d = rows // (heads + 2 * groups)
    g = t.reshape(groups, q_per_group + 2, d, *t.shape[1:])
    q = g[:, :q_per_group].reshape(heads * d, *t.shape[1:])
    k = g[:, q_per_group].reshape(groups * d, *t.shape[1:])
    v = g[:, q_per_group + 1].reshape(groups * d, *t.shape[1:])
    return q.contiguous(), k.contiguous(), v.contiguous()


def llama_tensors(name, t, model):
    """[(llama name, tensor)] for one Megatron parameter."""
    if name == "embedding.word_embeddings.weight":
        return [("model.embed_tokens.weight", t)]
    if name == "decoder.final_layernorm.weight":
        return [("model.norm.weight", t)]
    if name == "output_layer.weight":
        return [("lm_head.weight", t)]
    m = LAYER.fullmatch(name)
    if m:
        p = f"model.layers.{m.group(1)}."
        rest = m.group(2)
        simple = {"self_attention.linear_proj.weight": "self_attn.o_proj.weight",
                  "mlp.linear_fc2.weight": "mlp.down_proj.weight",
                  "input_layernorm.weight": "input_layernorm.weight",
                  "pre_mlp_layernorm.weight": "post_attention_layernorm.weight"}
        if rest in simple:
            return [(p + simple[rest], t)]
        qkv = re.fullmatch(r"self_attention\.linear_qkv\.(weight|bias)", rest)
        if qkv:
            q, k, v = deinterleave_qkv(t, model["num_attention_heads"], model["num_query_groups"], name)
            kind = qkv.group(1)
            return [(p + f"self_attn.q_proj.{kind}", q), (p + f"self_attn.k_proj.{kind}", k), (p + f"self_attn.v_proj.{kind}", v)]
        if rest == "mlp.linear_fc1.weight":
            ffn = model["ffn_hidden_size"]
            if t.shape[0] != 2 * ffn:
                raise CheckpointError(f"'{name}' has {t.shape[0]} rows, expected 2 x ffn_hidden_size = {2 * ffn} (gate; up)")
            return [(p + "mlp.gate_proj.weight", t[:ffn].contiguous()), (p + "mlp.up_proj.weight", t[ffn:].contiguous())]
    raise CheckpointError(f"parameter '{name}' has no Llama-style name (unknown Megatron parameter)")


def hf_config(ckpt):
    model = model_config(ckpt)
    data = ckpt.config.get("data") or {}
    tied = bool(model.get("tie_embeddings", False))
    vocab = ckpt.shapes.get("embedding.word_embeddings.weight", [model.get("vocab_size")])[0]
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "hidden_size": model["hidden_size"], "intermediate_size": model["ffn_hidden_size"],
            "num_hidden_layers": model.get("num_layers"), "num_attention_heads": model["num_attention_heads"],
            "num_key_value_heads": model["num_query_groups"], "vocab_size": vocab,
            "max_position_embeddings": data.get("seq_length"), "rms_norm_eps": model.get("norm_epsilon"),
            "rope_theta": model.get("rotary_base"), "tie_word_embeddings": tied,
            "attention_bias": bool(model.get("add_qkv_bias", False)), "mlp_bias": False,
            "initializer_range": model.get("init_std"), "torch_dtype": "float32"}


# ---------------------------------------------------------------------------------------------


def export(ckpt, out, names, dtype):
    model = model_config(ckpt) if names == "llama" else None
    tensors = {}
    for name in sorted(ckpt.pieces):
        t = ckpt.parameter(name)
        if dtype != "keep":
            t = t.to(getattr(torch, dtype))
        for key, value in ([(name, t)] if names == "megatron" else llama_tensors(name, t, model)):
            if key in tensors:
                raise CheckpointError(f"two parameters export to '{key}'")
            tensors[key] = value.contiguous().clone()
    meta = {"format": "pt", "orthotron.source": os.path.abspath(ckpt.path), "orthotron.names": names,
            "orthotron.iteration": str(ckpt.manifest["iteration"]), "orthotron.save_id": str(ckpt.manifest["save_id"])}
    tmp = f"{out}.tmp.{os.getpid()}"
    try:
        save_file(tensors, tmp, metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return tensors


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a checkpoint directory (iter_NNNNNNN) or a checkpoint root (its newest)")
    ap.add_argument("--list", action="store_true", help="list every parameter: name, shape, dtype, pieces")
    ap.add_argument("--out", help="write the consolidated model to this safetensors file")
    ap.add_argument("--names", choices=("megatron", "llama"), default="megatron")
    ap.add_argument("--dtype", choices=("keep", "float32", "bfloat16", "float16"), default="keep")
    ap.add_argument("--hf-config", help="with --names llama: also write a Hugging Face LlamaConfig config.json here")
    a = ap.parse_args(argv)
    if a.hf_config and a.names != "llama":
        ap.error("--hf-config goes with --names llama")
    try:
        ckpt = Checkpoint(a.checkpoint)
        print(ckpt.summary())
        if a.list:
            for name in sorted(ckpt.pieces):
                where = ", ".join(f"rank {r}: " + ("whole" if w else f"[{b}, {e})") for r, b, e, w in sorted(ckpt.pieces[name]))
                print(f"{name}\t{list(ckpt.shapes[name])}\t{ckpt.dtypes[name]}\t{where}")
        if a.out:
            tensors = export(ckpt, a.out, a.names, a.dtype)
            n = sum(t.numel() for t in tensors.values())
            print(f"wrote '{a.out}': {len(tensors)} tensors, {n} elements, {a.names} names")
        if a.hf_config:
            with open(a.hf_config, "w") as f:
                json.dump(hf_config(ckpt), f, indent=1)
                f.write("\n")
            print(f"wrote '{a.hf_config}'")
    except CheckpointError as e:
        print(f"export_checkpoint: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
