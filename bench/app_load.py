"""Concurrent load on the chat page: N real gradio_client clients, each its own browser-like session with its own
history, hold a conversation of --turns questions at the same time (all start together).

Reports answers, errors (an exception or an empty answer), history mix-ups (a client's page history holding anything
but its own turns, checked on every answer the page returns), time to first streamed text and whole-answer latency
(p50/p95/max over all answers) and aggregate generated tokens/s. Run on CPU with the embedded model, on a GPU with
a 7B.
Usage: python bench/app_load.py [--model M] [--bits 4] [--clients 16] [--turns 2] [--concurrency 4]
       [--max-new-tokens 48] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ["apple", "river", "violin", "comet", "maple", "harbor", "tiger", "lantern", "pepper", "glacier", "meadow",
         "rocket", "saddle", "thunder", "velvet", "walnut"]
FOLLOW_UPS = ["What was the word I asked you to remember?", "Use that word in one short sentence.",
              "Give me one more word that rhymes with it."]


def conversation(index: int, turns: int) -> list[str]:
    word = f"{WORDS[index % len(WORDS)]}-{index}"  # unique per client: a mix-up shows as another client's word
    return [f"Please remember the word {word}. Reply with OK.", *FOLLOW_UPS[: turns - 1]]


def one_client(url: str, index: int, turns: int, max_new_tokens: int, out: list, barrier: threading.Barrier) -> None:
    from app_stream import ask_page
    from gradio_client import Client

    client = Client(url, verbose=False)  # its own session, so its own history state on the page
    questions = conversation(index, turns)
    barrier.wait()
    for turn, question in enumerate(questions):
        record = {"client": index, "turn": turn, "question": question}
        try:
            first, elapsed, text, shown = ask_page(client, question, max_new_tokens, with_history=True)
            users = [m["content"] for m in shown if m.get("role") == "user"]
            record.update(ttft=first if first is not None else elapsed, latency=elapsed, text=text,
                          own_history=users == questions[: turn + 1], error=None if text.strip() else "empty answer")
        except Exception as exc:  # the figure to report: how many answers failed, and why
            record.update(error=f"{type(exc).__name__}: {exc}"[:200], own_history=None)
        out.append(record)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(argv=None) -> int:
    from app.main import build_parser, start

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--bits", type=int, default=None)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--turns", type=int, default=2, choices=range(1, len(FOLLOW_UPS) + 2))
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--json", default=None, help="also write the report and every answer here")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]  # other work on the machine skews every figure: recorded with them

    page = [*([args.model] if args.model else []), "--port", "0", "--no-compare", "--concurrency",
            str(args.concurrency), "--queue-size", str(max(32, args.clients))]
    if args.bits:
        page += ["--bits", str(args.bits)]
    server = start(build_parser().parse_args(page), block=False, log=lambda _: None)
    tokenizer = server.engine.tokenizer
    results: list[dict] = []
    barrier = threading.Barrier(args.clients)
    threads = [threading.Thread(target=one_client, args=(server.url, i, args.turns, args.max_new_tokens, results,
                                                         barrier))
               for i in range(args.clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    server.close()
    answered = [r for r in results if r["error"] is None]
    tokens = sum(len(tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in answered)
    ttfts = [r["ttft"] for r in answered] or [float("nan")]
    latencies = [r["latency"] for r in answered] or [float("nan")]
    report = {
        "model": server.engine.info.get("Model"), "device": server.engine.info.get("Device"),
        "dtype": server.engine.info.get("dtype"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "clients": args.clients, "turns": args.turns, "concurrency": args.concurrency,
        "max_new_tokens": args.max_new_tokens, "asked": args.clients * args.turns, "answers": len(answered),
        "errors": len(results) - len(answered), "history_mixups": sum(r["own_history"] is False for r in results),
        "ttft_p50_s": round(statistics.median(ttfts), 3), "ttft_p95_s": round(percentile(ttfts, 0.95), 3),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p95_s": round(percentile(latencies, 0.95), 3), "latency_max_s": round(max(latencies), 3),
        "aggregate_tokens_per_s": round(tokens / wall, 2), "wall_s": round(wall, 2),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "error_examples": sorted({r["error"] for r in results if r["error"]})[:5],
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if args.json:
        Path(args.json).write_text(json.dumps({"report": report, "answers": sorted(
            results, key=lambda r: (r["client"], r["turn"]))}, indent=2, ensure_ascii=False))
    return 0 if report["errors"] == 0 and report["history_mixups"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
