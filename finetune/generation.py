"""Batched greedy answers (before/after samples, replay data, the held-out benchmark)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

Message = dict[str, str]


def load_for_generation(model_dir: str | Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16 if cuda else torch.float32)
    return model.to("cuda" if cuda else "cpu").eval(), tokenizer


def stop_token_ids(model, tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id]
    eos = model.generation_config.eos_token_id
    ids += eos if isinstance(eos, list) else [eos]
    ids += [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>")]
    return sorted({i for i in ids if isinstance(i, int) and i != tokenizer.unk_token_id})


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
