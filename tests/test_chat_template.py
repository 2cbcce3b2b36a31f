"""The merged model's chat template must render exactly what XTuner trained on."""

import copy

import pytest

from finetune.chat_template import (
    build_chat_template,
    load_xtuner_template,
    render_training_text,
    xtuner_adds_bos,
)
from finetune.errors import InputError

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


@pytest.mark.parametrize("name", ["qwen_chat", "internlm2_chat", "llama3_chat", "internlm_chat", "default",
                                  "chatglm2", "deepseek_v2"])
def test_template_renders_training_text(tokenizer, name):
    template = load_xtuner_template(name)
    chat_template = build_chat_template(template, default_system=SYSTEM, add_bos=True)
    rendered = tokenizer.apply_chat_template(MESSAGES, chat_template=chat_template, tokenize=False)
    expected = render_training_text(template, CONVERSATION, bos=tokenizer.bos_token, eos=tokenizer.eos_token)
    assert rendered == expected


def test_token_ids_match_xtuner_encode_fn(tokenizer):
    template = load_xtuner_template("qwen_chat")
    chat_template = build_chat_template(template, default_system=SYSTEM, add_bos=xtuner_adds_bos(tokenizer))
    ids = tokenizer.apply_chat_template(MESSAGES, chat_template=chat_template, tokenize=True)
    assert ids == xtuner_input_ids(tokenizer, "qwen_chat", CONVERSATION)


def test_generation_prompt_and_default_system(tokenizer):
    template = load_xtuner_template("qwen_chat")
    chat_template = build_chat_template(template, default_system=SYSTEM, add_bos=True)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], chat_template=chat_template,
                                           tokenize=False, add_generation_prompt=True)
    assert prompt == ("<|im_start|><|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                      "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    without = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], chat_template=chat_template,
                                            tokenize=False, add_generation_prompt=False)
    assert without.endswith("<|im_start|>user\nhi<|im_end|>\n")
    custom = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        chat_template=chat_template, tokenize=False, add_generation_prompt=True)
    assert "Be brief." in custom and SYSTEM not in custom


def test_empty_default_system_renders_no_system_block(tokenizer):
    template = load_xtuner_template("qwen_chat")
    chat_template = build_chat_template(template, default_system="", add_bos=False)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], chat_template=chat_template,
                                           tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_unknown_template_is_a_clear_error():
    with pytest.raises(InputError, match="Unknown XTuner prompt template"):
        load_xtuner_template("no_such_template")
