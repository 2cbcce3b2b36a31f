#!/usr/bin/env bash
# One GPU job: install the carried wheels, build the 7B-shape model and the corpus, run bench/gpu_train.py.
# Prepare here (with network):  make gpu-carry
# On the GPU machine (repository root, results under $OUT):  bash bench/gpu_train.sh [VARIANTS] [SAMPLES]
set -euo pipefail
variants=${1:-baseline,stock,fast}
samples=${2:-160}
out=${OUT:-/tmp/gpu_train_out}
source bench/gpu_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
PYTHONPATH=/tmp/site:/tmp/bnb python3 bench/gpu_train.py --model "$model" --corpus "$work/corpus.jsonl" \
  --npz "$work/packed2048.npz" --variants "$variants" --samples "$samples" --out "$out"
