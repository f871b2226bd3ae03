"""torch.optim.Muon + torch.optim.AdamW(fused=True) step time on the shapes bench_muon_step writes,
for its side-by-side ratios.

    torch_muon_step.py SHAPES_FILE --threads T --steps N

SHAPES_FILE holds one tensor per line: "muon M N" (a matrix Newton-Schulz sees) or "adamw D0 D1 ...".
Prints "step_ms", "ns_ms" (torch's own _zeropower_via_newtonschulz over every Muon gradient, in
bfloat16 as torch.optim.Muon computes it) and "adamw_ms" (the AdamW step alone): medians over N
timed repetitions after one warm-up. Hyperparameters as bench_muon_step sets them on its side.
"""
import argparse
import statistics
import time

import torch
from torch.optim import _muon


def median_ms(steps, fn):
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        fn()
        if i > 0:
            times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("shapes")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    muon, adamw = [], []
    with open(a.shapes) as f:
        for line in f:
            kind, *dims = line.split()
            p = (torch.randn([int(d) for d in dims]) * 0.05).requires_grad_(True)
            p.grad = torch.randn(p.shape) * 0.01
            (muon if kind == "muon" else adamw).append(p)
    opt_muon = torch.optim.Muon(muon, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True, ns_steps=5)
    opt_adamw = torch.optim.AdamW(adamw, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01, fused=True)

    def step():
        opt_muon.step()
        opt_adamw.step()

    coeffs = (3.4445, -4.775, 2.0315)

    def ns():
        for p in muon:
            _muon._zeropower_via_newtonschulz(p.grad, coeffs, 5, 1e-7)

    print(f"step_ms {median_ms(a.steps, step):.3f}")
    print(f"ns_ms {median_ms(a.steps, ns):.3f}")
    print(f"adamw_ms {median_ms(a.steps, opt_adamw.step):.3f}")


if __name__ == "__main__":
    main()
