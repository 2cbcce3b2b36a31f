"""Concurrent load on the chat page: N gradio_client clients (own sessions) each ask one question at the same time.

Reports time to first streamed text (p50/p95), whole-answer latency, aggregate generated tokens/s across clients,
and how many were queued behind the concurrency limit. Run on CPU with a few clients, on a GPU with 16.
Usage: python bench/app_load.py [--model M] [--bits 4] [--clients 16] [--concurrency 4] [--max-new-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUESTIONS = ["Who are you?", "What is the capital of France?", "Give me three tips for sleeping better.",
             "Explain what a neural network is in two sentences."]


def one_client(url: str, question: str, max_new_tokens: int, out: list, barrier: threading.Barrier) -> None:
    from app_stream import ask_page
    from gradio_client import Client

    client = Client(url, verbose=False)
    barrier.wait()
    first, elapsed, text = ask_page(client, question, max_new_tokens)
    out.append({"ttft": first if first is not None else elapsed, "latency": elapsed, "text": text})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(argv=None) -> int:
    from app.main import build_parser, start

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--bits", type=int, default=None)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)

    page = [*([args.model] if args.model else []), "--port", "0", "--no-compare", "--concurrency",
            str(args.concurrency), "--queue-size", str(max(32, args.clients))]
    if args.bits:
        page += ["--bits", str(args.bits)]
    server = start(build_parser().parse_args(page), block=False, log=lambda _: None)
    tokenizer = server.engine.tokenizer
    results: list[dict] = []
    barrier = threading.Barrier(args.clients)
    threads = [threading.Thread(target=one_client, args=(server.url, QUESTIONS[i % len(QUESTIONS)],
                                                         args.max_new_tokens, results, barrier))
               for i in range(args.clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    server.close()
    tokens = sum(len(tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in results)
    ttfts = [r["ttft"] for r in results]
    latencies = [r["latency"] for r in results]
    report = {
        "model": server.engine.info.get("Model"), "device": server.engine.info.get("Device"),
        "dtype": server.engine.info.get("dtype"), "clients": args.clients, "concurrency": args.concurrency,
        "max_new_tokens": args.max_new_tokens, "answers": len(results),
        "ttft_p50_s": round(statistics.median(ttfts), 3), "ttft_p95_s": round(percentile(ttfts, 0.95), 3),
        "latency_p50_s": round(statistics.median(latencies), 3), "latency_max_s": round(max(latencies), 3),
        "aggregate_tokens_per_s": round(tokens / wall, 2), "wall_s": round(wall, 2),
    }
    print(json.dumps(report, indent=2))
    return 0 if len(results) == args.clients else 1


if __name__ == "__main__":
    sys.exit(main())
