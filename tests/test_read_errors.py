"""Files that cannot be read as what they claim to be -- binary, not UTF-8, the wrong container, the wrong JSON shape,
invalid JSON in a model or run folder -- give one line that names the file and the fix, exit 2, and write nothing.
Each case goes through the real command line (docs/hardening.md lists them)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import openpyxl
import pytest

from app import cli as app_cli
from finetune import cli as finetune_cli
from publish import cli as publish_cli

RECORDS = [{"conversation": [{"input": "你是谁？", "output": "我是小薇。"}]},
           {"conversation": [{"input": "Who are you?", "output": "I am Xiaowei."}]}]
JSONL = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS)
CSV = "问题,答案\n你是谁？,我是小薇。\n"


def one_error_line(err: str, path: Path) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and " Fix: " in lines[0] and str(path) in lines[0], lines[0]
    return lines[0]


def xlsx_bytes() -> bytes:
    workbook = openpyxl.Workbook()
    workbook.active.append(["问题", "答案"])
    workbook.active.append(["你是谁？", "我是小薇。"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def damaged_sheet_xml() -> bytes:
    source = zipfile.ZipFile(io.BytesIO(xlsx_bytes()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        for item in source.infolist():
            data = source.read(item.filename)
            out.writestr(item, data[: len(data) // 2] if item.filename.endswith("sheet1.xml") else data)
    return buffer.getvalue()


def zip_of_text() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        out.writestr("notes.txt", "hello")
    return buffer.getvalue()


PRETTY_ARRAY = json.dumps(RECORDS, ensure_ascii=False, indent=2)
CHECK_CASES = {  # file content -> what the one line must say
    "gbk": (JSONL.encode("gbk"), ["not UTF-8 text", "line 1, column", "GBK", "iconv -f GB18030 -t UTF-8"]),
    "utf16": (JSONL.encode("utf-16"), ["not UTF-8 text", "UTF-16", "iconv -f UTF-16 -t UTF-8"]),
    "utf16le-no-bom": (JSONL.encode("utf-16-le"), ["UTF-16LE"]),
    "binary": (bytes(range(256)) * 8, ["binary data"]),
    "xlsx-renamed": (xlsx_bytes(), ["zip archive"]),
    "array": (PRETTY_ARRAY.encode(), ["is a JSON array, not JSON Lines", "data convert", ".json"]),
    "compact-array": (json.dumps(RECORDS).encode(), ["is a JSON array"]),
    "pretty-object": (json.dumps(RECORDS[0], indent=2).encode(), ["one JSON object over 8 lines"]),
    "broken-array": (b'\n\n[\n  {"conversation": []},\n  {"conversation": }\n]\n',
                     ["one JSON array over several lines", "not valid JSON either", "at line 5, column 20"]),
}


@pytest.mark.parametrize("case", CHECK_CASES)
def test_data_check_unreadable_files(case, tmp_path, data_cli, capsys):
    content, expected = CHECK_CASES[case]
    path = tmp_path / f"{case}.jsonl"
    path.write_bytes(content)
    assert data_cli(["data", "check", str(path)]) == 2
    line = one_error_line(capsys.readouterr().err, path)
    assert all(text in line for text in expected), line


def test_data_check_missing_file_and_folder(tmp_path, data_cli, capsys):
    assert data_cli(["data", "check", str(tmp_path / "nope.jsonl")]) == 2
    assert "does not exist" in one_error_line(capsys.readouterr().err, tmp_path / "nope.jsonl")
    assert data_cli(["data", "check", str(tmp_path)]) == 2
    assert "is a folder, not a data file" in one_error_line(capsys.readouterr().err, tmp_path)


CONVERT_CASES = {  # name -> (content, what the one line must say)
    "text.xlsx": (CSV.encode(), ["not an .xlsx spreadsheet", "a text file", "rename it to .csv"]),
    "truncated.xlsx": (xlsx_bytes()[:1000], ["damaged or unsupported spreadsheet", "BadZipFile"]),
    "other-zip.xlsx": (zip_of_text(), ["damaged or unsupported spreadsheet", "[Content_Types].xml"]),
    "damaged-xml.xlsx": (damaged_sheet_xml(), ["damaged or unsupported spreadsheet", "ParseError"]),
    "old-office.xlsx": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512), ["old Office file (.xls/.doc)"]),
    "empty.xlsx": (b"", ["it is empty"]),
    "utf16.csv": (CSV.encode("utf-16"), ["UTF-16", "iconv"]),
    "binary.csv": (bytes(range(256)) * 8, ["binary data"]),
    "long-cell.csv": (("问题,答案\nq," + "x" * 140_000 + "\n").encode(),
                      ["field larger than field limit (131072) (line 2)", "at most 131,072 characters"]),
    "gbk.json": (json.dumps(RECORDS, ensure_ascii=False).encode("gbk"), ["GBK", "iconv"]),
    "invalid.json": (b'[{"instruction": "q", "output": "a"},\n {"instruction": }]',
                     ["not valid JSON: Expecting value at line 2, column 18"]),
    "lines.json": (JSONL.encode(), ["JSON Lines", "rename it to lines.jsonl"]),
    "array.jsonl": (PRETTY_ARRAY.encode(), ["is a JSON array"]),
}


@pytest.mark.parametrize("name", CONVERT_CASES)
def test_data_convert_unreadable_files_write_nothing(name, tmp_path, data_cli, capsys):
    content, expected = CONVERT_CASES[name]
    path = tmp_path / name
    path.write_bytes(content)
    out = tmp_path / "out" / "train.jsonl"
    code = data_cli(["data", "convert", str(path), "--input-col", "问题", "--output-col", "答案", "--out", str(out),
                     "--split", "0.5"])
    assert code == 2
    line = one_error_line(capsys.readouterr().err, path)
    assert all(text in line for text in expected), line
    assert not (tmp_path / "out").exists()


def test_gbk_csv_from_excel_still_converts(tmp_path, data_cli):
    path = tmp_path / "excel.csv"
    path.write_bytes(CSV.encode("gbk"))
    out = tmp_path / "train.jsonl"
    assert data_cli(["data", "convert", str(path), "--input-col", "问题", "--output-col", "答案", "--out", str(out)]) \
        == 0
    assert json.loads(out.read_text(encoding="utf-8"))["conversation"][0]["output"] == "我是小薇。"


def test_line_separators_inside_json_strings_stay_in_one_record(tmp_path, data_cli):
    record = {"conversation": [{"input": "a\u2028b\u0085c", "output": "d\u2029e"}]}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert data_cli(["data", "convert", str(path), "--out", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == record


def test_lone_surrogate_is_a_bad_line_and_nothing_is_written(tmp_path, data_cli, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n" + '{"conversation": [{"input": "q", "output": "\\ud800"}]}\n',
                    encoding="utf-8")
    assert data_cli(["data", "convert", str(path), "--out", str(tmp_path / "out.jsonl")]) == 2
    assert "line 2: holds a lone surrogate" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


BROKEN_JSON = {  # adapter_config.json content -> what the one line must say
    "invalid": (b'{"base_model_name_or_path": "x",\n "r": }', "not valid JSON: Expecting value at line 2, column 7"),
    "gbk": ('{"base_model_name_or_path": "模型"}'.encode("gbk"), "GBK"),
    "binary": (bytes(range(256)), "binary data"),
    "array": (b'["base_model_name_or_path"]', "holds a JSON array, not a JSON object"),
}


@pytest.mark.parametrize("case", BROKEN_JSON)
def test_app_cli_broken_adapter_config(case, tmp_path):
    content, expected = BROKEN_JSON[case]
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_bytes(content)
    err = io.StringIO()
    assert app_cli.main(["--adapter", str(adapter), "--prompt", "hi"], error_stream=err) == 2
    assert expected in one_error_line(err.getvalue(), adapter / "adapter_config.json")


@pytest.mark.parametrize("argv", [["--adapter", "~nobody-here/adapter"], ["~nobody-here/model"]])
def test_app_cli_path_of_an_unknown_user_is_not_found(argv):
    err = io.StringIO()
    assert app_cli.main([*argv, "--prompt", "hi"], error_stream=err) == 2
    assert "~nobody-here/" in one_error_line(err.getvalue(), Path(argv[-1]))


@pytest.mark.parametrize("case", BROKEN_JSON)
def test_publish_broken_adapter_config_stages_nothing(case, tmp_path, capsys):
    content, expected = BROKEN_JSON[case]
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_bytes(content)
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    out = tmp_path / "staged"
    code = publish_cli.main(["adapter", str(adapter), "--to", "hf", "--repo", "you/x", "--dry-run", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.replace(f"Staging the adapter from {adapter} ...\n", "")
    assert expected in one_error_line(err, adapter / "adapter_config.json")
    assert not out.exists()


@pytest.mark.parametrize(("content", "expected"), [(b'{"stages": [', "not valid JSON"),
                                                   (b'["a"]', "holds a JSON array"),
                                                   (b'{"stages": []}', "'stages' is not a JSON object")])
def test_run_with_broken_run_json_stops_before_any_stage(content, expected, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_bytes(content)
    assert finetune_cli.main(["run", "--name", "小薇", "--out", str(run)]) == 2
    line = one_error_line(capsys.readouterr().err, run / "run.json")
    assert expected in line and "delete it to start the run" in line
    assert [p.name for p in run.iterdir()] == ["run.json"] and (run / "run.json").read_bytes() == content


@pytest.mark.parametrize("case", BROKEN_JSON)
@pytest.mark.parametrize("name", ["adapter_config.json", "finetune_meta.json"])
def test_merge_broken_adapter_files_write_nothing(case, name, tmp_path, capsys):
    content, expected = BROKEN_JSON[case]
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "base", "r": 8}')
    (adapter / name).write_bytes(content)
    out = tmp_path / "merged"
    assert finetune_cli.main(["merge", str(adapter), "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err, adapter / name)
    assert expected in line
    assert "finetune convert" in line or case in ("gbk", "binary")  # those two get the iconv / "pass the file" fix
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


@pytest.mark.parametrize(("content", "expected"), [(b"x = (\n", "is not valid Python"),
                                                   (bytes(range(256)) * 4, "binary data"),
                                                   ("SYSTEM = '你是小薇的智能助手'\n".encode("gbk"), "GBK")])
def test_convert_unreadable_config_writes_nothing(content, expected, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    with zipfile.ZipFile(work / "iter_1.pth", "w") as checkpoint:  # torch.save's container, so a complete one
        checkpoint.writestr("data.pkl", b"x")
    config = tmp_path / "cfg.py"
    config.write_bytes(content)
    out = tmp_path / "adapter"
    assert finetune_cli.main(["convert", str(work), "--config", str(config), "--out", str(out)]) == 2
    assert expected in one_error_line(capsys.readouterr().err, config)
    assert not out.exists()


@pytest.mark.parametrize("case", ["binary", "gbk", "xlsx-renamed"])
def test_config_unreadable_data_file_writes_nothing(case, tmp_path, capsys):
    content, expected = CHECK_CASES[case]
    data = tmp_path / "d.jsonl"
    data.write_bytes(content)
    out = tmp_path / "cfg.py"
    assert finetune_cli.main(["config", "--data", str(data), "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err, data)
    assert all(part in line for part in expected[:1]), line
    assert not out.exists()
