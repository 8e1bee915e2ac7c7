#!/usr/bin/env python3
"""`mine` and `distill` at MS MARCO scale, on generated data.

Usage: python3 bench/mining.py [--bin target/release/splade] [--queries 500000] [--depth 100]
                               [--scores 10000000] [--only mine|distill]
mine:    writes a TREC run of QUERIES x DEPTH (+ qrels, one positive per query, inside the run for
         half of the queries), ingests it, then times `splade run` of the mine stage alone
         (ingest cached) under /usr/bin/time -v: queries/s from the manifest, peak RSS.
distill: writes a gzip'd pickle {int qid: {int pid: float}} of SCORES scores (100 per query, as
         Python's pickle.dump writes it, protocol 4) and times the distill stage the same way; for
         reference, the time and peak RSS of Python's own `pickle.load` of the same file.
"""
import argparse, gzip, json, os, pickle, random, resource, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default="target/release/splade")
ap.add_argument("--queries", type=int, default=500_000)
ap.add_argument("--depth", type=int, default=100)
ap.add_argument("--scores", type=int, default=10_000_000)
ap.add_argument("--only", choices=["mine", "distill"])
ap.add_argument("--dir", default=None, help="work directory (default: a new temp dir)")
args = ap.parse_args()
tmp = args.dir or tempfile.mkdtemp(prefix="splade-mining-")
os.makedirs(tmp, exist_ok=True)
art = os.path.join(tmp, "artifacts")


def timed_run(pipe, stage):
    """Runs the pipeline under /usr/bin/time -v; returns (wall s, peak RSS MiB, manifest)."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", args.bin, "--artifacts", art, "run", pipe, "--no-progress"],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(p.stdout + p.stderr)
    rss = next(int(l.split()[-1]) for l in p.stderr.splitlines() if "Maximum resident" in l) / 1024
    path = subprocess.run([args.bin, "--artifacts", art, "path", pipe, stage], check=True,
                          capture_output=True, text=True).stdout.strip()
    return wall, rss, json.load(open(os.path.join(path, "manifest.json")))


if args.only in (None, "mine"):
    rng = random.Random(7)
    run, qrels = os.path.join(tmp, "run.trec"), os.path.join(tmp, "qrels.trec")
    t0 = time.perf_counter()
    with open(run, "w") as r, open(qrels, "w") as q:
        for qid in range(args.queries):
            base = rng.randrange(8_800_000)
            pos = base + (rng.randrange(args.depth) if qid % 2 == 0 else args.depth)
            q.write(f"{qid} 0 {pos} 1\n")
            r.write("".join(f"{qid} Q0 {base + i} {i + 1} {100.0 - i * 0.5} bm25\n" for i in range(args.depth)))
    print(f"generated {args.queries} x {args.depth} run ({os.path.getsize(run) / 1e9:.2f} GB) "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)
    pipe = os.path.join(tmp, "mine.toml")
    open(pipe, "w").write(
        f'name = "bench-mine"\n[stage.ingest]\nkind = "ingest"\nruns = {{ train = "{run}" }}\n'
        f'qrels = {{ train = "{qrels}" }}\n'
        f'[stage.mine]\nkind = "mine"\nrun = "ingest.train_run"\nqrels = "ingest.train_qrels"\n'
        f'depth = {args.depth}\nrank_range = [1, {args.depth}]\nnegatives = 8\nsampling = "random"\n')
    subprocess.run([args.bin, "--artifacts", art, "run", pipe, "--until", "ingest", "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL)
    wall, rss, m = timed_run(pipe, "mine")
    print(f"mine: {args.queries} queries x depth {args.depth}: stage {m['seconds']:.1f} s = "
          f"{args.queries / m['seconds']:,.0f} queries/s ({args.queries * args.depth / m['seconds'] / 1e6:.2f}M run rows/s); "
          f"whole `splade run` {wall:.1f} s, peak RSS {rss:,.0f} MiB; {m['stats']['queries_kept']} queries kept, "
          f"{m['stats']['shards']} shards", flush=True)

if args.only in (None, "distill"):
    per_q = 100
    nq = args.scores // per_q
    pkl = os.path.join(tmp, f"ce-{args.scores}.pkl.gz")
    if not os.path.exists(pkl):
        rng = random.Random(11)
        t0 = time.perf_counter()
        d = {}
        for q in range(nq):
            base = rng.randrange(8_800_000)
            d[q] = {base + i: rng.uniform(-12.0, 12.0) for i in range(per_q)}
        with gzip.open(pkl, "wb", compresslevel=6) as f:
            pickle.dump(d, f, protocol=4)
        del d
        print(f"generated {args.scores:,} scores pickle ({os.path.getsize(pkl) / 1e6:.0f} MB gz) "
              f"in {time.perf_counter() - t0:.0f} s", flush=True)
    pipe = os.path.join(tmp, "distill.toml")
    open(pipe, "w").write(f'name = "bench-distill"\n[stage.distill]\nkind = "distill"\nscores = "{pkl}"\n')
    wall, rss, m = timed_run(pipe, "distill")
    print(f"distill: {m['stats']['scores']:,} scores: stage {m['seconds']:.1f} s = "
          f"{m['stats']['scores'] / m['seconds'] / 1e6:.2f}M scores/s; whole `splade run` {wall:.1f} s "
          f"(incl. hashing the input), peak RSS {rss:,.0f} MiB", flush=True)
    code = ("import gzip,pickle,resource,time,sys;t=time.perf_counter();"
            f"d=pickle.load(gzip.open({pkl!r}));"
            "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    print(f"python pickle.load of the same file: {float(out[0]):.1f} s "
          f"({args.scores / float(out[0]) / 1e6:.2f}M scores/s), peak RSS {float(out[1]):,.0f} MiB")
