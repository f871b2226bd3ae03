#!/usr/bin/python3
"""One orthotron_pretrain setting at two values, side by side: ms per iteration and optimizer ms.

    /usr/bin/python3 bench/bench_ab.py --key parallel.overlap_backward --values false,true
        [--config configs/gpt_small.yaml] [--layouts 2x1,4x1] [--set KEY=VALUE]... [--rounds 2]
        [--iters 30] [--skip 10] [--log-interval 10] [--runs-dir runs/bench_ab]
        [--out bench/results/ab_bench.md]

--key binary compares two builds instead: its --values are two orthotron_pretrain paths (copy the
baseline's binary aside before rebuilding; the project's libraries are linked in statically).

For each layout RANKSxTHREADS, --rounds rounds of one short run per value, the values alternating
so that drift on the machine falls on both; each run's figures are the medians over its log
windows after the first --skip iterations (bench_common.window_medians), and each value's figure is
the median over its rounds. The ratio is the second value's over the first's. Every --set applies to
every run. Prints the table and writes it, with the machine and load, to --out (and a JSON beside it).
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402
from bench_pretrain import layouts  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--key", required=True, help="the dotted config key to vary")
    ap.add_argument("--values", required=True, help="two values, comma-separated: baseline,candidate")
    ap.add_argument("--config", default="configs/gpt_small.yaml")
    ap.add_argument("--layouts", type=layouts, default=layouts("2x1,4x1"), help="RANKSxTHREADS, comma-separated")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE applied to every run")
    ap.add_argument("--binary", default="build/bin/orthotron_pretrain")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--skip", type=int, default=10, help="warm-up iterations left out of the medians")
    ap.add_argument("--log-interval", type=int, default=10)
    ap.add_argument("--runs-dir", default="runs/bench_ab")
    ap.add_argument("--out", default="bench/results/ab_bench.md")
    a = ap.parse_args()
    os.chdir(bc.ROOT)
    values = a.values.split(",")
    if len(values) != 2:
        ap.error(f"--values needs two comma-separated values, got '{a.values}'")
    if a.iters <= a.skip or a.rounds < 1:
        ap.error(f"--iters ({a.iters}) must exceed --skip ({a.skip}) and --rounds ({a.rounds}) be at least 1")

    rows = []
    t_start = time.time()
    for ranks, threads in a.layouts:
        runs = {v: [] for v in values}
        for rnd in range(a.rounds):
            for v in values:
                label = f"binary{values.index(v)}" if a.key == "binary" else v
                run_dir = os.path.abspath(os.path.join(a.runs_dir, f"{ranks}x{threads}_{label}_{rnd}"))
                binary = v if a.key == "binary" else a.binary
                keyed = [] if a.key == "binary" else [f"{a.key}={v}"]
                sets = a.set + keyed + [f"training.train_iters={a.iters}", "training.eval_interval=0",
                                "training.eval_iters=1", f"logging.log_interval={a.log_interval}",
                                f"training.lr_schedule.warmup={min(5, a.iters - 1)}"]
                bc.log(f"[bench_ab] {ranks} rank(s) x {threads} thread(s), {a.key}={v}, round {rnd + 1}")
                info = bc.run_pretrain(run_dir, ranks, threads, a.config, sets, binary)
                med = bc.window_medians(bc.read_metrics(run_dir), a.skip)
                runs[v].append({**med, "load_before": info["load_before"], "busy_during": info["busy_during"],
                                "command": info["command"]})
                bc.log(f"[bench_ab]   {med['ms_per_iteration']:.1f} ms/iteration, optimizer {med['optimizer_ms']:.1f} ms")
        fig = {v: {k: statistics.median(r[k] for r in runs[v]) for k in ("ms_per_iteration", "optimizer_ms")}
               for v in values}
        rows.append({"ranks": ranks, "threads": threads, "figures": fig, "runs": runs})

    text = markdown(rows, a, values, time.time() - t_start)
    print(text)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump({"machine": bc.machine(), "key": a.key, "values": values, "config": a.config, "sets": a.set,
                   "rounds": a.rounds, "iters": a.iters, "skip": a.skip, "rows": rows}, f, indent=1)
    return 0


def markdown(rows: list, a: argparse.Namespace, values: list, seconds: float) -> str:
    v0, v1 = values
    lines = [
        "# One setting at two values (bench/bench_ab.py)",
        "",
        f"Machine: {bc.machine()}. {a.config} with {' '.join('--set ' + s for s in a.set) or 'no other overrides'}; "
        f"{a.key} = {v0} against {v1}, {a.rounds} alternating round(s) of {a.iters} iterations; per run the "
        f"medians over the {a.log_interval}-iteration log windows after the first {a.skip}, per value the median "
        "over its rounds. Ratio: the second value's over the first's.",
        "",
        f"| ranks x threads | ms/iteration ({v0}) | ms/iteration ({v1}) | ratio | optimizer ms ({v0}) | "
        f"optimizer ms ({v1}) | ratio | every run's optimizer ms ({v0}; {v1}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f0, f1 = r["figures"][v0], r["figures"][v1]
        each = "; ".join(", ".join(f"{x['optimizer_ms']:.1f}" for x in r["runs"][v]) for v in values)
        lines.append(
            f"| {r['ranks']} x {r['threads']} | {f0['ms_per_iteration']:.1f} | {f1['ms_per_iteration']:.1f} | "
            f"{f1['ms_per_iteration'] / f0['ms_per_iteration']:.3f} | {f0['optimizer_ms']:.1f} | "
            f"{f1['optimizer_ms']:.1f} | {f1['optimizer_ms'] / f0['optimizer_ms']:.3f} | {each} |")
    lines += ["", f"Total time: {seconds:.0f} s. Every run's command line is in the JSON beside this file.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
