"""Training-step time of the GPT of torch_gpt.py in PyTorch eager, for bench/bench_pretrain.py's ratios.

    torch_gpt_train.py --threads T [--steps N] [--warmup W] [--optimizer {muon,adamw}]
                       [--layers L --hidden H --heads A --groups G --ffn F --vocab V --batch B --seq S]
                       [--max-grad-norm C]

One step is what orthotron_pretrain's step does on one rank: zero the gradients, forward (mean
cross-entropy), backward, global gradient-norm clipping (C, 0: off), then the optimizer step. With
--optimizer muon (default) torch.optim.Muon (lr 0.02, momentum 0.95, Nesterov, 5 quintic
Newton-Schulz steps, adjust_lr_fn "original", no weight decay) takes the hidden matrices
(linear_qkv, linear_proj, linear_fc1, linear_fc2) and torch.optim.AdamW (lr 0.003, betas 0.9/0.95,
no weight decay, fused) the embedding, the output layer and the norms; with adamw AdamW takes
all. Differences from the engine: the fused QKV and fc1 (gate|up) matrices are orthogonalized
whole (the engine splits them into Q/K/V and gate/up matrices); tokens are random and fixed (no
data loading); one process (no all-reduce).

Prints one JSON object: step_ms and optimizer_ms (medians over N timed steps after W warm-up
steps; the optimizer part includes the clipping, as in the engine), tokens_per_second (batch x seq
/ median step), the thread count and the shapes.
"""
import argparse
import json
import statistics
import time

import torch

from torch_gpt import Gpt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--optimizer", choices=["muon", "adamw"], default="muon")
    for name, default in [("layers", 4), ("hidden", 128), ("heads", 4), ("groups", 2), ("ffn", 352),
                          ("vocab", 4096), ("batch", 8), ("seq", 128)]:
        ap.add_argument("--" + name, type=int, default=default)
    ap.add_argument("--rope-base", type=float, default=10000.0)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = Gpt(a)
    params = model.params()
    hidden = [p[k] for p in model.layers for k in ("qkv", "proj", "fc1", "fc2")]
    if a.optimizer == "muon":
        hidden_ids = {id(t) for t in hidden}
        rest = [t for t in params if id(t) not in hidden_ids]
        optimizers = [
            torch.optim.Muon(hidden, lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True, ns_steps=5,
                             adjust_lr_fn="original"),
            torch.optim.AdamW(rest, lr=0.003, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, fused=True),
        ]
    else:
        optimizers = [torch.optim.AdamW(params, lr=0.003, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0,
                                        fused=True)]
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(a.vocab, (a.batch, a.seq + 1), generator=g)
    inputs, labels = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    step_ms, opt_ms, losses = [], [], []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        for p in params:
            p.grad = None
        loss = model.loss(inputs, labels)
        loss.backward()
        t1 = time.perf_counter()  # the optimizer time includes the clipping, as the engine's does
        if a.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, a.max_grad_norm)
        for opt in optimizers:
            opt.step()
        t2 = time.perf_counter()
        losses.append(loss.item())
        if step >= a.warmup:
            step_ms.append((t2 - t0) * 1e3)
            opt_ms.append((t2 - t1) * 1e3)
    step = statistics.median(step_ms)
    print(json.dumps({
        "step_ms": step,
        "optimizer_ms": statistics.median(opt_ms),
        "tokens_per_second": a.batch * a.seq / (step / 1e3),
        "threads": torch.get_num_threads(),
        "optimizer": a.optimizer,
        "steps": a.steps,
        "warmup": a.warmup,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "shapes": {k: getattr(a, k) for k in ("layers", "hidden", "heads", "groups", "ffn", "vocab", "batch", "seq")},
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
