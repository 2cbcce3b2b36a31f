"""The embedded model answered three ways, same prompt, same machine, interleaved rounds, medians:

  transformers   the app's in-process engine (ChatEngine.stream: fp32 HF model, worker thread + streamer)
  llama.cpp raw  llama.cpp's server (llama-cpp-python[server], the Q4_1 GGUF) read with plain httpx streaming
  llama.cpp app  the same server through the app's --backend openai engine (OpenAIEngine.stream)

TTFT = request to the first streamed text; decode tokens/s = (tokens - 1) / (last text - first text), tokens
counted by re-tokenizing the answer with the model's tokenizer (the GGUF has the same vocabulary). Greedy. The
fp32 and Q4_1 weights give different answers, so lengths differ; "app vs raw" compares the same server and text.
Usage: python bench/openai_backend.py [--max-new-tokens 128] [--repeats 5] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def timed(pieces) -> tuple[float | None, float | None, float, str]:
    """(first text at, last text at, end, text) in seconds from the call, for an iterator of text pieces."""
    started = time.perf_counter()
    first = last = None
    text = []
    for piece in pieces:
        now = time.perf_counter() - started
        if piece:
            first = now if first is None else first
            last = now
            text.append(piece)
    return first, last, time.perf_counter() - started, "".join(text)


def raw_pieces(http: httpx.Client, url: str, messages, body_settings):
    """llama.cpp's stream read directly (a kept-alive connection, as the app's): no app code at all."""
    body = {"model": "smollm2", "messages": messages, "stream": True, **body_settings}
    with http.stream("POST", f"{url}/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            for choice in json.loads(data).get("choices") or []:
                yield (choice.get("delta") or {}).get("content") or ""


def main(argv=None) -> int:
    from app.engine import ChatEngine, GenerationSettings
    from app.models import ModelRequest, load
    from app.openai_backend import OpenAIEngine, sampling
    from tests.llama_server import llama_server

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (torch uses its default)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    loaded = load(ModelRequest(compare=False), notice=lambda m: print(m, file=sys.stderr))
    local = ChatEngine(loaded.model, loaded.tokenizer, info=loaded.info)
    tokenizer = loaded.tokenizer
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=0, repetition_penalty=1.1)
    rows: dict[str, list[tuple[float, float, float, int]]] = {"transformers": [], "llama.cpp raw": [],
                                                              "llama.cpp app": []}
    texts: dict[str, list[str]] = {name: [] for name in rows}
    with tempfile.TemporaryDirectory() as work, llama_server(Path(work), two_models=False,
                                                             threads=args.threads) as server:
        remote = OpenAIEngine.connect(server.url)
        http = httpx.Client()
        messages = remote.prepare([], PROMPT, max_new_tokens=args.max_new_tokens).messages
        runs = {
            "transformers": lambda s: local.stream([], PROMPT, s),
            "llama.cpp raw": lambda s: raw_pieces(http, server.url, messages, sampling(s)),
            "llama.cpp app": lambda s: remote.stream([], PROMPT, s),
        }
        warm = GenerationSettings(max_new_tokens=8, temperature=0)
        for run in runs.values():
            timed(run(warm))
        for _ in range(args.repeats):
            for name, run in runs.items():
                first, last, end, text = timed(run(settings))
                tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
                decode = (tokens - 1) / (last - first) if tokens > 1 and last > first else float("nan")
                rows[name].append((first, decode, tokens / end, tokens))
                texts[name].append(text)
                print(f"{name}: TTFT {first * 1000:.0f} ms, decode {decode:.2f} tokens/s, {tokens} tokens",
                      file=sys.stderr, flush=True)
        server_version = _version("llama_cpp_python")

    result = {
        "machine": f"{platform.machine()} {_cpu_count()} cores", "torch_threads": torch.get_num_threads(),
        "llama_cpp_threads": args.threads, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
        "versions": {"torch": torch.__version__, "transformers": _version("transformers"),
                     "llama-cpp-python": server_version, "httpx": _version("httpx")},
    }
    for name, values in rows.items():
        result[name] = {
            "ttft_ms": round(statistics.median(v[0] for v in values) * 1000, 1),
            "decode_tokens_per_s": round(statistics.median(v[1] for v in values), 2),
            "end_to_end_tokens_per_s": round(statistics.median(v[2] for v in values), 2),
            "tokens": statistics.median(v[3] for v in values),
        }
    raw, app = result["llama.cpp raw"], result["llama.cpp app"]
    result["app_vs_raw_decode"] = round(app["decode_tokens_per_s"] / raw["decode_tokens_per_s"], 3)
    result["app_added_ttft_ms"] = round(app["ttft_ms"] - raw["ttft_ms"], 1)
    result["llama_cpp_app_vs_transformers_decode"] = round(
        app["decode_tokens_per_s"] / result["transformers"]["decode_tokens_per_s"], 2)
    same = sum(a == b for a, b in zip(texts["llama.cpp app"], texts["llama.cpp raw"], strict=True))
    result["app_and_raw_same_text"] = f"{same}/{args.repeats}"
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
