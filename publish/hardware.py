"""Demo hardware per platform and the pre-flight check: will this model, at this precision, fit?

The estimate is deliberately simple and a little generous (weights × overhead + a fixed runtime share); it is meant
to refuse the hopeless cases (a 7B model in fp16 on a 16 GB CPU Space) with a fix, not to shave the last gigabyte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from finetune.presets import find_preset_for_hub_id

from .errors import InputError

GiB = 2**30


@dataclass(frozen=True)
class Hardware:
    name: str  # the platform's own flavour name (what --hardware takes)
    ram_gb: float
    gpu_gb: float = 0.0  # 0: CPU only
    gpu: str = ""
    note: str = ""  # price / how to get it

    @property
    def is_gpu(self) -> bool:
        return self.gpu_gb > 0


# Hugging Face Spaces flavours (hub-docs spaces-gpus.md). Only cpu-basic is free; the rest are billed per minute.
HF_SPACES = [
    Hardware("cpu-basic", 16, note="free"),
    Hardware("cpu-upgrade", 32, note="paid"),
    Hardware("t4-small", 15, 16, "T4", "paid"),
    Hardware("t4-medium", 30, 16, "T4", "paid"),
    Hardware("l4x1", 30, 24, "L4", "paid"),
    Hardware("a10g-small", 15, 24, "A10G", "paid"),
    Hardware("a10g-large", 46, 24, "A10G", "paid"),
    Hardware("l40sx1", 62, 48, "L40S", "paid"),
    Hardware("a100-large", 142, 80, "A100", "paid"),
]
# ModelScope studios: the free CPU box; GPU (A10 24 GB) after applying for it in the console.
MODELSCOPE_STUDIOS = [
    Hardware("cpu", 16, note="free"),
    Hardware("gpu-a10", 32, 24, "A10", "apply in the studio's settings"),
]
# OpenXLab apps: the CPU box every account has; GPUs need a quota application (console → 资源申请).
OPENXLAB_APPS = [
    Hardware("cpu", 8, note="free"),
    Hardware("a10", 32, 24, "A10", "quota on application"),
]
HARDWARE = {"hf": HF_SPACES, "modelscope": MODELSCOPE_STUDIOS, "openxlab": OPENXLAB_APPS}
DEFAULT_HARDWARE = {"hf": "cpu-basic", "modelscope": "cpu", "openxlab": "cpu"}

RUNTIME_RAM_GB = 1.5  # Python, torch, gradio, tokenizer
CUDA_CONTEXT_GB = 1.0  # CUDA context, activations and the KV cache of a few chats
OVERHEAD = 1.2  # non-weight buffers, fragmentation
SIZE_IN_NAME = re.compile(r"(?<![\d.])(\d+(?:[._]\d+)?)\s*([bBmM])(?![a-zA-Z])")


class DoesNotFit(InputError):
    """The model, at this precision, needs more memory than the chosen hardware has."""


def get_hardware(hub: str, name: str | None) -> Hardware:
    name = (name or DEFAULT_HARDWARE[hub]).strip().lower()
    for item in HARDWARE[hub]:
        if item.name == name:
            return item
    names = ", ".join(h.name for h in HARDWARE[hub])
    raise InputError(f"Unknown hardware '{name}' for {hub}.", f"use --hardware one of: {names}.")


def params_billion(model_id: str) -> float | None:
    """The model's size from our presets, else from its name ('…-7B-…', '…-1_8b-…', '…-135M-…'); None if unknown."""
    preset = find_preset_for_hub_id(model_id)
    if preset is not None:
        return preset.params_b
    match = SIZE_IN_NAME.search(model_id.rsplit("/", 1)[-1])
    if match is None:
        return None
    number = float(match.group(1).replace("_", "."))
    return number / 1000 if match.group(2).lower() == "m" else number


def bytes_per_param(bits: int | None, gpu: bool) -> float:
    if not gpu:
        return 4.0  # the app runs fp32 on CPU; --bits needs a GPU and falls back to full precision
    return {4: 0.56, 8: 1.05}.get(bits or 0, 2.0)  # nf4 keeps embeddings and norms in 16 bit


def needed_gb(params_b: float, *, bits: int | None, gpu: bool, copies: int = 1) -> float:
    weights = params_b * 1e9 * bytes_per_param(bits, gpu) * OVERHEAD * copies / GiB
    return weights + (CUDA_CONTEXT_GB if gpu else RUNTIME_RAM_GB)


def fits(hardware: Hardware, params_b: float, *, bits: int | None, copies: int = 1) -> bool:
    capacity = hardware.gpu_gb if hardware.is_gpu else hardware.ram_gb
    return needed_gb(params_b, bits=bits, gpu=hardware.is_gpu, copies=copies) <= capacity


def smallest_fit(hub: str, params_b: float, *, copies: int = 1) -> tuple[Hardware, int | None] | None:
    """The first flavour (cheapest first) where the model fits, full precision before 4-bit."""
    for hardware in HARDWARE[hub]:
        for bits in (None, 4) if hardware.is_gpu else (None,):
            if fits(hardware, params_b, bits=bits, copies=copies):
                return hardware, bits
    return None


def check_fit(hub: str, hardware: Hardware, model_id: str, *, bits: int | None, copies: int = 1) -> str:
    """Refuse (DoesNotFit, with the fix) a model that cannot fit; return a one-line verdict otherwise."""
    if bits and not hardware.is_gpu:
        raise DoesNotFit(f"--bits {bits} needs a GPU, and {hub} hardware '{hardware.name}' has none (the app would "
                         "load the model in full precision).", _suggestion(hub, params_billion(model_id), copies))
    params_b = params_billion(model_id)
    if params_b is None:
        return f"size of {model_id} unknown (not a preset, no size in its name): memory fit not checked"
    need = needed_gb(params_b, bits=bits, gpu=hardware.is_gpu, copies=copies)
    where = f"{hardware.gpu_gb:g} GB {hardware.gpu}" if hardware.is_gpu else f"{hardware.ram_gb:g} GB RAM (CPU)"
    precision = f"{bits}-bit" if bits else ("16-bit" if hardware.is_gpu else "fp32")
    verdict = (f"{model_id} ≈ {params_b:g}B parameters, {precision}{' ×2 for Compare' if copies > 1 else ''}: needs "
               f"≈ {need:.1f} GB, {hardware.name} has {where}")
    if need > (hardware.gpu_gb if hardware.is_gpu else hardware.ram_gb):
        raise DoesNotFit(f"The demo will not fit: {verdict}.", _suggestion(hub, params_b, copies))
    return verdict


def _suggestion(hub: str, params_b: float | None, copies: int) -> str:
    if params_b is None:
        return "pick GPU hardware with --hardware, or drop --bits."
    found = smallest_fit(hub, params_b, copies=copies)
    if found is None:
        return "this model is too large for every flavour we know of; serve it from a GPU server instead."
    hardware, bits = found
    fix = f"use --hardware {hardware.name}{f' --bits {bits}' if bits else ''} ({hardware.note})"
    if copies > 1:
        fix += "; or --no-compare, or base + adapter (--adapter), so the Compare tab needs no second copy"
    return fix + "."
