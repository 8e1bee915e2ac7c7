#!/usr/bin/env bash
# Index + retrieval on the deterministic synthetic SPLADE-shaped collection, ours next to PISA
# (pyterrier-pisa, block_max_wand over the same quantized impacts), in one run.
# Usage: bench/retrieve_compare.sh DOCS [QUERIES]   (PY = a Python with pyterrier-pisa + pyarrow)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
BIN=${BIN:-target/release/splade}
DOCS=${1:-100000}
Q=${2:-1000}
DIR=/tmp/splade-synth-$DOCS
[ -f $DIR/docs.parquet ] || $BIN bench synth --docs $DOCS --queries $Q --out $DIR
$BIN bench retrieve $DIR --queries $Q --dump $DIR/ours.tsv
$PY bench/pisa_compare.py $DIR --queries $Q
