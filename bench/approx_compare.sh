#!/usr/bin/env bash
# Our approximate retrieval (`splade bench retrieve --approx`) and Seismic (pyseismic-lsr,
# bench/seismic_compare.py) on the same vectors with the same knobs, one after the other:
# single-thread ms/query and recall@10 per query_cut:heap_factor setting.
#
#   BIN=target/release/splade PY=python3 bench/approx_compare.sh DOCS QUERIES [N_POSTINGS] [GRID]
#
# OURS_GRID (default GRID) gives our side its own settings, e.g. with the row prefix
# (`query_cut:heap_factor:row_prefix:completion`), which Seismic does not have.
set -euo pipefail
DOCS=$1
QUERIES=$2
N_POSTINGS=${3:-3500}
GRID=${4:-"3:1.0,5:1.0,5:0.9,8:1.0,10:0.9,10:0.7,20:0.5"}
BIN=${BIN:-target/release/splade}
PY=${PY:-python3}
REPEATS=${REPEATS:-5}
OURS_GRID=${OURS_GRID:-$GRID}
HERE=$(cd "$(dirname "$0")" && pwd)
"$BIN" bench retrieve --docs "$DOCS" --queries "$QUERIES" --repeats "$REPEATS" --approx "$OURS_GRID" \
  --approx-postings "$N_POSTINGS" --approx-only | grep -E "^(approximate|retrieve)"
"$PY" "$HERE/seismic_compare.py" --docs "$DOCS" --queries "$QUERIES" --repeats "$REPEATS" \
  --grid "$GRID" --n-postings "$N_POSTINGS" | grep -E "^(seismic|retrieve|counts)"
