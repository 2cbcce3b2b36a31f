"""Terminal chat with a run's merged model (or any model folder / preset): streaming, multi-turn, RESET/EXIT.

The prompt is built only with the tokenizer's own chat template, so a merged model answers with the template
(and default system prompt) it was trained with. `generate_reply()` is the non-streaming helper other code uses
for before/after answers.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .errors import FinetuneError, InputError

RESET = "RESET"
EXIT = "EXIT"
Message = dict[str, str]


@dataclass
class GenerationSettings:
    max_new_tokens: int = 512
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.9
    top_k: int = 40
    repetition_penalty: float = 1.1

    def kwargs(self) -> dict[str, Any]:
        if self.max_new_tokens < 1:
            raise InputError(f"--max-new-tokens must be at least 1, not {self.max_new_tokens}.",
                             "use e.g. --max-new-tokens 512.")
        if self.temperature < 0:
            raise InputError(f"--temperature must be >= 0, not {self.temperature}.", "use 0 for greedy, 0.7 default.")
        common = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.temperature == 0:
            # None (not the model's generation_config values) keeps transformers from warning about sampling flags.
            return {**common, "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {**common, "do_sample": True, "temperature": self.temperature, "top_p": self.top_p,
                "top_k": self.top_k}


# ------------------------------------------------------------------------------------------ generation


def build_inputs(tokenizer: Any, messages: Sequence[Message], device: Any = None) -> dict[str, Any]:
    """Token ids of `messages` rendered by the tokenizer's own chat template, ending with the generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(
            "This model's tokenizer has no chat template (tokenizer_config.json has no chat_template).",
            "chat with an instruct/chat model or a run's merged model; base models have no template.",
        )
    encoded = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
    inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    if device is not None:
        inputs = {key: value.to(device) for key, value in inputs.items()}
    return inputs


def prompt_length(tokenizer: Any, messages: Sequence[Message]) -> int:
    return int(build_inputs(tokenizer, messages)["input_ids"].shape[-1])


def context_limit(model: Any, tokenizer: Any) -> int | None:
    """The model's context window in tokens (config.max_position_embeddings), if known."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not limit:
        limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 10_000_000 else None


END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Ids that end an answer: the model's eos ids, the tokenizer's eos and known end-of-turn tokens in its vocab."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = [*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id]
    vocab = tokenizer.get_vocab()
    ids += [vocab[token] for token in END_OF_TURN_TOKENS if token in vocab]
    unk = tokenizer.unk_token_id
    return list(dict.fromkeys(i for i in ids if isinstance(i, int) and i != unk))


def _pad_id(model: Any, tokenizer: Any) -> int | None:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    stops = stop_token_ids(model, tokenizer)
    return stops[0] if stops else None


def _special_kwargs(model: Any, tokenizer: Any) -> dict[str, Any]:
    return {"pad_token_id": _pad_id(model, tokenizer), "eos_token_id": stop_token_ids(model, tokenizer) or None}


def generate_reply(model: Any, tokenizer: Any, messages: Sequence[Message], *, max_new_tokens: int = 256,
                   temperature: float = 0.0, top_p: float = 0.9, top_k: int = 40,
                   repetition_penalty: float = 1.1) -> str:
    """One answer to `messages` (list of {"role", "content"}), greedy by default, without streaming."""
    import torch

    settings = GenerationSettings(max_new_tokens, temperature, top_p, top_k, repetition_penalty)
    inputs = build_inputs(tokenizer, messages, model.device)
    with torch.inference_mode():
        output = model.generate(**inputs, **settings.kwargs(), **_special_kwargs(model, tokenizer))
    new_tokens = output[0, inputs["input_ids"].shape[-1]:]
    return tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def stream_reply(model: Any, tokenizer: Any, messages: Sequence[Message],
                 settings: GenerationSettings | None = None) -> Iterator[str]:
    """Yield text chunks of the answer as they are generated (generate runs in a thread).

    Closing the iterator early (or Ctrl-C while reading it) stops the generation thread.
    """
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    settings = settings or GenerationSettings()
    stop = threading.Event()
    failure: list[BaseException] = []

    class _StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
            return stop.is_set()

    inputs = build_inputs(tokenizer, messages, model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    gen_kwargs = {**inputs, **settings.kwargs(), **_special_kwargs(model, tokenizer), "streamer": streamer,
                  "stopping_criteria": StoppingCriteriaList([_StopOnEvent()])}

    def run() -> None:
        try:
            model.generate(**gen_kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)
            streamer.end()

    thread = threading.Thread(target=run, name="chat-generate", daemon=True)
    thread.start()
    try:
        for chunk in streamer:
            if chunk:
                yield chunk
    finally:
        stop.set()
        thread.join()
    if failure:
        raise failure[0]


# ------------------------------------------------------------------------------------------- session


class ChatSession:
    """Multi-turn chat state: history of {"role", "content"} turns, optional system prompt, context trimming."""

    def __init__(self, model: Any, tokenizer: Any, *, system: str | None = None,
                 settings: GenerationSettings | None = None, notice: Callable[[str], None] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.system = system
        self.settings = settings or GenerationSettings()
        self.notice = notice or (lambda message: print(message, file=sys.stderr))
        self.history: list[Message] = []

    def messages(self, history: Sequence[Message] | None = None) -> list[Message]:
        turns = list(self.history if history is None else history)
        return ([{"role": "system", "content": self.system}] if self.system else []) + turns

    def reset(self) -> None:
        self.history.clear()

    def _budget(self) -> int | None:
        limit = context_limit(self.model, self.tokenizer)
        return None if limit is None else limit - self.settings.max_new_tokens

    def _fit(self, pending: list[Message]) -> list[Message]:
        """Drop the oldest turns until history + the new message fit the context; notice how many went."""
        budget = self._budget()
        if budget is None:
            return pending
        dropped = 0
        while prompt_length(self.tokenizer, self.messages(pending)) > budget:
            if len(pending) <= 1:
                raise InputError(
                    f"The message does not fit the model's context ({budget} tokens left after "
                    f"--max-new-tokens {self.settings.max_new_tokens}).",
                    "send a shorter message or lower --max-new-tokens.",
                )
            cut = 2 if len(pending) > 2 and pending[1]["role"] == "assistant" else 1
            pending = pending[cut:]
            dropped += 1
        if dropped:
            self.notice(f"(dropped the {dropped} oldest turn(s): the prompt must stay under {budget} tokens, the "
                        "model's context minus --max-new-tokens)")
        return pending

    def send(self, text: str) -> Iterator[str]:
        """Add a user message and stream the answer; the turn enters history only when the answer is complete."""
        pending = self._fit([*self.history, {"role": "user", "content": text}])
        reply: list[str] = []
        for chunk in stream_reply(self.model, self.tokenizer, self.messages(pending), self.settings):
            reply.append(chunk)
            yield chunk
        self.history = [*pending, {"role": "assistant", "content": "".join(reply).strip()}]

    def ask(self, text: str) -> str:
        return "".join(self.send(text)).strip()


# ---------------------------------------------------------------------------------------------- loop


def _reply(session: ChatSession, text: str, out: TextIO, err: TextIO) -> None:
    out.write("Assistant: ")
    out.flush()
    try:
        for chunk in session.send(text):
            out.write(chunk)
            out.flush()
    except KeyboardInterrupt:
        out.write("\n(interrupted; this turn was not kept)")
    except FinetuneError as error:
        err.write(f"error: {error.one_line()}\n")
    out.write("\n")
    out.flush()


def chat_loop(session: ChatSession, *, input_stream: TextIO | None = None, output_stream: TextIO | None = None,
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
                session.reset()
                out.write("(history cleared)\n")
                continue
            _reply(session, text, out, err)
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
    settings.kwargs()  # validate before the slow load
    path = resolve_model(model_spec, progress=note)
    note(f"Loading {path} ...")
    model, tokenizer = load_model(path, bits=bits, strict=False, warn=note)
    session = ChatSession(model, tokenizer, system=system, settings=settings, notice=note)
    if prompts is None:
        note(f"Chatting with {_short(path)}. One message per line; {RESET} clears the history, {EXIT} (or Ctrl-D) "
             "quits.")
    return chat_loop(session, input_stream=input_stream, output_stream=output_stream, error_stream=err,
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
