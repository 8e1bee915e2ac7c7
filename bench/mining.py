#!/usr/bin/env python3
"""`mine` and `distill` at MS MARCO scale, on generated data.

Usage: python3 bench/mining.py [--bin target/release/splade] [--queries 500000] [--depth 100]
                               [--scores 10000000] [--only mine|distill] [--dir DIR]
mine:    `splade bench mine`: a generated run of QUERIES x DEPTH (+ qrels, one positive per query,
         inside the run for half of the queries) as Parquet, then the mine stage on it: queries/s
         and peak RSS (in-process VmHWM and /usr/bin/time -v).
distill: a gzip'd pickle {int qid: {int pid: float}} of SCORES scores (100 per query, written by
         Python's pickle.dump, protocol 4, as the MS MARCO CE file); `splade bench distill` on it
         (stage time: unpickling + writing Parquet), a whole `splade run` of a distill-only
         pipeline (hashing the input and commit included), and Python's own `pickle.load` of the
         same file for reference (time and peak RSS).
"""
import argparse, gzip, json, os, pickle, random, subprocess, sys, tempfile, time

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


def timed(cmd):
    """Runs cmd under /usr/bin/time -v; returns (stdout, wall s, peak RSS MiB)."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(p.stdout + p.stderr)
    rss = next(int(l.split()[-1]) for l in p.stderr.splitlines() if "Maximum resident" in l) / 1024
    return p.stdout, wall, rss


if args.only in (None, "mine"):
    out, wall, rss = timed([args.bin, "bench", "mine", "--queries", str(args.queries),
                            "--depth", str(args.depth), "--dir", os.path.join(tmp, "mine")])
    print(out.splitlines()[0])
    print(f"  whole process (generation included): {wall:.1f} s, peak RSS {rss:,.0f} MiB", flush=True)

if args.only in (None, "distill"):
    per_q = 100
    pkl = os.path.join(tmp, f"ce-{args.scores}.pkl.gz")
    if not os.path.exists(pkl):
        rng = random.Random(11)
        t0 = time.perf_counter()
        d = {}
        for q in range(args.scores // per_q):
            base = rng.randrange(8_800_000)
            d[q] = {base + i: rng.uniform(-12.0, 12.0) for i in range(per_q)}
        with gzip.open(pkl, "wb", compresslevel=6) as f:
            pickle.dump(d, f, protocol=4)
        del d
        print(f"generated {args.scores:,} scores pickle ({os.path.getsize(pkl) / 1e6:.0f} MB gz) "
              f"in {time.perf_counter() - t0:.0f} s", flush=True)
    out, wall, rss = timed([args.bin, "bench", "distill", pkl])
    print(out.splitlines()[0])
    print(f"  /usr/bin/time: {wall:.1f} s, peak RSS {rss:,.0f} MiB", flush=True)
    pipe = os.path.join(tmp, "distill.toml")
    open(pipe, "w").write(f'name = "bench-distill"\n[stage.distill]\nkind = "distill"\nscores = "{pkl}"\n')
    art = os.path.join(tmp, "artifacts")
    subprocess.run(["rm", "-rf", art], check=True)
    _, wall, rss = timed([args.bin, "--artifacts", art, "run", pipe, "--no-progress"])
    print(f"  whole `splade run` (hashing the input, commit): {wall:.1f} s = "
          f"{args.scores / wall / 1e6:.2f}M scores/s, peak RSS {rss:,.0f} MiB", flush=True)
    code = ("import gzip,pickle,resource,time;t=time.perf_counter();"
            f"d=pickle.load(gzip.open({pkl!r}));"
            "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    print(f"python pickle.load of the same file (in memory): {float(out[0]):.1f} s "
          f"({args.scores / float(out[0]) / 1e6:.2f}M scores/s), peak RSS {float(out[1]):,.0f} MiB")
