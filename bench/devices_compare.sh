#!/usr/bin/env bash
# One device against two on this machine's CPU cores, side by side, alternating, in one run:
# encode and the training step of splade-tiny on flex, 1 device with 1 thread, 1 device with
# every thread, 2 devices with 1 thread each. BACKEND=tch (with BIN a `--features tch` build and
# LD_LIBRARY_PATH at PyTorch's lib/) runs the same on libtorch CPU, whose intra-op threads each
# device's worker sets to its share. Usage: bench/devices_compare.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/splade}
ROUNDS=${1:-2}
BACKEND=${BACKEND:-flex}
settings=("--devices cpu --threads 1" "--devices cpu --threads 2" "--devices cpu,cpu --threads 2")
for round in $(seq "$ROUNDS"); do
  for s in "${settings[@]}"; do
    printf 'round %s encode %-30s ' "$round" "$s"; $BIN bench encode --backend "$BACKEND" --docs 1024 $s
  done
  for s in "${settings[@]}"; do
    printf 'round %s train  %-30s ' "$round" "$s"; $BIN bench train --backend "$BACKEND" --steps 5 $s
  done
done
