#!/usr/bin/env python3
"""Writes a BERT-base-shaped masked-LM (12 layers, 768 hidden, 30522 vocab, random weights) with
splade-tiny's tokenizer.json into DIR, for speed benchmarks only."""
import shutil, sys
import torch
from transformers import BertConfig, BertForMaskedLM

out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/bert-base-random"
torch.manual_seed(0)
BertForMaskedLM(BertConfig()).save_pretrained(out)
shutil.copy("conf/models/splade-tiny/tokenizer.json", out)
print(out)
