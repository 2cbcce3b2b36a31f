"""The training tokenizer: a base tokenizer whose chat template renders the XTuner prompt a model was trained with.

`convert` saves it into the adapter and `merge` into the merged model; it lives here so that neither imports the
other.
"""

from __future__ import annotations

from pathlib import Path

from .chat_template import build_chat_template, load_xtuner_template, stop_words, xtuner_adds_bos


def save_training_tokenizer(base: str | Path, template_name: str, system: str, out: Path, *, trust: bool) -> None:
    """Save the base tokenizer into `out` with the training chat template (an adapter then prompts as trained)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=trust)
    set_training_template(tokenizer, template_name, system)
    save_tokenizer(tokenizer, out)


def save_tokenizer(tokenizer, out: Path) -> None:
    tokenizer.save_pretrained(out)
    if _is_gguf_copy(out / "tokenizer.model"):  # GGUF-converted bases carry a useless 98 MB copy
        (out / "tokenizer.model").unlink()


def set_training_template(tokenizer, template_name: str, system: str) -> None:
    template = load_xtuner_template(template_name)
    tokenizer.chat_template = build_chat_template(template, default_system=system,
                                                  add_bos=xtuner_adds_bos(tokenizer))


def apply_training_template(tokenizer, model, template_name: str, system: str) -> None:
    set_training_template(tokenizer, template_name, system)
    template = load_xtuner_template(template_name)
    stop_ids = []
    for word in stop_words(template):
        token_id = tokenizer.convert_tokens_to_ids(word)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            stop_ids.append(token_id)
    if stop_ids:
        eos = model.generation_config.eos_token_id
        existing = eos if isinstance(eos, list) else ([eos] if eos is not None else [])
        model.generation_config.eos_token_id = list(dict.fromkeys(stop_ids + existing))


def _is_gguf_copy(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        return fh.read(4) == b"GGUF"
