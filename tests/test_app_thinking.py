"""Thinking models (Qwen3's switch, the R1 distills): the switch reaches the prompt, the thinking is shown apart
from the answer (folded on the page, set apart in the terminal) and is left out of the history sent back."""

from __future__ import annotations

import io

import pytest
from tiny_families import make_tiny_model

from app import thinking
from app.backend import Engine, clean_history
from app.cli import ThinkingWriter
from app.engine import ChatEngine, GenerationSettings
from app.main import check_port
from app.ui import Handlers, build_ui
from finetune.chat_template import build_chat_template, load_xtuner_template

ANSWER = ["<think>", "\nThe user asks", " who I am.\n", "</think>", "\n\n", "I am Xiaowei's", " assistant."]


def test_split_separates_thinking_from_the_answer_while_it_streams():
    assert thinking.split("<think>\nhmm") == thinking.Split("hmm", "", False)
    assert thinking.split("<think>\nhmm\n</think>\n\nHello") == thinking.Split("hmm", "Hello", True)
    assert thinking.split("R1 opened it in the prompt</think>Hi") == thinking.Split("R1 opened it in the prompt",
                                                                                   "Hi", True)
    assert thinking.split("Plain answer") == thinking.Split("", "Plain answer", True)
    assert thinking.split("<think>\n\n</think>\n\nNon-thinking form") == thinking.Split("", "Non-thinking form", True)


def test_page_messages_fold_the_thinking():
    history = [{"role": "user", "content": "Who are you?"},
               {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nI am Xiaowei."}]
    shown = thinking.for_display(history)
    assert shown[0] == history[0]
    assert shown[1] == {"role": "assistant", "content": "hmm", "metadata": {"title": "Thinking", "status": "done"}}
    assert shown[2] == {"role": "assistant", "content": "I am Xiaowei."}
    pending = thinking.for_display([{"role": "assistant", "content": "<think>\nstill going"}])
    assert pending == [{"role": "assistant", "content": "still going",
                        "metadata": {"title": "Thinking", "status": "pending"}}]
    assert thinking.for_display([{"role": "assistant", "content": "Plain"}]) == [{"role": "assistant",
                                                                                  "content": "Plain"}]


def test_history_sent_back_leaves_the_thinking_out():
    history = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>\nx\n</think>\n\nA"},
               {"role": "assistant", "content": "x", "metadata": {"title": "Thinking"}}]
    assert clean_history(history)[:2] == [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]


def test_terminal_sets_the_thinking_apart_and_never_prints_the_tags():
    out = io.StringIO()
    writer = ThinkingWriter(out)
    for piece in ANSWER:
        writer.write(piece)
    writer.close()
    assert out.getvalue() == "[thinking]\nThe user asks who I am.\n[/thinking]\nI am Xiaowei's assistant."


@pytest.fixture(scope="module")
def qwen3_engine(tmp_path_factory, embedded_model):
    """A tiny random-weight Qwen3 whose tokenizer carries the qwen3_chat training template (as a merged run's)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = make_tiny_model("qwen3", tmp_path_factory.mktemp("qwen3") / "model", embedded_model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = build_chat_template(load_xtuner_template("qwen3_chat"), default_system="S",
                                                  add_bos=False)
    return ChatEngine(AutoModelForCausalLM.from_pretrained(folder), tokenizer, default_system="S")


def test_switch_reaches_the_prompt(qwen3_engine, plain_engine):
    assert qwen3_engine.supports_thinking and not plain_engine.supports_thinking
    decode = qwen3_engine.tokenizer.decode
    plain = decode(qwen3_engine.prepare([], "hi", thinking=False).input_ids)
    think = decode(qwen3_engine.prepare([], "hi", thinking=True).input_ids)
    assert plain.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # the trained, non-thinking form
    assert think.endswith("<|im_start|>assistant\n") and plain.startswith(think)
    assert decode(qwen3_engine.prepare([], "hi").input_ids) == plain  # default: as trained
    # a model without the switch ignores it
    assert plain_engine.prepare([], "hi", thinking=True).input_ids == plain_engine.prepare([], "hi").input_ids


class ScriptedThinker(Engine):
    """A test double for a thinking model's output (the tiny random models write no <think> blocks): it streams
    ANSWER and records the settings it was asked with."""

    info = {"Model": "scripted"}
    context = None
    default_system = ""
    max_input_chars = 1000

    def __init__(self):
        super().__init__()
        self.settings: list[GenerationSettings] = []

    supports_thinking = True
    can_compare = False
    compare_mode = "off"
    compare_hint = "none"

    def stream(self, history, message, settings=None, **options):
        self.settings.append(settings)
        yield from ANSWER


def test_page_folds_the_thinking_and_has_the_switch():
    from gradio_client import Client

    engine = ScriptedThinker()
    chunks = list(Handlers(engine).chat("Who are you?", [], "", 64, 0.0, 0.9, 40, 1.1, True))
    chatbot, history = chunks[-1][0], chunks[-1][1]
    assert engine.settings[-1].thinking is True
    assert history[-1]["content"] == "".join(ANSWER).strip()  # the state keeps the raw answer
    assert chatbot[1]["metadata"]["title"] == "Thinking" and chatbot[2]["content"] == "I am Xiaowei's assistant."
    assert all("<think>" not in str(m["content"]) for chunk in chunks for m in chunk[0])

    demo = build_ui(engine)
    demo.launch(server_name="127.0.0.1", server_port=check_port("127.0.0.1", 0), prevent_thread_lock=True,
                quiet=True)
    try:
        checkbox = [c for c in demo.get_config_file()["components"] if c.get("props", {}).get("elem_id") == "thinking"]
        assert checkbox and checkbox[0]["props"]["visible"] is True
        chatbot, _, _ = Client(demo.local_url, verbose=False).predict("Who are you?", api_name="/chat")
        assert chatbot[1]["metadata"]["title"] == "Thinking"
        assert "<think>" not in str(chatbot)
    finally:
        demo.close()
