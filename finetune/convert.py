"""`finetune convert`: newest XTuner checkpoint -> PEFT adapter (safetensors)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from app import files
from app.console import say
from app.formats import ADAPTER_CONFIG, ADAPTER_WEIGHTS, META_FILE, is_run_dir

from .errors import InputError, StageFailed
from .fsutil import atomic_dir
from .modelload import needs_remote_code
from .runner import run_tool
from .tokenizer import save_training_tokenizer
from .train import checkpoints, newest_checkpoint


def config_info(config: str | Path) -> dict:
    """Read the settings merge/chat need from a config's PART 1 without executing it."""
    text = files.read_text(config, InputError, "XTuner config")
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise InputError(f"{config} is not valid Python: {exc.msg} at line {exc.lineno}, column {exc.offset}.",
                         "pass the config the run was trained with (--config CONFIG.py).") from exc
    info = {"model_path": "", "prompt_template": "", "system": ""}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name, value = node.targets[0].id, node.value
        if name == "pretrained_model_name_or_path" and isinstance(value, ast.Constant):
            info["model_path"] = value.value
        elif name == "prompt_template" and isinstance(value, ast.Attribute):
            info["prompt_template"] = value.attr
        elif name == "prompt_template" and isinstance(value, ast.Constant) and ".PROMPT_TEMPLATE." in str(value.value):
            # mmengine's dump of the config into the work dir: 'xtuner.utils.PROMPT_TEMPLATE.qwen_chat'
            info["prompt_template"] = str(value.value).rsplit(".", 1)[1]
        elif name == "SYSTEM":
            if isinstance(value, ast.Constant):
                info["system"] = value.value
            elif isinstance(value, ast.Attribute):  # SYSTEM_TEMPLATE.alpaca in XTuner's own configs
                from xtuner.utils import SYSTEM_TEMPLATE

                info["system"] = SYSTEM_TEMPLATE.get(value.attr, "")
    return info


def locate(source: str | Path, config: str | Path | None = None) -> tuple[Path, Path]:
    """(work_dir, config) from a run directory or an XTuner work directory."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source} does not exist.", "pass a run directory or the --work-dir you trained into.")
    work_dir = source / "work_dir" if is_run_dir(source) else source
    if config is None:
        candidates = [source / "config.py"] if is_run_dir(source) else []
        candidates += sorted(work_dir.glob("*.py"))  # mmengine copies the config into the work dir
        config = next((c for c in candidates if c.is_file()), None)
        if config is None:
            raise InputError(f"No XTuner config found in {source}.", "pass it with --config CONFIG.py.")
    return work_dir, Path(config)


def convert(source: str | Path, *, config: str | Path | None = None, checkpoint: str | Path | None = None,
            out: str | Path | None = None, fp32: bool = False, progress=print) -> Path:
    work_dir, config = locate(source, config)
    if checkpoint is None:
        checkpoint = newest_checkpoint(work_dir)
        if checkpoint is None:
            found = ", ".join(p.name for p in work_dir.iterdir()) if work_dir.is_dir() else "nothing"
            raise InputError(f"No iter_*.pth checkpoint in {work_dir} (found: {found or 'nothing'}).",
                             "did `python -m finetune train` finish? rerun it with --resume.")
    checkpoint = Path(checkpoint)
    if out is None:
        out = (Path(source) if is_run_dir(Path(source)) else work_dir) / "adapter"
    out = Path(out)
    info = config_info(config)
    progress(f"Converting {checkpoint.name} to a PEFT adapter in {out} ...")
    with atomic_dir(out) as tmp:
        args = [str(config), str(checkpoint), str(tmp), "--safe-serialization"]
        if fp32:
            args.append("--fp32")
        run_tool("pth_to_hf", args, log_path=work_dir / "convert.log",
                 fix="check that the config is the one the checkpoint was trained with (--config).")
        for required in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            if not (tmp / required).is_file():
                raise StageFailed(f"pth_to_hf finished but wrote no {required}.",
                                  f"see {work_dir / 'convert.log'}; is this a LoRA run (full fine-tunes have no "
                                  "adapter: use the converted folder as the merged model)?")
        _sort_target_modules(tmp / ADAPTER_CONFIG)
        _add_training_tokenizer(info, tmp, progress)
        meta = {**info, "checkpoint": str(checkpoint), "config": str(config)}
        (tmp / META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    progress(f"Adapter ready: {out}")
    return out


def _sort_target_modules(adapter_config: Path) -> None:
    """PEFT writes target_modules in set order, which changes from one process to the next: sorted, the same
    checkpoint always converts to the same bytes, so a publish of a re-converted adapter uploads nothing new."""
    config = json.loads(adapter_config.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        adapter_config.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")  # PEFT's layout


def _add_training_tokenizer(info: dict, out: Path, progress) -> None:
    """The base tokenizer with the training chat template, so base + adapter prompts exactly as trained."""
    base = Path(str(info.get("model_path") or ""))
    if not info.get("prompt_template"):
        progress("note: the config names no XTuner prompt template (PROMPT_TEMPLATE.NAME); the adapter gets no "
                 "tokenizer (chat apps will use the base model's own template).")
        return
    if not (base / "tokenizer_config.json").is_file():
        progress(f"note: base model folder '{base}' not found here; the adapter gets no tokenizer (chat apps will "
                 "use the base model's own template).")
        return
    save_training_tokenizer(base, info["prompt_template"], info.get("system", ""), out,
                            trust=needs_remote_code(base))


def register(subparsers, formatter_class) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="newest checkpoint -> PEFT adapter (safetensors)",
        description="Convert the newest XTuner checkpoint (iter_N.pth file, or DeepSpeed directory) of a run into "
        "a PEFT adapter folder with adapter_model.safetensors.",
        epilog="examples:\n"
        "  python -m finetune convert runs/xiaowei                 # -> runs/xiaowei/adapter\n"
        "  python -m finetune convert work_dirs/cfg --out my_adapter\n"
        "  python -m finetune convert wd --config cfg.py --checkpoint wd/iter_500.pth",
        formatter_class=formatter_class,
    )
    parser.add_argument("source", help="run directory or XTuner work directory")
    parser.add_argument("--config", default=None, help="config the run used (default: found in the work dir)")
    parser.add_argument("--checkpoint", default=None, help="a specific iter_N.pth (default: the newest)")
    parser.add_argument("--out", default=None, help="adapter folder (default: RUN/adapter)")
    parser.add_argument("--fp32", action="store_true", help="keep fp32 adapter weights (default fp16)")
    parser.set_defaults(func=handle)


def handle(args) -> int:
    out = convert(args.source, config=args.config, checkpoint=args.checkpoint, out=args.out, fp32=args.fp32,
                  progress=say)
    print(out)
    return 0


__all__ = ["convert", "config_info", "checkpoints"]
