#!/usr/bin/env python3
"""Ingest throughput on a generated MS MARCO-shaped collection.

Usage: python3 bench/ingest.py [--bin target/release/splade] [--docs 1000000]
Writes `id<TAB>text` lines of 30-90 words (MS MARCO passages average ~56 words), runs the ingest
stage on them, and reports docs/s from the artifact manifest and from wall time (process startup,
hashing the input file and committing the artifact included).
"""
import argparse, json, os, random, subprocess, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default="target/release/splade")
ap.add_argument("--docs", type=int, default=1_000_000)
args = ap.parse_args()

rng = random.Random(7)
words = [l.split("\t", 1)[1].split() for l in open("pipelines/data/toy/collection.tsv")]
vocab = [w for ws in words for w in ws]
tmp = tempfile.mkdtemp(prefix="splade-ingest-")
coll = os.path.join(tmp, "collection.tsv")
with open(coll, "w") as f:
    for i in range(args.docs):
        n = rng.randint(30, 90)
        f.write(f"{i}\t{' '.join(rng.choices(vocab, k=n))}\n")
size = os.path.getsize(coll)
pipe = os.path.join(tmp, "p.toml")
open(pipe, "w").write(f'name = "bench-ingest"\n[stage.ingest]\nkind = "ingest"\ndocs = "{coll}"\n')
art = os.path.join(tmp, "artifacts")
t0 = time.perf_counter()
subprocess.run([args.bin, "--artifacts", art, "run", pipe, "--no-progress"], check=True, stdout=subprocess.DEVNULL)
wall = time.perf_counter() - t0
path = subprocess.run([args.bin, "--artifacts", art, "path", pipe, "ingest"], check=True,
                      capture_output=True, text=True).stdout.strip()
stats = json.load(open(os.path.join(path, "manifest.json")))["stats"]["docs"]
print(f"{args.docs} docs, {size / 1e6:.0f} MB TSV")
print(f"stage: {stats['rows_per_s']:,.0f} docs/s ({stats['seconds']:.2f} s parse + write)")
print(f"whole run: {args.docs / wall:,.0f} docs/s ({wall:.2f} s incl. hashing the input and commit)")
