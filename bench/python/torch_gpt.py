"""The GPT decoder of engine/model/ in PyTorch eager, for forward+backward time ratios.

    torch_gpt.py --threads T [--reps N] [--layers L --hidden H --heads A --groups G --ffn F
                 --vocab V --batch B --seq S]

The same network as GptModel: embedding, per layer RMSNorm -> fused QKV in Megatron's interleaved
grouped-query layout -> rotate-half rotary -> scaled_dot_product_attention (causal, enable_gqa) ->
linear_proj -> residual; RMSNorm -> fused SwiGLU fc1 -> fc2 -> residual; final RMSNorm, untied
output layer, mean cross-entropy. float32 on the CPU. Prints "median_ms <forward+backward>" and
"forward_ms <forward>", medians over N timed repetitions after two warm-up ones.
"""
import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F


class Gpt:
    def __init__(self, a: argparse.Namespace) -> None:
        g = torch.Generator().manual_seed(1)
        std, out_std = 0.02, 0.02 / math.sqrt(2 * a.layers)
        d = a.hidden // a.heads

        def normal(*shape: int, s: float = std) -> torch.Tensor:
            return (torch.randn(*shape, generator=g) * s).requires_grad_(True)

        def ones(n: int) -> torch.Tensor:
            return torch.ones(n, requires_grad=True)

        self.a, self.d = a, d
        self.emb = normal(a.vocab, a.hidden)
        self.layers = [
            dict(
                n1=ones(a.hidden),
                qkv=normal((a.heads + 2 * a.groups) * d, a.hidden),
                proj=normal(a.hidden, a.hidden, s=out_std),
                n2=ones(a.hidden),
                fc1=normal(2 * a.ffn, a.hidden),
                fc2=normal(a.hidden, a.ffn, s=out_std),
            )
            for _ in range(a.layers)
        ]
        self.final = ones(a.hidden)
        self.out = normal(a.vocab, a.hidden)
        inv = a.rope_base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        ang = torch.outer(torch.arange(a.seq, dtype=torch.float64), inv)
        emb = torch.cat([ang, ang], -1)
        self.cos, self.sin = emb.cos().float(), emb.sin().float()

    def rope(self, x: torch.Tensor) -> torch.Tensor:
        s, h = x.shape[2], x.shape[3] // 2
        return x * self.cos[:s] + torch.cat([-x[..., h:], x[..., :h]], -1) * self.sin[:s]

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        a, d = self.a, self.d
        b, s = tokens.shape
        qpg = a.heads // a.groups
        x = F.embedding(tokens, self.emb)
        for p in self.layers:
            h = F.rms_norm(x, (a.hidden,), p["n1"], 1e-5)
            qkv = F.linear(h, p["qkv"]).view(b, s, a.groups, qpg + 2, d)
            q = qkv[:, :, :, :qpg].reshape(b, s, a.heads, d).transpose(1, 2)
            k = qkv[:, :, :, qpg].transpose(1, 2)
            v = qkv[:, :, :, qpg + 1].transpose(1, 2)
            o = F.scaled_dot_product_attention(
                self.rope(q), self.rope(k), v, is_causal=True, enable_gqa=a.groups != a.heads
            )
            x = x + F.linear(o.transpose(1, 2).reshape(b, s, a.hidden), p["proj"])
            h = F.rms_norm(x, (a.hidden,), p["n2"], 1e-5)
            gate, up = F.linear(h, p["fc1"]).chunk(2, -1)
            x = x + F.linear(F.silu(gate) * up, p["fc2"])
        x = F.rms_norm(x, (a.hidden,), self.final, 1e-5)
        return F.cross_entropy(F.linear(x, self.out).view(-1, a.vocab), labels.view(-1))

    def params(self) -> list:
        return [self.emb, self.final, self.out] + [t for p in self.layers for t in p.values()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--reps", type=int, default=7)
    for name, default in [("layers", 4), ("hidden", 128), ("heads", 4), ("groups", 2), ("ffn", 352),
                          ("vocab", 4096), ("batch", 8), ("seq", 128)]:
        ap.add_argument("--" + name, type=int, default=default)
    ap.add_argument("--rope-base", type=float, default=10000.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = Gpt(a)
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(a.vocab, (a.batch, a.seq), generator=g)
    labels = torch.randint(a.vocab, (a.batch, a.seq), generator=g)
    fb, fw = [], []
    for rep in range(a.reps + 2):
        for p in model.params():
            p.grad = None
        t0 = time.perf_counter()
        loss = model.loss(tokens, labels)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        if rep >= 2:
            fw.append((t1 - t0) * 1e3)
            fb.append((t2 - t0) * 1e3)
    print(f"median_ms {statistics.median(fb):.3f}")
    print(f"forward_ms {statistics.median(fw):.3f}")


if __name__ == "__main__":
    main()
