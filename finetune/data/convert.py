"""Turn spreadsheets and common chat datasets (alpaca, sharegpt, messages) into XTuner's format."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from app import files

from ..errors import DataError, InputError
from ..fsutil import atomic_path
from .formats import Problem, Row, json_lines, raise_problems, read_text, require_file, validate_record

FORMATS = ("auto", "xtuner", "alpaca", "sharegpt", "messages", "columns", "pretrain")
TABLE_SUFFIXES = (".xlsx", ".xlsm", ".csv")
JSON_SUFFIXES = (".json", ".jsonl")
ROLES = {"system": "system", "human": "user", "user": "user"} | dict.fromkeys(
    ("gpt", "assistant", "chatgpt", "bard", "bing", "model"), "assistant")  # ShareGPT speakers


@dataclass
class Conversion:
    records: list[dict]
    fmt: str
    columns: dict[str, str] = field(default_factory=dict)  # role -> column name, for columns/pretrain
    unit: str = "line"


# ---------------------------------------------------------------- reading


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _read_xlsx(path: Path, sheet: str | None) -> list[Row]:
    import openpyxl

    raw = files.read_bytes(path, InputError, "spreadsheet")
    if not raw.startswith(b"PK\x03\x04"):  # an .xlsx is a zip archive
        raise InputError(f"{path} is not an .xlsx spreadsheet: it is {_what_bytes(raw)}.",
                         "save it from Excel or LibreOffice as an Excel workbook (.xlsx), or as a UTF-8 CSV file "
                         "and pass the .csv.")
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(raw), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises whatever its zip and XML parsers raise on a damaged file
        raise _damaged_spreadsheet(path, exc) from exc
    try:
        if sheet is not None and sheet not in workbook.sheetnames:
            raise InputError(f"{path} has no sheet '{sheet}'.", f"use one of: {', '.join(workbook.sheetnames)}.")
        worksheet = workbook[sheet] if sheet is not None else workbook.worksheets[0]
        rows = [list(row) for row in worksheet.iter_rows(values_only=True)]
    except InputError:
        raise
    except Exception as exc:  # cells are parsed lazily, so damage can also show up here
        raise _damaged_spreadsheet(path, exc) from exc
    finally:
        workbook.close()
    return _table_rows(path, rows)


def _what_bytes(raw: bytes) -> str:
    if not raw:
        return "empty"
    kind = files.binary_kind(raw)
    if kind:
        return kind
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        if not files.guess_encoding(raw):
            return "binary data"
    return "a text file (if it is CSV, rename it to .csv)"


def _damaged_spreadsheet(path: Path, exc: Exception) -> InputError:
    reason = (str(exc).strip().splitlines() or [""])[0][:200]
    return InputError(f"{path} is a damaged or unsupported spreadsheet ({type(exc).__name__}"
                      f"{': ' + reason if reason else ''}).",
                      "open it in Excel or LibreOffice and save it again as .xlsx, or export the sheet as UTF-8 CSV "
                      "and pass the .csv.")


def _read_csv(path: Path) -> list[Row]:
    text = read_text(path, "CSV file", fallbacks=("gb18030",))  # GB18030: CSVs saved by Excel on Chinese Windows
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise InputError(f"{path} is not CSV we can read: {exc} (line {reader.line_num}).",
                         f"pass the data as .xlsx or .jsonl instead (a CSV cell holds at most "
                         f"{csv.field_size_limit():,} characters).") from None
    return _table_rows(path, rows)


def _table_rows(path: Path, rows: list[list]) -> list[Row]:
    if not rows or not any(_cell(v).strip() for v in rows[0]):
        raise InputError(f"{path} has no header row.", "put column names (e.g. 问题, 答案) in the first row.")
    header = [_cell(v).strip() for v in rows[0]]
    out: list[Row] = []
    for number, values in enumerate(rows[1:], start=2):  # row 1 is the header, as in Excel
        cells = [_cell(v) for v in values]
        if not any(c.strip() for c in cells):
            continue
        out.append((number, {h: (cells[i] if i < len(cells) else "") for i, h in enumerate(header) if h}))
    return out


def _read_json(path: Path) -> tuple[list[Row], list[Problem]]:
    text = read_text(path, "input file")
    if path.suffix.lower() == ".jsonl":
        return json_lines(path, text)
    try:
        data = files.parse_json(text, path, InputError)
    except InputError:
        if not _is_json_lines(text):
            raise
        raise InputError(f"{path} holds one JSON value a line (JSON Lines), not one JSON document.",
                         f"rename it to {path.with_suffix('.jsonl').name} and run again.") from None
    items = data if isinstance(data, list) else [data]
    return list(enumerate(items, start=1)), []


def _is_json_lines(text: str) -> bool:
    lines = [line for line in text.split("\n") if line.strip()][:2]
    try:
        return len(lines) == 2 and all(isinstance(json.loads(line), dict) for line in lines)
    except (ValueError, RecursionError):
        return False


def load_rows(path: str | os.PathLike, sheet: str | None = None) -> tuple[list[Row], list[Problem], str]:
    """Rows of a .xlsx/.csv/.json/.jsonl file with their user-visible numbers, read problems, and the unit."""
    path = require_file(path, "input file")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return _read_xlsx(path, sheet), [], "row"
    if suffix == ".csv":
        return _read_csv(path), [], "row"
    if suffix in JSON_SUFFIXES:
        rows, problems = _read_json(path)
        return rows, problems, "item" if suffix == ".json" else "line"
    raise InputError(f"Cannot read {path.name}: unknown file type '{suffix}'.",
                     f"use one of: {', '.join(TABLE_SUFFIXES + JSON_SUFFIXES)} (save .xls as .xlsx).")


# ---------------------------------------------------------------- converting


def detect_format(keys: set[str]) -> str:
    if "conversation" in keys:
        return "xtuner"
    if "conversations" in keys:
        return "sharegpt"
    if "messages" in keys:
        return "messages"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    return "columns"


def _text(value: object) -> str:
    if isinstance(value, list):  # OpenAI content parts
        return "".join(p["text"] for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _turns_from_pairs(pairs: list[tuple[str, str]], system: str) -> dict:
    turns = [{"input": q, "output": a} for q, a in pairs]
    if system:
        turns[0] = {"system": system, **turns[0]}
    return {"conversation": turns}


def from_alpaca(row: dict) -> dict:
    instruction, extra = _text(row.get("instruction")).strip(), _text(row.get("input")).strip()
    prompt = f"{instruction}\n{extra}" if extra else instruction
    history = row.get("history") or []
    if not isinstance(history, list) or not all(isinstance(h, list | tuple) and len(h) == 2 for h in history):
        raise ValueError("'history' must be a list of [question, answer] pairs")
    pairs = [(_text(q), _text(a)) for q, a in history] + [(prompt, _text(row.get("output")))]
    return _turns_from_pairs(pairs, _text(row.get("system")))


def _pair_up(messages: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], str]:
    """(user, assistant) pairs from (role, text) messages, where role is system/user/assistant."""
    system, pairs, pending = "", [], None
    for index, (role, text) in enumerate(messages, start=1):
        if role == "system":
            if index != 1:
                raise ValueError(f"message {index}: a system message is only allowed first")
            system = text
        elif role == "user":
            if pending is not None:
                raise ValueError(f"message {index}: two user messages in a row")
            pending = text
        elif pending is None:
            raise ValueError(f"message {index}: assistant message without a user message before it")
        else:
            pairs.append((pending, text))
            pending = None
    if pending is not None:
        raise ValueError("the last user message has no answer")
    if not pairs:
        raise ValueError("no user/assistant pair")
    return pairs, system


def from_sharegpt(row: dict) -> dict:
    turns = row.get("conversations")
    if not isinstance(turns, list):
        raise ValueError("'conversations' must be a list")
    messages = []
    for index, turn in enumerate(turns, start=1):
        speaker = str(turn.get("from", "")).lower() if isinstance(turn, dict) else ""
        role = ROLES.get(speaker)
        if role is None:
            raise ValueError(f"message {index}: unknown speaker {speaker!r} (expected human/gpt/system)")
        messages.append((role, _text(turn.get("value"))))
    if row.get("system") and not (messages and messages[0][0] == "system"):
        messages.insert(0, ("system", _text(row["system"])))
    pairs, system = _pair_up(messages)
    return _turns_from_pairs(pairs, system)


def from_messages(row: dict) -> dict:
    turns = row.get("messages")
    if not isinstance(turns, list):
        raise ValueError("'messages' must be a list")
    messages = []
    for index, turn in enumerate(turns, start=1):
        role = turn.get("role") if isinstance(turn, dict) else None
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"message {index}: unsupported role {role!r} (expected system/user/assistant)")
        messages.append((role, _text(turn.get("content"))))
    pairs, system = _pair_up(messages)
    return _turns_from_pairs(pairs, system)


def _require_columns(path: Path, rows: list[Row], wanted: dict[str, str | None]) -> None:
    present: dict[str, None] = {}
    for _, row in rows:
        if isinstance(row, dict):
            present.update(dict.fromkeys(row))
    missing = [f"'{name}' ({role})" for role, name in wanted.items() if name and name not in present]
    if missing:
        raise InputError(
            f"{path.name} has no column {', '.join(missing)}.",
            f"columns that exist: {', '.join(present) or '(none)'}; pass one of them.",
        )


def _columns_hint(path: Path, rows: list[Row]) -> InputError:
    keys = list(dict.fromkeys(k for _, r in rows if isinstance(r, dict) for k in r))
    return InputError(
        f"Cannot tell which columns of {path.name} hold the question and the answer.",
        f"pass --input-col and --output-col (columns that exist: {', '.join(keys) or '(none)'}), "
        "or --pretrain --text-col for plain text.",
    )


def convert(
    path: str | os.PathLike,
    *,
    fmt: str = "auto",
    input_col: str | None = None,
    output_col: str | None = None,
    system_col: str | None = None,
    system: str | None = None,
    pretrain: bool = False,
    text_col: str | None = None,
    sheet: str | None = None,
) -> Conversion:
    """Read and convert `path`; DataError listing every bad row, InputError for wrong columns."""
    if fmt not in FORMATS:
        raise InputError(f"Unknown format '{fmt}'.", f"use one of: {', '.join(FORMATS)}.")
    path = Path(path)
    rows, problems, unit = load_rows(path, sheet)
    if pretrain or fmt == "pretrain":
        fmt, text_col = "pretrain", text_col or "text"
    elif fmt == "auto":
        if input_col or output_col:
            fmt = "columns"
        else:
            keys = {k for _, r in rows[:50] if isinstance(r, dict) for k in r}
            fmt = detect_format(keys)
    columns: dict[str, str] = {}
    if fmt == "columns":
        if not (input_col and output_col):
            raise _columns_hint(path, rows)
        columns = {"input": input_col, "output": output_col} | ({"system": system_col} if system_col else {})
    elif fmt == "pretrain":
        columns = {"text": text_col}
    if columns:
        _require_columns(path, rows, columns)

    records: list[dict] = []
    for number, row in rows:
        try:
            if not isinstance(row, dict):
                raise ValueError(f"not a JSON object (got {type(row).__name__})")
            record = _convert_row(row, fmt, columns, system)
        except ValueError as exc:
            problems.append((number, str(exc)))
            continue
        reasons = validate_record(record)
        problems.extend((number, reason) for reason in reasons)
        if not reasons:
            records.append(record)
    raise_problems(path, problems, unit, writing=True)
    if not records:
        raise DataError(f"{path} holds no records.", "add at least one row with a question and an answer.")
    return Conversion(records, fmt, columns, unit)


def _convert_row(row: dict, fmt: str, columns: dict[str, str], system: str | None) -> dict:
    if fmt == "pretrain":
        text = _text(row.get(columns["text"]))
        if not text.strip():
            raise ValueError(f"empty '{columns['text']}' text")
        return {"conversation": [{"input": "", "output": text}]}
    if fmt == "columns":
        question = _text(row.get(columns["input"])).strip()
        if not question:
            raise ValueError(f"empty '{columns['input']}' cell")
        answer = _text(row.get(columns["output"])).strip()
        if not answer:
            raise ValueError(f"empty '{columns['output']}' cell")
        row_system = _text(row.get(columns["system"])).strip() if "system" in columns else ""
        return _turns_from_pairs([(question, answer)], row_system or system or "")
    if fmt == "xtuner":
        record = row
    else:
        converter = {"alpaca": from_alpaca, "sharegpt": from_sharegpt, "messages": from_messages}[fmt]
        record = converter(row)
    turns = record.get("conversation")
    if system and isinstance(turns, list) and turns and isinstance(turns[0], dict):
        first = turns[0]
        if not first.get("system") and isinstance(first.get("input"), str) and first["input"].strip():
            record = {**record, "conversation": [{"system": system, **first}, *turns[1:]]}
    return record


def convert_file(path: str | os.PathLike, **options) -> list[dict]:
    """Records in XTuner's format from a .xlsx/.csv/.json/.jsonl file (see `convert` for options)."""
    return convert(path, **options).records


# ---------------------------------------------------------------- splitting and writing


def split_records(records: list[dict], ratio: float, seed: int = 42,
                  source: str | os.PathLike = "the input") -> tuple[list[dict], list[dict]]:
    """Seeded shuffle, then the first `ratio` part is train and the rest test (both non-empty)."""
    if not 0 < ratio < 1:
        raise InputError(f"--split must be between 0 and 1 (got {ratio}).", "pass e.g. --split 0.9 for 90% train.")
    if len(records) < 2:
        raise InputError(f"Cannot split the {len(records)} record(s) of {source} into train and test.",
                         "add more rows or drop --split.")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_train = min(max(round(len(records) * ratio), 1), len(records) - 1)
    return [records[i] for i in order[:n_train]], [records[i] for i in order[n_train:]]


def write_files(outputs: dict[Path, list[dict]]) -> None:
    """Write several JSONL files; each appears only if all were written."""
    with contextlib.ExitStack() as stack:
        for path, records in outputs.items():
            tmp = stack.enter_context(atomic_path(path))
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def split_paths(out: str | os.PathLike | None, train_out: str | None, test_out: str | None) -> tuple[Path, Path]:
    if train_out and test_out:
        return Path(train_out), Path(test_out)
    if not out:
        raise InputError("Nowhere to write the split.", "pass --out data/train.jsonl (or --train-out and --test-out).")
    out = Path(out)
    return (Path(train_out) if train_out else out.with_name(f"{out.stem}_train.jsonl"),
            Path(test_out) if test_out else out.with_name(f"{out.stem}_test.jsonl"))


def convert_to_files(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    split: float | None = None,
    seed: int = 42,
    train_out: str | None = None,
    test_out: str | None = None,
    **options,
) -> tuple[Conversion, dict[Path, int]]:
    """Convert `path` and write OUT (or OUT_train/OUT_test with `split`); returns the written counts."""
    if split is None and not out:
        raise InputError("No output file given.", "pass --out data/train.jsonl.")
    conversion = convert(path, **options)
    if split is None:
        outputs = {Path(out): conversion.records}
    else:
        train, test = split_records(conversion.records, split, seed, source=path)
        train_path, test_path = split_paths(out, train_out, test_out)
        outputs = {train_path: train, test_path: test}
    write_files(outputs)
    return conversion, {p: len(r) for p, r in outputs.items()}


def handle(args: argparse.Namespace) -> int:
    conversion, written = convert_to_files(
        args.input, args.out, split=args.split, seed=args.seed, train_out=args.train_out, test_out=args.test_out,
        fmt=args.format, input_col=args.input_col, output_col=args.output_col, system_col=args.system_col,
        system=args.system, pretrain=args.pretrain, text_col=args.text_col, sheet=args.sheet,
    )
    how = ", ".join(f"{role}={name}" for role, name in conversion.columns.items())
    print(f"Read {len(conversion.records)} records from {args.input} (format: {conversion.fmt}"
          f"{'; ' + how if how else ''})")
    for path, count in written.items():
        print(f"  wrote {count} records to {path}")
    return 0


def register(subparsers, formatter_class) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert xlsx/csv/json/jsonl (alpaca, sharegpt, messages, columns) to XTuner's format",
        description="Convert a spreadsheet or a chat dataset into XTuner's JSONL format, optionally split into "
        "train and test. The format is detected from the keys: conversation (XTuner), conversations (ShareGPT), "
        "messages (OpenAI), instruction+output (Alpaca); tables need --input-col/--output-col. "
        "Nothing is written if any row is bad; every bad row is listed.",
        epilog="examples:\n"
        "  python -m finetune data convert examples/medqa/medqa_sample.xlsx --input-col 问题 --output-col 答案 \\\n"
        "      --out data/medqa.jsonl --split 0.9      # writes data/medqa_train.jsonl + data/medqa_test.jsonl\n"
        "  python -m finetune data convert alpaca_data.json --out data/alpaca.jsonl\n"
        "  python -m finetune data convert chats.jsonl --format sharegpt --system 'You are a helpful assistant.' \\\n"
        "      --out data/chats.jsonl\n"
        "  python -m finetune data convert notes.csv --pretrain --text-col text --out data/pretrain.jsonl",
        formatter_class=formatter_class,
    )
    parser.add_argument("input", help="a .xlsx, .csv, .json or .jsonl file")
    parser.add_argument("--out", help="output JSONL (with --split: the stem of OUT_train.jsonl/OUT_test.jsonl)")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="input format")
    parser.add_argument("--sheet", help="spreadsheet sheet name; the first sheet if omitted")
    parser.add_argument("--input-col", help="column holding the question")
    parser.add_argument("--output-col", help="column holding the answer")
    parser.add_argument("--system-col", help="column holding a per-row system prompt")
    parser.add_argument("--system", help="system prompt for records that have none")
    parser.add_argument("--pretrain", action="store_true", help="plain text for incremental pretraining")
    parser.add_argument("--text-col", help="column/key holding the text with --pretrain; 'text' if omitted")
    parser.add_argument("--split", type=float, metavar="RATIO", help="train fraction, e.g. 0.9")
    parser.add_argument("--seed", type=int, default=42, help="shuffle seed for --split")
    parser.add_argument("--train-out", help="train file with --split; OUT_train.jsonl if omitted")
    parser.add_argument("--test-out", help="test file with --split; OUT_test.jsonl if omitted")
    parser.set_defaults(func=handle)
