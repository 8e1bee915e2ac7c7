#!/usr/bin/env python3
"""The PyTorch + transformers reference for `splade bench encode`: the same model directory, the
same tokenizer.json, the same texts, batches and length bucketing, SPLADE max pooling in fp32.

Prints one line like `splade bench encode`: docs=... docs_per_s=... peak_rss_mib=...
"""
import argparse, resource, time
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForMaskedLM

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--texts", default="pipelines/data/toy/collection.tsv")
ap.add_argument("--docs", type=int, default=512)
ap.add_argument("--max-length", type=int, default=128)
ap.add_argument("--batch-size", type=int, default=32)
ap.add_argument("--sort-window", type=int, default=2048)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)

pool = [l.rstrip("\n").split("\t", 1)[1] for l in open(a.texts) if "\t" in l]
texts = [pool[i % len(pool)] for i in range(a.docs)]
tok = Tokenizer.from_file(f"{a.model}/tokenizer.json")
tok.no_padding()
tok.enable_truncation(a.max_length)
ids = [e.ids for e in tok.encode_batch(texts)]
model = AutoModelForMaskedLM.from_pretrained(a.model).eval()


def batches():
    order = list(range(len(ids)))
    if a.sort_window > 1:
        for s in range(0, len(order), a.sort_window):
            order[s:s + a.sort_window] = sorted(order[s:s + a.sort_window], key=lambda i: len(ids[i]))
    for s in range(0, len(order), a.batch_size):
        yield [ids[i] for i in order[s:s + a.batch_size]]


def encode(seqs):
    L = max(len(s) for s in seqs)
    x = torch.tensor([s + [0] * (L - len(s)) for s in seqs])
    m = torch.tensor([[1] * len(s) + [0] * (L - len(s)) for s in seqs])
    logits = model(input_ids=x, attention_mask=m).logits
    rep = (torch.log1p(torch.relu(logits)) * m.unsqueeze(-1)).max(dim=1).values
    return (rep > 0).sum().item()


with torch.inference_mode():
    encode(next(batches()))  # warm-up
    t0 = time.perf_counter()
    nnz = sum(encode(b) for b in batches())
    secs = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"docs={a.docs} secs={secs:.3f} docs_per_s={a.docs / secs:.1f} mean_nnz={nnz / a.docs:.1f} "
      f"peak_rss_mib={peak:.0f} threads={torch.get_num_threads()} torch={torch.__version__}")
