"""Tiny random-weight models of today's families (exact architecture class, tiny sizes), made offline.

Each gets a tokenizer built from the embedded SmolLM2 BPE vocabulary plus the family's own special tokens, its
special-token roles (bos/eos/pad) and the family's upstream chat template (tests/data/chat_templates/), so the
whole chain (config -> XTuner train -> convert -> merge -> chat) runs on the same code paths as the real models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATES = Path(__file__).parent / "data" / "chat_templates"
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, max_position_embeddings=2048,
            initializer_range=0.2)  # confident random logits: a few LoRA steps visibly lower the loss


@dataclass(frozen=True)
class Family:
    name: str
    preset: str  # the preset whose prompt template and flags this family trains with
    config_class: str  # a transformers config class ("": tokenizer only, the architecture is remote code)
    special: tuple[str, ...]  # special tokens added to the vocabulary
    bos: str | None
    eos: str
    pad: str
    eos_ids: tuple[str, ...]  # generation_config.eos_token_id, as tokens
    upstream_template: str  # file in tests/data/chat_templates
    tokenizer_class: str = "PreTrainedTokenizerFast"
    config: dict = field(default_factory=dict)
    plain: tuple[str, ...] = ()  # added tokens that are not special (decoded like text: Qwen3's <think>)


FAMILIES = {
    f.name: f
    for f in [
        Family("qwen3", "qwen3-1.7b", "Qwen3Config", (), None, "<|im_end|>",
               "<|endoftext|>", ("<|im_end|>", "<|endoftext|>"), "qwen3.jinja", "Qwen2TokenizerFast",
               dict(tie_word_embeddings=True), plain=("<think>", "</think>")),
        Family("gemma3", "gemma3-1b-it", "Gemma3TextConfig",
               ("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"), "<bos>", "<eos>", "<pad>",
               ("<eos>", "<end_of_turn>"), "gemma3.jinja", config=dict(sliding_window=64, query_pre_attn_scalar=16)),
        Family("glm4", "glm4-9b-0414", "Glm4Config",
               ("[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"), None,
               "<|endoftext|>", "<|endoftext|>", ("<|endoftext|>", "<|user|>", "<|observation|>"),
               "glm4_0414.jinja", config=dict(partial_rotary_factor=0.5)),
        Family("llama3", "llama3.2-1b-instruct", "LlamaConfig",
               ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                "<|eom_id|>"), "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>",
               ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"), "llama3_2.jinja",
               config=dict(rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0, "original_max_position_embeddings": 1024},
                           tie_word_embeddings=True)),
        # tokenizer-only families: their architectures are covered above (InternLM3's is remote code)
        Family("qwen2_5", "qwen2.5-7b-instruct", "", (), None, "<|im_end|>", "<|endoftext|>",
               ("<|im_end|>", "<|endoftext|>"), "qwen2_5.jinja", "Qwen2TokenizerFast"),
        Family("internlm3", "internlm3-8b-instruct", "", ("<s>", "</s>", "<unk>"), "<s>", "</s>", "</s>",
               ("</s>", "<|im_end|>"), "internlm3.jinja"),
        Family("deepseek_r1", "deepseek-r1-distill-qwen-7b", "",
               ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"),
               "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
               ("<｜end▁of▁sentence｜>",), "deepseek_r1_distill_qwen.jinja"),
    ]
}
ARCHITECTURES = [name for name, family in FAMILIES.items() if family.config_class]


def upstream_template(family: Family) -> str:
    return (TEMPLATES / family.upstream_template).read_text(encoding="utf-8")


def make_tokenizer(family: Family, embedded_model: Path):
    import transformers
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(Path(embedded_model) / "tokenizer.json"))
    raw.post_processor = None  # SmolLM2's GGUF conversion prepends <|im_start|>; the real families do their own
    cls = getattr(transformers, family.tokenizer_class)
    tokenizer = cls(tokenizer_object=raw, bos_token=family.bos, eos_token=family.eos, pad_token=family.pad,
                    unk_token=None, add_bos_token=False, model_input_names=["input_ids", "attention_mask"])
    tokenizer.add_special_tokens({"additional_special_tokens": list(family.special)})
    tokenizer.add_tokens(list(family.plain))
    tokenizer.chat_template = upstream_template(family)
    tokenizer.model_max_length = TINY["max_position_embeddings"]
    return tokenizer


def make_tiny_model(name: str, out: Path, embedded_model: Path, *, seed: int = 0) -> Path:
    """Write a tiny random-weight `name` model folder (config, safetensors, tokenizer) to `out`."""
    import torch
    import transformers

    family = FAMILIES[name]
    tokenizer = make_tokenizer(family, embedded_model)
    ids = tokenizer.convert_tokens_to_ids
    config = getattr(transformers, family.config_class)(
        vocab_size=len(tokenizer), **TINY, **family.config,
        bos_token_id=ids(family.bos) if family.bos else None, eos_token_id=[ids(t) for t in family.eos_ids],
        pad_token_id=ids(family.pad))
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "tiny_family.json").write_text(json.dumps({"family": name}), encoding="utf-8")
    return out
