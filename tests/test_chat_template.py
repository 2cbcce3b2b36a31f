"""The merged model's chat template must render exactly what XTuner trained on."""


import pytest

from finetune.chat_template import (
    build_chat_template,
    load_xtuner_template,
    render_training_text,
    xtuner_adds_bos,
)
from finetune.errors import InputError
from tests.chat_helpers import CONVERSATION, MESSAGES, SYSTEM, xtuner_input_ids


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
