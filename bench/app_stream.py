"""Streaming overhead of the chat app against plain `model.generate`, same model and prompt, same process.

For each of --repeats rounds (interleaved, medians reported):
  raw      model.generate(prompt ids, greedy) -> tokens/s; TTFT = model.generate(max_new_tokens=1)
  engine   ChatEngine.stream_ids (worker thread + streamer + queue), the path every page and terminal answer uses
  page     the launched Gradio page through gradio_client (HTTP + server-sent events), time to first partial answer

Greedy decoding, so raw and engine produce the same tokens; tokens/s counts new tokens only.
Usage: python bench/app_stream.py [--model M] [--max-new-tokens 128] [--repeats 5] [--no-page] [--bits 4]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def raw_round(engine, ids, max_new_tokens):
    import torch

    from app.engine import pad_token_id

    model, tokenizer = engine.model, engine.tokenizer
    tensor = torch.tensor([ids], device=next(model.parameters()).device)
    common = {"attention_mask": torch.ones_like(tensor), "do_sample": False, "repetition_penalty": 1.1,
              "eos_token_id": engine._stop_ids, "pad_token_id": pad_token_id(model, tokenizer)}
    with torch.inference_mode():
        started = time.perf_counter()
        model.generate(tensor, max_new_tokens=1, **common)
        ttft = time.perf_counter() - started
        started = time.perf_counter()
        out = model.generate(tensor, max_new_tokens=max_new_tokens, **common)
        elapsed = time.perf_counter() - started
    new = out[0, len(ids):]
    text = tokenizer.decode(new, skip_special_tokens=True)
    return ttft, len(new) / elapsed, text, len(new)


def engine_round(engine, ids, settings, tokens):
    """`tokens`: how many the plain generate made for the same greedy answer (the texts are checked equal)."""
    started = time.perf_counter()
    first = None
    pieces = []
    for piece in engine.stream_ids(ids, settings):
        if first is None:
            first = time.perf_counter() - started
        pieces.append(piece)
    elapsed = time.perf_counter() - started
    return first, tokens / elapsed, "".join(pieces)


def text_of(content) -> str:
    """A chatbot message's text: Gradio 6 sends content as a list of typed parts."""
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def ask_page(client, question, max_new_tokens, with_history=False):
    """(seconds to the first streamed text or None, seconds to the whole answer, answer) through the page's API;
    with_history: also the conversation the page shows after the answer (its chatbot messages)."""
    started = time.perf_counter()
    job = client.submit(question, max_new_tokens=max_new_tokens, temperature=0, api_name="/chat")
    first = None
    while not job.done():
        if first is None and any(len(out[0]) == 2 for out in job.outputs()):
            first = time.perf_counter() - started
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    shown = [{**m, "content": text_of(m["content"])} for m in job.result()[0]]
    text = shown[-1]["content"]
    return (first, elapsed, text, shown) if with_history else (first, elapsed, text)


def main(argv=None) -> int:
    from app.engine import ChatEngine, GenerationSettings
    from app.main import build_parser as app_parser
    from app.main import start
    from app.models import ModelRequest, load

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--bits", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-page", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    loaded = load(ModelRequest(model=args.model, bits=args.bits, compare=False), notice=lambda m: print(m))
    engine = ChatEngine(loaded.model, loaded.tokenizer, info=loaded.info)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=0, repetition_penalty=1.1)
    ids = engine.prepare([], PROMPT, max_new_tokens=args.max_new_tokens).input_ids
    server = client = None
    if not args.no_page:
        from gradio_client import Client

        page_args = app_parser().parse_args([*([args.model] if args.model else []), "--port", "0", "--no-compare"])
        server = start(page_args, block=False, log=lambda _: None)
        client = Client(server.url, verbose=False)

    # warm-up (first-call allocations, lazy imports)
    raw_round(engine, ids, 8)
    list(engine.stream_ids(ids, GenerationSettings(max_new_tokens=8, temperature=0)))
    rows = {"raw": [], "engine": [], "page": []}
    same = {"engine": 0, "page": 0}  # answers identical to plain generate (greedy; fp reductions may differ)
    for _ in range(args.repeats):
        ttft, tps, raw_text, tokens = raw_round(engine, ids, args.max_new_tokens)
        rows["raw"].append((ttft, tps))
        ttft, tps, text = engine_round(engine, ids, settings, tokens)
        rows["engine"].append((ttft, tps))
        same["engine"] += text == raw_text
        if client is not None:
            first, elapsed, page_text = ask_page(client, PROMPT, args.max_new_tokens)
            tps = tokens / elapsed
            same["page"] += page_text == raw_text.strip()
            rows["page"].append((first, tps))
    if server is not None:
        server.close()

    def med(name, index):
        values = [r[index] for r in rows[name] if r[index] is not None]
        return statistics.median(values) if values else None

    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''} {_cpu_count()} cores".strip(),
        "device": engine.info.get("Device"), "dtype": engine.info.get("dtype"),
        "model": engine.info.get("Model"), "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
    }
    for name in rows:
        if rows[name]:
            result[f"{name}_ttft_ms"] = round(med(name, 0) * 1000, 1)
            result[f"{name}_tokens_per_s"] = round(med(name, 1), 2)
    result["identical_answers"] = {name: f"{count}/{args.repeats}" for name, count in same.items() if rows[name]}
    result["engine_vs_raw_tokens_per_s"] = round(result["engine_tokens_per_s"] / result["raw_tokens_per_s"], 3)
    result["engine_added_ttft_ms"] = round(result["engine_ttft_ms"] - result["raw_ttft_ms"], 1)
    if rows["page"]:
        result["page_vs_raw_tokens_per_s"] = round(result["page_tokens_per_s"] / result["raw_tokens_per_s"], 3)
        result["page_added_ttft_ms"] = round(result["page_ttft_ms"] - result["raw_ttft_ms"], 1)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
