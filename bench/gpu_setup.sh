# Sourced by the GPU jobs (bench/gpu_decode.sh, bench/gpu_train.sh, the setup step of bench/gpu_queue.py) from the
# repository root; each part is made only once per machine:
#   /tmp/bnb, /tmp/site   the carried wheels (gpu-carry/, made here by `make gpu-carry`): bitsandbytes; the XTuner
#                         stack at the lock's versions, and liger-kernel and DeepSpeed where they were carried
#   $work/corpus.jsonl    bench/gpu/gen_data.py's synthetic corpus, and $work/tok its tokenizer (build_tok.py)
#   $model                $work/m7b, the Qwen2.5-7B-shape model with random weights (make_model.py, on the GPU)
# GPU_WORK sets $work (default /tmp). DRY_RUN=1 (the queue's --dry-run, on CPU): no wheels, a 160-sample corpus
# and $model=$work/tiny, a 2-layer model. MODEL_SHAPE=qwen3-8b: Qwen3-8B's architecture instead ($work/m-qwen3-8b,
# dry run $work/tiny-qwen3). PYTHON names the interpreter (default python3).
work=${GPU_WORK:-/tmp}
python=${PYTHON:-python3}
shape=${MODEL_SHAPE:-qwen2.5-7b}
if [ "${DRY_RUN:-0}" = 1 ]; then
  model_shape=tiny
  [ "$shape" = qwen3-8b ] && model_shape=tiny-qwen3
  model=$work/$model_shape corpus_samples=160
else
  model=$work/m7b corpus_samples=2000 model_shape=
  [ "$shape" = qwen3-8b ] && model=$work/m-qwen3-8b model_shape=qwen3-8b
  [ -d /tmp/bnb/bitsandbytes ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/bnb gpu-carry/bnb/*.whl
  [ -d /tmp/site/xtuner ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site gpu-carry/xt/*.whl
  if [ ! -d /tmp/site/liger_kernel ] && ls gpu-carry/liger/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site gpu-carry/liger/*.whl
  fi
  if [ ! -d /tmp/site/deepspeed ] && ls gpu-carry/ds/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site gpu-carry/ds/*.whl
  fi
fi
mkdir -p "$work"
[ -f "$work/corpus.jsonl" ] || "$python" bench/gpu/gen_data.py "$work/corpus.jsonl" "$corpus_samples"
[ -f "$work/tok/tokenizer.json" ] || "$python" bench/gpu/build_tok.py "$work/corpus.jsonl" "$work/tok"
[ -f "$model/config.json" ] || "$python" bench/gpu/make_model.py "$model" "$work/tok" $model_shape
