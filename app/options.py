"""Command-line options shared by the web app and the terminal chat. Every option also reads an environment
variable, so a hosted demo (Hugging Face Space, OpenXLab app, ModelScope studio) is configured without flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from .backend import Engine
from .engine import DECODE_MODES, DEFAULT_MAX_INPUT_CHARS, ChatEngine, GenerationSettings, resolve_decode
from .errors import SettingsError
from .gguf_server import is_gguf
from .models import ModelRequest, load

FALSE_WORDS = {"0", "false", "no", "off", ""}
BACKENDS = ("transformers", "openai")
DECODE_LABELS = {"static": "static KV cache (decoding step compiled with CUDA graphs on a GPU)",
                 "compiled": "static KV cache, the app's own loop (step and sampling compiled with CUDA graphs on a "
                 "GPU)",
                 "dynamic": "dynamic KV cache (eager)"}


def env(name: str, default: Any = None, kind: Callable[[str], Any] = str) -> Any:
    """An environment variable converted with `kind`; a bad value is a SettingsError naming the variable."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return kind(raw.strip())
    except ValueError as exc:
        raise SettingsError(f"Environment variable {name}={raw!r} is not a valid {kind.__name__}.",
                            f"set {name} to a valid value or unset it.") from exc


def env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    return default if raw is None else raw.strip().lower() not in FALSE_WORDS


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (each flag also reads the environment variable in brackets)")
    group.add_argument("model", nargs="?", default=None,
                       help="merged model folder, run directory, adapter folder, downloaded preset name, hub id or a "
                       ".gguf file (run by llama.cpp's server) [MODEL_ID]; default: the embedded SmolLM2-135M-Instruct")
    group.add_argument("--model", dest="model_flag", default=None, metavar="MODEL", help="same as the positional")
    group.add_argument("--adapter", default=None, help="PEFT adapter folder or hub id on top of the base [ADAPTER_ID]")
    group.add_argument("--base", default=None, help="base model for --adapter (default: the one the adapter names) "
                       "[BASE_MODEL_ID]")
    group.add_argument("--use-adapter", action="store_true",
                       help="with a run directory: base + adapter (shared weights for compare) instead of merged/")
    group.add_argument("--bits", type=int, choices=(4, 8), default=None,
                       help="load 4-bit (nf4) or 8-bit with bitsandbytes; CUDA only, full precision elsewhere [BITS]")
    group.add_argument("--dtype", default=None, choices=("auto", "bf16", "fp16", "fp32"),
                       help="weights dtype: auto = bf16/fp16 on GPU, fp32 on CPU [DTYPE]")
    group.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present) [DEVICE]")
    group.add_argument("--source", choices=("hf", "modelscope", "openxlab"), default=None,
                       help="where hub ids are downloaded from [MODEL_SOURCE]; default hf (HF_ENDPOINT for a mirror); "
                       "openxlab clones with git + git-lfs into ./models")
    group.add_argument("--decode", choices=("auto", *DECODE_MODES), default=None,
                       help="static = preallocated KV cache with the decoding step compiled (fast batch-1 answers on "
                       "a GPU, one answer at a time); compiled = the same with the app's own decoding loop (step "
                       "and sampling in one CUDA graph, host work overlapped; not yet measured on a GPU); dynamic = "
                       "eager, answers in parallel; auto = static on CUDA for 16-bit and 4-bit weights [DECODE, "
                       "default auto]")
    group.add_argument("--no-compare", action="store_true",
                       help="do not load a second (base) model for the compare tab [COMPARE=0]")
    group.add_argument("--context", type=int, default=None,
                       help="context window in tokens (default: the model's) [CONTEXT_WINDOW]")
    group.add_argument("--max-input-chars", type=int, default=None,
                       help=f"longer messages are cut, with a warning [MAX_INPUT_CHARS, default "
                       f"{DEFAULT_MAX_INPUT_CHARS}]")
    served = parser.add_argument_group(
        "external serving engine (--backend openai: LMDeploy api_server, vLLM, llama.cpp server; the API key is "
        "read only from OPENAI_API_KEY)")
    served.add_argument("--backend", choices=BACKENDS, default=None,
                        help="transformers = load the model in this process; openai = stream from an "
                        "OpenAI-compatible server [BACKEND, default transformers; --base-url implies openai]")
    served.add_argument("--base-url", default=None, metavar="URL",
                        help="the server's API, e.g. http://127.0.0.1:8000/v1 [OPENAI_BASE_URL]")
    served.add_argument("--served-model", default=None, metavar="NAME",
                        help="model name on the server [OPENAI_MODEL, default: the first of GET /v1/models]")
    served.add_argument("--served-base-model", default=None, metavar="NAME",
                        help="a second served model for the Compare tab, e.g. the base [OPENAI_BASE_MODEL]")


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = GenerationSettings()
    group = parser.add_argument_group("generation")
    group.add_argument("--system", default=None,
                       help="system prompt (default: the one the model was trained with) [SYSTEM_PROMPT]")
    group.add_argument("--max-new-tokens", type=int, default=None,
                       help=f"[MAX_NEW_TOKENS, default {defaults.max_new_tokens}]")
    group.add_argument("--temperature", type=float, default=None,
                       help=f"0 = greedy [TEMPERATURE, default {defaults.temperature}]")
    group.add_argument("--top-p", type=float, default=None, help=f"[TOP_P, default {defaults.top_p}]")
    group.add_argument("--top-k", type=int, default=None, help=f"[TOP_K, default {defaults.top_k}]")
    group.add_argument("--repetition-penalty", type=float, default=None,
                       help=f"[REPETITION_PENALTY, default {defaults.repetition_penalty}]")
    group.add_argument("--think", action=argparse.BooleanOptionalAction, default=None,
                       help="models with a thinking switch (Qwen3): think before answering; the thinking is shown "
                       "apart from the answer (default: off, the form identity data is trained in) [THINKING]")


def _bits(value: str) -> int | None:
    number = int(value)
    if number in (0, 16, 32):
        return None
    if number not in (4, 8):
        raise ValueError(value)
    return number


def model_request(args: argparse.Namespace) -> ModelRequest:
    model = args.model_flag or args.model or env("MODEL_ID")
    return ModelRequest(
        model=model,
        adapter=args.adapter or env("ADAPTER_ID"),
        base=args.base or env("BASE_MODEL_ID"),
        bits=args.bits if args.bits is not None else env("BITS", None, _bits),
        dtype=args.dtype or env("DTYPE", "auto"),
        device=args.device or env("DEVICE"),
        source=args.source or env("MODEL_SOURCE", "hf").lower(),
        compare=not args.no_compare and env_flag("COMPARE", True),
        use_adapter=args.use_adapter or env_flag("USE_ADAPTER", False),
    )


def generation_settings(args: argparse.Namespace) -> GenerationSettings:
    defaults = GenerationSettings()

    def pick(flag: Any, name: str, kind: Callable[[str], Any], default: Any) -> Any:
        return flag if flag is not None else env(name, default, kind)

    return GenerationSettings(
        max_new_tokens=pick(args.max_new_tokens, "MAX_NEW_TOKENS", int, defaults.max_new_tokens),
        temperature=pick(args.temperature, "TEMPERATURE", float, defaults.temperature),
        top_p=pick(args.top_p, "TOP_P", float, defaults.top_p),
        top_k=pick(args.top_k, "TOP_K", int, defaults.top_k),
        repetition_penalty=pick(args.repetition_penalty, "REPETITION_PENALTY", float, defaults.repetition_penalty),
        thinking=args.think if args.think is not None else env_flag("THINKING", False),
    ).validate()


def system_prompt(args: argparse.Namespace) -> str | None:
    return args.system if args.system is not None else env("SYSTEM_PROMPT")


def backend(args: argparse.Namespace) -> str:
    name = args.backend or ("openai" if args.base_url else env("BACKEND", "transformers").lower())
    if name not in BACKENDS:
        raise SettingsError(f"BACKEND={name!r} is not a backend.", f"use one of: {', '.join(BACKENDS)}.")
    return name


def build_engine(args: argparse.Namespace, notice: Callable[[str], None]) -> Engine:
    """The engine the options name: a model loaded here (seconds to minutes) or a connection to a server."""
    context = args.context if args.context is not None else env("CONTEXT_WINDOW", None, int)
    max_chars = args.max_input_chars if args.max_input_chars is not None else env("MAX_INPUT_CHARS",
                                                                                    DEFAULT_MAX_INPUT_CHARS, int)
    if context is not None and context < 16:
        raise SettingsError(f"--context {context} is too small.", "use at least 16 tokens, or leave it out.")
    if max_chars < 1:
        raise SettingsError(f"--max-input-chars {max_chars} must be positive.", "use e.g. 16000.")
    system = system_prompt(args)
    if backend(args) == "openai":
        return _openai_engine(args, context, max_chars, system, notice)
    if is_gguf(args.model_flag or args.model or env("MODEL_ID")):
        return _gguf_engine(args, context, max_chars, system, notice)
    choice = args.decode or env("DECODE", "auto").lower()
    if choice not in ("auto", *DECODE_MODES):
        raise SettingsError(f"DECODE={choice} is not a decode mode.", "use auto, static, compiled or dynamic.")
    loaded = load(model_request(args), notice)
    decode = resolve_decode(choice, loaded.model)
    engine = ChatEngine(loaded.model, loaded.tokenizer, base_model=loaded.base_model,
                        info={"Backend": "transformers, in this process", **loaded.info,
                              "Decoding": DECODE_LABELS[decode]},
                        context=context, max_input_chars=max_chars,
                        default_system=loaded.default_system if system is None else system, decode=decode)
    if engine.compiles:
        notice("Compiling the decoding step (static KV cache, CUDA graphs); the first time takes a minute or two ...")
        engine.warm_up()
    return engine


def _gguf_engine(args: argparse.Namespace, context: int | None, max_chars: int, system: str | None,
                 notice: Callable[[str], None]) -> Engine:
    from . import gguf_server
    from .openai_backend import OpenAIEngine

    local = [flag for flag, value in (("--adapter", args.adapter), ("--base", args.base),
                                      ("--use-adapter", args.use_adapter), ("--bits", args.bits),
                                      ("--dtype", args.dtype), ("--decode", args.decode)) if value]
    if local:
        raise SettingsError(f"{', '.join(local)} do not apply to a .gguf file (llama.cpp runs it as it was exported).",
                            "leave them out, or open the run directory to use them.")
    path = args.model_flag or args.model or env("MODEL_ID")
    context = context or gguf_server.DEFAULT_CONTEXT
    server = gguf_server.start(path, context=context, notice=notice)
    engine = OpenAIEngine.connect(server.url, model=server.alias, context=context, max_input_chars=max_chars,
                                  default_system=system or "",
                                  info={"Backend": f"llama.cpp's server on {path} (a child process; it renders the "
                                        "GGUF's own chat template)"})
    engine.closers.append(server.stop)
    return engine


def _openai_engine(args: argparse.Namespace, context: int | None, max_chars: int, system: str | None,
                   notice: Callable[[str], None]) -> Engine:
    from .openai_backend import OpenAIEngine

    local = [flag for flag, value in (("MODEL", args.model or args.model_flag), ("--adapter", args.adapter),
                                      ("--base", args.base), ("--use-adapter", args.use_adapter),
                                      ("--bits", args.bits), ("--dtype", args.dtype), ("--device", args.device))
             if value]
    if local:
        raise SettingsError(f"{', '.join(local)} load a model in this process; with --backend openai the server "
                            "has loaded it.", "leave them out and name the served model with --served-model.")
    base_url = args.base_url or env("OPENAI_BASE_URL")
    if not base_url:
        raise SettingsError("--backend openai needs the address of the server's OpenAI-compatible API.",
                            "pass --base-url http://HOST:PORT/v1 (or set OPENAI_BASE_URL).")
    compare = not args.no_compare and env_flag("COMPARE", True)
    notice(f"Connecting to {base_url} ...")
    return OpenAIEngine.connect(base_url, model=args.served_model or env("OPENAI_MODEL"),
                                base_model=(args.served_base_model or env("OPENAI_BASE_MODEL")) if compare else None,
                                api_key=os.environ.get("OPENAI_API_KEY") or None, context=context,
                                max_input_chars=max_chars, default_system=system or "")
