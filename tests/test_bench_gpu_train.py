"""The GPU training bench's diagnostic variants, checked on CPU so a GPU job does not fail on them."""

from __future__ import annotations

import sys
import types
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_train  # noqa: E402


def _args(model: Path, tmp_path: Path) -> types.SimpleNamespace:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"conversation": [{"input": "hi", "output": "hello"}]}\n' * 4, encoding="utf-8")
    return types.SimpleNamespace(model=str(model), corpus=str(corpus), samples=160, device="cuda", seq_len=2048)


def test_unknown_variant_or_diagnostic_is_refused_with_the_choices():
    assert gpu_train.split_variant("fast+syncs") == ("fast", "syncs")
    assert gpu_train.split_variant("stock") == ("stock", "")
    for bad in ("fast+bogus", "fastest", "fastest+profile"):
        with pytest.raises(SystemExit, match="fast-bf16residual.*\\+profile or \\+syncs"):
            gpu_train.split_variant(bad)
    with pytest.raises(SystemExit, match="fixed baseline"):
        gpu_train.split_variant("baseline+syncs")


def test_syncs_variant_config_adds_the_tracer_hook_and_runs_six_iterations(embedded_model, tmp_path):
    from mmengine.config import Config

    args = _args(embedded_model, tmp_path)
    config, _ = gpu_train.write_variant_config("fast+syncs", args, tmp_path)
    plain, _ = gpu_train.write_variant_config("fast", args, tmp_path)
    assert "max_iters=6)" in config.read_text(encoding="utf-8")
    assert "SyncTraceHook" not in plain.read_text(encoding="utf-8")
    hooks = Config.fromfile(str(config)).custom_hooks  # as xtuner.tools.train reads it (a lazy-import config)
    import sync_trace

    assert hooks[-1]["type"] is sync_trace.SyncTraceHook


def test_sync_tracer_counts_each_calling_stack_during_training(monkeypatch):
    import logging

    import sync_trace

    logged: list[str] = []
    runner = types.SimpleNamespace(logger=logging.getLogger("test_sync_trace"))
    monkeypatch.setattr(runner.logger, "info", logged.append)

    def lora_forward():
        warnings.warn(sync_trace.SYNC_MESSAGE, UserWarning, stacklevel=1)

    hook = sync_trace.SyncTraceHook()
    with warnings.catch_warnings():
        shown_before = warnings.showwarning
        hook.before_train(runner)
        for _ in range(3):
            lora_forward()
        warnings.warn(sync_trace.SYNC_MESSAGE, UserWarning, stacklevel=1)
        hook.after_train(runner)
        assert warnings.showwarning is shown_before
    assert logged[0].startswith("[syncs] 4 synchronizing CUDA calls from 2 distinct stacks")
    assert "[syncs] 3 x" in logged[0] and "in lora_forward" in logged[0]
