"""`finetune chat`: terminal chat with a run's merged model (or any model folder / preset).

Model lookup (run directories, presets, `finetune download` folders) is finetune's; the chat itself is the app's
terminal chat (`app.cli`): streaming, multi-turn, RESET/EXIT, the prompt built only with the tokenizer's own chat
template, so a merged model answers with the template (and default system prompt) it was trained with.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from app.cli import EXIT, RESET, Conversation, chat_loop
from app.engine import ChatEngine, GenerationSettings, resolve_decode
from app.errors import AppError

from .errors import InputError


def chat(model_spec: str | None = None, *, system: str | None = None, max_new_tokens: int = 512,
         temperature: float = 0.7, top_p: float = 0.9, top_k: int = 40, repetition_penalty: float = 1.1,
         bits: int | None = None, prompts: Sequence[str] | None = None, input_stream: TextIO | None = None,
         output_stream: TextIO | None = None, error_stream: TextIO | None = None) -> int:
    """Load the model `model_spec` names (see modelload.resolve_model) and chat in a loop; returns an exit code."""
    from .modelload import load_model, resolve_model

    err = error_stream or sys.stderr

    def note(message: str) -> None:
        err.write(message + "\n")
        err.flush()

    settings = GenerationSettings(max_new_tokens, temperature, top_p, top_k, repetition_penalty)
    try:
        settings.validate()  # before the slow load
    except AppError as error:
        raise InputError(error.message, error.fix) from error
    path = resolve_model(model_spec, progress=note)
    note(f"Loading {path} ...")
    model, tokenizer = load_model(path, bits=bits, strict=False, warn=note)
    engine = ChatEngine(model, tokenizer, decode=resolve_decode("auto", model))  # static + compiled on a GPU
    conversation = Conversation(engine, settings, system=system, notice=lambda text: note(f"({text})"))
    if prompts is None:
        note(f"Chatting with {_short(path)}. One message per line; {RESET} clears the history, {EXIT} (or Ctrl-D) "
             "quits.")
    return chat_loop(conversation, input_stream=input_stream, output_stream=output_stream, error_stream=err,
                     prompts=prompts)


def _short(path: Path) -> str:
    return f"{path.parent.name}/{path.name}" if path.name == "merged" else path.name


# ----------------------------------------------------------------------------------------------- CLI


def handle(args: argparse.Namespace) -> int:
    return chat(args.model, system=args.system, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                top_p=args.top_p, top_k=args.top_k, repetition_penalty=args.repetition_penalty, bits=args.bits,
                prompts=args.prompt)


def register(subparsers: Any, formatter_class: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "chat",
        help="chat in the terminal with a run's merged model (or any model)",
        description="Chat in the terminal with a fine-tuned (merged) model, a downloaded preset or any Hugging Face "
        "model folder. Answers stream as they are generated; the prompt is built with the model's own chat "
        "template (a merged model carries its training system prompt as the default). One message per line: "
        f"Enter sends, {RESET} clears the history, {EXIT} or Ctrl-D quits. On CPU the model runs in fp32.",
        epilog="examples:\n"
        "  python -m finetune chat                                   # the embedded SmolLM2-135M-Instruct\n"
        "  python -m finetune chat runs/xiaowei                      # a run directory: its merged/ model\n"
        "  python -m finetune chat runs/xiaowei/merged --bits 4      # 4-bit on an NVIDIA GPU\n"
        "  python -m finetune chat qwen2.5-0.5b-instruct --system 'You are a pirate.'\n"
        "  python -m finetune chat runs/xiaowei --prompt 'Who are you?' --prompt '你是谁？' "
        "--temperature 0   # scripted",
        formatter_class=formatter_class,
    )
    parser.add_argument("model", nargs="?", default=None, metavar="MODEL",
                        help="run directory, model folder, preset name or downloaded hub id; "
                        "unset = the embedded smollm2-135m-instruct")
    parser.add_argument("--system", default=None,
                        help="system prompt; unset = none added, the model's chat template decides")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="longest answer, in tokens")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature; 0 = greedy")
    parser.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling probability mass")
    parser.add_argument("--top-k", type=int, default=40, help="sample among the k most likely tokens")
    parser.add_argument("--repetition-penalty", type=float, default=1.1, help="> 1 discourages repeating")
    parser.add_argument("--bits", type=int, choices=(4, 8), default=None,
                        help="load 4-bit (nf4) or 8-bit with bitsandbytes; needs an NVIDIA GPU (on CPU: a warning, "
                        "then fp32)")
    parser.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                        help="non-interactive: answer this prompt (repeatable, one conversation, in order) and exit")
    parser.set_defaults(func=handle)
    return parser
