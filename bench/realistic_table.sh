#!/usr/bin/env bash
# Issue 16's single-run retrieval table on one collection: ours (every exact algorithm at k = 10
# and 1000, the approximate curve), PISA (block_max_wand, maxscore, ranked_or over our CIFF, so
# the same integers) and Seismic (same vectors and knobs; list pruning: below), one after the
# other in one run.
#
#   BIN=target/release/splade PY=/opt/pisavenv/bin/python3 bench/realistic_table.sh DIR \
#     [N_POSTINGS] [GRID]
#
# DIR holds docs.parquet and queries.parquet (e.g. `splade bench synth --profile ... --out DIR`);
# the index, our CIFF, our top-1000 dump and PISA's index are written there. PY needs
# pyterrier-pisa, pyseismic-lsr, pyarrow, scipy; CIFF2PISA (PISA's ciff2pisa from `cargo install
# ciff`) is found on PATH. REPEATS (default 3) timed passes per setting; QUERIES (default 500).
# Lists are pruned as each system does by default (ours per list, Seismic by a global threshold);
# PRUNING=global prunes ours as Seismic does.
set -euo pipefail
DIR=${1:?usage: bench/realistic_table.sh DIR [N_POSTINGS] [GRID]}
N_POSTINGS=${2:-1000}
GRID=${3:-"3:1.0,5:0.9,10:0.9,10:0.7"}
BIN=${BIN:-target/release/splade}
PY=${PY:-python3}
REPEATS=${REPEATS:-3}
QUERIES=${QUERIES:-500}
PRUNING=${PRUNING:-per-list}
CIFF2PISA=${CIFF2PISA:-$(command -v ciff2pisa || true)}
[ -n "$CIFF2PISA" ] || { echo "ciff2pisa not found: set CIFF2PISA or put it on PATH (cargo install ciff)" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
echo "== ours: $BIN ($(date -u +%FT%TZ))"
"$BIN" bench retrieve "$DIR" --repeats "$REPEATS" --max-queries "$QUERIES" \
  --algorithms exhaustive,maxscore,block_max --dump "$DIR/ours.tsv" --ciff "$DIR/ours.ciff" \
  --approx "$GRID" --approx-postings "$N_POSTINGS" --approx-pruning "$PRUNING"
echo "== PISA ($(date -u +%FT%TZ))"
"$PY" "$HERE/pisa_compare.py" "$DIR" --queries "$QUERIES" --ciff "$DIR/ours.ciff" \
  --ciff2pisa "$CIFF2PISA" --algorithms block_max_wand,maxscore,ranked_or
echo "== Seismic ($(date -u +%FT%TZ))"
"$PY" "$HERE/seismic_compare.py" --docs "$DIR/docs.parquet" --queries "$DIR/queries.parquet" \
  --max-queries "$QUERIES" --repeats "$REPEATS" --grid "$GRID" --n-postings "$N_POSTINGS"
echo "== done ($(date -u +%FT%TZ))"
