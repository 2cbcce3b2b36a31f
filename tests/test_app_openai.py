"""`--backend openai` against a real OpenAI-compatible server: llama.cpp's, running the embedded SmolLM2 GGUF on CPU
(tests/llama_server.py). Streaming, history and system prompt, Stop, compare, the page, the terminal chat, errors,
and the API key."""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest
from gradio_client import Client

from app import cli as app_cli
from app import main as app_main
from app.engine import GenerationSettings
from app.errors import BackendError, SettingsError
from app.openai_backend import OpenAIEngine, estimate_tokens, sampling
from app.ui import Handlers, info_markdown
from tests.llama_server import BASE, MODEL, free_port, llama_server

GREEDY = GenerationSettings(max_new_tokens=48, temperature=0)
CANARY = "sk-canary-7f3a9c1e-do-not-print"


@pytest.fixture(autouse=True)
def no_openai_environment(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "OPENAI_BASE_MODEL", "BACKEND"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # one thread: llama.cpp's spinning thread team degrades badly when the 2 cores are shared with other work
    with llama_server(tmp_path_factory.mktemp("llama"), threads=1) as running:
        yield running


@pytest.fixture(scope="module")
def engine(server):
    return OpenAIEngine.connect(server.url, base_model=BASE)


def completion(server, messages, settings: GenerationSettings) -> dict:
    """The server's own non-streamed answer to `messages`: the reference the streaming path must reproduce."""
    body = {"model": MODEL, "messages": messages, "stream": False, **sampling(settings)}
    response = httpx.post(f"{server.url}/chat/completions", json=body, timeout=300)
    response.raise_for_status()
    return response.json()


def same_start(server) -> None:
    """Put the server in the same state before each of two answers that must be equal: llama.cpp reuses the KV
    cache of the previous prompt's common prefix, and a different split of the prompt changes the low bits of the
    logits (enough to flip a greedy choice now and then)."""
    completion(server, [{"role": "user", "content": "Hi"}], GenerationSettings(max_new_tokens=1, temperature=0))


def test_connect_reads_the_served_models(engine, server):
    assert engine.model == MODEL and engine.served == [MODEL, BASE]
    assert engine.info["Base URL"] == server.url and engine.info["API key"] == "none"
    page_info = info_markdown(engine)
    assert server.url in page_info and "OpenAI-compatible" in page_info


def test_stream_is_the_servers_own_greedy_answer(engine, server):
    prompt = "List 5 fruits as a numbered list."
    same_start(server)
    pieces = list(engine.stream([], prompt, GREEDY))
    assert len(pieces) > 5  # streamed chunk by chunk, not in one lump
    messages = engine.prepare([], prompt, max_new_tokens=48).messages
    same_start(server)
    expected = completion(server, messages, GREEDY)["choices"][0]["message"]["content"]
    assert "".join(pieces) == expected
    assert expected.count("\n") >= 2


def test_history_and_system_prompt_reach_the_server(engine, server, tokenizer):
    sent: list[dict] = []
    engine.http.event_hooks["request"] = [lambda request: sent.append(json.loads(request.content))]
    try:
        history = [{"role": "user", "content": "My name is Lin."}, {"role": "assistant", "content": "Hello Lin!"}]
        engine.reply(history, "What is my name?", GenerationSettings(max_new_tokens=8, temperature=0),
                     system="You are a terse assistant.")
    finally:
        engine.http.event_hooks["request"] = []
    messages = sent[-1]["messages"]
    assert messages == [{"role": "system", "content": "You are a terse assistant."}, *history,
                        {"role": "user", "content": "What is my name?"}]
    # the server rendered them with the model's chat template: the same prompt length as the HF tokenizer's
    usage = completion(server, messages, GenerationSettings(max_new_tokens=1, temperature=0))["usage"]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    assert abs(usage["prompt_tokens"] - len(rendered)) <= 1  # llama.cpp may add a BOS token
    shorter = completion(server, messages[-1:], GenerationSettings(max_new_tokens=1, temperature=0))["usage"]
    assert shorter["prompt_tokens"] < usage["prompt_tokens"]


def test_stop_closes_the_stream_and_the_server_stops(engine, server):
    settings = GenerationSettings(max_new_tokens=1500, temperature=0.8)
    stream = engine.stream([], "Tell me a very long story about a dragon.", settings, session="s1")
    pieces = [next(stream), next(stream)]
    assert engine.active_generations() == 1
    assert engine.stop("s1") is True
    pieces += list(stream)  # ends at the next chunk
    assert engine.active_generations() == 0 and engine.stop("s1") is False
    assert len(pieces) < 100  # far from the 1500 it was allowed
    # the server noticed the closed connection and stopped generating: it says so, and answers the next request
    # (it serves one request at a time, so that one would otherwise wait for the 1500 tokens)
    deadline = time.monotonic() + 60
    while "Disconnected from client" not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "Disconnected from client" in server.log_text()
    assert engine.reply([], "Hi", GenerationSettings(max_new_tokens=4, temperature=0))


def test_compare_streams_two_served_models(engine):
    assert engine.can_compare and BASE in engine.compare_mode
    sent: list[dict] = []
    engine.http.event_hooks["request"] = [lambda request: sent.append(json.loads(request.content))]
    try:
        updates = list(engine.stream_compare("Who are you?", GREEDY))
    finally:
        engine.http.event_hooks["request"] = []
    assert sorted(body["model"] for body in sent) == [MODEL, BASE]
    assert sent[0]["messages"] == sent[1]["messages"]
    base, tuned = updates[-1]
    assert base.strip() and tuned.strip()
    assert len({b for b, _ in updates}) > 3 and len({t for _, t in updates}) > 3  # both sides streamed


def test_compare_without_a_second_model_says_how(server):
    single = OpenAIEngine.connect(server.url)
    assert not single.can_compare and "--served-base-model" in single.compare_hint
    with pytest.raises(SettingsError, match="Compare needs a second served model") as info:
        list(single.stream_compare("hi", GREEDY))
    assert "--served-base-model" in info.value.fix and MODEL in info.value.fix


def test_page_round_trip(server):
    args = app_main.build_parser().parse_args(["--backend", "openai", "--base-url", server.url, "--port", "0",
                                               "--temperature", "0", "--max-new-tokens", "24",
                                               "--served-base-model", BASE])
    served = app_main.start(args, block=False, log=lambda _: None)
    try:
        client = Client(served.url, verbose=False)
        same_start(server)
        job = client.submit("Who are you?", api_name="/chat")
        chatbot, textbox, status = job.result(timeout=120)
        answer = chatbot[-1]["content"]
        answer = answer if isinstance(answer, str) else "".join(p.get("text", "") for p in answer)
        assert answer and textbox == "" and status == ""
        same_start(server)
        assert answer == served.engine.reply([], "Who are you?", GenerationSettings(max_new_tokens=24, temperature=0))
        assert len(job.outputs()) > 3  # streamed
        base, tuned, _ = client.predict("Who are you?", api_name="/compare")
        assert base[-1]["content"] and tuned[-1]["content"]
        # an external engine batches: the page passes several answers on at once by default
        queue = served.demo._queue.event_queue_per_concurrency_id["generate"]
        assert queue.concurrency_limit == app_main.OPENAI_CONCURRENCY
    finally:
        served.close()


def test_terminal_chat(server):
    out, err = io.StringIO(), io.StringIO()
    code = app_cli.main(["--base-url", server.url, "--temperature", "0", "--max-new-tokens", "12",
                         "--prompt", "Who are you?", "--prompt", "RESET", "--prompt", "你好"],
                        output_stream=out, error_stream=err)
    assert code == 0, err.getvalue()
    assert out.getvalue().count("Assistant: ") == 2 and "(history cleared)" in out.getvalue()


def test_server_failure_during_chat_goes_to_the_status_line(server):
    broken = OpenAIEngine.connect(server.url)
    broken.base_url = f"http://127.0.0.1:{free_port()}/v1"  # the server went away
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    *_, (chatbot, state, textbox, status) = Handlers(broken).chat("Still there?", history, "", 16, 0, 0.9, 40, 1.1)
    assert status.startswith("**Error:** Cannot reach the OpenAI-compatible server") and "Fix:" in status
    assert chatbot == state == history and textbox == "Still there?"  # nothing lost: the message can be resent


def test_api_key_is_sent_as_bearer_and_never_printed(tmp_path, monkeypatch, capsys):
    with llama_server(tmp_path, api_key=CANARY, two_models=False, threads=1) as keyed:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        assert app_cli.main(["--backend", "openai", "--base-url", keyed.url, "--prompt", "hi"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "refused the API key (HTTP 401" in err and "OPENAI_API_KEY" in err
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
        assert app_cli.main(["--backend", "openai", "--base-url", keyed.url, "--prompt", "hi"]) == 2
        monkeypatch.setenv("OPENAI_API_KEY", CANARY)
        out = io.StringIO()
        assert app_cli.main(["--backend", "openai", "--base-url", keyed.url, "--prompt", "Who are you?",
                             "--temperature", "0", "--max-new-tokens", "8"], output_stream=out) == 0
        assert out.getvalue().count("Assistant: ") == 1
        engine = OpenAIEngine.connect(keyed.url, api_key=CANARY)
        assert engine.http.headers["Authorization"] == f"Bearer {CANARY}"
        assert engine.info["API key"] == "set (from OPENAI_API_KEY)" and CANARY not in info_markdown(engine)
        captured = capsys.readouterr()
        assert CANARY not in captured.out + captured.err + out.getvalue()
    assert "--api-key" not in app_main.build_parser().format_help()


def test_unreachable_server_is_one_line_and_exit_2(capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    assert app_main.main(["--backend", "openai", "--base-url", url, "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: Cannot reach the OpenAI-compatible server at {url}") and "Fix:" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert app_cli.main(["--backend", "openai", "--base-url", url]) == 2


def test_unknown_served_model_lists_the_served_ones(server, capsys):
    assert app_cli.main(["--base-url", server.url, "--served-model", "gpt-9", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "does not serve 'gpt-9'" in err and f"{MODEL}, {BASE}" in err and "--served-model" in err


def test_base_url_without_v1_is_accepted(server):
    assert OpenAIEngine.connect(server.url.removesuffix("/v1")).base_url == server.url


@pytest.mark.parametrize("argv, expected", [
    (["--backend", "openai"], "needs the address"),
    (["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--adapter", "a"], "--adapter load a model"),
])
def test_bad_openai_options_are_one_line_errors(argv, expected, capsys):
    assert app_cli.main(argv) == 2
    assert expected in capsys.readouterr().err


def test_history_is_trimmed_by_estimated_tokens_without_a_server():
    engine = OpenAIEngine("http://127.0.0.1:9/v1", "m", context=200, max_input_chars=3000)
    history = []
    for i in range(10):
        history += [{"role": "user", "content": f"Question number {i} about apples and pears?"},
                    {"role": "assistant", "content": f"Answer number {i}: apples and pears are both fruit."}]
    prepared = engine.prepare(history, "And the last question?", max_new_tokens=64)
    assert sum(estimate_tokens(m["content"]) + 4 for m in prepared.messages) <= 200 - 64
    assert "oldest turn" in prepared.notices[0]
    kept = [m["content"] for m in prepared.messages]
    assert kept[-2:] == ["Answer number 9: apples and pears are both fruit.", "And the last question?"]
    huge = engine.prepare([], "苹果" * 2000, max_new_tokens=64)
    assert any("cut to its first 3,000" in n for n in huge.notices)
    assert any("longer than the context" in n for n in huge.notices)
    assert estimate_tokens(huge.messages[-1]["content"]) + 4 <= 200 - 64
    assert estimate_tokens("苹果") == 2 and estimate_tokens("abcdef") == 2


def test_sampling_fields():
    assert sampling(GenerationSettings(max_new_tokens=7, temperature=0, top_p=0.5, top_k=0, repetition_penalty=1)) \
        == {"max_tokens": 7, "temperature": 0.0, "top_p": 0.5}
    body = sampling(GenerationSettings(top_k=40, repetition_penalty=1.1))
    assert body["top_k"] == 40 and body["repeat_penalty"] == body["repetition_penalty"] == 1.1


def test_backend_error_is_an_app_error():
    assert BackendError("x", "y").exit_code == 2
