"""app/formats.py: what counts as weights, the readers of finetune_meta.json and run.json, the bits a run records
(and what `publish` reads of them), and no import cycle among finetune's modules."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from app import formats
from app.errors import ModelSourceError
from finetune.errors import InputError
from finetune.manifest import Manifest
from publish.errors import SourceError
from publish.stage import Located, _quantization

REPO = Path(__file__).resolve().parent.parent


def _folder(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", *names):
        (folder / name).write_text("{}")
    return folder


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                                     "consolidated.pth"])
def test_weight_files_make_a_model_folder(tmp_path, weights):
    assert formats.is_model_dir(_folder(tmp_path, weights))


def test_trainer_state_is_not_weights(tmp_path):
    folder = _folder(tmp_path, "training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth")
    assert not formats.has_weights(folder) and not formats.is_model_dir(folder)


def test_meta_reader_raises_the_callers_error(tmp_path):
    assert formats.read_meta(tmp_path, InputError) == {}
    (tmp_path / formats.META_FILE).write_text("[1, 2]")
    for error in (InputError, SourceError, ModelSourceError):
        with pytest.raises(error) as info:
            formats.read_meta(tmp_path, error)
        assert str(tmp_path / formats.META_FILE) in info.value.one_line() and "\n" not in info.value.one_line()


def test_run_spec_and_its_bits(tmp_path):
    assert formats.read_run_manifest(tmp_path, InputError) == {}
    assert formats.run_spec({"spec": [1]}) == {}
    assert not formats.has_recorded_bits({"quant": "auto"})
    assert formats.recorded_bits({"bits": 4}, "run.json") == 4
    assert formats.recorded_bits({"bits": None}, "run.json") is None
    for wrong in (16, True, "4"):
        with pytest.raises(SourceError, match="spec.bits"):
            formats.recorded_bits({"bits": wrong}, "run.json", SourceError)


def test_manifest_records_the_bits_the_base_is_trained_in(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.record_spec({"model_path": "/m", "quant": "auto"}, "4bit")
    manifest.save()
    spec = json.loads((tmp_path / formats.RUN_MANIFEST).read_text())["spec"]
    assert spec == {"model_path": "/m", "quant": "auto", "bits": 4}
    manifest.record_spec({"quant": "none"}, "none")
    assert manifest.data["spec"]["bits"] is None


def _run(tmp_path: Path, spec: dict, config_py: str) -> Located:
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / formats.RUN_MANIFEST).write_text(json.dumps({"spec": spec}))
    (run / "config.py").write_text(config_py)
    return Located(run / "adapter", run, "adapter")


def test_publish_reads_the_recorded_bits_before_the_config(tmp_path):
    qlora = "quantization_config = dict(load_in_4bit=True)\n"
    assert _quantization(_run(tmp_path / "a", {"bits": 8}, "quantization_config = None\n")) == "8bit"
    assert _quantization(_run(tmp_path / "b", {"bits": None}, qlora)) is None
    assert _quantization(_run(tmp_path / "c", {"model_path": "/m"}, qlora)) == "4bit"  # a run from before bits


def _imports(path: Path, package: str) -> set[str]:
    """The finetune modules `path` imports, at the top or inside a function."""
    module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    parent = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(parent.split(".")[:len(parent.split(".")) - node.level + 1]) if node.level else ""
            source = ".".join(part for part in (base, node.module or "") if part)
            found |= {source} | {f"{source}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == package and name != module}


def test_no_import_cycle_among_finetune_modules():
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (REPO / "finetune").rglob("*.py")}
    graph = {name: _imports(path, "finetune") & modules.keys() for name, path in modules.items()}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        return any(n == target or (n not in seen and not seen.add(n) and reaches(n, target, seen))
                   for n in graph[start])

    cycles = sorted(name for name in graph if reaches(name, name, set()))
    assert not cycles, f"modules in an import cycle: {cycles}"
