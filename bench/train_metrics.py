"""Training benchmark arithmetic, kept apart from the GPU runs so that it is tested on CPU.

Conventions (stated in every report):
- tokens/s: trained tokens per second, padding included (micro-batch x sequence length per iteration), from the
  median iteration time after the first WARMUP_ITERS iterations.
- MFU: model FLOPs per token = 6 N (N = decoder matmul weights + lm_head, frozen ones counted as if trained; no
  attention term), times tokens/s, over the GPU's dense bf16 peak. LoRA-MFU counts what a LoRA step does:
  4 N + causal attention 6 L h T (forward 2 N, activation gradients 2 N, no weight gradients for frozen weights).
- peak memory: the largest `torch.cuda.max_memory_allocated()` any iteration reported, GiB.
"""

from __future__ import annotations

import re
import statistics

WARMUP_ITERS = 10
PEAK_BF16_FLOPS = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L40S", 362e12),
                   ("RTX 4090", 165e12)]
ITER_LINE = re.compile(r"Iter\(train\)\s*\[\s*(\d+)\s*/\s*(\d+)\s*\](.*)")
METRIC = re.compile(r"([A-Za-z_]\w*):\s*([-+0-9.eE:]+)")
BASELINE_STEP = re.compile(r"^step (\d+)/\d+ time ([0-9.]+)s .* loss ([-0-9.naif]+) .* peak_alloc ([0-9.]+)GiB")


def parse_xtuner_log(text: str) -> list[dict]:
    """One record per `Iter(train) [i/n]` line of an mmengine log: iter, time (s), loss, memory (MB)."""
    records = []
    for line in text.splitlines():
        match = ITER_LINE.search(line)
        if not match:
            continue
        record: dict = {"iter": int(match.group(1)), "total": int(match.group(2))}
        for key, value in METRIC.findall(match.group(3)):
            if key != "eta":
                record[key] = float(value)
        records.append(record)
    return records


def parse_baseline_log(text: str) -> list[dict]:
    """The same records from hf_qlora_baseline.py's `step i/n time ...` lines (memory in MB, as mmengine)."""
    records = []
    for line in text.splitlines():
        match = BASELINE_STEP.match(line.strip())
        if match:
            records.append({"iter": int(match.group(1)), "time": float(match.group(2)), "loss": float(match.group(3)),
                            "memory": float(match.group(4)) * 1024})
    return records


def tokens_per_second(records: list[dict], tokens_per_iter: int, warmup: int = WARMUP_ITERS) -> float | None:
    times = [r["time"] for r in records[warmup:] if "time" in r]
    return tokens_per_iter / statistics.median(times) if times else None


def peak_memory_gib(records: list[dict]) -> float | None:
    memory = [r["memory"] for r in records if "memory" in r]
    return max(memory) / 1024 if memory else None


def peak_flops(gpu_name: str) -> float | None:
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in gpu_name.lower():
            return flops
    return None


def matmul_params(config: dict) -> int:
    """N of the MFU convention from a Hugging Face config.json: decoder linear weights plus the lm_head."""
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    kv_dim = config.get("num_key_value_heads", heads) * (hidden // heads)
    layer = 2 * hidden * hidden + 2 * hidden * kv_dim + 3 * hidden * config["intermediate_size"]
    return config["num_hidden_layers"] * layer + config["vocab_size"] * hidden


def mfu(tokens_per_s: float | None, config: dict, seq_len: int, gpu_name: str) -> dict:
    peak = peak_flops(gpu_name)
    if not tokens_per_s or not peak:
        return {"mfu": None, "lora_mfu": None}
    n = matmul_params(config)
    attention = 6 * config["num_hidden_layers"] * config["hidden_size"] * seq_len
    return {"mfu": tokens_per_s * 6 * n / peak, "lora_mfu": tokens_per_s * (4 * n + attention) / peak}


def per_step_losses(losses: list[float], micro_batch: int, samples_per_step: int) -> list[float]:
    """Mean logged loss of each optimizer step (each logged loss is one micro-batch's token mean)."""
    per_step = samples_per_step // micro_batch
    return [sum(losses[i:i + per_step]) / per_step for i in range(0, len(losses) - per_step + 1, per_step)]


def curve_gap(ours: list[float], theirs: list[float]) -> dict:
    """How far two per-step loss curves are apart: mean and largest relative difference over common steps."""
    pairs = [(a, b) for a, b in zip(ours, theirs, strict=False) if b]
    if not pairs:
        return {"steps": 0, "mean_rel": None, "max_rel": None}
    gaps = [abs(a - b) / abs(b) for a, b in pairs]
    return {"steps": len(pairs), "mean_rel": sum(gaps) / len(gaps), "max_rel": max(gaps)}


def markdown_table(rows: list[dict], baseline: str = "baseline") -> str:
    """rows: variant, micro_batch, accum, tokens_per_s, peak_gib, mfu, lora_mfu; ratio against `baseline`."""
    base = next((r["tokens_per_s"] for r in rows if r["variant"] == baseline), None)
    lines = ["| variant | micro × accum | tokens/s | × baseline | peak GiB | MFU (6N) | LoRA-MFU |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['tokens_per_s'] / base:.2f}" if base and r.get("tokens_per_s") else "–"
        lines.append(f"| {r['variant']} | {r.get('micro_batch', 1)} × {r.get('accum', '–')} | "
                     f"{_num(r.get('tokens_per_s'), '{:,.0f}')} | {ratio} | {_num(r.get('peak_gib'), '{:.2f}')} | "
                     f"{_num(r.get('mfu'), '{:.1%}')} | {_num(r.get('lora_mfu'), '{:.1%}')} |")
    return "\n".join(lines)


def _num(value, form: str) -> str:
    return form.format(value) if value is not None else "–"
