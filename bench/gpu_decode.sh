#!/usr/bin/env bash
# One GPU job: batch-1 decode of a 7B shape through the chat app's engine (dynamic, static, compiled) against plain
# eager generate, in bf16 and in nf4. Uses the users' lock (its transformers and bitsandbytes, from the carried wheels).
# Prepare here (with network):  make gpu-carry
# On the GPU machine (repository root, results under $OUT):  bash bench/gpu_decode.sh [REPEATS]
# MODES=raw,compiled limits the paths; inductor settings pass through the environment, e.g.
#   TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1 MODES=raw,static,compiled bash bench/gpu_decode.sh 3
set -euo pipefail
repeats=${1:-5}
modes=${MODES:-raw,dynamic,static,compiled}
out=${OUT:-/tmp/gpu_decode_out}
mkdir -p "$out"
source bench/gpu_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
export PYTHONPATH=/tmp/site:/tmp/bnb:$PWD
python3 bench/app_decode.py --model "$model" --dtype bf16 --repeats "$repeats" --modes "$modes" --bandwidth-gib 4 \
  --json "$out/decode_bf16.json" | tee "$out/decode_bf16.md"
python3 bench/app_decode.py --model "$model" --bits 4 --repeats "$repeats" --modes "$modes" --bandwidth-gib 4 \
  --json "$out/decode_nf4.json" | tee "$out/decode_nf4.md"
