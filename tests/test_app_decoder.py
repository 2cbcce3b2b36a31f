"""--decode compiled: the app's own decoding loop (app/decoder.py) on the real embedded model.

It must give the answers transformers' generate() gives (greedy: the same tokens; sampling: the same distribution),
stream, stop, and trace as one graph (checked with torch.compile's aot_eager backend: no kernels are built on CPU).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from app.decoder import MIN_CACHE_TOKENS, CompiledDecoder, Sampling, _choose, process_logits
from app.engine import ChatEngine, GenerationSettings
from app.errors import SettingsError
from tests.chat_helpers import GREEDY, raw_generate


@pytest.fixture(scope="module")
def compiled_engine(plain_engine):
    return ChatEngine(plain_engine.model, plain_engine.tokenizer, decode="compiled")


def hf_scores(logits, input_ids, temperature, top_k, top_p, penalty):
    """What transformers' own processors make of the same logits (top-k 0 and top-p 1 add no processor)."""
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(penalty), TemperatureLogitsWarper(temperature)])
    if top_k:
        processors.append(TopKLogitsWarper(top_k))
    if top_p < 1:
        processors.append(TopPLogitsWarper(top_p))
    return processors(input_ids, logits.clone())


@pytest.mark.parametrize("temperature,top_k,top_p,penalty", [
    (0.7, 40, 0.9, 1.1), (1.0, 0, 1.0, 1.0), (0.3, 5, 0.5, 1.3), (1.5, 0, 0.95, 1.0), (0.7, 1, 0.9, 1.1),
])
def test_logits_are_processed_as_transformers_does(temperature, top_k, top_p, penalty):
    generator = torch.Generator().manual_seed(0)
    vocab = 1000
    logits = torch.randn((1, vocab), generator=generator) * 3
    logits[0, 10:20] = logits[0, 5]  # ties at the top-k boundary are kept by both
    input_ids = torch.randint(0, vocab, (1, 50), generator=generator)
    seen = torch.zeros((1, vocab), dtype=torch.bool)
    seen[0, input_ids[0]] = True
    ours = process_logits(logits, seen, torch.zeros_like(seen), torch.tensor([[temperature]]),
                          torch.tensor([[top_k or vocab]]), torch.tensor([[top_p]]), torch.tensor([[penalty]]))
    theirs = hf_scores(logits, input_ids, temperature, top_k, top_p, penalty)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert torch.isfinite(ours).sum() >= 1
    torch.testing.assert_close(ours.softmax(-1), theirs.softmax(-1))


def test_the_draw_picks_each_token_with_its_probability():
    """The exponential race (argmax p / E) draws from softmax(processed scores), as multinomial does."""
    vocab = 8
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0, 1.5, 0.2]])
    state = SimpleNamespace(
        seen=torch.zeros((1, vocab), dtype=torch.bool), stop_mask=torch.zeros((1, vocab), dtype=torch.bool),
        pos=torch.zeros(1, dtype=torch.long), min_pos=torch.zeros(1, dtype=torch.long),
        temperature=torch.tensor([[0.8]]), top_k=torch.tensor([[6]]), top_p=torch.tensor([[0.95]]),
        penalty=torch.tensor([[1.0]]), token=torch.zeros((1, 1), dtype=torch.long))
    expected = process_logits(logits, state.seen, state.seen, state.temperature, state.top_k, state.top_p,
                              state.penalty).softmax(-1)[0]
    torch.manual_seed(0)
    counts = torch.zeros(vocab)
    draws = 20_000
    for _ in range(draws):
        _choose(logits, state, sample=True)
        counts[state.token[0, 0]] += 1
    assert state.pos.item() == draws  # each pick advances the position
    assert (counts[expected == 0] == 0).all()  # top-k/top-p cut tokens are never drawn
    torch.testing.assert_close(counts / draws, expected, atol=0.012, rtol=0)


@pytest.mark.parametrize("prompt", ["Write one sentence about the sea.", "List 5 fruits as a numbered list."])
def test_compiled_engine_streams_what_generate_answers(compiled_engine, prompt):
    pieces = list(compiled_engine.stream([], prompt, GREEDY))
    assert len(pieces) > 5
    prepared = compiled_engine.prepare([], prompt, max_new_tokens=32)
    assert "".join(pieces) == raw_generate(compiled_engine.model, compiled_engine.tokenizer, prepared.input_ids, 32)


def test_compiled_engine_ends_at_the_stop_token_and_keeps_min_new_tokens(compiled_engine):
    model, tokenizer = compiled_engine.model, compiled_engine.tokenizer
    prompt = compiled_engine.prepare([], "Say only: hello.", max_new_tokens=200).input_ids
    settings = GenerationSettings(max_new_tokens=200, temperature=0)
    short = "".join(compiled_engine.stream_ids(prompt, settings))
    assert short == raw_generate(model, tokenizer, prompt, 200)
    assert len(tokenizer(short, add_special_tokens=False)["input_ids"]) < 50  # ended at the stop token
    model.generation_config.min_new_tokens = 60  # what bench/app_decode.py sets: stop tokens are held off
    try:
        longer = "".join(compiled_engine.stream_ids(prompt, settings))
        assert longer == raw_generate(model, tokenizer, prompt, 200, min_new_tokens=60)
    finally:
        model.generation_config.min_new_tokens = None
    assert len(longer) > len(short) and longer.startswith(short)


def test_compiled_engine_samples_and_stops_on_request(compiled_engine):
    torch.manual_seed(0)
    stream = compiled_engine.stream([], "Tell me a very long story.", GenerationSettings(max_new_tokens=400),
                                    session="s")
    first = next(stream)
    assert compiled_engine.stop("s") is True
    rest = list(stream)
    assert compiled_engine.running_jobs() == 0
    assert len(compiled_engine.tokenizer(first + "".join(rest), add_special_tokens=False)["input_ids"]) < 100
    answers = {"".join(compiled_engine.stream([], "Name a colour.", GenerationSettings(max_new_tokens=12)))
               for _ in range(4)}
    assert len(answers) > 1 and all(answers)  # sampled, not greedy


def test_the_step_traces_as_one_graph_and_decodes_the_same(plain_engine, compiled_engine):
    """fullgraph=True fails on any graph break, so this checks the step CUDA would compile (aot_eager: no kernels)."""
    traced = CompiledDecoder(plain_engine.model, compiled_engine._stop_ids, compile=True, backend="aot_eager")
    assert traced.compiled
    prompt = compiled_engine.prepare([], "List 5 fruits as a numbered list.", max_new_tokens=24).input_ids
    sampling = Sampling(temperature=0, top_p=0.9, top_k=40, repetition_penalty=1.1, max_new_tokens=24)
    eager, graph = [], []
    compiled_engine._decoder.generate(prompt, sampling, eager.append, lambda: False)
    traced.generate(prompt, sampling, graph.append, lambda: False)
    assert graph == eager and len(graph) > 10
    sampled = []
    traced.generate(prompt, Sampling(0.7, 0.9, 40, 1.1, max_new_tokens=8), sampled.append, lambda: False)
    assert len(sampled) == 8


def test_cache_lengths_are_few_when_compiled_and_exact_when_eager(plain_engine):
    lengths = (10, MIN_CACHE_TOKENS, 1025, 2500, 3000)
    compiled = CompiledDecoder(plain_engine.model, [2], compile=True, backend="aot_eager", max_cache_tokens=3000)
    assert [compiled._state_for(tokens).cache_tokens for tokens in lengths] == \
        [MIN_CACHE_TOKENS, MIN_CACHE_TOKENS, 2048, 3000, 3000]
    assert len(compiled._states) == 3  # one graph each
    eager = CompiledDecoder(plain_engine.model, [2])
    assert [eager._state_for(tokens).cache_tokens for tokens in lengths] == list(lengths)
    assert len(eager._states) == 1  # only the last is kept


def test_models_the_loop_cannot_decode_are_refused_with_the_fix(plain_engine):
    from transformers import GPT2Config, GPT2LMHeadModel

    class LegacyCacheLM(GPT2LMHeadModel):  # as remote-code classes (InternLM2) are: transformers' flag unset
        _can_compile_fullgraph = False

    gpt2 = LegacyCacheLM(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=100))
    for mode in ("static", "compiled"):
        with pytest.raises(SettingsError, match="static KV cache") as error:
            ChatEngine(gpt2, plain_engine.tokenizer, decode=mode)
        assert "--decode dynamic" in error.value.fix
    model = plain_engine.model
    model.generation_config.no_repeat_ngram_size = 3
    try:
        with pytest.raises(SettingsError, match="no_repeat_ngram_size") as error:
            ChatEngine(model, plain_engine.tokenizer, decode="compiled")
        assert "--decode static" in error.value.fix
    finally:
        model.generation_config.no_repeat_ngram_size = 0


def test_compiled_answers_all_run_on_one_thread(compiled_engine, monkeypatch):
    """CUDA graph trees are per thread: every compiled answer must reuse the same one (not the pool's workers)."""
    import threading

    threads = []
    generate = compiled_engine._decoder.generate
    monkeypatch.setattr(compiled_engine._decoder, "generate",
                        lambda *args: threads.append(threading.current_thread()) or generate(*args))
    for _ in range(3):
        list(compiled_engine.stream([], "Hi", GenerationSettings(max_new_tokens=2)))
    assert len(threads) == 3 and len(set(threads)) == 1 and threads[0].name.startswith("app-graph")


def test_compiled_decoding_of_base_plus_adapter_keeps_the_adapter_and_compare(adapter_engine):
    """A PEFT model: the plain chat row decodes through the adapter in the loop; the base row of compare still
    goes through generate() with the adapter switched off."""
    engine = ChatEngine(adapter_engine.model, adapter_engine.tokenizer, decode="compiled")
    prompt = "Who are you?"
    assert "".join(engine.stream([], prompt, GREEDY)) == "".join(adapter_engine.stream([], prompt, GREEDY))
    compared = list(engine.stream_compare(prompt, GREEDY))[-1]
    assert compared == list(adapter_engine.stream_compare(prompt, GREEDY))[-1]
    assert compared[0] != compared[1]  # the base row really ran without the adapter
