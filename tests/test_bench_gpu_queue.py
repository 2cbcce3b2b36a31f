"""The GPU queue (bench/gpu_queue.sh), run for real on CPU: its dry run goes through every step of the GPU check on a
tiny random model, so a GPU session never finds the queue broken. No ../shared, no wheels, no network."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "bench" / "gpu"))

import gpu_queue  # noqa: E402

STEPS = ["setup", "decode-bf16", "decode-nf4", "train-fast-bf16residual", "train-stock", "train-fast",
         "train-baseline", "train-fast-bf16residual-mb2", "syncs", "liger", "deepspeed"]


def queue(*args: str, work: Path, out: Path, budget: float | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable)
    if budget is not None:
        env["QUEUE_BUDGET_S"] = str(budget)
    return subprocess.run(["bash", "bench/gpu_queue.sh", "--dry-run", "--work", str(work), "--out", str(out), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One whole dry run: (its process, work folder, out folder, queue.json)."""
    base = tmp_path_factory.mktemp("gpu_queue")
    work, out = base / "work", base / "out"
    run = queue(work=work, out=out)
    assert (out / "queue.json").is_file(), run.stdout + run.stderr
    return run, work, out, json.loads((out / "queue.json").read_text(encoding="utf-8"))


def steps_of(summary: dict) -> dict[str, dict]:
    return {step["name"]: step for step in summary["steps"]}


def test_dry_run_runs_every_step_in_order_and_logs_each(dry_run):
    run, _, out, summary = dry_run
    assert run.returncode == 0, run.stdout[-4000:]
    assert [step["name"] for step in summary["steps"]] == STEPS
    for step in summary["steps"]:
        assert step["status"] == "ok" and step["exit_code"] == 0, step
        assert 0 < step["wall_s"] < 300 and step["estimate_s"] > 0
        assert step["result"], step["name"]
    assert summary["dry_run"] is True and summary["budget_s"] == gpu_queue.BUDGET_S
    log = (out / "queue.log").read_text(encoding="utf-8")
    for name in STEPS:
        assert f"{name}: start" in log and f"{name}: ok in" in log
    assert "every step ran and passed" in log
    # the GPU machine hands back at most eight files from $OUT
    assert sorted(p.name for p in out.iterdir()) == ["fast_syncs.log", "gpu_train.json", "gpu_train.md",
                                                      "gpu_train_loss.png", "queue.json", "queue.log"]
    assert summary["steps"][0]["result"]["packages"]["transformers"]["matches_lock"] is True


def test_decode_steps_report_each_path_against_the_bandwidth_floor(dry_run):
    steps = steps_of(dry_run[3])
    for dtype in ("bf16", "nf4"):
        result = steps[f"decode-{dtype}"]["result"]
        assert [row["path"] for row in result["rows"]] == ["raw", "static", "compiled"]
        assert result["bandwidth"]["bytes_per_s"] > 1e8 and result["weight_bytes_per_token"] > 0
        assert result["floor_tok_s"] == pytest.approx(result["bandwidth"]["bytes_per_s"]
                                                      / result["weight_bytes_per_token"])
        for row in result["rows"]:
            assert row["ttft_ms"] > 0 and row["decode_tok_s"] > 0
            assert 0 < row["floor_fraction"] < 1
            assert row["floor_fraction"] == pytest.approx(row["decode_tok_s"] / result["floor_tok_s"])
    figures = dry_run[3]["figures"]
    assert figures["compiled_vs_static_bf16"] > 0 and figures["compiled_vs_static_nf4"] > 0


def test_training_steps_measure_each_variant_and_compare_losses_with_stock(dry_run):
    _, _, out, summary = dry_run
    steps = steps_of(summary)
    for variant in gpu_queue.TRAIN_VARIANTS:
        result = steps[f"train-{variant}"]["result"]
        assert result["variant"] == variant and result["exit_code"] == 0
        assert result["iterations"] == 16 // result["micro_batch"] == len(result["losses"])
        assert result["tokens_per_s"] > 0
        assert all(math.isfinite(loss) and 0 < loss < 20 for loss in result["losses"])
    assert steps["train-fast-bf16residual-mb2"]["result"]["micro_batch"] == 2
    # on CPU fast, fast-bf16residual and stock write the same config: it is trained once, and the loss is the same
    assert steps["train-stock"]["result"]["same_config_as"] == "fast-bf16residual"
    for variant in ("fast", "fast-bf16residual", "fast-bf16residual-mb2"):
        gap = summary["loss_gap_vs_stock"][variant]
        assert gap["steps"] == 1 and gap["mean_rel"] < 0.01
    # what each variant's config becomes on the H200
    plans = {v: steps[f"train-{v}"]["result"]["h200_plan"] for v in gpu_queue.TRAIN_VARIANTS if v != "baseline"}
    assert plans["fast-bf16residual"]["residual_16bit"] and plans["fast-bf16residual"]["dtype"] == "bfloat16"
    assert plans["fast-bf16residual-mb2"]["micro_batch"] == 2 and not plans["fast"]["residual_16bit"]
    assert plans["stock"]["profile"] == "stock" and plans["fast"]["fused_kernels"]
    report = json.loads((out / "gpu_train.json").read_text(encoding="utf-8"))
    assert {r["variant"] for r in report["results"]} == set(gpu_queue.TRAIN_VARIANTS)


def test_sync_trace_and_liger_steps_report_on_cpu(dry_run):
    steps = steps_of(dry_run[3])
    assert steps["syncs"]["result"]["syncs"] == {"total": 0, "stacks": 0, "top": []}  # no CUDA, no syncs
    assert "SyncTraceHook" in (dry_run[2] / "fast_syncs.log").read_text(encoding="utf-8")
    liger = steps["liger"]["result"]
    assert liger["ran"] is False and "no CUDA" in liger["reason"]
    assert dry_run[3]["figures"]["liger_passed_on_lock_torch"] is False


def test_deepspeed_step_trains_and_converts_zero2_and_zero3(dry_run):
    result = steps_of(dry_run[3])["deepspeed"]["result"]
    assert result["device"] == "cpu" and result["ok"] is True
    zero2, zero3 = result["stages"]
    assert (zero2["stage"], zero3["stage"]) == ("zero2", "zero3")
    for stage in (zero2, zero3):
        assert len(stage["losses"]) == result["iterations"] and all(0 < loss < 20 for loss in stage["losses"])
        assert "adapter_model.safetensors" in stage["adapter"]
    assert "mp_rank_00_model_states.pt" in zero2["checkpoint"]  # ZeRO-2 keeps the weights whole
    assert "zero_pp_rank_0_mp_rank_00_model_states.pt" in zero3["checkpoint"]  # ZeRO-3 partitions them
    assert dry_run[3]["figures"]["deepspeed_zero2_zero3_ok"] == {"device": "cpu", "ok": True}


def test_steps_that_do_not_fit_the_budget_are_skipped_and_named_for_a_rerun(dry_run, tmp_path):
    work = dry_run[1]  # set up already: the setup step only checks it (well within its 15 s estimate)
    run = queue("--steps", "train-baseline,liger", work=work, out=tmp_path, budget=24)
    assert run.returncode == 1
    steps = steps_of(json.loads((tmp_path / "queue.json").read_text(encoding="utf-8")))
    assert list(steps) == ["setup", "train-baseline", "liger"]
    assert steps["train-baseline"]["status"] == "skipped" and "estimate 25 s" in steps["train-baseline"]["reason"]
    assert steps["liger"]["status"] == "ok"  # a later step that fits still runs
    log = (tmp_path / "queue.log").read_text(encoding="utf-8")
    assert "train-baseline: skipped: estimate 25 s" in log
    assert "bash bench/gpu_queue.sh --steps train-baseline" in log


def test_a_failing_or_hanging_step_is_logged_and_the_queue_goes_on(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    result = tmp_path / "after.json"
    python = sys.executable
    steps = [
        gpu_queue.Step("setup", 5, [python, "-c", "print('set up')"], {}, needs_setup=False),
        gpu_queue.Step("boom", 5, [python, "-c", "import sys; print('about to fail'); sys.exit(3)"], {}),
        gpu_queue.Step("hang", 1, [python, "-c", "import time; time.sleep(60)"], {}),
        gpu_queue.Step("after", 5, [python, "-c", f"open({str(result)!r}, 'w').write('{{\"x\": 1}}')"], {},
                       result_file=result),
        gpu_queue.Step("too-long", 10_000, [python, "-c", "pass"], {}),
    ]
    code = gpu_queue.Queue(out, work, budget_s=60, dry_run=True).run(steps)
    assert code == 1
    steps = steps_of(json.loads((out / "queue.json").read_text(encoding="utf-8")))
    assert [s["status"] for s in steps.values()] == ["ok", "failed", "failed", "ok", "skipped"]
    assert steps["boom"]["exit_code"] == 3 and steps["boom"]["reason"] == "exit code 3"
    assert steps["hang"]["reason"] == "timed out after 3 s" and steps["hang"]["wall_s"] < 20
    assert steps["after"]["result"] == {"x": 1}
    log = (out / "queue.log").read_text(encoding="utf-8")
    assert "boom: FAILED (exit code 3)" in log and "    about to fail" in log
    assert "--steps boom,hang,too-long" in log

    steps = [gpu_queue.Step("setup", 5, [python, "-c", "raise SystemExit(1)"], {}, needs_setup=False),
             gpu_queue.Step("decode", 5, [python, "-c", "pass"], {})]
    assert gpu_queue.Queue(tmp_path / "out2", work, budget_s=60, dry_run=True).run(steps) == 1
    decode = json.loads((tmp_path / "out2" / "queue.json").read_text(encoding="utf-8"))["steps"][1]
    assert decode["status"] == "skipped" and "needs setup" in decode["reason"]


def test_sync_summary_reads_the_tracer_report(monkeypatch):
    import logging
    import types
    import warnings

    import sync_trace

    logged: list[str] = []
    runner = types.SimpleNamespace(logger=logging.getLogger("test_sync_summary"))
    monkeypatch.setattr(runner.logger, "info", logged.append)
    hook = sync_trace.SyncTraceHook()

    def lora_forward():
        warnings.warn(sync_trace.SYNC_MESSAGE, UserWarning, stacklevel=1)

    with warnings.catch_warnings():
        hook.before_train(runner)
        for _ in range(3):
            lora_forward()
        warnings.warn(sync_trace.SYNC_MESSAGE, UserWarning, stacklevel=1)
        hook.after_train(runner)
    summary = sync_trace.summary("12/04 17:30:00 - mmengine - INFO - " + logged[0] + "\nafter training\n")
    assert summary["total"] == 4 and summary["stacks"] == 2
    assert [entry["count"] for entry in summary["top"]] == [3, 1]
    assert summary["top"][0]["innermost"].endswith("in lora_forward")
    assert sync_trace.summary("a run that ended before training did") is None


def test_liger_check_references_are_transformers_own_and_compare_sees_a_difference():
    import liger_check
    import torch
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm, apply_rotary_pos_emb

    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    norm = Qwen2RMSNorm(16, eps=1e-6)
    norm.weight.data = torch.randn(16)
    assert torch.allclose(liger_check.rms_norm(x, norm.weight), norm(x))
    q, k, cos, sin = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    for ours, theirs in zip(liger_check.rope(q, k, cos, sin), apply_rotary_pos_emb(q, k, cos, sin), strict=True):
        assert torch.allclose(ours, theirs)
    a, b = torch.randn(3, 8, requires_grad=True), torch.randn(3, 8, requires_grad=True)
    same = liger_check.compare(lambda u, v: u * v, lambda u, v: v * u, [a, b])
    assert set(same) == {"out0", "grad0", "grad1"} and max(same.values()) == 0
    assert liger_check.compare(lambda u, v: u * v, lambda u, v: 1.1 * u * v, [a, b])["out0"] > 0.05


def test_qwen3_shape_runs_the_same_steps_on_qwen3s_architecture(dry_run, tmp_path):
    _, work, _, _ = dry_run  # its corpus and tokenizer are reused; the Qwen3 model is built next to them
    run = queue("--shape", "qwen3-8b", "--steps", "decode-bf16", work=work, out=tmp_path)
    assert run.returncode == 0, run.stdout[-4000:]
    config = json.loads((work / "tiny-qwen3" / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["head_dim"] == 32
    decode = steps_of(json.loads((tmp_path / "queue.json").read_text(encoding="utf-8")))["decode-bf16"]
    assert decode["status"] == "ok" and {row["path"] for row in decode["result"]["rows"]} >= {"raw", "static"}
