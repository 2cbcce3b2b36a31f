"""Fuzz every data reader and checker, and the adapter / model / run folder readers, with hypothesis: random bytes,
random text in random encodings, random JSON values and shapes as .jsonl/.json, random CSV, random spreadsheet cells
and damaged .xlsx files. The property: a valid result, or our error type with one line that names the file -- never
another exception -- and nothing written when it fails.

CI runs a fixed, reproducible budget (60 examples a test); `make fuzz` (FUZZ_EXAMPLES=2000) explores further.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openpyxl
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from app.errors import AppError, ModelSourceError
from app.models import ModelRequest, resolve
from app.models import read_folder_json as read_json
from finetune.data.check import check_file
from finetune.data.convert import convert_to_files
from finetune.data.formats import load_jsonl, read_jsonl
from finetune.errors import InputError
from finetune.manifest import Manifest
from publish.card import training_summary
from publish.errors import SourceError

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES") or 60), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
fuzz = settings(settings.get_profile("fuzz" if os.environ.get("FUZZ_EXAMPLES") else "ci"))

# ----------------------------------------------------------------------------------------------- strategies

ENCODINGS = ["utf-8", "utf-8-sig", "gb18030", "gbk", "big5", "shift_jis", "utf-16", "utf-16-le", "utf-16-be",
             "utf-32", "latin-1", "cp1252"]
PREFIXES = [b"", b"PK\x03\x04", b"\xef\xbb\xbf", b"\xff\xfe", b"\xd0\xcf\x11\xe0", b"\x1f\x8b", b"[", b"{", b"\n"]
encoding = st.just("utf-8") | st.sampled_from(ENCODINGS)  # half UTF-8, so that many files are readable
KEYS = ["conversation", "input", "output", "system", "instruction", "history", "conversations", "from", "value",
        "messages", "role", "content", "text", "type", "问题", "答案", "model_path", "base_model",
        "base_model_name_or_path", "stages", "inputs", "spec", "versions", "prompt", "loss", "iter"]

key = st.sampled_from(KEYS) | st.text(max_size=6)
scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(key, inner, max_size=5),
                          max_leaves=25)
text = st.text(min_size=1, max_size=30)
textish = st.one_of(text, text, text, scalar, json_value)  # mostly text, so that many records are valid
turn = (st.fixed_dictionaries({"input": textish, "output": textish}, optional={"system": textish})
        | st.fixed_dictionaries({}, optional={"input": textish, "output": textish, "system": textish}))
RECORD_KINDS = [  # one per format `data convert` detects, each sometimes slightly wrong
    st.fixed_dictionaries({"conversation": st.lists(turn, min_size=1, max_size=3) | json_value}),
    st.fixed_dictionaries({"instruction": textish, "output": textish},
                          optional={"input": textish, "system": textish,
                                    "history": json_value | st.lists(st.lists(textish, min_size=2, max_size=2))}),
    st.fixed_dictionaries({"conversations": st.lists(
        st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "system", "user", "tool"]) | json_value,
                               "value": textish}) | json_value, max_size=5)}, optional={"system": textish}),
    st.fixed_dictionaries({"messages": st.lists(
        st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool"]) | json_value,
                               "content": textish | st.lists(st.fixed_dictionaries({"type": st.just("text"),
                                                                                     "text": textish}))})
        | json_value, max_size=5)}),
    st.fixed_dictionaries({"问题": textish, "答案": textish}),
    json_value,
]
record = st.one_of(RECORD_KINDS)


@st.composite
def json_file(draw) -> tuple[str, bytes]:
    """(suffix, content): records as JSON Lines (some pretty-printed, blank or broken lines) or as one .json value."""
    records = draw(st.lists(draw(st.sampled_from(RECORD_KINDS)), max_size=6))  # one format a file
    if draw(st.booleans()):
        records.insert(draw(st.integers(0, len(records))), draw(record))
    if draw(st.booleans()):
        indent = draw(st.sampled_from([None, None, None, 2]))
        lines = [json.dumps(r, ensure_ascii=draw(st.booleans()), indent=indent) for r in records]
        lines += draw(st.lists(st.sampled_from(["", "{", "]", '{"conversation": ', "\x00"]), max_size=2))
        content = draw(st.sampled_from(["\n", "\r\n"])).join(draw(st.permutations(lines)))
        suffix = ".jsonl"
    else:
        document = records if draw(st.booleans()) else (records[0] if records else draw(json_value))
        content = json.dumps(document, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 2])))
        suffix = ".json"
    return suffix, content.encode(draw(encoding), errors="replace")


def header(names: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly the question and answer columns (in any order, with others), sometimes anything."""
    named = st.permutations(["问题", "答案", "note"]).map(list)
    return named | named | st.lists(st.sampled_from(["问题", "答案", ""]) | names, max_size=4)


@st.composite
def csv_file(draw) -> bytes:
    rows = draw(st.lists(st.lists(text | st.sampled_from(["", " ", '"', "\n", "\r", ",", "\u2028"]), max_size=4),
                         max_size=6))
    header_row = draw(header(st.text(max_size=5)))
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header_row, *rows])
    return buffer.getvalue().encode(draw(encoding), errors="replace")


cell = st.one_of(st.none(), st.booleans(), st.integers(-10**15, 10**15), st.floats(allow_nan=False,
                 allow_infinity=False), st.text(max_size=20).map(lambda s: ILLEGAL_CHARACTERS_RE.sub("", s)),
                 st.datetimes(min_value=datetime.datetime(1901, 1, 1)))


@st.composite
def xlsx_file(draw) -> bytes:
    """A real workbook from random cells, then maybe damaged: cut short, or some bytes overwritten."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(draw(header(cell)))
    for row in draw(st.lists(st.lists(cell, max_size=4), max_size=5)):
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    raw = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "overwrite"]))
    at = int(draw(st.floats(0, 1, exclude_max=True)) * len(raw))  # not integers(0, len): the saved size varies
    if damage == "truncate":
        raw = raw[:at]
    elif damage == "overwrite":
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=16)) + raw[at + 16:]
    return raw


random_bytes = st.builds(lambda prefix, body: prefix + body, st.sampled_from(PREFIXES), st.binary(max_size=2000))
random_text = st.builds(lambda chars, name: chars.encode(name, errors="replace"), st.text(max_size=300),
                        st.sampled_from(ENCODINGS))

# ----------------------------------------------------------------------------------------------- properties


@contextmanager
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


def assert_one_line(error: AppError, path: Path) -> None:
    line = error.one_line()
    assert "\n" not in line and path.name in line, line
    for _, reason in getattr(error, "problems", []):  # DataError: the bad lines printed above the error line
        assert "\n" not in reason, reason


def convert_and_check(path: Path, **options) -> None:
    """Convert `path`; either every written file is valid XTuner JSONL, or an error naming it and nothing written."""
    out = path.parent / "out"
    try:
        _, written = convert_to_files(path, out / "data.jsonl", **options)
    except InputError as error:
        event(f"refused: {type(error).__name__}")  # `--hypothesis-show-statistics` shows how often each happens
        assert_one_line(error, path)
        assert not out.exists() or not any(out.iterdir())
        return
    event("converted")
    for output, count in written.items():
        assert len(load_jsonl(output)) == count


def write(directory: Path, name: str, content: bytes) -> Path:
    path = directory / name
    path.write_bytes(content)
    return path


@fuzz
@given(content=random_bytes | random_text, suffix=st.sampled_from([".jsonl", ".json", ".csv", ".xlsx"]))
def test_convert_random_bytes_and_text(content, suffix):
    with folder() as tmp:
        convert_and_check(write(tmp, f"input{suffix}", content))


@fuzz
@given(file=json_file(), system=st.none() | st.text(max_size=10), split=st.none() | st.just(0.5))
def test_convert_random_json_shapes(file, system, split):
    suffix, content = file
    with folder() as tmp:
        convert_and_check(write(tmp, f"data{suffix}", content), system=system, split=split)


@fuzz
@given(content=csv_file(), columns=st.booleans())
def test_convert_random_csv(content, columns):
    with folder() as tmp:
        options = {"input_col": "问题", "output_col": "答案"} if columns else {}
        convert_and_check(write(tmp, "table.csv", content), **options)


@fuzz
@given(content=xlsx_file(), pretrain=st.booleans())
def test_convert_random_and_damaged_spreadsheets(content, pretrain):
    with folder() as tmp:
        options = {"pretrain": True, "text_col": "答案"} if pretrain else {"input_col": "问题", "output_col": "答案"}
        convert_and_check(write(tmp, "sheet.xlsx", content), **options)


xtuner_record = st.fixed_dictionaries({"conversation": st.lists(st.fixed_dictionaries(
    {"input": st.text(max_size=30), "output": text}), min_size=1, max_size=3)})
xtuner_jsonl = st.lists(xtuner_record | xtuner_record | RECORD_KINDS[0], min_size=1, max_size=5).map(
    lambda records: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode())


@fuzz
@given(content=random_bytes | random_text | json_file().map(lambda file: file[1]) | xtuner_jsonl | xtuner_jsonl)
def test_read_jsonl_and_check(content, embedded_model):
    with folder() as tmp:
        path = write(tmp, "train.jsonl", content)
        try:
            records, problems = read_jsonl(path)
            report = check_file(path, model=embedded_model)
        except InputError as error:
            event(f"refused: {type(error).__name__}")
            assert_one_line(error, path)
            return
        event("checked")
        assert not problems and report.records == len(records) > 0


model_name = textish | st.sampled_from(["owner/base", "~nobody-here/base", "~/base", "/", ".", "", "a\x00b"])
folder_json = st.fixed_dictionaries({}, optional={"model_path": model_name, "base_model": model_name,
                                                  "base_model_name_or_path": model_name, "chat_template": textish})


@fuzz
@given(content=random_bytes | random_text | json_file().map(lambda file: file[1])
       | st.builds(json.dumps, folder_json).map(str.encode),
       name=st.sampled_from(["adapter_config.json", "finetune_meta.json", "tokenizer_config.json"]))
def test_adapter_folder_files(content, name):
    with folder() as tmp:
        adapter = tmp / "adapter"
        adapter.mkdir()
        (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "owner/base"}')
        path = write(adapter, name, content)
        try:
            data = read_json(path)
        except ModelSourceError as error:
            assert_one_line(error, path)
        else:
            assert isinstance(data, dict)
        try:
            resolve(ModelRequest(adapter=str(adapter)))
        except ModelSourceError as error:
            event("refused")
            assert "\n" not in error.one_line()
        else:
            event("resolved")


@fuzz
@given(content=random_bytes | random_text | st.builds(json.dumps, json_value).map(str.encode))
def test_run_manifest(content):
    with folder() as tmp:
        path = write(tmp, "run.json", content)
        try:
            manifest = Manifest(tmp)
        except InputError as error:
            assert_one_line(error, path)
        else:
            assert isinstance(manifest.data["stages"], dict) and isinstance(manifest.data["inputs"], dict)
            manifest.is_done("data", "key")


@fuzz
@given(run_json=random_bytes | st.builds(json.dumps, json_value).map(str.encode),
       samples=random_bytes | st.builds(json.dumps, json_value).map(str.encode),
       metrics=random_bytes | random_text)
def test_model_card_reads_any_run_folder(run_json, samples, metrics):
    with folder() as tmp:
        write(tmp, "run.json", run_json)
        write(tmp, "samples.json", samples)
        (tmp / "work_dir").mkdir()
        write(tmp / "work_dir", "metrics.jsonl", metrics)
        try:
            training_summary(tmp)
        except SourceError as error:
            assert "\n" not in error.one_line() and ("run.json" in error.message or "samples.json" in error.message)
