"""The whole GPU check as one command, in priority order, within a time budget.

    bash bench/gpu_queue.sh                  # on the GPU machine, from the repository root (carry gpu-carry/)
    bash bench/gpu_queue.sh --dry-run        # anywhere, on CPU: the same steps on a tiny random model
    bash bench/gpu_queue.sh --steps train-baseline,syncs      # only these (after setup), e.g. what a run skipped
    bash bench/gpu_queue.sh --shape qwen3-8b --steps decode-nf4,train-baseline,train-fast   # on Qwen3-8B's shape

Steps, each in its own process:
  setup       the carried wheels, the synthetic corpus and its tokenizer, the 7B-shape model (bench/gpu_setup.sh);
              the versions in use against the lock's pins (bench/gpu/versions.py)
  1. decode-bf16, decode-nf4: batch-1 decode, plain eager `generate` (raw), `static` and `compiled`
              (bench/app_decode.py), with the device's copy bandwidth measured first, so that each path also
              reads as a fraction of the bandwidth floor
  2. train-*  7B QLoRA on the corpus packed to 2,048 tokens (bench/gpu_train.py): fast-bf16residual, stock (the
              loss yardstick, same seed), fast, the fixed baseline, fast-bf16residual-mb2
  3. syncs    the synchronizing CUDA calls of fast (fast+syncs), and liger: Liger Kernel's ops against torch on
              this machine's torch (bench/gpu/liger_check.py)
  4. deepspeed  `finetune train --deepspeed zero2` (QLoRA) and `zero3` (16-bit LoRA) for a few iterations, each
              checkpoint converted to an adapter (bench/gpu/deepspeed_check.py)

A step whose estimate does not fit in what is left of the budget (QUEUE_BUDGET_S, default 480 s) is skipped, and so
is a step whose set-up failed; a step that fails is logged with the end of its output and the queue goes on. As it
goes, the queue appends to $OUT/queue.log and rewrites $OUT/queue.json (every step's record and results) after
each step, so a run cut off keeps what it finished; bench/gpu_train.py adds $OUT/gpu_train.{json,md},
$OUT/gpu_train_loss.png and $OUT/fast_syncs.log (six files: the GPU machine returns at most eight). Exit status 0
only if every step ran and passed. --dry-run (or DRY_RUN=1): CPU, a 2-layer model, tiny sample counts, no wheels.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 480
CARRIED = "/tmp/site:/tmp/bnb"  # where bench/gpu_setup.sh installs the carried wheels
TRAIN_VARIANTS = ["fast-bf16residual", "stock", "fast", "baseline", "fast-bf16residual-mb2"]
# Order: --residual-16bit becomes the bf16 default if its loss matches stock's, so those two come first; then fast,
# which it has to beat; then the baseline, the yardstick of the H100 table; mb2 (the memory goal) last.

# Estimates on the H200 (s), from the H100 jobs of 2026-11-23 (docs/benchmarks.md, docs/gpu/*.json); queue.json keeps
# each step's measured wall time beside its estimate, to correct them after a run.
# - setup: wheels ~15, corpus and tokenizer ~3, the 7B built on the GPU ~20 (shared/gpu/README.md) and saved ~15.
# - decode, per dtype: the H100 jobs (3 paths, 256 new tokens, medians of 3) took ~2 min each, ~95 s of it timing
#   rounds. Here 128 new tokens: raw ~4.5 s a round (30 tok/s) x 4, static and compiled ~1.3 s x 5 each (2 of them
#   warm-up); imports and load ~20 s (nf4 ~30 s: quantised at load); two compilations ~20 s each.
# - training, per variant: start-up, 4-bit load and data (the H100 wall time less its iterations: baseline 27 s,
#   stock 37 s, fast 57 s), TRAIN_SAMPLES x the H100 median seconds per sequence (baseline 0.433, stock 0.509, fast
#   0.329; the bf16-residual variants, not measured yet, as fast), ~5 s for gpu_train.py itself; the baseline also
#   packs the corpus (~15 s). 64 sequences: 54 timed iterations at micro-batch 1, 6 at micro-batch 4 (after the 10
#   warm-up iterations of bench/train_metrics.py), 4 optimizer steps for the loss comparison.
# - syncs: fast's start-up and 6 iterations under CUDA sync debug mode (~2x slower); liger: Triton compiles 4 ops.
# All of steps 1 and 2 take ~700 s by these figures: with the default budget, the training variants after the first
# three are likely skipped, and the log ends with the command that runs them next time.
TRAIN_SAMPLES = 64
# - deepspeed: per stage the 7B load (4-bit ~40 s, bf16 under ZeRO-3 ~40 s), 4 iterations, and the conversion, which
#   builds the model once more (~40 s); the dry run measured 71 s on the 2-core VM (DeepSpeed's start-up, twice each).
GPU_ESTIMATES = {"setup": 60, "decode-bf16": 85, "decode-nf4": 95, "train-fast-bf16residual": 85, "train-stock": 75,
                 "train-fast": 85, "train-baseline": 75, "train-fast-bf16residual-mb2": 85, "syncs": 80, "liger": 40,
                 "deepspeed": 240}
DRY_ESTIMATES = {"setup": 15, "decode-bf16": 10, "decode-nf4": 10, "train-fast-bf16residual": 20, "train-stock": 20,
                 "train-fast": 20, "train-baseline": 25, "train-fast-bf16residual-mb2": 20, "syncs": 20, "liger": 5,
                 "deepspeed": 75}
GPU_SIZES = {"prompt": 512, "new": 128, "repeats": 3, "bandwidth_gib": 4, "samples": TRAIN_SAMPLES, "seq": 2048,
             "warmup": 10}
DRY_SIZES = {"prompt": 32, "new": 16, "repeats": 2, "bandwidth_gib": 1 / 16, "samples": 16, "seq": 128, "warmup": 2}


@dataclass
class Step:
    name: str
    estimate_s: float
    command: list[str]
    env: dict[str, str]
    result_file: Path | None = None  # the JSON the step writes, embedded in queue.json
    needs_setup: bool = True


SHAPES = ("qwen2.5-7b", "qwen3-8b")
MODEL_DIRS = {("qwen2.5-7b", False): "m7b", ("qwen2.5-7b", True): "tiny", ("qwen3-8b", False): "m-qwen3-8b",
              ("qwen3-8b", True): "tiny-qwen3"}  # as bench/gpu_setup.sh names them


def plan(dry_run: bool, work: Path, out: Path, shape: str = SHAPES[0]) -> list[Step]:
    """Every step in priority order. `work` holds the model, data and per-step files; `out` comes back."""
    py, sizes = sys.executable, DRY_SIZES if dry_run else GPU_SIZES
    estimates = DRY_ESTIMATES if dry_run else GPU_ESTIMATES
    carried = "" if dry_run else CARRIED
    model = work / MODEL_DIRS[shape, dry_run]
    queue = work / "gpu_queue"

    def env(pythonpath: str, **more: str) -> dict[str, str]:
        # the dry run's 2-layer model gains nothing from threads, and on shared cores spinning ones slow it down
        return {"PYTHONPATH": pythonpath, **more, **({"OMP_NUM_THREADS": "1"} if dry_run else {})}

    steps = [Step("setup", estimates["setup"],
                  ["bash", "-c", "set -euo pipefail; source bench/gpu_setup.sh; "
                   f'"$PYTHON" bench/gpu/versions.py {shlex.quote(str(queue / "versions.json"))}'],
                  env(carried, PYTHON=py, GPU_WORK=str(work), DRY_RUN="1" if dry_run else "0", MODEL_SHAPE=shape),
                  queue / "versions.json", needs_setup=False)]
    decode = ["--model", str(model), "--modes", "raw,static,compiled", "--prompt-tokens", str(sizes["prompt"]),
              "--new-tokens", str(sizes["new"]), "--repeats", str(sizes["repeats"]),
              "--bandwidth-gib", str(sizes["bandwidth_gib"])]
    for dtype, flags in (("bf16", ["--dtype", "bf16"]), ("nf4", ["--bits", "4"])):
        result = queue / f"decode_{dtype}.json"
        steps.append(Step(f"decode-{dtype}", estimates[f"decode-{dtype}"],
                          [py, "bench/app_decode.py", *decode, *flags, "--json", str(result)],
                          env(os.pathsep.join(p for p in (carried, str(ROOT)) if p)), result))
    train = [py, "bench/gpu_train.py", "--model", str(model), "--corpus", str(work / "corpus.jsonl"),
             "--npz", str(work / f"packed{sizes['seq']}.npz"), "--samples", str(sizes["samples"]),
             "--seq-len", str(sizes["seq"]), "--warmup", str(sizes["warmup"]),
             "--device", "cpu" if dry_run else "cuda", "--work", str(queue / "train"), "--out", str(out)]
    if dry_run:
        train += ["--baseline-pythonpath", ""]  # the CPU loop runs on this environment's packages
    for variant in TRAIN_VARIANTS:
        steps.append(Step(f"train-{variant}", estimates[f"train-{variant}"], [*train, "--variants", variant],
                          env(carried), queue / "train" / f"{variant}.result.json"))
    steps.append(Step("syncs", estimates["syncs"], [*train, "--variants", "fast+syncs"], env(carried),
                      queue / "train" / "fast+syncs.result.json"))
    steps.append(Step("liger", estimates["liger"], [py, "bench/gpu/liger_check.py", str(queue / "liger.json")],
                      env(carried), queue / "liger.json"))
    deepspeed = [py, "bench/gpu/deepspeed_check.py", "--model", str(model), "--corpus", str(work / "corpus.jsonl"),
                 "--seq-len", str(sizes["seq"]), "--device", "cpu" if dry_run else "cuda",
                 "--work", str(queue / "deepspeed"), str(queue / "deepspeed.json")]
    steps.append(Step("deepspeed", estimates["deepspeed"], deepspeed, env(carried), queue / "deepspeed.json"))
    return steps


class Queue:
    """Runs steps in order within `budget_s`, writing queue.log and queue.json under `out` as it goes."""

    def __init__(self, out: Path, work: Path, budget_s: float, dry_run: bool):
        self.out, self.work, self.budget_s, self.dry_run = out, work, budget_s, dry_run
        self.logs = work / "gpu_queue" / "logs"
        self.started = time.monotonic()
        self.records: list[dict] = []
        self.summary = {"dry_run": dry_run, "budget_s": budget_s,
                        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "steps": self.records}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def log(self, line: str) -> None:
        line = f"[{self.elapsed():6.1f} s] {line}"
        print(line, flush=True)
        with open(self.out / "queue.log", "a", encoding="utf-8") as log:
            log.write(line + "\n")

    def run(self, steps: list[Step]) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        mode = " (dry run, CPU)" if self.dry_run else ""
        self.log(f"queue: {len(steps)} steps, budget {self.budget_s:.0f} s{mode}")
        for step in steps:
            record = self.run_step(step)
            self.records.append(record)
            self.write_summary()
        undone = [r["name"] for r in self.records if r["status"] != "ok"]
        if undone:
            self.log(f"queue: done in {self.elapsed():.0f} s; did not run or failed: {', '.join(undone)}")
            rerun = ",".join(name for name in undone if name != "setup")
            self.log(f"queue: to run them: bash bench/gpu_queue.sh --steps {rerun}")
        else:
            self.log(f"queue: done in {self.elapsed():.0f} s; every step ran and passed")
        return 1 if undone else 0

    def run_step(self, step: Step) -> dict:
        record = {"name": step.name, "estimate_s": step.estimate_s, "wall_s": None, "exit_code": None,
                  "result": None, "log": str(self.logs / f"{step.name}.log")}
        left = self.budget_s - self.elapsed()
        setup = next((r for r in self.records if r["name"] == "setup"), None)
        if step.needs_setup and setup is not None and setup["status"] != "ok":
            return self.skip(record, "needs setup, which did not succeed")
        if step.estimate_s > left:
            return self.skip(record, f"estimate {step.estimate_s:.0f} s, {max(left, 0):.0f} s left of the budget")
        if step.result_file:
            step.result_file.unlink(missing_ok=True)  # a result left by an earlier run is not this run's
        timeout = min(left, 3 * step.estimate_s)
        self.log(f"{step.name}: start (estimate {step.estimate_s:.0f} s, {left:.0f} s left)")
        started = time.monotonic()
        code = run_command(step.command, dict(os.environ, **step.env, **OFFLINE), Path(record["log"]), timeout)
        record["wall_s"] = round(time.monotonic() - started, 1)
        record["exit_code"] = code
        if step.result_file and step.result_file.is_file():
            record["result"] = json.loads(step.result_file.read_text(encoding="utf-8"))
        output = Path(record["log"]).read_text(encoding="utf-8", errors="replace").splitlines()
        if code == 0:
            record["status"] = "ok"
            self.log(f"{step.name}: ok in {record['wall_s']:.0f} s; its output ends:\n" + indent(output[-15:]))
        else:
            record["status"] = "failed"
            why = f"timed out after {timeout:.0f} s" if code is None else f"exit code {code}"
            record["reason"] = why
            self.log(f"{step.name}: FAILED ({why}) in {record['wall_s']:.0f} s; its output ends:\n"
                     + indent(output[-40:]))
        return record

    def skip(self, record: dict, reason: str) -> dict:
        record.update(status="skipped", reason=reason)
        self.log(f"{record['name']}: skipped: {reason}")
        return record

    def write_summary(self) -> None:
        self.summary["elapsed_s"] = round(self.elapsed(), 1)
        training = self.out / "gpu_train.json"
        if training.is_file():
            self.summary["loss_gap_vs_stock"] = json.loads(training.read_text(encoding="utf-8"))["loss_gap_vs_stock"]
        self.summary["figures"] = decision_figures(self.records)
        temporary = self.out / "queue.json.tmp"
        temporary.write_text(json.dumps(self.summary, indent=1), encoding="utf-8")
        temporary.replace(self.out / "queue.json")  # a run cut off mid-write keeps the previous queue.json


OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def run_command(command: list[str], env: dict, log: Path, timeout: float) -> int | None:
    """The command's exit code, its output in `log`; None when it ran past `timeout` (it and its children are
    stopped: it runs in a session of its own)."""
    with open(log, "w", encoding="utf-8") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            return None


def indent(lines: list[str]) -> str:
    return "\n".join("    " + line for line in lines)


def decision_figures(records: list[dict]) -> dict:
    """The figures each pending decision reads, from the steps that ran (docs/benchmarks.md, "GPU queue")."""
    results = {r["name"]: r["result"] for r in records if r.get("result")}
    figures = {}
    for dtype in ("bf16", "nf4"):  # --decode auto picks compiled where it beats static
        rows = {row["path"]: row for row in (results.get(f"decode-{dtype}") or {}).get("rows", [])}
        if "static" in rows and "compiled" in rows:
            figures[f"compiled_vs_static_{dtype}"] = rows["compiled"]["decode_tok_s"] / rows["static"]["decode_tok_s"]
    residual, fast = results.get("train-fast-bf16residual"), results.get("train-fast")
    if residual and fast and residual.get("tokens_per_s") and fast.get("tokens_per_s"):
        figures["bf16residual_vs_fast_speed"] = residual["tokens_per_s"] / fast["tokens_per_s"]
    liger = results.get("liger")
    if liger:  # pinned once it ran, and passed, on the lock's torch
        figures["liger_passed_on_lock_torch"] = bool(liger["ran"] and liger["ok"] and liger["on_lock_torch"])
    deepspeed = results.get("deepspeed")
    if deepspeed:  # `--deepspeed zero2|zero3` counts as GPU-tested once both trained and converted there
        figures["deepspeed_zero2_zero3_ok"] = {"device": deepspeed["device"], "ok": deepspeed["ok"]}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", dest="dry_run", action="store_true", default=os.environ.get("DRY_RUN") == "1",
                        help="CPU, a tiny random model, tiny sample counts, no wheels (also DRY_RUN=1)")
    parser.add_argument("--steps", default="", help="comma list of steps to run (setup always runs first)")
    parser.add_argument("--shape", choices=SHAPES, default=SHAPES[0],
                        help="the model architecture measured (random weights; default Qwen2.5-7B's)")
    parser.add_argument("--work", default=None,
                        help="model, data and per-step files (default /tmp; dry run: /tmp/gpu_queue_dry)")
    parser.add_argument("--out", default=os.environ.get("OUT") or "/tmp/gpu_queue_out",
                        help="what comes back: queue.json, queue.log, gpu_train.* (default $OUT)")
    args = parser.parse_args(argv)
    work = Path(args.work or ("/tmp/gpu_queue_dry" if args.dry_run else "/tmp")).resolve()
    out = Path(args.out).resolve()
    steps = plan(args.dry_run, work, out, args.shape)
    if args.steps:
        wanted = set(args.steps.split(","))
        unknown = wanted - {step.name for step in steps}
        if unknown:
            parser.error(f"unknown step(s) {', '.join(sorted(unknown))}: use {', '.join(s.name for s in steps)}")
        steps = [step for step in steps if step.name in wanted or step.name == "setup"]
    budget = float(os.environ.get("QUEUE_BUDGET_S") or BUDGET_S)
    return Queue(out, work, budget, args.dry_run).run(steps)


if __name__ == "__main__":
    sys.exit(main())
