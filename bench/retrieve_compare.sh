#!/usr/bin/env bash
# Index + retrieval on the deterministic synthetic SPLADE-shaped collection, ours next to PISA
# (pyterrier-pisa, block_max_wand over the same quantized impacts), in one run.
# Usage: bench/retrieve_compare.sh DOCS [QUERIES]   (PY = a Python with pyterrier-pisa + pyarrow;
# CIFF2PISA = PISA's ciff2pisa from `cargo install ciff`, else found on PATH; with it PISA's index
# is built from our CIFF export, without it through pyterrier's (slow) Python indexer;
# PISA_ALGORITHMS = comma-separated PISA query algorithms, default block_max_wand)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
BIN=${BIN:-target/release/splade}
DOCS=${1:-100000}
Q=${2:-1000}
DIR=/tmp/splade-synth-$DOCS
[ -f $DIR/docs.parquet ] || $BIN bench synth --docs $DOCS --queries $Q --out $DIR
CIFF2PISA=${CIFF2PISA:-$(command -v ciff2pisa || true)}
if [ -n "$CIFF2PISA" ]; then
  $BIN bench retrieve $DIR --max-queries $Q --dump $DIR/ours.tsv --ciff $DIR/ours.ciff
  $PY bench/pisa_compare.py $DIR --queries $Q --ciff $DIR/ours.ciff --ciff2pisa "$CIFF2PISA" \
    --algorithms "${PISA_ALGORITHMS:-block_max_wand}" 2>/dev/null
else
  $BIN bench retrieve $DIR --max-queries $Q --dump $DIR/ours.tsv
  $PY bench/pisa_compare.py $DIR --queries $Q --algorithms "${PISA_ALGORITHMS:-block_max_wand}"
fi
