#!/usr/bin/env python3
"""Regenerate run.dev.bm25.trec: a plain BM25 baseline over the toy collection.

Usage (from this directory):  python3 make_bm25_run.py

BM25 with k1=0.9, b=0.4 (the Anserini defaults), Lucene-style idf
log(1 + (N - df + 0.5) / (df + 0.5)). Text is lowercased and split on runs of
non-alphanumeric characters; tokens in STOPWORDS are dropped from both documents
and queries (document length counts the remaining tokens). Each distinct query
term counts once. Every dev query gets exactly TOPK passages; scores are rounded
to 4 decimals and ties are broken by passage id ascending (numerically), so
zero-score passages fill the tail of the list in id order.
"""
import math
import re
from collections import Counter

K1, B, TOPK = 0.9, 0.4, 100
STOPWORDS = set("""
a an and are as at be by do does for from has have how i if in is it its my of on
or should so that the their them then there these they this to was what when where
which who why will with you your can did
""".split())
TOKEN_RE = re.compile(r"[^a-z0-9]+")


def tokenize(text):
    return [t for t in TOKEN_RE.split(text.lower()) if t and t not in STOPWORDS]


def read_tsv(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def main():
    docs = [(did, Counter(tokenize(text))) for did, text in read_tsv("collection.tsv")]
    n = len(docs)
    lens = {did: sum(tf.values()) for did, tf in docs}
    avgdl = sum(lens.values()) / n
    df = Counter()
    for _, tf in docs:
        df.update(tf.keys())
    idf = {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}

    with open("run.dev.bm25.trec", "w", encoding="utf-8", newline="\n") as out:
        for qid, query in read_tsv("queries.dev.tsv"):
            terms = set(tokenize(query))
            scored = []
            for did, tf in docs:
                norm = K1 * (1 - B + B * lens[did] / avgdl)
                s = sum(idf[t] * tf[t] * (K1 + 1) / (tf[t] + norm) for t in terms if t in tf)
                scored.append((round(s, 4), int(did)))
            scored.sort(key=lambda x: (-x[0], x[1]))
            for rank, (s, did) in enumerate(scored[:TOPK], start=1):
                out.write(f"{qid} Q0 {did} {rank} {s:.4f} bm25\n")


if __name__ == "__main__":
    main()
