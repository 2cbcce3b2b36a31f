"""The Modelfile's TEMPLATE renders exactly the training template's text: rendered by Go's own text/template the way
Ollama's chat endpoint runs it (tests/ollama_render/main.go), compared with the merged tokenizer's Jinja chat
template as transformers renders it (which tests/test_chat_template.py ties to XTuner's training text)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from finetune import modelfile
from finetune.chat_template import build_chat_template, load_xtuner_template
from finetune.errors import InputError
from finetune.presets import PRESETS

SYSTEM = "You are 小薇, a helpful assistant."
TURNS = [("你是谁？", "我是小薇。"), ("What can you do?", "I answer questions.\nIn two lines."), ("谢谢", "不客气！")]
# every template a preset trains with, and XTuner's own that end answers with eos (and open turns with bos)
TEMPLATES = sorted({p.prompt_template for p in PRESETS.values()} | {"default"})


def go_render(binary: Path, cases: list[dict]) -> list[str]:
    done = subprocess.run([str(binary)], input=json.dumps(cases), capture_output=True, text=True, check=True)
    results = json.loads(done.stdout)
    errors = [r["error"] for r in results if r.get("error")]
    assert not errors, errors
    return [r["text"] for r in results]


def conversations() -> list[tuple[list[dict], str | None]]:
    """1, 2 and 3 turns, each with the default system prompt, an explicit one and an explicit empty one; the last
    user message waits for the answer."""
    out = []
    for turns in (1, 2, 3):
        messages = []
        for question, answer in TURNS[:turns]:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        messages = messages[:-1]
        out += [(messages, None), ([{"role": "system", "content": "Answer briefly."}, *messages], None)]
    return out


def jinja_render(tokenizer, chat_template: str, messages: list[dict], **extra) -> str:
    return tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False,
                                         add_generation_prompt=True, **extra)


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("runtime_adds_bos", [False, True])
def test_ollama_renders_the_training_text(name, runtime_adds_bos, tokenizer, ollama_render):
    template = load_xtuner_template(name)
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    text = modelfile.ollama_template(template, name=name, bos=bos, eos=eos, train_bos=True,
                                     runtime_adds_bos=runtime_adds_bos)
    file = modelfile.render(gguf_file="m.gguf", template_text=text, system=SYSTEM,
                            stops=modelfile.modelfile_stops(template, eos), num_ctx=8192, source="test")
    chat_template = build_chat_template(template, default_system=SYSTEM, add_bos=True)
    cases = conversations()
    rendered = go_render(ollama_render, [{"modelfile": file, "messages": m} for m, _ in cases])
    for (messages, _), got in zip(cases, rendered, strict=True):
        expected = jinja_render(tokenizer, chat_template, messages)
        if runtime_adds_bos:  # llama.cpp adds the BOS token itself when it tokenizes the prompt
            assert expected.startswith(bos)
            expected = expected[len(bos):]
        assert got == expected, (name, messages)


def test_thinking_switch_opens_the_think_block_like_the_jinja_template(tokenizer, ollama_render):
    template = load_xtuner_template("qwen3_chat")
    text = modelfile.ollama_template(template, name="qwen3_chat", bos=None, eos="<|im_end|>", train_bos=False,
                                     runtime_adds_bos=False)
    file = modelfile.render(gguf_file="m.gguf", template_text=text, system=SYSTEM, stops=["<|im_end|>"],
                            num_ctx=None, source="test")
    chat_template = build_chat_template(template, default_system=SYSTEM, add_bos=False)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "2+2?"}]
    cases = [{"modelfile": file, "messages": messages, "think": on, "is_think_set": on} for on in (False, True)]
    off, on = go_render(ollama_render, cases)
    assert off == jinja_render(tokenizer, chat_template, messages)
    assert on == jinja_render(tokenizer, chat_template, messages, enable_thinking=True)
    assert on.endswith("<|im_start|>assistant\n") and off.endswith("</think>\n\n")


def test_modelfile_carries_stops_system_and_generation_defaults():
    template = load_xtuner_template("default")  # answers end with eos: eos is a stop word too
    text = modelfile.ollama_template(template, name="default", bos="<s>", eos="</s>", train_bos=True,
                                     runtime_adds_bos=True)
    file = modelfile.render(gguf_file="x-Q4_K_M.gguf", template_text=text, system="Be kind.",
                            stops=modelfile.modelfile_stops(template, "</s>"), num_ctx=32768, source="runs/x",
                            others=["x-Q8_0.gguf"])
    lines = file.splitlines()
    assert "FROM ./x-Q4_K_M.gguf" in lines and "# other quantizations beside it: FROM ./x-Q8_0.gguf" in lines
    assert 'SYSTEM """Be kind."""' in lines and 'PARAMETER stop "</s>"' in lines
    assert "PARAMETER num_ctx 4096" in lines and "PARAMETER temperature 0.7" in lines
    assert 'TEMPLATE """{{-' in file and '{{- end }}"""' in file  # nothing outside the actions


def test_round_numbered_template_and_triple_quotes_are_clear_errors():
    with pytest.raises(InputError, match="numbers its rounds"):
        modelfile.ollama_template(load_xtuner_template("chatglm2"), name="chatglm2", bos=None, eos="</s>",
                                  train_bos=False, runtime_adds_bos=False)
    with pytest.raises(InputError, match='contains """'):
        modelfile.render(gguf_file="m.gguf", template_text="{{ .Prompt }}", system='say """hi"""', stops=[],
                         num_ctx=None, source="test")
