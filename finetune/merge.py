"""`finetune merge`: adapter + base -> merged model (sharded safetensors) whose tokenizer carries the training
chat template, so plain transformers, vLLM and LMDeploy prompt it exactly as it was trained."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from app import files
from app.console import say
from app.formats import ADAPTER_CONFIG, META_FILE, config_dtype, has_weights, is_run_dir, read_meta, weight_files

from .errors import InputError, ModelNotFound
from .fsutil import atomic_dir
from .tokenizer import apply_training_template, save_tokenizer


def read_adapter_meta(adapter: Path) -> dict:
    if not (adapter / ADAPTER_CONFIG).is_file():
        raise InputError(f"{adapter} is not a PEFT adapter (no {ADAPTER_CONFIG}).",
                         "run `python -m finetune convert RUN` first, or pass the adapter folder.")
    fix = "restore the file, or convert the checkpoint again with `python -m finetune convert RUN`."
    meta = read_meta(adapter, InputError, "adapter metadata", fix)
    adapter_config = files.read_json_object(adapter / ADAPTER_CONFIG, InputError, "adapter config", fix=fix)
    meta.setdefault("model_path", adapter_config.get("base_model_name_or_path", ""))
    return meta


def choose_device(base: Path, requested: str = "auto") -> tuple[str, str]:
    """(device, reason). Merge on CPU when there is no GPU or its free memory cannot hold the model."""
    import torch

    if requested != "auto":
        return requested, "as requested"
    if not torch.cuda.is_available():
        return "cpu", "no CUDA GPU"
    need = sum(p.stat().st_size for p in weight_files(base))
    free, _ = torch.cuda.mem_get_info()
    if free < need * 1.3:
        return "cpu", f"GPU has {free / 2**30:.1f} GiB free, the model needs ~{need * 1.3 / 2**30:.1f} GiB"
    return "cuda", f"{free / 2**30:.1f} GiB GPU memory free"


def copy_remote_code(base: Path, out: Path) -> list[str]:
    """Custom-code models (InternLM2) need their *.py files next to the merged weights (InternLM/xtuner#199)."""
    copied = []
    for path in base.glob("*.py"):
        if not (out / path.name).exists():
            shutil.copy2(path, out / path.name)
            copied.append(path.name)
    return copied


def merge(adapter: str | Path, *, base: str | Path | None = None, out: str | Path | None = None,
          device: str = "auto", max_shard_size: str = "2GB", system: str | None = None,
          prompt_template: str | None = None, progress=print) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = Path(adapter)
    meta = read_adapter_meta(adapter)
    base = Path(base or meta.get("model_path", ""))
    if not base.is_dir() or not (base / "config.json").is_file() or not has_weights(base):
        raise ModelNotFound(f"Base model folder '{base}' is missing or has no weights.",
                            "pass --base with the local folder the adapter was trained on "
                            "(download it with `python -m finetune download --preset NAME`).")
    template_name = prompt_template or meta.get("prompt_template") or "qwen_chat"
    system = meta.get("system", "") if system is None else system
    out = Path(out) if out else adapter.parent / "merged"
    device, reason = choose_device(base, device)
    base_config = files.read_json_object(base / "config.json", ModelNotFound, "model config",
                                         fix="download the base model again (`python -m finetune download`).")
    trust = "auto_map" in base_config
    dtype = getattr(torch, str(config_dtype(base_config) or "float32"), torch.float32)
    if device == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # fp16 matmuls on CPU are slow and lossy; keep the merge exact
    started = time.time()
    progress(f"Merging {adapter} into {base} on {device} ({reason}), {str(dtype).removeprefix('torch.')} ...")
    with atomic_dir(out) as tmp:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, trust_remote_code=trust,
                                                     low_cpu_mem_usage=True, device_map={"": device})
        progress(f"  base loaded ({time.time() - started:.0f}s); applying the adapter")
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=trust)
        apply_training_template(tokenizer, model, template_name, system)
        progress(f"  merged ({time.time() - started:.0f}s); saving shards of at most {max_shard_size}")
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard_size)
        save_tokenizer(tokenizer, tmp)
        copy_remote_code(base, tmp)
        (tmp / META_FILE).write_text(json.dumps({
            "base_model": str(base), "adapter": str(adapter), "prompt_template": template_name, "system": system,
            "merged_dtype": str(dtype).removeprefix("torch."),
        }, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        if not (tmp / "config.json").is_file() or not has_weights(tmp):
            raise InputError("The merged model was not written completely.", "check free disk space and rerun.")
    progress(f"Merged model ready: {out} ({time.time() - started:.0f}s)")
    return out


def register(subparsers, formatter_class) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="adapter + base -> merged model with the training chat template",
        description="Merge a LoRA adapter into its base model and save sharded safetensors. Runs on CPU when "
        "there is no GPU or too little free GPU memory. The output tokenizer's chat template renders exactly the "
        "training prompt (template + default system prompt). Written atomically.",
        epilog="examples:\n"
        "  python -m finetune merge runs/xiaowei                         # RUN/adapter -> RUN/merged\n"
        "  python -m finetune merge my_adapter --base /models/internlm2_5-7b-chat --out merged \\\n"
        "      --max-shard-size 2GB --device cpu",
        formatter_class=formatter_class,
    )
    parser.add_argument("source", help="run directory or adapter folder")
    parser.add_argument("--base", default=None, help="base model folder (default: recorded in the adapter)")
    parser.add_argument("--out", default=None, help="merged model folder (default: RUN/merged)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--max-shard-size", dest="max_shard_size", default="2GB")
    parser.add_argument("--system", default=None, help="default system prompt (default: the training one)")
    parser.add_argument("--prompt-template", dest="prompt_template", default=None,
                        help="XTuner template (default: the training one)")
    parser.set_defaults(func=handle)


def handle(args) -> int:
    source = Path(args.source)
    adapter = source / "adapter" if is_run_dir(source) else source
    out = merge(adapter, base=args.base, out=args.out, device=args.device, max_shard_size=args.max_shard_size,
                system=args.system, prompt_template=args.prompt_template, progress=say)
    print(out)
    return 0
