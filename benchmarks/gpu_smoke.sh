#!/usr/bin/env bash
# GPU smoke run (see benchmarks/gpu_smoke.py): NCCL weight sync, bf16, 2 vLLM engines, ZeRO-3.
# Needs >= 3 NVIDIA GPUs on one machine (2 engines + 1 learner rank; 4 for 2 ZeRO-3 ranks) and
# the GPU install (`bash cluster/install.sh gpu`). Prints markdown lines for
# benchmarks/RESULTS.md and writes them to benchmarks/gpu_smoke_results.md.
#   bash benchmarks/gpu_smoke.sh [--size 0.5b|1.5b] [--syncs 3] [--eager]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_smoke: no NVIDIA GPU here (nvidia-smi missing or sees none); this script only runs on a GPU machine" >&2
  exit 2
fi
gpus=$(nvidia-smi -L | grep -c '^GPU ')
if [ "$gpus" -lt 3 ]; then
  echo "gpu_smoke: needs at least 3 GPUs (2 engines + 1 learner rank, one GPU per NCCL rank), found $gpus" >&2
  exit 2
fi
exec python benchmarks/gpu_smoke.py "$@"
