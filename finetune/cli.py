"""`python -m finetune <verb>`: a thin argparse table over one plain function per verb."""

from __future__ import annotations

import argparse
import os
import traceback

from app.console import say
from app.errors import AppError, guard_main
from app.quiet import quiet

from . import __version__
from .errors import DataError, StageFailed

VERB_MODULES = ["data", "config", "train", "convert", "merge", "export", "run", "evaluate", "chat", "download",
                "doctor"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="python -m finetune",
        description="Turn an open chat model into your own assistant with XTuner: data, config, train, "
        "convert, merge, chat. Every verb has --help with examples.",
        epilog="examples:\n"
        "  python -m finetune run --name 小薇 --name-en Xiaowei          # the whole chain on the default model\n"
        "  python -m finetune data identity --name 小薇 --out data/identity.jsonl\n"
        "  python -m finetune config --preset internlm2.5-7b-chat --data data/train.jsonl --out cfg.py\n"
        "  python -m finetune doctor\n\n"
        "Library warnings nobody can act on (bitsandbytes, DeepSpeed, torch, transformers) are hidden; "
        "FINETUNE_VERBOSE=1 (or `train`/`run --verbose`) shows them.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"finetune {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name in VERB_MODULES:
        module = importlib.import_module(f"finetune.{name}")
        module.register(subparsers, HelpFormatter)
    return parser


def report(error: AppError) -> None:
    if isinstance(error, DataError):
        for line_no, reason in error.problems[:50]:
            say(f"  line {line_no}: {reason}")
        if len(error.problems) > 50:
            say(f"  ... and {len(error.problems) - 50} more")
    if isinstance(error, StageFailed) and error.log_tail:
        say("---- last lines of the log ----")
        say(error.log_tail.rstrip())
        say("-------------------------------")
    say(f"error: {error.one_line()}")


@guard_main("FINETUNE_DEBUG")
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet(getattr(args, "verbose", False), "FINETUNE_VERBOSE")  # `train` and `run` have --verbose
    try:
        return int(args.func(args) or 0)
    except AppError as error:  # FinetuneError, and the chat app's errors under `finetune chat`
        if os.environ.get("FINETUNE_DEBUG"):
            traceback.print_exc()
        report(error)
        return error.exit_code
    except KeyboardInterrupt:
        say("error: interrupted. Fix: run the same command again; finished stages are kept.")
        return 130
