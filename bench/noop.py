#!/usr/bin/env python3
"""No-op latency: `splade run` and `splade plan` on a fully cached pipeline of 10 stages.

Usage: python3 bench/noop.py [--bin target/release/splade] [--repeat 30]
Builds its pipeline (ingest + 9 evaluate stages over the toy data) in a temp dir, runs it once to
fill the cache, then times whole processes (startup included) and prints the median and p90.
"""
import argparse, os, statistics, subprocess, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default="target/release/splade")
ap.add_argument("--repeat", type=int, default=30)
args = ap.parse_args()

tmp = tempfile.mkdtemp(prefix="splade-noop-")
pipe = os.path.join(tmp, "noop.toml")
stages = ["name = \"noop\"\n", """[stage.ingest]
kind = "ingest"
docs = "pipelines/data/toy/collection.tsv"
queries = { train = "pipelines/data/toy/queries.train.tsv", dev = "pipelines/data/toy/queries.dev.tsv" }
qrels = { train = "pipelines/data/toy/qrels.train.json", dev = "pipelines/data/toy/qrels.dev.trec" }
runs = { bm25_dev = "pipelines/data/toy/run.dev.bm25.trec" }
"""]
for i in range(1, 10):
    stages.append(f"""[stage.eval{i}]
kind = "evaluate"
run = "ingest.bm25_dev_run"
qrels = "ingest.dev_qrels"
k = [{i * 10}]
""")
open(pipe, "w").write("".join(stages))
art = os.path.join(tmp, "artifacts")
base = [args.bin, "--artifacts", art]
subprocess.run(base + ["run", pipe, "--no-progress"], check=True, stdout=subprocess.DEVNULL)

def timed(cmd):
    out = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        out.append((time.perf_counter() - t0) * 1000)
    out.sort()
    return statistics.median(out), out[int(0.9 * (len(out) - 1))]

for name, cmd in [("run (all 10 cached)", base + ["run", pipe, "--no-progress"]),
                  ("plan", base + ["plan", pipe])]:
    med, p90 = timed(cmd)
    print(f"{name:<22} median {med:6.1f} ms   p90 {p90:6.1f} ms   ({args.repeat} runs)")
