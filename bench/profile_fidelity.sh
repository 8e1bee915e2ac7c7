#!/usr/bin/env bash
# How faithfully a profile-drawn collection stands in for the vectors it was estimated from:
# estimates a profile from DOCS/QUERIES, draws a collection of the same size (topics of 150
# documents, as the synthetic MS MARCO text has), and times exhaustive and block_max on both,
# in input order and reordered by graph bisection, printing block_max's share of ranges scored.
#
#   BIN=target/release/splade bench/profile_fidelity.sh DOCS QUERIES [TOPIC_SHARE] [OVERLAP]
set -euo pipefail
DOCS=$1
QUERIES=$2
SHARE=${3:-0.5}
OVERLAP=${4:-0.4}
BIN=${BIN:-target/release/splade}
REPEATS=${REPEATS:-3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$BIN" bench profile --docs "$DOCS" --queries "$QUERIES" --out "$WORK/profile.json" | tee "$WORK/summary"
N_DOCS=$(grep -Eo 'docs vectors=[0-9]+' "$WORK/summary" | cut -d= -f2)
N_QUERIES=$(grep -Eo 'queries vectors=[0-9]+' "$WORK/summary" | cut -d= -f2)
TOPICS=$(( N_DOCS / 150 > 1 ? N_DOCS / 150 : 1 ))
"$BIN" bench synth --profile "$WORK/profile.json" --docs "$N_DOCS" --queries "$N_QUERIES" \
  --topics "$TOPICS" --topic-share "$SHARE" --query-overlap "$OVERLAP" --out "$WORK/drawn"
for order in none bp; do
  echo "== real vectors, reorder=$order"
  "$BIN" bench retrieve --docs "$DOCS" --queries "$QUERIES" --repeats "$REPEATS" \
    --reorder "$order" --algorithms exhaustive,block_max | grep -E "^(index|retrieve)"
  echo "== drawn from the profile ($TOPICS topics, topic share $SHARE, query overlap $OVERLAP), reorder=$order"
  "$BIN" bench retrieve "$WORK/drawn" --repeats "$REPEATS" \
    --reorder "$order" --algorithms exhaustive,block_max | grep -E "^(index|retrieve)"
done
