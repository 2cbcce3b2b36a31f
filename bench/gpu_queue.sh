#!/usr/bin/env bash
# The whole GPU check as one command (bench/gpu_queue.py says what it runs). Prepare here: make gpu-carry. Then, on the
# GPU machine, from the repository root, with gpu-carry/ carried:  bash bench/gpu_queue.sh   (results under $OUT)
# Anywhere, on CPU:  bash bench/gpu_queue.sh --dry-run   (PYTHON names the interpreter, default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" bench/gpu_queue.py "$@"
