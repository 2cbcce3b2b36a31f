"""convert/merge on their own: clear errors, automatic device choice, atomic output, training template."""

import json

import pytest

from finetune.cli import main
from finetune.convert import convert, locate
from finetune.errors import InputError, ModelNotFound
from finetune.merge import choose_device, merge, read_adapter_meta


def test_convert_without_checkpoint_names_the_fix(tmp_path):
    work_dir = tmp_path / "wd"
    work_dir.mkdir()
    (work_dir / "cfg.py").write_text("x = 1\n")
    with pytest.raises(InputError, match="No iter_\\*.pth checkpoint") as failure:
        convert(work_dir)
    assert "--resume" in failure.value.fix
    assert not (work_dir / "adapter").exists()


def test_locate_finds_config_in_run_dir_and_work_dir(tmp_path):
    run = tmp_path / "run"
    (run / "work_dir").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    (run / "config.py").write_text("x = 1\n")
    assert locate(run) == (run / "work_dir", run / "config.py")
    with pytest.raises(InputError, match="does not exist"):
        locate(tmp_path / "missing")
    with pytest.raises(InputError, match="No XTuner config"):
        locate(run / "work_dir")


def test_merge_refuses_a_folder_that_is_not_an_adapter(tmp_path, capsys):
    with pytest.raises(InputError, match="not a PEFT adapter"):
        read_adapter_meta(tmp_path)
    assert main(["merge", str(tmp_path)]) != 0
    assert "Fix:" in capsys.readouterr().err


def test_merge_needs_a_base_with_weights(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "base")}))
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound, match="no weights"):
        merge(adapter, out=tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_choose_device_falls_back_to_cpu_without_cuda(tmp_path):
    assert choose_device(tmp_path) == ("cpu", "no CUDA GPU")
    assert choose_device(tmp_path, "cuda") == ("cuda", "as requested")


def test_real_lora_adapter_merges_with_training_template(tmp_path, embedded_model):
    """A small real PEFT adapter on the embedded model merges into a loadable model with the XTuner template."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(embedded_model, torch_dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    (adapter / "finetune_meta.json").write_text(json.dumps(
        {"model_path": str(embedded_model), "prompt_template": "qwen_chat", "system": "You are Xiaowei's assistant."}))
    expected = peft_model.merge_and_unload().state_dict()["model.layers.0.self_attn.q_proj.weight"]

    out = merge(adapter, out=tmp_path / "merged", max_shard_size="200MB", progress=lambda m: None)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2  # sharded
    merged = AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32)
    assert torch.allclose(merged.state_dict()["model.layers.0.self_attn.q_proj.weight"], expected, atol=1e-6)
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt == ("<|im_start|><|im_start|>system\nYou are Xiaowei's assistant.<|im_end|>\n"
                      "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert not (out / "tokenizer.model").exists()
    assert json.loads((out / "finetune_meta.json").read_text())["prompt_template"] == "qwen_chat"


def test_resolve_model_accepts_a_folder_holding_merged(tmp_path, embedded_model):
    import shutil

    from finetune.modelload import resolve_model

    merged = tmp_path / "run" / "merged"
    merged.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(embedded_model / name, merged / name)
    assert resolve_model(str(tmp_path / "run")) == merged.resolve()
