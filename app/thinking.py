"""Reasoning models' "thinking": the text between <think> and </think> that Qwen3 (thinking on) and the
DeepSeek-R1 distills write before their answer. It is shown apart from the answer (a collapsible block on the
page, dimmed in the terminal), never as raw tags, and left out of the history sent back to the model, as these
models' own chat templates do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OPEN, CLOSE = "<think>", "</think>"
TITLE = "Thinking"


def supports_thinking(tokenizer: Any) -> bool:
    """The chat template has a thinking switch (Qwen3's `enable_thinking`, also in our training templates)."""
    return "enable_thinking" in str(getattr(tokenizer, "chat_template", "") or "")


@dataclass(frozen=True)
class Split:
    thinking: str  # the reasoning so far ("" when there is none)
    answer: str  # the text after it
    thinking_done: bool  # the closing tag arrived (or there was no thinking)


def split(text: str) -> Split:
    """Separate a (possibly still streaming) answer into thinking and answer. A `</think>` without an opening tag
    counts too: the R1 distills' prompt opens the block itself."""
    start = text.lstrip()
    if start.startswith(OPEN):
        body = start[len(OPEN):]
        thought, closed, answer = body.partition(CLOSE)
        return Split(thought.strip(), answer.lstrip() if closed else "", bool(closed))
    if CLOSE in text:
        thought, _, answer = text.partition(CLOSE)
        return Split(thought.strip(), answer.lstrip(), True)
    return Split("", text, True)


def answer_only(text: str) -> str:
    return split(text).answer


def for_display(history: list[dict]) -> list[dict]:
    """Chat messages for gr.Chatbot: an assistant turn with thinking becomes a collapsible "Thinking" message
    (Gradio's metadata title) followed by the answer."""
    shown: list[dict] = []
    for message in history:
        content = message.get("content")
        if message.get("role") != "assistant" or not isinstance(content, str):
            shown.append(message)
            continue
        parts = split(content)
        if not parts.thinking and parts.thinking_done:
            shown.append(message)
            continue
        status = "done" if parts.thinking_done else "pending"
        shown.append({"role": "assistant", "content": parts.thinking, "metadata": {"title": TITLE, "status": status}})
        if parts.answer:
            shown.append({"role": "assistant", "content": parts.answer})
    return shown
