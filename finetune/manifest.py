"""`run.json`: what a run was made from (inputs with hashes, versions, settings) and which stages finished.

A stage is skipped on a rerun when it finished before with the same key (a hash of its inputs) and its
outputs still exist; when a key changes, that stage and every later one run again.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from importlib import metadata
from pathlib import Path

from app.formats import QUANT_BITS, RUN_MANIFEST, SPEC_BITS, read_run_manifest

from . import __version__
from .errors import InputError
from .fsutil import write_json

TRACKED_PACKAGES = ("xtuner", "torch", "transformers", "peft", "mmengine", "bitsandbytes", "deepspeed")


def stable_hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    found = {"finetune": __version__}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class Manifest:
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RUN_MANIFEST
        if self.path.is_file():
            fix = f"restore it, or delete it to start the run in {self.run_dir} over (every stage runs again)."
            self.data = read_run_manifest(self.run_dir, InputError, fix)
            for key in ("stages", "inputs"):
                if not isinstance(self.data.setdefault(key, {}), dict):
                    raise InputError(f"{self.path}: '{key}' is not a JSON object.", fix)
        else:
            self.data = {"created": now(), "stages": {}, "inputs": {}}
        self._invalidated = False

    def save(self) -> None:
        self.data["updated"] = now()
        self.data["versions"] = versions()
        write_json(self.path, self.data)

    def is_done(self, stage: str, key: str) -> bool:
        """Done with the same key and outputs present; otherwise this stage and all later ones must rerun."""
        if self._invalidated:
            return False
        record = self.data["stages"].get(stage)
        done = bool(record and record.get("done") and record.get("key") == key and all(
            Path(p).exists() for p in record.get("outputs", {}).values() if isinstance(p, str) and p.startswith("/")))
        if not done:
            self._invalidated = True
        return done

    def outputs(self, stage: str) -> dict:
        return self.data["stages"].get(stage, {}).get("outputs", {})

    def start(self, stage: str, key: str) -> None:
        self.data["stages"][stage] = {"done": False, "key": key, "started": now()}
        self.save()

    def finish(self, stage: str, key: str, outputs: dict, seconds: float) -> None:
        self.data["stages"][stage] = {"done": True, "key": key, "finished": now(), "seconds": round(seconds, 1),
                                      "outputs": outputs}
        self.save()

    def record_spec(self, spec: dict, quant: str) -> None:
        """The config spec, with the bits the base model is trained in (`quant` resolved for this device: 4bit, 8bit
        or none; the spec's own `quant` may say auto). Saved with the next stage record."""
        self.data["spec"] = {**spec, SPEC_BITS: QUANT_BITS[quant]}

    def record_input(self, name: str, path: str | Path) -> str:
        from .fsutil import sha256_file

        digest = sha256_file(path)
        self.data["inputs"][name] = {"path": str(path), "sha256": digest}
        return digest
