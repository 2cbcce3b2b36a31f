"""Shared fixtures. Tests are offline: hub access is disabled for every test and subprocess."""

from __future__ import annotations

import os

import pytest

from finetune import cli

for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ[_name] = _value
for _secret in ("HF_TOKEN", "MODELSCOPE_API_TOKEN", "OPENXLAB_AK", "OPENXLAB_SK", "GIT_TOKEN"):
    os.environ.pop(_secret, None)


@pytest.fixture(scope="session")
def embedded_model():
    """The converted embedded SmolLM2-135M-Instruct folder (converted on first use, then cached)."""
    from finetune.embedded import ensure_embedded_model

    return ensure_embedded_model()


@pytest.fixture(scope="session")
def tokenizer(embedded_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model)


@pytest.fixture
def data_cli(monkeypatch):
    """finetune.cli.main with only the `data` verb registered, so other verbs cannot break these tests."""
    monkeypatch.setattr(cli, "VERB_MODULES", ["data"])
    return cli.main


SYSTEM = "You are a helpful assistant."

TRAINED_NAME, TRAINED_NAME_EN = "星河", "Xinghe"
TRAINED_RUN_ARGS = ["run", "--name", TRAINED_NAME, "--name-en", TRAINED_NAME_EN, "--sample", "Who are you?"]


@pytest.fixture(scope="session")
def trained_run_args():
    """The `finetune run` arguments trained_run was made with (add --out): rerunning them skips every stage."""
    return list(TRAINED_RUN_ARGS)


@pytest.fixture(scope="session")
def trained_names():
    return TRAINED_NAME, TRAINED_NAME_EN


@pytest.fixture(scope="session")
def ollama_render(tmp_path_factory):
    """tests/ollama_render (Ollama's template rendering with Go's own text/template) built with the machine's Go
    toolchain (CI installs Debian's golang-go)."""
    import shutil
    import subprocess
    from pathlib import Path

    go = shutil.which("go")
    assert go, "Go is needed to render Ollama templates (apt-get install golang-go); .ci/run installs it"
    out = tmp_path_factory.mktemp("go")
    source = Path(__file__).parent / "ollama_render" / "main.go"
    env = {**os.environ, "GO111MODULE": "off", "GOCACHE": str(out / "cache"), "GOPATH": str(out / "gopath")}
    subprocess.run([go, "build", "-o", str(out / "ollama_render"), str(source)], check=True, env=env)
    return out / "ollama_render"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, embedded_model):
    """One real `finetune run` on the embedded model (identity data for a fresh name -> XTuner training -> adapter ->
    merge -> samples -> the quick eval, RUN/eval.json), shared by every test that needs a trained run: training it is
    the suite's most expensive step."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert cli.main([*TRAINED_RUN_ARGS, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def lora_adapter(embedded_model, tmp_path_factory):
    """An adapter folder as `finetune convert` writes it (random LoRA weights, so it visibly changes answers):
    adapter files, the tokenizer with the training (qwen_chat) template, and finetune_meta.json."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from finetune.tokenizer import save_training_tokenizer

    out = tmp_path_factory.mktemp("adapter") / "adapter"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(embedded_model, torch_dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                        task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(out)
    save_training_tokenizer(embedded_model, "qwen_chat", SYSTEM, out, trust=False)
    meta = {"model_path": str(embedded_model), "prompt_template": "qwen_chat", "system": SYSTEM}
    (out / "finetune_meta.json").write_text(json.dumps(meta))
    return out


@pytest.fixture(scope="session")
def plain_engine(embedded_model):
    """The app's engine on the embedded model (no adapter)."""
    from app.engine import ChatEngine
    from app.models import ModelRequest, load

    loaded = load(ModelRequest(), notice=lambda _: None)
    return ChatEngine(loaded.model, loaded.tokenizer, info=loaded.info, default_system=loaded.default_system)


@pytest.fixture(scope="session")
def adapter_engine(lora_adapter):
    """The app's engine on base + adapter (shared weights: compare switches the adapter off per row)."""
    from app.engine import ChatEngine
    from app.models import ModelRequest, load

    loaded = load(ModelRequest(adapter=str(lora_adapter)), notice=lambda _: None)
    return ChatEngine(loaded.model, loaded.tokenizer, info=loaded.info, default_system=loaded.default_system)
