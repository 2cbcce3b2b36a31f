"""XTuner prompt templates for the families XTuner 0.2.0 lacks, and the lookup over XTuner's and ours.

Each renders the training text exactly as the family's own chat template renders the same conversation
(tests/test_family_templates.py compares them with the upstream Jinja templates); where XTuner's format cannot
express the upstream text, a comment says what differs. Two keys of ours, applied by
`finetune.xtuner_compat.template_map_fn_factory` in training and by `finetune.chat_template` everywhere else:
- SYSTEM_IN_USER: the family has no system role; the system prompt is folded into the first user message with
  this format (Gemma 3).
- PREFIX: text that starts every conversation, before the system prompt (GLM-4's `[gMASK]<sop>`).

This module is plain data (no XTuner import): `finetune data check` reads it without loading XTuner.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

NEW_TEMPLATES: dict[str, dict] = {
    # Qwen3 (enable_thinking=False): the answer follows an empty think block. Upstream drops that block from
    # assistant turns before the last user message; XTuner's format repeats it in every turn (one INSTRUCTION for
    # all), so multi-turn training text keeps it. The merged model's chat template renders it the same way.
    "qwen3_chat": dict(
        SYSTEM="<|im_start|>system\n{system}<|im_end|>\n",
        INSTRUCTION="<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
        SUFFIX="<|im_end|>",
        SUFFIX_AS_EOS=True,
        SEP="\n",
        STOP_WORDS=["<|im_end|>", "<|endoftext|>"],
        THINKING=dict(header="<|im_start|>assistant\n", open="<think>", close="</think>"),
    ),
    # Gemma 3 (270m-it, 1b-it): no system role; the system prompt opens the first user turn. Upstream also trims
    # every message; XTuner keeps the data's whitespace.
    "gemma3_chat": dict(
        SYSTEM_IN_USER="{system}\n\n",
        INSTRUCTION="<start_of_turn>user\n{input}<end_of_turn>\n<start_of_turn>model\n",
        SUFFIX="<end_of_turn>",
        SUFFIX_AS_EOS=True,
        SEP="\n",
        STOP_WORDS=["<end_of_turn>"],
    ),
    # GLM-4-0414: `[gMASK]<sop>` opens the conversation (the tokenizer has no BOS). Upstream marks no end of an
    # answer (the next `<|user|>` does, and the model stops on it); a fine-tune must learn where its answers stop,
    # so XTuner trains the tokenizer's eos (`<|endoftext|>`, a stop token of the model) after each answer: the
    # one difference from upstream's text. Upstream's generation prompt is `<|assistant|>` and the model writes
    # the newline; here the newline is part of the prompt, as in every rendered history turn.
    "glm4_chat": dict(
        PREFIX="[gMASK]<sop>",
        SYSTEM="<|system|>\n{system}",
        INSTRUCTION="<|user|>\n{input}<|assistant|>\n",
        SUFFIX="",
        SUFFIX_AS_EOS=False,
        SEP="",
        STOP_WORDS=["<|user|>", "<|observation|>", "<|endoftext|>"],
    ),
    # Llama 3.1 / 3.2 Instruct: upstream always writes a system turn that starts with a knowledge-cutoff block.
    # The date is 3.1's fixed "26 Jul 2024" (3.2 renders today's date, which no training text can follow). XTuner
    # writes SYSTEM only when a record has a system prompt, which every record we generate has.
    "llama3_1_chat": dict(
        SYSTEM=("<|start_header_id|>system<|end_header_id|>\n\n"
                "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n{system}<|eot_id|>"),
        INSTRUCTION=("<|start_header_id|>user<|end_header_id|>\n\n{input}<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n"),
        SUFFIX="<|eot_id|>",
        SUFFIX_AS_EOS=True,
        SEP="",
        STOP_WORDS=["<|eot_id|>", "<|eom_id|>"],
    ),
    # DeepSeek-R1-Distill-Qwen and -Llama (one upstream template for both): bos, the raw system text, then
    # fullwidth-marker turns. Upstream's generation prompt also opens a `<think>` block; identity answers are
    # trained without one, after `<｜Assistant｜>`, as upstream renders finished turns.
    "deepseek_r1_chat": dict(
        SYSTEM="{system}",
        INSTRUCTION="<｜User｜>{input}<｜Assistant｜>",
        SUFFIX="<｜end▁of▁sentence｜>",
        SUFFIX_AS_EOS=True,
        SEP="",
        STOP_WORDS=["<｜end▁of▁sentence｜>"],
    ),
}


def xtuner_templates() -> dict:
    """xtuner.utils.templates.PROMPT_TEMPLATE, loaded from its file so the heavy `xtuner` package is not imported."""
    spec = importlib.util.find_spec("xtuner")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / "utils" / "templates.py"
    module_spec = importlib.util.spec_from_file_location("_xtuner_templates", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return {name: dict(value) for name, value in module.PROMPT_TEMPLATE.items()}


def all_templates() -> dict[str, dict]:
    return {**xtuner_templates(), **NEW_TEMPLATES}


def is_ours(name: str) -> bool:
    return name in NEW_TEMPLATES


def apply_template(turns: list[dict], template: dict) -> list[dict]:
    """XTuner's template_map_fn (xtuner/dataset/map_fns/template_map_fn.py) plus our SYSTEM_IN_USER and PREFIX:
    each turn's `input` becomes the prompt text, `output` gets the SUFFIX, and `need_eos_token` / `sep` say what
    XTuner's encode_fn appends. The one definition of the training text: training, `data check` and the chat
    template tests all go through it."""
    fold = template.get("SYSTEM_IN_USER")
    suffix = template.get("SUFFIX") or ""
    result = []
    for index, turn in enumerate(turns):
        user = turn.get("input") or ""
        system = turn.get("system") or ""
        if system and fold:
            user, system = fold.format(system=system) + user, ""
        text = template["INSTRUCTION"].format(input=user, round=index + 1)
        if system:
            text = template["SYSTEM"].format(system=system) + text
        if index == 0 and template.get("PREFIX"):
            text = template["PREFIX"] + text
        result.append({**turn, "input": text, "output": (turn.get("output") or "") + suffix,
                       "need_eos_token": not template.get("SUFFIX_AS_EOS", False), "sep": template.get("SEP") or ""})
    return result
