"""`finetune export`: a run's merged model (or any merged model folder) -> GGUF files and an Ollama Modelfile.

llama.cpp's converter writes one f16 GGUF (the merged tokenizer's chat template goes into its metadata, where
llama.cpp and LM Studio read it); llama.cpp's quantizer makes every requested quantization from that one file.
Each file is written under a temporary name and renamed when complete; the f16 file is removed afterwards unless
f16 was asked for. The Modelfile's TEMPLATE renders the training template's text (finetune/modelfile.py).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from app import files
from app.console import say
from app.formats import config_dtype, read_meta, weight_files

from . import llamacpp, modelfile
from .chat_template import load_xtuner_template, xtuner_adds_bos
from .errors import EnvironmentProblem, InputError
from .fsutil import atomic_path, human_bytes, scratch_path, write_text
from .modelload import ModelNotFound, load_tokenizer, model_folder

DEFAULT_QUANT = "q4_k_m"
# the families our presets train, named first when an architecture is not supported
TRAINED_FAMILIES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma3ForCausalLM",
                    "Glm4ForCausalLM", "InternLM2ForCausalLM", "InternLM3ForCausalLM")
QUANT_SHARE = {"q4_k_m": 0.32, "q5_k_m": 0.36, "q8_0": 0.54, "f16": 1.0}  # of the f16 size, for the disk check


@dataclass
class ExportResult:
    out: Path
    files: dict[str, Path]  # quant -> GGUF file
    modelfile: Path | None
    seconds: dict[str, float] = field(default_factory=dict)


def export_name(source: Path, model_dir: Path) -> str:
    """`runs/xiaowei` and `runs/xiaowei/merged` -> `xiaowei`; another folder -> its own name."""
    folder = model_dir.parent if model_dir.name == "merged" else model_dir
    return folder.name or "model"


def check_quants(quants: list[str]) -> list[str]:
    wanted = list(dict.fromkeys(q.lower() for q in quants)) or [DEFAULT_QUANT]
    unknown = [q for q in wanted if q not in llamacpp.QUANTS]
    if unknown:
        raise InputError(f"Unknown quantization {', '.join(unknown)}.",
                         f"use one or more of: {', '.join(llamacpp.QUANTS)}.")
    return wanted


def check_architecture(model_dir: Path, converter: Path) -> str:
    config = files.read_json_object(model_dir / "config.json", ModelNotFound, "model config",
                                    fix="export a complete merged model folder.")
    architectures = config.get("architectures") or []
    supported = llamacpp.supported_architectures(converter)
    if not architectures or not isinstance(architectures, list) or architectures[0] not in supported:
        named = ", ".join(a for a in TRAINED_FAMILIES if a in supported)
        raise InputError(f"llama.cpp's converter does not support {architectures or 'a model without architectures'} "
                         f"({model_dir / 'config.json'}).",
                         f"export a model of a supported family: {named} (and {len(supported)} architectures in "
                         "all, listed in llama.cpp's convert_hf_to_gguf.py).")
    return architectures[0]


def check_disk(model_dir: Path, out: Path, quants: list[str]) -> None:
    """Refuse before writing when the files cannot fit: the f16 file plus each quantization."""
    weights = sum(p.stat().st_size for p in weight_files(model_dir))
    config = files.read_json_object(model_dir / "config.json", ModelNotFound, "model config")
    f16 = weights // 2 if str(config_dtype(config)) == "float32" else weights
    needed = f16 + sum(int(f16 * QUANT_SHARE[q]) for q in quants if q != "f16")
    probe = out if out.exists() else out.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise EnvironmentProblem(f"Exporting needs about {human_bytes(needed)} on {probe}, and {human_bytes(free)} "
                                 "is free.", "free disk space, or pass --out on a disk with more room.")


def training_template(model_dir: Path, prompt_template: str | None, system: str | None) -> tuple[str | None, str]:
    """The XTuner template and default system prompt the model was trained with (recorded by merge)."""
    meta = read_meta(model_dir, InputError, "merge metadata", fix="merge the model again (`python -m finetune merge`).")
    name = prompt_template or meta.get("prompt_template")
    if name:
        load_xtuner_template(name)  # an unknown name is a clear error now, before any conversion
    return name, meta.get("system", "") if system is None else system


def export(source: str | Path, quants: list[str] | None = None, *, out: str | Path | None = None,
           prompt_template: str | None = None, system: str | None = None, progress=say) -> ExportResult:
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source} does not exist.", "pass a run directory or a merged model folder.")
    wanted = check_quants(quants or [])
    model_dir = model_folder(source)
    converter = llamacpp.require_tools()
    architecture = check_architecture(model_dir, converter)
    template_name, system = training_template(model_dir, prompt_template, system)
    name = export_name(source, model_dir)
    out = Path(out) if out else model_dir.parent / "gguf" if model_dir.name == "merged" else model_dir / "gguf"
    check_disk(model_dir, out, wanted)

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "export.log"
    targets = {q: out / f"{name}-{llamacpp.QUANTS[q]}.gguf" for q in wanted}
    f16_target = out / f"{name}-F16.gguf"
    seconds: dict[str, float] = {}
    progress(f"Exporting {model_dir} ({architecture}) to GGUF: {', '.join(llamacpp.QUANTS[q] for q in wanted)}")
    try:
        keep_f16 = "f16" in wanted
        with (atomic_path if keep_f16 else scratch_path)(f16_target, progress) as f16:
            started = time.time()
            progress("  llama.cpp's converter: safetensors -> f16 GGUF ...")
            llamacpp.convert_to_f16(model_dir, f16, name=name, log=log, progress=progress)
            seconds["f16"] = time.time() - started
            f16_info = check_gguf(f16, model_dir, architecture)
            for quant in wanted:
                if quant == "f16":
                    continue
                started = time.time()
                progress(f"  llama.cpp's quantizer: {llamacpp.QUANTS[quant]} ...")
                with atomic_path(targets[quant], progress) as tmp:
                    llamacpp.quantize(f16, tmp, quant, log=log, progress=progress)
                    check_gguf(tmp, model_dir, architecture, tensors=f16_info.tensors)
                seconds[quant] = time.time() - started
                progress(f"  {targets[quant].name}: {human_bytes(targets[quant].stat().st_size)} "
                         f"({seconds[quant]:.0f}s)")
    except EnvironmentProblem:
        log.unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    if keep_f16:
        progress(f"  {f16_target.name}: {human_bytes(f16_target.stat().st_size)} ({seconds['f16']:.0f}s)")
    modelfile_path = write_modelfile(out, model_dir, targets, wanted, f16_info, template_name, system, name,
                                     progress)
    progress(f"GGUF export ready in {out}")
    return ExportResult(out, targets, modelfile_path, seconds)


def chat_template(model_dir: Path) -> str | None:
    """The chat template transformers uses for this folder: chat_template.jinja (transformers >= 4.50 writes it),
    else tokenizer_config.json's."""
    if (model_dir / "chat_template.jinja").is_file():
        return (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    if not (model_dir / "tokenizer_config.json").is_file():
        return None
    template = files.read_json_object(model_dir / "tokenizer_config.json", ModelNotFound, "tokenizer config",
                                      fix="merge the model again (`python -m finetune merge`).").get("chat_template")
    return template if isinstance(template, str) else None


def check_gguf(path: Path, model_dir: Path, architecture: str, *, tensors: int | None = None) -> llamacpp.GGUFInfo:
    """What llama.cpp wrote carries the merged tokenizer's chat template and every tensor."""
    info = llamacpp.read_info(path)
    expected = chat_template(model_dir)
    if expected and info.chat_template != expected:
        raise InputError(f"{path.name} does not carry the model's chat template ({architecture}).",
                         "report this: llama.cpp's converter changed how it reads tokenizer_config.json.")
    if tensors is not None and info.tensors != tensors:
        raise InputError(f"{path.name} has {info.tensors} tensors, the f16 export {tensors}.", "export again.")
    return info


def write_modelfile(out: Path, model_dir: Path, targets: dict[str, Path], wanted: list[str],
                    info: llamacpp.GGUFInfo, template_name: str | None, system: str, name: str,
                    progress) -> Path | None:
    if not template_name:
        progress("  no Modelfile: the training template is unknown (pass --prompt-template NAME); the GGUF carries "
                 "the chat template for llama.cpp and LM Studio")
        return None
    template = load_xtuner_template(template_name)
    try:
        tokenizer = load_tokenizer(model_dir)
        text = modelfile.ollama_template(template, name=template_name, bos=info.bos, eos=info.eos,
                                         train_bos=xtuner_adds_bos(tokenizer), runtime_adds_bos=info.add_bos)
        primary, *others = [targets[q].name for q in wanted]
        content = modelfile.render(gguf_file=primary, template_text=text, system=system,
                                   stops=modelfile.modelfile_stops(template, info.eos), num_ctx=info.context_length,
                                   source=name, others=others)
    except InputError as error:
        progress(f"  no Modelfile: {error.one_line()}")
        return None
    path = write_text(out / modelfile.FILE, content)
    progress(f"  {path.name}: ollama create {name.lower()} -f {path}")
    return path


def register(subparsers, formatter_class) -> None:
    parser = subparsers.add_parser(
        "export",
        help="merged model -> GGUF (llama.cpp, Ollama, LM Studio) + an Ollama Modelfile",
        description="Convert a run's merged model (or any merged model folder) to GGUF with llama.cpp's own "
        "converter and quantizer, offline. Several quantizations share one f16 conversion. The GGUF carries the "
        "training chat template; the Modelfile beside it has a TEMPLATE that renders the same text, the stop words "
        "and the default system prompt. Needs `make export-tools` once.",
        epilog="examples:\n"
        "  python -m finetune export runs/xiaowei                       # RUN/gguf/xiaowei-Q4_K_M.gguf + Modelfile\n"
        "  python -m finetune export runs/xiaowei --quant q4_k_m q8_0 f16\n"
        "  cd runs/xiaowei/gguf && ollama create xiaowei -f Modelfile && ollama run xiaowei\n"
        "  python -m app runs/xiaowei/gguf/xiaowei-Q4_K_M.gguf           # chat with it in the browser",
        formatter_class=formatter_class,
    )
    parser.add_argument("source", help="run directory or merged model folder")
    parser.add_argument("--quant", nargs="+", default=[DEFAULT_QUANT], metavar="QUANT",
                        help=f"one or more of {', '.join(llamacpp.QUANTS)}")
    parser.add_argument("--out", default=None, help="output folder (default: RUN/gguf)")
    parser.add_argument("--prompt-template", dest="prompt_template", default=None,
                        help="XTuner template for the Modelfile (default: the one recorded by merge)")
    parser.add_argument("--system", default=None, help="default system prompt (default: the training one)")
    parser.set_defaults(func=handle)


def handle(args) -> int:
    result = export(args.source, args.quant, out=args.out, prompt_template=args.prompt_template, system=args.system)
    for path in result.files.values():
        print(path)
    if result.modelfile:
        print(result.modelfile)
    return 0
