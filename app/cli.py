"""`python -m app.cli`: chat in the terminal (no browser needed): streaming, multi-turn, RESET clears, EXIT quits.

Same model options as the web page. `python -m finetune chat` uses `chat_loop` from here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO

from . import thinking
from .backend import Engine, Message
from .console import say
from .engine import GenerationSettings
from .errors import AppError, guard_main
from .options import add_generation_arguments, add_model_arguments, build_engine, generation_settings, system_prompt
from .quiet import quiet

RESET = "RESET"
EXIT = "EXIT"


class Conversation:
    """One terminal conversation: its own history on a shared engine."""

    def __init__(self, engine: Engine, settings: GenerationSettings, *, system: str | None = None,
                 notice=None):
        self.engine = engine
        self.settings = settings
        self.system = system
        self.notice = notice or (lambda text: say(f"({text})"))
        self.history: list[Message] = []

    def reset(self) -> None:
        self.history.clear()

    def send(self, text: str) -> Iterator[str]:
        """Stream the answer; the turn enters the history only once the answer is complete."""
        pieces: list[str] = []
        for piece in self.engine.stream(self.history, text, self.settings, system=self.system,
                                        notice=self.notice):
            pieces.append(piece)
            yield piece
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": "".join(pieces).strip()}]

    def ask(self, text: str) -> str:
        return "".join(self.send(text)).strip()


class ThinkingWriter:
    """Writes a streamed answer with its thinking (<think>...</think>) set apart: dimmed on a terminal, between
    "[thinking]" and "[/thinking]" lines otherwise; the tags themselves are never shown."""

    def __init__(self, out: TextIO):
        self.out = out
        self.styled = _isatty(out)
        self.text = ""
        self.thought_shown = self.answer_shown = 0
        self.state = "answer"  # answer | thinking | thought (the thinking has ended)

    def write(self, piece: str) -> None:
        self.text += piece
        parts = thinking.split(self.text)
        if parts.thinking[self.thought_shown:]:
            if self.state == "answer":
                self.out.write("\033[2m" if self.styled else "[thinking]\n")
                self.state = "thinking"
            self.out.write(parts.thinking[self.thought_shown:])
            self.thought_shown = len(parts.thinking)
        if self.state == "thinking" and parts.thinking_done:
            self.out.write("\033[0m\n" if self.styled else "\n[/thinking]\n")
            self.state = "thought"
        self.out.write(parts.answer[self.answer_shown:])
        self.answer_shown = len(parts.answer)
        self.out.flush()

    def close(self) -> None:
        if self.state == "thinking" and self.styled:
            self.out.write("\033[0m")


def _reply(conversation: Conversation, text: str, out: TextIO, err: TextIO) -> None:
    out.write("Assistant: ")
    out.flush()
    writer = ThinkingWriter(out)
    try:
        for piece in conversation.send(text):
            writer.write(piece)
    except KeyboardInterrupt:
        out.write("\n(interrupted; this turn was not kept)")
    except AppError as error:
        err.write(f"error: {error.one_line()}\n")
    writer.close()
    out.write("\n")
    out.flush()


def chat_loop(conversation: Conversation, *, input_stream: TextIO | None = None, output_stream: TextIO | None = None,
              error_stream: TextIO | None = None, prompts: Sequence[str] | None = None) -> int:
    """Read one message per line (or take `prompts` in order) and stream answers; RESET clears, EXIT/EOF ends."""
    out = output_stream or sys.stdout
    err = error_stream or sys.stderr
    lines: Iterator[str] = iter(prompts) if prompts is not None else _read_lines(input_stream or sys.stdin, out)
    try:
        for raw in lines:
            text = raw.strip()
            if not text:
                continue
            if prompts is not None:
                out.write(f"User: {text}\n")
            if text.upper() == EXIT:
                break
            if text.upper() == RESET:
                conversation.reset()
                out.write("(history cleared)\n")
                continue
            _reply(conversation, text, out, err)
    except KeyboardInterrupt:
        out.write("\n")
    out.flush()
    return 0


def _read_lines(stream: TextIO, out: TextIO) -> Iterator[str]:
    while True:
        out.write("User: ")
        out.flush()
        line = stream.readline()
        if not line:  # EOF (Ctrl-D or closed stdin)
            out.write("\n")
            return
        if not _isatty(stream):  # piped input: echo it so the transcript reads like a conversation
            out.write(line if line.endswith("\n") else line + "\n")
        yield line


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.cli",
        description="Chat in the terminal with a fine-tuned model (or any chat model): answers stream as they are "
        f"generated, with the model's own prompt template. One message per line; {RESET} clears the history, "
        f"{EXIT} or Ctrl-D quits, Ctrl-C stops an answer.",
        epilog="examples:\n"
        "  python -m app.cli                                  # the embedded SmolLM2-135M-Instruct\n"
        "  python -m app.cli runs/xiaowei                     # a finetune run's merged model\n"
        "  python -m app.cli --adapter runs/xiaowei/adapter   # base + adapter\n"
        "  python -m app.cli --backend openai --base-url http://127.0.0.1:8000/v1   # an external server\n"
        "  python -m app.cli runs/xiaowei --temperature 0 --prompt 'Who are you?' --prompt RESET --prompt '你是谁？'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    add_generation_arguments(parser)
    parser.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                        help="non-interactive: answer this prompt (repeatable, in order; RESET allowed) and exit")
    parser.add_argument("--verbose", action="store_true",
                        help="show the libraries' warnings that are hidden by default [APP_VERBOSE=1]")
    return parser


@guard_main("APP_DEBUG")
def main(argv: Sequence[str] | None = None, *, input_stream: TextIO | None = None,
         output_stream: TextIO | None = None, error_stream: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet(args.verbose, "APP_VERBOSE")
    err = error_stream or sys.stderr

    def note(text: str) -> None:
        err.write(text + "\n")
        err.flush()

    try:
        settings = generation_settings(args)
        args.no_compare = True  # the terminal has no compare view: never load a second model
        engine = build_engine(args, note)
    except AppError as error:
        note(f"error: {error.one_line()}")
        return error.exit_code
    conversation = Conversation(engine, settings, system=system_prompt(args), notice=lambda t: note(f"({t})"))
    if args.prompt is None:
        note(f"Chatting with {engine.info.get('Model')}. One message per line; {RESET} clears the history, {EXIT} "
             "(or Ctrl-D) quits.")
    return chat_loop(conversation, input_stream=input_stream, output_stream=output_stream, error_stream=err,
                     prompts=args.prompt)


if __name__ == "__main__":
    sys.exit(main())
