#!/usr/bin/env python3
"""Seismic (pyseismic-lsr) on the same sparse vectors as `splade bench retrieve --approx`.

Reads our vector artifacts (Parquet: id, terms list<u32>, weights list<f32>; a file or a shard
directory), builds a Seismic index with the given knobs, and prints, for each
query_cut:heap_factor setting, single-thread ms/query (median of --repeats after a warm-up)
and recall@10 against the exact float top 10 (scipy sparse products).

  python bench/seismic_compare.py --docs D --queries Q --grid 5:1.0,10:0.9 --n-postings 3500

Needs: pip install pyseismic-lsr pyarrow scipy numpy.

With a Seismic build that counts its work (a module function `take_counters()` returning and
resetting documents scored, blocks scored, blocks whose summary was scored and forward entries
read; docs/performance.md says how that build was made), a `counts` line per setting gives the
same per-query counts as `splade bench retrieve --approx`. The released wheel has no such
function and prints none.
"""
import argparse
import glob
import os
import statistics
import time

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
import seismic


def read_vectors(path):
    files = sorted(glob.glob(os.path.join(path, "*.parquet"))) if os.path.isdir(path) else [path]
    ids, terms, weights = [], [], []
    for f in files:
        t = pq.read_table(f)
        ids += t.column("id").to_pylist()
        terms += [np.asarray(x, dtype=np.int64) for x in t.column("terms").to_pylist()]
        weights += [np.asarray(x, dtype=np.float32) for x in t.column("weights").to_pylist()]
    return ids, terms, weights


def csr(terms, weights, dim):
    indptr = np.cumsum([0] + [len(t) for t in terms])
    return sp.csr_matrix(
        (np.concatenate(weights), np.concatenate(terms), indptr), shape=(len(terms), dim)
    )


def exact_top10(D, Q):
    out = []
    for lo in range(0, Q.shape[0], 256):
        S = (Q[lo : lo + 256] @ D.T).toarray()
        for row in S:
            top = np.argpartition(-row, 10)[:10] if len(row) > 10 else np.arange(len(row))
            top = [i for i in top if row[i] > 0]
            out.append(set(top))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--grid", default="5:1.0,10:0.9,10:0.7,20:0.5")
    ap.add_argument("--n-postings", type=int, default=3500)
    ap.add_argument("--centroid-fraction", type=float, default=0.1)
    ap.add_argument("--summary-energy", type=float, default=0.4)
    ap.add_argument("--max-queries", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()

    d_ids, d_terms, d_weights = read_vectors(a.docs)
    q_ids, q_terms, q_weights = read_vectors(a.queries)
    q_ids, q_terms, q_weights = (x[: a.max_queries] for x in (q_ids, q_terms, q_weights))
    dim = int(max(max((t.max() for t in d_terms if len(t)), default=0),
                  max((t.max() for t in q_terms if len(t)), default=0))) + 1
    truth = exact_top10(csr(d_terms, d_weights, dim), csr(q_terms, q_weights, dim))

    string = seismic.get_seismic_string()
    data = seismic.SeismicDataset()
    for i, (t, w) in enumerate(zip(d_terms, d_weights)):
        data.add_document(str(i), t.astype(str).astype(string), w)
    t0 = time.time()
    index = seismic.SeismicIndex.build_from_dataset(
        data,
        n_postings=a.n_postings,
        centroid_fraction=a.centroid_fraction,
        summary_energy=a.summary_energy,
        num_threads=1,
    )
    print(f"seismic index docs={len(d_ids)} n_postings={a.n_postings} "
          f"centroid_fraction={a.centroid_fraction} summary_energy={a.summary_energy} "
          f"build_s={time.time() - t0:.2f} version=pyseismic-lsr")
    qc = [t.astype(str).astype(string) for t in q_terms]
    names = np.array([str(i) for i in range(len(q_terms))], dtype=string)
    for pair in a.grid.split(","):
        cut, factor = pair.split(":")
        cut, factor = int(cut), float(factor)

        def run():
            return index.batch_search(names, qc, q_weights, k=10, query_cut=cut,
                                      heap_factor=factor, num_threads=1)

        counters = getattr(seismic, "take_counters", None)
        if counters:
            counters()
        res = run()  # warm-up
        if counters:
            docs, blocks, ranked, entries = counters()
            nq = len(q_terms)
            print(f"counts algo=seismic query_cut={cut} heap_factor={factor} "
                  f"docs_scored={docs / nq:.0f} blocks_scored={blocks / nq:.0f} "
                  f"blocks_ranked={ranked / nq:.0f} entries_per_doc={entries / max(docs, 1):.1f}")
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) * 1e3 / len(q_terms))
        # batch_search's result lists are not in query order: match them by query id.
        found = {int(hits[0][0]): {int(h[2]) for h in hits} for hits in res if hits}
        recall = [len(want & found.get(i, set())) / len(want)
                  for i, want in enumerate(truth) if want]
        print(f"retrieve algo=seismic query_cut={cut} heap_factor={factor} k=10 "
              f"ms_per_query_1thread={statistics.median(times):.3f} "
              f"(min {min(times):.3f} max {max(times):.3f}) "
              f"recall_at_10={statistics.mean(recall):.4f} repeats={a.repeats}")


if __name__ == "__main__":
    main()
