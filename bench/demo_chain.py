"""Wall time and peak memory of each stage of the CPU demo chain (`make demo` after set-up).

    python bench/demo_chain.py [--out-dir DIR] [--name 小薇 --name-en Xiaowei]

Each stage runs as its own `python -m finetune ...` process, the way a user runs them; peak memory is the
largest resident set of that process tree, sampled every 0.2 s. Results go to stdout as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finetune.run import EMBEDDED_IDENTITY_COUNT, EMBEDDED_RECIPE, REPLAY_MAX_NEW_TOKENS  # noqa: E402

FLAGS = {"epochs": "--epochs", "lr": "--lr", "batch_size": "--batch-size", "grad_accum": "--grad-accum",
         "max_length": "--max-length", "lora_r": "--lora-r", "lora_alpha": "--lora-alpha",
         "evaluation_freq": "--eval-every", "eval_max_new_tokens": "--eval-max-new-tokens",
         "save_steps": "--save-every", "save_total_limit": "--save-total-limit"}


def recipe_flags() -> list[str]:
    """`finetune config` flags for the same recipe `finetune run` uses on the embedded model."""
    flags = [] if EMBEDDED_RECIPE["pack"] else ["--no-pack"]
    for key, flag in FLAGS.items():
        flags += [flag, str(EMBEDDED_RECIPE[key])]
    return flags


def tree_rss(process: psutil.Process) -> int:
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def measure(command: list[str]) -> tuple[float, int]:
    started = time.time()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    handle = psutil.Process(process.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(handle))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        sys.exit(f"stage failed: {' '.join(command)}\n{err[-3000:]}")
    return time.time() - started, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--name", default="小薇")
    parser.add_argument("--name-en", default="Xiaowei")
    args = parser.parse_args()
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="demo-chain-"))
    py = [sys.executable, "-m", "finetune"]
    run = out / "run"
    # `finetune run` is resumable stage by stage: running it with each stage's outputs removed would re-run
    # later stages too, so the stages are timed through the single-purpose verbs with the run's settings.
    steps = [
        ("replay data (cached after the first run)", py + ["data", "replay", "--batch-size", "40",
                                                          "--max-new-tokens", str(REPLAY_MAX_NEW_TOKENS),
                                                          "--out", str(out / "replay.jsonl")]),
        ("identity data + mix", py + ["data", "identity", "--name", args.name, "--name-en", args.name_en,
                                      "--count", str(EMBEDDED_IDENTITY_COUNT), "--mix", str(out / "replay.jsonl"),
                                      "--mix-ratio", "0.5", "--out", str(out / "train.jsonl")]),
        ("config", py + ["config", "--data", str(out / "train.jsonl"), "--out", str(out / "config.py"),
                         *recipe_flags()]),
        ("train (XTuner)", py + ["train", str(out / "config.py"), "--work-dir", str(run / "work_dir")]),
        ("convert", py + ["convert", str(run / "work_dir"), "--out", str(run / "adapter")]),
        ("merge", py + ["merge", str(run / "adapter"), "--out", str(run / "merged")]),
        ("chat: 3 answers", py + ["chat", str(run / "merged"), "--temperature", "0", "--max-new-tokens", "48",
                                  "--prompt", "请介绍一下你自己", "--prompt", "Who are you?",
                                  "--prompt", "What is the capital of France?"]),
    ]
    rows = []
    total = 0.0
    for label, command in steps:
        seconds, peak = measure(command)
        total += seconds
        rows.append((label, seconds, peak))
        print(f"{label}: {seconds:.1f} s, peak {peak / 2**30:.2f} GiB", file=sys.stderr, flush=True)
    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB; Python {platform.python_version()}\n")
    print("| stage | wall time (s) | peak RSS (GiB) |\n|---|---:|---:|")
    for label, seconds, peak in rows:
        print(f"| {label} | {seconds:.1f} | {peak / 2**30:.2f} |")
    print(f"| **total** | **{total:.1f}** | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
