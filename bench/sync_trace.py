"""Where does a training loop stall the host? `SyncTraceHook`, added to a bench config (the `NAME+syncs` variants of
bench/gpu_train.py), turns on torch's CUDA sync debug mode for the training iterations: every synchronizing call
(a device-to-host copy, `.item()`, a stream sync) warns, the Python stacks that caused them are counted, and the
most frequent are printed when training ends. One per LoRA layer per iteration shows as ~393 x iterations.
"""

from __future__ import annotations

import collections
import re
import traceback
import warnings

import torch
from mmengine.hooks import Hook

SYNC_MESSAGE = "called a synchronizing CUDA operation"
STACK_DEPTH = 18
REPORT_HEADER = re.compile(r"\[syncs\] (\d+) synchronizing CUDA calls from (\d+) distinct stacks")
STACK_HEADER = re.compile(r"\[syncs\] (\d+) x, innermost last:")
FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


class SyncTraceHook(Hook):
    """Counts synchronizing CUDA calls from the first training iteration to the end of training."""

    priority = "VERY_LOW"

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()  # calling stack -> synchronizing calls
        self.show_other_warnings = warnings.showwarning

    def record(self, message, category, filename, lineno, file=None, line=None) -> None:
        if SYNC_MESSAGE not in str(message):
            self.show_other_warnings(message, category, filename, lineno, file, line)
            return
        stack = traceback.format_stack(limit=STACK_DEPTH)[:-2]  # drop the warnings machinery and this method
        self.counts["".join(stack)] += 1

    def report(self, top: int = 8) -> str:
        total, stacks = sum(self.counts.values()), len(self.counts)
        lines = [f"[syncs] {total} synchronizing CUDA calls from {stacks} distinct stacks"]
        for stack, count in self.counts.most_common(top):
            lines.append(f"[syncs] {count} x, innermost last:\n{stack.rstrip()}")
        return "\n".join(lines)

    def before_train(self, runner) -> None:
        self.show_other_warnings = warnings.showwarning
        warnings.showwarning = self.record
        warnings.filterwarnings("always", message=".*" + SYNC_MESSAGE)
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("warn")

    def after_train(self, runner) -> None:
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = self.show_other_warnings
        runner.logger.info(self.report())


def summary(log_text: str) -> dict | None:
    """The counts in a log that `SyncTraceHook.report` wrote to: total, distinct stacks, and for each stack it
    printed, its count and innermost frame. None when the log has no report (the run ended before training did)."""
    header = REPORT_HEADER.search(log_text)
    if not header:
        return None
    parts = STACK_HEADER.split(log_text[header.end():])  # [before, count, stack, count, stack, ...]
    top = []
    for count, stack in zip(parts[1::2], parts[2::2], strict=True):
        frames = FRAME.findall(stack)
        top.append({"count": int(count), "innermost": "{}:{} in {}".format(*frames[-1]) if frames else None})
    return {"total": int(header.group(1)), "stacks": int(header.group(2)), "top": top}
