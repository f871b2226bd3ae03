#!/usr/bin/env python3
"""compare_runs.py: the per-iteration training records of runs that must train alike.

usage: compare_runs.py LABEL ITERATIONS TOLERANCE REFERENCE.jsonl OTHER.jsonl [OTHER.jsonl ...]

Every run must log ITERATIONS "train" records in metrics.jsonl; each one's loss and gradient norm
must lie within TOLERANCE (relative) of the reference's at the same iteration. Exits 1 naming the
first iteration and key that differ; prints the worst relative difference otherwise.
"""
import json
import sys


def train_records(path):
    with open(path) as f:
        return [json.loads(line) for line in f if '"train"' in line]


def main(argv):
    label, iterations, tolerance = argv[1], int(argv[2]), float(argv[3])
    ref = train_records(argv[4])
    worst = 0.0
    for other in argv[5:]:
        rows = train_records(other)
        if len(rows) != iterations or len(ref) != iterations:
            print(f"{label}: expected {iterations} train records, got {len(ref)} (reference) and {len(rows)} ({other})")
            return 1
        for a, b in zip(ref, rows):
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
