#!/usr/bin/env python3
"""PISA (pyterrier-pisa, block_max_wand) over the same quantized impacts as `splade bench
retrieve`, on the same synthetic collection, for a side-by-side comparison in one run.

Usage (after `splade bench synth --out DIR` and `splade bench retrieve DIR --dump DIR/ours.tsv`):
    python bench/pisa_compare.py DIR [--queries N]
Feeds PISA our u8 document impacts (scale 1) and our integer query weights (round(w*100)), so both
systems score with the same integers; then checks that the top-k score lists are identical and
reports index size, ms/query on one thread and QPS on all threads for k = 10 and 1000.

With `--ciff FILE --ciff2pisa BIN` (FILE from `splade bench retrieve DIR --ciff FILE`, BIN from
`cargo install ciff`), PISA's index is built from our CIFF export by PISA's own converter instead of
pyterrier's Python indexer: far faster at 1M docs, and a check that PISA reads our CIFF.
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
ap.add_argument("--ciff")
ap.add_argument("--ciff2pisa", default="ciff2pisa")
ap.add_argument("--algorithms", default="block_max_wand",
                help="comma-separated PISA query algorithms, e.g. block_max_wand,maxscore,ranked_or")
a = ap.parse_args()
meta = json.load(open(os.path.join(a.dir, "index", "meta.json")))
scale = meta["scale"]
docs = None if a.ciff else pq.read_table(os.path.join(a.dir, "docs.parquet")).to_pydict()
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
if a.ciff:
    # pyterrier_pisa.PisaIndex.from_ciff, with PISA's ciff2pisa binary in place of pyciff.
    import subprocess
    from pathlib import Path
    from pyterrier_pisa import _pisathon
    ppath = Path(path)
    ppath.mkdir(parents=True)
    subprocess.run([a.ciff2pisa, "--ciff-file", a.ciff, "--output", str(ppath / "inv")], check=True)
    (ppath / "inv.documents").rename(ppath / "fwd.documents")
    (ppath / "inv.terms").rename(ppath / "fwd.terms")
    _pisathon.build_binlex(str(ppath / "fwd.terms"), str(ppath / "fwd.termlex"))
    _pisathon.build_binlex(str(ppath / "fwd.documents"), str(ppath / "fwd.doclex"))
    json.dump({"type": "sparse_index", "format": "pisa", "package_hint": "pyterrier-pisa",
               "stemmer": "none"}, open(ppath / "pt_meta.json", "w"))
    index = pp.PisaIndex(path, stemmer="none", threads=a.threads)
    n_docs = meta["n_docs"]
else:
    index = pp.PisaIndex(path, stemmer="none", threads=a.threads)
    index.toks_indexer(scale=1.0).index(doc_iter())
    n_docs = len(docs["terms"])
build = time.perf_counter() - t0
def index_size():
    """Every file of PISA's index, and the MiB of its compressed lists + block-max data."""
    size = {f: os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)}
    compressed = sum(v for f, v in size.items() if f.startswith("inv.block") or ".bmw" in f)
    return size, compressed / 2**20


size, compressed = index_size()
print(f"pisa index build_s={build:.1f} docs_per_s={n_docs / build:.0f} files={size}")
if not a.ciff:  # with --ciff the compressed index appears at the first query (printed at the end)
    print(f"pisa compressed_index_mib={compressed:.1f} (inverted lists + block-max data)")

rows = []
for qi, (terms, weights) in enumerate(zip(qs["terms"][:a.queries], qs["weights"][:a.queries])):
    ints = [(t, int(np.floor(np.float32(w) * np.float32(100) + np.float32(0.5)))) for t, w in zip(terms, weights)]
    toks = {str(t): float(q) for t, q in ints if q >= 1}
    rows.append({"qid": str(qi), "query_toks": toks})
queries = pd.DataFrame(rows)

# The floor of pyterrier's per-query cost (pandas frames, query parsing, result building): the
# same number of one-term queries over a term the index does not have.
floor_q = pd.DataFrame([{"qid": str(i), "query_toks": {"__floor__": 1.0}} for i in range(len(queries))])
r = index.quantized(num_results=10, threads=1, query_algorithm="block_max_wand",
                    query_weighted=True, toks_scale=1.0)
r(floor_q.head(5))
t0 = time.perf_counter()
r(floor_q)
print(f"pisa overhead_floor ms_per_query_1thread={(time.perf_counter() - t0) * 1e3 / len(floor_q):.3f} (unknown term: no postings)")

for algo in a.algorithms.split(","):
    for k in (10, 1000):
        for threads in (1, a.threads):
            r = index.quantized(num_results=k, threads=threads, query_algorithm=algo,
                                query_weighted=True, toks_scale=1.0)
            t0 = time.perf_counter()
            r(queries.head(5))  # warm-up (with --ciff, the first call also compresses the index)
            if k == 10 and threads == 1:
                print(f"pisa {algo} first_call_s={time.perf_counter() - t0:.1f}")
            t0 = time.perf_counter()
            res = r(queries)
            secs = time.perf_counter() - t0
            label = "ms_per_query_1thread" if threads == 1 else f"qps_{threads}threads"
            value = secs * 1e3 / len(queries) if threads == 1 else len(queries) / secs
            print(f"pisa {algo} k={k} {label}={value:.3f}")
        if k == 1000:
            ours = pd.read_csv(os.path.join(a.dir, "ours.tsv"), sep="\t", names=["q", "doc", "score"])
            same = 0
            for qi, grp in res.groupby("qid"):
                theirs = sorted(np.rint(grp["score"].to_numpy()).astype(np.int64).tolist(), reverse=True)
                mine = sorted(ours[ours.q == int(qi)]["score"].tolist(), reverse=True)
                same += theirs == mine
            print(f"{algo}: identical top-1000 score lists: {same}/{len(queries)} queries")

size, compressed = index_size()
print(f"pisa files after retrieval={size}")
print(f"pisa compressed_index_mib={compressed:.1f} (inverted lists + block-max data)")
