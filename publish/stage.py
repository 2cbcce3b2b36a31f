"""Prepare the folder to publish: exactly the files a hub repo should hold, with local paths replaced by hub ids.

`stage_adapter(source, hub=..., repo=...)` takes a run directory, an adapter folder (RUN/adapter) or, with
`merged=True`, a merged model folder (RUN/merged), and writes a staging folder (default `RUN/publish/<hub>/`,
`RUN/publish/<hub>-merged/` for a merged model) through a temporary sibling that is renamed only when complete:
a failure leaves no half-written folder. Nothing here touches the network.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from app import files
from app.formats import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    META_FILE,
    RUN_MANIFEST,
    SAFETENSORS_INDEX,
    has_recorded_bits,
    is_run_dir,
    read_meta,
    read_object,
    read_run_manifest,
    recorded_bits,
    run_spec,
)
from finetune.evalreport import CHART_FILE as EVAL_PNG
from finetune.fsutil import atomic_dir, sha256_file
from finetune.presets import PRESETS, Preset, find_preset_for_hub_id

from .card import XTUNER, CardInfo, build_card, training_summary
from .errors import BaseModelUnknown, InputError, SourceError, StagingError
from .hubs import GGUF_HUBS, HUBS, REPO_ID, check_repo_id, get_hub, repo_url

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "vocab.txt", "spiece.model",
                   "chat_template.jinja", "chat_template.json")
TOKENIZER_GLOBS = ("tokenization_*.py", "*.tiktoken")
MODEL_CONFIG_FILES = ("config.json", "generation_config.json")
NOT_PUBLISHED_PY = {"xtuner_config.py"}  # the training config: local paths everywhere
META_KEEP = ("prompt_template", "system", "merged_dtype")
TEXT_SUFFIXES = {".json", ".md", ".yml", ".yaml", ".txt", ".py", ".jinja"}
LEAK_SCAN_LIMIT = 64 * 2**20
FIX_JSON = ("restore it: `python -m finetune convert RUN` writes the adapter again, `python -m finetune merge RUN` the "
            "merged model; nothing was staged.")
MODELSCOPE_CONFIGURATION = {"framework": "pytorch", "task": "text-generation", "allow_remote": True}


@dataclass(frozen=True)
class StagedFile:
    path: str  # relative, '/'-separated
    size: int
    sha256: str


@dataclass
class StagedFolder:
    path: Path
    hub: str
    repo: str
    kind: str  # adapter | merged
    base_id: str
    url: str
    files: list[StagedFile] = field(default_factory=list)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def card(self) -> str:
        return (self.path / "README.md").read_text(encoding="utf-8")

    def names(self) -> list[str]:
        return [f.path for f in self.files]


@dataclass
class Located:
    folder: Path  # the adapter or merged model folder
    run_dir: Path | None
    kind: str


# ------------------------------------------------------------------------------------------- source


def _read_source(path: Path) -> dict:
    """A JSON object file of the source, {} when there is none; a broken one is a SourceError naming it."""
    return read_object(path, SourceError, fix=FIX_JSON)


def _read_spec(run_dir: Path) -> dict:
    """The config spec RUN/run.json recorded, {} when there is none."""
    return run_spec(read_run_manifest(run_dir, SourceError, FIX_JSON, what="file"))


def locate(source: str | os.PathLike, *, merged: bool = False) -> Located:
    path = files.expand_path(source)
    kind = "merged" if merged else "adapter"
    if not path.exists():
        raise SourceError(f"{path} does not exist.",
                          "pass a run directory (runs/NAME), an adapter folder (RUN/adapter) or, with --merged, a "
                          "merged model folder (RUN/merged).")
    if not path.is_dir():
        raise SourceError(f"{path} is a file, not a folder.", "pass the run directory or the adapter folder.")
    path = path.resolve()
    if is_run_dir(path) or ((path / "adapter").is_dir() or (path / "merged").is_dir()):
        folder = path / kind
        if not folder.is_dir():
            command = "merge" if merged else "convert"
            raise SourceError(f"Run directory {path} has no {kind}/ folder yet.",
                              f"run `python -m finetune {command} {path}` first (or `python -m finetune run` again).")
        return Located(folder, path, kind)
    run_dir = path.parent if is_run_dir(path.parent) else None
    return Located(path, run_dir, kind)


def _check_adapter(folder: Path) -> None:
    if not (folder / ADAPTER_CONFIG).is_file():
        if (folder / "config.json").is_file():
            raise SourceError(f"{folder} is a full model (config.json), not a PEFT adapter.",
                              "add --merged to publish it as a merged model.")
        raise SourceError(f"{folder} is not a PEFT adapter folder (no {ADAPTER_CONFIG}).",
                          "pass RUN/adapter, or run `python -m finetune convert RUN` first.")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        if (folder / "adapter_model.bin").is_file():
            raise SourceError(f"{folder} holds adapter_model.bin but no {ADAPTER_WEIGHTS}; hubs and PEFT expect "
                              "safetensors.", "convert again with `python -m finetune convert RUN` (writes "
                              "safetensors).")
        raise SourceError(f"{folder} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}.",
                          "convert again with `python -m finetune convert RUN`.")


def _merged_weights(folder: Path) -> list[str]:
    """The weight files to publish: the index and every shard it names, or the single model.safetensors."""
    if (folder / ADAPTER_CONFIG).is_file():
        raise SourceError(f"{folder} is a PEFT adapter, not a merged model.",
                          "drop --merged to publish the adapter, or pass RUN/merged.")
    if not (folder / "config.json").is_file():
        raise SourceError(f"{folder} is not a model folder (no config.json).",
                          "pass RUN/merged, or run `python -m finetune merge RUN` first.")
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = _read_source(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise SourceError(f"{index} has no weight_map.", "merge again: `python -m finetune merge RUN`.")
        shards = sorted(set(map(str, weight_map.values())))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise SourceError(f"{folder} is incomplete: {SAFETENSORS_INDEX} names {len(missing)} shard(s) that are not "
                              f"there ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}).",
                              "copy the missing shards back, or merge again: `python -m finetune merge RUN`.")
        return [SAFETENSORS_INDEX, *shards]
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    if shards == ["model.safetensors"]:
        return shards
    if len(shards) > 1:
        raise SourceError(f"{folder} has {len(shards)} safetensors shards but no {SAFETENSORS_INDEX}.",
                          "copy the index file back, or merge again: `python -m finetune merge RUN`.")
    if any(folder.glob("*.bin")):
        raise SourceError(f"{folder} holds only .bin weights; hubs and loaders expect safetensors.",
                          "merge again with `python -m finetune merge RUN` (writes safetensors).")
    raise SourceError(f"{folder} has a config.json but no weights.", "merge again: `python -m finetune merge RUN`.")


# ------------------------------------------------------------------------------------------- base model id


def _looks_local(value: str) -> bool:
    return value.startswith(("/", "~", ".", "\\")) or "\\" in value or value.count("/") != 1 or ":" in value


def _preset_for(value: str) -> Preset | None:
    """A preset from a preset name, a hub id, a folder named like a preset, or a cache folder named `org--name`."""
    value = value.strip().rstrip("/\\")
    name = Path(value).name.lower()
    found = PRESETS.get(value.lower()) or find_preset_for_hub_id(value) or PRESETS.get(name)
    if found is None and "--" in name:
        found = find_preset_for_hub_id(name.replace("--", "/", 1))
    return found


def resolve_base_id(candidates: list[str], hub: str, base_id: str | None = None) -> tuple[str, Preset | None]:
    """(hub id of the base model for `hub`, its preset if known). `base_id` (--base-id) wins."""
    if base_id:
        check_repo_id(base_id, flag="--base-id")
        return base_id, _preset_for(base_id)
    field_name = HUBS[hub].base_field
    for value in candidates:
        preset = _preset_for(value)
        if preset is not None:
            return getattr(preset, field_name), preset
    for value in candidates:  # a hub id the run was trained from directly (not a preset)
        if REPO_ID.match(value) and not _looks_local(value) and not Path(value).exists():
            return value, None
    for value in candidates:  # `python -m finetune download ORG/NAME` keeps it as ORG--NAME
        name = Path(value).name
        if name.count("--") == 1 and REPO_ID.match(name.replace("--", "/")):
            return name.replace("--", "/"), None
    shown = next((c for c in candidates if c), "")
    raise BaseModelUnknown(
        f"Cannot tell which {HUBS[hub].label} model the base '{shown or '(not recorded)'}' is: its folder name is "
        f"not one of the presets ({', '.join(PRESETS)}).",
        f"pass --base-id OWNER/NAME, the base model's id on {HUBS[hub].label}.",
    )


def _base_candidates(located: Located) -> list[str]:
    folder = located.folder
    meta = read_meta(folder, SourceError, fix=FIX_JSON)
    values: list[object] = [meta.get("model_path"), meta.get("base_model")]
    if located.kind == "adapter":
        values.append(_read_source(folder / ADAPTER_CONFIG).get("base_model_name_or_path"))
    else:
        values.append(_read_source(folder / "config.json").get("_name_or_path"))
        values.append(read_meta(folder.parent / "adapter", SourceError, fix=FIX_JSON).get("model_path"))
    if located.run_dir is not None:
        values.append(_read_spec(located.run_dir).get("model_path"))
    out: list[str] = []
    for value in values:
        if isinstance(value, str) and value.strip() and value.strip() not in out:
            out.append(value.strip())
    return out


# ------------------------------------------------------------------------------------------- helpers


def _copy_file(src: Path, dst: Path) -> None:
    """Hard-link when possible (multi-GB shards cost no extra disk), else copy. Staged files are never edited in
    place: every rewritten file goes through `_write_json`/`_write_text`, which unlink first."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_text(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)  # never write through a hard link into the source folder
    path.write_text(text, encoding="utf-8")


def _write_json(path: Path, data: object) -> None:
    _write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def _quantization(located: Located) -> str | None:
    """4bit (QLoRA) / 8bit / None: the bits the run recorded in its spec (run.json); runs from before the spec
    recorded them, and adapter folders without their run, fall back to the XTuner config they carry."""
    if located.run_dir is not None:
        spec = _read_spec(located.run_dir)
        if has_recorded_bits(spec):
            bits = recorded_bits(spec, located.run_dir / RUN_MANIFEST, SourceError)
            return f"{bits}bit" if bits else None
    return _quantization_in_config(located)


def _quantization_in_config(located: Located) -> str | None:
    """4bit / 8bit / None, from the text of the XTuner config the adapter or run carries (the first one found)."""
    sources = [located.folder / "xtuner_config.py"]
    if located.run_dir is not None:
        sources += [located.run_dir / "config.py", located.run_dir / "adapter" / "xtuner_config.py"]
    for path in sources:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        compact = "".join(text.split())
        if "load_in_4bit=True" in compact:
            return "4bit"
        if "load_in_8bit=True" in compact:
            return "8bit"
        return None
    return None


def _local_needles(located: Located, candidates: list[str]) -> list[str]:
    needles = {str(located.folder)}
    if located.run_dir is not None:
        needles.add(str(located.run_dir))
    for value in candidates:
        if value.startswith(("/", "~")) or (len(value) > 2 and value[1] == ":"):
            needles.add(value)
            needles.add(str(files.expand_path(value)))
    return sorted(n for n in needles if len(n) > 3)


def _check_no_local_paths(folder: Path, needles: list[str]) -> None:
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in TEXT_SUFFIXES or path.stat().st_size > LEAK_SCAN_LIMIT:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for needle in needles:
            if needle in text:
                raise StagingError(f"The staged {path.name} still contains the local path {needle}; refusing to "
                                   "stage it.", "this is a bug in `publish`; please report it. Nothing was staged.")


def default_out(located: Located, hub: str) -> Path:
    leaf = hub if located.kind == "adapter" else f"{hub}-merged"
    if located.run_dir is not None:
        return located.run_dir / "publish" / leaf
    return located.folder.parent / f"{located.folder.name}-publish" / leaf


def _check_out(out: Path, located: Located, is_default: bool) -> None:
    resolved = out.resolve()
    protected = [located.folder] + ([located.run_dir] if located.run_dir else [])
    for keep in protected:
        if resolved == keep or resolved in keep.parents:
            raise InputError(f"--out {out} would replace {keep}.", "choose a new folder, e.g. RUN/publish/hf.")
    inside = [located.folder] + ([located.run_dir / "adapter", located.run_dir / "merged"] if located.run_dir else [])
    for keep in inside:
        if keep in resolved.parents:
            raise InputError(f"--out {out} is inside {keep}, a folder this toolkit writes.",
                             "choose a folder outside it, e.g. RUN/publish/hf.")
    if is_default or not resolved.exists():
        return
    if resolved.is_file():
        raise InputError(f"--out {out} is a file.", "pass a folder path.")
    entries = list(resolved.iterdir())
    looks_staged = (resolved / "README.md").is_file() and (any(
        (resolved / n).is_file() for n in (ADAPTER_CONFIG, "config.json")) or any(resolved.glob("*.gguf")))
    if entries and not looks_staged:
        raise InputError(f"--out {out} exists and is not a staging folder; it is left untouched.",
                         "pass an empty or new folder.")


# ------------------------------------------------------------------------------------------- staging


def _sanitize_meta(meta: dict, base_id: str) -> dict:
    """finetune_meta.json without local paths: the base becomes its hub id; checkpoint/config/adapter paths go."""
    clean = {key: base_id for key in ("model_path", "base_model") if key in meta} or {"model_path": base_id}
    clean.update({key: meta[key] for key in META_KEEP if key in meta})
    return clean


def _rewrite_name_or_path(source: Path, staged: Path, base_id: str) -> None:
    """config.json / tokenizer_config.json name the folder they were loaded from: point them at the hub id."""
    data = _read_source(source)
    changed = False
    for key in ("_name_or_path", "name_or_path"):
        value = data.get(key)
        if isinstance(value, str) and value and (_looks_local(value) or Path(value).exists()):
            data[key] = base_id
            changed = True
    if changed:
        _write_json(staged, data)


def _stage_adapter_files(located: Located, tmp: Path, base_id: str) -> None:
    folder = located.folder
    config = _read_source(folder / ADAPTER_CONFIG)
    config["base_model_name_or_path"] = base_id
    _write_json(tmp / ADAPTER_CONFIG, config)
    _copy_file(folder / ADAPTER_WEIGHTS, tmp / ADAPTER_WEIGHTS)
    _copy_tokenizer(folder, tmp, base_id)


def _copy_tokenizer(folder: Path, tmp: Path, base_id: str) -> None:
    names = [n for n in TOKENIZER_FILES if (folder / n).is_file()]
    names += sorted({p.name for pattern in TOKENIZER_GLOBS for p in folder.glob(pattern)} - set(names))
    for name in names:
        _copy_file(folder / name, tmp / name)
    if (tmp / "tokenizer_config.json").is_file():
        _rewrite_name_or_path(folder / "tokenizer_config.json", tmp / "tokenizer_config.json", base_id)


def _stage_merged_files(located: Located, tmp: Path, base_id: str) -> None:
    folder = located.folder
    for name in _merged_weights(folder):
        _copy_file(folder / name, tmp / name)
    for name in MODEL_CONFIG_FILES:
        if (folder / name).is_file():
            _copy_file(folder / name, tmp / name)
            _rewrite_name_or_path(folder / name, tmp / name, base_id)
    _copy_tokenizer(folder, tmp, base_id)
    for path in sorted(folder.glob("*.py")):  # remote code (InternLM2): modeling_*.py, configuration_*.py
        if path.name not in NOT_PUBLISHED_PY and not (tmp / path.name).exists():
            _copy_file(path, tmp / path.name)


def _loss_png(located: Located) -> Path | None:
    if located.run_dir is None:
        return None
    for path in (located.run_dir / "loss.png", located.run_dir / "work_dir" / "loss.png"):
        if path.is_file():
            return path
    return None


def _eval_png(located: Located, summary) -> Path | None:
    """RUN/eval.png, when the card shows that run's evaluation."""
    if located.run_dir is None or summary.evaluation is None:
        return None
    path = located.run_dir / EVAL_PNG
    return path if path.is_file() else None


def metafile(name: str, license_id: str, files: list[str], dataset: str = "custom") -> dict:
    """OpenXLab's metafile.yml: one collection, and one Models entry per file (its SDK uploads only `Weights`)."""
    spelled = {"apache-2.0": "Apache-2.0", "mit": "MIT", "other": "Other"}.get(license_id, license_id)
    return {
        "Collections": [{"Name": name, "License": spelled, "Code": {"URL": XTUNER}}],
        "Models": [{"Name": file, "Results": [{"Task": "Text Generation", "Dataset": dataset}], "Weights": file}
                   for file in files],
    }


def list_files(folder: Path) -> list[StagedFile]:
    """Every file under `folder` with its size and sha256, in path order."""
    return [StagedFile(p.relative_to(folder).as_posix(), p.stat().st_size, sha256_file(p))
            for p in sorted(folder.rglob("*")) if p.is_file()]


def stage_adapter(source: str | os.PathLike, *, hub: str, repo: str, merged: bool = False,
                  out: str | os.PathLike | None = None, base_id: str | None = None,
                  license: str | None = None) -> StagedFolder:
    """Write the folder to publish for `hub`/`repo` and return its file list (sizes, sha256)."""
    hub = get_hub(hub).name
    repo = check_repo_id(repo)
    located = locate(source, merged=merged)
    if located.kind == "adapter":
        _check_adapter(located.folder)
    else:
        _merged_weights(located.folder)  # fail before writing anything
    candidates = _base_candidates(located)
    resolved_base, preset = resolve_base_id(candidates, hub, base_id)
    license_id = (license or "").strip() or (preset.license if preset else "other")
    is_default = out is None
    out_path = default_out(located, hub) if out is None else files.expand_path(out)
    _check_out(out_path, located, is_default)
    meta = read_meta(located.folder, SourceError, fix=FIX_JSON)
    adapter_config = _read_source(located.folder / ADAPTER_CONFIG)
    if not adapter_config and located.run_dir is not None:  # a merged model: the LoRA settings of its run
        adapter_config = _read_source(located.run_dir / "adapter" / ADAPTER_CONFIG)
    loss_png = _loss_png(located)
    summary = training_summary(located.run_dir)
    eval_png = _eval_png(located, summary)

    with atomic_dir(out_path) as tmp:
        if located.kind == "adapter":
            _stage_adapter_files(located, tmp, resolved_base)
        else:
            _stage_merged_files(located, tmp, resolved_base)
        if meta:
            _write_json(tmp / META_FILE, _sanitize_meta(meta, resolved_base))
        if loss_png is not None:
            _copy_file(loss_png, tmp / "loss.png")
        if eval_png is not None:
            _copy_file(eval_png, tmp / EVAL_PNG)
        info = CardInfo(
            hub=hub, repo=repo, kind=located.kind, base_id=resolved_base, license=license_id,
            quant=_quantization(located), prompt_template=str(meta.get("prompt_template") or ""),
            system=str(meta.get("system") or ""),
            lora_r=adapter_config.get("r") if isinstance(adapter_config.get("r"), int) else None,
            lora_alpha=adapter_config.get("lora_alpha") if isinstance(adapter_config.get("lora_alpha"), int) else None,
            has_tokenizer=(tmp / "tokenizer_config.json").is_file(), has_loss_png=loss_png is not None,
            trust_remote_code=bool(preset and preset.trust_remote_code) or any(tmp.glob("*.py")),
            summary=summary, has_eval_png=eval_png is not None,
        )
        _write_text(tmp / "README.md", build_card(info))
        if hub == "modelscope":
            _write_json(tmp / "configuration.json", MODELSCOPE_CONFIGURATION)
        elif hub == "openxlab":
            listed = sorted(p.name for p in tmp.iterdir() if p.is_file() and p.name != "README.md")
            data = metafile(repo.split("/")[1], license_id, listed)
            _write_text(tmp / "metafile.yml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        _check_no_local_paths(tmp, _local_needles(located, candidates))

    return StagedFolder(path=out_path, hub=hub, repo=repo, kind=located.kind, base_id=resolved_base,
                        url=repo_url(hub, repo), files=list_files(out_path))


# ------------------------------------------------------------------------------------------- GGUF

def locate_gguf(source: str | os.PathLike) -> Located:
    """A run directory (its gguf/ folder) or a folder of .gguf files written by `finetune export`."""
    path = files.expand_path(source)
    if not path.exists():
        raise SourceError(f"{path} does not exist.", "pass a run directory (runs/NAME) or its gguf/ folder.")
    if not path.is_dir():
        raise SourceError(f"{path} is a file, not a folder.", "pass the run directory or the gguf/ folder.")
    path = path.resolve()
    folder, run_dir = (path / "gguf", path) if is_run_dir(path) else (path, path.parent if is_run_dir(
        path.parent) else None)
    if not folder.is_dir() or not any(folder.glob("*.gguf")):
        raise SourceError(f"{folder} holds no .gguf file.",
                          f"export the model first: `python -m finetune export {run_dir or path}`.")
    for gguf in folder.glob("*.gguf"):
        with open(gguf, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise SourceError(f"{gguf} is not a GGUF file.", "export again: `python -m finetune export RUN`.")
    return Located(folder, run_dir, "gguf")


def stage_gguf(source: str | os.PathLike, *, hub: str, repo: str, out: str | os.PathLike | None = None,
               base_id: str | None = None, license: str | None = None) -> StagedFolder:
    """The GGUF files, the Modelfile beside them and a card that makes the hub list it as a GGUF of its base."""
    hub = get_hub(hub).name
    if hub not in GGUF_HUBS:
        raise InputError(f"GGUF files are published to {' or '.join(GGUF_HUBS)}, not {hub}.",
                         "pass --to hf or --to modelscope.")
    repo = check_repo_id(repo)
    located = locate_gguf(source)
    merged = located.run_dir / "merged" if located.run_dir else None
    candidates = _base_candidates(located) + (_base_candidates(Located(merged, located.run_dir, "merged"))
                                              if merged and merged.is_dir() else [])
    resolved_base, preset = resolve_base_id(candidates, hub, base_id)
    license_id = (license or "").strip() or (preset.license if preset else "other")
    out_path = (located.run_dir / "publish" / f"{hub}-gguf" if located.run_dir
                else located.folder.parent / f"{located.folder.name}-publish" / hub) if out is None \
        else files.expand_path(out)
    _check_out(out_path, located, out is None)
    meta = read_meta(merged, SourceError, fix=FIX_JSON) if merged else {}
    ggufs = sorted(p.name for p in located.folder.glob("*.gguf"))
    loss_png = _loss_png(located)
    summary = training_summary(located.run_dir)
    eval_png = _eval_png(located, summary)
    with atomic_dir(out_path) as tmp:
        for name in ggufs:
            _copy_file(located.folder / name, tmp / name)
        if (located.folder / "Modelfile").is_file():
            _copy_file(located.folder / "Modelfile", tmp / "Modelfile")
        if loss_png is not None:
            _copy_file(loss_png, tmp / "loss.png")
        if eval_png is not None:
            _copy_file(eval_png, tmp / EVAL_PNG)
        info = CardInfo(
            hub=hub, repo=repo, kind="gguf", base_id=resolved_base, license=license_id, quant=None,
            prompt_template=str(meta.get("prompt_template") or ""), system=str(meta.get("system") or ""),
            has_loss_png=loss_png is not None, summary=summary, gguf_files=ggufs,
            has_modelfile=(tmp / "Modelfile").is_file(), has_eval_png=eval_png is not None,
        )
        _write_text(tmp / "README.md", build_card(info))
        if hub == "modelscope":
            _write_json(tmp / "configuration.json", MODELSCOPE_CONFIGURATION)
        _check_no_local_paths(tmp, _local_needles(located, candidates))
    return StagedFolder(path=out_path, hub=hub, repo=repo, kind="gguf", base_id=resolved_base,
                        url=repo_url(hub, repo), files=list_files(out_path))
