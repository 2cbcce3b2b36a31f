"""What the chat template and engine tests share (not a test module): a conversation in XTuner's and in chat
format, the token ids XTuner trains on, and a plain model.generate() reference."""

from __future__ import annotations

import copy

import torch

from app.engine import GenerationSettings

SYSTEM = "You are a helpful assistant."
CONVERSATION = [
    {"system": SYSTEM, "input": "请介绍一下你自己", "output": "我是小薇的智能助手。"},
    {"input": "What can you do?", "output": "I can answer questions."},
]
MESSAGES = [
    {"role": "user", "content": "请介绍一下你自己"},
    {"role": "assistant", "content": "我是小薇的智能助手。"},
    {"role": "user", "content": "What can you do?"},
    {"role": "assistant", "content": "I can answer questions."},
]


def xtuner_input_ids(tokenizer, template_name: str, conversation: list[dict]) -> list[int]:
    """Token ids exactly as XTuner's dataset pipeline builds them."""
    from xtuner.dataset.map_fns import template_map_fn
    from xtuner.dataset.utils import encode_fn
    from xtuner.utils import PROMPT_TEMPLATE

    example = template_map_fn({"conversation": copy.deepcopy(conversation)}, PROMPT_TEMPLATE[template_name])
    return encode_fn(example, tokenizer, max_length=4096)["input_ids"]


GREEDY = GenerationSettings(max_new_tokens=32, temperature=0)


def raw_generate(model, tokenizer, ids, max_new_tokens, **kwargs) -> str:
    """A plain model.generate() answer: the reference the streaming path must reproduce."""
    from app.engine import pad_token_id, stop_token_ids

    tensor = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(tensor, attention_mask=torch.ones_like(tensor), max_new_tokens=max_new_tokens,
                             do_sample=False, repetition_penalty=1.1, eos_token_id=stop_token_ids(model, tokenizer),
                             pad_token_id=pad_token_id(model, tokenizer), **kwargs)
    return tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
