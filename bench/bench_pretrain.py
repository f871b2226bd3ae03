#!/usr/bin/python3
"""Pretraining throughput: orthotron_pretrain's tokens/s and optimizer share, beside PyTorch eager.

    /usr/bin/python3 bench/bench_pretrain.py [--configs configs/gpt_tiny.yaml,configs/gpt_small.yaml]
        [--layouts 1x1,1x2,2x1] [--iters 30] [--skip 10] [--log-interval 5]
        [--torch-python ~/.cache/orthotron/torch-2.11.0/bin/python] [--torch-steps 20]
        [--runs-dir runs/bench_pretrain] [--out bench/results/pretrain_bench.md]

For each config and each layout RANKSxTHREADS: a short orthotron_pretrain run (--iters
iterations, logged every --log-interval; validation only at the end), and the medians over the
log windows after the first --skip iterations (the warm-up) of ms per iteration, optimizer ms (the
optimizer step, with its gradient clipping), their ratio, and tokens/s (all ranks together).

Beside each one-rank layout, in the same invocation: the same model in PyTorch eager
(bench/python/torch_gpt_train.py: forward, backward, clipping, torch.optim.Muon on the hidden
matrices and torch.optim.AdamW on the rest) with the same shapes, thread count and batch per
process, and the ratio ours/PyTorch of tokens/s (> 1: ours is faster).

Prints the table and writes it, with the conditions (machine, load, other busy processes), to
--out and beside it a JSON with every figure.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402


def layouts(text: str) -> list:
    out = []
    for item in text.split(","):
        try:
            ranks, threads = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected RANKSxTHREADS items like 1x2,2x1, got '{item}'") from None
        if ranks < 1 or threads < 1:
            raise argparse.ArgumentTypeError(f"ranks and threads must be >= 1, got '{item}'")
        out.append((ranks, threads))
    return out


def torch_step(python: str, resolved: dict, threads: int, steps: int) -> dict:
    """bench/python/torch_gpt_train.py on the shapes of a resolved engine config."""
    m = lambda k: resolved["model." + k]  # noqa: E731
    args = ["--threads", str(threads), "--steps", str(steps), "--warmup", "5",
            "--layers", m("num_layers"), "--hidden", m("hidden_size"), "--heads", m("num_attention_heads"),
            "--groups", m("num_query_groups"), "--ffn", m("ffn_hidden_size"), "--vocab", m("vocab_size"),
            "--batch",
            str(int(resolved["training.micro_batch_size"]) * int(resolved["training.gradient_accumulation"])),
            "--seq", resolved["data.seq_length"], "--max-grad-norm", resolved["training.max_grad_norm"]]
    cmd = [python, os.path.join(bc.ROOT, "bench", "python", "torch_gpt_train.py")] + args
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["command"] = f"OMP_NUM_THREADS={threads} " + " ".join(cmd)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="configs/gpt_tiny.yaml,configs/gpt_small.yaml")
    ap.add_argument("--layouts", type=layouts, default=layouts("1x1,1x2,2x1"),
                    help="RANKSxTHREADS per rank, comma-separated")
    ap.add_argument("--binary", default="build/bin/orthotron_pretrain")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--skip", type=int, default=10, help="warm-up iterations left out of the medians")
    ap.add_argument("--log-interval", type=int, default=5)
    ap.add_argument("--torch-python", default=os.path.expanduser("~/.cache/orthotron/torch-2.11.0/bin/python"))
    ap.add_argument("--torch-steps", type=int, default=20)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--runs-dir", default="runs/bench_pretrain")
    ap.add_argument("--out", default="bench/results/pretrain_bench.md")
    a = ap.parse_args()
    os.chdir(bc.ROOT)
    if a.iters <= a.skip:
        ap.error(f"--iters ({a.iters}) must exceed --skip ({a.skip})")
    if not a.no_torch and not os.path.exists(a.torch_python):
        ap.error(f"--torch-python {a.torch_python} does not exist (launch/setup.sh builds it; or pass --no-torch)")

    rows = []
    t_start = time.time()
    for config in a.configs.split(","):
        name = os.path.splitext(os.path.basename(config))[0]
        for ranks, threads in a.layouts:
            run_dir = os.path.abspath(os.path.join(a.runs_dir, f"{name}_{ranks}x{threads}"))
            sets = [f"training.train_iters={a.iters}", "training.eval_interval=0", "training.eval_iters=1",
                    f"logging.log_interval={a.log_interval}", f"training.lr_schedule.warmup={min(5, a.iters - 1)}"]
            bc.log(f"[bench_pretrain] {name}: {ranks} rank(s) x {threads} thread(s), {a.iters} iterations")
            info = bc.run_pretrain(run_dir, ranks, threads, config, sets, a.binary)
            recs = bc.read_metrics(run_dir)
            med = bc.window_medians(recs, a.skip)
            resolved = bc.resolved_config(run_dir)
            row = {"config": config, "ranks": ranks, "threads": threads, **med,
                   "tokens_per_iteration": int(resolved["training.micro_batch_size"]) * ranks *
                   int(resolved["training.gradient_accumulation"]) * int(resolved["data.seq_length"]),
                   "wall_seconds": info["wall_seconds"], "load_before": info["load_before"],
                   "load_after": info["load_after"], "busy_before": info["busy_before"],
                   "busy_during": info["busy_during"], "command": info["command"]}
            bc.log(f"[bench_pretrain]   ours: {med['tokens_per_second']:.0f} tokens/s, {med['ms_per_iteration']:.1f} "
                   f"ms/iteration, optimizer {100 * med['optimizer_share']:.1f}% ({info['wall_seconds']:.0f} s)")
            if ranks == 1 and not a.no_torch:
                bc.wait_for_quiet()
                busy = bc.busy_processes()
                t0 = time.time()
                row["torch"] = torch_step(a.torch_python, resolved, threads, a.torch_steps)
                row["torch"]["wall_seconds"] = time.time() - t0
                row["torch"]["busy_before"] = busy
                row["ratio"] = med["tokens_per_second"] / row["torch"]["tokens_per_second"]
                bc.log(f"[bench_pretrain]   PyTorch eager: {row['torch']['tokens_per_second']:.0f} tokens/s, "
                       f"{row['torch']['step_ms']:.1f} ms/step, optimizer "
                       f"{100 * row['torch']['optimizer_ms'] / row['torch']['step_ms']:.1f}%; ours/PyTorch "
                       f"{row['ratio']:.2f}")
            rows.append(row)

    text = markdown(rows, a, time.time() - t_start)
    print(text)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump({"machine": bc.machine(), "iters": a.iters, "skip": a.skip, "log_interval": a.log_interval,
                   "rows": rows}, f, indent=1)
    return 0


def markdown(rows: list, a: argparse.Namespace, seconds: float) -> str:
    torch_version = next((r["torch"]["torch"] for r in rows if "torch" in r), "-")
    lines = [
        "# Pretraining throughput (bench/bench_pretrain.py)",
        "",
        f"Machine: {bc.machine()}. orthotron_pretrain: {a.iters} iterations per run, medians over the "
        f"{a.log_interval}-iteration log windows after the first {a.skip} (warm-up); tokens/s counts all ranks. "
        f"PyTorch {torch_version} eager (bench/python/torch_gpt_train.py): one process, the same shapes, threads "
        f"and batch per process, torch.optim.Muon (hidden matrices, fused QKV and fc1 orthogonalized whole) + "
        f"fused torch.optim.AdamW (the rest), clipping at the config's max_grad_norm, random tokens, median of "
        f"{a.torch_steps} steps after 5 warm-up steps. Optimizer share: optimizer ms (with the clipping) / step ms. "
        "Ratio: ours / PyTorch tokens/s (> 1: ours faster).",
        "",
        "| config | ranks x threads | ms/iteration | optimizer ms | optimizer share | tokens/s | "
        "PyTorch ms/step | PyTorch optimizer share | PyTorch tokens/s | ours / PyTorch | load before -> after | "
        "other busy processes at start; during |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r.get("torch")
        tc = (f"{t['step_ms']:.1f} | {100 * t['optimizer_ms'] / t['step_ms']:.1f}% | {t['tokens_per_second']:.0f} | "
              f"{r['ratio']:.2f}") if t else "- | - | - | -"
        lines.append(
            f"| {os.path.basename(r['config'])} | {r['ranks']} x {r['threads']} | {r['ms_per_iteration']:.1f} | "
            f"{r['optimizer_ms']:.1f} | {100 * r['optimizer_share']:.1f}% | {r['tokens_per_second']:.0f} | {tc} | "
            f"{r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f} | {', '.join(r['busy_before']) or 'none'}; "
            f"{', '.join(r['busy_during']) or 'none'} |")
    lines += ["", f"Total time: {seconds:.0f} s. Command: `/usr/bin/python3 bench/bench_pretrain.py` "
              "(every run's command line is in pretrain_bench.json).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
