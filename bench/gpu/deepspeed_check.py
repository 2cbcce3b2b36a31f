"""GPU queue step `deepspeed`: ZeRO-2 and ZeRO-3 as `finetune train --deepspeed zeroN` runs them, each checkpoint then
converted by `finetune convert`, on the queue's model and corpus.

    python3 bench/gpu/deepspeed_check.py --model M --corpus C --seq-len 2048 --device cuda --work W OUT.json

On a GPU: ZeRO-2 with the QLoRA config (4-bit base, bf16 AMP) and ZeRO-3 with the 16-bit LoRA config (ZeRO-3 cannot
shard 4-bit weights), NCCL, the default (fast) speed profile: the paths CPU runs cannot reach. One GPU, so one rank:
that 2 ranks train what 1 trains is proven on CPU (tests/test_distributed.py, ZeRO-2 over gloo). --device cpu is the
queue's dry run: the same two runs on its tiny model, 16-bit off (finetune.train.deepspeed_config).
Writes OUT.json: per stage the exit codes, wall times, losses, the checkpoint's files and the adapter's; exit status 0
only if both stages trained and converted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.errors import AppError  # noqa: E402
from finetune.config import ConfigSpec, write_config  # noqa: E402

STAGES = {"zero2": "4bit", "zero3": "none"}  # the base weights each stage trains on a GPU
ITERATIONS = 4


def check(stage: str, args, work: Path) -> dict:
    quant = STAGES[stage] if args.device == "cuda" else "none"
    spec = ConfigSpec(model_path=args.model, data_files=[args.corpus], preset="qwen2.5-7b-instruct", device=args.device,
                      quant=quant, deepspeed=stage, max_length=args.seq_len, pack=True, epochs=1, batch_size=1,
                      grad_accum=2, evaluation_inputs=["hi"], eval_max_new_tokens=1, save_steps=100000,
                      save_total_limit=1)
    config, plan = write_config(spec, work / f"{stage}.py", command=f"bench/gpu/deepspeed_check.py {stage}")
    text = config.read_text(encoding="utf-8").replace("train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)",
                                                      f"train_cfg = dict(type=TrainLoop, max_iters={ITERATIONS})")
    config.write_text(text, encoding="utf-8")
    record = {"stage": stage, "quant": quant, "dtype": plan.dtype, "ok": False}
    work_dir = work / f"wd-{stage}"
    started = time.time()
    try:
        from finetune.convert import convert
        from finetune.train import train

        result = train(config, work_dir, deepspeed=stage)
        record.update(train_wall_s=round(time.time() - started, 1), losses=[h.get("loss") for h in result.history],
                      checkpoint=sorted(p.name for p in result.checkpoint.iterdir()) if result.checkpoint.is_dir()
                      else result.checkpoint.name)
        started = time.time()
        adapter = convert(work_dir, out=work_dir / "adapter", progress=lambda _: None)
        record.update(convert_wall_s=round(time.time() - started, 1), adapter=sorted(p.name for p in adapter.iterdir()),
                      ok=(adapter / "adapter_model.safetensors").is_file())
    except AppError as error:
        record.update(error=error.one_line(), log_tail=getattr(error, "log_tail", "").splitlines()[-30:])
    print(f"[{stage}] {'ok' if record['ok'] else 'FAILED: ' + record.get('error', '')}", flush=True)
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--seq-len", dest="seq_len", type=int, default=2048)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--work", required=True)
    parser.add_argument("out")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    stages = [check(stage, args, work) for stage in STAGES]
    result = {"device": args.device, "iterations": ITERATIONS, "stages": stages, "ok": all(s["ok"] for s in stages)}
    Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
