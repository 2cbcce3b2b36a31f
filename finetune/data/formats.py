"""XTuner's native dataset format: validate records and read JSONL files with every bad line reported."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from app import files

from ..errors import DataError, InputError

Problem = tuple[int, str]
Row = tuple[int, object]  # (row/line number as the user sees it, the raw value)


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
    if not reasons and not _encodable(obj):
        reasons.append("holds a lone surrogate escape such as \\ud800, which is not valid Unicode text")
    return reasons


def _encodable(obj: dict) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def record_kind(record: dict) -> str:
    """'pretrain' (one turn, empty input), 'single' or 'multi'."""
    turns = record["conversation"]
    if len(turns) > 1:
        return "multi"
    return "pretrain" if not (turns[0].get("input") or "").strip() else "single"


def require_file(path: str | os.PathLike, what: str = "data file") -> Path:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a {what}.", "pass the file itself.")
    if not path.is_file():
        raise InputError(
            f"The {what} {path} does not exist.",
            "check the path (relative paths start from the current folder) or create the file first.",
        )
    return path


def read_text(path: str | os.PathLike, what: str = "data file", fallbacks: tuple[str, ...] = ()) -> str:
    """The file's UTF-8 text; InputError naming the file when it is missing, binary or in another encoding."""
    return files.read_text(require_file(path, what), InputError, what, fallbacks)


def split_lines(text: str) -> list[str]:
    """Lines as JSON Lines defines them: `str.splitlines` would also cut at U+2028 and others, valid inside JSON."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def json_lines(path: str | os.PathLike, text: str) -> tuple[list[Row], list[Problem]]:
    """(line number, value) of every JSON line, and (line number, reason) for each blank or malformed one."""
    reject_json_document(path, text)
    rows: list[Row] = []
    problems: list[Problem] = []
    for line_no, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            problems.append((line_no, "blank line"))
            continue
        try:
            rows.append((line_no, json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append((line_no, f"malformed JSON ({exc.msg} at column {exc.colno})"))
        except (ValueError, RecursionError) as exc:  # an integer too long to convert, nesting too deep
            problems.append((line_no, f"unreadable JSON ({exc})"))
    return rows, problems


def reject_json_document(path: str | os.PathLike, text: str) -> None:
    """A JSON array, or an object pretty-printed over several lines, saved as .jsonl: one error for the file
    instead of one 'malformed JSON' per line."""
    stripped = text.strip()
    if not stripped.startswith(("[", "{")):
        return
    path = Path(path)
    as_json = path.with_suffix(".json")
    fix = (f"rename it to {as_json.name} and convert it to one record a line: `python -m finetune data convert "
           f"{shlex.quote(str(as_json))} --out {shlex.quote(str(path))}`.")
    try:
        document = json.loads(text)  # not `stripped`: error positions count the leading blank lines
    except (ValueError, RecursionError) as exc:
        first_line = stripped.split("\n", 1)[0].strip()
        if first_line not in ("[", "{"):  # a JSON Lines file with a bad line: reported line by line
            return
        kind = "array" if first_line == "[" else "object"
        where = (f": {exc.msg} at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError)
                 else "")
        raise InputError(f"{path} looks like one JSON {kind} over several lines, not JSON Lines (one record a "
                         f"line), and it is not valid JSON either{where}.", f"fix the JSON there, then {fix}") from None
    if isinstance(document, list):
        raise InputError(f"{path} is a JSON array, not JSON Lines (one record a line).", fix)
    lines = stripped.count("\n") + 1
    if isinstance(document, dict) and lines > 1:
        raise InputError(f"{path} is one JSON object over {lines} lines, not JSON Lines (one record a line).", fix)


def read_jsonl(path: str | os.PathLike) -> tuple[list[dict], list[Problem]]:
    """Valid records and (line number, reason) for every blank, malformed or invalid line."""
    rows, problems = json_lines(path, read_text(path))
    records: list[dict] = []
    for line_no, obj in rows:
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
