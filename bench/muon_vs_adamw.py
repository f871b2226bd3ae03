#!/usr/bin/python3
"""Muon against AdamW on one model and one token budget, each after a small learning-rate sweep.

    /usr/bin/python3 bench/muon_vs_adamw.py [--config configs/gpt_small.yaml] [--iters 150]
        [--muon-lrs 0.01,0.02,0.04] [--adamw-lrs 0.001,0.003,0.01] [--budgets 0.5,0.75]
        [--eval-interval 10] [--ranks 2] [--threads 1] [--runs-dir runs/muon_vs_adamw]
        [--results-dir bench/results] [--analyze-only]

1. Sweep: orthotron_pretrain with the config's Muon setup (hidden matrices on Muon at each
   --muon-lrs value; embeddings, output layer and norms on the config's AdamW group, unchanged),
   then all-AdamW at each --adamw-lrs value (every parameter on AdamW, betas 0.9/0.95, no weight
   decay, the fused QKV and fc1 not split). Same seeds, data order, schedule and --iters for all.
2. The best lr of each optimizer: the lowest final validation loss.
3. Budget runs: Muon at its best lr with shorter budgets (--budgets, fractions of --iters), each
   with its own complete schedule (warm-up, stable, decay): a WSD run's loss drops in its decay, so
   where the full-budget curve crosses a loss says little about what a shorter run would reach.
4. Token efficiency: the fraction of AdamW's tokens that Muon needs to reach AdamW's final
   validation loss, (a) from the budget runs (final loss against budget, linear between budgets;
   the headline figure) and (b) from where the full-budget Muon curve crosses it (linear between
   validation points; biased by the decay phase, reported beside it). Also the losses at equal
   tokens: at the end of the stable phase and at the end.

A run whose directory already holds a finished metrics.jsonl made with the same command is not
run again (--rerun forces it); --analyze-only runs nothing. Writes RESULTS_DIR/muon_vs_adamw.json,
.md, .png (the best two runs) and muon_vs_adamw_all.png (every sweep run).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402


def lr_list(text: str) -> list:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got '{text}'")
    return values


def crossing(points: list, target: float):
    """The first x where the piecewise-linear curve through POINTS [(x, loss)] reaches TARGET, or None."""
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if y1 <= target:
            if y0 <= target:
                return x0
            return x0 + (x1 - x0) * (y0 - target) / (y0 - y1)
    return points[0][0] if points and points[0][1] <= target else None


def value_at(points: list, x: float) -> float:
    """The piecewise-linear curve through POINTS at X (inside its range)."""
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    raise ValueError(f"{x} is outside [{points[0][0]}, {points[-1][0]}]")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/gpt_small.yaml")
    ap.add_argument("--binary", default="build/bin/orthotron_pretrain")
    ap.add_argument("--iters", type=int, default=150)
    ap.add_argument("--muon-lrs", type=lr_list, default=lr_list("0.01,0.02,0.04"))
    ap.add_argument("--adamw-lrs", type=lr_list, default=lr_list("0.001,0.003,0.01"))
    ap.add_argument("--budgets", type=lr_list, default=lr_list("0.5,0.75"),
                    help="fractions of --iters for the Muon budget runs (empty: none)")
    ap.add_argument("--eval-interval", type=int, default=10)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per rank (OMP_NUM_THREADS)")
    ap.add_argument("--runs-dir", default="runs/muon_vs_adamw")
    ap.add_argument("--results-dir", default="bench/results")
    ap.add_argument("--analyze-only", action="store_true")
    ap.add_argument("--quiet-wait", type=float, default=60,
                    help="seconds to wait at most for a quiet CPU before each run (the losses do not depend on it)")
    ap.add_argument("--rerun", action="store_true")
    ap.add_argument("--ymax", type=float, default=None, help="upper loss limit of the best-two plot")
    a = ap.parse_args()
    os.chdir(bc.ROOT)
    if any(not 0 < f < 1 for f in a.budgets):
        ap.error("--budgets are fractions in (0, 1)")

    runs = {}  # name -> dict(optimizer, lr, iters, sets)

    def plan(optimizer: str, lr: float, iters: int) -> str:
        name = f"{optimizer}_lr{lr:g}" + ("" if iters == a.iters else f"_iters{iters}")
        sets = [f"training.train_iters={iters}", f"training.eval_interval={a.eval_interval}"]
        sets += [f"optimizer.groups.muon.lr={lr!r}"] if optimizer == "muon" else bc.all_adamw_sets(lr)
        runs[name] = {"optimizer": optimizer, "lr": lr, "iters": iters, "sets": sets,
                      "dir": os.path.join(a.runs_dir, name)}
        return name

    def execute(name: str) -> None:
        r = runs[name]
        stamp = os.path.join(r["dir"], "bench_run.json")
        key = {"sets": r["sets"], "config": a.config, "ranks": a.ranks, "threads": a.threads}
        if os.path.exists(stamp) and bc.summary(bc.read_metrics(r["dir"])) and not a.rerun:
            with open(stamp) as f:
                old = json.load(f)
            if old.get("key") == key:
                r["info"] = old["info"]
                bc.log(f"[muon_vs_adamw] {name}: already done ({r['dir']})")
                return
        if a.analyze_only:
            raise SystemExit(f"muon_vs_adamw.py: {name} has no finished run in {r['dir']} (drop --analyze-only)")
        bc.log(f"[muon_vs_adamw] {name}: running ({r['iters']} iterations, {a.ranks} ranks x {a.threads} threads)")
        info = bc.run_pretrain(os.path.abspath(r["dir"]), a.ranks, a.threads, a.config, r["sets"], a.binary,
                               a.quiet_wait)
        s = bc.summary(bc.read_metrics(r["dir"]))
        bc.log(f"[muon_vs_adamw] {name}: final validation loss {s['final_val_loss']:.4f} "
               f"in {info['wall_seconds']:.0f} s (load {info['load_before'][0]:.2f} -> {info['load_after'][0]:.2f}"
               f"; also busy during: {', '.join(info['busy_during']) or 'nothing'})")
        r["info"] = info
        with open(stamp, "w") as f:
            json.dump({"key": key, "info": info}, f, indent=1)

    t_start = time.time()
    sweep = [plan("muon", lr, a.iters) for lr in a.muon_lrs] + [plan("adamw", lr, a.iters) for lr in a.adamw_lrs]
    for name in sweep:
        execute(name)

    def final(name: str) -> float:
        return bc.summary(bc.read_metrics(runs[name]["dir"]))["final_val_loss"]

    best = {opt: min((n for n in sweep if runs[n]["optimizer"] == opt), key=final) for opt in ("muon", "adamw")}
    budget_names = [plan("muon", runs[best["muon"]]["lr"], max(1, round(f * a.iters))) for f in a.budgets]
    for name in budget_names:
        execute(name)

    # ---- analysis
    def val_curve(name: str) -> list:
        return [(r["tokens"], r["val_loss"]) for r in bc.read_metrics(runs[name]["dir"]) if r["kind"] == "validation"]

    table = []
    for name in sweep + budget_names:
        recs = bc.read_metrics(runs[name]["dir"])
        s = bc.summary(recs)
        speed = bc.window_medians(recs, 10)
        table.append({"run": name, "optimizer": runs[name]["optimizer"], "lr": runs[name]["lr"],
                      "iterations": s["iterations"], "tokens": s["tokens"], "final_val_loss": s["final_val_loss"],
                      "min_val_loss": min(v for _, v in val_curve(name)), "train_seconds": s["seconds"],
                      "wall_seconds": runs[name]["info"]["wall_seconds"],
                      "tokens_per_second": speed["tokens_per_second"], "optimizer_share": speed["optimizer_share"],
                      "load_before": runs[name]["info"]["load_before"], "load_after": runs[name]["info"]["load_after"],
                      "busy_before": runs[name]["info"]["busy_before"],
                      "busy_during": runs[name]["info"].get("busy_during", []),
                      "command": runs[name]["info"]["command"]})
    muon, adamw = best["muon"], best["adamw"]
    total_tokens = bc.summary(bc.read_metrics(runs[adamw]["dir"]))["tokens"]
    target = final(adamw)
    mcurve, acurve = val_curve(muon), val_curve(adamw)

    # (a) budget runs: final loss against budget, Muon's own full schedule at each.
    budget_points = sorted([(bc.summary(bc.read_metrics(runs[n]["dir"]))["tokens"], final(n))
                            for n in budget_names] + [(total_tokens, final(muon))])
    reach_budget = crossing(budget_points, target)
    if reach_budget is None:
        budget_text = "Muon does not reach AdamW's final loss within the budget"
        budget_fraction = None
    elif reach_budget == budget_points[0][0] and budget_points[0][1] < target:
        budget_fraction = reach_budget / total_tokens
        budget_text = (f"at most {budget_fraction:.2f} (already the shortest budget run, "
                       f"{budget_points[0][0]} tokens, ends below AdamW's final loss)")
    else:
        budget_fraction = reach_budget / total_tokens
        budget_text = f"{budget_fraction:.2f}"
    # (b) the full-budget curve's crossing.
    reach_curve = crossing(mcurve, target)
    curve_fraction = None if reach_curve is None else reach_curve / total_tokens

    # Equal tokens: the end of the stable phase (the last validation point before the decay) and the end.
    resolved = bc.resolved_config(runs[muon]["dir"])
    cfg_warmup = int(resolved["training.lr_schedule.warmup"])
    decay_fraction = float(resolved["training.lr_schedule.decay_fraction"])
    span = a.iters - cfg_warmup
    decay_iters = max(1, -(-decay_fraction * span // 1))
    stable_end_iter = int(a.iters - decay_iters)
    tokens_per_iter = total_tokens / a.iters
    stable_x = max(x for x, _ in acurve if x <= stable_end_iter * tokens_per_iter)
    equal = {
        "stable_end_tokens": stable_x,
        "stable_end_iteration": round(stable_x / tokens_per_iter),
        "muon_at_stable_end": value_at(mcurve, stable_x),
        "adamw_at_stable_end": value_at(acurve, stable_x),
        "muon_final": final(muon),
        "adamw_final": target,
    }

    result = {
        "config": a.config, "ranks": a.ranks, "threads_per_rank": a.threads, "iterations": a.iters,
        "tokens": total_tokens, "eval_interval": a.eval_interval, "machine": bc.machine(),
        "runs": table, "best": {"muon": {"run": muon, "lr": runs[muon]["lr"], "final_val_loss": final(muon)},
                                "adamw": {"run": adamw, "lr": runs[adamw]["lr"], "final_val_loss": target}},
        "token_efficiency": {
            "target_val_loss": target,
            "budget_runs": [{"tokens": x, "final_val_loss": y} for x, y in budget_points],
            "fraction_from_budget_runs": budget_fraction, "fraction_from_budget_runs_text": budget_text,
            "tokens_from_full_curve": reach_curve, "fraction_from_full_curve": curve_fraction,
            "full_curve_crossing_in_stable_phase": reach_curve is not None
            and reach_curve <= stable_end_iter * tokens_per_iter,
        },
        "equal_tokens": equal,
        "invocation": " ".join(["bench/muon_vs_adamw.py"] + [v for v in sys.argv[1:] if v != "--analyze-only"]),
        "wall_seconds_this_invocation": time.time() - t_start,
    }
    os.makedirs(a.results_dir, exist_ok=True)
    with open(os.path.join(a.results_dir, "muon_vs_adamw.json"), "w") as f:
        json.dump(result, f, indent=1)

    try:
        import matplotlib  # noqa: F401  (plot_loss.py needs it)

        del matplotlib

        plot = [sys.executable, "bench/plot_loss.py"]
    except ImportError:
        plot = ["/usr/bin/python3", "bench/plot_loss.py"]
    label = {n: f"{runs[n]['optimizer'].replace('muon', 'Muon').replace('adamw', 'AdamW')} lr {runs[n]['lr']:g}"
             for n in runs}
    png = os.path.join(a.results_dir, "muon_vs_adamw.png")
    cmd = plot + [runs[muon]["dir"], runs[adamw]["dir"], "--label", label[muon] + " (best Muon)",
                  "--label", label[adamw] + " (best AdamW)", "--out", png,
                  "--title", f"{os.path.basename(a.config)}: Muon vs AdamW, best lr each ({a.iters} iterations, "
                             f"{total_tokens / 1e3:.0f}k tokens, WSD)"]
    if a.ymax is not None:
        cmd += ["--ymax", str(a.ymax)]
    subprocess.run(cmd, check=True)
    cmd = plot + [runs[n]["dir"] for n in sweep] + sum((["--label", label[n]] for n in sweep), []) + [
        "--no-train", "--out", os.path.join(a.results_dir, "muon_vs_adamw_all.png"),
        "--title", f"{os.path.basename(a.config)}: validation loss, every sweep run"]
    if a.ymax is not None:
        cmd += ["--ymax", str(a.ymax)]
    subprocess.run(cmd, check=True)

    write_markdown(os.path.join(a.results_dir, "muon_vs_adamw.md"), result, a)
    print(open(os.path.join(a.results_dir, "muon_vs_adamw.md")).read())
    return 0


def write_markdown(path: str, r: dict, a: argparse.Namespace) -> None:
    e, q = r["token_efficiency"], r["equal_tokens"]
    lines = [
        "# Muon vs AdamW (bench/muon_vs_adamw.py)",
        "",
        f"Model and data: `{r['config']}` on the bundled corpus; {r['iterations']} iterations, "
        f"{r['tokens']} tokens per run (the same seeds and data order for every run); WSD schedule; "
        f"validation every {r['eval_interval']} iterations. {r['ranks']} ranks x {r['threads_per_rank']} thread(s); "
        f"machine: {r['machine']}.",
        "",
        "Muon runs: the hidden matrices on Muon at the lr shown (Q/K/V and gate/up orthogonalized "
        "separately); embeddings, output layer and norms on the config's AdamW group (lr 0.003). "
        "AdamW runs: every parameter on AdamW at the lr shown (betas 0.9/0.95, no weight decay).",
        "",
        "| run | optimizer | lr | iterations | final val loss | min val loss | tokens/s | optimizer share | "
        "wall s | load before -> after | other busy processes at start; during |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in r["runs"]:
        lines.append(
            f"| {t['run']} | {t['optimizer']} | {t['lr']:g} | {t['iterations']} | {t['final_val_loss']:.4f} | "
            f"{t['min_val_loss']:.4f} | {t['tokens_per_second']:.0f} | {100 * t['optimizer_share']:.1f}% | "
            f"{t['wall_seconds']:.0f} | {t['load_before'][0]:.2f} -> {t['load_after'][0]:.2f} | "
            f"{', '.join(t['busy_before']) or 'none'}; {', '.join(t['busy_during']) or 'none'} |")
    b = r["best"]
    cf = e["fraction_from_full_curve"]
    lines += [
        "",
        f"Best lr: Muon {b['muon']['lr']:g} (final validation loss {b['muon']['final_val_loss']:.4f}), "
        f"AdamW {b['adamw']['lr']:g} ({b['adamw']['final_val_loss']:.4f}).",
        "",
        "## Token efficiency",
        "",
        f"Target: AdamW's final validation loss, {e['target_val_loss']:.4f} after {r['tokens']} tokens.",
        "",
        "- **Full-budget Muon curve: Muon reaches it after "
        + (f"{e['tokens_from_full_curve']:.0f} tokens, {cf:.2f} of AdamW's tokens** (linear between validation "
           f"points; iteration {e['tokens_from_full_curve'] / (r['tokens'] / r['iterations']):.0f}, "
           + ("in Muon's stable phase, before its decay: Muon without the decay's drop against AdamW with it, so "
              "the schedule does not favour Muon here)." if e["full_curve_crossing_in_stable_phase"] else
              "in Muon's decay phase: the decay's drop helps this figure, so read it with the budget runs).")
           if cf is not None else "never within the budget.**"),
        f"- Budget runs: Muon needs {e['fraction_from_budget_runs_text']} of AdamW's tokens. Muon at its best lr "
        "trained with shorter budgets, each with its own complete WSD schedule (the same warm-up iterations, the last "
        "30% of the rest decaying), so a shorter run gets its decay too; final validation loss against budget, "
        "linear between budgets: " + ", ".join(f"{x} tokens -> {y:.4f}" for x, y in
                                               ((p['tokens'], p['final_val_loss']) for p in e["budget_runs"])) + ".",
        "- How the WSD schedule was handled: with WSD the loss can drop in the decay phase, which starts at the same "
        "iteration for both optimizers, so where a full-budget curve crosses a loss in its decay says little about "
        "a shorter run. Hence the budget runs (each its own decay) beside the curve crossing, and the losses at "
        "equal tokens:",
        f"  - at the end of the stable phase (iteration {q['stable_end_iteration']}, "
        f"{q['stable_end_tokens']} tokens, before either decays): Muon {q['muon_at_stable_end']:.4f}, "
        f"AdamW {q['adamw_at_stable_end']:.4f} "
        f"(difference {q['muon_at_stable_end'] - q['adamw_at_stable_end']:+.4f}).",
        f"  - at the end ({r['tokens']} tokens, after both decays): Muon {q['muon_final']:.4f}, "
        f"AdamW {q['adamw_final']:.4f} (difference {q['muon_final'] - q['adamw_final']:+.4f}).",
    ]
    quiet = {o: [t["tokens_per_second"] for t in r["runs"] if t["optimizer"] == o and not t["busy_during"]]
             for o in ("muon", "adamw")}
    if quiet["muon"] and quiet["adamw"] and cf is not None:
        mt, at = statistics.median(quiet["muon"]), statistics.median(quiet["adamw"])
        lines += [
            f"- Wall clock: over the runs with nothing else busy, Muon trains at {mt:.0f} tokens/s and AdamW at "
            f"{at:.0f} (median), so Muon reaches AdamW's final loss in about {cf * at / mt:.2f} of AdamW's time "
            "(full-budget curve figure x AdamW tokens/s / Muon tokens/s).",
        ]
    lines += [
        "",
        "Plots: `muon_vs_adamw.png` (the best two: validation points and smoothed training loss against tokens), "
        "`muon_vs_adamw_all.png` (validation loss of every sweep run).",
        "",
        f"Command: `/usr/bin/python3 {r['invocation']}` (the runs go to `{a.runs_dir}/`; a finished run is "
        "reused). Each run's command line is in `muon_vs_adamw.json`.",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
