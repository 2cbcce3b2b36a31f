"""XTuner's native dataset format: validate records and read JSONL files with every bad line reported."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import DataError, InputError

Problem = tuple[int, str]


def validate_record(obj: object) -> list[str]:
    """Reasons why `obj` is not a valid XTuner record ({"conversation": [{"system"?, "input", "output"}, ...]})."""
    if not isinstance(obj, dict):
        return [f"not a JSON object (got {type(obj).__name__})"]
    if "conversation" not in obj:
        return ["missing 'conversation'"]
    conversation = obj["conversation"]
    if not isinstance(conversation, list) or not conversation:
        return ["'conversation' must be a non-empty list of turns"]
    reasons: list[str] = []
    for index, turn in enumerate(conversation, start=1):
        if not isinstance(turn, dict):
            reasons.append(f"turn {index} is not an object")
            continue
        if "input" in turn and not isinstance(turn["input"], str):
            reasons.append(f"turn {index}: 'input' must be a string")
        output = turn.get("output")
        if not isinstance(output, str):
            reasons.append(f"turn {index}: 'output' must be a string" if "output" in turn else
                           f"turn {index}: missing 'output'")
        elif not output.strip():
            reasons.append(f"turn {index}: empty 'output'")
        if "system" in turn:
            if index > 1:
                reasons.append(f"turn {index}: 'system' is only allowed in the first turn")
            elif not isinstance(turn["system"], str):
                reasons.append("turn 1: 'system' must be a string")
    return reasons


def record_kind(record: dict) -> str:
    """'pretrain' (one turn, empty input), 'single' or 'multi'."""
    turns = record["conversation"]
    if len(turns) > 1:
        return "multi"
    return "pretrain" if not (turns[0].get("input") or "").strip() else "single"


def require_file(path: str | os.PathLike, what: str = "data file") -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"The {what} {path} does not exist.",
            "check the path (relative paths start from the current folder) or create the file first.",
        )
    return path


def read_jsonl(path: str | os.PathLike) -> tuple[list[dict], list[Problem]]:
    """Valid records and (line number, reason) for every blank, malformed or invalid line."""
    path = require_file(path)
    records: list[dict] = []
    problems: list[Problem] = []
    with open(path, encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                problems.append((line_no, "blank line"))
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append((line_no, f"malformed JSON ({exc.msg} at column {exc.colno})"))
                continue
            reasons = validate_record(obj)
            if reasons:
                problems.extend((line_no, reason) for reason in reasons)
            else:
                records.append(obj)
    return records, problems


def raise_problems(path: str | os.PathLike, problems: list[Problem], unit: str = "line", writing: bool = False) -> None:
    """Raise one DataError listing every problem (no-op when there are none)."""
    if not problems:
        return
    bad = len({line_no for line_no, _ in problems})
    raise DataError(
        f"{path}: {bad} bad {unit}{'s' if bad != 1 else ''} (listed above).",
        f"fix or delete the listed {unit}s and run the command again{'; nothing was written' if writing else ''}.",
        problems=sorted(problems),
    )


def load_jsonl(path: str | os.PathLike) -> list[dict]:
    """All records of an XTuner JSONL file; DataError listing every bad line if any."""
    records, problems = read_jsonl(path)
    raise_problems(path, problems)
    if not records:
        raise DataError(f"{path} holds no records.", "add at least one JSON record per line.")
    return records
