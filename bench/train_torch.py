#!/usr/bin/env python3
"""The PyTorch + transformers reference for `splade bench train`: the same model directory and
the same SPLADE training step — fixed-length random token batches (one positive and one negative
document per query), SPLADE max pooling, in-batch pairwise NLL + FLOPS (λq 0.5, λd 0.4), AdamW
(lr 2e-5, eps 1e-6, weight decay 0.01), dropout on, fp32 on CPU.

Prints one line like `splade bench train`: steps=... examples_per_s=... peak_rss_mib=...
"""
import argparse, resource, time
import torch
from transformers import AutoModelForMaskedLM

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--batch-size", type=int, default=8)
ap.add_argument("--query-length", type=int, default=32)
ap.add_argument("--doc-length", type=int, default=128)
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)

model = AutoModelForMaskedLM.from_pretrained(a.model).train()
opt = torch.optim.AdamW(model.parameters(), lr=2e-5, eps=1e-6, weight_decay=0.01)


def seqs(n, length):
    x = torch.randint(1000, 30000, (n, length))
    x[:, 0], x[:, -1] = 101, 102
    return x


def rep(ids):
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    return torch.log1p(torch.relu(logits)).max(dim=1).values


def flops(r):
    return (r.abs().mean(0) ** 2).sum()


def step():
    b = a.batch_size
    q = rep(seqs(b, a.query_length))
    d = rep(seqs(2 * b, a.doc_length)).view(b, 2, -1)
    pos, neg = d[:, 0], d[:, 1]
    scores = torch.cat([q @ pos.T, (q * neg).sum(-1, keepdim=True)], dim=1)
    loss = torch.nn.functional.cross_entropy(scores, torch.arange(b))
    loss = loss + 0.5 * flops(q) + 0.4 * (flops(pos) + flops(neg)) / 2
    opt.zero_grad()
    loss.backward()
    opt.step()


step()  # warm-up
t0 = time.perf_counter()
for _ in range(a.steps):
    step()
secs = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"steps={a.steps} batch={a.batch_size} query_length={a.query_length} doc_length={a.doc_length} "
      f"secs={secs:.3f} steps_per_s={a.steps / secs:.3f} examples_per_s={a.steps * a.batch_size / secs:.2f} "
      f"peak_rss_mib={peak:.0f} threads={torch.get_num_threads()} torch={torch.__version__}")
