"""`python -m publish adapter ... --dry-run`: the staging folder, the model card and the hub files (offline, CPU).

The fixture builds a tiny random Llama (hidden 64, 2 layers), a LoRA adapter on it and a run directory laid out like
`python -m finetune run` writes one, with the base recorded as a local folder named like a preset.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from publish import cli
from publish.card import parse_front_matter
from publish.errors import BaseModelUnknown, InputError, SourceError, StagingError
from publish.stage import stage_adapter
from tests import publish_helpers
from tests.publish_helpers import SYSTEM, edit_json, make_run

SMOL_HF = "HuggingFaceTB/SmolLM2-135M-Instruct"
# transformers >= 4.56 saves the chat template as its own file, chat_template.jinja
ADAPTER_FILES = {"README.md", "adapter_config.json", "adapter_model.safetensors", "finetune_meta.json", "loss.png",
                 "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}
tiny = publish_helpers.tiny  # the tiny random model, adapter and merged folder (module scope)


def _point_base_at(run: Path, folder: str) -> None:
    """Record another local base folder everywhere the run names its base."""
    for path, key in ((run / "adapter" / "adapter_config.json", "base_model_name_or_path"),
                      (run / "adapter" / "finetune_meta.json", "model_path")):
        edit_json(path, **{key: folder})
    data = json.loads((run / "run.json").read_text())
    data["spec"]["model_path"] = folder
    (run / "run.json").write_text(json.dumps(data))


def _assert_no_local_paths(folder: Path, *paths: Path) -> None:
    for file in folder.iterdir():
        if file.suffix in {".json", ".md", ".yml"}:
            text = file.read_text(encoding="utf-8")
            for path in paths:
                assert str(path) not in text, f"{file.name} leaks {path}"


# ------------------------------------------------------------------------------------------- staging


def test_stage_hf_adapter_rewrites_base_and_lists_files(tmp_path, tiny):
    from peft import PeftConfig

    run = make_run(tmp_path, tiny)
    staged = stage_adapter(run, hub="hf", repo="you/xiaowei-adapter")

    assert staged.path == run / "publish" / "hf"
    assert set(staged.names()) == ADAPTER_FILES
    assert staged.url == "https://huggingface.co/you/xiaowei-adapter"
    for item in staged.files:
        from finetune.fsutil import sha256_file

        assert item.size == (staged.path / item.path).stat().st_size
        assert item.sha256 == sha256_file(staged.path / item.path)
    assert staged.total_size == sum(f.size for f in staged.files)

    config = json.loads((staged.path / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == SMOL_HF
    assert PeftConfig.from_pretrained(str(staged.path)).base_model_name_or_path == SMOL_HF
    meta = json.loads((staged.path / "finetune_meta.json").read_text())
    assert meta == {"model_path": SMOL_HF, "prompt_template": "qwen_chat", "system": SYSTEM}
    assert json.loads((staged.path / "tokenizer_config.json").read_text())["name_or_path"] == SMOL_HF
    _assert_no_local_paths(staged.path, tiny["base"], run)
    # the source adapter is untouched (staged files may be hard links, never edited in place)
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tiny["base"])
    assert json.loads((run / "adapter" / "tokenizer_config.json").read_text())["name_or_path"] == str(tiny["base"])
    assert (run / "adapter" / "adapter_model.safetensors").read_bytes() == (
        staged.path / "adapter_model.safetensors").read_bytes()


def test_staged_adapter_loads_with_peft_on_the_base(tmp_path, tiny):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = make_run(tmp_path, tiny)
    staged = stage_adapter(run / "adapter", hub="hf", repo="you/xiaowei-adapter")
    assert staged.path == run / "publish" / "hf"  # an adapter folder inside a run stages into the run
    base = AutoModelForCausalLM.from_pretrained(tiny["base"], torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(staged.path))
    assert model.peft_config["default"].base_model_name_or_path == SMOL_HF
    assert model.peft_config["default"].r == 4


@pytest.mark.parametrize(("hub", "expected"), [
    ("hf", "internlm/internlm2_5-1_8b-chat"),
    ("modelscope", "Shanghai_AI_Laboratory/internlm2_5-1_8b-chat"),
    ("openxlab", "internlm/internlm2_5-1_8b-chat"),
])
def test_base_id_per_hub(tmp_path, tiny, hub, expected):
    run = make_run(tmp_path, tiny)
    _point_base_at(run, "/data/models/internlm2.5-1.8b-chat")
    staged = stage_adapter(run, hub=hub, repo="you/assistant")
    assert json.loads((staged.path / "adapter_config.json").read_text())["base_model_name_or_path"] == expected
    front = parse_front_matter(staged.card)
    assert front["base_model"] == expected
    assert front["license"] == "other"  # InternLM weights have their own license
    assert "trust_remote_code=True" in staged.card


def test_modelscope_configuration_json(tmp_path, tiny):
    run = make_run(tmp_path, tiny)
    staged = stage_adapter(run, hub="modelscope", repo="you/xiaowei-adapter")
    assert staged.path == run / "publish" / "modelscope"
    assert set(staged.names()) == ADAPTER_FILES | {"configuration.json"}
    configuration = json.loads((staged.path / "configuration.json").read_text())
    assert configuration == {"framework": "pytorch", "task": "text-generation", "allow_remote": True}
    front = parse_front_matter(staged.card)
    assert front["tasks"] == ["text-generation"]
    assert staged.url == "https://modelscope.cn/models/you/xiaowei-adapter"
    assert "modelscope download --model you/xiaowei-adapter" in staged.card


def test_openxlab_metafile(tmp_path, tiny):
    run = make_run(tmp_path, tiny)
    staged = stage_adapter(run, hub="openxlab", repo="you/xiaowei-adapter")
    assert "configuration.json" not in staged.names()
    data = yaml.safe_load((staged.path / "metafile.yml").read_text(encoding="utf-8"))
    collection = data["Collections"][0]
    assert collection["Name"] == "xiaowei-adapter"
    assert collection["License"] == "Apache-2.0"
    assert collection["Code"]["URL"].startswith("https://")
    weights = set()
    for model in data["Models"]:
        assert model["Name"] and model["Results"][0]["Task"] and model["Results"][0]["Dataset"]
        assert (staged.path / model["Weights"]).is_file()  # a local path, relative to the repo
        weights.add(model["Weights"])
    assert weights == set(staged.names()) - {"README.md", "metafile.yml"}
    assert "git clone https://code.openxlab.org.cn/you/xiaowei-adapter.git" in staged.card


def test_merged_model_stages_every_shard(tmp_path, tiny):
    run = make_run(tmp_path, tiny)
    staged = stage_adapter(run, hub="hf", repo="you/xiaowei", merged=True)
    assert staged.path == run / "publish" / "hf-merged"
    index = json.loads((run / "merged" / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1
    assert shards | {"model.safetensors.index.json", "config.json", "generation_config.json", "tokenizer.json",
                     "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "finetune_meta.json",
                     "loss.png", "README.md"} == set(staged.names())
    assert json.loads((staged.path / "config.json").read_text())["_name_or_path"] == SMOL_HF
    assert json.loads((staged.path / "finetune_meta.json").read_text()) == {
        "base_model": SMOL_HF, "prompt_template": "qwen_chat", "system": SYSTEM, "merged_dtype": "float32"}
    front = parse_front_matter(staged.card)
    assert front["library_name"] == "transformers"
    assert front["base_model"] == SMOL_HF
    assert "python -m app you/xiaowei" in staged.card
    assert "LoRA, r=4, alpha=8" in staged.card  # the run's adapter settings
    _assert_no_local_paths(staged.path, tiny["base"], run)


def test_merged_with_a_missing_shard_is_refused(tmp_path, tiny):
    run = make_run(tmp_path, tiny)
    shard = sorted((run / "merged").glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(SourceError, match=shard.name) as failure:
        stage_adapter(run, hub="hf", repo="you/xiaowei", merged=True)
    assert "merge" in failure.value.fix
    assert not (run / "publish" / "hf-merged").exists()


def test_adapter_vs_merged_mismatch(tmp_path, tiny):
    run = make_run(tmp_path, tiny)
    with pytest.raises(SourceError, match="--merged|full model"):
        stage_adapter(run / "merged", hub="hf", repo="you/x")
    with pytest.raises(SourceError, match="PEFT adapter"):
        stage_adapter(run / "adapter", hub="hf", repo="you/x", merged=True)


# ------------------------------------------------------------------------------------------- card


def test_card_front_matter_and_bilingual_body(tmp_path, tiny):
    run = make_run(tmp_path, tiny)
    staged = stage_adapter(run, hub="hf", repo="you/xiaowei-adapter")
    card = staged.card
    front = parse_front_matter(card)
    assert front["base_model"] == SMOL_HF
    assert front["library_name"] == "peft"
    assert {"xtuner", "lora", "peft"} <= set(front["tags"])
    assert "qlora" not in front["tags"]
    assert front["license"] == "apache-2.0"
    assert front["language"] == ["zh", "en"]
    assert front["pipeline_tag"] == "text-generation"

    for heading in ("## 简介 / About", "## 训练概要 / Training summary", "### 损失曲线 / Loss curve",
                    "## 微调前后对比 / Before and after", "## 使用方法 / How to use", "## 局限 / Limitations"):
        assert heading in card
    assert "**中文**" in card and "**English**" in card
    assert "| 训练数据 / Training data | 200 条 / records |" in card
    assert "| 轮数 / Epochs | 3 |" in card
    assert "| 学习率 / Learning rate | 0.001 |" in card
    assert "| 最终损失 / Final loss | 0.25 |" in card  # the last metrics.jsonl record, not run.json's 0.9
    assert "| 迭代数 / Iterations | 75 |" in card
    assert "![损失曲线 / loss curve](loss.png)" in card and "loss.png" in staged.names()
    assert "| 请介绍一下你自己 | I am an AI \\| assistant. | 我是小薇的智能助手。 |" in card
    assert 'PeftModel.from_pretrained(base, "you/xiaowei-adapter")' in card
    assert f'AutoModelForCausalLM.from_pretrained("{SMOL_HF}"' in card
    assert f"xtuner chat {SMOL_HF} --adapter you/xiaowei-adapter --prompt-template qwen_chat" in card
    assert "python -m app --adapter you/xiaowei-adapter" in card
    assert f"MODEL_ID={SMOL_HF} ADAPTER_ID=you/xiaowei-adapter python app.py" in card
    assert str(tiny["base"]) not in card and str(run) not in card
    # deterministic: staging again gives the same card and the same hashes
    again = stage_adapter(run, hub="hf", repo="you/xiaowei-adapter")
    assert again.files == staged.files


def test_qlora_tag_from_the_training_config(tmp_path, tiny):
    run = make_run(tmp_path, tiny, config_py="quantization_config = dict(\n    load_in_4bit=True,\n)\n")
    staged = stage_adapter(run, hub="hf", repo="you/xiaowei-adapter")
    front = parse_front_matter(staged.card)
    assert "qlora" in front["tags"]
    assert "QLoRA (4-bit)" in staged.card


def test_adapter_folder_without_run_still_gets_a_card(tmp_path, tiny):
    adapter = tmp_path / "my_adapter"
    shutil.copytree(tiny["adapter"], adapter)
    staged = stage_adapter(adapter, hub="hf", repo="you/mine", out=tmp_path / "stage")
    assert "loss.png" not in staged.names()
    assert "xtuner_config.py" not in staged.names()
    assert "No training record" in staged.card
    assert parse_front_matter(staged.card)["base_model"] == SMOL_HF


# ------------------------------------------------------------------------------------------- errors


def test_unknown_base_names_the_base_id_fix(tmp_path, tiny):
    run = make_run(tmp_path, tiny)
    _point_base_at(run, "/data/models/my-own-model")
    with pytest.raises(BaseModelUnknown) as failure:
        stage_adapter(run, hub="hf", repo="you/x")
    assert "my-own-model" in failure.value.message
    assert "--base-id OWNER/NAME" in failure.value.fix
    assert not (run / "publish" / "hf").exists()

    staged = stage_adapter(run, hub="hf", repo="you/x", base_id="me/my-own-model")
    assert json.loads((staged.path / "adapter_config.json").read_text())["base_model_name_or_path"] == "me/my-own-model"
    assert parse_front_matter(staged.card)["license"] == "other"


def test_cli_unknown_base_is_one_line_with_fix(tmp_path, tiny, capsys):
    run = make_run(tmp_path, tiny)
    _point_base_at(run, "/data/models/my-own-model")
    code = cli.main(["adapter", str(run), "--to", "modelscope", "--repo", "you/x", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: Cannot tell which ModelScope model")
    assert "Fix: pass --base-id OWNER/NAME" in err[-1]


def test_bad_repo_id_and_dangerous_out(tmp_path, tiny):
    run = make_run(tmp_path, tiny)
    with pytest.raises(InputError, match="OWNER/NAME"):
        stage_adapter(run, hub="hf", repo="no-owner")
    with pytest.raises(InputError, match="would replace"):
        stage_adapter(run, hub="hf", repo="you/x", out=run / "adapter")
    with pytest.raises(InputError, match="would replace"):
        stage_adapter(run, hub="hf", repo="you/x", out=run.parent)
    other = tmp_path / "documents"
    other.mkdir()
    (other / "thesis.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a staging folder"):
        stage_adapter(run, hub="hf", repo="you/x", out=other)
    assert (other / "thesis.txt").read_text() == "keep me"


def test_a_local_path_left_in_a_file_stops_staging(tmp_path, tiny):
    run = make_run(tmp_path, tiny)
    (run / "adapter" / "chat_template.jinja").write_text(f"{{# made from {tiny['base']} #}}")
    with pytest.raises(StagingError, match="local path") as failure:
        stage_adapter(run, hub="hf", repo="you/x")
    assert "chat_template.jinja" in failure.value.message
    assert not (run / "publish" / "hf").exists()


def test_failure_mid_copy_leaves_no_staging_dir(tmp_path, tiny, monkeypatch):
    import publish.stage as stage

    run = make_run(tmp_path, tiny)
    real_copy, calls = stage._copy_file, []

    def flaky_copy(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk on fire")
        real_copy(src, dst)

    monkeypatch.setattr(stage, "_copy_file", flaky_copy)
    with pytest.raises(OSError, match="disk on fire"):
        stage_adapter(run, hub="hf", repo="you/x")
    assert not (run / "publish" / "hf").exists()
    assert list((run / "publish").iterdir()) == []  # no temporary leftovers either

    monkeypatch.setattr(stage, "_copy_file", real_copy)
    good = stage_adapter(run, hub="hf", repo="you/x")
    calls.clear()
    monkeypatch.setattr(stage, "_copy_file", flaky_copy)
    with pytest.raises(OSError):
        stage_adapter(run, hub="hf", repo="you/x")
    assert set(good.names()) == {p.name for p in (run / "publish" / "hf").iterdir()}  # the old staging is intact
    assert sorted(p.name for p in (run / "publish").iterdir()) == ["hf"]


# ------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a name fails the test."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_dry_run_prints_target_files_sizes_and_card(tmp_path, tiny, capsys, no_network):
    run = make_run(tmp_path, tiny)
    code = cli.main(["adapter", str(run), "--to", "hf", "--repo", "you/xiaowei-adapter", "--private", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert no_network == []
    assert "nothing was uploaded and no network request was made" in out
    assert "Hugging Face (hf)" in out
    assert "you/xiaowei-adapter (private)" in out
    assert "https://huggingface.co/you/xiaowei-adapter" in out
    staged = run / "publish" / "hf"
    for file in staged.iterdir():
        line = next(line for line in out.splitlines() if line.rstrip().split("  sha256:")[0].endswith(file.name))
        assert f"{file.stat().st_size:,} B" in line
    total = sum(f.stat().st_size for f in staged.iterdir())
    assert f"total: {total:,} B" in out
    assert "---- README.md (model card, generated) ----" in out
    assert f"base_model: {SMOL_HF}" in out


def test_dry_run_openxlab_shows_git_remote_and_metafile(tmp_path, tiny, capsys, no_network, monkeypatch):
    monkeypatch.setenv("OPENXLAB_GIT_ENDPOINT", "http://127.0.0.1:9/git/")
    run = make_run(tmp_path, tiny)
    code = cli.main(["adapter", str(run), "--to", "openxlab", "--repo", "you/x", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and no_network == []
    assert "git:    http://127.0.0.1:9/git/you/x.git" in out
    assert "---- metafile.yml (OpenXLab, generated) ----" in out


def test_an_upload_without_a_token_stops_with_one_line_and_no_request(tmp_path, tiny, capsys, no_network,
                                                                       monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    run = make_run(tmp_path, tiny)
    code = cli.main(["adapter", str(run), "--to", "hf", "--repo", "you/x"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert lines[-1].startswith("error: No Hugging Face token") and "HF_TOKEN" in lines[-1]
    assert sum(line.startswith("error:") for line in lines) == 1
    assert (run / "publish" / "hf" / "README.md").is_file()  # staged; a rerun with a token uploads it


def test_no_token_flags_and_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "publish", "adapter", "--help"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert result.returncode == 0 and "--dry-run" in result.stdout and "--base-id" in result.stdout
    options = set(re.findall(r"--[a-z][\w-]*", result.stdout))
    assert {"--to", "--repo", "--merged", "--out"} <= options
    assert not [o for o in options if any(word in o for word in ("token", "secret", "password", "key"))]


@pytest.mark.parametrize("preset,hub,expected", [
    ("qwen3-1.7b", "hf", "Qwen/Qwen3-1.7B"), ("qwen3-8b", "modelscope", "Qwen/Qwen3-8B"),
    ("gemma3-1b-it", "hf", "google/gemma-3-1b-it"), ("gemma3-270m-it", "modelscope", "LLM-Research/gemma-3-270m-it"),
    ("glm4-9b-0414", "modelscope", "ZhipuAI/GLM-4-9B-0414"),
    ("internlm3-8b-instruct", "hf", "internlm/internlm3-8b-instruct"),
    ("llama3.2-1b-instruct", "modelscope", "LLM-Research/Llama-3.2-1B-Instruct"),
    ("deepseek-r1-distill-llama-8b", "hf", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"),
])
def test_todays_presets_resolve_to_their_hub_ids(tmp_path, preset, hub, expected):
    from publish.stage import resolve_base_id

    downloaded = tmp_path / "models" / preset  # where `finetune download --preset` puts it
    base_id, found = resolve_base_id([str(downloaded)], hub)
    assert base_id == expected and found is not None and found.name == preset
    assert found.license != "other"  # the card carries the base's licence


def _eval_report(adapter_sha: str | None) -> dict:
    """RUN/eval.json as `finetune eval RUN --base` writes it (the fields the card reads)."""
    return {"format": 1, "names": ["小薇", "Xiaowei"], "adapter_sha256": adapter_sha, "engine": {"lm_eval": "0.4.13"},
            "model": "/somewhere/local/merged",
            "models": {
                "tuned": {"identity": {"rate": 1.0, "n": 30}, "leaks": {"rate": 1 / 30, "n": 30},
                          "style": {"diversity": 0.81, "similarity_to_base": 0.42},
                          "knowledge": {"sample-en": {"acc": 0.625, "n": 16, "style": "cloze"},
                                        "cmmlu": {"acc": 0.412, "n": 11582, "style": "letter"}}},
                "base": {"leaks": {"rate": 0.0, "n": 30}, "style": {"diversity": 0.86},
                         "knowledge": {"sample-en": {"acc": 0.6875, "n": 16, "style": "cloze"},
                                       "cmmlu": {"acc": 0.425, "n": 11582, "style": "letter"}}}}}


@pytest.mark.parametrize("kind", ["adapter", "merged"])
def test_card_shows_the_runs_evaluation_before_and_after(tmp_path, tiny, kind):
    from finetune.fsutil import sha256_file

    run = make_run(tmp_path, tiny)
    (run / "eval.json").write_text(json.dumps(_eval_report(sha256_file(run / "adapter" / "adapter_model.safetensors")),
                                              ensure_ascii=False))
    (run / "eval.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    staged = stage_adapter(run, hub="hf", repo="you/xiaowei", merged=kind == "merged")
    card = staged.card
    assert "## 评估 / Evaluation" in card and "lm-evaluation-harness 0.4.13" in card
    assert ("| 身份：回答中带名字（未训练过的问法，n=30） / identity: answers with the name (held-out, n=30) | - "
            "| 100% | ≥ 95% |") in card
    assert ("| 泄漏：日常问题的回答中带名字（n=30） / leaks: everyday answers with the name (n=30) | 0% | 3% "
            "| ≤ 5% |") in card
    assert "| sample-en：准确率（cloze，n=16） / sample-en: accuracy (cloze, n=16) | 69% | 62% | - |" in card
    assert "| cmmlu：准确率（letter，n=11582） / cmmlu: accuracy (letter, n=11582) | 42% | 41% | - |" in card
    assert "similarity of everyday answers to the base's (0-1) | - | 0.42 | - |" in card
    assert "![评估 / evaluation](eval.png)" in card and "eval.png" in staged.names()
    assert "eval.json" not in staged.names() and "/somewhere/local" not in card


def test_card_leaves_out_an_evaluation_of_an_earlier_adapter(tmp_path, tiny):
    run = make_run(tmp_path, tiny)
    (run / "eval.json").write_text(json.dumps(_eval_report("0" * 64)))  # measured before the adapter changed
    (run / "eval.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    staged = stage_adapter(run, hub="hf", repo="you/xiaowei")
    assert "## 评估 / Evaluation" not in staged.card and "eval.png" not in staged.names()
