"""Batched greedy answers (before/after samples, replay data, the held-out benchmark)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

Message = dict[str, str]


def load_for_generation(model_dir: str | Path):
    """(model, tokenizer) in eval mode: fp32 on CPU, bf16/fp16 on CUDA."""
    from .modelload import load_model

    return load_model(model_dir)


def answer_batch(
    model,
    tokenizer,
    conversations: Sequence[Sequence[Message]],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    chat_template: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[str, bool]]:
    """Greedy answers as (text, finished) for each conversation, rendered with the tokenizer's chat template
    (or `chat_template`). `finished` is False when the answer was cut at `max_new_tokens`."""
    import torch

    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    from app.engine import stop_token_ids

    stops = stop_token_ids(model, tokenizer)
    results: list[tuple[str, bool]] = []
    try:
        for start in range(0, len(conversations), batch_size):
            batch = conversations[start : start + batch_size]
            texts = [tokenizer.apply_chat_template(list(c), chat_template=chat_template, tokenize=False,
                                                   add_generation_prompt=True) for c in batch]
            # the rendered template already holds its special tokens: no second BOS
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.inference_mode():
                output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                        eos_token_id=stops, pad_token_id=pad_id)
            for tokens in output[:, encoded["input_ids"].shape[1] :]:
                finished = bool(torch.isin(tokens, torch.tensor(stops, device=tokens.device)).any())
                results.append((tokenizer.decode(tokens, skip_special_tokens=True).strip(), finished))
            if progress:
                progress(min(start + batch_size, len(conversations)), len(conversations))
    finally:
        tokenizer.padding_side = side
    return results


def ask(model, tokenizer, prompts: Sequence[str], *, system: str | None = None, **options) -> list[str]:
    """Answers to single-turn prompts; `system=None` lets the chat template pick its default."""
    conversations = [([{"role": "system", "content": system}] if system is not None else [])
                     + [{"role": "user", "content": p}] for p in prompts]
    return [text for text, _ in answer_batch(model, tokenizer, conversations, **options)]
