"""Find and load the model the app serves: a merged model, a run directory, base + adapter, a hub id, or the
embedded default (SmolLM2-135M-Instruct, converted once by `make setup` into the finetune cache folder).

This module imports nothing from `finetune/` or `publish/`: it is what runs inside a hosted demo.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AdapterMismatch, ModelSourceError, SettingsError
from .files import expand_path
from .formats import (
    ADAPTER_CONFIG,
    FIX_FOLDER_JSON,
    default_dtype,
    is_adapter_dir,
    is_model_dir,
    is_run_dir,
    named_dtype,
    read_meta,
    read_object,
    valid_bits,
)

EMBEDDED_DIRNAME = "smollm2-135m-instruct"
Notice = Callable[[str], None]
FIX_LOAD = ("check the folder is complete (config.json, tokenizer, weights), or the hub id and your network "
            "(HF_ENDPOINT for a mirror; HF_TOKEN for gated or private models).")


def cache_dir() -> Path:
    return expand_path(os.environ.get("FINETUNE_CACHE_DIR", Path.home() / ".cache" / "finetune"))


def embedded_model_dir() -> Path:
    return cache_dir() / "models" / EMBEDDED_DIRNAME


# --------------------------------------------------------------------------------------------- resolve


@dataclass
class ModelRequest:
    """What the user asked for (flags or environment variables)."""

    model: str | None = None  # model folder, run directory, adapter folder, preset name, hub id; None = embedded
    adapter: str | None = None  # PEFT adapter folder or hub id
    base: str | None = None  # base model for the adapter (default: the one the adapter names)
    bits: int | None = None  # 4 or 8 (bitsandbytes, CUDA only)
    dtype: str = "auto"
    device: str | None = None
    source: str = "hf"  # where hub ids are downloaded from: hf, modelscope or openxlab
    compare: bool = True  # also make the base model available for the compare tab
    use_adapter: bool = False  # with a run directory: base + adapter instead of the merged model


@dataclass
class Resolved:
    """Where each part comes from (local folders, or hub ids to download)."""

    model: str  # the full model to load: merged/instruct model, or the base under an adapter
    adapter: str | None = None
    tokenizer: str = ""
    compare_base: str | None = None  # a separate base model for compare (merged models only)
    meta: dict[str, Any] = field(default_factory=dict)
    label: str = ""


def read_folder_json(path: Path) -> dict[str, Any]:
    """A JSON object file of a model or adapter folder, {} when there is none; a broken one is a ModelSourceError."""
    return read_object(path, ModelSourceError, fix=FIX_FOLDER_JSON)


def has_chat_template(folder: Path) -> bool:
    config = read_folder_json(folder / "tokenizer_config.json")
    return bool(config.get("chat_template")) or (folder / "chat_template.jinja").is_file()


def _existing_base(candidates: list[Any]) -> str | None:
    """The first candidate that is a local model folder, else the first that looks like a hub id."""
    names = [str(c).strip() for c in candidates if isinstance(c, str) and c.strip()]
    for name in names:
        if is_model_dir(expand_path(name)):
            return str(expand_path(name))
    for name in names:
        found = _cached(name)
        if found:
            return str(found)
    for name in names:
        if _looks_like_hub_id(name):
            return name
    return None


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()


def _cached(name: str) -> Path | None:
    """A model that `python -m finetune download` put in the cache folder (by preset name or `org--name`)."""
    models = cache_dir() / "models"
    for key in (name.strip().lower(), name.strip().strip("/").replace("/", "--")):
        if key and is_model_dir(models / key):
            return models / key
    return None


def resolve(request: ModelRequest) -> Resolved:
    """Turn the request into local folders / hub ids, or raise ModelSourceError saying what was looked for."""
    if request.adapter:
        return _with_adapter(request.adapter, request.base or request.model)
    spec = request.model or request.base
    if spec is None:
        return _embedded()
    path = expand_path(spec)
    if path.exists():
        return _from_path(path.resolve(), request)
    cached = _cached(spec)
    if cached is not None:
        return Resolved(str(cached), tokenizer=str(cached), label=spec)
    if _looks_like_hub_id(spec):
        return Resolved(spec, tokenizer=spec, label=spec)
    raise ModelSourceError(
        f"Cannot find model '{spec}'. Looked for: a local folder '{path}' (does not exist); a downloaded model in "
        f"{cache_dir() / 'models'} named '{spec.lower()}'; a hub id (it has no 'owner/name' form).",
        "pass a model folder, a run directory (runs/NAME), an adapter folder, or a hub id like "
        "HuggingFaceTB/SmolLM2-135M-Instruct.",
    )


def _embedded() -> Resolved:
    folder = embedded_model_dir()
    if not is_model_dir(folder):
        raise ModelSourceError(
            f"The embedded default model is not set up (looked in {folder}).",
            "run `make setup` (or `python -m finetune doctor`), or pass a model: --model FOLDER_OR_HUB_ID.",
        )
    return Resolved(str(folder), tokenizer=str(folder), label="SmolLM2-135M-Instruct (embedded)")


def _from_path(path: Path, request: ModelRequest) -> Resolved:
    if path.is_file():
        raise ModelSourceError(f"{path} is a file, not a model folder.",
                               "pass the folder that holds config.json (or adapter_config.json).")
    if is_adapter_dir(path):
        return _with_adapter(str(path), request.base)
    if is_run_dir(path) or (path / "merged").is_dir() or (path / "adapter").is_dir():
        return _from_run(path, request)
    if is_model_dir(path):
        meta = read_meta(path, ModelSourceError)
        base = _existing_base([meta.get("base_model")]) if request.compare else None
        return Resolved(str(path), tokenizer=str(path), compare_base=base, meta=meta, label=path.name)
    what = "has a config.json but no weights" if (path / "config.json").is_file() else "has no config.json"
    raise ModelSourceError(f"{path} is not a model folder: it {what}.",
                           "pass a merged model folder, a run directory, an adapter folder (adapter_config.json) "
                           "or a hub id.")


def _from_run(run: Path, request: ModelRequest) -> Resolved:
    merged, adapter = run / "merged", run / "adapter"
    if is_model_dir(merged) and not request.use_adapter:
        meta = read_meta(merged, ModelSourceError)
        base = _existing_base([meta.get("base_model")]) if request.compare else None
        return Resolved(str(merged), tokenizer=str(merged), compare_base=base, meta=meta, label=run.name)
    if is_adapter_dir(adapter):
        resolved = _with_adapter(str(adapter), request.base)
        resolved.label = run.name
        return resolved
    raise ModelSourceError(
        f"Run directory {run} has neither a merged/ model nor an adapter/ yet.",
        f"finish the run first: `python -m finetune run` again (finished stages are kept), or "
        f"`python -m finetune convert {run}`.",
    )


def _with_adapter(adapter: str, base: str | None) -> Resolved:
    folder = expand_path(adapter)
    local = folder.exists()
    if local and not is_adapter_dir(folder):
        raise ModelSourceError(f"{folder} is not a PEFT adapter folder (no adapter_config.json).",
                               "pass the adapter folder a `finetune convert` wrote (RUN/adapter).")
    if not local and not _looks_like_hub_id(adapter):
        raise ModelSourceError(f"Adapter '{adapter}' is neither a local folder nor a hub id.",
                               "pass RUN/adapter or an adapter repo id like owner/name.")
    meta = read_meta(folder, ModelSourceError) if local else {}
    config = read_folder_json(folder / ADAPTER_CONFIG) if local else {}
    named = [meta.get("model_path"), config.get("base_model_name_or_path")]  # the base it was trained on
    if base:
        chosen = _existing_base([base])
        if chosen is None:
            raise ModelSourceError(f"Cannot find base model '{base}' (not a local model folder, not in "
                                   f"{cache_dir() / 'models'}, not a hub id).",
                                   "pass --base with a model folder or hub id.")
    else:
        chosen = _existing_base(named) if local else None
        if chosen is None and local:
            raise ModelSourceError(f"The adapter's base model '{named[0] or named[1]}' is not on this machine.",
                                   "pass --base with the base model folder or its hub id.")
        if chosen is None:  # a hub adapter: its config names the base
            chosen = _remote_adapter_base(adapter)
    adapter_ref = str(folder.resolve()) if local else adapter
    tokenizer = adapter_ref if (not local or has_chat_template(folder)) else chosen
    label = (f"{folder.parent.name}/{folder.name}" if folder.name == "adapter" else folder.name) if local else adapter
    return Resolved(chosen, adapter=adapter_ref, tokenizer=tokenizer, meta=meta, label=label)


def _remote_adapter_base(adapter: str) -> str:
    try:
        from peft import PeftConfig

        base = PeftConfig.from_pretrained(adapter).base_model_name_or_path
    except Exception as exc:  # network, 404, auth: all mean "cannot read the adapter's config"
        raise ModelSourceError(f"Cannot read adapter '{adapter}' from the hub: {_first_line(exc)}",
                               "check the repo id and your network (HF_ENDPOINT for a mirror), or pass --base.",
                               ) from exc
    if not base:
        raise ModelSourceError(f"Adapter '{adapter}' does not name its base model.", "pass --base BASE.")
    return base


# ------------------------------------------------------------------------------------------------ load


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    base_model: Any = None  # separate base for compare (merged models)
    info: dict[str, str] = field(default_factory=dict)
    default_system: str = ""


def pick_device(device: str | None) -> str:
    import torch

    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SettingsError(f"--device {device} asked for, but this machine has no CUDA GPU.",
                                "leave --device out (CPU is used).")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str, dtype: str = "auto") -> Any:
    if dtype and dtype != "auto":
        return named_dtype(dtype, SettingsError)
    return default_dtype(device)


def check_bits(bits: int | None, device: str, notice: Notice) -> int | None:
    """4/8-bit needs bitsandbytes on CUDA; elsewhere say so and load in full precision (never crash)."""
    if bits in (None, 0, 16, 32):
        return None
    valid_bits(bits, SettingsError)
    if device.startswith("cuda"):
        return bits
    notice(f"{bits}-bit quantization needs an NVIDIA GPU with CUDA (bitsandbytes); this machine has none, so the "
           "model loads in full precision instead.")
    return None


def _quantization(bits: int, dtype: Any) -> Any:
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:
        raise SettingsError(f"bitsandbytes does not import: {_first_line(exc)}",
                            "pip install bitsandbytes (a CUDA build), or run without --bits.") from exc
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)


def _download(ref: str, source: str, notice: Notice) -> str:
    """A local folder for `ref`: itself if local; ModelScope and OpenXLab ids are downloaded here, HF ids by
    from_pretrained."""
    if expand_path(ref).exists() or source not in ("modelscope", "openxlab"):
        return ref
    if source == "openxlab":
        from .openxlab_download import download

        return download(ref, notice)
    notice(f"Downloading {ref} from ModelScope ...")
    try:
        from modelscope import snapshot_download

        return snapshot_download(ref)
    except Exception as exc:
        raise ModelSourceError(f"Cannot download '{ref}' from ModelScope: {_first_line(exc)}",
                               "check the model id and your network (MODELSCOPE_ENDPOINT for a mirror).") from exc


def _remote_code(ref: str) -> bool:
    folder = expand_path(ref)
    return any("auto_map" in read_folder_json(folder / name) for name in ("config.json", "tokenizer_config.json"))


def _load_causal_lm(ref: str, *, device: str, dtype: Any, bits: int | None, trust: bool) -> Any:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust, "low_cpu_mem_usage": True}
    if bits:
        kwargs["quantization_config"] = _quantization(bits, dtype)
    if device.startswith("cuda"):
        kwargs["device_map"] = {"": device if ":" in device else "cuda:0"}
    try:
        model = AutoModelForCausalLM.from_pretrained(ref, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"Cannot load model '{ref}': {_first_line(exc)}", FIX_LOAD) from exc
    if not device.startswith("cuda"):
        model.to(device)
    return model.eval()


def _load_tokenizer(ref: str, fallback: str, trust: bool, notice: Notice) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(ref, trust_remote_code=trust)
    except (OSError, ValueError):
        if ref == fallback:
            raise
        notice(f"{ref} has no tokenizer; using the base model's ({fallback}).")
        tokenizer = AutoTokenizer.from_pretrained(fallback, trust_remote_code=trust)
    if not getattr(tokenizer, "chat_template", None) and ref != fallback:
        base_tokenizer = AutoTokenizer.from_pretrained(fallback, trust_remote_code=trust)
        tokenizer.chat_template = base_tokenizer.chat_template
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _apply_adapter(model: Any, adapter: str, base: str) -> Any:
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter).eval()
    except (RuntimeError, ValueError, KeyError) as exc:
        named = read_folder_json(expand_path(adapter) / ADAPTER_CONFIG).get("base_model_name_or_path")
        trained_on = f" It was trained on '{named}'." if named else ""
        raise AdapterMismatch(
            f"The adapter {adapter} does not fit the base model {base}: {_first_line(exc)[:200]}.{trained_on}",
            "pass --base with the model the adapter was trained on.",
        ) from exc


def load(request: ModelRequest, notice: Notice = print) -> Loaded:
    """Resolve and load the request: (model, tokenizer), plus a base model for compare when it needs its own."""
    resolved = resolve(request)
    device = pick_device(request.device)
    dtype = pick_dtype(device, request.dtype)
    bits = check_bits(request.bits, device, notice)
    model_ref = _download(resolved.model, request.source, notice)
    adapter_ref = _download(resolved.adapter, request.source, notice) if resolved.adapter else None
    tokenizer_ref = _download(resolved.tokenizer or resolved.model, request.source, notice)
    trust = _remote_code(model_ref)
    notice(f"Loading {resolved.label or model_ref} on {device} ...")
    try:
        tokenizer = _load_tokenizer(tokenizer_ref, model_ref, trust, notice)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"Cannot load model '{tokenizer_ref}' (its tokenizer): {_first_line(exc)}",
                               FIX_LOAD) from exc
    model = _load_causal_lm(model_ref, device=device, dtype=dtype, bits=bits, trust=trust)
    if adapter_ref:
        model = _apply_adapter(model, adapter_ref, model_ref)
    base_model = None
    if resolved.compare_base and request.compare:
        notice(f"Loading the base model {resolved.compare_base} for the compare tab ...")
        base_model = _load_causal_lm(resolved.compare_base, device=device, dtype=dtype, bits=bits,
                                     trust=_remote_code(resolved.compare_base))
    system = resolved.meta.get("system") if isinstance(resolved.meta.get("system"), str) else ""
    info = {
        "Model": resolved.label or model_ref,
        "Base": model_ref if adapter_ref else (resolved.meta.get("base_model") or "-"),
        "Adapter": adapter_ref or "- (merged or plain model)",
        "Prompt template": _template_label(resolved, tokenizer_ref),
        "Default system prompt": system or "(the template's own)",
        "dtype": str(dtype).removeprefix("torch."),
        "Device": device,
        "Quantization": f"{bits}-bit bitsandbytes" + (" (nf4)" if bits == 4 else "") if bits else "none",
    }
    return Loaded(model, tokenizer, base_model, info, system)


def _template_label(resolved: Resolved, tokenizer_ref: str) -> str:
    trained = resolved.meta.get("prompt_template")
    if trained and (resolved.adapter is None or tokenizer_ref == resolved.adapter):
        return f"XTuner `{trained}` as trained (tokenizer chat template of {Path(tokenizer_ref).name})"
    if trained:
        return f"the base tokenizer's chat template (the adapter was trained with XTuner `{trained}`)"
    return f"tokenizer chat template of {Path(tokenizer_ref).name}"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
