"""GPU training benchmark: the fixed plain-PEFT baseline, our stock config and our fast config, one job.

    python3 bench/gpu_train.py --model /tmp/m7b --corpus /tmp/corpus.jsonl --npz /tmp/packed2048.npz \
        --samples 160 --out OUT

Same 7B model shape and the same synthetic corpus packed to 2048 tokens (the baseline, bench/gpu/hf_qlora_baseline.py,
reads XTuner's packing of it from the npz, which bench/gpu/pack_data.py writes when it is missing; our configs pack
it with XTuner at run time). Each variant trains SAMPLES packed sequences; the XTuner runs stop at SAMPLES /
micro-batch iterations of a 1-epoch schedule. Conventions: bench/train_metrics.py. Writes OUT/gpu_train.json,
OUT/gpu_train.md and OUT/gpu_train_loss.png. bench/gpu_train.sh and bench/gpu_queue.py set up the machine.
--device cpu is the GPU queue's dry run: the same steps on CPU (fp32, no 4-bit; switches only a GPU can turn on
stay at auto, which is off on CPU), with a tiny model and short sequences (--seq-len).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import train_metrics as tm  # noqa: E402

from finetune.config import ConfigSpec, plan_for, render, write_config  # noqa: E402
from finetune.speed import LIGER_PIN, DeviceInfo, read_model_shape  # noqa: E402

EFFECTIVE_BATCH = 16  # XTuner's 1 x 16
GPU_BENCH = ROOT / "bench" / "gpu"
VARIANTS = {  # name -> ConfigSpec speed fields (None: the plain-PEFT baseline)
    "baseline": None,
    "stock": {"speed": "stock"},
    "stock-fp16": {"speed": "stock", "bf16": False},  # XTuner's shipped QLoRA configs use fp16 AMP
    "fast": {"speed": "fast"},
    "fast-mb1": {"speed": "fast", "micro_batch": "1"},
    "fast-nofused": {"speed": "fast", "fused_kernels": "off"},
    "fast-fp32frozen": {"speed": "fast", "frozen_16bit": "off"},  # peft's fp32 copies of embeddings and head
    "fast-bf16residual": {"speed": "fast", "residual_16bit": "on"},  # every frozen weight bf16: the layers add in bf16
    "fast-bf16residual-mb2": {"speed": "fast", "residual_16bit": "on", "micro_batch": "2"},  # estimated 11.2 GiB
}
# NAME+DIAGNOSTIC runs 6 iterations of NAME with this appended to its config; the log goes to OUT/NAME_DIAGNOSTIC.log
DIAGNOSTICS = {
    # a torch profiler table of iterations 4-6, sorted by GPU time
    "profile": """
from mmengine.hooks import ProfilerHook
custom_hooks += [dict(type=ProfilerHook, by_epoch=False, profile_times=6, schedule=dict(wait=2, warmup=1, active=3),
                      activity_with_cuda=True,
                      on_trace_ready=dict(type="log_trace", sort_by="self_device_time_total", row_limit=60))]
""",
    # the Python stacks of all synchronizing CUDA calls (device-to-host copies, .item()), most frequent first
    "syncs": """
from sync_trace import SyncTraceHook
custom_hooks += [dict(type=SyncTraceHook)]
""",
}


def split_variant(name: str) -> tuple[str, str]:
    """'fast+profile' -> ('fast', 'profile'); 'fast' -> ('fast', '')."""
    base, _, diagnostic = name.partition("+")
    if base not in VARIANTS or (diagnostic and diagnostic not in DIAGNOSTICS):
        raise SystemExit(f"unknown variant {name!r}: use {', '.join(VARIANTS)}, optionally with "
                         + " or ".join(f"+{d}" for d in DIAGNOSTICS))
    if diagnostic and VARIANTS[base] is None:
        raise SystemExit(f"{name!r}: the diagnostics hook into XTuner configs; the fixed baseline has none")
    return base, diagnostic


def variant_spec(base: str, args, device: str) -> ConfigSpec:
    fields = VARIANTS[base]
    if device == "cpu":  # the dry run: a switch only a GPU can turn on stays at auto (off on CPU)
        fields = {key: value for key, value in fields.items() if value != "on"}
    return ConfigSpec(model_path=args.model, data_files=[args.corpus], preset="qwen2.5-7b-instruct", device=device,
                      quant="4bit" if device == "cuda" else "none", max_length=args.seq_len, pack=True, epochs=1,
                      batch_size=1, grad_accum=EFFECTIVE_BATCH, evaluation_inputs=["hi"], eval_max_new_tokens=1,
                      save_steps=100000, save_total_limit=1, **fields)


def h200_plan(base: str, args) -> dict:
    """Dry run: the variant's GPU config, rendered as on an H200 with liger-kernel, so that what the GPU run will
    write cannot rot unseen. Its speed plan, less the descriptions."""
    spec = variant_spec(base, args, "cuda")
    plan = plan_for(spec, DeviceInfo(cuda=True, bf16=True, free_gib=139.0, name="NVIDIA H200", liger=LIGER_PIN),
                    read_model_shape(args.model))
    compile(render(spec, plan=plan), f"{base}.py", "exec")
    return {key: value for key, value in plan.summary().items() if key != "parts"}


def write_variant_config(name: str, args, work: Path) -> tuple[Path, dict]:
    base, diagnostic = split_variant(name)
    spec = variant_spec(base, args, args.device)
    config, plan = write_config(spec, work / f"{name}.py", command=f"bench/gpu_train.py variant {name}")
    iters = 6 if diagnostic else max(1, args.samples // plan.micro_batch)
    text = config.read_text(encoding="utf-8")
    text = text.replace("train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)",
                        f"train_cfg = dict(type=TrainLoop, max_iters={iters})")
    # each iteration's own time and loss (mmengine smooths logged values over 10 iterations by default)
    text = text.replace("log_processor = dict(by_epoch=False)", "log_processor = dict(by_epoch=False, window_size=1)")
    # no checkpoint at the end: the LoRA weights and AdamW moments of a 7B (~2 GB) are of no use to a benchmark
    text = text.replace("save_last=True,", "save_last=False,")
    text += DIAGNOSTICS.get(diagnostic, "")
    config.write_text(text, encoding="utf-8")
    return config, plan.summary()


def run_logged(command: list[str], log: Path, env: dict) -> tuple[int, float]:
    started = time.time()
    with open(log, "w", encoding="utf-8") as out:
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    return code, time.time() - started


def pack_corpus(args, work: Path, env: dict) -> None:
    """The baseline's data: XTuner's packing of the corpus (bench/gpu/pack_data.py), written once. Where it fails,
    the baseline fails on the missing file."""
    if Path(args.npz).is_file():
        return
    print(f"[baseline] packing {args.corpus} into {args.npz} ...", flush=True)
    log = work / "pack_data.log"
    code, _ = run_logged([sys.executable, str(GPU_BENCH / "pack_data.py"), args.corpus, args.model, args.npz,
                          str(args.seq_len)], log, dict(env, PYTHONPATH=args.xtuner_pythonpath))
    if code != 0:
        print(f"[baseline] packing failed (rc {code}); its log ends:\n"
              + "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]), flush=True)


def same_config_result(name: str, config: Path, work: Path) -> dict | None:
    """The result of an earlier variant in `work` whose config is this one but for its comments. On CPU several
    variants are (the switches that tell them apart need a GPU): the dry run trains each config once."""
    def body(path: Path) -> list[str]:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")]

    for other in VARIANTS:
        saved, other_config = work / f"{other}.result.json", work / f"{other}.py"
        if other != name and saved.is_file() and other_config.is_file() and body(other_config) == body(config):
            return json.loads(saved.read_text(encoding="utf-8"))
    return None


def run_variant(name: str, args, work: Path) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log = work / f"{name}.log"
    extra = {}
    if name == "baseline":
        pack_corpus(args, work, env)
        env["PYTHONPATH"] = args.baseline_pythonpath
        code, wall = run_logged([sys.executable, args.baseline_script, args.model, args.npz, str(args.samples),
                                 "prep", str(work / "baseline.json")], log, env)
        records = tm.parse_baseline_log(log.read_text(encoding="utf-8", errors="replace"))
        micro, accum, plan = 1, 1, {"note": "fixed baseline: batch 1, an optimizer step per sequence"}
    else:
        config, plan = write_variant_config(name, args, work)
        if args.device == "cpu":
            extra["h200_plan"] = h200_plan(split_variant(name)[0], args)
            twin = same_config_result(name, config, work)
            if twin:
                print(f"[{name}] its CPU config is {twin['variant']}'s: that run's figures", flush=True)
                return dict(twin, variant=name, same_config_as=twin["variant"], plan=plan, **extra)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "bench"), args.xtuner_pythonpath) if p)
        code, wall = run_logged([sys.executable, "-m", "xtuner.tools.train", str(config), "--work-dir",
                                 str(work / f"wd-{name}")], log, env)
        records = tm.parse_xtuner_log(log.read_text(encoding="utf-8", errors="replace"))
        micro, accum = plan["micro_batch"], plan["grad_accum"]
    result = {"variant": name, "exit_code": code, "wall_s": round(wall, 1), "micro_batch": micro, "accum": accum,
              "iterations": len(records),
              "tokens_per_s": tm.tokens_per_second(records, micro * args.seq_len, warmup=args.warmup),
              "peak_gib": tm.peak_memory_gib(records), "losses": [r["loss"] for r in records if "loss" in r],
              "plan": plan, "log": str(log), **extra}
    if code != 0:
        result["log_tail"] = log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
    return result


def plot(results: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for r in results:
        if r["losses"]:
            step = r["micro_batch"]
            ax.plot([(i + 1) * step for i in range(len(r["losses"]))], r["losses"], label=r["variant"], linewidth=1.2)
    ax.set_xlabel("packed sequences trained")
    ax.set_ylabel("loss (per iteration)")
    ax.set_title("7B QLoRA on the same corpus: loss by samples seen")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="make_model.py output (Qwen2.5-7B shape)")
    parser.add_argument("--corpus", required=True, help="gen_data.py JSONL")
    parser.add_argument("--npz", required=True,
                        help="XTuner's packing of the corpus, the baseline's data (bench/gpu/pack_data.py writes it "
                        "here when missing)")
    parser.add_argument("--baseline-script", dest="baseline_script", default=str(GPU_BENCH / "hf_qlora_baseline.py"))
    parser.add_argument("--variants", default="baseline,stock,fast",
                        help=f"comma list of {', '.join(VARIANTS)}; NAME+{'|'.join(DIAGNOSTICS)}: diagnose NAME")
    parser.add_argument("--samples", type=int, default=160, help="packed sequences per variant")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: the GPU queue's dry run (fp32, no 4-bit; GPU-only switches stay at auto)")
    parser.add_argument("--seq-len", dest="seq_len", type=int, default=2048, help="packed sequence length")
    parser.add_argument("--warmup", type=int, default=tm.WARMUP_ITERS,
                        help="iterations left out of the median iteration time")
    parser.add_argument("--work", default="/tmp/gpu_train", help="configs, logs, work dirs (kept for later jobs)")
    parser.add_argument("--out", required=True, help="where the JSON, Markdown and PNG go")
    parser.add_argument("--xtuner-pythonpath", dest="xtuner_pythonpath", default=os.environ.get("PYTHONPATH", ""))
    parser.add_argument("--baseline-pythonpath", dest="baseline_pythonpath", default="/tmp/bnb")
    args = parser.parse_args()
    names = args.variants.split(",")
    for name in names:
        split_variant(name)  # an unknown name fails before the first run, not after minutes of others
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    model_config = json.loads((Path(args.model) / "config.json").read_text(encoding="utf-8"))
    results, codes = [], []
    for name in names:
        print(f"[{name}] ...", flush=True)
        result = run_variant(name, args, work)
        codes.append(result["exit_code"])
        if "+" in name:  # not a speed figure: a diagnostic slows the iterations it watches
            text = Path(result["log"]).read_text(encoding="utf-8", errors="replace")
            target = out / (name.replace("+", "_") + ".log")
            target.write_text(text, encoding="utf-8")
            diagnosis = {"variant": name, "exit_code": result["exit_code"], "wall_s": result["wall_s"],
                         "iterations": result["iterations"], "log": str(target)}
            if name.endswith("+syncs"):
                import sync_trace

                diagnosis["syncs"] = sync_trace.summary(text)
            (work / f"{name}.result.json").write_text(json.dumps(diagnosis), encoding="utf-8")
            print(f"[{name}] rc {result['exit_code']}: its log is {target}", flush=True)
            continue
        result.update(tm.mfu(result["tokens_per_s"], model_config, args.seq_len, gpu))
        # kept so that a later job on the same warm machine can report variants measured here
        (work / f"{name}.result.json").write_text(json.dumps(result), encoding="utf-8")
        results.append(result)
        print(f"[{name}] rc {result['exit_code']}, {result['wall_s']} s, tokens/s {result['tokens_per_s']}, "
              f"peak {result['peak_gib']} GiB", flush=True)
        report(list(results), gpu, args, out, work)  # after each variant: a job cut off at its limit keeps the rest
    return 0 if all(code == 0 for code in codes) else 1


def report(results: list[dict], gpu: str, args, out: Path, work: Path) -> None:
    names = {r["variant"] for r in results}
    for extra in VARIANTS:  # fold in variants an earlier job measured
        saved = work / f"{extra}.result.json"
        if extra not in names and saved.is_file():
            results.append(json.loads(saved.read_text(encoding="utf-8")))
    by_name = {r["variant"]: r for r in results}
    gaps = {}
    if "stock" in by_name:
        stock = tm.per_step_losses(by_name["stock"]["losses"], by_name["stock"]["micro_batch"], EFFECTIVE_BATCH)
        for name, r in by_name.items():
            if name.startswith("fast"):
                ours = tm.per_step_losses(r["losses"], r["micro_batch"], EFFECTIVE_BATCH)
                gaps[name] = tm.curve_gap(ours, stock)
    payload = {"gpu": gpu, "samples": args.samples, "seq_len": args.seq_len, "warmup_iters": args.warmup,
               "effective_batch": EFFECTIVE_BATCH,
               "conventions": tm.__doc__, "results": results, "loss_gap_vs_stock": gaps}
    (out / "gpu_train.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    table = tm.markdown_table(results)
    gap_lines = [f"- {name} vs stock, per optimizer step ({g['steps']} steps): mean relative loss gap "
                 f"{g['mean_rel']:.2%}, largest {g['max_rel']:.2%}" for name, g in gaps.items() if g["steps"]]
    (out / "gpu_train.md").write_text(f"{gpu}, {args.samples} packed sequences of {args.seq_len} tokens per variant\n\n"
                                      + table + "\n\n" + "\n".join(gap_lines) + "\n", encoding="utf-8")
    plot(results, out / "gpu_train_loss.png")
    print(table)
    print("\n".join(gap_lines))


if __name__ == "__main__":
    sys.exit(main())
