#!/usr/bin/env python3
"""compare_runs.py: the per-iteration training records of runs that must train alike.

usage: compare_runs.py LABEL ITERATIONS TOLERANCE REFERENCE.jsonl OTHER.jsonl [OTHER.jsonl ...]

The reference must log "train" records for iterations 1..ITERATIONS in metrics.jsonl, every other
run for iterations k..ITERATIONS (k > 1: a run resumed from a checkpoint of iteration k - 1); each
record's loss and gradient norm must lie within TOLERANCE (relative) of the reference's at the same
iteration. Exits 1 naming the first iteration and key that differ; prints the worst relative
difference otherwise.
"""
import json
import sys


def train_records(path):
    with open(path) as f:
        return [json.loads(line) for line in f if '"train"' in line]


def main(argv):
    label, iterations, tolerance = argv[1], int(argv[2]), float(argv[3])
    ref = {r["iteration"]: r for r in train_records(argv[4])}
    if sorted(ref) != list(range(1, iterations + 1)):
        print(f"{label}: the reference {argv[4]} logged iterations {sorted(ref)}, expected 1..{iterations}")
        return 1
    worst = 0.0
    for other in argv[5:]:
        rows = train_records(other)
        its = [r["iteration"] for r in rows]
        if not its or its != list(range(its[0], iterations + 1)):
            print(f"{label}: {other} logged iterations {its}, expected k..{iterations}")
            return 1
        for b in rows:
            a = ref[b["iteration"]]
            for key in ("loss", "grad_norm"):
                rel = abs(a[key] - b[key]) / abs(a[key])
                worst = max(worst, rel)
                if rel > tolerance:
                    print(f"{other}: iteration {a['iteration']} {key} {b[key]} vs {a[key]} (rel {rel:.2e})")
                    return 1
    print(f"{label} over {iterations} iterations: worst relative difference {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
