#!/usr/bin/env bash
# The GPU check: one script, at most ~8 minutes, for a machine with an NVIDIA GPU and a PyTorch
# (+ transformers) install. It needs a splade binary built with `--features tch` against that
# PyTorch's version (docs/backends.md, "Building for a GPU machine"), passed as $BIN — plain or
# xz-compressed (`splade.xz` is decompressed next to itself).
#
#   BIN=./splade.xz bench/gpu_check.sh            # writes $OUT/gpu_check.txt (OUT default /tmp)
#
# Rows, each ours next to PyTorch eager on the same GPU in the same run:
#   1. splade-tiny parity on CUDA: our vectors (tch, cuda:0) vs transformers on the same GPU;
#   2. encode docs/s, BERT-base shape, batch 128, 128 and 256 tokens, f32 and bf16
#      (`../shared/bench/gpu_anchor.py` for PyTorch);
#   3. the training step (32 queries x 32 tokens, one positive + one negative at 256 tokens,
#      in-batch loss + FLOPS, AdamW): steps/s and peak GPU memory, f32 and bf16;
#   4. two logical devices on one GPU (["cuda:0", "cuda:0"]) against one.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-/tmp}
BIN=${BIN:-./splade}
ANCHOR=${ANCHOR:-}
for a in shared/bench/gpu_anchor.py ../shared/bench/gpu_anchor.py; do
  [ -z "$ANCHOR" ] && [ -f "$a" ] && ANCHOR=$a
done
REPORT=$OUT/gpu_check.txt
: > "$REPORT"
say() { echo "$*" | tee -a "$REPORT"; }
run() { # run SECONDS LABEL CMD...: one row, never more than SECONDS
  local secs=$1 label=$2; shift 2
  say "== $label"
  timeout "$secs" "$@" 2>&1 | tail -n 25 | tee -a "$REPORT"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || say "   (exit $rc$([ "$rc" = 124 ] && echo ': timed out'))"
}

case "$BIN" in
  *.xz) xz -dkf "$BIN" && BIN=${BIN%.xz} ;;
esac
chmod +x "$BIN" 2>/dev/null
TORCH_DIR=$($PY -c 'import os, torch; print(os.path.dirname(torch.__file__))') || {
  say "no PyTorch for $PY"; exit 1; }
NV_LIBS=$(ls -d "$TORCH_DIR"/../nvidia/*/lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="$TORCH_DIR/lib:${NV_LIBS}${LD_LIBRARY_PATH:-}"
say "date: $(date -u +%FT%TZ)"
say "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
say "torch: $($PY -c 'import torch; print(torch.__version__, torch.version.cuda)')"
say "splade: $("$BIN" --version 2>&1)"

# Peak GPU memory of a command: nvidia-smi sampled every 100 ms while it runs.
peak_mem() {
  local log=$OUT/gpu_mem.$$
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$log" 2>/dev/null &
  local smi=$!
  "$@"
  local rc=$?
  kill $smi 2>/dev/null; wait $smi 2>/dev/null
  say "   peak_gpu_mem_mib=$(sort -n "$log" | tail -1)"
  rm -f "$log"
  return $rc
}

# 1. Parity: the same texts through transformers (CUDA) and through splade (tch, cuda:0).
TEXTS=("what is the capital of france" "The waggle dance tells other bees where the flowers are.")
"$BIN" expand --backend tch --device cuda:0 --json "${TEXTS[@]}" > "$OUT/ours.jsonl" 2>"$OUT/ours.err"
run 120 "1. splade-tiny parity on CUDA (max |ours - transformers|)" $PY - "$OUT/ours.jsonl" "${TEXTS[@]}" <<'EOF'
import json, sys, torch
from transformers import AutoModelForMaskedLM, AutoTokenizer
ours = [json.loads(l) for l in open(sys.argv[1])]
tok = AutoTokenizer.from_pretrained("conf/models/splade-tiny")
model = AutoModelForMaskedLM.from_pretrained("conf/models/splade-tiny").cuda().eval()
worst = 0.0
for row, text in zip(ours, sys.argv[2:]):
    enc = tok(text, return_tensors="pt", truncation=True, max_length=256).to("cuda")
    with torch.no_grad():
        logits = model(**enc).logits
    ref = torch.amax(torch.log1p(torch.relu(logits)) * enc["attention_mask"].unsqueeze(-1), dim=1)[0]
    mine = torch.zeros_like(ref)
    for t, w in row["weights"].items():
        mine[int(t)] = w
    worst = max(worst, (mine - ref).abs().max().item())
print(f"texts={len(ours)} max_abs_diff={worst:.2e} {'OK' if worst < 1e-3 else 'MISMATCH'}")
EOF
[ -s "$OUT/ours.jsonl" ] || say "   splade expand failed: $(tail -3 "$OUT/ours.err")"

# 2-3. The BERT-base-shaped model (random weights) both sides use.
BASE=$OUT/bert-base-random
[ -f "$BASE/model.safetensors" ] || $PY bench/make_bert_base.py "$BASE" > /dev/null
if [ -n "$ANCHOR" ]; then
  run 180 "PyTorch anchor ($ANCHOR)" $PY "$ANCHOR"
else
  say "== PyTorch anchor: gpu_anchor.py not found (set ANCHOR=)"
fi
for precision in f32 bf16; do
  for len in 128 256; do
    run 60 "2. encode BERT-base B128 L$len $precision" "$BIN" bench encode --backend tch \
      --device cuda:0 --model "$BASE" --docs 1024 --batch-size 128 --max-length $len \
      --fixed-length --precision $precision
  done
done
for precision in f32 bf16; do
  peak_mem run 90 "3. train step BERT-base 32x32 q, 64x256 d, $precision" "$BIN" bench train \
    --backend tch --device cuda:0 --model "$BASE" --batch-size 32 --query-length 32 \
    --doc-length 256 --steps 5 --precision $precision
done
# 4. Two logical devices on one GPU against one (bf16, the fast path).
for devices in cuda:0 cuda:0,cuda:0; do
  run 90 "4. train step, devices=$devices, bf16" "$BIN" bench train --backend tch \
    --devices $devices --model "$BASE" --batch-size 32 --query-length 32 --doc-length 256 \
    --steps 5 --precision bf16
  run 60 "4. encode, devices=$devices, bf16 L256" "$BIN" bench encode --backend tch \
    --devices $devices --model "$BASE" --docs 1024 --batch-size 128 --max-length 256 \
    --fixed-length --precision bf16
done
say "report: $REPORT"
