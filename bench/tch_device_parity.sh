#!/usr/bin/env bash
# Training on libtorch with 1 and 2 logical CPU devices gives the same weights: the toy mining
# stages plus 4 steps of splade-tiny (dropout on, from its config), once per device count, then
# the largest absolute difference over every tensor of the two trained models and the devices
# the second run's trace saw. For a `--features tch` build, which CI does not have.
#
#   LD_LIBRARY_PATH=<torch>/lib BIN=<tch build> PY=<python with torch + safetensors> \
#     bench/tch_device_parity.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/splade}
PY=${PY:-python3}
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
for n in 1 2; do
  devices=$(printf '"cpu", %.0s' $(seq "$n")); devices=${devices%, }
  { sed "s/name = \"toy-mining\"/name = \"tch$n\"/" pipelines/toy-mining.toml
    cat <<TOML

[backend]
kind = "tch"
devices = [$devices]

[stage.train]
kind = "train"
negatives = "mine.negatives"
docs = "ingest.docs"
queries = "ingest.train_queries"
model = "conf/models/splade-tiny"
steps = 4
batch_size = 4
negatives_per_query = 1
max_length = 48
query_max_length = 16
lr = 5e-5
flops_lambda_q = 1e-3
flops_lambda_d = 1e-3
TOML
  } > "pipelines/.tch$n.toml"
done
trap 'rm -f pipelines/.tch1.toml pipelines/.tch2.toml' EXIT
A="$WORK/artifacts"
"$BIN" --artifacts "$A" run pipelines/.tch1.toml --no-progress | grep 'train:'
rm -rf "$WORK/model1" && cp -r "$("$BIN" --artifacts "$A" path pipelines/.tch1.toml train.model)" "$WORK/model1"
# The backend is not part of the fingerprint: --force retrains on two devices.
SPLADE_DEVICE_TRACE="$WORK/trace.jsonl" "$BIN" --artifacts "$A" run pipelines/.tch2.toml \
  --no-progress --force train | grep 'train:'
"$PY" - "$WORK/model1/model.safetensors" \
  "$("$BIN" --artifacts "$A" path pipelines/.tch2.toml train.model)/model.safetensors" \
  "$WORK/trace.jsonl" <<'PY'
import json, sys
from safetensors.torch import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
devices = sorted({json.loads(l)["device"] for l in open(sys.argv[3])})
print(f"tensors={len(a)} max_abs_weight_difference={diff:.3g} devices_used={devices}")
PY
