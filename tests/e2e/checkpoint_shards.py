#!/usr/bin/env python3
"""checkpoint_shards.py: an independent reader of orthotron's sharded checkpoints (plain Python, no
torch), for the end-to-end scripts.

  read_shard(path)          -> ({name: (dtype, shape, bytes)}, metadata) of one safetensors file
  shards(dir)               -> (manifest, [read_shard(...) per grid rank])
  model_parameters(dir)     -> {name: (dtype, shape, bytes)}: every parameter whole, from a checkpoint
                               saved without tensor parallelism (each Muon matrix from its owner,
                               each AdamW parameter from its runs in element order)

As a program:
  checkpoint_shards.py same DIR_A DIR_B
      every shard file of A holds bitwise the same tensors as B's file of the same grid rank
  checkpoint_shards.py close DIR_A DIR_B TOLERANCE
      both saved without tensor parallelism; every float32 parameter of A within TOLERANCE (max abs)
      of B's; prints the worst
"""
import json
import os
import struct
import sys


def read_shard(path):  # u64 header length, JSON header, data
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    return {k: (v["dtype"], v["shape"], data[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in header.items()}, meta


def shards(d):
    m = json.load(open(os.path.join(d, "manifest.json")))
    w = m["world_size"]
    return m, [read_shard(os.path.join(d, "rank%05d-of-%05d.safetensors" % (r, w))) for r in range(w)]


def model_parameters(d):
    m, files = shards(d)
    if m.get("tensor_parallel", 1) != 1:
        sys.exit(f"{d}: saved at tensor_parallel {m['tensor_parallel']}; model_parameters reads TP 1 only")
    layout, out = m["layout"], {}
    for name, r in layout["owners"].items():
        out[name] = files[r][0]["model/" + name]
    for name, runs in layout["adamw_ranges"].items():
        pieces = [files[r][0]["model/" + name] for r, b, e in sorted(runs, key=lambda x: x[1])]
        out[name] = (pieces[0][0], [sum(e - b for _, b, e in runs)], b"".join(p[2] for p in pieces))
    return out


def main(argv):
    if argv[1] == "same":
        (ma, a), (mb, b) = shards(argv[2]), shards(argv[3])
        if (ma["world_size"], ma.get("tensor_parallel", 1)) != (mb["world_size"], mb.get("tensor_parallel", 1)):
            print(f"grids differ: {ma['world_size']}/{ma.get('tensor_parallel', 1)} vs "
                  f"{mb['world_size']}/{mb.get('tensor_parallel', 1)}")
            return 1
        for r, ((ta, _), (tb, _)) in enumerate(zip(a, b)):
            if sorted(ta) != sorted(tb):
                print(f"rank {r}: tensor sets differ: {sorted(set(ta) ^ set(tb))[:5]}")
                return 1
            for k in ta:
                if ta[k] != tb[k]:
                    print(f"rank {r}: tensor {k} differs")
                    return 1
        print(f"{len(a)} shards, {sum(len(t) for t, _ in a)} tensors bitwise equal")
        return 0
    if argv[1] == "close":
        a, b, tol = model_parameters(argv[2]), model_parameters(argv[3]), float(argv[4])
        if sorted(a) != sorted(b):
            print(f"parameter sets differ: {sorted(set(a) ^ set(b))[:5]}")
            return 1
        worst, where = 0.0, ""
        for k in a:
            if a[k][0] != "F32" or a[k][:2] != b[k][:2]:
                print(f"{k}: {a[k][:2]} vs {b[k][:2]} (float32 of one shape expected)")
                return 1
            n = len(a[k][2]) // 4
            va, vb = struct.unpack(f"<{n}f", a[k][2]), struct.unpack(f"<{n}f", b[k][2])
            diff = max(abs(x - y) for x, y in zip(va, vb))
            if diff > worst:
                worst, where = diff, k
        print(f"{len(a)} parameters, max |difference| {worst:.3g} ({where})")
        return 0 if worst <= tol else 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
