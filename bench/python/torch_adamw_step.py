"""torch.optim.AdamW step time on the shapes bench_adamw writes, for its side-by-side ratios.

    torch_adamw_step.py SHAPES_FILE --threads T --steps N --impl {fused,foreach}

SHAPES_FILE holds one parameter per line: its dimensions separated by spaces. Prints one line,
"median_ms <value>", the median over N timed steps after one warm-up step.
"""
import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("shapes")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--impl", choices=["fused", "foreach"], required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    with open(args.shapes) as f:
        shapes = [[int(d) for d in line.split()] for line in f if line.strip()]
    params = [torch.randn(s, requires_grad=True) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape) * 0.01
    kwargs = {"fused": True} if args.impl == "fused" else {"foreach": True}
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01, **kwargs)
    times = []
    for step in range(args.steps + 1):
        t0 = time.perf_counter()
        opt.step()
        elapsed = (time.perf_counter() - t0) * 1000.0
        if step > 0:
            times.append(elapsed)
    print(f"median_ms {statistics.median(times):.3f}")


if __name__ == "__main__":
    main()
