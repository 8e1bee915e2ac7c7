#!/usr/bin/env bash
# pipelines/msmarco-synthetic.toml on the synthetic MS MARCO at scale S, one stage at a time under
# /usr/bin/time -v, with the long stages killed once (SIGKILL) mid-way and resumed.
#
#   SPLADE=target/release/splade bench/msmarco_e2e.sh [S] [WORKDIR]     (S = 1: full size)
#
# Prints: stage | rows | wall | peak RSS of the whole `splade run` process | kill -9 at | resumed
# wall | identical. For a killed stage, `wall` and `peak RSS` are an uninterrupted run's (`--force`
# after the resume) and `identical` compares its output files with the resumed run's byte for byte
# (the train log's examples/s column aside: the model bytes are compared). Stages in KILL_ONLY
# have no uninterrupted run (too long to do twice): their wall is the killed run's plus the resume.
# KILL_AT_<stage>=SECONDS overrides when a stage is killed (defaults are for S = 1, scaled by S;
# training is killed 5 s after its step-20 checkpoint);
# E2E_SET="--set train.steps=12 ..." is passed to every `splade run` and `splade path`.
set -euo pipefail
S=${1:-1}
WORK=${2:-/tmp/splade-e2e-$S}
REPO=$(cd "$(dirname "$0")/.." && pwd)
SPLADE=${SPLADE:-$REPO/target/release/splade}
P=pipelines/msmarco-synthetic.toml
read -ra SET <<< "${E2E_SET:-}"
KILLED=${KILLED:-"ce_scores mine_hn bm25_index train slice_docs"}
KILL_ONLY=${KILL_ONLY:-"slice_docs"}
declare -A KILL_AT=([ce_scores]=100 [mine_hn]=90 [bm25_index]=30 [slice_docs]=600)
STAGES="ingest ce_scores mine_hn bm25 bm25_index bow_train_queries bm25_train mine_bm25 \
bow_dev_queries bm25_dev bm25_evaluate train ingest_slice slice_docs slice_index slice_queries \
slice_retrieve slice_evaluate"

mkdir -p "$WORK"
cd "$WORK"
ln -sfn "$REPO/conf" conf
ln -sfn "$REPO/pipelines" pipelines

secs() { # elapsed seconds from a /usr/bin/time -v log
  python3 -c "import re,sys; p=re.search(r'Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)', open(sys.argv[1]).read()).group(1).split(':'); print(round(sum(float(x)*60**i for i,x in enumerate(reversed(p))),1))" "$1"
}
rss() { echo $(($(grep -oP 'Maximum resident set size \(kbytes\): \K[0-9]+' "$1") / 1024)); }
rows() { # rows of a stage's outputs, from its manifest
  python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(sum((o.get("rows") or 0) for o in m["outputs"].values()))' \
    "$("$SPLADE" path "$P" "$1" "${SET[@]}")/manifest.json" 2>/dev/null || echo "?"
}
resume_point() { # where a run resumed, from its manifest's resumed_* statistics
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])).get("stats",{}); print(" ".join(f"{k}={v}" for k,v in s.items() if k.startswith("resum")) or "-")' \
    "$("$SPLADE" path "$P" "$1" "${SET[@]}")/manifest.json" 2>/dev/null || echo "?"
}
digest() { # one hash over a stage's output files (manifest and train log aside)
  (cd "$("$SPLADE" path "$P" "$1" "${SET[@]}")" && find . -type f ! -name manifest.json ! -name train_log.parquet \
    | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
}
timed() { # timed LOG ARGS...: one `splade run` under /usr/bin/time -v
  local log=$1; shift
  /usr/bin/time -v "$SPLADE" run "$P" --no-progress "${SET[@]}" "$@" > "$log.out" 2> "$log.time"
}

if [ ! -f data/msmarco/full_collection/raw.tsv ]; then
  /usr/bin/time -v "$SPLADE" bench msmarco-synth --scale "$S" \
    --tokenizer conf/models/splade-tiny/tokenizer.json data/msmarco 2> generate.time
  printf 'generate: %s s, %s MiB\n' "$(secs generate.time)" "$(rss generate.time)"
fi

printf '| stage | rows | wall (s) | peak RSS (MiB) | kill -9 at (s) | resumed wall (s) | resumed from | identical |\n'
printf '|---|---|---|---|---|---|---|---|\n'
for stage in $STAGES; do
  if [[ " $KILLED " != *" $stage "* ]]; then
    timed "$stage" --until "$stage"
    printf '| %s | %s | %s | %s | | | | |\n' "$stage" "$(rows "$stage")" "$(secs "$stage.time")" "$(rss "$stage.time")"
    continue
  fi
  # Every dependency ran in an earlier iteration (STAGES is in dependency order), so the kill
  # lands in the stage itself.
  var=KILL_AT_$stage
  at=${!var:-$(python3 -c "print(max(1.0, round(${KILL_AT[$stage]:-0} * $S, 1)))")}
  setsid "$SPLADE" run "$P" --no-progress "${SET[@]}" --until "$stage" > "$stage.killed.out" 2>&1 &
  pid=$!
  if [ "$stage" = train ]; then
    # Training is killed a few seconds after its step-20 checkpoint (between two checkpoints).
    until find artifacts/.staging -maxdepth 4 -name 'step-000000020' -type d | grep -q . \
      || ! kill -0 "$pid" 2>/dev/null; do sleep 1; done
    sleep 5
    at="step 20 + 5"
  else
    sleep "$at"
  fi
  kill -9 -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ -f "$("$SPLADE" path "$P" "$stage" "${SET[@]}" 2>/dev/null)/manifest.json" ]; then
    killed="ended before ${at}s"
  else
    killed=$at
  fi
  timed "$stage.resumed" --until "$stage"
  resumed=$(digest "$stage")
  from=$(resume_point "$stage")
  if [[ " $KILL_ONLY " == *" $stage "* ]]; then
    wall=$(python3 -c "print(round($at + $(secs "$stage.resumed.time"), 1))")
    printf '| %s | %s | %s (killed run + resume) | %s | %s | %s | %s | not compared |\n' "$stage" \
      "$(rows "$stage")" "$wall" "$(rss "$stage.resumed.time")" "$killed" "$(secs "$stage.resumed.time")" "$from"
    continue
  fi
  timed "$stage" --until "$stage" --force "$stage"
  same=$([ "$(digest "$stage")" = "$resumed" ] && echo yes || echo "NO")
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$stage" "$(rows "$stage")" "$(secs "$stage.time")" \
    "$(rss "$stage.time")" "$killed" "$(secs "$stage.resumed.time")" "$from" "$same"
done
