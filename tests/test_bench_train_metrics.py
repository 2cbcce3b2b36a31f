"""The GPU training benchmark's arithmetic and log parsing (bench/train_metrics.py), on CPU."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import train_metrics as tm  # noqa: E402

QWEN7B = {"hidden_size": 3584, "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
          "num_hidden_layers": 28, "vocab_size": 152064}


def xtuner_line(i, time, loss, memory):
    return (f"11/22 23:10:23 - mmengine - INFO - Iter(train) [{i:>3}/160]  lr: 1.0000e-05  eta: 0:01:10  "
            f"time: {time:.4f}  data_time: 0.0100  memory: {memory}  loss: {loss}")


def test_xtuner_log_gives_median_tokens_per_second_and_peak_memory():
    lines = ["noise", *(xtuner_line(i, 5.0 if i <= 10 else 0.5 + 0.01 * (i % 3), 2.0, 11000 + i)
                        for i in range(1, 41))]
    records = tm.parse_xtuner_log("\n".join(lines))
    assert len(records) == 40 and records[0] == {"iter": 1, "total": 160, "lr": 1e-5, "time": 5.0,
                                                 "data_time": 0.01, "memory": 11001.0, "loss": 2.0}
    # warm-up iterations (5 s each) are left out; median of 0.50/0.51/0.52 s
    assert tm.tokens_per_second(records, 4 * 2048) == pytest.approx(4 * 2048 / 0.51)
    assert tm.peak_memory_gib(records) == pytest.approx(11040 / 1024)
    assert tm.tokens_per_second([], 2048) is None and tm.peak_memory_gib([]) is None


def test_baseline_log_lines():
    text = ("step 1/40 time 1.234s tok/s 1660 loss 12.0312 gnorm 3.100 lr 1.00e-04 peak_alloc 14.95GiB\n"
            "RESULT {}\nstep 2/40 time 0.500s tok/s 4096 loss 11.5 gnorm 2.0 lr 2.00e-04 peak_alloc 14.96GiB")
    records = tm.parse_baseline_log(text)
    assert [r["iter"] for r in records] == [1, 2] and records[1]["time"] == 0.5 and records[0]["loss"] == 12.0312
    assert tm.peak_memory_gib(records) == pytest.approx(14.96)


def test_mfu_conventions_for_the_7b_shape():
    n = tm.matmul_params(QWEN7B)
    assert 7.0e9 < n < 7.7e9  # decoder matmuls + lm_head of Qwen2.5-7B (7.62 B params incl. embeddings)
    result = tm.mfu(4000, QWEN7B, 2048, "NVIDIA H100 80GB HBM3")
    assert result["mfu"] == pytest.approx(4000 * 6 * n / 989e12)
    # performance.md §3: 4,000 TGS is ~12.6 % LoRA-MFU for a 7B model
    assert 0.11 < result["lora_mfu"] < 0.14
    assert tm.peak_flops("NVIDIA H100 PCIe") == 756e12 and tm.mfu(4000, QWEN7B, 2048, "a CPU")["mfu"] is None


def test_loss_curves_compare_per_optimizer_step():
    stock = [4.0, 2.0, 3.0, 1.0, 2.0, 2.0, 2.0, 2.0]  # micro-batch 1, 4 samples per step
    fast = [3.0, 2.0, 2.0, 2.0]  # micro-batch 2
    ours, theirs = tm.per_step_losses(fast, 2, 4), tm.per_step_losses(stock, 1, 4)
    assert ours == theirs == [2.5, 2.0]
    assert tm.curve_gap(ours, theirs) == {"steps": 2, "mean_rel": 0.0, "max_rel": 0.0}
    assert tm.curve_gap([2.2], [2.0])["max_rel"] == pytest.approx(0.1)


def test_markdown_table_ratios():
    rows = [{"variant": "baseline", "tokens_per_s": 4000.0, "peak_gib": 14.9, "mfu": None, "lora_mfu": None},
            {"variant": "fast", "micro_batch": 4, "accum": 4, "tokens_per_s": 6000.0, "peak_gib": 11.9,
             "mfu": 0.27, "lora_mfu": 0.19}]
    table = tm.markdown_table(rows)
    assert "| fast | 4 × 4 | 6,000 | 1.50 | 11.90 | 27.0% | 19.0% |" in table
    assert "| baseline | 1 × – | 4,000 | 1.00 | 14.90 | – | – |" in table
