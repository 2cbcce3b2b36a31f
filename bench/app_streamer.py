"""Host time per generated token spent in the chat engine's streamer, on the generating thread.

Every token the model makes passes through RowStreamer.put before the next decoding step starts (put() reads the
token back from the device), so on a GPU with a compiled decoding step this host time adds to every token.
Compared in one process, same tokenizer and tokens, medians of --repeats:
  whole-line   the engine's previous streamer: the open line re-decoded whole at every token (kept here as baseline)
  incremental  app.engine.RowStreamer: only the tokens since the last emitted text plus their context
Answers: one line of N tokens (no newline: the whole-line cost grows with N) and a multi-line answer.
Usage: python bench/app_streamer.py [--model M] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import queue
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.engine import RowStreamer  # noqa: E402

SENTENCE = "I am Xiaowei's assistant, fine-tuned to answer questions about the camp and its tools. "
LINES = "1. Apple, a crisp fruit that keeps for months in a cool cellar.\n"


class WholeLineStreamer(RowStreamer):
    """The engine's streamer before incremental decoding: each row's open line decoded whole at every step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        rows = len(self.tokens)
        self.line_start, self.closed, self.sent = [0] * rows, [""] * rows, [0] * rows

    def _emit(self, row: int, *, final: bool) -> None:
        line = self.tokenizer.decode(self.tokens[row][self.line_start[row]:], skip_special_tokens=True)
        if not final and line.endswith("\ufffd"):
            return
        text = self.closed[row] + line
        if len(text) > self.sent[row]:
            self.queue.put((row + self.row_offset, text[self.sent[row]:]))
            self.sent[row] = len(text)
        if line.endswith("\n"):
            self.closed[row] = text
            self.line_start[row] = len(self.tokens[row])


def per_token_us(streamer_class, tokenizer, ids: list[int]) -> float:
    import torch

    steps = [torch.tensor([[token]]) for token in ids]  # what generate() hands over: one token per step
    streamer = streamer_class(tokenizer, 1, [tokenizer.eos_token_id], out=queue.Queue())
    streamer.put(torch.tensor([[1, 2]]))  # the prompt
    started = time.perf_counter()
    for step in steps:
        streamer.put(step)
    elapsed = time.perf_counter() - started
    streamer.end()
    return elapsed / len(ids) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="tokenizer to use; default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from finetune.embedded import ensure_embedded_model

    tokenizer = AutoTokenizer.from_pretrained(args.model or ensure_embedded_model())
    answers = {}
    for n in (64, 256, 1024):
        ids = tokenizer(SENTENCE * (n // 10 + 1), add_special_tokens=False)["input_ids"][:n]
        answers[f"one line, {n} tokens"] = ids
    answers["16 lines, 256 tokens"] = tokenizer(LINES * 40, add_special_tokens=False)["input_ids"][:256]
    rows = []
    for name, ids in answers.items():
        timings = {"whole-line": [], "incremental": []}
        for _ in range(args.repeats):  # interleaved rounds
            timings["whole-line"].append(per_token_us(WholeLineStreamer, tokenizer, ids))
            timings["incremental"].append(per_token_us(RowStreamer, tokenizer, ids))
        whole, incremental = (statistics.median(timings[k]) for k in ("whole-line", "incremental"))
        rows.append({"answer": name, "whole_line_us": round(whole, 1), "incremental_us": round(incremental, 1),
                     "speedup": round(whole / incremental, 2)})
    print(f"{platform.processor() or platform.machine()}, tokenizer {tokenizer.name_or_path}, "
          f"streamer host time per token, medians of {args.repeats}")
    print("| answer | whole-line µs/token | incremental µs/token | × |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['answer']} | {row['whole_line_us']} | {row['incremental_us']} | {row['speedup']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                               "rows": rows}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
