from __future__ import annotations

import json

import pytest

from finetune.data.check import check_file, get_template, render_pieces, token_lengths
from finetune.errors import DataError, InputError, ModelNotFound
from finetune.fsutil import write_jsonl

SYSTEM = "You are a helpful assistant."
SINGLE = {"conversation": [{"system": SYSTEM, "input": "你是谁？", "output": "我是小薇的智能助手。"}]}
MULTI = {"conversation": [{"input": "Hi", "output": "Hello!"}, {"input": "How are you?", "output": "Fine, thanks."}]}
PRETRAIN = {"conversation": [{"input": "", "output": "Plain text for incremental pretraining. " * 20}]}



def test_report_numbers(tmp_path, embedded_model):
    path = write_jsonl(tmp_path / "d.jsonl", [SINGLE, MULTI, PRETRAIN, SINGLE])
    report = check_file(path, model=embedded_model, max_length=2048)
    assert (report.records, report.turns) == (4, 5)
    assert (report.single, report.multi, report.pretrain, report.with_system) == (2, 1, 1, 2)
    assert 0 < report.tokens_min <= report.tokens_p50 <= report.tokens_p95 <= report.tokens_max
    assert report.tokens_min <= report.tokens_mean <= report.tokens_max
    assert report.over_max_length == 0
    assert "OK, 4 records" in "\n".join(report.lines())

    short = check_file(path, model=embedded_model, max_length=60)
    assert short.over_max_length == 1 and short.over_lines == [3]  # the long pretraining text
    assert "will be truncated" in "\n".join(short.lines())


def test_token_count_matches_xtuner_rendering(tokenizer):
    template = get_template("qwen_chat")
    first = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n你是谁？<|im_end|>\n" \
            "<|im_start|>assistant\n"
    assert render_pieces(SINGLE, template) == [(first, True), ("我是小薇的智能助手。<|im_end|>", False), ("\n", False)]

    def n(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    # SmolLM2's tokenizer has a BOS token, so XTuner puts one before the first turn.
    expected = 1 + n(first) + n("我是小薇的智能助手。<|im_end|>") + n("\n")
    assert token_lengths([SINGLE], tokenizer, template) == [expected]


def test_bad_lines_are_all_listed(tmp_path):
    path = tmp_path / "bad.jsonl"
    late_system = {"conversation": [{"input": "q", "output": "a"}, {"system": "s", "input": "q", "output": "a"}]}
    lines = [json.dumps(SINGLE), "", "{not json", json.dumps({"conversation": [{"input": "q", "output": ""}]}),
             json.dumps(late_system)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        check_file(path)
    assert [n for n, _ in info.value.problems] == [2, 3, 4, 5]
    assert "4 bad lines" in info.value.message


def test_errors(tmp_path, embedded_model):
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text("{}")
    (not_a_model / "model.safetensors").write_bytes(b"")
    path = write_jsonl(tmp_path / "d.jsonl", [SINGLE])
    with pytest.raises(InputError, match="Unknown prompt template") as info:
        check_file(path, prompt_template="nope")
    assert "qwen_chat" in info.value.fix
    with pytest.raises(InputError, match="does not exist"):
        check_file(tmp_path / "missing.jsonl")
    with pytest.raises(ModelNotFound):
        check_file(path, model=tmp_path / "no-model")
    with pytest.raises(ModelNotFound, match="Cannot load a tokenizer"):
        check_file(path, model=not_a_model)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no records"):
        check_file(empty)


def test_internlm2_template(tmp_path, embedded_model):
    path = write_jsonl(tmp_path / "d.jsonl", [SINGLE, MULTI])
    report = check_file(path, model=embedded_model, prompt_template="internlm2_chat")
    assert report.template == "internlm2_chat" and report.tokens_max > 0


def test_cli_check(tmp_path, data_cli, capsys, embedded_model):
    good = write_jsonl(tmp_path / "good.jsonl", [SINGLE, MULTI])
    assert data_cli(["data", "check", str(good), "--max-length", "16"]) == 0
    out = capsys.readouterr().out
    assert "OK, 2 records" in out and "exceed max_length 16" in out

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(SINGLE) + "\n{broken\n", encoding="utf-8")
    assert data_cli(["data", "check", str(bad)]) != 0
    err = capsys.readouterr().err
    assert "line 2: malformed JSON" in err and "bad.jsonl" in err
