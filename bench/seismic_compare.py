#!/usr/bin/env python3
"""Seismic (pyseismic-lsr) on the same sparse vectors as `splade bench retrieve --approx`.

Reads our vector artifacts (Parquet: id, terms list<u32>, weights list<f32>; a file or a shard
directory; documents a record batch at a time, into Seismic's dataset by component id, with the
exact top 10 merged batch by batch, so only Seismic holds the collection), builds a Seismic
index with the given knobs, and prints, for each
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
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp
import seismic

BERT_VOCAB = 30522


def parquet_files(path):
    return sorted(glob.glob(os.path.join(path, "*.parquet"))) if os.path.isdir(path) else [path]


def read_vectors(path):
    ids, terms, weights = [], [], []
    for f in parquet_files(path):
        t = pq.read_table(f)
        ids += t.column("id").to_pylist()
        terms += [np.asarray(x, dtype=np.int64) for x in t.column("terms").to_pylist()]
        weights += [np.asarray(x, dtype=np.float32) for x in t.column("weights").to_pylist()]
    return ids, terms, weights


def doc_batches(path, rows=65536):
    """The documents as CSR batches (components int64, values float32, offsets int64), read a
    record batch at a time: nothing of the collection is held in Python beyond one batch."""
    for f in parquet_files(path):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=rows, columns=["terms", "weights"]):
            terms, weights = batch.column("terms"), batch.column("weights")
            lengths = pc.fill_null(pc.list_value_length(terms), 0).to_numpy().astype(np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            comps = terms.flatten().to_numpy().astype(np.int64)
            vals = weights.flatten().to_numpy().astype(np.float32)
            # Terms ascending within each row (Seismic requires it; our readers sort such rows).
            order = np.lexsort((comps, np.repeat(np.arange(len(lengths)), lengths)))
            yield comps[order], vals[order], offsets


def doc_terms(path, rows=65536):
    """Every document term id, a record batch at a time (the terms column only)."""
    for f in parquet_files(path):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=rows, columns=["terms"]):
            yield batch.column("terms").flatten().to_numpy()


def csr(terms, weights, dim):
    indptr = np.cumsum([0] + [len(t) for t in terms])
    return sp.csr_matrix(
        (np.concatenate(weights), np.concatenate(terms), indptr), shape=(len(terms), dim)
    )


class ExactTop10:
    """The exact float top 10 of each query, merged one document batch at a time (scipy sparse
    products), so the collection is never held whole."""

    def __init__(self, Q):
        self.Q = Q
        self.scores = np.full((Q.shape[0], 10), -np.inf, dtype=np.float32)
        self.docs = np.full((Q.shape[0], 10), -1, dtype=np.int64)

    def add(self, first_doc, comps, vals, offsets):
        dim = self.Q.shape[1]
        keep = comps < dim  # a term no query has adds nothing to any dot product
        kept_offsets = np.concatenate([[0], np.cumsum(keep)])[offsets]
        D = sp.csr_matrix((vals[keep], comps[keep], kept_offsets), shape=(len(offsets) - 1, dim))
        S = (self.Q @ D.T).toarray().astype(np.float32)
        n = S.shape[1]
        top = np.argpartition(-S, 10, axis=1)[:, :10] if n > 10 else np.tile(np.arange(n), (S.shape[0], 1))
        scores = np.concatenate([self.scores, np.take_along_axis(S, top, axis=1)], axis=1)
        docs = np.concatenate([self.docs, top + first_doc], axis=1)
        best = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        self.scores = np.take_along_axis(scores, best, axis=1)
        self.docs = np.take_along_axis(docs, best, axis=1)

    def sets(self):
        return [{int(d) for d, s in zip(ds, ss) if s > 0} for ds, ss in zip(self.docs, self.scores)]


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

    q_ids, q_terms, q_weights = read_vectors(a.queries)
    q_ids, q_terms, q_weights = (x[: a.max_queries] for x in (q_ids, q_terms, q_weights))
    # Queries name components as strings of their ids; a document term past every query's is
    # left out of the exact scores only (it scores nothing).
    dim = max(BERT_VOCAB, int(max((t.max() for t in q_terms if len(t)), default=0)) + 1)
    truth = ExactTop10(csr(q_terms, q_weights, dim))
    # Seismic's global pruning budget is n_postings × its components: number only the terms the
    # documents hold (as token strings would be), so empty vocabulary entries add no budget.
    t0 = time.time()
    seen = [np.unique(t) for t in doc_terms(a.docs)]
    present = np.unique(np.concatenate(seen + [np.zeros(0, np.int64)]))
    if len(present) == 0:
        raise SystemExit(f"{a.docs}: no document holds a term")
    dense = np.full(max(int(present[-1]) + 1, dim) if len(present) else dim, -1, dtype=np.int64)
    dense[present] = np.arange(len(present))
    data = seismic.SeismicDataset(dim=len(present))
    n_docs = 0
    for comps, vals, offsets in doc_batches(a.docs):
        n = len(offsets) - 1
        truth.add(n_docs, comps, vals, offsets)
        ids = [str(i) for i in range(n_docs, n_docs + n)]
        data.add_documents_by_id(ids, dense[comps], vals, offsets)
        n_docs += n
    truth = truth.sets()
    # A query term no document holds scores nothing: left out.
    for i, t in enumerate(q_terms):
        mapped = dense[np.minimum(t, len(dense) - 1)]
        keep = (t < len(dense)) & (mapped >= 0)
        q_terms[i], q_weights[i] = mapped[keep], q_weights[i][keep]
    print(f"seismic read docs={n_docs} seconds={time.time() - t0:.1f} (with the exact top 10)",
          flush=True)
    t0 = time.time()
    index = seismic.SeismicIndex.build_from_dataset(
        data,
        n_postings=a.n_postings,
        centroid_fraction=a.centroid_fraction,
        summary_energy=a.summary_energy,
        num_threads=1,
    )
    del data  # the index holds its own copy
    print(f"seismic index docs={n_docs} n_postings={a.n_postings} "
          f"centroid_fraction={a.centroid_fraction} summary_energy={a.summary_energy} "
          f"build_s={time.time() - t0:.2f} version=pyseismic-lsr")
    string = seismic.get_seismic_string()
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
