#!/usr/bin/env bash
# One GPU job: install the carried wheels, build the 7B-shape model and the corpus, run bench/gpu_train.py.
# Prepare here (with network):  bash bench/gpu_carry.sh
# On the GPU machine (repository root, results under $OUT):  bash bench/gpu_train.sh [VARIANTS] [SAMPLES]
set -euo pipefail
variants=${1:-baseline,stock,fast}
samples=${2:-160}
out=${OUT:-/tmp/gpu_train_out}
source bench/gpu_setup.sh
if [ ! -d /tmp/site/liger_kernel ] && ls gpu-carry/liger/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site gpu-carry/liger/*.whl
fi
[ -f /tmp/corpus.jsonl ] || python3 "$shared/gen_data.py" /tmp/corpus.jsonl
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
PYTHONPATH=/tmp/site:/tmp/bnb python3 bench/gpu_train.py --model /tmp/m7b --corpus /tmp/corpus.jsonl \
  --npz "$shared/packed2048.npz" --baseline-script "$shared/hf_qlora_baseline.py" \
  --variants "$variants" --samples "$samples" --out "$out"
