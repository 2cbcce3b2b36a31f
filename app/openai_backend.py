"""`--backend openai`: answers stream from an external OpenAI-compatible server (LMDeploy `api_server`, vLLM,
llama.cpp's server) instead of a model in this process, so the page can sit in front of a multi-GPU engine.

The server renders the chat template; this side sends `messages` to `POST {base}/chat/completions` with
`stream: true` and reads the server-sent events. Stop (or a closed page, Ctrl-C) closes the HTTP stream, which
makes those servers stop generating. The API key comes only from the environment (OPENAI_API_KEY) and is never
printed. History trimming needs the context size (`--context`, or `max_model_len` from `/v1/models` as vLLM
reports it) and counts tokens by an estimate (one per CJK character, one per three other characters), since
servers have no common tokenize endpoint; a prompt the server still finds too long comes back as an error with
the fix.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import httpx

from .backend import Engine, Message
from .engine import DEFAULT_MAX_INPUT_CHARS, GenerationSettings, Prepared
from .errors import BackendError, SettingsError

START_FIX = ("start the server (see Spaces.md, 'An external serving engine') or correct --base-url / "
             "OPENAI_BASE_URL.")
KEY_FIX = ("set OPENAI_API_KEY to the key the server was started with (llama.cpp --api_key, vLLM --api-key, "
           "LMDeploy --api-keys).")
TOKENS_PER_MESSAGE = 4  # role markers and separators of a chat template, roughly


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: CJK characters are about one token each, other text about three characters."""
    wide = sum(1 for ch in text if ord(ch) >= 0x2E80)
    return wide + (len(text) - wide + 2) // 3


def sampling(settings: GenerationSettings) -> dict[str, Any]:
    """The request fields for `settings`: OpenAI's, plus top_k and both repetition-penalty spellings, which
    llama.cpp (`repeat_penalty`), vLLM and LMDeploy (`repetition_penalty`) accept as extensions."""
    settings.validate()
    body: dict[str, Any] = {"max_tokens": int(settings.max_new_tokens), "temperature": float(settings.temperature),
                            "top_p": float(settings.top_p)}
    if settings.top_k > 0:
        body["top_k"] = int(settings.top_k)
    if settings.repetition_penalty != 1:
        body["repetition_penalty"] = body["repeat_penalty"] = float(settings.repetition_penalty)
    return body


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The `data:` payloads of a server-sent event stream (comments, pings and other fields skipped)."""
    for line in lines:
        if line.startswith("data:"):
            yield line[5:].strip()


class OpenAIEngine(Engine):
    """Chat with models served by an OpenAI-compatible server; `base_model` (a second served model) for compare."""

    def __init__(self, base_url: str, model: str, *, base_model: str | None = None, api_key: str | None = None,
                 context: int | None = None, max_input_chars: int = DEFAULT_MAX_INPUT_CHARS, default_system: str = "",
                 info: dict[str, str] | None = None, served: Sequence[str] = (), timeout: float = 300):
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.base_model = base_model
        self.context = context
        self.max_input_chars = max_input_chars
        self.default_system = default_system
        self.info = dict(info or {})
        self.served = list(served)
        self._key = api_key or None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=10))
        self.closers: list[Callable[[], None]] = []  # e.g. stopping the server this app started

    @classmethod
    def connect(cls, base_url: str, *, model: str | None = None, base_model: str | None = None,
                api_key: str | None = None, context: int | None = None, **options: Any) -> OpenAIEngine:
        """Probe `GET /models` (a clear error when the server is unreachable, refuses the key or lacks the model),
        pick the model (default: the first served), and describe the set-up for the Model tab."""
        engine = cls(base_url, model or "", base_model=base_model, api_key=api_key, context=context, **options)
        listing = engine._models()
        if listing is None and not engine.base_url.endswith("/v1"):  # "http://host:8000" for "http://host:8000/v1"
            engine.base_url += "/v1"
            listing = engine._models()
        if listing is None:
            raise BackendError(f"{engine.base_url}/models is not found (HTTP 404): this is not the address of an "
                               "OpenAI-compatible API.", "pass the API's base URL, e.g. http://HOST:PORT/v1.")
        engine.served = [str(entry.get("id")) for entry in listing if entry.get("id")]
        if not engine.served:
            raise BackendError(f"The server at {engine.base_url} serves no model (GET /models is empty).",
                               "start it with a model.")
        for name, flag in ((model, "--served-model"), (base_model, "--served-base-model")):
            if name and name not in engine.served:
                raise BackendError(f"The server at {engine.base_url} does not serve '{name}'; it serves: "
                                   f"{', '.join(engine.served)}.", f"pass {flag} with one of those names.")
        engine.model = model or engine.served[0]
        if engine.context is None:
            lengths = [entry.get("max_model_len") for entry in listing if entry.get("id") == engine.model]
            engine.context = int(lengths[0]) if lengths and isinstance(lengths[0], int) else None
        engine.info = {
            "Backend": "OpenAI-compatible server (it renders the chat template)",
            "Base URL": engine.base_url,
            "Model": engine.model,
            "Base model (compare)": engine.base_model or "-",
            "Served models": ", ".join(engine.served),
            "API key": "set (from OPENAI_API_KEY)" if api_key else "none",
            "Default system prompt": engine.default_system or "(the server's chat template's own)",
            "History trimming": "estimated tokens (1 per CJK character, 1 per 3 other characters)"
            if engine.context else "off: the context size is unknown (pass --context)",
            **engine.info,
        }
        return engine

    def close(self) -> None:
        self.http.close()
        for closer in self.closers:
            closer()

    # ------------------------------------------------------------------ capabilities

    @property
    def can_compare(self) -> bool:
        return bool(self.base_model)

    @property
    def compare_mode(self) -> str:
        if self.base_model:
            return f"two served models ({self.base_model} vs {self.model})"
        return "off (no --served-base-model)"

    @property
    def compare_hint(self) -> str:
        return (f"Compare needs a second model on the server: start the app with `--served-base-model NAME`"
                f"{self._served_list()}.")

    def _served_list(self) -> str:
        return f" (this server serves: {', '.join(self.served)})" if self.served else ""

    # ------------------------------------------------------------------ prompt

    def prepare(self, history: Sequence[Message], message: str, *, system: str | None = None,
                max_new_tokens: int = 512, thinking: bool | None = None) -> Prepared:
        """Messages for this turn: long input cut, oldest turns dropped while the estimate exceeds the context.
        The server renders the prompt with its own template defaults: `thinking` is not sent."""
        head, turns, notices = self._turn(history, message, system)
        if self.context is None:
            return Prepared(head + turns, [], notices)
        budget = self.context - max_new_tokens
        if budget < 1:
            raise SettingsError(f"Max new tokens ({max_new_tokens}) leaves no room for the prompt in the "
                                f"{self.context}-token context.", "lower max new tokens.")

        def size(messages: list[Message]) -> int:
            return sum(estimate_tokens(m["content"]) + TOKENS_PER_MESSAGE for m in messages)

        dropped = 0
        while size(head + turns) > budget and len(turns) > 1:
            turns = turns[2:] if len(turns) > 2 and turns[1]["role"] == "assistant" else turns[1:]
            dropped += 1
        if dropped:
            notices.append(f"The conversation was longer than the model's context ({self.context} tokens minus "
                           f"{max_new_tokens} for the answer): the {dropped} oldest turn(s) were left out.")
        if size(head + turns) > budget:
            text = turns[-1]["content"]
            while text and size([*head, {"role": "user", "content": text}]) > budget:
                text = text[: len(text) * 3 // 4]
            turns = [{"role": "user", "content": text}]
            notices.append(f"Your message alone was longer than the context allows ({budget} tokens): it was cut.")
        return Prepared(head + turns, [], notices)

    # ------------------------------------------------------------------ generate

    def stream(self, history: Sequence[Message], message: str, settings: GenerationSettings | None = None, *,
               system: str | None = None, session: str | None = None,
               notice: Callable[[str], None] | None = None) -> Iterator[str]:
        settings, prepared = self._begin(history, message, settings, system, notice)
        with self._answering(session) as stop:
            yield from self.stream_messages(self.model, prepared.messages, settings, stop)

    def stream_compare(self, message: str, settings: GenerationSettings | None = None, *,
                       history: Sequence[Message] = (), system: str | None = None, session: str | None = None,
                       notice: Callable[[str], None] | None = None) -> Iterator[tuple[str, str]]:
        if not self.can_compare:
            raise SettingsError("Compare needs a second served model (the base), and none was named.",
                                f"start the app with --served-base-model NAME{self._served_list()}.")
        settings, prepared = self._begin(history, message, settings, system, notice)
        out: queue.Queue = queue.Queue()

        def pump(row: int, model: str, stop: threading.Event) -> None:
            try:
                for text in self.stream_messages(model, prepared.messages, settings, stop):
                    out.put((row, text))
                out.put((row, None))
            except BaseException as exc:  # handed to the reader, which re-raises it
                out.put((row, exc))

        texts = ["", ""]
        with self._answering(session) as stop:
            try:
                for row, model in enumerate((self.base_model, self.model)):
                    threading.Thread(target=pump, args=(row, model, stop), daemon=True,
                                     name=f"app-openai-{row}").start()
                remaining = 2
                while remaining:
                    row, item = out.get()
                    if item is None:
                        remaining -= 1
                    elif isinstance(item, BaseException):
                        raise item
                    else:
                        texts[row] += item
                        yield texts[0], texts[1]
            finally:
                stop.set()  # both requests end at their next chunk (their threads close the streams)

    def stream_messages(self, model: str, messages: list[Message], settings: GenerationSettings,
                        stop: threading.Event | None = None) -> Iterator[str]:
        """Yield the text pieces the server streams for `messages`; closing this generator or setting `stop`
        closes the HTTP stream, and the server stops generating."""
        body = {"model": model, "messages": messages, "stream": True, **sampling(settings)}
        try:
            with self.http.stream("POST", f"{self.base_url}/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._http_error(response)
                for data in sse_data(response.iter_lines()):
                    if data == "[DONE]" or (stop is not None and stop.is_set()):
                        return
                    chunk = json.loads(data)
                    if chunk.get("error"):
                        raise BackendError(f"The server at {self.base_url} failed during the answer: "
                                           f"{self._detail(chunk)}.", "see the server's log.")
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            yield text
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        except json.JSONDecodeError as exc:
            raise BackendError(f"The server at {self.base_url} sent a stream that is not OpenAI chat chunks "
                               f"({exc.msg}).", "point --base-url at an OpenAI-compatible API (…/v1).") from exc

    # ------------------------------------------------------------------ errors

    def _models(self) -> list[dict[str, Any]] | None:
        """GET /models: its entries, None for a 404; anything else wrong is a BackendError."""
        try:
            response = self.http.get(f"{self.base_url}/models", timeout=30)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise self._http_error(response)
        try:
            data = response.json().get("data")
        except (ValueError, AttributeError) as exc:
            raise BackendError(f"{self.base_url}/models did not answer with JSON.",
                               "pass the API's base URL, e.g. http://HOST:PORT/v1.") from exc
        return [entry for entry in data or [] if isinstance(entry, dict)]

    def _transport_error(self, exc: httpx.HTTPError) -> BackendError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return BackendError(self._redact(f"Cannot reach the OpenAI-compatible server at {self.base_url} "
                                             f"({_first_line(exc)})."), START_FIX)
        if isinstance(exc, httpx.TimeoutException):
            return BackendError(f"The server at {self.base_url} did not answer in time ({type(exc).__name__}).",
                                "check that it is not overloaded, then try again.")
        return BackendError(self._redact(f"The connection to {self.base_url} failed ({type(exc).__name__}: "
                                         f"{_first_line(exc)})."), "check that the server is still running.")

    def _http_error(self, response: httpx.Response) -> BackendError:
        status = response.status_code
        what = f"HTTP {status}: {self._detail(response)}"
        if status in (401, 403):
            return BackendError(f"The server at {self.base_url} refused the API key ({what}).", KEY_FIX)
        if status == 404:
            return BackendError(f"The server at {self.base_url} has no such model or path ({what}).",
                                f"check --base-url (it ends in /v1) and --served-model (one of: "
                                f"{', '.join(self.served) or 'GET /v1/models'}).")
        if status == 400 and any(word in what.lower() for word in ("context", "too long", "maximum", "exceed")):
            return BackendError(f"The server refused the prompt as too long ({what}).",
                                "press Clear (or RESET), or pass --context with the server's context size so the "
                                "app trims the history itself.")
        if status >= 500:
            return BackendError(f"The server at {self.base_url} failed ({what}).",
                                "see the server's log (out of memory? model crashed?) and restart it if needed.")
        return BackendError(f"The server at {self.base_url} refused the request ({what}).",
                            "check the generation settings against what the server accepts.")

    def _detail(self, source: httpx.Response | dict[str, Any]) -> str:
        """The error message in a FastAPI (`detail`), OpenAI/vLLM (`error.message`) or LMDeploy (`message`) body."""
        body: Any = source
        if isinstance(source, httpx.Response):
            try:
                body = source.json()
            except ValueError:
                return self._redact(" ".join(source.text.split())[:200] or source.reason_phrase)
        error = body.get("error") if isinstance(body, dict) else None
        for value in (error.get("message") if isinstance(error, dict) else error,
                      body.get("detail") if isinstance(body, dict) else None,
                      body.get("message") if isinstance(body, dict) else None):
            if value:
                return self._redact(" ".join(str(value).split())[:300])
        return self._redact(json.dumps(body)[:200])

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
