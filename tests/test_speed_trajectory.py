"""A different micro-batch x accumulation split trains the same trajectory (real XTuner runs on CPU).

XTuner's loss is the LLM's mean over the micro-batch's label tokens and mmengine divides it by the accumulation
count, so with samples of equal token counts micro-batch 2 x accumulation 2 and 1 x 4 give the same gradient per
optimizer step. mmengine steps the learning rate every micro-step, so the two splits read the schedule one stock
micro-step apart at each optimizer step: negligible over a real run, but not over this 4-step one, so the test
keeps the rate flat after warm-up to compare the splits alone."""

import json

import pytest

from finetune.config import ConfigSpec, write_config
from finetune.train import train

pytestmark = pytest.mark.slow


def equal_length_records(count=16):
    # every record tokenizes to the same length (checked below), so no micro-batch has padding
    return [{"conversation": [{"system": "S", "input": f"Question {i}: what is {i} plus one?",
                               "output": f"The answer is {i + 1}."}]} for i in range(100, 100 + count)]


def run(tmp_path, embedded_model, data, micro_batch):
    spec = ConfigSpec(model_path=str(embedded_model), data_files=[str(data)], device="cpu", quant="none", pack=False,
                      max_length=64, batch_size=1, grad_accum=4, micro_batch=micro_batch, epochs=1, lr=1e-3,
                      lora_r=8, lora_alpha=16, lora_dropout=0.0, warmup_ratio=0.25, evaluation_freq=0,
                      eval_max_new_tokens=1, save_steps=1000, save_total_limit=1)
    config, _ = write_config(spec, tmp_path / f"micro{micro_batch}.py")
    text = config.read_text()
    edits = {"log_processor = dict(by_epoch=False)": "log_processor = dict(by_epoch=False, window_size=1)",
             "eta_min=0.0,": "eta_min=lr,"}  # each iteration's own loss (not a 10-iteration mean); flat rate
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    config.write_text(text)
    return train(config, tmp_path / f"wd{micro_batch}").history


def test_micro_batch_two_follows_the_stock_loss_curve(tmp_path, embedded_model, tokenizer):
    records = equal_length_records()
    assert len({len(tokenizer(r["conversation"][0]["input"]).input_ids) for r in records}) == 1
    data = tmp_path / "equal.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    stock = run(tmp_path, embedded_model, data, "off")
    fast = run(tmp_path, embedded_model, data, "2")
    assert len(stock) == 16 and len(fast) == 8
    # both splits update at the full rate from their first optimizer step on
    assert stock[3]["lr"] == fast[1]["lr"] == pytest.approx(1e-3)
    per_step_stock = [sum(h["loss"] for h in stock[i:i + 4]) / 4 for i in range(0, 16, 4)]
    per_step_fast = [sum(h["loss"] for h in fast[i:i + 2]) / 2 for i in range(0, 8, 2)]
    assert per_step_stock[-1] < 0.5 * per_step_stock[0]  # it learned
    assert per_step_fast == pytest.approx(per_step_stock, rel=5e-3)
