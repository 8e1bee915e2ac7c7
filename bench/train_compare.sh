#!/usr/bin/env bash
# Training-step throughput, ours next to PyTorch+transformers (same model, batch, lengths, loss,
# optimizer and thread count), in one run. Needs a Python with torch + transformers ($PY, default
# python3) and a release build ($BIN; a tch build too for BACKENDS="flex tch").
# Usage: bench/train_compare.sh [STEPS_TINY] [STEPS_BASE]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
BIN=${BIN:-target/release/splade}
BACKENDS=${BACKENDS:-flex}
STEPS_TINY=${1:-5}
STEPS_BASE=${2:-2}
BASE=/tmp/bert-base-random
[ -f $BASE/model.safetensors ] || $PY bench/make_bert_base.py $BASE >/dev/null
for model in conf/models/splade-tiny $BASE; do
  STEPS=$STEPS_TINY; [ $model = $BASE ] && STEPS=$STEPS_BASE
  echo "== $(basename $model) batch 8 (1 pos + 1 neg), query 32 / doc 128 tokens"
  for backend in $BACKENDS; do
    printf "  splade-%s " $backend
    bin=$BIN; [ $backend = tch ] && bin=${BIN_TCH:-target-tch/release/splade}
    RAYON_NUM_THREADS=2 $bin bench train --model $model --steps $STEPS --backend $backend
  done
  printf '  pytorch     '; $PY bench/train_torch.py --model $model --steps $STEPS --threads 2
done
