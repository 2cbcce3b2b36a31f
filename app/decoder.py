"""The app's own batch-1 decoding loop (`--decode compiled`): one compiled step, sampling included, the host one
token behind the GPU.

transformers' generate() with a static cache compiles the model's forward, but every token still goes through its
Python loop between two synchronisations: the attention mask is rebuilt, the logits processors, stopping criteria
and streamer run, and meanwhile the GPU waits. Here one function does the whole step (forward, repetition penalty,
temperature, top-k, top-p, the draw) on buffers at fixed addresses, so on CUDA it compiles into one CUDA graph. The
host copies token i to pinned memory behind an event and launches step i+1 before it waits for that event, so the
streamer, the stop checks and the next launch overlap the GPU's next step. Answers stop one wasted step after a stop
token.

The logits are processed as transformers' RepetitionPenalty, MinNewTokensLength, Temperature, TopK and TopP
processors do (tests/test_app_decoder.py compares them); the draw is an exponential race (argmax of p / E, E ~
Exp(1)), which picks token i with probability p_i without a host round trip.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import SettingsError

MIN_CACHE_TOKENS = 1024
# Generation settings a model's generation_config may carry that this loop does not apply: such a model keeps
# transformers' generate() (`static`).
UNSUPPORTED_GENERATION_FIELDS = ("no_repeat_ngram_size", "bad_words_ids", "min_p", "typical_p", "epsilon_cutoff",
                                 "eta_cutoff", "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id",
                                 "forced_eos_token_id", "sequence_bias", "exponential_decay_length_penalty",
                                 "encoder_repetition_penalty")


def supports_static_cache(model: Any) -> bool:
    """transformers' flag on the model class (under a PEFT wrapper, the base model's): `_supports_static_cache`
    where the class sets it (transformers < 4.56, remote code), else `_can_compile_fullgraph`, which replaced it
    when transformers made the static cache work for every model on its cache API (False for remote code)."""
    lm = _causal_lm(model)
    flag = getattr(lm, "_supports_static_cache", None)
    return bool(flag if flag is not None else getattr(lm, "_can_compile_fullgraph", False))


def compiled_decoding_unsupported(model: Any) -> str | None:
    """Why `model` cannot use this loop, or None."""
    if not supports_static_cache(model):
        return f"{type(_causal_lm(model)).__name__} does not support a static KV cache in transformers"
    if getattr(model.config, "is_encoder_decoder", False):
        return "encoder-decoder models are not chat models this loop decodes"
    from transformers import GenerationConfig

    config, default = getattr(model, "generation_config", None), GenerationConfig()
    used = [name for name in UNSUPPORTED_GENERATION_FIELDS
            if getattr(config, name, None) not in (None, getattr(default, name, None))]
    if used:
        return f"its generation_config sets {', '.join(used)}, which only transformers' generate() applies"
    devices = {str(p.device) for p in model.parameters()}
    if len(devices) > 1:
        return f"its weights are spread over {len(devices)} devices"
    return None


@dataclass
class Sampling:
    """One answer's settings as the loop applies them; greedy when temperature is 0."""

    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    max_new_tokens: int
    min_new_tokens: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class _State:
    """Everything one step reads and writes, at fixed addresses (CUDA graphs replay on the same memory)."""

    def __init__(self, model: Any, cache_tokens: int, vocab: int, device: Any, stop_ids: Sequence[int]):
        import torch

        self.cache = _static_cache(model, cache_tokens, device)
        self.cache_tokens = cache_tokens
        long = {"dtype": torch.long, "device": device}
        real = {"dtype": torch.float32, "device": device}
        self.token = torch.zeros((1, 1), **long)
        self.pos = torch.zeros((1,), **long)
        self.min_pos = torch.zeros((1,), **long)
        self.seen = torch.zeros((1, vocab), dtype=torch.bool, device=device)
        self.stop_mask = torch.zeros((1, vocab), dtype=torch.bool, device=device)
        self.stop_mask[0, [i for i in stop_ids if 0 <= i < vocab]] = True
        self.temperature = torch.ones((1, 1), **real)
        self.penalty = torch.ones((1, 1), **real)
        self.top_p = torch.ones((1, 1), **real)
        self.top_k = torch.full((1, 1), vocab, **long)
        for buffer in (self.token, self.pos, self.min_pos, self.seen, self.stop_mask, self.temperature,
                       self.penalty, self.top_p, self.top_k):
            torch._dynamo.mark_static_address(buffer)

    def start(self, prompt: Any, sampling: Sampling) -> None:
        vocab = self.seen.shape[-1]
        self.cache.reset()
        self.seen.zero_()
        self.seen[0, prompt[0].clamp(0, vocab - 1)] = True
        n = prompt.shape[-1]
        self.pos.fill_(n - 1)  # the position whose logits pick the next token
        self.min_pos.fill_(n - 1 + sampling.min_new_tokens)
        self.temperature.fill_(sampling.temperature or 1.0)
        self.penalty.fill_(sampling.repetition_penalty)
        self.top_p.fill_(sampling.top_p)
        self.top_k.fill_(min(sampling.top_k, vocab) if sampling.top_k > 0 else vocab)


def _penalized(logits: Any, seen: Any, suppress: Any, penalty: Any) -> Any:
    """The repetition penalty on every `seen` token, then -inf on the `suppress`ed ones: all that greedy applies."""
    import torch

    scores = logits.float()
    scores = torch.where(seen, torch.where(scores < 0, scores * penalty, scores / penalty), scores)
    return scores.masked_fill(suppress, float("-inf"))


def process_logits(logits: Any, seen: Any, suppress: Any, temperature: Any, top_k: Any, top_p: Any,
                   penalty: Any) -> Any:
    """Scores as transformers' processors leave them: repetition penalty on every `seen` token, -inf on the
    `suppress`ed ones (stop tokens before min_new_tokens), temperature, top-k (ties kept), top-p (at least one
    token kept). Shapes [1, vocab]; the settings are [1, 1] tensors, so one compiled graph serves every setting."""
    import torch

    scores = _penalized(logits, seen, suppress, penalty) / temperature
    kth = torch.sort(scores, dim=-1, descending=True).values.gather(-1, top_k - 1)
    scores = scores.masked_fill(scores < kth, float("-inf"))
    ascending, order = torch.sort(scores, dim=-1)
    drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
    drop[..., -1:] = False
    return scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def _choose(logits: Any, state: _State, sample: bool) -> None:
    """Pick the next token into state.token and advance state.pos: greedy or one draw, all on the device."""
    import torch

    suppress = state.stop_mask & (state.pos < state.min_pos).view(1, 1)
    if sample:
        scores = process_logits(logits, state.seen, suppress, state.temperature, state.top_k, state.top_p,
                                state.penalty)
        probs = scores.softmax(dim=-1)
        token = (probs / torch.empty_like(probs).exponential_(1)).argmax(dim=-1, keepdim=True)
    else:
        token = _penalized(logits, state.seen, suppress, state.penalty).argmax(dim=-1, keepdim=True)
    state.token.copy_(token)
    state.seen.scatter_(-1, token, True)
    state.pos.add_(1)


class CompiledDecoder:
    """Decodes one answer at a time for one model. `compile=None` compiles on CUDA only; `backend` is torch.compile's
    (tests use "aot_eager" to check that the step traces as one graph without building kernels)."""

    def __init__(self, model: Any, stop_ids: Sequence[int], *, compile: bool | None = None,
                 backend: str = "inductor", max_cache_tokens: int | None = None):
        import torch

        reason = compiled_decoding_unsupported(model)
        if reason:
            raise SettingsError(f"--decode compiled cannot decode this model: {reason}.",
                                "use --decode static or dynamic (or auto).")
        self.model = model
        self.stop_ids = list(stop_ids)
        self.device = next(model.parameters()).device
        self.vocab = int(model.config.vocab_size)
        self.max_cache_tokens = max_cache_tokens or getattr(model.config, "max_position_embeddings", None)
        self._keep_last = _keep_last_logits_kwarg(model)
        self._states: dict[int, _State] = {}
        compile = self.device.type == "cuda" if compile is None else compile
        mode = "reduce-overhead" if backend == "inductor" else None
        self._step = torch.compile(self._decode_step, mode=mode, backend=backend, fullgraph=True,
                                   dynamic=False) if compile else self._decode_step
        self.compiled = compile

    def _forward(self, state: _State, input_ids: Any, positions: Any) -> Any:
        out = self.model(input_ids=input_ids, position_ids=positions.view(1, -1), cache_position=positions,
                         past_key_values=state.cache, use_cache=True, **self._keep_last)
        return out.logits[:, -1, :]

    def _decode_step(self, state: _State, sample: bool) -> None:
        _choose(self._forward(state, state.token, state.pos), state, sample)

    def _state_for(self, tokens: int) -> _State:
        """A state whose cache holds `tokens`. Compiled, cache lengths are powers of two from 1024 up to the context,
        so a few graphs serve every answer and attention reads little past the answer's end. Eager (CPU), where
        attention over the whole cache is real work, the cache is exactly as long as the answer needs."""
        size = tokens
        if self.compiled:
            size = MIN_CACHE_TOKENS
            while size < tokens:
                size *= 2
            if self.max_cache_tokens:
                size = max(min(size, self.max_cache_tokens), tokens)
        if size not in self._states:
            if not self.compiled:
                self._states.clear()  # eager lengths vary with every answer: keep only the latest
            self._states[size] = _State(self.model, size, self.vocab, self.device, self.stop_ids)
        return self._states[size]

    def generate(self, input_ids: Sequence[int], sampling: Sampling, on_token: Callable[[int], None],
                 should_stop: Callable[[], bool]) -> None:
        """Decode an answer to `input_ids`, calling on_token(id) for each new token until a stop token (not
        passed on), max_new_tokens, or should_stop()."""
        import torch

        state = self._state_for(len(input_ids) + sampling.max_new_tokens)
        prompt = torch.tensor([list(input_ids)], dtype=torch.long, device=self.device)
        cuda = self.device.type == "cuda"
        host = torch.zeros((1,), dtype=torch.long, pin_memory=cuda)
        copied = torch.cuda.Event() if cuda else None
        with torch.inference_mode():
            state.start(prompt, sampling)
            _choose(self._forward(state, prompt, torch.arange(prompt.shape[-1], device=self.device)), state,
                    not sampling.greedy)
            for produced in range(sampling.max_new_tokens):
                host.copy_(state.token.view(1), non_blocking=cuda)
                if copied is not None:
                    copied.record()
                if produced + 1 < sampling.max_new_tokens:
                    self._step(state, not sampling.greedy)  # the GPU computes the next token while we read this
                if copied is not None:
                    copied.synchronize()
                token = int(host[0])
                if token in self.stop_ids or should_stop():
                    return
                on_token(token)


def _causal_lm(model: Any) -> Any:
    """The transformers model under a PEFT wrapper."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _keep_last_logits_kwarg(model: Any) -> dict[str, int]:
    """Ask for the last position's logits only (the prompt's full logits are vocab x prompt floats), where the
    model's forward takes the argument (transformers 4.45+: num_logits_to_keep, 4.50+: logits_to_keep)."""
    parameters = inspect.signature(_causal_lm(model).forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in parameters:
            return {name: 1}
    return {}


def _static_cache(model: Any, tokens: int, device: Any) -> Any:
    from transformers import StaticCache

    config = _causal_lm(model).config
    dtype = getattr(config, "_pre_quantization_dtype", None) or _causal_lm(model).dtype
    return StaticCache(config=config, max_batch_size=1, max_cache_len=tokens, device=device, dtype=dtype)
