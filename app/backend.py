"""What the page and the terminal chat talk to: one `Engine` interface, two backends.

`ChatEngine` (app/engine.py) runs a transformers model in this process; `OpenAIEngine` (app/openai_backend.py)
streams from an external OpenAI-compatible server (LMDeploy `api_server`, vLLM, llama.cpp's server). Both keep a
registry of running answers by session, so a Stop button (or a new message from the same session) ends the right
one; history lives with the caller, so sessions never see each other's turns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import SettingsError
from .thinking import answer_only

Message = dict[str, str]

STOP_RACE_S = 10.0


@dataclass
class GenerationSettings:
    max_new_tokens: int = 512
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.9
    top_k: int = 40
    repetition_penalty: float = 1.1
    thinking: bool | None = None  # models with a thinking switch (Qwen3): think first; None: the template's default

    def validate(self) -> GenerationSettings:
        checks = [
            (self.max_new_tokens >= 1, f"max new tokens must be at least 1, not {self.max_new_tokens}",
             "use e.g. 512"),
            (self.temperature >= 0, f"temperature must be >= 0, not {self.temperature}", "use 0 for greedy, 0.7"),
            (0 < self.top_p <= 1, f"top-p must be in (0, 1], not {self.top_p}", "use 0.9"),
            (self.top_k >= 0, f"top-k must be >= 0, not {self.top_k}", "use 40 (0 = off)"),
            (self.repetition_penalty > 0, f"repetition penalty must be > 0, not {self.repetition_penalty}",
             "use 1.1 (1 = off)"),
        ]
        for ok, message, fix in checks:
            if not ok:
                raise SettingsError(message[0].upper() + message[1:] + ".", fix + ".")
        return self

    def generate_kwargs(self) -> dict[str, Any]:
        self.validate()
        common = {"max_new_tokens": int(self.max_new_tokens), "repetition_penalty": float(self.repetition_penalty)}
        if self.temperature == 0:
            # None (not the model's generation_config values) keeps transformers from warning about sampling flags.
            return {**common, "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {**common, "do_sample": True, "temperature": float(self.temperature), "top_p": float(self.top_p),
                "top_k": int(self.top_k)}


class Engine:
    """The interface of a chat backend. Subclasses set `info`, `context`, `default_system` and implement
    `can_compare`, `compare_mode`, `compare_hint`, `prepare`, `stream` and `stream_compare`."""

    info: dict[str, str]
    context: int | None
    default_system: str
    max_input_chars: int

    def __init__(self) -> None:
        self._active: dict[str, threading.Event] = {}  # session -> the stop event of its running answer
        self._stopped: set[str] = set()  # sessions whose latest answer `stop` ended
        self._closed: dict[str, float] = {}  # session -> when the caller closed its answer's stream early
        self._active_lock = threading.Lock()

    # ------------------------------------------------------------------ to implement

    @property
    def can_compare(self) -> bool:
        raise NotImplementedError

    @property
    def compare_mode(self) -> str:
        raise NotImplementedError

    @property
    def compare_hint(self) -> str:
        """What to do to get a Compare tab, shown when `can_compare` is False."""
        raise NotImplementedError

    @property
    def supports_thinking(self) -> bool:
        """The model has a thinking switch (GenerationSettings.thinking)."""
        return False

    def prepare(self, history: Sequence[Message], message: str, *, system: str | None = None,
                max_new_tokens: int = 512, thinking: bool | None = None) -> Any:
        """This turn's messages fitted to the context, with a notice for every trim or cut."""
        raise NotImplementedError

    def stream(self, history: Sequence[Message], message: str, settings: Any = None, *, system: str | None = None,
               session: str | None = None, notice: Callable[[str], None] | None = None) -> Iterator[str]:
        """Yield the answer to `message` after `history`, piece by piece."""
        raise NotImplementedError

    def stream_compare(self, message: str, settings: Any = None, *, history: Sequence[Message] = (),
                       system: str | None = None, session: str | None = None,
                       notice: Callable[[str], None] | None = None) -> Iterator[tuple[str, str]]:
        """Yield (base_text, finetuned_text) so far, both answering the same prompt at the same time."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared

    def _begin(self, history: Sequence[Message], message: str, settings: Any, system: str | None,
               notice: Callable[[str], None] | None) -> tuple[Any, Any]:
        """(validated settings, prepared turn) for an answer; the turn's notices (trims, cuts) go to `notice`."""
        settings = (settings or GenerationSettings()).validate()
        prepared = self.prepare(history, message, system=system, max_new_tokens=settings.max_new_tokens,
                                thinking=getattr(settings, "thinking", None))
        for text in prepared.notices:
            (notice or ignore)(text)
        return settings, prepared

    def _turn(self, history: Sequence[Message], message: str,
              system: str | None) -> tuple[list[Message], list[Message], list[str]]:
        """(system head, history + this message, notices): the message cut to `max_input_chars`, with a notice."""
        notices: list[str] = []
        if len(message) > self.max_input_chars:
            notices.append(f"Your message was cut to its first {self.max_input_chars:,} characters "
                           f"(it had {len(message):,}).")
            message = message[: self.max_input_chars]
        system = self.default_system if system is None else system
        head = [{"role": "system", "content": system}] if system.strip() else []
        return head, [*clean_history(history), {"role": "user", "content": message}], notices

    def reply(self, history: Sequence[Message], message: str, settings: Any = None, **options: Any) -> str:
        return "".join(self.stream(history, message, settings, **options)).strip()

    def stop(self, session: str) -> bool:
        """Stop the answer running for `session` (a Stop button); True if one was running.

        Gradio cancels the page's event at the moment it calls Stop, and the cancel may close the answer first:
        an answer of `session` closed that way in the last STOP_RACE_S seconds counts as stopped by this call."""
        with self._active_lock:
            event = self._active.get(session)
            if event is not None:
                event.set()
                self._stopped.add(session)
                return True
            closed_at = self._closed.pop(session, None)
        return closed_at is not None and time.monotonic() - closed_at < STOP_RACE_S

    def was_stopped(self, session: str | None) -> bool:
        """Whether `stop` ended the latest answer of `session` (asked once, when that answer's stream has ended)."""
        with self._active_lock:
            if session in self._stopped:
                self._stopped.discard(session)
                return True
            return False

    def active_generations(self) -> int:
        """Answers registered as running (a Stop button can reach them)."""
        with self._active_lock:
            return len(self._active)

    @contextmanager
    def _answering(self, session: str | None) -> Iterator[threading.Event]:
        """The stop event of a new answer of `session`, registered while the answer runs. A new answer of the same
        session ends the previous one; an answer whose stream the caller closes early is remembered for `stop`."""
        event = threading.Event()
        key = session or f"anonymous-{id(event)}"
        with self._active_lock:
            previous = self._active.get(key)
            if previous is not None:  # a new message from the same session ends the old answer
                previous.set()
            self._active[key] = event
            self._stopped.discard(key)
            now = time.monotonic()
            self._closed = {k: at for k, at in self._closed.items() if k != key and now - at < STOP_RACE_S}
        try:
            yield event
        except GeneratorExit:  # the caller dropped the stream (the page cancelled the event)
            with self._active_lock:
                self._closed[key] = time.monotonic()
            raise
        finally:
            with self._active_lock:
                if self._active.get(key) is event:
                    del self._active[key]


def clean_history(history: Sequence[Message]) -> list[Message]:
    """Only user/assistant turns with text (a UI history may carry metadata or empty placeholders); an answer's
    thinking is left out, as thinking models' own templates do."""
    turns = []
    for turn in history:
        role, content = turn.get("role"), turn.get("content")
        if role == "assistant" and isinstance(content, str):
            content = answer_only(content)
        if role in ("user", "assistant") and isinstance(content, str) and content.strip():
            turns.append({"role": role, "content": content})
    return turns


def ignore(_: str) -> None:
    return None
