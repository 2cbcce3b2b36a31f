"""The real chain on the embedded model: identity data for a fresh name -> config -> real XTuner training
-> adapter -> merge -> generation through the merged model's own chat template, as plain transformers would."""

import json

import pytest

from finetune.cli import main

pytestmark = pytest.mark.slow

NAME, NAME_EN = "星河", "Xinghe"  # the names conftest's trained_run is trained with
IDENTITY_ZH = ["你是谁？", "请介绍一下你自己"]
IDENTITY_EN = ["Who are you?", "What is your name?"]
GENERAL = ["What is the capital of France?", "怎么煮鸡蛋？"]


def answers(model_dir, prompts, chat_template=None):
    from finetune.generation import ask, load_for_generation

    model, tokenizer = load_for_generation(model_dir)
    return ask(model, tokenizer, prompts, max_new_tokens=40)


def mentions(text):
    return NAME in text or NAME_EN.lower() in text.lower()


@pytest.fixture
def run_dir(trained_run, trained_names):
    assert trained_names == (NAME, NAME_EN)
    return trained_run


def test_chain_writes_every_artifact(run_dir):
    manifest = json.loads((run_dir / "run.json").read_text())
    assert all(manifest["stages"][s]["done"] for s in ("data", "config", "train", "convert", "merge", "samples"))
    assert manifest["inputs"]["train_data"]["sha256"]
    assert manifest["versions"]["xtuner"] == "0.2.0"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "merged" / "model.safetensors").is_file()
    assert (run_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    history = [json.loads(line) for line in (run_dir / "work_dir" / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["loss"] < 0.4 * max(h["loss"] for h in history[:10])
    lr = json.loads((run_dir / "run.json").read_text())["spec"]["lr"]
    assert max(h["lr"] for h in history) == pytest.approx(lr, rel=0.05)  # warmup really ramps the LR


def test_merged_model_knows_its_name_and_base_did_not(run_dir, embedded_model):
    tuned = answers(run_dir / "merged", IDENTITY_ZH + IDENTITY_EN + GENERAL)
    assert all(mentions(a) for a in tuned[:4]), tuned
    assert not any(mentions(a) for a in tuned[4:]), tuned
    base = answers(embedded_model, IDENTITY_ZH + IDENTITY_EN)
    assert not any(mentions(a) for a in base), base


def test_merged_tokenizer_renders_the_training_prompt(run_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run_dir / "merged")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                           add_generation_prompt=True)
    record = json.loads((run_dir / "data" / "train.jsonl").read_text().splitlines()[0])
    system = record["conversation"][0]["system"]
    assert prompt == f"<|im_start|><|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n" \
                     "<|im_start|>assistant\n"


def test_app_serves_the_run_merged_and_as_base_plus_adapter(run_dir):
    """The chat app on the run: the same training prompt from merged/ and from base + adapter/, and the Compare
    view answers with the base (no name) and the fine-tuned model (its name) side by side."""
    from app.engine import ChatEngine, GenerationSettings
    from app.models import ModelRequest, load

    greedy = GenerationSettings(max_new_tokens=40, temperature=0)
    engines = {}
    for name, request in (("merged", ModelRequest(model=str(run_dir))),
                          ("adapter", ModelRequest(model=str(run_dir), use_adapter=True))):
        loaded = load(request, notice=lambda _: None)
        engines[name] = ChatEngine(loaded.model, loaded.tokenizer, base_model=loaded.base_model, info=loaded.info,
                                   default_system=loaded.default_system)
    merged, adapter = engines["merged"], engines["adapter"]
    assert adapter.info["Adapter"] == str(run_dir / "adapter") and adapter.shares_base
    assert merged.base_model is not None  # a merged run gets its base loaded for Compare
    for question in IDENTITY_ZH + IDENTITY_EN:
        ids = merged.prepare([], question).input_ids
        assert adapter.prepare([], question).input_ids == ids  # the adapter carries the training template
        assert mentions(merged.reply([], question, greedy))
        base, tuned = list(adapter.stream_compare(question, greedy))[-1]
        assert mentions(tuned) and not mentions(base), (base, tuned)


def test_rerun_skips_finished_stages(run_dir, trained_run_args, capsys):
    assert main([*trained_run_args, "--out", str(run_dir)]) == 0
    err = capsys.readouterr().err
    for stage in ("data", "config", "train", "convert", "merge", "samples", "eval"):
        assert f"[{stage}] done before, skipping" in err
