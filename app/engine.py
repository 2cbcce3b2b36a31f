"""The chat engine: prompt building with the model's own chat template, history trimming, token streaming.

Generation runs in a worker thread; a streamer hands each row's new text to the caller through a queue, and a
stopping criterion checks a `threading.Event`, so closing the stream (a Stop button, a dropped client, Ctrl-C)
really ends the generation instead of leaving it running. Compare mode streams the base model and the fine-tuned
model side by side: with base + adapter it is one batch of two rows, the adapter switched off for the first row
(the weights are shared), otherwise two models in two threads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from .backend import Engine, GenerationSettings, Message
from .decoder import CompiledDecoder, Sampling, supports_static_cache
from .errors import SettingsError
from .thinking import supports_thinking

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<eoa>")
DEFAULT_MAX_INPUT_CHARS = 16_000
DECODE_MODES = ("dynamic", "static", "compiled")


# ----------------------------------------------------------------------------------------------- tokens


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Ids that end an answer: the model's eos ids, the tokenizer's eos and known end-of-turn tokens in its vocab."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id]
    vocab = tokenizer.get_vocab()
    ids += [vocab[token] for token in END_OF_TURN_TOKENS if token in vocab]
    unk = tokenizer.unk_token_id
    return list(dict.fromkeys(i for i in ids if isinstance(i, int) and i != unk))


def pad_token_id(model: Any, tokenizer: Any) -> int | None:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    stops = stop_token_ids(model, tokenizer)
    return stops[0] if stops else None


def render_ids(tokenizer: Any, messages: Sequence[Message], thinking: bool | None = None) -> list[int]:
    """Token ids of `messages` rendered by the tokenizer's own chat template, ending with the assistant prompt
    (`thinking` switches a thinking model's mode, as its template's `enable_thinking`)."""
    if not getattr(tokenizer, "chat_template", None):
        raise SettingsError(
            "This model's tokenizer has no chat template (tokenizer_config.json has no chat_template).",
            "chat with an instruct/chat model, a run's merged model or its adapter; base models have no template.",
        )
    options = {"enable_thinking": thinking} if thinking is not None and supports_thinking(tokenizer) else {}
    ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True, **options)
    # transformers >= 5 returns a BatchEncoding (a Mapping, not a dict) where 4.x returned the list of ids
    return list(ids["input_ids"] if isinstance(ids, Mapping) else ids)


def context_window(model: Any, tokenizer: Any) -> int | None:
    """The model's context window in tokens (config.max_position_embeddings), if known."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not limit:
        limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 10_000_000 else None


class RowStreamer:
    """A transformers streamer for any batch size: puts (row, new_text) on a queue as tokens arrive.

    Decoding is incremental, as vLLM's detokenizer does it: each step decodes only the tokens since the last emitted
    text plus the few before them (for spacing and split characters), so the work per token stays small however
    long a line gets (re-decoding the whole open line cost ~0.7 ms per token at 256 tokens, on the generating thread:
    bench/app_streamer.py).
    Text ending in an incomplete character is held back until it completes. A row ends at its first stop token.
    """

    DONE = object()

    def __init__(self, tokenizer: Any, rows: int, stop_ids: Sequence[int], *, row_offset: int = 0,
                 out: queue.Queue | None = None):
        self.tokenizer = tokenizer
        self.stop_ids = set(stop_ids)
        self.row_offset = row_offset
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.prefix_start = [0] * rows  # decoding context: tokens[prefix_start:read_start] were already emitted
        self.read_start = [0] * rows
        self.finished = [False] * rows
        self.queue: queue.Queue = out if out is not None else queue.Queue()
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt
            self._prompt_seen = True
            return
        self.put_tokens(value.reshape(len(self.tokens), -1).tolist())

    def put_tokens(self, values: list[list[int]]) -> None:
        """New token ids, one list per row."""
        for row, new in enumerate(values):
            before = len(self.tokens[row])
            for token in new:
                if self.finished[row]:
                    break
                if token in self.stop_ids:
                    self.finished[row] = True
                    break
                self.tokens[row].append(int(token))
            if len(self.tokens[row]) > before:
                self._emit(row, final=False)

    def end(self) -> None:
        for row in range(len(self.tokens)):
            self._emit(row, final=True)
        self.queue.put(self.DONE)

    def _emit(self, row: int, *, final: bool) -> None:
        tokens, start, read = self.tokens[row], self.prefix_start[row], self.read_start[row]
        emitted = self.tokenizer.decode(tokens[start:read], skip_special_tokens=True)
        text = self.tokenizer.decode(tokens[start:], skip_special_tokens=True)
        if len(text) <= len(emitted) or (text.endswith("\ufffd") and not final):
            return
        self.queue.put((row + self.row_offset, text[len(emitted):]))
        self.prefix_start[row], self.read_start[row] = read, len(tokens)


def _stop_criteria(stop: threading.Event) -> Any:
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopOnEvent()])


@dataclass
class _Job:
    """One answer generated on a worker thread; its future holds the outcome (an error is re-raised to the reader).
    `generate` streams into `streamer` and ends it."""

    generate: Callable[[], Any]
    streamer: RowStreamer
    lock: threading.Lock | None = None
    future: Future | None = None

    @classmethod
    def transformers(cls, model: Any, kwargs: dict[str, Any], streamer: RowStreamer,
                     lock: threading.Lock | None = None) -> _Job:
        return cls(lambda: model.generate(**kwargs, streamer=streamer), streamer, lock)

    def start(self, pool: ThreadPoolExecutor) -> _Job:
        self.future = pool.submit(self._run)
        return self

    def _run(self) -> None:
        import torch

        try:
            with self.lock or nullcontext(), torch.inference_mode():
                self.generate()
        except BaseException:
            self.streamer.end()  # wake the reader, which then re-raises this from the future
            raise


def _drain(jobs: Sequence[_Job], out: queue.Queue, stop: threading.Event) -> Iterator[tuple[int, str]]:
    """Yield (row, text) from the jobs' shared queue until every job is done; stop them when the reader leaves."""
    remaining = len(jobs)
    try:
        while remaining:
            item = out.get()
            if item is RowStreamer.DONE:
                remaining -= 1
                continue
            yield item
    finally:
        stop.set()
        wait([job.future for job in jobs])
    for job in jobs:
        job.future.result()


# ----------------------------------------------------------------------------------------------- engine


@dataclass
class Prepared:
    """What will be sent: the messages after trimming, their token ids, and notices for the user."""

    messages: list[Message]
    input_ids: list[int]
    notices: list[str]


class ChatEngine(Engine):
    """One loaded model (plus, for compare, its base) shared by every session; sessions keep their own history.

    `model` is the fine-tuned model (or any chat model). `base_model` is a separately loaded base for compare
    mode; when `model` is a PEFT model the base is the same weights with the adapter off, so no second copy.
    """

    def __init__(self, model: Any, tokenizer: Any, *, base_model: Any = None, info: dict[str, str] | None = None,
                 context: int | None = None, max_input_chars: int = DEFAULT_MAX_INPUT_CHARS,
                 default_system: str = "", workers: int = 4, decode: str = "dynamic"):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.base_model = base_model
        self.info = dict(info or {})
        self.context = context or context_window(model, tokenizer)
        self.max_input_chars = max_input_chars
        self.default_system = default_system
        self.shares_base = _is_peft(model)
        if decode not in DECODE_MODES:
            raise SettingsError(f"Unknown decode mode '{decode}'.", f"use one of: {', '.join(DECODE_MODES)}.")
        # static: a preallocated KV cache, which transformers compiles the decoding step for on CUDA (CUDA graphs).
        # compiled: the same cache with our own loop (app/decoder.py). Either keeps one cache for every call, so
        # their answers are generated one at a time.
        if decode != "dynamic" and not supports_static_cache(model):
            raise SettingsError(f"--decode {decode} needs a static KV cache, which {type(model).__name__} does not "
                                "support in transformers.", "use --decode dynamic (or auto).")
        self.decode = decode
        # PEFT switches adapters with module hooks: one generation at a time on a shared-weights model.
        self._lock = threading.Lock() if self.shares_base or decode != "dynamic" else None
        self._stop_ids = stop_token_ids(model, tokenizer)
        self._decoder = None
        if decode == "compiled":
            self._decoder = CompiledDecoder(model, self._stop_ids)
        # Long-lived worker threads, not one per answer: torch's CPU thread team is per calling thread, and a fresh
        # team for every answer (with the old ones still spinning) cost ~12 % of decode speed on 2 cores.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="app-generate")
        # Static and compiled answers run one at a time anyway (the lock), and always on this one thread: torch's
        # CUDA graph trees are per thread, so on the pool each worker would record its own graphs again.
        self._graph_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="app-graph") \
            if decode != "dynamic" else self._pool
        self._jobs: set[Future] = set()

    # ------------------------------------------------------------------ capabilities

    @property
    def can_compare(self) -> bool:
        return self.shares_base or self.base_model is not None

    @property
    def compare_mode(self) -> str:
        if self.shares_base:
            return "shared weights (adapter switched off for the base side)"
        if self.base_model is not None:
            return "two models loaded"
        return "off (no base model known)"

    @property
    def compare_hint(self) -> str:
        return ("Compare needs the base model: start the app with `--adapter ADAPTER` (base + adapter share weights) "
                "or on a run directory whose base model is on this machine.")

    # ------------------------------------------------------------------ prompt

    @property
    def supports_thinking(self) -> bool:
        return supports_thinking(self.tokenizer)

    def prepare(self, history: Sequence[Message], message: str, *, system: str | None = None,
                max_new_tokens: int = 512, thinking: bool | None = None) -> Prepared:
        """Messages for this turn: long input truncated, oldest turns dropped until the prompt fits the context."""
        head, turns, notices = self._turn(history, message, system)
        budget = None if self.context is None else self.context - max_new_tokens
        if budget is not None and budget < 1:
            raise SettingsError(f"Max new tokens ({max_new_tokens}) leaves no room for the prompt in the "
                                f"{self.context}-token context.", "lower max new tokens.")
        ids = render_ids(self.tokenizer, head + turns, thinking)
        dropped = 0
        while budget is not None and len(ids) > budget and len(turns) > 1:
            turns = turns[2:] if len(turns) > 2 and turns[1]["role"] == "assistant" else turns[1:]
            dropped += 1
            ids = render_ids(self.tokenizer, head + turns, thinking)
        if dropped:
            notices.append(f"The conversation was longer than the model's context ({self.context} tokens minus "
                           f"{max_new_tokens} for the answer): the {dropped} oldest turn(s) were left out.")
        if budget is not None and len(ids) > budget:
            turns, ids = self._truncate_message(head, turns[-1]["content"], budget, thinking)
            notices.append(f"Your message alone was longer than the context allows ({budget} tokens): it was cut.")
        return Prepared(head + turns, ids, notices)

    def _truncate_message(self, head: list[Message], message: str, budget: int,
                          thinking: bool | None) -> tuple[list[Message], list[int]]:
        tokens = self.tokenizer(message, add_special_tokens=False)["input_ids"]
        overhead = len(render_ids(self.tokenizer, [*head, {"role": "user", "content": ""}], thinking))
        keep = max(budget - overhead, 1)
        while True:
            text = self.tokenizer.decode(tokens[:keep], skip_special_tokens=True)
            turns = [{"role": "user", "content": text}]
            ids = render_ids(self.tokenizer, head + turns, thinking)
            if len(ids) <= budget or keep <= 1:
                return turns, ids
            keep -= max(len(ids) - budget, 1)

    # ------------------------------------------------------------------ jobs

    def running_jobs(self) -> int:
        """generate() calls still executing on the worker threads."""
        return sum(1 for future in list(self._jobs) if not future.done())

    def _start(self, jobs: list[_Job], pool: ThreadPoolExecutor | None = None) -> list[_Job]:
        for job in jobs:
            job.start(pool or self._pool)
            self._jobs = {f for f in self._jobs if not f.done()} | {job.future}
        return jobs

    # ------------------------------------------------------------------ generate

    def _kwargs(self, model: Any, input_ids: list[list[int]], settings: GenerationSettings,
                stop: threading.Event, *, static: bool = False) -> dict[str, Any]:
        import torch

        device = _device_of(model)
        ids = torch.tensor(input_ids, dtype=torch.long, device=device)
        kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), **settings.generate_kwargs(),
                  "eos_token_id": self._stop_ids or None, "pad_token_id": pad_token_id(model, self.tokenizer),
                  "stopping_criteria": _stop_criteria(stop)}
        if static:
            kwargs["cache_implementation"] = "static"
        return kwargs

    @property
    def compiles(self) -> bool:
        """Static or compiled decoding on CUDA, where the decoding step is compiled on the first answer."""
        return self.decode != "dynamic" and _device_of(self.model).type == "cuda"

    def warm_up(self) -> None:
        """Short answers, greedy and sampled, so the first visitor does not wait for the compilation (CUDA)."""
        self.reply([], "Hi", GenerationSettings(temperature=0, max_new_tokens=8))
        if self.decode == "compiled":  # sampling is its own graph
            self.reply([], "Hi", GenerationSettings(max_new_tokens=8))

    def stream_ids(self, input_ids: list[int], settings: GenerationSettings, *, session: str | None = None,
                   use_adapter: bool = True) -> Iterator[str]:
        """Yield the answer's text pieces for already-rendered `input_ids`."""
        with self._answering(session) as stop:
            out: queue.Queue = queue.Queue()
            streamer = RowStreamer(self.tokenizer, 1, self._stop_ids, out=out)
            # Static/compiled decoding for plain chat rows only: a base row's adapter-switching hooks do not compile.
            plain_row = use_adapter or not self.shares_base
            if self._decoder is not None and plain_row:
                job = _Job(self._compiled_answer(input_ids, settings, streamer, stop), streamer, self._lock)
            else:
                kwargs = self._kwargs(self.model, [input_ids], settings, stop,
                                      static=self.decode != "dynamic" and plain_row)
                if self.shares_base and not use_adapter:
                    kwargs["adapter_names"] = ["__base__"]
                job = _Job.transformers(self.model, kwargs, streamer, self._lock)
            pool = self._graph_pool if plain_row else self._pool
            for _, text in _drain(self._start([job], pool), out, stop):
                yield text

    def _compiled_answer(self, input_ids: list[int], settings: GenerationSettings, streamer: RowStreamer,
                         stop: threading.Event) -> Callable[[], None]:
        settings.validate()
        minimum = getattr(self.model.generation_config, "min_new_tokens", None) or 0
        sampling = Sampling(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k,
                            repetition_penalty=settings.repetition_penalty,
                            max_new_tokens=settings.max_new_tokens, min_new_tokens=minimum)

        def answer() -> None:
            self._decoder.generate(input_ids, sampling, lambda token: streamer.put_tokens([[token]]), stop.is_set)
            streamer.end()

        return answer

    def stream(self, history: Sequence[Message], message: str, settings: GenerationSettings | None = None, *,
               system: str | None = None, session: str | None = None,
               notice: Callable[[str], None] | None = None) -> Iterator[str]:
        """Yield the answer to `message` after `history`, piece by piece."""
        settings, prepared = self._begin(history, message, settings, system, notice)
        yield from self.stream_ids(prepared.input_ids, settings, session=session)

    def stream_compare(self, message: str, settings: GenerationSettings | None = None, *,
                       history: Sequence[Message] = (), system: str | None = None, session: str | None = None,
                       notice: Callable[[str], None] | None = None) -> Iterator[tuple[str, str]]:
        """Yield (base_text, finetuned_text) so far, both answering the same prompt at the same time."""
        if not self.can_compare:
            raise SettingsError("Compare needs the base model, and this model has none known.",
                                "start the app with --base BASE (and --adapter ADAPTER), or a run directory.")
        settings, prepared = self._begin(history, message, settings, system, notice)
        texts = ["", ""]
        out: queue.Queue = queue.Queue()
        with self._answering(session) as stop:
            if self.shares_base:
                kwargs = self._kwargs(self.model, [prepared.input_ids] * 2, settings, stop)
                kwargs["adapter_names"] = ["__base__", _adapter_name(self.model)]
                jobs = [_Job.transformers(self.model, kwargs, RowStreamer(self.tokenizer, 2, self._stop_ids, out=out),
                                          self._lock)]
            else:
                jobs = [_Job.transformers(model, self._kwargs(model, [prepared.input_ids], settings, stop),
                                          RowStreamer(self.tokenizer, 1, self._stop_ids, row_offset=row, out=out))
                        for row, model in enumerate((self.base_model, self.model))]
            for row, text in _drain(self._start(jobs), out, stop):
                texts[row] += text
                yield texts[0], texts[1]


def resolve_decode(choice: str, model: Any) -> str:
    """`auto` means static on CUDA (compiled, CUDA graphs) for 16/32-bit and bitsandbytes 4-bit weights: on an H100
    it decoded a 7B shape 3.5x faster than eager in bf16 and 3.6x in nf4 (docs/benchmarks.md). Dynamic elsewhere: on
    CPU nothing gets compiled, other quantisations (8-bit, GPTQ, AWQ) have not been measured compiled, and some
    models (e.g. remote-code ones) have no static cache. `compiled` is not chosen by auto until measured on a GPU."""
    if choice != "auto":
        return choice
    quantized = getattr(model, "is_quantized", False) or getattr(model, "quantization_method", None)
    compiles = (not quantized or getattr(model, "is_loaded_in_4bit", False)) and supports_static_cache(model)
    return "static" if _device_of(model).type == "cuda" and compiles else "dynamic"


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def _adapter_name(model: Any) -> str:
    return getattr(model, "active_adapter", None) or "default"


def _device_of(model: Any) -> Any:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return getattr(model, "device", "cpu")
