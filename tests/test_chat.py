"""modelload (resolve/load) and `finetune chat` (the app's terminal chat behind finetune's model lookup), offline."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from app.cli import chat_loop
from app.engine import GenerationSettings
from finetune import chat as chat_mod
from finetune.errors import EnvironmentProblem, InputError, ModelNotFound
from finetune.modelload import check_bits, load_model, needs_remote_code, resolve_model


def make_model_dir(path: Path, *, weights: bool = True, config: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config or {"model_type": "llama"}))
    if weights:
        (path / "model.safetensors").write_bytes(b"\0")
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ------------------------------------------------------------------------------------------ resolve_model


def test_resolve_default_and_embedded_preset(embedded_model):
    assert resolve_model(None) == embedded_model
    assert resolve_model("smollm2-135m-instruct") == embedded_model
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == embedded_model


def test_resolve_local_folders(tmp_path):
    model = make_model_dir(tmp_path / "m")
    assert resolve_model(str(model)) == model
    sharded = make_model_dir(tmp_path / "sharded", weights=False)
    (sharded / "model.safetensors.index.json").write_text("{}")
    assert resolve_model(str(sharded)) == sharded
    empty = make_model_dir(tmp_path / "noweights", weights=False)
    (empty / "training_args.bin").write_bytes(b"\0")
    with pytest.raises(ModelNotFound, match="has no weights") as info:
        resolve_model(str(empty))
    assert "download" in info.value.fix
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelNotFound, match="LoRA adapter"):
        resolve_model(str(adapter))


def test_resolve_run_directory(tmp_path):
    run = tmp_path / "runs" / "xiaowei"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    with pytest.raises(ModelNotFound, match="no merged/ model"):
        resolve_model(str(run))
    merged = make_model_dir(run / "merged")
    assert resolve_model(str(run)) == merged
    assert resolve_model(str(run / "run.json")) == merged


def test_resolve_presets_via_cache(cache):
    with pytest.raises(ModelNotFound) as info:
        resolve_model("qwen2.5-0.5b-instruct")
    assert "python -m finetune download --preset qwen2.5-0.5b-instruct" in info.value.one_line()
    folder = make_model_dir(cache / "models" / "qwen2.5-0.5b-instruct")
    assert resolve_model("Qwen2.5-0.5B-Instruct") == folder
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct") == folder
    raw = make_model_dir(cache / "models" / "org--tiny")
    assert resolve_model("org/tiny") == raw


def test_resolve_unknown_lists_what_was_looked_for(cache):
    with pytest.raises(ModelNotFound) as info:
        resolve_model("no-such-model")
    line = info.value.one_line()
    assert "local folder" in line and "preset" in line and "qwen2.5-0.5b-instruct" in line
    with pytest.raises(ModelNotFound, match="downloaded hub model"):
        resolve_model("org/absent")


def test_remote_code_detection(tmp_path):
    assert needs_remote_code(make_model_dir(tmp_path / "a", config={"auto_map": {"AutoModel": "x.Y"}}))
    assert needs_remote_code(make_model_dir(tmp_path / "internlm2.5-7b-chat"))
    assert not needs_remote_code(make_model_dir(tmp_path / "qwen2.5-0.5b-instruct"))
    run = tmp_path / "run"
    make_model_dir(run / "merged")
    (run / "run.json").write_text(json.dumps({"spec": {"preset": "internlm2.5-1.8b-chat"}}))
    assert needs_remote_code(run / "merged")
    other = make_model_dir(tmp_path / "other" / "merged")
    (other / "finetune_meta.json").write_text(json.dumps({"base_model": "/cache/models/internlm2.5-7b-chat"}))
    assert needs_remote_code(other)


def test_bits_on_cpu_strict_raises_clear_error():
    with pytest.raises(EnvironmentProblem) as info:
        check_bits(4, "cpu")
    assert info.value.message == "4-bit needs an NVIDIA GPU with CUDA; on CPU run without --bits (fp32)."
    with pytest.raises(InputError, match="4 or 8"):
        check_bits(3, "cpu")
    warnings: list[str] = []
    assert check_bits(8, "cpu", strict=False, warn=warnings.append) is None
    assert "8-bit needs an NVIDIA GPU" in warnings[0]


def test_quantization_and_dtype_choices(monkeypatch):
    import torch

    from finetune import modelload

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    q4 = modelload.quantization_config(4)
    assert q4.load_in_4bit and q4.bnb_4bit_quant_type == "nf4" and q4.bnb_4bit_use_double_quant
    assert q4.bnb_4bit_compute_dtype == torch.bfloat16
    assert modelload.quantization_config(8).load_in_8bit
    assert modelload.pick_dtype("cuda") == torch.bfloat16 and modelload.pick_dtype("cpu") == torch.float32
    assert modelload.pick_dtype("cuda", "fp16") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert modelload.pick_dtype("cuda") == torch.float16
    with pytest.raises(InputError, match="Unknown dtype"):
        modelload.pick_dtype("cpu", "int3")


# --------------------------------------------------------------------------------------------------- chat


@pytest.fixture(scope="module")
def loaded(embedded_model):
    warnings: list[str] = []
    model, tokenizer = load_model(embedded_model, bits=4, strict=False, warn=warnings.append)
    assert warnings and "4-bit needs an NVIDIA GPU" in warnings[0]  # fell back to fp32 on CPU
    return model, tokenizer


def greedy(tokens: int) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=tokens, temperature=0)


def test_load_model_fp32_on_cpu(loaded):
    import torch

    model, tokenizer = loaded
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    assert tokenizer.pad_token is not None


def test_finetune_chat_is_the_apps_terminal_chat(loaded):
    """`finetune chat` streams through app.engine / app.cli (their own tests cover streaming, stop, trimming)."""
    from app.cli import Conversation
    from app.engine import ChatEngine

    conversation = Conversation(ChatEngine(*loaded), greedy(4))
    out = io.StringIO()
    assert chat_loop(conversation, input_stream=io.StringIO("hi\n\nRESET\nEXIT\nnever sent\n"), output_stream=out) == 0
    text = out.getvalue()
    assert text.count("Assistant: ") == 1 and "(history cleared)" in text and "never sent" not in text
    assert conversation.history == []


def test_cli_prompt_non_interactive(embedded_model, capsys):
    root = argparse.ArgumentParser()
    chat_mod.register(root.add_subparsers(dest="verb", required=True), argparse.HelpFormatter)
    args = root.parse_args(["chat", str(embedded_model), "--prompt", "Who are you?", "--max-new-tokens", "12",
                            "--temperature", "0", "--bits", "4"])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert "User: Who are you?" in captured.out
    answer = captured.out.split("Assistant: ", 1)[1].strip()
    assert answer
    assert "warning: 4-bit needs an NVIDIA GPU with CUDA; on CPU run without --bits (fp32)." in captured.err


def test_bad_generation_settings_fail_before_loading():
    with pytest.raises(InputError, match="Max new tokens must be at least 1"):
        chat_mod.chat("does-not-matter", max_new_tokens=0)


def test_cli_main_reports_missing_model(monkeypatch, capsys, cache):
    from finetune import cli

    monkeypatch.setattr(cli, "VERB_MODULES", ["chat"])  # only this verb: other modules may be in progress
    assert cli.main(["chat", "qwen2.5-0.5b-instruct", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: Model 'qwen2.5-0.5b-instruct' is not downloaded")
    assert "python -m finetune download --preset qwen2.5-0.5b-instruct" in err[-1]
