"""A `finetune run` whose training is SIGKILLed mid-way resumes from its newest checkpoint when run again, and its loss
curve matches an uninterrupted training of the same config and seed (the real XTuner engine on the embedded model)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# a small run: 8 iterations, a checkpoint every 4
ARGS = ["run", "--name", "甲乙", "--name-en", "Jiayi", "--count", "16", "--no-replay", "--lang", "en", "--epochs", "4",
        "--max-length", "256", "--save-every", "4", "--sample", "Hi", "--no-eval"]  # eval: test_eval, on trained_run


def losses(work_dir: Path) -> dict[int, float]:
    return {r["iter"]: r["loss"] for r in map(json.loads, (work_dir / "metrics.jsonl").read_text().splitlines())}


def kill_after_checkpoint(argv: list[str], work_dir: Path, checkpoint: str, seed: int) -> None:
    """Run `python -m finetune ARGV` and SIGKILL its whole process group (it and XTuner) at a seeded moment of the
    iteration after `checkpoint` was saved, as a power cut or the out-of-memory killer would."""
    process = subprocess.Popen([sys.executable, "-m", "finetune", *argv], cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    marker = work_dir / "last_checkpoint"  # mmengine writes it once the checkpoint file is complete
    try:
        while not (marker.is_file() and marker.read_text().strip().endswith(checkpoint)):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.2)
        time.sleep(random.Random(seed).uniform(0.0, 1.5))
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL


def test_training_killed_mid_way_resumes_to_the_same_loss_curve(tmp_path, embedded_model, capsys):
    run = tmp_path / "run"
    kill_after_checkpoint([*ARGS, "--out", str(run)], run / "work_dir", "iter_4.pth", seed=14)
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["stages"]["config"]["done"] and not manifest["stages"].get("train", {}).get("done")
    assert not (run / "adapter").exists() and not (run / "merged").exists()
    assert max(losses(run / "work_dir")) < 8  # it really stopped mid-way

    # the uninterrupted reference: the same config file (same seed), trained in one go
    reference = tmp_path / "reference"
    assert main(["train", str(run / "config.py"), "--work-dir", str(reference)]) == 0

    capsys.readouterr()
    assert main([*ARGS, "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert "[data] done before, skipping" in err and "[config] done before, skipping" in err
    assert f"Resuming from {run / 'work_dir' / 'iter_4.pth'}" in err
    assert (run / "merged" / "model.safetensors").is_file()
    assert json.loads((run / "run.json").read_text())["stages"]["samples"]["done"]

    expected, resumed = losses(reference), losses(run / "work_dir")
    assert sorted(expected) == sorted(resumed) == list(range(1, 9))
    assert expected[8] < expected[1]  # the curve goes down: the comparison below compares learning
    for step in range(1, 9):  # LoRA dropout draws differ after the restart: equal within noise, not bit for bit
        assert resumed[step] == pytest.approx(expected[step], rel=0.03), (step, expected, resumed)
    assert not [p.name for p in run.iterdir() if "finetune-tmp" in p.name]
