from __future__ import annotations

import json
import logging

import pytest

from finetune.data import identity
from finetune.data.formats import load_jsonl, validate_record
from finetune.data.identity import (
    DEFAULT_SYSTEM,
    TRAIN_QUESTIONS_EN,
    TRAIN_QUESTIONS_ZH,
    build_identity,
    identity_capacity,
    make_identity_file,
    mix_records,
)
from finetune.errors import InputError


def turns(records):
    return [r["conversation"][0] for r in records]


def test_question_lists_are_large_and_unique():
    assert len(TRAIN_QUESTIONS_ZH) >= 40 and len(set(TRAIN_QUESTIONS_ZH)) == len(TRAIN_QUESTIONS_ZH)
    assert len(TRAIN_QUESTIONS_EN) >= 40 and len(set(TRAIN_QUESTIONS_EN)) == len(TRAIN_QUESTIONS_EN)
    assert len(identity.ANSWERS_ZH) >= 12 and len(identity.ANSWERS_EN) >= 12


def test_build_identity_counts_balance_and_validity():
    records = build_identity("小薇", name_en="Xiaowei", count=200)
    assert len(records) == 200
    assert all(validate_record(r) == [] for r in records)
    zh = [t for t in turns(records) if t["input"] in TRAIN_QUESTIONS_ZH]
    en = [t for t in turns(records) if t["input"] in TRAIN_QUESTIONS_EN]
    assert len(zh) == 100 and len(en) == 100
    assert all("小薇的智能助手" in t["output"] for t in zh)
    assert all("Xiaowei's assistant" in t["output"] for t in en)
    assert all(t["system"] == DEFAULT_SYSTEM for t in turns(records))
    # every question is used before any repeats
    assert len({t["input"] for t in zh}) == min(100, len(TRAIN_QUESTIONS_ZH))
    assert len({t["input"] for t in en}) == min(100, len(TRAIN_QUESTIONS_EN))


def test_build_identity_dedups_and_is_deterministic():
    records = build_identity("小薇", count=300, seed=7)
    pairs = [(t["input"], t["output"]) for t in turns(records)]
    assert len(set(pairs)) == len(pairs) == 300
    assert records == build_identity("小薇", count=300, seed=7)
    assert records != build_identity("小薇", count=300, seed=8)


def test_build_identity_languages_and_author():
    zh_only = turns(build_identity("小薇", lang="zh", count=20, author="小薇"))
    assert all(t["input"] in TRAIN_QUESTIONS_ZH and "小薇" in t["output"] for t in zh_only)
    assert all(any(w in t["output"] for w in ("由小薇", "是小薇训练", "开发者是小薇")) for t in zh_only)
    en_only = turns(build_identity("小薇", name_en="Xiaowei", author_en="Team X", lang="en", count=20))
    assert all(t["input"] in TRAIN_QUESTIONS_EN and "Xiaowei" in t["output"] for t in en_only)
    assert all("Team X" in t["output"] for t in en_only)
    # name_en falls back to name
    assert all("小薇's assistant" in t["output"] for t in turns(build_identity("小薇", lang="en", count=5)))


def test_build_identity_caps_without_repeating(caplog):
    capacity = identity_capacity("zh")["zh"]
    with caplog.at_level(logging.WARNING):
        records = build_identity("小薇", lang="zh", count=capacity + 50)
    assert len(records) == capacity
    assert len({(t["input"], t["output"]) for t in turns(records)}) == capacity
    assert "distinct identity records" in caplog.text


def test_build_identity_no_system():
    assert "system" not in build_identity("小薇", count=3, system="")[0]["conversation"][0]


@pytest.mark.parametrize("kwargs", [{"name": " "}, {"name": "小薇", "lang": "fr"}, {"name": "小薇", "count": 0}])
def test_build_identity_rejects_bad_input(kwargs):
    with pytest.raises(InputError):
        build_identity(**kwargs)


def general(n):
    return [{"conversation": [{"input": f"q{i}", "output": f"a{i}"}]} for i in range(n)]


def test_mix_records_ratio_and_system():
    ident = build_identity("小薇", count=40)
    mixed = mix_records(ident, general(100), 0.5, seed=1, system="S")
    assert len(mixed) == 80
    generals = [r for r in mixed if r["conversation"][0]["input"].startswith("q")]
    assert len(generals) == 40 and all(r["conversation"][0]["system"] == "S" for r in generals)
    assert mixed == mix_records(ident, general(100), 0.5, seed=1, system="S")
    only_identity = mix_records(ident, general(100), 0.0)
    assert sorted(map(json.dumps, only_identity)) == sorted(map(json.dumps, ident))
    assert len(mix_records(ident, general(5), 0.5)) == 45  # too few general records: all of them
    with pytest.raises(InputError):
        mix_records(ident, general(5), 1.0)


def test_make_identity_file_with_mix_file(tmp_path):
    mix = tmp_path / "general.jsonl"
    mix.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"问题{i}"},
                                                      {"role": "assistant", "content": f"回答{i}"}]},
                                        ensure_ascii=False) for i in range(30)) + "\n", encoding="utf-8")
    out = tmp_path / "out" / "identity.jsonl"
    summary = make_identity_file(out, "小薇", mix=mix, mix_ratio=0.25, count=30)
    records = load_jsonl(out)
    assert summary.records == len(records) == 40 and summary.mixed == 10 and summary.identity == 30
    assert summary.zh == 15 and summary.en == 15 and summary.unique_questions == 30
    assert "小薇" in out.read_text(encoding="utf-8")  # ensure_ascii=False


def test_cli_identity(tmp_path, data_cli, capsys):
    out = tmp_path / "identity.jsonl"
    assert data_cli(["data", "identity", "--name", "小薇", "--name-en", "Xiaowei", "--count", "20",
                     "--out", str(out)]) == 0
    assert len(load_jsonl(out)) == 20
    printed = capsys.readouterr().out
    assert "Wrote 20 records" in printed and "zh 10, en 10" in printed


def test_cli_identity_empty_name(tmp_path, data_cli, capsys):
    out = tmp_path / "identity.jsonl"
    assert data_cli(["data", "identity", "--name", "", "--out", str(out)]) != 0
    assert "error:" in capsys.readouterr().err and not out.exists()
