"""The Gradio page: a streaming chat tab, a base-vs-fine-tuned compare tab, settings and a model info panel.

History lives in per-session `gr.State` (one model instance serves every session). Each streamed update also
updates the state, so a stopped answer is kept exactly as far as it got. The Stop buttons stop the generating
thread itself (`Engine.stop`), not only the page.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import gradio as gr

from .backend import Engine, Message
from .engine import GenerationSettings
from .errors import AppError, BackendError
from .thinking import for_display

EXAMPLES = ["请介绍一下你自己", "你是谁？", "Who are you?", "What can you do?", "What is the capital of France?"]
CSS = """
#status {min-height: 1.5em}
.try-row {flex-wrap: wrap; gap: 6px; align-items: center}
.try-row::before {content: "Try:"; color: var(--body-text-color-subdued); font-size: var(--text-sm)}
.try-row button.try {flex: none; width: auto; white-space: nowrap}
footer {display: none !important}
"""


def _settings(max_new_tokens: float, temperature: float, top_p: float, top_k: float,
              repetition_penalty: float, thinking: bool = False) -> GenerationSettings:
    return GenerationSettings(int(max_new_tokens), float(temperature), float(top_p), int(top_k),
                              float(repetition_penalty), bool(thinking))


def _session(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def info_markdown(engine: Engine) -> str:
    rows = {**engine.info, "Compare": engine.compare_mode,
            "Context window": f"{engine.context} tokens" if engine.context else "unknown"}
    lines = ["| | |", "|---|---|"] + [f"| {key} | {_cell(value)} |" for key, value in rows.items()]
    return "\n".join(lines)


class StatusLine:
    """The status line under one answer: the engine's notices (trims, cuts) and, at the end, "Stopped." if Stop
    ended it. An update carries the text only when it changed: Stop writes "Stopped." itself, and the answer's
    updates still in flight must not wipe it."""

    def __init__(self, warn: bool = False):
        self.notices: list[str] = []
        self._warn = warn
        self._sent: str | None = None

    def notice(self, text: str) -> None:
        self.notices.append(text)
        if self._warn:
            gr.Warning(text)

    def update(self) -> Any:
        text = " ".join(self.notices)
        if text == self._sent:
            return gr.skip()
        self._sent = text
        return text

    def final(self, stopped: bool) -> str:
        return " ".join([*self.notices, "Stopped."] if stopped else self.notices)


def example_buttons(examples: list[str], target: gr.Textbox, prefix: str) -> None:
    """A "Try" row: each button puts its text into `target`, in the browser (no server call, no API endpoint).

    Not gr.Examples: Gradio 6.17's Examples throws "Cannot read properties of undefined (reading '0')" once per
    example when its sample components render late (seen on a slow CI machine, and always in a tab hidden at load).
    """
    if not examples:
        return
    with gr.Row(elem_id=f"{prefix}-examples", elem_classes="try-row"):
        for index, text in enumerate(examples):
            button = gr.Button(text, size="sm", variant="secondary", elem_id=f"{prefix}-example-{index}", scale=0,
                               min_width=0, elem_classes="try")
            button.click(None, None, [target], js=f"() => {json.dumps(text)}", api_visibility="private",
                         queue=False)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


class Handlers:
    """Event handlers bound to one engine; plain methods so they are easy to read and to test."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def chat(self, message: str, history: list[Message] | None, system: str, max_new_tokens: float,
             temperature: float, top_p: float, top_k: float, repetition_penalty: float, thinking: bool = False,
             request: gr.Request = None) -> Iterator[tuple[list[Message], list[Message], str, str]]:
        """Stream the answer to `message`; yields (chatbot, history state, textbox, status)."""
        history = list(history or [])
        if not (message or "").strip():  # an empty message is ignored
            yield history, history, "", ""
            return
        yield from self._answer(message, history, system,
                                _settings(max_new_tokens, temperature, top_p, top_k, repetition_penalty, thinking),
                                request)

    def retry(self, history: list[Message] | None, system: str, max_new_tokens: float, temperature: float,
              top_p: float, top_k: float, repetition_penalty: float, thinking: bool = False,
              request: gr.Request = None) -> Iterator[tuple[list[Message], list[Message], str, str]]:
        """Answer the last user message again (the previous answer is replaced)."""
        history = list(history or [])
        while history and history[-1]["role"] != "user":
            history.pop()
        if not history:
            yield history, history, "", "Nothing to retry yet."
            return
        message = history.pop()["content"]
        yield from self._answer(message, history, system,
                                _settings(max_new_tokens, temperature, top_p, top_k, repetition_penalty, thinking),
                                request)

    def _answer(self, message: str, history: list[Message], system: str, settings: GenerationSettings,
                request: gr.Request | None) -> Iterator[tuple[list[Message], list[Message], str, str]]:
        status = StatusLine(warn=True)
        answer = ""
        turn = [{"role": "user", "content": message}]
        session = _session(request)
        try:
            stream = self.engine.stream(history, message, settings, system=system if system.strip() else None,
                                        session=session, notice=status.notice)
            yield for_display([*history, *turn]), [*history, *turn], "", status.update()
            for piece in stream:
                answer += piece
                updated = [*history, *turn, {"role": "assistant", "content": answer}]
                yield for_display(updated), updated, "", status.update()
        except BackendError as error:  # the server failed: say so in the status line; the page keeps working
            kept = [*history, *turn, {"role": "assistant", "content": answer}] if answer.strip() else history
            yield for_display(kept), kept, "" if answer.strip() else message, f"**Error:** {error.one_line()}"
            return
        except AppError as error:
            raise gr.Error(error.one_line()) from error
        final = [*history, *turn, {"role": "assistant", "content": answer.strip()}]
        yield for_display(final), final, "", status.final(self.engine.was_stopped(session))

    def stop(self, request: gr.Request = None) -> str:
        stopped = self.engine.stop(_session(request) or "")
        return "Stopped." if stopped else ""

    def clear(self) -> tuple[list[Message], list[Message], str]:
        return [], [], ""

    def compare(self, message: str, system: str, max_new_tokens: float, temperature: float, top_p: float,
                top_k: float, repetition_penalty: float, thinking: bool = False,
                request: gr.Request = None) -> Iterator[tuple[list[Message], list[Message], str]]:
        """Stream the base and the fine-tuned answer to the same message side by side."""
        if not (message or "").strip():
            yield [], [], ""
            return
        user = {"role": "user", "content": message}
        status = StatusLine()
        session = _session(request)
        try:
            stream = self.engine.stream_compare(
                message, _settings(max_new_tokens, temperature, top_p, top_k, repetition_penalty, thinking),
                system=system if system.strip() else None, session=session, notice=status.notice)
            yield [user], [user], status.update()
            base = tuned = ""
            for base, tuned in stream:
                yield (for_display([user, {"role": "assistant", "content": base}]),
                       for_display([user, {"role": "assistant", "content": tuned}]), status.update())
            yield (for_display([user, {"role": "assistant", "content": base}]),
                   for_display([user, {"role": "assistant", "content": tuned}]),
                   status.final(self.engine.was_stopped(session)))
        except BackendError as error:
            yield [user], [user], f"**Error:** {error.one_line()}"
        except AppError as error:
            raise gr.Error(error.one_line()) from error


def build_ui(engine: Engine, *, title: str = "", defaults: GenerationSettings | None = None,
             examples: list[str] | None = None, concurrency: int = 1, queue_size: int = 32,
             initial_tab: str = "chat") -> gr.Blocks:
    """The whole page. `concurrency` answers run at once (the rest wait in a queue of `queue_size`)."""
    defaults = defaults or GenerationSettings()
    handlers = Handlers(engine)
    title = title or f"Chat with {engine.info.get('Model', 'your model')}"
    examples = examples if examples is not None else EXAMPLES

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}")
        history = gr.State([])
        with gr.Accordion("Settings", open=False):
            system = gr.Textbox(value=engine.default_system, label="System prompt (empty = the model's default)",
                                lines=2, elem_id="system")
            with gr.Row():
                max_new_tokens = gr.Slider(1, 4096, value=defaults.max_new_tokens, step=1, label="Max new tokens")
                temperature = gr.Slider(0, 2, value=defaults.temperature, step=0.05, label="Temperature (0 = greedy)")
                top_p = gr.Slider(0.05, 1, value=defaults.top_p, step=0.05, label="Top-p")
                top_k = gr.Slider(0, 200, value=defaults.top_k, step=1, label="Top-k (0 = off)")
                repetition_penalty = gr.Slider(1.0, 2.0, value=defaults.repetition_penalty, step=0.05,
                                               label="Repetition penalty")
            # always on the page, so /chat's API is the same for every model; shown where the model has the switch
            thinking = gr.Checkbox(value=bool(defaults.thinking), label="Think before answering (shown folded)",
                                   visible=engine.supports_thinking, elem_id="thinking")
        knobs = [system, max_new_tokens, temperature, top_p, top_k, repetition_penalty, thinking]

        with gr.Tabs(selected=initial_tab):
            with gr.Tab("Chat", id="chat"):
                chatbot = gr.Chatbot(label="Chat", height=460, elem_id="chatbot", feedback_options=None)
                with gr.Row():
                    message = gr.Textbox(placeholder="Type a message and press Enter", show_label=False, scale=6,
                                         elem_id="message", autofocus=True)
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                with gr.Row():
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                    retry = gr.Button("Retry", elem_id="retry")
                    clear = gr.Button("Clear", elem_id="clear")
                status = gr.Markdown("", elem_id="status")
                example_buttons(examples, message, "chat")

            with gr.Tab("Compare", id="compare"):
                if engine.can_compare:
                    gr.Markdown(f"The same message, answered by the base model and by the fine-tuned model at the same "
                                f"time ({engine.compare_mode}). Each answer starts fresh (no history).")
                else:
                    gr.Markdown(engine.compare_hint)
                with gr.Row():
                    compare_message = gr.Textbox(placeholder="A question for both models", show_label=False, scale=6,
                                                 elem_id="compare-message", value=examples[0] if examples else "")
                    compare_send = gr.Button("Compare", variant="primary", scale=1, elem_id="compare-send",
                                             interactive=engine.can_compare)
                    compare_stop = gr.Button("Stop", variant="stop", scale=1, elem_id="compare-stop")
                with gr.Row():
                    base_box = gr.Chatbot(label="Base model", height=380, elem_id="compare-base", feedback_options=None)
                    tuned_box = gr.Chatbot(label="Fine-tuned", height=380, elem_id="compare-tuned",
                                           feedback_options=None)
                compare_status = gr.Markdown("", elem_id="compare-status")
                example_buttons(examples, compare_message, "compare")

            with gr.Tab("Model", id="model"):
                gr.Markdown(info_markdown(engine), elem_id="model-info")

        chat_outputs = [chatbot, history, message, status]
        submitted = message.submit(handlers.chat, [message, history, *knobs], chat_outputs, api_name="chat",
                                   concurrency_id="generate")
        clicked = send.click(handlers.chat, [message, history, *knobs], chat_outputs, api_visibility="private",
                             concurrency_id="generate")
        retried = retry.click(handlers.retry, [history, *knobs], chat_outputs, api_name="retry",
                              concurrency_id="generate")
        stop.click(handlers.stop, None, [status], api_name="stop", queue=False, cancels=[submitted, clicked, retried])
        clear.click(handlers.clear, None, [chatbot, history, status], api_name="clear", queue=False)

        compare_args = ([compare_message, *knobs], [base_box, tuned_box, compare_status])
        compared = compare_send.click(handlers.compare, *compare_args, api_name="compare", concurrency_id="generate")
        compared_enter = compare_message.submit(handlers.compare, *compare_args, api_visibility="private",
                                                concurrency_id="generate")
        compare_stop.click(handlers.stop, None, [compare_status], api_visibility="private", queue=False,
                           cancels=[compared, compared_enter])

    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency)
    return demo
