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

import torch
import torch.nn.functional as F
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


def _loaded_16bit(model):
    """The 16-bit dtype the model was loaded in (what peft's fp32 copies can go back to), else None."""
    loaded = getattr(model.config, "torch_dtype", None)
    return loaded if loaded in (torch.bfloat16, torch.float16) else None


def keep_frozen_16bit(model) -> str:
    """Undo peft's fp32 copies of the frozen input embeddings and output head (prepare_model_for_kbit_training
    upcasts every 16-bit parameter that is not 4-bit). They were loaded in 16-bit, so casting back loses nothing;
    the embeddings' output is still handed to the layers in fp32 and autocast runs the head's matmul in 16-bit
    either way, so training computes the same numbers with ~2 GiB less memory on a 7B model."""
    loaded = _loaded_16bit(model)
    if loaded is None:
        return f"skipped: the model was loaded as {getattr(model.config, 'torch_dtype', None)}"
    kept, cast = [], set()
    for role, module in (("embeddings", model.get_input_embeddings()), ("head", model.get_output_embeddings())):
        weight = getattr(module, "weight", None)
        if weight is None or weight.requires_grad:
            continue
        if weight.dtype == torch.float32:
            weight.data = weight.data.to(loaded)
            kept.append(f"{role} ({weight.numel() * 2 / 2**30:.2f} GiB)")
            cast.add(id(weight))
        if id(weight) not in cast:  # not an fp32 copy (a tied head shares the embeddings' weight cast above)
            continue
        if role == "embeddings":
            module.register_forward_hook(lambda _module, _inputs, output: output.to(torch.float32))
        else:
            module.forward = _head_forward(module)
    return f"kept {loaded}: {', '.join(kept)}" if kept else "nothing to keep (no fp32 copies)"


def _head_forward(head):
    """The head outside autocast (XTuner's sample generation between iterations) gets fp32 hidden states: it then
    multiplies by an fp32 view of its 16-bit weight, as the fp32 copy did."""

    def forward(hidden):
        weight = head.weight
        if hidden.dtype != weight.dtype and not torch.is_autocast_enabled(hidden.device.type):
            weight = weight.to(hidden.dtype)
        return F.linear(hidden, weight, head.bias)

    return forward


def keep_residual_16bit(model) -> str:
    """Undo all of peft's fp32 copies of frozen weights (embeddings, head, norms): the model then trains as it was
    loaded, the residual stream and the checkpointed activations in 16-bit, as in inference; only the LoRA weights
    stay fp32. Unlike keep_frozen_16bit this changes the numbers: the layers add in 16-bit instead of fp32."""
    loaded = _loaded_16bit(model)
    if loaded is None:
        return f"skipped: the model was loaded as {getattr(model.config, 'torch_dtype', None)}"
    copies = [p for p in model.parameters() if not p.requires_grad and p.dtype == torch.float32]
    for parameter in copies:
        parameter.data = parameter.data.to(loaded)
    size = sum(p.numel() for p in copies) * 2 / 2**30
    return f"kept {loaded}: {len(copies)} frozen tensors ({size:.2f} GiB); the residual stream is {loaded}"


class SupervisedFinetune(_SupervisedFinetune):
    def __init__(self, llm, *args, fused_kernels: dict | None = None, frozen_16bit: bool = False,
                 residual_16bit: bool = False, **kwargs):
        if fused_kernels:
            outcome = apply_fused_kernels(llm["pretrained_model_name_or_path"], dict(fused_kernels))
            print_log(f"fused kernels: {outcome}", "current")
        super().__init__(llm, *args, **kwargs)
        if residual_16bit and self.use_lora:
            print_log(f"16-bit residual: {keep_residual_16bit(self.llm)}", "current")
        elif frozen_16bit and self.use_lora:
            print_log(f"frozen 16-bit: {keep_frozen_16bit(self.llm)}", "current")


__all__ = ["SupervisedFinetune", "apply_fused_kernels", "keep_frozen_16bit", "keep_residual_16bit"]
