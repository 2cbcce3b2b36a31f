from __future__ import annotations

import json
from pathlib import Path

import openpyxl
import pytest

from finetune.data.convert import convert, convert_file, convert_to_files, split_records
from finetune.data.formats import load_jsonl, read_jsonl, validate_record
from finetune.errors import DataError, InputError
from finetune.fsutil import write_jsonl

REPO = Path(__file__).resolve().parents[1]



def write_xlsx(path: Path, rows) -> Path:
    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    workbook.save(path)
    return path


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ([], "not a JSON object"),
        ({}, "missing 'conversation'"),
        ({"conversation": []}, "non-empty list"),
        ({"conversation": ["hi"]}, "turn 1 is not an object"),
        ({"conversation": [{"input": 1, "output": "a"}]}, "'input' must be a string"),
        ({"conversation": [{"input": "q", "output": 3}]}, "'output' must be a string"),
        ({"conversation": [{"input": "q"}]}, "missing 'output'"),
        ({"conversation": [{"input": "q", "output": "  "}]}, "empty 'output'"),
        ({"conversation": [{"input": "q", "output": "a"}, {"system": "s", "input": "q", "output": "a"}]},
         "turn 2: 'system' is only allowed in the first turn"),
    ],
)
def test_validate_record_reasons(obj, reason):
    assert any(reason in r for r in validate_record(obj))


def test_validate_record_accepts_all_kinds():
    assert validate_record({"conversation": [{"system": "s", "input": "q", "output": "a", "extra": 1}]}) == []
    assert validate_record({"conversation": [{"input": "", "output": "text"}]}) == []
    assert validate_record({"conversation": [{"input": "q", "output": "a"}, {"input": "q2", "output": "a2"}]}) == []


def test_read_jsonl_reports_every_bad_line(tmp_path):
    path = tmp_path / "d.jsonl"
    good = json.dumps({"conversation": [{"input": "q", "output": "a"}]})
    path.write_text(f"{good}\n\n{{broken\n{good}\n" + json.dumps({"conversation": [{"input": "q", "output": ""}]})
                    + "\n", encoding="utf-8")
    records, problems = read_jsonl(path)
    assert len(records) == 2
    assert [n for n, _ in problems] == [2, 3, 5]
    assert "blank line" in problems[0][1] and "malformed JSON" in problems[1][1] and "empty" in problems[2][1]
    with pytest.raises(DataError) as info:
        load_jsonl(path)
    assert "3 bad lines" in info.value.message and str(path) in info.value.message
    assert info.value.fix


def test_missing_file_is_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist") as info:
        read_jsonl(tmp_path / "nope.jsonl")
    assert info.value.fix
    with pytest.raises(InputError, match="does not exist"):
        convert_file(tmp_path / "nope.xlsx")


# ---------------------------------------------------------------- chat formats


def test_alpaca_with_input_system_and_history(tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps([
        {"instruction": "Translate", "input": "你好", "output": "Hello", "system": "S"},
        {"instruction": "Add", "input": "", "output": "3", "history": [["1+1?", "2"]]},
    ], ensure_ascii=False), encoding="utf-8")
    conversion = convert(path)
    assert conversion.fmt == "alpaca"
    first, second = conversion.records
    assert first == {"conversation": [{"system": "S", "input": "Translate\n你好", "output": "Hello"}]}
    assert second["conversation"] == [{"input": "1+1?", "output": "2"}, {"input": "Add", "output": "3"}]


def test_sharegpt_multi_turn(tmp_path):
    path = write_jsonl(tmp_path / "sg.jsonl", [{"conversations": [
        {"from": "system", "value": "S"}, {"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"},
        {"from": "human", "value": "q2"}, {"from": "gpt", "value": "a2"}]}])
    assert convert_file(path) == [{"conversation": [
        {"system": "S", "input": "q1", "output": "a1"}, {"input": "q2", "output": "a2"}]}]


def test_messages_multi_turn_and_constant_system(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [
        {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"},
                      {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"},
                      {"role": "assistant", "content": "a2"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    ])
    records = convert_file(path, system="DEFAULT")
    assert records[0]["conversation"] == [{"system": "S", "input": "q1", "output": "a1"},
                                          {"input": "q2", "output": "a2"}]
    assert records[1]["conversation"] == [{"system": "DEFAULT", "input": "q", "output": "a"}]


def test_messages_bad_rows_are_all_reported(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"}]},
        {"messages": [{"role": "tool", "content": "x"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
    ])
    with pytest.raises(DataError) as info:
        convert_file(path)
    assert [n for n, _ in info.value.problems] == [2, 3, 4]
    assert "no answer" in info.value.problems[0][1] and "unsupported role" in info.value.problems[1][1]


def test_native_passthrough_and_malformed_lines(tmp_path):
    good = {"conversation": [{"input": "q", "output": "a"}]}
    path = write_jsonl(tmp_path / "x.jsonl", [good, good])
    assert convert_file(path) == [good, good]
    path.write_text(json.dumps(good) + "\n{oops\n\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        convert_file(path)
    assert [n for n, _ in info.value.problems] == [2, 3]


# ---------------------------------------------------------------- tables


def test_xlsx_round_trip_and_empty_cells(tmp_path):
    path = write_xlsx(tmp_path / "qa.xlsx", [["问题", "答案", "科室"], ["头疼怎么办？", "多休息。", "内科"],
                                            [None, None, None], ["发烧38度？", 42, "内科"]])
    conversion = convert(path, input_col="问题", output_col="答案", system="医生")
    assert conversion.fmt == "columns" and conversion.unit == "row"
    assert conversion.records == [
        {"conversation": [{"system": "医生", "input": "头疼怎么办？", "output": "多休息。"}]},
        {"conversation": [{"system": "医生", "input": "发烧38度？", "output": "42"}]},
    ]
    bad = write_xlsx(tmp_path / "bad.xlsx", [["问题", "答案"], ["q", "a"], ["q2", None], [None, "a3"]])
    with pytest.raises(DataError) as info:
        convert_file(bad, input_col="问题", output_col="答案")
    assert info.value.problems == [(3, "empty '答案' cell"), (4, "empty '问题' cell")]  # header is row 1


def test_wrong_column_lists_existing_columns(tmp_path):
    path = write_xlsx(tmp_path / "qa.xlsx", [["问题", "答案"], ["q", "a"]])
    with pytest.raises(InputError) as info:
        convert_file(path, input_col="question", output_col="答案")
    assert "'question'" in info.value.message and "问题, 答案" in info.value.fix
    with pytest.raises(InputError) as info:
        convert_file(path)  # a table needs the columns named
    assert "--input-col" in info.value.fix and "问题, 答案" in info.value.fix


def test_sheet_selection(tmp_path):
    workbook = openpyxl.Workbook()
    workbook.active.append(["x"])
    second = workbook.create_sheet("qa")
    second.append(["q", "a"])
    second.append(["hi", "hello"])
    workbook.save(tmp_path / "w.xlsx")
    assert convert_file(tmp_path / "w.xlsx", sheet="qa", input_col="q", output_col="a")[0]["conversation"][0][
        "output"] == "hello"
    with pytest.raises(InputError, match="no sheet"):
        convert_file(tmp_path / "w.xlsx", sheet="nope", input_col="q", output_col="a")


def test_csv_system_col_and_pretrain(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("q,a,sys,text\nhi,hello,S1,some text\nyo,hey,,more text\n", encoding="utf-8")
    records = convert_file(path, input_col="q", output_col="a", system_col="sys", system="S0")
    assert [r["conversation"][0]["system"] for r in records] == ["S1", "S0"]
    pretrain = convert_file(path, pretrain=True, text_col="text")
    assert pretrain[0] == {"conversation": [{"input": "", "output": "some text"}]}


def test_unknown_suffix(tmp_path):
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(InputError, match="unknown file type"):
        convert_file(tmp_path / "d.txt")


# ---------------------------------------------------------------- split and write


def test_split_sizes_disjoint_reproducible():
    records = [{"conversation": [{"input": f"q{i}", "output": "a"}]} for i in range(50)]
    train, test = split_records(records, 0.9, seed=3)
    assert (len(train), len(test)) == (45, 5)
    assert {json.dumps(r) for r in train}.isdisjoint(json.dumps(r) for r in test)
    assert sorted(map(json.dumps, train + test)) == sorted(map(json.dumps, records))
    assert split_records(records, 0.9, seed=3) == (train, test)
    assert split_records(records, 0.9, seed=4) != (train, test)
    assert [len(part) for part in split_records(records[:2], 0.99)] == [1, 1]
    with pytest.raises(InputError):
        split_records(records, 1.0)
    with pytest.raises(InputError):
        split_records(records[:1], 0.5)


def test_convert_to_files_split_and_nothing_written_on_error(tmp_path):
    path = write_xlsx(tmp_path / "qa.xlsx", [["问题", "答案"]] + [[f"q{i}", f"a{i}"] for i in range(10)])
    _, written = convert_to_files(path, tmp_path / "out" / "qa.jsonl", split=0.8, input_col="问题", output_col="答案")
    assert written == {tmp_path / "out" / "qa_train.jsonl": 8, tmp_path / "out" / "qa_test.jsonl": 2}
    assert len(load_jsonl(tmp_path / "out" / "qa_train.jsonl")) == 8
    bad = write_xlsx(tmp_path / "bad.xlsx", [["问题", "答案"], ["q", ""]])
    with pytest.raises(DataError):
        convert_to_files(bad, tmp_path / "bad_out.jsonl", input_col="问题", output_col="答案")
    assert not any(p.name.startswith(("bad_out", ".bad_out")) for p in tmp_path.iterdir())


def test_medqa_example_converts():
    records = convert_file(REPO / "examples" / "medqa" / "medqa_sample.xlsx", input_col="问题", output_col="答案")
    assert len(records) >= 15 and all(validate_record(r) == [] for r in records)


def test_cli_convert_split(tmp_path, data_cli, capsys):
    src = write_jsonl(tmp_path / "a.jsonl", [{"instruction": f"i{i}", "output": f"o{i}"} for i in range(10)])
    assert data_cli(["data", "convert", str(src), "--out", str(tmp_path / "t.jsonl"), "--split", "0.7"]) == 0
    printed = capsys.readouterr().out
    assert "format: alpaca" in printed and "wrote 7 records" in printed and "wrote 3 records" in printed
    assert (tmp_path / "t_train.jsonl").is_file() and (tmp_path / "t_test.jsonl").is_file()


def test_cli_convert_bad_line_exits_non_zero(tmp_path, data_cli, capsys):
    src = tmp_path / "a.jsonl"
    src.write_text('{"instruction": "i", "output": "o"}\n{"instruction": "i", "output": "o"\n', encoding="utf-8")
    assert data_cli(["data", "convert", str(src), "--out", str(tmp_path / "t.jsonl")]) != 0
    err = capsys.readouterr().err
    assert "line 2: malformed JSON" in err and "error:" in err
    assert not (tmp_path / "t.jsonl").exists()
