"""The chat app's engine on the real embedded model: streaming, prompt = training template, stop, trimming, compare."""

from __future__ import annotations

import time

import pytest
import torch

from app.engine import ChatEngine, GenerationSettings, render_ids
from app.errors import SettingsError
from tests.chat_helpers import CONVERSATION, GREEDY, MESSAGES, raw_generate, xtuner_input_ids


@pytest.mark.parametrize("prompt", ["Write one sentence about the sea.", "List 5 fruits as a numbered list."])
def test_stream_yields_growing_text_equal_to_plain_generate(plain_engine, prompt):
    pieces = list(plain_engine.stream([], prompt, GREEDY))
    assert len(pieces) > 5  # streamed piece by piece, not in one lump
    prefixes = ["".join(pieces[:i]) for i in range(1, len(pieces) + 1)]
    assert all(len(a) < len(b) for a, b in zip(prefixes, prefixes[1:], strict=False))
    prepared = plain_engine.prepare([], prompt, max_new_tokens=32)
    expected = raw_generate(plain_engine.model, plain_engine.tokenizer, prepared.input_ids, 32)
    assert "".join(pieces) == expected
    if "list" in prompt:
        assert expected.count("\n") >= 2  # the streamer closes lines at newlines: the joins must be exact


def test_stream_keeps_multibyte_text_whole(plain_engine):
    text = "".join(plain_engine.stream([], "请用中文介绍一下北京。", GREEDY))
    assert "\ufffd" not in text
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text)


def test_prompt_is_the_training_template_byte_for_byte(adapter_engine):
    """Multi-turn history + system prompt render to exactly the ids XTuner trained on."""
    history = MESSAGES[:2]
    question = MESSAGES[2]["content"]
    prepared = adapter_engine.prepare(history, question, system=CONVERSATION[0]["system"])
    trained = xtuner_input_ids(adapter_engine.tokenizer, "qwen_chat", CONVERSATION)
    answer = adapter_engine.tokenizer(MESSAGES[3]["content"], add_special_tokens=False)["input_ids"]
    # the training ids are: prompt ids + answer ids + end-of-turn (and its newline)
    assert trained[: len(prepared.input_ids)] == prepared.input_ids
    assert trained[len(prepared.input_ids):][: len(answer)] == answer
    # no system given: the training system prompt is the default (from finetune_meta.json)
    assert adapter_engine.prepare(history, question).input_ids == prepared.input_ids


def test_stop_really_stops_the_generating_thread(plain_engine):
    settings = GenerationSettings(max_new_tokens=400, temperature=0.8)
    stream = plain_engine.stream([], "Tell me a very long story about a dragon.", settings, session="s1")
    pieces = [next(stream), next(stream)]
    assert plain_engine.active_generations() == 1 and plain_engine.running_jobs() == 1
    assert plain_engine.stop("s1") is True
    started = time.monotonic()
    pieces += list(stream)  # the stream ends by itself once the thread has stopped
    assert time.monotonic() - started < 10
    assert plain_engine.running_jobs() == 0  # generate() itself has returned
    assert plain_engine.active_generations() == 0
    tokens = plain_engine.tokenizer("".join(pieces), add_special_tokens=False)["input_ids"]
    assert len(tokens) < 100  # far from the 400 it was allowed
    assert plain_engine.stop("s1") is False  # nothing left to stop


def test_closing_the_stream_stops_the_thread(plain_engine):
    stream = plain_engine.stream([], "Count from one to one thousand.", GenerationSettings(max_new_tokens=400))
    next(stream)
    stream.close()  # what a cancelled web request or Ctrl-C does
    assert plain_engine.running_jobs() == 0  # generate() itself has returned
    assert plain_engine.active_generations() == 0


def test_a_stop_racing_the_pages_own_cancel_still_counts(plain_engine):
    """Gradio cancels the page's event while it calls Stop; when the cancel closes the stream first, Stop must still
    report the answer as stopped (once), or the page says nothing."""
    stream = plain_engine.stream([], "Count from one to one thousand.", GenerationSettings(max_new_tokens=400),
                                 session="racer")
    next(stream)
    stream.close()
    assert plain_engine.active_generations() == 0
    assert plain_engine.stop("racer") is True
    assert plain_engine.stop("racer") is False  # counted once
    assert plain_engine.stop("someone-else") is False
    assert plain_engine.was_stopped("racer") is False  # closed, not ended by Stop


def test_the_end_of_a_stopped_answer_knows_it_was_stopped(plain_engine):
    stream = plain_engine.stream([], "Tell me a very long story about a dragon.",
                                 GenerationSettings(max_new_tokens=400, temperature=0.8), session="s2")
    next(stream)
    assert plain_engine.stop("s2") is True
    list(stream)
    assert plain_engine.was_stopped("s2") is True
    assert plain_engine.was_stopped("s2") is False  # asked once, by the answer that ended
    finished = "".join(plain_engine.stream([], "Say hi.", GenerationSettings(max_new_tokens=4), session="s2"))
    assert finished and plain_engine.was_stopped("s2") is False  # an answer that simply ended was not stopped


def test_long_history_is_trimmed_oldest_first_with_a_notice(plain_engine):
    engine = ChatEngine(plain_engine.model, plain_engine.tokenizer, context=160)
    history = []
    for i in range(6):
        history += [{"role": "user", "content": f"Question number {i} about apples and pears?"},
                    {"role": "assistant", "content": f"Answer number {i}: apples and pears are both fruit."}]
    prepared = engine.prepare(history, "And the last question?", max_new_tokens=64)
    assert len(prepared.input_ids) <= 160 - 64
    assert prepared.notices and "oldest turn" in prepared.notices[0]
    kept = [m["content"] for m in prepared.messages]
    assert "Question number 0 about apples and pears?" not in kept
    assert "Answer number 5: apples and pears are both fruit." in kept  # the newest turns stay
    assert kept[-1] == "And the last question?"


def test_huge_message_is_truncated_with_a_notice(plain_engine):
    engine = ChatEngine(plain_engine.model, plain_engine.tokenizer, context=128, max_input_chars=2000)
    prepared = engine.prepare([], "word " * 5000, max_new_tokens=32)
    assert len(prepared.input_ids) <= 128 - 32
    assert any("cut to its first 2,000 characters" in n for n in prepared.notices)
    assert any("longer than the context" in n for n in prepared.notices)
    answer = "".join(engine.stream_ids(prepared.input_ids, GenerationSettings(max_new_tokens=8, temperature=0)))
    assert answer.strip()


def test_bad_settings_are_refused_clearly():
    for settings in (GenerationSettings(max_new_tokens=0), GenerationSettings(temperature=-1),
                     GenerationSettings(top_p=0)):
        with pytest.raises(SettingsError) as info:
            settings.validate()
        assert info.value.fix


def test_compare_shares_weights_and_matches_each_model(adapter_engine):
    assert adapter_engine.shares_base and adapter_engine.can_compare
    updates = list(adapter_engine.stream_compare("Who are you?", GREEDY))
    assert len(updates) > 3
    base, tuned = updates[-1]
    ids = adapter_engine.prepare([], "Who are you?", max_new_tokens=32).input_ids
    model = adapter_engine.model
    with model.disable_adapter():
        expected_base = raw_generate(model, adapter_engine.tokenizer, ids, 32)
    expected_tuned = raw_generate(model, adapter_engine.tokenizer, ids, 32)
    assert base == expected_base
    assert tuned == expected_tuned
    assert base != tuned
    # the adapter is back on afterwards, for plain chat
    assert adapter_engine.reply([], "Who are you?", GREEDY) == expected_tuned.strip()


def test_compare_without_a_base_says_how_to_get_one(plain_engine):
    assert not plain_engine.can_compare
    with pytest.raises(SettingsError, match="Compare needs the base model"):
        list(plain_engine.stream_compare("hi", GREEDY))


def test_render_ids_needs_a_chat_template(plain_engine):
    class NoTemplate:
        chat_template = None

    with pytest.raises(SettingsError, match="no chat template"):
        render_ids(NoTemplate(), [{"role": "user", "content": "hi"}])


def test_static_decoding_streams_the_same_answer_and_still_stops(plain_engine):
    """--decode static (the GPU fast path: preallocated KV cache, compiled on CUDA) keeps streaming and Stop."""
    static = ChatEngine(plain_engine.model, plain_engine.tokenizer, decode="static")
    prompt = "List 5 fruits as a numbered list."
    pieces = list(static.stream([], prompt, GREEDY))
    assert len(pieces) > 5 and "".join(pieces) == "".join(plain_engine.stream([], prompt, GREEDY))
    calls = []
    generate = static.model.generate
    static.model.generate = lambda **kwargs: calls.append(kwargs.get("cache_implementation")) or generate(**kwargs)
    try:
        stream = static.stream([], "Tell me a very long story.", GenerationSettings(max_new_tokens=400), session="s")
        next(stream)
        assert static.stop("s") is True
        rest = list(stream)
    finally:
        del static.model.generate
    assert calls == ["static"] and static.running_jobs() == 0
    assert not static.compiles  # nothing is compiled on CPU
    assert len(static.tokenizer("".join(rest), add_special_tokens=False)["input_ids"]) < 100


def test_decode_mode_auto_is_dynamic_on_cpu_and_bad_modes_are_refused(plain_engine):
    from app.engine import resolve_decode

    assert resolve_decode("auto", plain_engine.model) == "dynamic"
    assert resolve_decode("static", plain_engine.model) == "static"

    class OnCuda:  # stands in for a model on a GPU (none here): resolve_decode reads only these attributes
        def __init__(self, **attributes):
            self.device = torch.device("cuda")
            self._supports_static_cache = True
            self.__dict__.update(attributes)

    assert resolve_decode("auto", OnCuda()) == "static"
    assert resolve_decode("auto", OnCuda(_supports_static_cache=False)) == "dynamic"  # e.g. remote-code InternLM2
    assert resolve_decode("auto", OnCuda(is_quantized=True, is_loaded_in_4bit=True)) == "static"  # measured on GPU
    assert resolve_decode("auto", OnCuda(is_quantized=True, is_loaded_in_8bit=True)) == "dynamic"
    assert resolve_decode("auto", OnCuda(quantization_method="gptq")) == "dynamic"
    with pytest.raises(SettingsError, match="Unknown decode mode"):
        ChatEngine(plain_engine.model, plain_engine.tokenizer, decode="fast")


def test_the_page_keeps_saying_stopped_and_never_resends_an_unchanged_status(plain_engine):
    """Stop's "Stopped." can reach the page before the answer's last updates: those must not wipe it."""
    from types import SimpleNamespace

    from app.ui import Handlers

    handlers, request = Handlers(plain_engine), SimpleNamespace(session_hash="page-1")
    chat = handlers.chat("Tell me a very long story about a dragon.", [], "", 400, 0.8, 0.9, 40, 1.1, request=request)
    updates = [next(chat), next(chat), next(chat)]
    assert handlers.stop(request) == "Stopped."
    updates += list(chat)
    first, *streaming, last = [status for *_, status in updates]
    assert first == ""  # the first update clears the previous answer's status
    assert streaming and all(status == {"__type__": "update"} for status in streaming)  # gr.skip(): left as it is
    assert last == "Stopped."
    assert updates[-1][0][-1]["role"] == "assistant" and updates[-1][0][-1]["content"]  # kept as far as it got

    finished = list(handlers.chat("Say hi.", [], "", 4, 0, 0.9, 40, 1.1, request=request))
    assert finished[-1][-1] == ""  # a finished answer's status is its notices: none here


STREAM_TEXTS = [
    "I am Xiaowei's assistant, fine-tuned to answer questions about the camp. " * 12,  # one long line
    "Fruits:\n1. Apple\n2. Banana\n\n3. Cherry  (with two spaces)\n",
    "我是小薇的智能助手，很高兴为你服务！北京是中国的首都。",
    "Café déjà vu 🙂🚀 naïve — “quotes” ½",
]


@pytest.mark.parametrize("text", STREAM_TEXTS)
@pytest.mark.parametrize("chunk", [1, 3])
def test_row_streamer_pieces_join_to_the_whole_decode(tokenizer, text, chunk):
    """Incremental decoding: token by token (or a few at a time), the pieces join to exactly what a single decode
    of all the tokens gives, and no piece carries half a character."""
    import queue

    from app.engine import RowStreamer

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    out: queue.Queue = queue.Queue()
    streamer = RowStreamer(tokenizer, 1, [tokenizer.eos_token_id], out=out)
    streamer.put(torch.tensor([[1, 2]]))  # the prompt, which generate() hands over first
    for at in range(0, len(ids), chunk):
        streamer.put(torch.tensor([ids[at:at + chunk]]))
    streamer.end()
    items = list(iter(out.get, RowStreamer.DONE))
    pieces = [piece for row, piece in items]
    assert {row for row, _ in items} == {0}
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)
    assert len(pieces) > len(ids) // (2 * chunk)  # streamed, not held back to the end
    assert not any("\ufffd" in piece for piece in pieces)


def test_row_streamer_rows_end_at_their_stop_token(tokenizer):
    import queue

    from app.engine import RowStreamer

    a = tokenizer("Hello there, friend", add_special_tokens=False)["input_ids"]
    b = tokenizer("你好，朋友们", add_special_tokens=False)["input_ids"]
    width = max(len(a), len(b)) + 2
    stop = tokenizer.eos_token_id
    rows = [a + [stop] + a, b + [stop] + b]
    rows = [r[:width] + [stop] * (width - len(r[:width])) for r in rows]
    out: queue.Queue = queue.Queue()
    streamer = RowStreamer(tokenizer, 2, [stop], row_offset=3, out=out)
    streamer.put(torch.tensor([[1], [1]]))
    for step in range(width):
        streamer.put(torch.tensor([[rows[0][step]], [rows[1][step]]]))
    streamer.end()
    texts = {3: "", 4: ""}
    for row, piece in iter(out.get, RowStreamer.DONE):
        texts[row] += piece
    assert texts == {3: "Hello there, friend", 4: "你好，朋友们"}
