#!/usr/bin/python3
"""Checkpoint save and load: orthotron_pretrain's sharded checkpoints beside a plain sequential write.

    /usr/bin/python3 bench/bench_checkpoint.py [--config configs/gpt_small.yaml] [--ranks 1,2,4]
        [--saves 4] [--loads 3] [--limit-repeats 5] [--runs-dir runs/bench_checkpoint]
        [--out bench/results/checkpoint_bench.md]

For each data-parallel size R: one run of the config (micro batch 2, validation only at the end:
the checkpoint size does not depend on the batch) that saves every iteration --saves times
(keep_last 0, so every save stays); from its log lines (" saved checkpoint ... in X ms (training
blocked Y ms) ...") and metrics.jsonl "checkpoint" records: the median save time and the median
time training was blocked per save; the same from a second run with checkpoint.async: true (blocked:
the host copy; total: start to commit); from the shard files of every save: the bytes of each rank and
the total. Then --loads runs that resume from the last save (the resume log line's "in S s" is the
load: verification of every shard against the manifest, the read, the parameter re-sync and the
cross-rank equality check), median taken.

The limit, measured in the same invocation, on the same filesystem (the runs directory), right
after each R's runs: one sequential write of the same total number of bytes in 4 MiB blocks
followed by fsync, median of --limit-repeats, and the same with R writers in parallel, each
writing one rank's bytes to its own file and fsyncing it (what the R ranks of a save do). The
ratio is save bandwidth / limit bandwidth (1.0: the save writes as fast as the plain write; the
save also serializes, checksums every tensor and commits).

Writes --out (markdown) and beside it a JSON with every figure and command line, with the machine,
the load averages and the other busy processes seen during each run.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

SAVE_LINE = re.compile(r"saved checkpoint '([^']+)' at iteration (\d+) in ([0-9.]+) ms(?: \(training blocked ([0-9.]+) ms\))?")
RESUME_LINE = re.compile(r"resumed from checkpoint '([^']+)' at iteration (\d+).* in ([0-9.]+) s")
BLOCK = 4 << 20
_BLOCK = os.urandom(BLOCK)


def sequential_write(path: str, nbytes: int) -> float:
    """Seconds to write NBYTES to PATH in 4 MiB blocks and fsync it (the file is removed after)."""
    block = _BLOCK  # made once: os.urandom of 4 MiB costs milliseconds, not part of a write
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        left = nbytes
        while left > 0:
            left -= os.write(fd, block[:min(left, len(block))])
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - t0
    os.remove(path)
    return seconds


def parallel_write(directory: str, sizes: list) -> float:
    """Seconds until len(SIZES) threads have each written and fsynced their own file (os.write and
    os.fsync release the GIL, so the writes overlap)."""
    times = [0.0] * len(sizes)
    t0 = time.perf_counter()

    def one(i: int) -> None:
        times[i] = sequential_write(os.path.join(directory, f"limit_{i}.bin"), sizes[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(sizes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def parse_saves(run_dir: str) -> list:
    """[{iteration, path, save_ms, blocked_ms, shard_bytes: [per rank]}] from stdout.txt and metrics.jsonl."""
    records = {r["iteration"]: r for r in bc.read_metrics(run_dir) if r.get("kind") == "checkpoint"}
    out = []
    with open(os.path.join(run_dir, "stdout.txt")) as f:
        for line in f:
            m = SAVE_LINE.search(line)
            if not m:
                continue
            path, it, save_ms = m.group(1), int(m.group(2)), float(m.group(3))
            blocked = float(m.group(4)) if m.group(4) else save_ms
            rec = records.get(it, {})
            blocked = float(rec.get("blocked_ms", blocked))
            shards = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
            out.append({"iteration": it, "path": path, "save_ms": save_ms, "blocked_ms": blocked,
                        "shard_bytes": [os.path.getsize(os.path.join(path, n)) for n in shards],
                        "manifest_bytes": os.path.getsize(os.path.join(path, "manifest.json"))})
    return out


def parse_load(run_dir: str) -> float:
    with open(os.path.join(run_dir, "stdout.txt")) as f:
        for line in f:
            m = RESUME_LINE.search(line)
            if m:
                return float(m.group(3))
    raise RuntimeError(f"no resume line in {run_dir}/stdout.txt")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/gpt_small.yaml")
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--saves", type=int, default=4)
    ap.add_argument("--loads", type=int, default=3)
    ap.add_argument("--limit-repeats", type=int, default=5)
    ap.add_argument("--binary", default=os.path.join(bc.ROOT, "build", "bin", "orthotron_pretrain"))
    ap.add_argument("--runs-dir", default=os.path.join(bc.ROOT, "runs", "bench_checkpoint"))
    ap.add_argument("--out", default=os.path.join(bc.ROOT, "bench", "results", "checkpoint_bench.md"))
    ap.add_argument("--quiet-wait", type=float, default=120, help="seconds to wait for a quiet CPU before each run")
    a = ap.parse_args()
    config = os.path.abspath(a.config)
    os.makedirs(a.runs_dir, exist_ok=True)
    t_start = time.time()
    rows = []
    cores = os.cpu_count() or 1
    for ranks in [int(r) for r in a.ranks.split(",")]:
        threads = max(1, cores // ranks)
        base = os.path.join(a.runs_dir, f"np{ranks}")
        ckdir = os.path.join(base, "checkpoints")
        if os.path.exists(ckdir):
            shutil.rmtree(ckdir)
        common = ["training.micro_batch_size=2", "training.eval_interval=0", "training.eval_iters=1",
                  "logging.log_interval=1", "training.lr_schedule.warmup=1"]
        bc.log(f"[bench] {ranks} rank(s): {a.saves} saves")
        save_run = bc.run_pretrain(os.path.join(base, "save"), ranks, threads, config,
                                   common + [f"training.train_iters={a.saves}", "checkpoint.save_interval=1",
                                             "checkpoint.keep_last=0", f"checkpoint.dir={ckdir}"],
                                   a.binary, a.quiet_wait)
        saves = parse_saves(os.path.join(base, "save"))
        if len(saves) != a.saves:
            raise RuntimeError(f"{ranks} ranks: {len(saves)} save lines, expected {a.saves}")
        bc.log(f"[bench] {ranks} rank(s): {a.saves} async saves")
        async_ckdir = os.path.join(base, "checkpoints_async")
        if os.path.exists(async_ckdir):
            shutil.rmtree(async_ckdir)
        async_run = bc.run_pretrain(os.path.join(base, "save_async"), ranks, threads, config,
                                    common + [f"training.train_iters={a.saves}", "checkpoint.save_interval=1",
                                              "checkpoint.keep_last=0", f"checkpoint.dir={async_ckdir}",
                                              "checkpoint.async=true"],
                                    a.binary, a.quiet_wait)
        async_saves = parse_saves(os.path.join(base, "save_async"))
        if len(async_saves) != a.saves:
            raise RuntimeError(f"{ranks} ranks: {len(async_saves)} async save lines, expected {a.saves}")
        last = saves[-1]["path"]
        loads, load_runs = [], []
        for i in range(a.loads):
            bc.log(f"[bench] {ranks} rank(s): load {i + 1}/{a.loads}")
            run_dir = os.path.join(base, f"load{i}")
            info = bc.run_pretrain(run_dir, ranks, threads, config,
                                   common + [f"training.train_iters={a.saves + 1}", f"checkpoint.resume={last}",
                                             f"checkpoint.dir={os.path.join(base, 'scratch')}",
                                             "checkpoint.save_at_end=false", "checkpoint.save_interval=0"],
                                   a.binary, a.quiet_wait)
            loads.append(parse_load(run_dir))
            load_runs.append(info)
        shard_bytes = saves[-1]["shard_bytes"]
        total = sum(shard_bytes)
        busy_limit = bc.busy_processes()
        sequential_write(os.path.join(a.runs_dir, "limit.bin"), total)  # warm-up, not counted
        seq, par = [], []
        for _ in range(a.limit_repeats):  # interleaved, so that both see the same conditions
            seq.append(sequential_write(os.path.join(a.runs_dir, "limit.bin"), total))
            par.append(parallel_write(a.runs_dir, shard_bytes))
        save_ms = statistics.median(s["save_ms"] for s in saves)
        blocked_ms = statistics.median(s["blocked_ms"] for s in saves)
        seq_s, par_s = statistics.median(seq), statistics.median(par)
        row = {"ranks": ranks, "threads_per_rank": threads, "saves": saves, "save_ms_median": save_ms,
               "blocked_ms_median": blocked_ms, "async_saves": async_saves, "async_run": async_run,
               "async_blocked_ms_median": statistics.median(s["blocked_ms"] for s in async_saves),
               "async_total_ms_median": statistics.median(s["save_ms"] for s in async_saves), "load_seconds": loads, "load_ms_median": 1000 * statistics.median(loads),
               "bytes_per_rank": shard_bytes, "total_bytes": total,
               "save_mb_per_s": total / 1e6 / (save_ms / 1000),
               "limit_sequential_seconds": seq, "limit_sequential_mb_per_s": total / 1e6 / seq_s,
               "limit_parallel_seconds": par, "limit_parallel_mb_per_s": total / 1e6 / par_s,
               "save_run": save_run, "load_runs": load_runs, "busy_at_limit": busy_limit}
        row["ratio_sequential"] = row["save_mb_per_s"] / row["limit_sequential_mb_per_s"]
        row["ratio_parallel"] = row["save_mb_per_s"] / row["limit_parallel_mb_per_s"]
        rows.append(row)
        bc.log(f"[bench] {ranks} rank(s): save {save_ms:.1f} ms; async: blocked {row['async_blocked_ms_median']:.1f} ms, "
               f"committed after {row['async_total_ms_median']:.1f} ms; load "
               f"{row['load_ms_median']:.1f} ms, {total} bytes; plain write {1000 * seq_s:.1f} ms sequential, "
               f"{1000 * par_s:.1f} ms with {ranks} writers")

    md = [f"# Checkpoint save and load (bench/bench_checkpoint.py)", "",
          f"Machine: {bc.machine()}. Config: {os.path.relpath(config, bc.ROOT)} (micro batch 2; the checkpoint size does not "
          f"depend on it), {a.saves} saves per data-parallel size (one per iteration, keep_last 0), {a.loads} resumed runs "
          f"for the load; medians. Ranks x threads: 2 cores shared, ranks beyond 2 oversubscribe. "
          f"Save: the whole synchronous save on rank 0 (serialize, CRC-32 of every tensor, write, fsync, barrier, manifest, "
          f"rename, directory fsync, latest); blocked: the time training waited (the same as the save while saves are "
          f"synchronous). Async: a separate run of as many saves with checkpoint.async: true; blocked is the host copy training "
          f"waits for, total the time from the save's start to its commit at a later iteration (the write runs beside "
          f"training, on the same 2 cores). Load: the resume log line (verification of every shard against the manifest, read, re-sync of the "
          f"parameters, the cross-rank equality check). Limit: Python writing the same total bytes in 4 MiB blocks plus "
          f"fsync on the same filesystem, one writer, and R writers in parallel with one rank's bytes each; medians of "
          f"{a.limit_repeats}, interleaved, after one uncounted write. Ratio: save MB/s / limit MB/s.", "",
          "| ranks x threads | bytes per rank | total bytes | save ms | blocked ms | async blocked ms | async total ms | "
          "load ms | save MB/s | "
          "plain write ms (1 writer) | MB/s | ratio | plain write ms (R writers) | MB/s | ratio | load avg before -> after | "
          "other busy processes (before or during the runs, at the limit) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        runs = [r["save_run"], r["async_run"]] + r["load_runs"]
        busy = sorted({b.split(" ")[0] for x in runs for b in x.get("busy_before", []) + x.get("busy_during", [])} |
                      {b.split(" ")[0] for b in r["busy_at_limit"]})
        md.append(f"| {r['ranks']} x {r['threads_per_rank']} | {', '.join(str(b) for b in r['bytes_per_rank'])} | "
                  f"{r['total_bytes']} | {r['save_ms_median']:.1f} | {r['blocked_ms_median']:.1f} | "
                  f"{r['async_blocked_ms_median']:.1f} | {r['async_total_ms_median']:.1f} | {r['load_ms_median']:.1f} | "
                  f"{r['save_mb_per_s']:.0f} | {1000 * statistics.median(r['limit_sequential_seconds']):.1f} | "
                  f"{r['limit_sequential_mb_per_s']:.0f} | {r['ratio_sequential']:.2f} | "
                  f"{1000 * statistics.median(r['limit_parallel_seconds']):.1f} | {r['limit_parallel_mb_per_s']:.0f} | "
                  f"{r['ratio_parallel']:.2f} | {r['save_run']['load_before'][0]:.2f} -> {r['save_run']['load_after'][0]:.2f} | "
                  f"{'; '.join(busy) or 'none'} |")
    md += ["", "Every save (ms): " + "; ".join(f"{r['ranks']} rank(s): " + ", ".join(f"{s['save_ms']:.1f}" for s in r["saves"])
                                               for r in rows),
           "Every async save, blocked / total (ms): " + "; ".join(
               f"{r['ranks']} rank(s): " + ", ".join(f"{s['blocked_ms']:.1f} / {s['save_ms']:.1f}" for s in r["async_saves"])
               for r in rows),
           "Every load (ms): " + "; ".join(f"{r['ranks']} rank(s): " + ", ".join(f"{1000 * x:.1f}" for x in r["load_seconds"])
                                           for r in rows),
           "", f"Total time: {time.time() - t_start:.0f} s. Command: `/usr/bin/python3 bench/bench_checkpoint.py"
               f"{'' if a.ranks == '1,2,4' else ' --ranks ' + a.ranks}` (every run's command line is in checkpoint_bench.json)."]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump({"machine": bc.machine(), "config": a.config, "saves": a.saves, "loads": a.loads, "rows": rows}, f, indent=1)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
