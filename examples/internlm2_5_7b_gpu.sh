#!/usr/bin/env bash
# The full personal-assistant sequence for InternLM2.5-7B-Chat on one (or more) NVIDIA GPUs.
# Each line is one command; run them one by one the first time. `make setup` creates .venv first.
set -euo pipefail
PY=.venv/bin/python
RUN=runs/xiaowei-7b

# 0. Check the machine: CUDA, free GPU memory, bitsandbytes, DeepSpeed (each problem comes with its fix).
$PY -m finetune doctor

# 1. Base model (~15 GB) into ~/.cache/finetune/models/internlm2.5-7b-chat. In mainland China add
#    `--source modelscope` (or set HF_ENDPOINT=https://hf-mirror.com).
$PY -m finetune download --preset internlm2.5-7b-chat

# 2. Training data: 200 varied identity Q/A (zh + en) mixed 1:1 with the base model's own answers to
#    everyday prompts, so the assistant still answers normal questions normally.
$PY -m finetune data replay --model ~/.cache/finetune/models/internlm2.5-7b-chat --out data/replay_7b.jsonl
$PY -m finetune data identity --name 小薇 --name-en Xiaowei --author 小薇 --count 200 \
    --mix data/replay_7b.jsonl --mix-ratio 0.5 --out data/xiaowei.jsonl
$PY -m finetune data check data/xiaowei.jsonl --model ~/.cache/finetune/models/internlm2.5-7b-chat \
    --template internlm2_chat --max-length 2048

# 3. A QLoRA config (4-bit base, LoRA r64/alpha16, bf16 on Ampere or newer). ZeRO-2 for several GPUs; add
#    --world-size N for N training processes (GPUs x nodes) so the warmup counts their iterations.
$PY -m finetune config --preset internlm2.5-7b-chat --data data/xiaowei.jsonl --epochs 3 --lr 1e-4 \
    --deepspeed zero2 --out xiaowei_internlm2_5_7b_qlora.py

# 4. Train: one GPU, or --gpus 2 (torchrun); several nodes: docs/distributed.md (torchrun and Slurm recipes).
#    Interrupted? Rerun with --resume: it continues from the newest iter_*.pth.
$PY -m finetune train xiaowei_internlm2_5_7b_qlora.py --work-dir $RUN/work_dir --deepspeed zero2 --gpus 1

# 5. Newest checkpoint -> PEFT adapter (safetensors) -> merged model (2 GB shards; runs on CPU by
#    itself when the GPU has too little free memory). The merged tokenizer renders the training prompt.
$PY -m finetune convert $RUN/work_dir --out $RUN/adapter
$PY -m finetune merge $RUN/adapter --out $RUN/merged --max-shard-size 2GB

# 6. Chat in 4-bit (about 6 GB of GPU memory). RESET clears the history, EXIT quits.
$PY -m finetune chat $RUN/merged --bits 4

# Steps 2-5 in one resumable command (a rerun skips finished stages):
#   $PY -m finetune run --name 小薇 --name-en Xiaowei --preset internlm2.5-7b-chat --deepspeed zero2 --out $RUN
