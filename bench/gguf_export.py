"""GGUF export on this machine: how long each quantization takes, how big it is, and how fast llama.cpp answers with
the exported Q4_K_M next to the merged model in transformers (the baseline, same process, same prompt, greedy).

    python bench/gguf_export.py runs/xiaowei [--repeats 3] [--tokens 64]

Prints a JSON line and a Markdown table for docs/benchmarks.md. Decoding speed counts `--tokens` new tokens after
one prompt (its prefill timed apart); both engines get every CPU thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUANTS = ["q4_k_m", "q5_k_m", "q8_0", "f16"]
PROMPT = [{"role": "user", "content": "Tell me a long story about a dragon who learns to cook."}]


def export_times(run: Path, repeats: int) -> tuple[dict[str, float], dict[str, int]]:
    from finetune.export import export

    seconds: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            result = export(run, QUANTS, out=Path(out) / "gguf", progress=lambda _: None)
            for quant, value in result.seconds.items():
                seconds.setdefault(quant, []).append(value)
            sizes = {q: p.stat().st_size for q, p in result.files.items()}
    return {q: statistics.median(v) for q, v in seconds.items()}, sizes


def llama_cpp_speed(gguf: Path, tokens: int, repeats: int) -> tuple[float, float]:
    """(prefill seconds, decode tokens/s), medians; llama.cpp's own chat template renders the prompt."""
    from llama_cpp import Llama

    threads = os.cpu_count() or 1
    model = Llama(str(gguf), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def token_text(token: int) -> str:
        return model.detokenize([token], special=True).decode()

    formatter = Jinja2ChatFormatter(template=model.metadata["tokenizer.chat_template"],
                                    eos_token=token_text(model.token_eos()), bos_token=token_text(model.token_bos()))
    text = formatter(messages=PROMPT).prompt
    ids = model.tokenize(text.encode(), add_bos=False, special=True)
    prefills, speeds = [], []
    for _ in range(repeats):
        model.reset()
        started = time.perf_counter()
        first = None
        for count, _token in enumerate(model.generate(ids, temp=0, reset=True), start=1):
            if first is None:
                first = time.perf_counter()
            if count == tokens:
                break
        done = time.perf_counter()
        prefills.append(first - started)
        speeds.append((tokens - 1) / (done - first))
    return statistics.median(prefills), statistics.median(speeds)


def transformers_speed(merged: Path, tokens: int, repeats: int) -> tuple[float, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt")
    prefills, speeds = [], []
    with torch.inference_mode():
        for _ in range(repeats):
            started = time.perf_counter()
            model(ids)
            prefill = time.perf_counter() - started
            started = time.perf_counter()
            model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
            total = time.perf_counter() - started
            prefills.append(prefill)
            speeds.append((tokens - 1) / max(total - prefill, 1e-9))
    return statistics.median(prefills), statistics.median(speeds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="run directory with merged/")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]  # another busy process on the machine skews every figure: recorded with them
    seconds, sizes = export_times(args.run, args.repeats)
    with tempfile.TemporaryDirectory() as out:
        from finetune.export import export

        q4 = export(args.run, ["q4_k_m"], out=Path(out), progress=lambda _: None).files["q4_k_m"]
        gguf_prefill, gguf_speed = llama_cpp_speed(q4, args.tokens, args.repeats)
    hf_prefill, hf_speed = transformers_speed(args.run / "merged", args.tokens, args.repeats)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "export_seconds": seconds, "sizes": sizes, "tokens": args.tokens, "repeats": args.repeats,
              "llama_cpp_q4_k_m": {"prefill_s": gguf_prefill, "tok_s": gguf_speed},
              "transformers_fp32": {"prefill_s": hf_prefill, "tok_s": hf_speed},
              "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    print(json.dumps(result))
    print("\n| step | median s | size |\n|---|---:|---:|")
    for quant in QUANTS:
        label = "convert → F16" if quant == "f16" else f"quantize F16 → {quant.upper()}"
        print(f"| {label} | {seconds[quant]:.1f} | {sizes[quant] / 1e6:.0f} MB |")
    print("\n| engine | prefill s | decode tok/s | × |\n|---|---:|---:|---:|")
    print(f"| transformers, merged fp32 (baseline) | {hf_prefill:.3f} | {hf_speed:.1f} | 1.00 |")
    print(f"| llama.cpp, Q4_K_M | {gguf_prefill:.3f} | {gguf_speed:.1f} | {gguf_speed / hf_speed:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
