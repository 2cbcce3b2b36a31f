"""Our on-disk formats, in one place: the file names of a run directory, an adapter and a merged model, what counts
as model weights, the dtype and bits rules, and the readers of `run.json` and `finetune_meta.json`.

Lives in `app/` because the hosted demo ships `app/` alone; `finetune/` and `publish/` import it from here. Every
reader takes the error class to raise (finetune's InputError, publish's SourceError, the app's ModelSourceError),
so each tool keeps its own one-line errors and exit codes. `finetune/manifest.py` is the only writer of run.json.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import AppError
from .files import ErrorType, read_json_object

RUN_MANIFEST = "run.json"  # RUN/run.json: inputs, versions, the config spec, finished stages (finetune/manifest.py)
META_FILE = "finetune_meta.json"  # written by `finetune convert/merge`: base path, template, system prompt
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"

# What counts as model weights. app/models.py and finetune/modelload.py disagreed (the app left out *.pt/*.pth);
# decided: the union of both, so no folder either tool accepted is refused now, and the union of the files that a
# training checkpoint keeps beside its weights (Hugging Face Trainer state) never counts.
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.pt", "*.pth")
NOT_WEIGHTS = frozenset({"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"})

DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16", "bf16": "bfloat16",
          "bfloat16": "bfloat16"}
QUANT_BITS: dict[str, int | None] = {"none": None, "4bit": 4, "8bit": 8}  # a config's --quant -> bits of the base
SPEC_BITS = "bits"  # the spec's key for the bits the base model was trained in; runs before it was recorded lack it

FIX_FOLDER_JSON = ("restore the file: write the folder again (`python -m finetune convert` or `merge` for a run) or "
                   "download the model again.")


# --------------------------------------------------------------------------------------------- folders


def is_run_dir(folder: Path) -> bool:
    return (folder / RUN_MANIFEST).is_file()


def weight_files(folder: Path) -> list[Path]:
    return [p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern) if p.name not in NOT_WEIGHTS]


def has_weights(folder: Path) -> bool:
    return bool(weight_files(folder))


def is_model_dir(folder: Path) -> bool:
    return (folder / "config.json").is_file() and has_weights(folder)


def is_adapter_dir(folder: Path) -> bool:
    return (folder / ADAPTER_CONFIG).is_file()


# --------------------------------------------------------------------------------------------- dtype and bits


def config_dtype(config: dict) -> str | None:
    """The weights' dtype recorded in a config.json: transformers >= 4.56 writes "dtype", older ones "torch_dtype"."""
    return config.get("dtype") or config.get("torch_dtype")


def named_dtype(name: str, error: ErrorType = AppError, fix: str = "use one of: auto, bf16, fp16, fp32.") -> Any:
    """The torch dtype of 'bf16', 'fp16', 'fp32' (or their long names); another name is `error`."""
    import torch

    if name.lower() not in DTYPES:
        raise error(f"Unknown dtype '{name}'.", fix)
    return getattr(torch, DTYPES[name.lower()])


def default_dtype(device: str) -> Any:
    """fp32 on CPU; on CUDA bf16 where the GPU has it, else fp16."""
    import torch

    if not device.startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def valid_bits(bits: int, error: ErrorType = AppError) -> int:
    """4 or 8 (bitsandbytes nf4 / int8); any other number is `error`. Whether the device can run it is the caller's."""
    if bits not in (4, 8):
        raise error(f"--bits must be 4 or 8, not {bits}.", "use --bits 4 (nf4) or --bits 8, or leave it out.")
    return bits


# --------------------------------------------------------------------------------------------- readers


def read_object(path: Path, error: ErrorType = AppError, what: str = "file", fix: str = "") -> dict[str, Any]:
    """A JSON object file's content, {} when there is none; a broken one is `error` naming it."""
    if not path.is_file():
        return {}
    return read_json_object(path, error, what, fix)


def read_meta(folder: Path, error: ErrorType = AppError, what: str = "file",
              fix: str = FIX_FOLDER_JSON) -> dict[str, Any]:
    """FOLDER/finetune_meta.json (an adapter's or a merged model's), {} when there is none."""
    return read_object(folder / META_FILE, error, what, fix)


def read_run_manifest(run_dir: Path, error: ErrorType = AppError, fix: str = "",
                      what: str = "run manifest") -> dict[str, Any]:
    """RUN/run.json, {} when there is none."""
    return read_object(run_dir / RUN_MANIFEST, error, what, fix)


def run_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    """The config spec a run recorded, {} when it has none."""
    spec = manifest.get("spec")
    return spec if isinstance(spec, dict) else {}


def has_recorded_bits(spec: dict[str, Any]) -> bool:
    return SPEC_BITS in spec


def recorded_bits(spec: dict[str, Any], path: str | os.PathLike, error: ErrorType = AppError) -> int | None:
    """The bits the base model was trained in (4, 8; None: not quantized), from a run's spec read from `path`."""
    bits = spec.get(SPEC_BITS)
    if bits is not None and (isinstance(bits, bool) or bits not in (4, 8)):
        raise error(f"{path}: spec.{SPEC_BITS} is {bits!r}, not 4, 8 or null.",
                    "set it to the bits the base model was trained in (4, 8, or null: not quantized), or restore the "
                    "file.")
    return bits
