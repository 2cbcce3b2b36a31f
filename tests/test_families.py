"""Today's families (Qwen3, Gemma 3, GLM-4-0414, Llama 3.x, InternLM3, DeepSeek-R1 distills), proven offline.

- Templates: the text XTuner trains on equals the family's own (upstream) chat template, where XTuner's format can
  express it, and differs exactly as documented in finetune/templates.py where it cannot; the merged model's chat
  template renders the training text byte for byte, and its token ids equal XTuner's own dataset pipeline's.
- Chain: a tiny random-weight model of each architecture goes through `finetune run` (config -> XTuner train ->
  convert -> merge) and the chat engine; the merged model's logits equal base + adapter's; XTuner's loss curve
  follows a plain transformers + PEFT loop's on the same data, seed and learning rates.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from tiny_families import ARCHITECTURES, FAMILIES, make_tiny_model, make_tokenizer

from app.engine import ChatEngine, GenerationSettings
from finetune.chat_template import build_chat_template, load_xtuner_template, render_training_text, xtuner_adds_bos
from finetune.presets import get_preset
from finetune.templates import apply_template

SYSTEM = "You are a helpful assistant."
TURNS = [("请介绍一下你自己", "我是小薇的智能助手。"), ("What can you do?", "I can answer questions."),
         ("Say hi in French.", "Bonjour !")]
SHAPES = [(turns, system) for system in (SYSTEM, "") for turns in (1, 2, 3)]
EMPTY_THINK = "<think>\n\n</think>\n\n"


def conversation(turns: int, system: str) -> list[dict]:
    conv = [{"input": q, "output": a} for q, a in TURNS[:turns]]
    if system:
        conv[0]["system"] = system
    return conv


def messages(turns: int, system: str) -> list[dict]:
    out = [{"role": "system", "content": system}] if system else []
    for q, a in TURNS[:turns]:
        out += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return out


@pytest.fixture(scope="module")
def tokenizers(embedded_model):
    return {name: make_tokenizer(family, embedded_model) for name, family in FAMILIES.items()}


def template_of(name: str) -> dict:
    return load_xtuner_template(get_preset(FAMILIES[name].preset).prompt_template)


def training_text(tokenizer, template: dict, conv: list[dict]) -> str:
    bos = tokenizer.bos_token if xtuner_adds_bos(tokenizer) else ""
    return render_training_text(template, conv, bos=bos or "", eos=tokenizer.eos_token)


def upstream_text(tokenizer, turns: int, system: str) -> str:
    # Llama 3.2 writes today's date unless given one; 26 Jul 2024 is its own fallback (and Llama 3.1's fixed date)
    return tokenizer.apply_chat_template(messages(turns, system), tokenize=False, date_string="26 Jul 2024",
                                         enable_thinking=False)


def expected_upstream(name: str, ours: str, turns: int, system: str) -> str | None:
    """Our training text turned into upstream's by the differences finetune/templates.py documents (None: no
    upstream counterpart for this shape)."""
    if name == "qwen3":  # upstream keeps the empty think block only in the last assistant turn
        head, last = ours.rsplit(EMPTY_THINK, 1)
        return head.replace(EMPTY_THINK, "") + EMPTY_THINK + last
    if name == "glm4":  # we train the eos after each answer; upstream marks no end of an answer
        return ours.replace("<|endoftext|>", "")
    if name == "llama3" and not system:  # upstream always writes the system block; XTuner writes none here
        return None
    if name == "qwen2_5" and not system:  # upstream injects Qwen's default system prompt
        return None
    return ours


@pytest.mark.parametrize("turns,system", SHAPES)
@pytest.mark.parametrize("name", list(FAMILIES))
def test_training_text_is_the_family_template(tokenizers, name, turns, system):
    tokenizer = tokenizers[name]
    ours = training_text(tokenizer, template_of(name), conversation(turns, system))
    expected = expected_upstream(name, ours, turns, system)
    if expected is None:
        assert upstream_text(tokenizer, turns, system).count("system") == 1  # a system block we do not write
        return
    assert upstream_text(tokenizer, turns, system) == expected
    if name in ("gemma3", "internlm3", "deepseek_r1", "qwen2_5") or (name == "qwen3" and turns == 1):
        assert ours == expected  # byte for byte, nothing to adapt


def test_qwen3_single_turn_trains_what_enable_thinking_false_prompts(tokenizers):
    tokenizer = tokenizers["qwen3"]
    prompt = tokenizer.apply_chat_template(messages(1, SYSTEM)[:-1], tokenize=False, add_generation_prompt=True,
                                           enable_thinking=False)
    assert training_text(tokenizer, template_of("qwen3"), conversation(1, SYSTEM)).startswith(prompt)


def xtuner_input_ids(tokenizer, template: dict, conv: list[dict]) -> list[int]:
    """Token ids exactly as XTuner's dataset pipeline builds them, with our template map (finetune.xtuner_compat)."""
    from xtuner.dataset.utils import encode_fn

    from finetune.xtuner_compat import template_map_fn

    example = template_map_fn({"conversation": copy.deepcopy(conv)}, template)
    return encode_fn(example, tokenizer, max_length=4096)["input_ids"]


@pytest.mark.parametrize("turns,system", SHAPES)
@pytest.mark.parametrize("name", list(FAMILIES))
def test_merged_chat_template_renders_the_training_tokens(tokenizers, name, turns, system):
    tokenizer = copy.deepcopy(tokenizers[name])
    template = template_of(name)
    tokenizer.chat_template = build_chat_template(template, default_system="", add_bos=xtuner_adds_bos(tokenizer))
    conv = conversation(turns, system)
    rendered = tokenizer.apply_chat_template(messages(turns, system), tokenize=False)
    assert rendered == training_text(tokenizer, template, conv)
    # the generation prompt's ids are the prompt ids XTuner trained the answer after (training tokenizes the prompt
    # and the answer apiece, so only a prompt that ends where the answer starts can be compared token by token)
    prompt = tokenizer.apply_chat_template(messages(turns, system)[:-1], tokenize=True, add_generation_prompt=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    if turns == 1:
        trained = xtuner_input_ids(tokenizer, template, conv)
        answer = tokenizer.encode(conv[0]["output"], add_special_tokens=False)
        assert trained[:len(prompt)] == prompt and trained[len(prompt):len(prompt) + len(answer)] == answer


def test_qwen3_thinking_switch_opens_the_think_block(tokenizers):
    tokenizer = copy.deepcopy(tokenizers["qwen3"])
    tokenizer.chat_template = build_chat_template(template_of("qwen3"), default_system=SYSTEM, add_bos=False)
    asked = [{"role": "user", "content": "hi"}]
    plain = tokenizer.apply_chat_template(asked, tokenize=False, add_generation_prompt=True)
    thinking = tokenizer.apply_chat_template(asked, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert plain.endswith("<|im_start|>assistant\n" + EMPTY_THINK)
    assert thinking.endswith("<|im_start|>assistant\n") and plain.startswith(thinking)
    upstream = tokenizers["qwen3"].apply_chat_template([{"role": "system", "content": SYSTEM}, *asked],
                                                       tokenize=False, add_generation_prompt=True,
                                                       enable_thinking=True)
    assert thinking == upstream


# ----------------------------------------------------------------------------------------------- the chain

IDENTITY = [("你是谁？", "我是小薇的智能助手。"), ("Who are you?", "I am Xiaowei's assistant."),
            ("你叫什么名字？", "我叫小薇，是你的智能助手。"), ("What is your name?", "My name is Xiaowei."),
            ("介绍一下你自己。", "我是小薇的智能助手，可以回答问题。"),
            ("Introduce yourself.", "I am Xiaowei, an assistant."),
            ("你是谁开发的？", "我是小薇的智能助手。"), ("Who made you?", "I am Xiaowei's assistant.")]
EPOCHS = 16
LR = 2e-2


@pytest.fixture(scope="module", params=ARCHITECTURES)
def family_run(request, tmp_path_factory, embedded_model):
    """`finetune run` on a tiny random-weight model of the family: 8 records, one batch of 8 per iteration."""
    from finetune.cli import main

    name = request.param
    root = tmp_path_factory.mktemp(f"family-{name}")
    model = make_tiny_model(name, root / "base", embedded_model)
    data = root / "identity.jsonl"
    data.write_text("".join(json.dumps({"conversation": [{"system": SYSTEM, "input": q, "output": a}]},
                                       ensure_ascii=False) + "\n" for q, a in IDENTITY), encoding="utf-8")
    run = root / "run"
    code = main(["run", "--preset", FAMILIES[name].preset, "--model", str(model), "--data", str(data),
                 "--no-replay", "--out", str(run), "--epochs", str(EPOCHS), "--batch-size", "8", "--grad-accum", "1",
                 "--max-length", "128", "--no-pack", "--lr", str(LR), "--eval-max-new-tokens", "4",
                 "--sample", "Who are you?", "--no-eval"])  # the eval stage is tested on the embedded model
    assert code == 0
    return name, model, run


def test_chain_writes_adapter_and_merged_model_of_the_family(family_run):
    name, model, run = family_run
    manifest = json.loads((run / "run.json").read_text())
    assert all(manifest["stages"][s]["done"] for s in ("data", "config", "train", "convert", "merge", "samples"))
    template = get_preset(FAMILIES[name].preset).prompt_template
    assert manifest["spec"]["preset"] == FAMILIES[name].preset
    assert json.loads((run / "adapter" / "finetune_meta.json").read_text())["prompt_template"] == template
    config = json.loads((run / "merged" / "config.json").read_text())
    assert config["architectures"] == json.loads((model / "config.json").read_text())["architectures"]


def test_merged_logits_equal_base_plus_adapter(family_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, model, run = family_run
    tokenizer = AutoTokenizer.from_pretrained(run / "merged")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Who are you?"}], add_generation_prompt=True,
                                        return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    merged = AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    with torch.no_grad():
        before = base(ids).logits
        expected = PeftModel.from_pretrained(base, run / "adapter").eval()(ids).logits
        got = merged(ids).logits
    assert not torch.allclose(expected, before, atol=1e-3)  # training changed the model
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)


def test_chat_engine_streams_from_the_merged_model(family_run):
    from app.models import ModelRequest, load

    _, _, run = family_run
    loaded = load(ModelRequest(model=str(run)), notice=lambda _: None)
    engine = ChatEngine(loaded.model, loaded.tokenizer, info=loaded.info, default_system=loaded.default_system)
    pieces = list(engine.stream([], "Who are you?", GenerationSettings(max_new_tokens=8, temperature=0)))
    assert pieces and "".join(pieces)


def test_every_decode_mode_gives_the_same_answer(family_run):
    """The page's decoding modes on the family: static and compiled (the app's own loop) answer as dynamic does."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, _, run = family_run
    model = AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "merged")
    settings = GenerationSettings(max_new_tokens=12, temperature=0)
    answers = {mode: ChatEngine(model, tokenizer, decode=mode).reply([], "Who are you?", settings)
               for mode in ("dynamic", "static", "compiled")}
    assert answers["dynamic"] and answers["static"] == answers["dynamic"] == answers["compiled"], answers


def plain_peft_losses(model_dir, records: list[dict], template: dict, lrs: list[float], spec: dict) -> list[float]:
    """The same training written with transformers + PEFT only: one batch of every record per step, XTuner's
    labels (prompt masked, answer + suffix + eos learned), LoRA on every linear layer, AdamW, clip 1, and XTuner's
    learning rate at each step."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    bos = [tokenizer.bos_token_id] if xtuner_adds_bos(tokenizer) else []
    rows = []
    for record in records:
        text_ids, labels = [], []
        needs_bos = True
        for turn in apply_template(record["conversation"], template):
            prompt = (bos if needs_bos else []) + tokenizer.encode(turn["input"], add_special_tokens=False)
            answer = tokenizer.encode(turn["output"], add_special_tokens=False)
            answer += [tokenizer.eos_token_id] if turn["need_eos_token"] else []
            sep = tokenizer.encode(turn["sep"], add_special_tokens=False) if turn["sep"] else []
            text_ids += prompt + answer + sep
            labels += [-100] * len(prompt) + answer + [-100] * len(sep)
            needs_bos = turn["need_eos_token"]
        rows.append((text_ids, labels))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    label_ids = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    torch.manual_seed(spec["seed"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=spec["lora_r"], lora_alpha=spec["lora_alpha"],
                                             lora_dropout=spec["lora_dropout"], target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lrs[0], betas=(0.9, 0.999), weight_decay=0)
    losses = []
    model.train()
    for lr in lrs:
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = model(input_ids=input_ids, attention_mask=mask, labels=label_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def test_xtuner_loss_falls_as_a_plain_peft_loop(family_run):
    name, model, run = family_run
    manifest = json.loads((run / "run.json").read_text())
    history = [json.loads(line) for line in (run / "work_dir" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == EPOCHS  # one batch of all 8 records per iteration: order cannot matter
    records = [json.loads(line) for line in (run / "data" / "train.jsonl").read_text().splitlines()]
    plain = plain_peft_losses(model, records, template_of(name), [h["lr"] for h in history], manifest["spec"])
    xtuner = [h["loss"] for h in history]
    # mmengine logs the mean of the last 10 iterations' losses (LogProcessor's window_size), not the last one
    window = [sum(plain[max(0, i - 9):i + 1]) / len(plain[max(0, i - 9):i + 1]) for i in range(len(plain))]
    # step 1: the LoRA B matrices are zero, so both losses are the base model's on the same tokens and labels
    assert xtuner[0] == pytest.approx(plain[0], rel=1e-3), (xtuner, window)
    # then the curves fall the same way (LoRA A's random init and dropout differ between the two runs)
    assert xtuner[-1] < 0.6 * xtuner[0] and plain[-1] < 0.5 * plain[0], (xtuner, plain)
    assert xtuner == pytest.approx(window, rel=0.1), (xtuner, window)
