#!/usr/bin/env bash
# The MS MARCO data pipeline (pipelines/msmarco-ensembledistil-data.toml, as shipped) on the
# synthetic MS MARCO at scale S, one stage at a time under /usr/bin/time -v: prints
# stage | rows | wall | peak RSS of the whole `splade run` process.
#
#   bench/msmarco_scale.sh [S] [WORKDIR]        (S = 1.0 is full size; default 0.1)
#   SPLADE=target/release/splade bench/msmarco_scale.sh 0.1 /tmp/msmarco-0.1
#
# BM25 mining retrieves for every train query (k = 100); set TRAIN_QUERIES=N to keep the first N
# train queries of the generated set (default: all).
set -euo pipefail
S=${1:-0.1}
WORK=${2:-/tmp/splade-msmarco-$S}
REPO=$(cd "$(dirname "$0")/.." && pwd)
SPLADE=${SPLADE:-$REPO/target/release/splade}
mkdir -p "$WORK"
cd "$WORK"
ln -sfn "$REPO/conf" conf
ln -sfn "$REPO/pipelines" pipelines

if [ ! -f data/msmarco/full_collection/raw.tsv ]; then
  /usr/bin/time -f "generate: %e s, %M KiB" "$SPLADE" bench msmarco-synth --scale "$S" \
    --tokenizer conf/models/splade-tiny/tokenizer.json data/msmarco
fi
QUERIES=data/msmarco/train_queries/queries
if [ -n "${TRAIN_QUERIES:-}" ]; then
  mkdir -p data/subset
  head -n "$TRAIN_QUERIES" data/msmarco/train_queries/queries/raw.tsv > data/subset/raw.tsv
  QUERIES=data/subset
fi
cat > scale.toml <<EOF
name = "msmarco-scale"
include = ["pipelines/msmarco-ensembledistil-data.toml"]
[stage.ingest]
queries = { train = "$QUERIES" }
allow_empty = false
[stage.mine_hn]
other_queries = "$([ -n "${TRAIN_QUERIES:-}" ] && echo skip || echo error)"
EOF

row_count() { # rows of a stage's outputs, from its manifest
  python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(sum((o.get("rows") or 0) for o in m["outputs"].values()))' \
    "$("$SPLADE" path scale.toml "$1")/manifest.json" 2>/dev/null || echo "?"
}

printf '| stage | rows | wall (s) | peak RSS (MiB) |\n|---|---|---|---|\n'
for stage in ingest ce_scores mine_hn bm25 bm25_index bow_train_queries bm25_train mine_bm25; do
  /usr/bin/time -v "$SPLADE" run scale.toml --until "$stage" --no-progress > "run-$stage.log" 2> "time-$stage.log"
  wall=$(grep -oP 'Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): \K.*' "time-$stage.log")
  rss=$(grep -oP 'Maximum resident set size \(kbytes\): \K[0-9]+' "time-$stage.log")
  secs=$(python3 -c "p='$wall'.split(':'); print(round(sum(float(x)*60**i for i,x in enumerate(reversed(p))),1))")
  printf '| %s | %s | %s | %s |\n' "$stage" "$(row_count "$stage")" "$secs" "$((rss / 1024))"
done
