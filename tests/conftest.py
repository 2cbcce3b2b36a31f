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
