"""Find a model folder from what the user typed, and load it (fp32 on CPU; bf16/fp16 or 4/8-bit on CUDA).

`resolve_model(spec)` accepts: nothing (the embedded default model), a preset name (looked up in the cache
folder that `python -m finetune download` fills), a hub id that was downloaded there, a local Hugging Face
model folder, or a run directory (its `merged/` model).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.console import say
from app.files import expand_path
from app.formats import (
    ADAPTER_CONFIG,
    FIX_FOLDER_JSON,
    RUN_MANIFEST,
    default_dtype,
    is_model_dir,
    is_run_dir,
    named_dtype,
    read_meta,
    read_object,
    read_run_manifest,
    run_spec,
    valid_bits,
)

from .embedded import cache_dir, ensure_embedded_model
from .errors import EnvironmentProblem, InputError, ModelNotFound
from .presets import DEFAULT_PRESET, PRESETS, Preset, find_preset_for_hub_id

BITS_ON_CPU = "4-bit needs an NVIDIA GPU with CUDA; on CPU run without --bits (fp32)."
CODE_CONFIGS = ("config.json", "tokenizer_config.json")  # their `auto_map` names the model's own code


# --------------------------------------------------------------------------------------------- resolve


def hub_dirname(hub_id: str) -> str:
    """Folder name under `cache_dir()/models` for a hub id that is not a preset: `org--name`."""
    return hub_id.strip().strip("/").replace("/", "--")


def downloaded_dir(preset_or_id: str) -> Path:
    """Where `python -m finetune download` puts a preset or hub id."""
    key = preset_or_id.strip()
    if key.lower() in PRESETS:
        return cache_dir() / "models" / key.lower()
    preset = find_preset_for_hub_id(key)
    return cache_dir() / "models" / (preset.name if preset else hub_dirname(key))


def _check_model_dir(folder: Path) -> Path:
    if is_model_dir(folder):
        return folder
    if (folder / "config.json").is_file():
        raise ModelNotFound(
            f"{folder} has a config.json but has no weights (*.safetensors, *.bin or an index json).",
            "copy the weight files into it, or download the model again: "
            "`python -m finetune download --preset NAME --out DIR`.",
        )
    if (folder / ADAPTER_CONFIG).is_file():
        raise ModelNotFound(
            f"{folder} is a LoRA adapter, not a full model.",
            "merge it into its base model first (`python -m finetune merge ...`), or chat with the run directory "
            "after its merge step.",
        )
    raise ModelNotFound(
        f"{folder} is not a Hugging Face model folder (no config.json).",
        "pass a folder that holds config.json and *.safetensors, a run directory, or a preset name.",
    )


def _from_run_dir(run: Path) -> Path:
    merged = run / "merged"
    if not merged.is_dir():
        raise ModelNotFound(
            f"Run directory {run} has no merged/ model yet.",
            f"finish the run first: `python -m finetune merge` for {run} (or `python -m finetune run` again; "
            "finished stages are kept).",
        )
    return _check_model_dir(merged)


def _from_local_path(path: Path) -> Path:
    if path.is_file():
        if path.name in ("config.json", RUN_MANIFEST):
            return _from_local_path(path.parent)
        raise ModelNotFound(f"{path} is a file, not a model folder.", "pass the folder that contains config.json.")
    is_run = is_run_dir(path) or (path / "merged" / "config.json").is_file()
    if is_run and not (path / "config.json").is_file():
        return _from_run_dir(path)
    return _check_model_dir(path)


def model_folder(path: Path) -> Path:
    """A local model folder or run directory -> the model folder (a run's merged/), with clear errors."""
    return _from_local_path(expand_path(path))


def _from_cache(name: str, preset: Preset | None) -> Path | None:
    folder = downloaded_dir(preset.name if preset else name)
    return folder if is_model_dir(folder) else None


def resolve_model(spec: str | None, *, progress: Callable[[str], None] = print) -> Path:
    """Turn a model spec (None, preset name, hub id, model folder or run directory) into a model folder."""
    if spec is None or spec.strip().lower() == DEFAULT_PRESET:
        return ensure_embedded_model(progress=progress)
    spec = spec.strip()
    path = expand_path(spec)
    if path.exists():
        return _from_local_path(path.resolve())
    preset = PRESETS.get(spec.lower()) or find_preset_for_hub_id(spec)
    if preset is not None and preset.embedded:
        return ensure_embedded_model(progress=progress)
    if preset is not None or "/" in spec:
        found = _from_cache(spec, preset)
        if found:
            return found
    if preset is not None:
        raise ModelNotFound(
            f"Model '{preset.name}' is not downloaded (looked in {downloaded_dir(preset.name)}).",
            f"run `python -m finetune download --preset {preset.name}` (add `--source modelscope` in mainland "
            "China), or pass a local model folder.",
        )
    looked = [f"a local folder '{path}' (does not exist)", "a preset name (no such preset)"]
    fix = f"pass a model folder or run directory, or one of the presets: {', '.join(PRESETS)}."
    if "/" in spec:
        looked.append(f"a downloaded hub model in {downloaded_dir(spec)}")
        fix = f"download it first: `python -m finetune download --preset {spec}`, or {fix}"
    raise ModelNotFound(f"Cannot find model '{spec}'. Looked for {'; '.join(looked)}.", fix)


# ------------------------------------------------------------------------------------------------ load


def _preset_named(value: object) -> Preset | None:
    """A preset from a preset name, a hub id, or a path whose last part is a preset name."""
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    return PRESETS.get(value.lower()) or find_preset_for_hub_id(value) or PRESETS.get(Path(value).name.lower())


def _preset_for_folder(path: Path) -> Preset | None:
    """The preset a model folder came from: its name, its run's run.json, or the merge's finetune_meta.json."""
    candidates: list[object] = [path.name]
    meta = read_meta(path, InputError)
    candidates += [meta.get("base_model"), meta.get("model_path")]
    if path.name == "merged":
        run = read_run_manifest(path.parent, InputError, fix=FIX_FOLDER_JSON, what="file")
        spec = run_spec(run)
        candidates += [source.get(key) for source in (run, spec) for key in ("preset", "model", "base_model")]
    for candidate in candidates:
        preset = _preset_named(candidate)
        if preset:
            return preset
    return None


def needs_remote_code(path: Path) -> bool:
    """True when the model ships its own code (config/tokenizer `auto_map`) or its preset says so."""
    configs = (read_object(path / name, InputError, fix=FIX_FOLDER_JSON) for name in CODE_CONFIGS)
    if any("auto_map" in config for config in configs):
        return True
    preset = _preset_for_folder(path)
    return bool(preset and preset.trust_remote_code)


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def default_device() -> str:
    return "cuda" if cuda_available() else "cpu"


def pick_dtype(device: str, dtype: Any = None) -> Any:
    """fp32 on CPU; bf16 on CUDA when supported, else fp16. `dtype` may be a torch.dtype or 'bf16'/'fp16'/'fp32'."""
    import torch

    if dtype is not None and dtype != "auto":
        if isinstance(dtype, torch.dtype):
            return dtype
        return named_dtype(str(dtype), InputError, "use one of: bf16, fp16, fp32, auto.")
    return default_dtype(device)


def check_bits(bits: int | None, device: str, *, strict: bool = True,
               warn: Callable[[str], None] | None = None) -> int | None:
    """Validate `bits` for `device`; on a non-CUDA device raise (strict) or warn and return None (fp32)."""
    if bits is None:
        return None
    valid_bits(bits, InputError)
    if device.startswith("cuda") and cuda_available():
        return bits
    message = BITS_ON_CPU if bits == 4 else BITS_ON_CPU.replace("4-bit", "8-bit")
    if strict:
        raise EnvironmentProblem(message, "run without --bits on CPU, or use a machine with an NVIDIA GPU.")
    (warn or say)(f"warning: {message} Loading in full precision instead.")
    return None


def quantization_config(bits: int) -> Any:
    try:
        import torch
        from transformers import BitsAndBytesConfig
    except ImportError as exc:  # pragma: no cover - transformers is a hard dependency
        raise EnvironmentProblem(f"Cannot import BitsAndBytesConfig: {exc}.", "pip install --no-deps -r "
                                 "requirements.txt") from exc
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def load_tokenizer(path: str | Path, *, trust_remote_code: bool | None = None) -> Any:
    from transformers import AutoTokenizer

    path = Path(path)
    remote = needs_remote_code(path) if trust_remote_code is None else trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=remote)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str | Path, *, bits: int | None = None, device: str | None = None, dtype: Any = None,
               strict: bool = True, trust_remote_code: bool | None = None,
               warn: Callable[[str], None] | None = None) -> tuple[Any, Any]:
    """Load (model, tokenizer) from a model folder, in eval mode.

    CPU: fp32. CUDA: bf16 if supported else fp16; `bits` 4 (nf4, double quant) or 8 via bitsandbytes.
    Without CUDA, `bits` raises EnvironmentProblem (strict) or warns and loads fp32 (strict=False).
    """
    from transformers import AutoModelForCausalLM

    path = Path(path)
    device = device or default_device()
    bits = check_bits(bits, device, strict=strict, warn=warn)
    remote = needs_remote_code(path) if trust_remote_code is None else trust_remote_code
    kwargs: dict[str, Any] = {"dtype": pick_dtype(device, dtype), "trust_remote_code": remote}
    if bits:
        _import_bitsandbytes()
        kwargs["quantization_config"] = quantization_config(bits)
    if device.startswith("cuda"):
        kwargs["device_map"] = "auto" if device == "cuda" else {"": device}
    try:
        tokenizer = load_tokenizer(path, trust_remote_code=remote)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise ModelNotFound(f"Cannot load the model in {path}: {_first_line(exc)}",
                            "check that the folder is complete (config.json, tokenizer files, weights).") from exc
    if not device.startswith("cuda"):
        model.to(device)
    model.eval()
    return model, tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _import_bitsandbytes() -> None:
    import contextlib
    import io

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            import bitsandbytes  # noqa: F401
    except Exception as exc:  # any import failure is the same problem to the user
        raise EnvironmentProblem(
            f"bitsandbytes does not import: {_first_line(exc)}",
            "pip install --no-deps bitsandbytes==0.45.1 (0.45.0 breaks with triton >= 3.2); "
            "`python -m finetune doctor` shows details.",
        ) from exc
