"""Read the text and JSON files people hand us (datasets, adapter and model folders) so that each way one can be
wrong -- missing, unreadable, binary, not UTF-8, not JSON, the wrong JSON shape -- is one typed error naming the
file, the line and column where there is one, and the fix.

`app/` runs on its own as a hosted demo, so this lives here; `finetune/` and `publish/` use it with their own error
classes, as they use `app.errors.AppError` as their base.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

from .errors import AppError

ErrorType = type[AppError]

# First bytes of formats that are often saved under a text name by mistake, and what to tell the user.
SIGNATURES = {
    b"PK\x03\x04": "a zip archive (an .xlsx/.docx file or a zipped folder)",
    b"\xd0\xcf\x11\xe0": "an old Office file (.xls/.doc) or a password-protected spreadsheet",
    b"\x1f\x8b": "a gzip archive",
    b"%PDF": "a PDF document",
}
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
ENCODING_NAMES = {"GB18030": "GBK/GB18030 (Chinese Windows)"}
SAMPLE = 4096  # bytes looked at to tell binary data and UTF-16 from text


def expand_path(name: str | os.PathLike) -> Path:
    """`~/x` under the home folder; `~someone/x` for a user this machine does not know stays as it is (a path that
    does not exist) instead of raising RuntimeError."""
    try:
        return Path(name).expanduser()
    except RuntimeError:
        return Path(name)


def read_bytes(path: str | os.PathLike, error: ErrorType = AppError, what: str = "file") -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"The {what} {path} does not exist.",
                    "check the path (relative paths start from the current folder).") from None
    except IsADirectoryError:
        raise error(f"{path} is a folder, not a {what}.", "pass the file itself.") from None
    except OSError as exc:
        raise error(f"Cannot read the {what} {path}: {exc.strerror or exc}.",
                    "check that the file is readable by you (permissions, a disk that is still mounted).") from None


def position(raw: bytes, offset: int) -> tuple[int, int]:
    """(line, column), both from 1, of a byte offset."""
    line_start = raw.rfind(b"\n", 0, offset) + 1
    return raw.count(b"\n", 0, offset) + 1, offset - line_start + 1


def binary_kind(raw: bytes) -> str | None:
    """What a non-text file is ('a zip archive ...', 'binary data'), or None when it may be text."""
    for signature, kind in SIGNATURES.items():
        if raw.startswith(signature):
            return kind
    if b"\x00" in raw and utf16_name(raw) is None:
        return "binary data"
    return None


def utf16_name(raw: bytes) -> str | None:
    """'UTF-16' when the bytes look like UTF-16 text: a byte-order mark, or NULs on one side of many byte pairs."""
    if raw.startswith(UTF16_BOMS):
        return "UTF-16"
    sample = raw[:SAMPLE]
    even, odd = sample[0::2].count(b"\x00"), sample[1::2].count(b"\x00")
    if min(even, odd) == 0 and 0 < max(even, odd) * 5 >= len(sample):  # ASCII characters are half NUL in UTF-16
        return "UTF-16LE" if odd else "UTF-16BE"
    return None


def guess_encoding(raw: bytes) -> str | None:
    """A cheap guess at the encoding of text that is not UTF-8: UTF-16 or GB18030 (GBK), else None."""
    utf16 = utf16_name(raw)
    if utf16:
        return utf16
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError:
        return None
    return "GB18030" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else None


def decode(raw: bytes, path: str | os.PathLike, error: ErrorType = AppError, what: str = "file",
           fallbacks: tuple[str, ...] = (), fix: str = "") -> str:
    """UTF-8 text (a byte-order mark is dropped); then each of `fallbacks`; else the error says what the bytes are
    (`fix` replaces the advice for a binary file)."""
    path = Path(path)
    kind = binary_kind(raw)
    if kind:
        raise error(f"{path} is {kind}, not a UTF-8 text {what}.", fix or f"pass the {what} itself, saved as UTF-8 "
                    "text.")
    where = ""
    if utf16_name(raw) is None:  # ASCII in UTF-16 is also valid UTF-8, with a NUL after each character
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            for encoding in fallbacks:
                try:
                    return raw.decode(encoding)
                except UnicodeDecodeError:
                    continue
            line, column = position(raw, exc.start)
            where = f": byte 0x{raw[exc.start]:02x} at line {line}, column {column} does not decode"
    encoding = guess_encoding(raw)
    converted = shlex.quote(str(path.with_name(f"{path.stem}.utf8{path.suffix}")))
    raise error(
        f"{path} is not UTF-8 text{where}" + (f"; it looks like {ENCODING_NAMES.get(encoding, encoding)}."
                                              if encoding else "."),
        f"convert it to UTF-8 and use the converted file, e.g. `iconv -f {encoding or 'ENCODING'} -t UTF-8 "
        f"{shlex.quote(str(path))} > {converted}`" + ("" if encoding else " (`file -i` names the encoding)")
        + ", or save it as UTF-8 in your editor.",
    )


def read_text(path: str | os.PathLike, error: ErrorType = AppError, what: str = "file",
              fallbacks: tuple[str, ...] = (), fix: str = "") -> str:
    return decode(read_bytes(path, error, what), path, error, what, fallbacks, fix)


def parse_json(text: str, path: str | os.PathLike, error: ErrorType = AppError, fix: str = "") -> Any:
    """The JSON value in `text`; a syntax error names the file, line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
                    fix or "fix the JSON there (a missing comma, quote or bracket is the usual cause).") from None
    except (ValueError, RecursionError) as exc:  # an integer too long to convert, nesting deeper than Python's stack
        raise error(f"{path} is not JSON we can read: {exc}.", fix or "simplify the JSON value.") from None


def read_json(path: str | os.PathLike, error: ErrorType = AppError, what: str = "file", fix: str = "") -> Any:
    return parse_json(read_text(path, error, what, fix=fix), path, error, fix)


def read_json_object(path: str | os.PathLike, error: ErrorType = AppError, what: str = "file",
                     fix: str = "") -> dict[str, Any]:
    """A JSON object file (config.json, adapter_config.json, run.json ...); anything else is `error`."""
    data = read_json(path, error, what, fix)
    if not isinstance(data, dict):
        raise error(f"{path} holds a JSON {json_type(data)}, not a JSON object ({{...}}).",
                    fix or "pass the file the tool wrote, or restore it.")
    return data


def json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")
