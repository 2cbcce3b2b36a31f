"""Atomic writes: a failure (including a full disk) leaves neither a half-written file nor a temp file."""

import errno

import pytest

from finetune.errors import EnvironmentProblem
from finetune.fsutil import atomic_dir, atomic_path, write_jsonl, write_text


def test_write_text_replaces_atomically(tmp_path):
    target = tmp_path / "a" / "out.txt"
    write_text(target, "one")
    write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_failure_inside_block_keeps_old_file(tmp_path):
    target = tmp_path / "out.jsonl"
    write_jsonl(target, [{"a": 1}])
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert target.read_text() == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_disk_full_is_a_clear_error_and_leaves_nothing(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(EnvironmentProblem, match="No space left") as failure:
        with atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert "free disk space" in failure.value.fix
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_whole_folder_only_on_success(tmp_path):
    target = tmp_path / "merged"
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "half.bin").write_text("x")
            raise ValueError("interrupted")
    assert [p.name for p in target.iterdir()] == ["config.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]
