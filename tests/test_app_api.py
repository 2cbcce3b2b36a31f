"""The launched page through the official gradio_client: streaming, memory, isolation, stop, compare, queue."""

from __future__ import annotations

import threading
import time

import pytest
from gradio_client import Client

from app.engine import GenerationSettings
from app.main import build_parser, start


def text_of(message: dict) -> str:
    """A Gradio 6 chat message's text (content is a list of typed parts)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


@pytest.fixture(scope="module")
def server(lora_adapter):
    args = build_parser().parse_args(["--adapter", str(lora_adapter), "--port", "0", "--temperature", "0",
                                      "--max-new-tokens", "48", "--concurrency", "2"])
    served = start(args, block=False, log=lambda _: None)
    yield served
    served.close()


def client(server) -> Client:
    return Client(server.url, verbose=False)


def test_reply_streams_and_is_the_engine_answer(server):
    job = client(server).submit("Who are you?", api_name="/chat")
    chatbot, textbox, _status = job.result(timeout=120)
    assert [m["role"] for m in chatbot] == ["user", "assistant"]
    answer = text_of(chatbot[1])
    assert answer and textbox == ""
    partials = [text_of(out[0][-1]) for out in job.outputs() if len(out[0]) == 2]
    growing = [p for p in partials if p]
    assert len(set(growing)) > 3  # streamed: many distinct partial answers
    assert all(answer.startswith(p.strip()) for p in growing)
    assert answer == server.engine.reply([], "Who are you?", GenerationSettings(max_new_tokens=48, temperature=0))


def test_multi_turn_memory_reaches_the_prompt(server, monkeypatch):
    seen: list[list[dict]] = []
    original = server.engine.prepare

    def spy(history, message, **kwargs):
        seen.append(list(history))
        return original(history, message, **kwargs)

    monkeypatch.setattr(server.engine, "prepare", spy)
    c = client(server)
    first = c.predict("My name is Lin.", api_name="/chat")[0]
    second = c.predict("What is my name?", api_name="/chat")[0]
    assert [text_of(m) for m in second[:2]] == [text_of(m) for m in first]
    assert len(second) == 4
    assert [m["content"] for m in seen[-1]] == [text_of(m) for m in first]  # the model saw the first turn


def test_two_concurrent_clients_keep_their_own_history(server):
    results: dict[str, list] = {}

    def talk(name: str) -> None:
        c = client(server)
        c.predict(f"Hello, I am {name}.", api_name="/chat")
        results[name] = c.predict(f"{name} again here.", api_name="/chat")[0]

    threads = [threading.Thread(target=talk, args=(name,)) for name in ("Alice", "Bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for name, other in (("Alice", "Bob"), ("Bob", "Alice")):
        users = [text_of(m) for m in results[name] if m["role"] == "user"]
        assert users == [f"Hello, I am {name}.", f"{name} again here."]
        assert not any(other in text_of(m) for m in results[name] if m["role"] == "user")


def test_empty_message_is_ignored(server):
    c = client(server)
    assert c.predict("   ", api_name="/chat")[0] == []
    assert server.engine.active_generations() == 0


def test_stop_endpoint_stops_this_sessions_generation(server):
    c = client(server)
    job = c.submit("Tell me a long story about the sea.", max_new_tokens=600, api_name="/chat")
    # wait until the answer is streaming
    deadline = time.monotonic() + 120
    while server.engine.active_generations() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    c.predict(api_name="/stop")
    chatbot = job.result(timeout=60)[0]
    answer = text_of(chatbot[-1])
    tokens = server.engine.tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert 0 < len(tokens) < 300
    deadline = time.monotonic() + 10
    while server.engine.active_generations() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.engine.active_generations() == 0


def test_retry_and_clear(server):
    c = client(server)
    first = c.predict("Say something.", api_name="/chat")[0]
    again = c.predict(api_name="/retry")[0]
    assert [m["role"] for m in again] == ["user", "assistant"]
    assert text_of(again[0]) == text_of(first[0])
    c.predict(api_name="/clear")
    assert c.predict("Hi.", api_name="/chat")[0][0]["role"] == "user"
    assert len(c.predict("Hi again.", api_name="/chat")[0]) == 4


def test_compare_endpoint_streams_both_sides(server):
    job = client(server).submit("Who are you?", api_name="/compare")
    base, tuned, _ = job.result(timeout=120)
    assert text_of(base[-1]) and text_of(tuned[-1])
    assert text_of(base[-1]) != text_of(tuned[-1])
    assert len(job.outputs()) > 3


def test_trimming_and_truncation_warnings_reach_the_page(lora_adapter):
    args = build_parser().parse_args(["--adapter", str(lora_adapter), "--port", "0", "--temperature", "0",
                                      "--max-new-tokens", "16", "--context", "160", "--max-input-chars", "300",
                                      "--queue-size", "3", "--concurrency", "1"])
    served = start(args, block=False, log=lambda _: None)
    try:
        assert served.demo._queue.max_size == 3
        c = client(served)
        _, _, status = c.predict("apples " * 200, api_name="/chat")
        assert "cut to its first 300 characters" in status
        for i in range(3):
            _, _, status = c.predict(f"Tell me about pears, question {i}, in a few words please.", api_name="/chat")
        assert "oldest turn(s) were left out" in status
        assert served.demo._queue.event_queue_per_concurrency_id["generate"].concurrency_limit == 1
    finally:
        served.close()
