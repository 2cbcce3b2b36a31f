"""`python -m finetune <verb>`: a thin argparse table over one plain function per verb."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

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
            print(f"  line {line_no}: {reason}", file=sys.stderr)
        if len(error.problems) > 50:
            print(f"  ... and {len(error.problems) - 50} more", file=sys.stderr)
    if isinstance(error, StageFailed) and error.log_tail:
        print("---- last lines of the log ----", file=sys.stderr)
        print(error.log_tail.rstrip(), file=sys.stderr)
        print("-------------------------------", file=sys.stderr)
    print(f"error: {error.one_line()}", file=sys.stderr)


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
        print("error: interrupted. Fix: run the same command again; finished stages are kept.", file=sys.stderr)
        return 130
