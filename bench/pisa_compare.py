#!/usr/bin/env python3
"""PISA (pyterrier-pisa, block_max_wand) over the same quantized impacts as `splade bench
retrieve`, on the same synthetic collection, for a side-by-side comparison in one run.

Usage (after `splade bench synth --out DIR` and `splade bench retrieve DIR --dump DIR/ours.tsv`):
    python bench/pisa_compare.py DIR [--queries N]
Feeds PISA our u8 document impacts (scale 1) and our integer query weights (round(w*100)), so both
systems score with the same integers; then checks that the top-k score lists are identical and
reports index size, ms/query on one thread and QPS on all threads for k = 10 and 1000.
"""
import argparse, json, os, shutil, time
import numpy as np
import pyarrow.parquet as pq
import pyterrier_pisa as pp
import pandas as pd

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("--queries", type=int, default=1000)
ap.add_argument("--threads", type=int, default=os.cpu_count())
a = ap.parse_args()
meta = json.load(open(os.path.join(a.dir, "index", "meta.json")))
scale = meta["scale"]
docs = pq.read_table(os.path.join(a.dir, "docs.parquet")).to_pydict()
qs = pq.read_table(os.path.join(a.dir, "queries.parquet")).to_pydict()


def doc_iter():
    for i, (terms, weights) in enumerate(zip(docs["terms"], docs["weights"])):
        toks = {}
        for t, w in zip(terms, weights):
            imp = int(min(255, max(0, np.floor(np.float32(w) * np.float32(scale) + np.float32(0.5)))))
            if imp > 0:
                toks[str(t)] = imp
        yield {"docno": str(i), "toks": toks}


path = os.path.join(a.dir, "pisa")
shutil.rmtree(path, ignore_errors=True)
t0 = time.perf_counter()
index = pp.PisaIndex(path, stemmer="none", threads=a.threads)
index.toks_indexer(scale=1.0).index(doc_iter())
build = time.perf_counter() - t0
size = {f: os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)}
compressed = sum(v for f, v in size.items() if f.startswith("inv.block") or f.endswith(".bmw") or "simdbp" in f)
print(f"pisa index build_s={build:.1f} docs_per_s={len(docs['terms']) / build:.0f} files={size}")
print(f"pisa compressed_index_mib={compressed / 2**20:.1f} (inverted lists + block-max data)")

rows = []
for qi, (terms, weights) in enumerate(zip(qs["terms"][:a.queries], qs["weights"][:a.queries])):
    ints = [(t, int(np.floor(np.float32(w) * np.float32(100) + np.float32(0.5)))) for t, w in zip(terms, weights)]
    toks = {str(t): float(q) for t, q in ints if q >= 1}
    rows.append({"qid": str(qi), "query_toks": toks})
queries = pd.DataFrame(rows)

for k in (10, 1000):
    for threads in (1, a.threads):
        r = index.quantized(num_results=k, threads=threads, query_algorithm="block_max_wand",
                            query_weighted=True, toks_scale=1.0)
        r(queries.head(5))  # warm-up
        t0 = time.perf_counter()
        res = r(queries)
        secs = time.perf_counter() - t0
        label = "ms_per_query_1thread" if threads == 1 else f"qps_{threads}threads"
        value = secs * 1e3 / len(queries) if threads == 1 else len(queries) / secs
        print(f"pisa block_max_wand k={k} {label}={value:.3f}")
    if k == 1000:
        ours = pd.read_csv(os.path.join(a.dir, "ours.tsv"), sep="\t", names=["q", "doc", "score"])
        same = 0
        for qi, grp in res.groupby("qid"):
            theirs = sorted(np.rint(grp["score"].to_numpy()).astype(np.int64).tolist(), reverse=True)
            mine = sorted(ours[ours.q == int(qi)]["score"].tolist(), reverse=True)
            same += theirs == mine
        print(f"identical top-1000 score lists: {same}/{len(queries)} queries")
