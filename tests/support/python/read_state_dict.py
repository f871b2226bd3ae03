"""read_state_dict.py: opens an orthotron optimizer state file with the safetensors Python package
and prints, one per line, "tensor NAME DTYPE SHAPE SUM" and "meta KEY", for tests to check.

usage: read_state_dict.py STATE.safetensors
"""
import sys

from safetensors import safe_open

with safe_open(sys.argv[1], framework="pt") as f:
    for key in sorted(f.metadata()):
        print("meta", key)
    for name in sorted(f.keys()):
        t = f.get_tensor(name)
        print("tensor", name, str(t.dtype).replace("torch.", ""), "x".join(map(str, t.shape)), f"{t.double().sum().item():.9e}")
