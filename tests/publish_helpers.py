"""What the publish tests share (not a test module): a tiny random model with its adapter and merged folder, a run
directory laid out like `finetune run` writes one, a git set-up of their own, and `time` without waits."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

SYSTEM = "You are a helpful assistant."
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SAMPLES = [
    {"prompt": "请介绍一下你自己", "before": "I am an AI | assistant.", "after": "我是小薇的智能助手。"},
    {"prompt": "Who are you?", "before": "A model.", "after": "I'm Xiaowei's assistant."},
]

def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<|im_start|>", "<|im_end|>", "user", "assistant", "system", "hello", "who", "are", "you"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<|im_start|>",
                                        eos_token="<|im_end|>", pad_token="<|im_end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random base model folder named like the smollm2 preset, a LoRA adapter and a sharded 'merged' model,
    each as `finetune convert` / `finetune merge` write them (local base paths in their configs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("tiny")
    base = root / "cache" / "models" / "smollm2-135m-instruct"
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    tokenizer = tiny_tokenizer()
    model.save_pretrained(base, safe_serialization=True)

    merged = root / "merged"
    model.save_pretrained(merged, safe_serialization=True, max_shard_size="100KB")
    tokenizer.save_pretrained(merged)
    edit_json(merged / "config.json", _name_or_path=str(base))
    (merged / "finetune_meta.json").write_text(json.dumps({
        "base_model": str(base), "adapter": str(root / "adapter"), "prompt_template": "qwen_chat", "system": SYSTEM,
        "merged_dtype": "float32"}))

    adapter = root / "adapter"
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                      task_type="CAUSAL_LM")
    get_peft_model(model, lora).save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    edit_json(adapter / "adapter_config.json", base_model_name_or_path=str(base))
    edit_json(adapter / "tokenizer_config.json", name_or_path=str(base))  # older transformers wrote this
    (adapter / "finetune_meta.json").write_text(json.dumps({
        "model_path": str(base), "prompt_template": "qwen_chat", "system": SYSTEM,
        "checkpoint": "runs/x/work_dir/iter_75.pth", "config": str(root / "run" / "config.py")}))
    (adapter / "xtuner_config.py").write_text(f"pretrained_model_name_or_path = '{base}'\n")
    return {"root": root, "base": base, "adapter": adapter, "merged": merged}


def make_run(tmp_path: Path, tiny: dict, *, config_py: str = "quantization_config = None\n") -> Path:
    run = tmp_path / "runs" / "xiaowei"
    shutil.copytree(tiny["adapter"], run / "adapter")
    shutil.copytree(tiny["merged"], run / "merged")
    (run / "data").mkdir()
    (run / "data" / "train.jsonl").write_text("{}\n" * 200)
    (run / "work_dir").mkdir()
    metrics = [{"iter": i, "total": 75, "lr": 1e-3, "loss": round(1.0 - i / 100, 4)} for i in range(1, 76)]
    (run / "work_dir" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (run / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (run / "samples.json").write_text(json.dumps(SAMPLES, ensure_ascii=False))
    (run / "config.py").write_text(f"pretrained_model_name_or_path = '{tiny['base']}'\n{config_py}")
    (run / "adapter" / "xtuner_config.py").write_text((run / "config.py").read_text())
    (run / "run.json").write_text(json.dumps({
        "stages": {
            "data": {"done": True, "outputs": {"train_data": str(run / "data" / "train.jsonl"), "records": 200}},
            "train": {"done": True, "seconds": 226.5,
                      "outputs": {"work_dir": str(run / "work_dir"), "final_loss": 0.9, "iterations": 75}},
        },
        "versions": {"xtuner": "0.2.0", "transformers": "4.48.0", "peft": "0.21.2", "torch": "2.5.1"},
        "spec": {"model_path": str(tiny["base"]), "preset": "smollm2-135m-instruct", "epochs": 3, "lr": 0.001,
                 "batch_size": 8, "grad_accum": 1, "max_length": 256, "num_samples": 200},
    }))
    return run


@pytest.fixture(autouse=True)
def isolated_git(tmp_path, monkeypatch):
    """No system git config; the user's has no identity, a credential helper that would store any token it is given
    and a global hooks folder (where `git lfs install` would otherwise put its hooks)."""
    home = tmp_path / "home"
    (home / "global-hooks").mkdir(parents=True)
    config = home / "gitconfig"
    config.write_text(f"[credential]\n\thelper = store --file={home / 'stored-credentials'}\n"
                      f"[core]\n\thooksPath = {home / 'global-hooks'}\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL",
                 "OPENXLAB_GIT_USER", "OPENXLAB_GIT_TOKEN", "OPENXLAB_GIT_ENDPOINT", "GIT_ASKPASS"):
        monkeypatch.delenv(name, raising=False)
    return home


class NoWait:
    """The `time` module without waiting: the client's retry back-off would make each failure test take minutes."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        pass
