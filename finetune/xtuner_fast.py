"""XTuner's SupervisedFinetune with Liger Kernel's fused kernels, imported by fast GPU configs.

mmengine parses configs in lazy-import mode and builds `model` from its dict, so code in the config file itself never
runs first (see xtuner_compat). Liger replaces the transformers classes (RMSNorm, MLP) and functions (RoPE, the
CausalLM forward) that the model is built from, so the patch must run before XTuner builds the LLM: this class
applies it at the start of its __init__. XTuner's loss is the LLM's own `outputs.loss` (compute_loss calls the LLM
with labels), so in training Liger's fused linear cross-entropy computes it without materialising the logits.
Where it cannot apply (no CUDA, no liger-kernel, a model type Liger does not know) it logs why and trains as stock.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from mmengine import print_log
from xtuner.model import SupervisedFinetune as _SupervisedFinetune


def model_type_of(model_path: str) -> str:
    try:
        return str(json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8")).get("model_type", ""))
    except (OSError, ValueError):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model_path, trust_remote_code=True).model_type


def apply_fused_kernels(model_path: str, options: dict) -> str:
    """Patch transformers for the model at `model_path`; returns what was done, for the log."""
    import torch

    if not torch.cuda.is_available():
        return "skipped: no CUDA device (Liger's kernels are Triton GPU kernels)"
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError as error:
        from .speed import LIGER_PIN

        return f"skipped: liger-kernel does not import ({error}); pip install --no-deps liger-kernel=={LIGER_PIN}"
    model_type = model_type_of(model_path)
    apply = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
    if apply is None:
        return f"skipped: liger-kernel has no kernels for model type {model_type!r}"
    accepted = inspect.signature(apply).parameters
    kwargs = {key: value for key, value in options.items() if key in accepted}
    apply(**kwargs)
    return f"liger-kernel applied to {model_type}: {', '.join(key for key, value in kwargs.items() if value)}"


class SupervisedFinetune(_SupervisedFinetune):
    def __init__(self, llm, *args, fused_kernels: dict | None = None, **kwargs):
        if fused_kernels:
            outcome = apply_fused_kernels(llm["pretrained_model_name_or_path"], dict(fused_kernels))
            print_log(f"fused kernels: {outcome}", "current")
        super().__init__(llm, *args, **kwargs)


__all__ = ["SupervisedFinetune", "apply_fused_kernels"]
