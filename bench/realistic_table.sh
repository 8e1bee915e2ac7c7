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
# PRUNING=global prunes ours as Seismic does. MEMORY_BUDGET=MIB builds our index from the file
# through sorted runs (a collection larger than memory; the CIFF is then streamed from the
# index); GRID=none skips the approximate curves; SYSTEMS (default ours,pisa,seismic) picks the
# systems run (PISA needs ours' CIFF and dump from the same DIR). Our approximate search runs at
# each GRID setting as the retrieve stage does by default (rows scored by a 96-entry prefix,
# completed at 0.7 × the k-th score: `query_cut:heap_factor:96:0.7`); OURS_GRID sets ours apart
# (e.g. `10:0.9:0:0` scores whole rows). Seismic has no row prefix.
set -euo pipefail
DIR=${1:?usage: bench/realistic_table.sh DIR [N_POSTINGS] [GRID]}
N_POSTINGS=${2:-1000}
GRID=${3:-"3:1.0,5:0.9,10:0.9,10:0.7"}
BIN=${BIN:-target/release/splade}
PY=${PY:-python3}
REPEATS=${REPEATS:-3}
QUERIES=${QUERIES:-500}
PRUNING=${PRUNING:-per-list}
MEMORY_BUDGET=${MEMORY_BUDGET:-0}
SYSTEMS=${SYSTEMS:-ours,pisa,seismic}
CIFF2PISA=${CIFF2PISA:-$(command -v ciff2pisa || true)}
SYSTEMS=${SYSTEMS// /}
for s in ${SYSTEMS//,/ }; do
  case $s in ours | pisa | seismic) ;; *) echo "SYSTEMS: unknown \`$s' (ours, pisa, seismic)" >&2; exit 2 ;; esac
done
runs() { case ",$SYSTEMS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
if runs pisa; then
  [ -n "$CIFF2PISA" ] || { echo "ciff2pisa not found: set CIFF2PISA or put it on PATH (cargo install ciff)" >&2; exit 2; }
fi
# query_cut:heap_factor settings get the stage's default prefix; four-field ones are kept.
OURS_GRID=${OURS_GRID:-$(echo "$GRID" | tr ',' '\n' | sed -E 's/^([^:]+:[^:]+)$/\1:96:0.7/' | paste -sd, -)}
APPROX=()
[ "$GRID" = none ] || APPROX=(--approx "$OURS_GRID" --approx-postings "$N_POSTINGS" --approx-pruning "$PRUNING")
HERE=$(cd "$(dirname "$0")" && pwd)
if runs ours; then
  echo "== ours: $BIN ($(date -u +%FT%TZ))"
  "$BIN" bench retrieve "$DIR" --repeats "$REPEATS" --max-queries "$QUERIES" \
    --algorithms exhaustive,maxscore,block_max --dump "$DIR/ours.tsv" --ciff "$DIR/ours.ciff" \
    --memory-budget "$MEMORY_BUDGET" ${APPROX[@]+"${APPROX[@]}"}
fi
if runs pisa; then
  echo "== PISA ($(date -u +%FT%TZ))"
  "$PY" "$HERE/pisa_compare.py" "$DIR" --queries "$QUERIES" --ciff "$DIR/ours.ciff" \
    --ciff2pisa "$CIFF2PISA" --algorithms block_max_wand,maxscore,ranked_or
fi
if runs seismic && [ "$GRID" != none ]; then
  echo "== Seismic ($(date -u +%FT%TZ))"
  "$PY" "$HERE/seismic_compare.py" --docs "$DIR/docs.parquet" --queries "$DIR/queries.parquet" \
    --max-queries "$QUERIES" --repeats "$REPEATS" --grid "$GRID" --n-postings "$N_POSTINGS"
fi
echo "== done ($(date -u +%FT%TZ))"
