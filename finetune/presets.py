"""Model presets: hub ids, XTuner prompt template, remote-code flag, and sensible LoRA/QLoRA defaults.

LoRA goes on every linear projection of the decoder (XTuner's default when no target_modules is given), for every
family here. Small models (< 3B) train plain bf16 LoRA on a GPU (`quant="none"`): they fit any 24 GB card, and
4-bit only slows them down; larger ones default to QLoRA (4-bit NF4) on a GPU.
"""

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
    quant: str = "auto"  # the --quant default on a GPU: auto (4-bit) or none (bf16 LoRA)
    thinking: bool = False  # the chat template has a thinking switch (enable_thinking)
    license: str = "other"  # as the hubs spell it in model cards


def _small(name: str, hf_id: str, modelscope_id: str, template: str, params_b: float, context: int,
           **kwargs) -> Preset:
    """A preset under 3B parameters: bf16 LoRA with a larger rank instead of QLoRA."""
    return Preset(name, hf_id, modelscope_id, template, False, params_b, context, lora_r=32, lora_alpha=64,
                  quant="none", **kwargs)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        # Qwen3: one chat template for the series with a thinking switch; identity data is trained in the
        # non-thinking form (an empty <think></think> block before the answer, as enable_thinking=False renders).
        _small("qwen3-0.6b", "Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B", "qwen3_chat", 0.75, 32768, thinking=True,
               license="apache-2.0"),
        _small("qwen3-1.7b", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-1.7B", "qwen3_chat", 2.03, 32768, thinking=True,
               license="apache-2.0"),
        Preset("qwen3-4b", "Qwen/Qwen3-4B", "Qwen/Qwen3-4B", "qwen3_chat", False, 4.02, 32768, thinking=True,
               license="apache-2.0"),
        Preset("qwen3-8b", "Qwen/Qwen3-8B", "Qwen/Qwen3-8B", "qwen3_chat", False, 8.19, 32768, thinking=True,
               license="apache-2.0"),
        Preset("qwen3-14b", "Qwen/Qwen3-14B", "Qwen/Qwen3-14B", "qwen3_chat", False, 14.77, 32768, thinking=True,
               license="apache-2.0"),
        Preset("internlm3-8b-instruct", "internlm/internlm3-8b-instruct",
               "Shanghai_AI_Laboratory/internlm3-8b-instruct", "internlm2_chat", True, 8.80, 32768,
               license="apache-2.0"),
        Preset("internlm2.5-7b-chat", "internlm/internlm2_5-7b-chat", "Shanghai_AI_Laboratory/internlm2_5-7b-chat",
               "internlm2_chat", True, 7.74, 32768, seed="camp3/camp4"),
        Preset("internlm2.5-1.8b-chat", "internlm/internlm2_5-1_8b-chat",
               "Shanghai_AI_Laboratory/internlm2_5-1_8b-chat", "internlm2_chat", True, 1.89, 32768,
               seed="camp3"),
        Preset("internlm2-chat-7b", "internlm/internlm2-chat-7b", "Shanghai_AI_Laboratory/internlm2-chat-7b",
               "internlm2_chat", True, 7.74, 32768, seed="camp2 (001)"),
        Preset("internlm-chat-7b", "internlm/internlm-chat-7b", "Shanghai_AI_Laboratory/internlm-chat-7b",
               "internlm_chat", True, 7.32, 2048, seed="camp1 (004)"),
        # Gemma 3: the text-only instruction-tuned sizes (Gemma3ForCausalLM); 4B and larger are vision models.
        _small("gemma3-270m-it", "google/gemma-3-270m-it", "LLM-Research/gemma-3-270m-it", "gemma3_chat", 0.27,
               32768, license="gemma"),
        _small("gemma3-1b-it", "google/gemma-3-1b-it", "LLM-Research/gemma-3-1b-it", "gemma3_chat", 1.0, 32768,
               license="gemma"),
        Preset("glm4-9b-0414", "THUDM/GLM-4-9B-0414", "ZhipuAI/GLM-4-9B-0414", "glm4_chat", False, 9.40, 32768,
               license="mit"),
        Preset("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct",
               "qwen_chat", False, 0.49, 32768, license="apache-2.0"),
        Preset("qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct",
               "qwen_chat", False, 1.54, 32768, license="apache-2.0"),
        Preset("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct",
               "qwen_chat", False, 7.62, 32768, license="apache-2.0"),
        # R1-Distill-Qwen's own template uses DeepSeek's fullwidth markers; XTuner 0.2.0 has no template for it.
        # The tutorial (003) fine-tunes it with qwen_chat (ChatML), which the tokenizer also knows.
        Preset("deepseek-r1-distill-qwen-1.5b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
               "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "qwen_chat", False, 1.78, 131072, seed="003",
               license="mit"),
        # The newer distill presets train with the distills' own template (finetune/templates.py).
        Preset("deepseek-r1-distill-qwen-7b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
               "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "deepseek_r1_chat", False, 7.62, 131072, license="mit"),
        Preset("deepseek-r1-distill-llama-8b", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
               "deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "deepseek_r1_chat", False, 8.03, 131072, license="mit"),
        Preset("llama3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", "LLM-Research/Meta-Llama-3.1-8B-Instruct",
               "llama3_1_chat", False, 8.03, 131072, license="llama3.1"),
        _small("llama3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct", "LLM-Research/Llama-3.2-1B-Instruct",
               "llama3_1_chat", 1.24, 131072, license="llama3.2"),
        Preset("llama3.2-3b-instruct", "meta-llama/Llama-3.2-3B-Instruct", "LLM-Research/Llama-3.2-3B-Instruct",
               "llama3_1_chat", False, 3.21, 131072, license="llama3.2"),
        Preset("llama3-8b-instruct", "meta-llama/Meta-Llama-3-8B-Instruct", "LLM-Research/Meta-Llama-3-8B-Instruct",
               "llama3_chat", False, 8.03, 8192, license="llama3"),
        Preset("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct",
               "qwen_chat", False, 0.135, 8192, lora_r=16, lora_alpha=32, embedded=True, license="apache-2.0"),
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
