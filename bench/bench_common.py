"""Helpers shared by bench/muon_vs_adamw.py and bench/bench_pretrain.py: running orthotron_pretrain
through launch/launch.sh, reading its metrics.jsonl, and noting what else used the CPU meanwhile.

Standard library only (these scripts run under /usr/bin/python3, beside matplotlib).
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The two --set lines that make a config all-AdamW (configs/gpt_tiny.yaml's header), plus the splits
# turned off: the engine refuses a registered split on a parameter routed to AdamW.
ALL_ADAMW = [
    "optimizer.rules=[{name: all, match: \"*\", group: adamw}]",
    "splits.qkv=none",
    "splits.gate_up=false",
]


def all_adamw_sets(lr: float) -> list:
    """--set values for AdamW (betas 0.9/0.95, no weight decay) at LR on every parameter."""
    return [f"optimizer.groups={{adamw: {{lr: {lr!r}, betas: [0.9, 0.95], weight_decay: 0.0}}}}"] + ALL_ADAMW


def descendants(pid: int) -> set:
    """PID and every process below it (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        todo += children.get(p, [])
    return out


def ancestors() -> set:
    """This process and the ones above it (a shell whose command line names the binary is not another run)."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return out


def busy_processes(exclude: set = frozenset()) -> list:
    """Processes (not in EXCLUDE, not this script) using more than 10% of a core now: top, two
    samples 0.5 s apart, as "name cpu%"."""
    try:
        out = subprocess.run(["top", "-b", "-n", "2", "-d", "0.5", "-w", "200"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    last = out.rsplit("PID USER", 1)[-1].splitlines()[1:]  # the second sample's table
    busy = []
    for line in last:
        f = line.split()
        if len(f) < 12:
            continue
        try:
            pid, cpu = int(f[0]), float(f[8])
        except ValueError:
            continue
        if cpu > 10 and pid not in exclude and pid != os.getpid() and f[11] != "top":
            busy.append(f"{f[11]} {cpu:.0f}%")
    return busy


class BusySampler:
    """Samples busy_processes() every PERIOD seconds in a thread, leaving out the process tree of
    ROOT_PID; .seen() gives each other process name with the highest share seen."""

    def __init__(self, root_pid: int, period: float = 10.0) -> None:
        self._root, self._period, self._peak = root_pid, period, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._period):
            for item in busy_processes(descendants(self._root)):
                name, cpu = item.rsplit(" ", 1)
                self._peak[name] = max(self._peak.get(name, 0), int(cpu.rstrip("%")))

    def stop(self) -> list:
        self._stop.set()
        self._thread.join()
        return [f"{n} up to {c}%" for n, c in sorted(self._peak.items(), key=lambda x: -x[1])]


def wait_for_quiet(max_seconds: float = 600, what: str = "orthotron_pretrain") -> float:
    """Waits (up to MAX_SECONDS) until no other process uses more than 30% of a core and no other
    WHAT runs, so that measurements do not share the CPU; returns the seconds waited."""
    t0 = time.time()
    while time.time() - t0 < max_seconds:
        mine = ancestors()
        others = [p for p in subprocess.run(["pgrep", "-f", what], capture_output=True, text=True).stdout.split()
                  if int(p) not in mine]
        busy = [b for b in busy_processes() if int(b.rsplit(" ", 1)[1].rstrip("%")) > 30]
        if not others and not busy:
            return time.time() - t0
        log(f"[bench] waiting for a quiet CPU: busy {', '.join(busy) or 'none'}; "
            f"{len(others)} other {what} process(es)")
        time.sleep(15)
    log(f"[bench] the CPU is still busy after {max_seconds:.0f} s; measuring anyway (see busy_before/busy_during)")
    return time.time() - t0


def machine() -> str:
    """CPU model and core count, one line."""
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Linux {platform.release()}"


def read_metrics(run_dir: str) -> list:
    """The records of RUN_DIR/metrics.jsonl ([] if there is none)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def resolved_config(run_dir: str) -> dict:
    """RUN_DIR/config.yaml (the engine's resolved config) as {"dotted.key": "scalar text"}.

    Reads the block mappings the engine writes (two-space indents, one "key: value" per line);
    flow values are kept as text.
    """
    out, stack = {}, []
    with open(os.path.join(run_dir, "config.yaml")) as f:
        for line in f:
            if not line.strip() or line.lstrip().startswith(("#", "-")):
                continue
            depth = (len(line) - len(line.lstrip(" "))) // 2
            key, _, value = line.strip().partition(":")
            stack = stack[:depth] + [key]
            if value.strip():
                out[".".join(stack)] = value.strip()
    return out


def summary(records: list):
    """The run's "summary" record, or None if it did not finish."""
    done = [r for r in records if r["kind"] == "summary"]
    return done[-1] if done else None


def window_medians(records: list, skip_iterations: int) -> dict:
    """Medians over the "train" log windows that end after SKIP_ITERATIONS (the warm-up ones dropped)."""
    windows = [r for r in records if r["kind"] == "train" and r["iteration"] > skip_iterations]
    if not windows:
        raise RuntimeError(f"no train windows after iteration {skip_iterations}")
    return {
        "windows": len(windows),
        "ms_per_iteration": statistics.median(r["ms_per_iteration"] for r in windows),
        "optimizer_ms": statistics.median(r["optimizer_ms"] for r in windows),
        "tokens_per_second": statistics.median(r["tokens_per_second"] for r in windows),
        "optimizer_share": statistics.median(r["optimizer_ms"] / r["ms_per_iteration"] for r in windows),
    }


def run_pretrain(run_dir: str, ranks: int, threads: int, config: str, sets: list, binary: str,
                 quiet_wait: float = 600) -> dict:
    """Runs orthotron_pretrain on RANKS ranks (THREADS intra-op threads each) into a fresh RUN_DIR.

    Waits (up to QUIET_WAIT s) for a quiet CPU first (wait_for_quiet). Blocks until the run ends;
    its output goes to RUN_DIR/stdout.txt. Returns the wall time, the load averages before and
    after, the other busy processes seen at the start and during the run (sampled every 10 s;
    another orthotron_pretrain counts, ours do not). Raises RuntimeError (naming stdout.txt) if the
    run fails.
    """
    if os.path.exists(run_dir):
        for name in ("metrics.jsonl", "log.txt", "config.yaml", "stdout.txt"):
            if os.path.exists(os.path.join(run_dir, name)):
                os.remove(os.path.join(run_dir, name))
    os.makedirs(run_dir, exist_ok=True)
    cmd = [os.path.join(ROOT, "launch", "launch.sh"), str(ranks), binary, "--config", config]
    for s in sets + [f"logging.output_dir={run_dir}", "logging.progress=false"]:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    waited = wait_for_quiet(quiet_wait)
    info = {"waited_seconds": waited, "command": "OMP_NUM_THREADS=%d " % threads + " ".join(_quote(c) for c in cmd),
            "load_before": os.getloadavg(), "busy_before": busy_processes()}
    t0 = time.time()
    with open(os.path.join(run_dir, "stdout.txt"), "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        sampler = BusySampler(proc.pid)
        rc = proc.wait()
        info["busy_during"] = sampler.stop()
    info["wall_seconds"] = time.time() - t0
    info["load_after"] = os.getloadavg()
    if rc != 0 or summary(read_metrics(run_dir)) is None:
        with open(os.path.join(run_dir, "stdout.txt")) as f:
            tail = "".join(f.readlines()[-15:])
        raise RuntimeError(f"{info['command']}\nfailed (exit {rc}); the end of {run_dir}/stdout.txt:\n{tail}")
    return info


def _quote(s: str) -> str:
    return s if all(c.isalnum() or c in "/._-=,:" for c in s) else "'" + s.replace("'", "'\\''") + "'"


def log(msg: str) -> None:
    print(msg, flush=True)
    sys.stdout.flush()
