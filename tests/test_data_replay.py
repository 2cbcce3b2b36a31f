from __future__ import annotations

import pytest

from finetune import cli
from finetune.data import replay
from finetune.data.formats import load_jsonl, validate_record
from finetune.data.heldout import (
    HELDOUT_GENERAL_EN,
    HELDOUT_GENERAL_ZH,
    HELDOUT_IDENTITY_EN,
    HELDOUT_IDENTITY_ZH,
)
from finetune.data.identity import DEFAULT_SYSTEM, TRAIN_QUESTIONS_EN, TRAIN_QUESTIONS_ZH
from finetune.data.replay import (
    GENERAL_PROMPTS_EN,
    GENERAL_PROMPTS_ZH,
    ensure_replay,
    key_path,
    prompts_for,
    resolve_model_dir,
    trim_to_sentence,
)
from finetune.errors import InputError, ModelNotFound


def normalized(questions):
    return {q.strip().lower().rstrip("?？.。!！") for q in questions}


def test_prompt_lists():
    assert len(GENERAL_PROMPTS_ZH) >= 40 and len(set(GENERAL_PROMPTS_ZH)) == len(GENERAL_PROMPTS_ZH)
    assert len(GENERAL_PROMPTS_EN) >= 40 and len(set(GENERAL_PROMPTS_EN)) == len(GENERAL_PROMPTS_EN)
    assert prompts_for("both", 4) == [GENERAL_PROMPTS_ZH[0], GENERAL_PROMPTS_EN[0], GENERAL_PROMPTS_ZH[1],
                                      GENERAL_PROMPTS_EN[1]]
    assert prompts_for("en") == GENERAL_PROMPTS_EN
    with pytest.raises(InputError):
        prompts_for("fr")


def test_heldout_questions_never_in_training_lists():
    for heldout in (HELDOUT_IDENTITY_ZH, HELDOUT_IDENTITY_EN, HELDOUT_GENERAL_ZH, HELDOUT_GENERAL_EN):
        assert len(heldout) >= 15 and len(set(heldout)) == len(heldout)
    training = normalized(TRAIN_QUESTIONS_ZH + TRAIN_QUESTIONS_EN + GENERAL_PROMPTS_ZH + GENERAL_PROMPTS_EN)
    heldout = HELDOUT_IDENTITY_ZH + HELDOUT_IDENTITY_EN + HELDOUT_GENERAL_ZH + HELDOUT_GENERAL_EN
    assert normalized(heldout).isdisjoint(training)


def test_trim_to_sentence():
    assert trim_to_sentence("Paris is the capital. It has the Eiffel") == "Paris is the capital."
    assert trim_to_sentence("巴黎是法国的首都。它有埃菲尔") == "巴黎是法国的首都。"
    assert trim_to_sentence("Hi. A very long unfinished sentence without an end") == \
        "Hi. A very long unfinished sentence without an end"  # cutting would drop most of it
    assert trim_to_sentence("e.g. 3.5 kg of") == "e.g. 3.5 kg of"


def test_resolve_model_dir(embedded_model, tmp_path, monkeypatch):
    cache = tmp_path / "cache"  # an empty download cache that holds only the embedded model
    (cache / "models").mkdir(parents=True)
    (cache / "models" / embedded_model.name).symlink_to(embedded_model)
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(cache))
    assert resolve_model_dir(None).resolve() == embedded_model.resolve()
    assert resolve_model_dir("SmolLM2-135M-Instruct").resolve() == embedded_model.resolve()
    assert resolve_model_dir(embedded_model).resolve() == embedded_model.resolve()
    for missing in (tmp_path / "nothing", "qwen2.5-7b-instruct"):
        with pytest.raises(ModelNotFound) as info:
            resolve_model_dir(missing)
        assert info.value.fix


def test_replay_generates_and_caches(embedded_model, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "replay.jsonl"
    records = ensure_replay(embedded_model, cache, count=4, max_new_tokens=16, batch_size=4)
    assert 1 <= len(records) <= 4
    assert all(validate_record(r) == [] for r in records)
    turns = [r["conversation"][0] for r in records]
    assert all(t["output"].strip() and t["system"] == DEFAULT_SYSTEM for t in turns)
    assert {t["input"] for t in turns} <= set(prompts_for("both", 4))
    assert load_jsonl(cache) == records and key_path(cache).is_file()

    calls = []

    def fake_generate(model_dir, **settings):
        calls.append(settings)
        return [{"conversation": [{"input": "q", "output": "a"}]}]

    monkeypatch.setattr(replay, "generate_replay", fake_generate)
    mtime = cache.stat().st_mtime_ns
    assert ensure_replay(embedded_model, cache, count=4, max_new_tokens=16) == records
    assert calls == [] and cache.stat().st_mtime_ns == mtime

    # The CLI with the same settings reuses the cache too.
    monkeypatch.setattr(cli, "VERB_MODULES", ["data"])
    assert cli.main(["data", "replay", "--count", "4", "--max-new-tokens", "16", "--out", str(cache)]) == 0
    assert calls == [] and "cached" in capsys.readouterr().out

    # Different settings -> regenerated.
    assert ensure_replay(embedded_model, cache, count=4, max_new_tokens=8) == fake_generate(None)
    assert len(calls) == 2 and load_jsonl(cache) == fake_generate(None)


def test_cli_replay_bad_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "VERB_MODULES", ["data"])
    assert cli.main(["data", "replay", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "r.jsonl")]) != 0
    assert "Cannot find model" in capsys.readouterr().err
