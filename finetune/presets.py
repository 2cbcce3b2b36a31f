"""Model presets: hub ids, XTuner prompt template, remote-code flag, and sensible LoRA defaults."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from .errors import UnknownPreset

DEFAULT_PRESET = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Preset:
    name: str
    hf_id: str
    modelscope_id: str
    prompt_template: str  # a key of xtuner.utils.PROMPT_TEMPLATE
    trust_remote_code: bool
    params_b: float  # parameters, billions (memory estimates)
    context: int
    lora_r: int = 64
    lora_alpha: int = 16
    embedded: bool = False  # weights ship with this toolkit (the CPU default)
    seed: str = ""  # which tutorial uses it


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("internlm2.5-7b-chat", "internlm/internlm2_5-7b-chat", "Shanghai_AI_Laboratory/internlm2_5-7b-chat",
               "internlm2_chat", True, 7.74, 32768, seed="camp3/camp4"),
        Preset("internlm2.5-1.8b-chat", "internlm/internlm2_5-1_8b-chat",
               "Shanghai_AI_Laboratory/internlm2_5-1_8b-chat", "internlm2_chat", True, 1.89, 32768,
               seed="camp3"),
        Preset("internlm2-chat-7b", "internlm/internlm2-chat-7b", "Shanghai_AI_Laboratory/internlm2-chat-7b",
               "internlm2_chat", True, 7.74, 32768, seed="camp2 (001)"),
        Preset("internlm-chat-7b", "internlm/internlm-chat-7b", "Shanghai_AI_Laboratory/internlm-chat-7b",
               "internlm_chat", True, 7.32, 2048, seed="camp1 (004)"),
        Preset("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct",
               "qwen_chat", False, 0.49, 32768),
        Preset("qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct",
               "qwen_chat", False, 1.54, 32768),
        Preset("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct",
               "qwen_chat", False, 7.62, 32768),
        # R1-Distill-Qwen's own template uses DeepSeek's fullwidth markers; XTuner 0.2.0 has no template for it.
        # The tutorial (003) fine-tunes it with qwen_chat (ChatML), which the tokenizer also knows.
        Preset("deepseek-r1-distill-qwen-1.5b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
               "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "qwen_chat", False, 1.78, 131072, seed="003"),
        Preset("llama3-8b-instruct", "meta-llama/Meta-Llama-3-8B-Instruct", "LLM-Research/Meta-Llama-3-8B-Instruct",
               "llama3_chat", False, 8.03, 8192),
        Preset("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct",
               "qwen_chat", False, 0.135, 8192, lora_r=16, lora_alpha=32, embedded=True),
    ]
}


def get_preset(name: str) -> Preset:
    key = name.strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    close = difflib.get_close_matches(key, PRESETS, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UnknownPreset(
        f"Unknown model preset '{name}'.",
        f"{hint}use one of: {', '.join(PRESETS)} (or pass a local model folder).",
    )


def find_preset_for_hub_id(hub_id: str) -> Preset | None:
    lowered = hub_id.lower()
    for preset in PRESETS.values():
        if lowered in (preset.hf_id.lower(), preset.modelscope_id.lower()):
            return preset
    return None
