#!/usr/bin/env bash
# Encode throughput, ours (flex) next to PyTorch+transformers, same model, texts, batches and
# thread count, in one run. Needs a Python with torch + transformers ($PY, default python3) and a
# release build. Usage: bench/encode_compare.sh [DOCS_TINY] [DOCS_BASE]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DOCS_TINY=${1:-512}
DOCS_BASE=${2:-96}
BIN=${BIN:-target/release/splade}
BASE=/tmp/bert-base-random
[ -f $BASE/model.safetensors ] || $PY bench/make_bert_base.py $BASE >/dev/null
for model in conf/models/splade-tiny $BASE; do
  DOCS=$DOCS_TINY; [ $model = $BASE ] && DOCS=$DOCS_BASE
  for len in 128 256; do
    for window in 0 2048; do
      echo "== $(basename $model) max_length=$len sort_window=$window"
      printf '  splade  '; RAYON_NUM_THREADS=2 $BIN bench encode --model $model --docs $DOCS --max-length $len --sort-window $window
      printf '  pytorch '; $PY bench/encode_torch.py --model $model --docs $DOCS --max-length $len --sort-window $window --threads 2
    done
  done
done
