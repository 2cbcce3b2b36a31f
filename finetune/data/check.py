"""Check an XTuner JSONL file: every bad line, record kinds, and token lengths as XTuner will see them."""

from __future__ import annotations

import argparse
import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EnvironmentProblem, InputError, ModelNotFound
from ..templates import NEW_TEMPLATES, all_templates, apply_template
from .formats import load_jsonl, record_kind
from .replay import resolve_model_dir

QWEN_TOKENIZERS = {"QWenTokenizer", "QWen2Tokenizer", "Qwen2TokenizerFast"}  # XTuner adds no BOS for these


@functools.lru_cache(maxsize=1)
def prompt_templates() -> dict:
    """XTuner's PROMPT_TEMPLATE and ours (finetune/templates.py), without importing the heavy `xtuner` package."""
    templates = all_templates()
    if templates.keys() == NEW_TEMPLATES.keys():  # XTuner's own are missing
        raise EnvironmentProblem("XTuner is not installed.", "install the lock: `pip install --no-deps -r "
                                 "requirements.txt`.")
    return templates


def get_template(name: str) -> dict:
    templates = prompt_templates()
    if name not in templates:
        raise InputError(f"Unknown prompt template '{name}'.", f"use one of: {', '.join(templates)}.")
    return dict(templates[name])


@functools.lru_cache(maxsize=4)
def load_tokenizer(model_dir: str):
    from ..modelload import load_tokenizer as load

    try:
        return load(model_dir)
    except (OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelNotFound(f"Cannot load a tokenizer from {model_dir}: {reason}",
                            "pass a model folder that has its tokenizer files (tokenizer.json or "
                            "tokenizer.model + tokenizer_config.json).") from exc


def render_pieces(record: dict, template: dict) -> list[tuple[str, bool]]:
    """The text pieces XTuner encodes for a record, each with whether a BOS goes before it.

    Mirrors xtuner.dataset.map_fns.template_map_fn + encode_fn; pretraining records get no template.
    """
    turns = record["conversation"]
    if record_kind(record) == "pretrain":
        return [(turns[0]["output"], True), ("<EOS>", False)]
    pieces: list[tuple[str, bool]] = []
    for index, turn in enumerate(apply_template(turns, template)):
        pieces.append((turn["input"], index == 0 or turn["need_eos_token"]))
        pieces.append((turn["output"], False))
        if turn["need_eos_token"]:
            pieces.append(("<EOS>", False))
        if turn["sep"]:
            pieces.append((turn["sep"], False))
    return pieces


def token_lengths(records: list[dict], tokenizer, template: dict) -> list[int]:
    """Token count of every record, tokenized piece by piece as XTuner does."""
    n_bos = 0 if type(tokenizer).__name__ in QWEN_TOKENIZERS or tokenizer.bos_token_id is None else 1
    per_record = [render_pieces(r, template) for r in records]
    texts = [text for pieces in per_record for text, _ in pieces if text != "<EOS>"]
    counts = iter(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else iter(())
    lengths = []
    for pieces in per_record:
        total = 0
        for text, with_bos in pieces:
            total += (n_bos if with_bos else 0) + (1 if text == "<EOS>" else next(counts))
        lengths.append(total)
    return lengths


def percentile(sorted_values: list[int], p: float) -> int:
    """Nearest-rank percentile."""
    return sorted_values[max(math.ceil(p / 100 * len(sorted_values)) - 1, 0)]


@dataclass
class CheckReport:
    path: Path
    records: int
    turns: int
    single: int
    multi: int
    pretrain: int
    with_system: int
    template: str
    tokenizer: str
    max_length: int
    tokens_min: int
    tokens_mean: float
    tokens_p50: int
    tokens_p95: int
    tokens_max: int
    over_max_length: int
    over_lines: list[int] = field(default_factory=list)  # line numbers of the first long records

    def lines(self) -> list[str]:
        lines = [
            f"{self.path}: OK, {self.records} records, {self.turns} turns",
            f"  single-turn {self.single}, multi-turn {self.multi}, pretraining text {self.pretrain}; "
            f"with a system prompt {self.with_system}",
            f"  tokens per sample ({self.template} template, tokenizer {self.tokenizer}): min {self.tokens_min}, "
            f"mean {self.tokens_mean:.1f}, p50 {self.tokens_p50}, p95 {self.tokens_p95}, max {self.tokens_max}",
        ]
        if self.over_max_length:
            shown = ", ".join(map(str, self.over_lines))
            lines.append(f"  warning: {self.over_max_length} samples exceed max_length {self.max_length} and will be "
                         f"truncated (lines {shown}{', ...' if self.over_max_length > len(self.over_lines) else ''}); "
                         "raise --max-length in the config or shorten them.")
        else:
            lines.append(f"  all samples fit max_length {self.max_length}")
        return lines


def check_file(
    path: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    max_length: int = 2048,
    prompt_template: str = "qwen_chat",
) -> CheckReport:
    """Validate every line (DataError listing all bad ones) and measure token lengths with the model's tokenizer."""
    template = get_template(prompt_template)
    records = load_jsonl(path)
    model_dir = resolve_model_dir(model)
    lengths = token_lengths(records, load_tokenizer(str(model_dir)), template)
    ordered = sorted(lengths)
    over = [i + 1 for i, n in enumerate(lengths) if n > max_length]  # every line is a record once loading passed
    kinds = [record_kind(r) for r in records]
    return CheckReport(
        path=Path(path),
        records=len(records),
        turns=sum(len(r["conversation"]) for r in records),
        single=kinds.count("single"),
        multi=kinds.count("multi"),
        pretrain=kinds.count("pretrain"),
        with_system=sum(bool(r["conversation"][0].get("system")) for r in records),
        template=prompt_template,
        tokenizer=Path(model_dir).name,
        max_length=max_length,
        tokens_min=ordered[0],
        tokens_mean=sum(lengths) / len(lengths),
        tokens_p50=percentile(ordered, 50),
        tokens_p95=percentile(ordered, 95),
        tokens_max=ordered[-1],
        over_max_length=len(over),
        over_lines=over[:10],
    )


def handle(args: argparse.Namespace) -> int:
    report = check_file(args.file, model=args.model, max_length=args.max_length, prompt_template=args.template)
    print("\n".join(report.lines()))
    return 0


def register(subparsers, formatter_class) -> None:
    parser = subparsers.add_parser(
        "check",
        help="validate an XTuner JSONL file and show record kinds and token lengths",
        description="Validate every line of an XTuner JSONL file (all bad lines are listed with their line "
        "number; the exit status is non-zero), count single-turn/multi-turn/pretraining records, and measure "
        "token lengths the way XTuner renders them with the prompt template, so you can pick max_length.",
        epilog="examples:\n"
        "  python -m finetune data check data/identity.jsonl\n"
        "  python -m finetune data check data/medqa_train.jsonl --max-length 512\n"
        "  python -m finetune data check data/train.jsonl --model ./models/internlm2_5-7b-chat \\\n"
        "      --template internlm2_chat",
        formatter_class=formatter_class,
    )
    parser.add_argument("file", help="XTuner JSONL file")
    parser.add_argument("--model", help="model folder or embedded preset whose tokenizer counts tokens; "
                        "the embedded model if omitted")
    parser.add_argument("--max-length", type=int, default=2048, help="the training max_length")
    parser.add_argument("--template", default="qwen_chat", help="XTuner prompt template (PROMPT_TEMPLATE key)")
    parser.set_defaults(func=handle)
