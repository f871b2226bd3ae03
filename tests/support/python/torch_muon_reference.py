"""torch_muon_reference.py: runs torch.optim.Muon on seeded inputs and writes inputs and results
to a safetensors file, for tests/unit/test_python_interop.cpp to compare orthotron's Muon against.

usage: torch_muon_reference.py OUT.safetensors [--steps N] [--adjust original|match_rms_adamw]
Exit code 3 (and a line on stderr) when torch is older than 2.9 (no torch.optim.Muon).
"""
import argparse
import sys

import torch

if not hasattr(torch.optim, "Muon"):
    print(f"torch {torch.__version__} has no torch.optim.Muon (needs >= 2.9)", file=sys.stderr)
    sys.exit(3)
from safetensors.torch import save_file  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--steps", type=int, default=4)
ap.add_argument("--adjust", default="original")
args = ap.parse_args()

torch.manual_seed(1234)
shapes = {"wide": (32, 96), "tall": (80, 24), "square": (48, 48)}
params = {k: torch.nn.Parameter(torch.randn(*s) * 0.1) for k, s in shapes.items()}
tensors = {f"init/{k}": p.detach().clone() for k, p in params.items()}
opt = torch.optim.Muon(list(params.values()), lr=0.02, weight_decay=0.1, momentum=0.9, nesterov=True,
                       adjust_lr_fn=args.adjust)
for step in range(args.steps):
    for k, p in params.items():
        g = torch.randn_like(p)
        tensors[f"grad/{step}/{k}"] = g.clone()
        p.grad = g
    opt.step()
for k, p in params.items():
    tensors[f"final/{k}"] = p.detach().clone()
save_file(tensors, args.out, metadata={"steps": str(args.steps), "adjust": args.adjust,
                                       "torch_version": torch.__version__})
