#!/usr/bin/env python3
"""Loss curves of orthotron_pretrain runs: validation and smoothed training loss against tokens.

    plot_loss.py RUN_DIR [RUN_DIR ...] --out FILE.png [--title T] [--label NAME ...]
                 [--smooth S] [--no-train] [--ymax Y] [--ymin Y]

Each RUN_DIR is a run's logging.output_dir (or its metrics.jsonl itself). From its metrics.jsonl
the plot takes the "validation" records (val_loss at tokens: markers joined by lines) and the
"train" records (the loss averaged over each log window, smoothed with an exponential moving
average, thin line of the same colour). One colour per run; the legend names each run by its
directory, or by --label (given once per RUN_DIR, in the same order).

A metrics.jsonl holding several runs one after another (engines before the one that truncates it
appended to it) is split at each iteration-0 validation record, and the plot takes the last run
(and says so on stderr).

Writes the PNG with matplotlib's Agg backend (no display needed) and prints its path. Errors (a
missing or empty metrics.jsonl, a line that is not JSON, a file without loss records) exit with
status 2 and a message naming the file and line. Needs matplotlib: on Debian, python3-matplotlib
for /usr/bin/python3.
"""
import argparse
import json
import math
import os
import sys


class MetricsError(Exception):
    """A metrics.jsonl that cannot be plotted; the message names the file (and line)."""


def metrics_path(run: str) -> str:
    """The metrics.jsonl of RUN (a run directory or the file itself)."""
    path = os.path.join(run, "metrics.jsonl") if os.path.isdir(run) else run
    if not os.path.exists(path):
        if not os.path.exists(run):
            raise MetricsError(f"{run}: no such run directory")
        raise MetricsError(f"{path}: no metrics.jsonl here (is '{run}' an orthotron_pretrain logging.output_dir?)")
    return path


def read_runs(path: str) -> list:
    """Every run in PATH as a list of records, in file order; a run opens with an iteration-0 validation."""
    runs, current = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise MetricsError(f"{path}:{number}: not a JSON object ({e.msg})") from None
            if not isinstance(record, dict) or "kind" not in record:
                raise MetricsError(f"{path}:{number}: expected an object with a \"kind\" key, got {line.strip()[:80]}")
            if record["kind"] == "validation" and record.get("iteration") == 0 and current:
                runs.append(current)
                current = []
            current.append(record)
    if current:
        runs.append(current)
    if not runs:
        raise MetricsError(f"{path}: empty (no records yet; did the run log anything?)")
    return runs


def curves(records: list, path: str) -> tuple:
    """(validation [(tokens, loss)], train [(tokens, loss)]) of one run, non-finite losses left out."""

    def finite(x) -> bool:
        return isinstance(x, (int, float)) and math.isfinite(x)

    val = [(r["tokens"], r["val_loss"]) for r in records if r["kind"] == "validation" and finite(r.get("val_loss"))]
    train = [(r["tokens"], r["loss"]) for r in records if r["kind"] == "train" and finite(r.get("loss"))]
    if not val and not train:
        raise MetricsError(f"{path}: no \"validation\" or \"train\" records with a finite loss")
    return val, train


def smooth(values: list, weight: float) -> list:
    """Exponential moving average with bias correction (the first value is kept as it is); weight 0: none."""
    out, avg = [], 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** (i + 1)) if weight > 0 else v)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR", help="a run's output_dir (or its metrics.jsonl)")
    ap.add_argument("--out", required=True, help="the PNG to write")
    ap.add_argument("--title", default=None)
    ap.add_argument("--label", action="append", default=None, help="legend name per RUN_DIR, in order")
    ap.add_argument("--smooth", type=float, default=0.5, help="EMA weight for the training loss in [0, 1) (0: off)")
    ap.add_argument("--no-train", action="store_true", help="validation loss only")
    ap.add_argument("--ymax", type=float, default=None, help="upper loss limit (the first losses are high)")
    ap.add_argument("--ymin", type=float, default=None)
    a = ap.parse_args()
    if a.label is not None and len(a.label) != len(a.runs):
        ap.error(f"--label given {len(a.label)} time(s) for {len(a.runs)} RUN_DIR(s); give one per run or none")
    if not 0 <= a.smooth < 1:
        ap.error(f"--smooth must be in [0, 1), got {a.smooth}")

    try:
        series = []
        for i, run in enumerate(a.runs):
            path = metrics_path(run)
            runs = read_runs(path)
            if len(runs) > 1:
                print(f"plot_loss.py: {path} holds {len(runs)} runs; plotting the last", file=sys.stderr)
            val, train = curves(runs[-1], path)
            name = a.label[i] if a.label else os.path.basename(os.path.normpath(os.path.dirname(path) or "."))
            series.append((name, val, train))
    except (MetricsError, OSError) as e:
        print(f"plot_loss.py: error: {e}", file=sys.stderr)
        return 2

    try:
        import matplotlib
    except ImportError:
        print(f"plot_loss.py: error: matplotlib is not installed for {sys.executable} "
              "(Debian: apt-get install python3-matplotlib, then run /usr/bin/python3 bench/plot_loss.py)",
              file=sys.stderr)
        return 2
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, val, train) in enumerate(series):
        c = colours[i % len(colours)]
        if train and not a.no_train:
            xs, ys = zip(*train)
            ax.plot(xs, smooth(list(ys), a.smooth), color=c, alpha=0.45, linewidth=1.2,
                    label=f"{name} (train, smoothed)")
        if val:
            xs, ys = zip(*val)
            ax.plot(xs, ys, color=c, marker="o", markersize=3.5, linewidth=1.8, label=f"{name} (validation)")
    ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter(sep=""))
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (cross-entropy, nats)")
    ax.set_ylim(bottom=a.ymin, top=a.ymax)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if a.title:
        ax.set_title(a.title)
    fig.tight_layout()
    out_dir = os.path.dirname(a.out)
    try:
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
        fig.savefig(a.out)
    except OSError as e:
        print(f"plot_loss.py: error: cannot write {a.out}: {e}", file=sys.stderr)
        return 2
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
