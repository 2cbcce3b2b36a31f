"""A process killed outright (SIGKILL) during an atomic write leaves no lasting litter: real child processes start a
write, are killed at seeded random points, and the next write of the same target removes the dead process's
temporary sibling (saying how much it freed), puts a half-swapped folder back, and leaves live processes' temporaries
and every other file alone."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from finetune.fsutil import atomic_dir, clean_leftovers, human_bytes

ROOT = Path(__file__).resolve().parents[1]
PARTS, PART_SIZE = 20, 64 * 1024

# The child writes the new version slowly (PARTS pieces, 10 ms apart) so that the parent can kill it mid-write.
# Through an audit hook (the real code runs unchanged up to the kill), `kill-at-swap` makes it SIGKILL itself between
# atomic_dir's two renames, `kill-after-swap` right after them (before `.NAME.old` is renamed for deletion),
# `kill-while-deleting` while it deletes the previous version.
CHILD = f"""
import os, signal, sys, time
from pathlib import Path
from finetune.fsutil import atomic_dir, atomic_path

target, kind = Path(sys.argv[1]), sys.argv[2]
swapped = []
def hook(event, args):
    if event == "os.rename" and swapped and "kill-after-swap" in sys.argv:
        os.kill(os.getpid(), signal.SIGKILL)
    if event == "os.rename" and Path(args[1]) == target:  # os.replace(tmp, target), after target -> .old
        if "kill-at-swap" in sys.argv:
            os.kill(os.getpid(), signal.SIGKILL)
        swapped.append(True)
    elif event == "shutil.rmtree" and swapped and "kill-while-deleting" in sys.argv:
        os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(hook)
if "hold" in sys.argv:
    with atomic_dir(target) as tmp:
        (tmp / "part").write_bytes(b"h" * {PART_SIZE})
        sys.stdin.read()  # the parent kills us while we hold the temporary folder
elif kind == "dir":
    with atomic_dir(target) as tmp:
        for i in range({PARTS}):
            (tmp / f"part-{{i:02d}}.bin").write_bytes(b"n" * {PART_SIZE})
            time.sleep(0.01)
        (tmp / "VERSION").write_text("new")
else:
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        for _ in range({PARTS}):
            fh.write(b"n" * {PART_SIZE})
            fh.flush()
            time.sleep(0.01)
"""


def start_child(target: Path, kind: str, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(target), kind, *flags], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def temps_of(target: Path, pid: int | None = None) -> list[Path]:
    mark = f".{target.name}.finetune-tmp.{pid if pid is not None else ''}"
    return sorted(p for p in target.parent.iterdir() if p.name.startswith(mark))


def size_on_disk(entry: Path) -> int:
    if entry.is_file():
        return entry.stat().st_size
    return sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the child did not get there in time"
        time.sleep(0.002)


def wait_for_temp(target: Path, pid: int, at_least: int) -> Path:
    """The temporary sibling `pid` writes for `target`, once it holds `at_least` bytes."""
    wait_for(lambda: temps_of(target, pid) and size_on_disk(temps_of(target, pid)[0]) >= at_least)
    return temps_of(target, pid)[0]


def write_old_version(target: Path, kind: str) -> None:
    if kind == "dir":
        with atomic_dir(target) as tmp:
            (tmp / "VERSION").write_text("old")
            (tmp / "weights.bin").write_bytes(b"o" * 1000)
    else:
        target.write_bytes(b"old")


def version(target: Path, kind: str) -> str | None:
    """'old' or 'new' when `target` holds one complete version, None when it is absent; fails on anything else."""
    if not target.exists():
        return None
    if kind == "file":
        data = target.read_bytes()
        assert data in (b"old", b"n" * PARTS * PART_SIZE), f"half-written file: {len(data)} bytes"
        return "old" if data == b"old" else "new"
    names = sorted(p.name for p in target.iterdir())
    if (target / "VERSION").read_text() == "old":
        assert names == ["VERSION", "weights.bin"]
        return "old"
    assert names == ["VERSION"] + [f"part-{i:02d}.bin" for i in range(PARTS)]
    assert all((target / n).stat().st_size == PART_SIZE for n in names[1:])
    return "new"


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_kill_mid_write_then_the_next_run_cleans_up_and_completes(tmp_path, kind):
    rng = random.Random(14)
    unrelated = ["notes.txt", ".model.1234.tmp", ".other.finetune-tmp.999999.abc"]  # never ours to remove
    for name in unrelated:
        (tmp_path / name).write_text("keep")
    for iteration in range(4):
        target = tmp_path / f"model-{iteration}"
        if iteration % 2:
            write_old_version(target, kind)
        before = version(target, kind)
        parts_before_kill = rng.randrange(1, PARTS // 2)  # at least 100 ms of writing left
        child = start_child(target, kind)
        wait_for_temp(target, child.pid, parts_before_kill * PART_SIZE)
        time.sleep(rng.uniform(0, 0.01))
        child.kill()
        child.wait()
        assert version(target, kind) == before  # the old complete version, or nothing: never half of one
        [leftover] = temps_of(target, child.pid)
        size = size_on_disk(leftover)

        rerun = subprocess.run([sys.executable, "-c", CHILD, str(target), kind], cwd=ROOT, capture_output=True,
                               text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
        what = "folder" if kind == "dir" else "file"
        assert rerun.stderr == (f"removed a leftover temporary {what} from an interrupted run ({human_bytes(size)} "
                                f"freed): {leftover}\n")
        assert version(target, kind) == "new"
        assert temps_of(target) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(unrelated + [f"model-{i}" for i in range(4)])


def test_kill_between_the_two_renames_brings_the_old_folder_back(tmp_path):
    target = tmp_path / "merged"
    write_old_version(target, "dir")
    child = start_child(target, "dir", "kill-at-swap")
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert not target.exists() and (tmp_path / ".merged.old").is_dir()  # the state such a kill leaves
    [leftover] = temps_of(target, child.pid)
    size = size_on_disk(leftover)

    lines: list[str] = []
    assert clean_leftovers(target, notice=lines.append) == size
    assert version(target, "dir") == "old"  # the complete previous output is back
    assert lines == [f"restored {target} from .merged.old, where an interrupted run had moved it while replacing it",
                     f"removed a leftover temporary folder from an interrupted run ({human_bytes(size)} freed): "
                     f"{leftover}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]

    # killed right after the swap: the new version stands, the next write deletes `.old`
    child = start_child(target, "dir", "kill-after-swap")
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert version(target, "dir") == "new" and version(tmp_path / ".merged.old", "dir") == "old"
    lines.clear()
    assert clean_leftovers(target, notice=lines.append) == 1003
    assert lines == ["removed the previous version of merged that an interrupted run had kept aside (1.0 KB freed)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]

    # killed while deleting the previous version: what is left carries the dead process's temporary name
    child = start_child(target, "dir", "kill-while-deleting")
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert version(target, "dir") == "new"
    [leftover] = temps_of(target, child.pid)
    assert leftover.name.endswith(".old") and version(leftover, "dir") == "new"
    size = size_on_disk(leftover)
    lines.clear()
    with atomic_dir(target, notice=lines.append) as tmp:
        (tmp / "VERSION").write_text("old")
        (tmp / "weights.bin").write_bytes(b"o" * 1000)
    assert lines == [f"removed a leftover temporary folder from an interrupted run ({human_bytes(size)} freed): "
                     f"{leftover}"]
    assert version(target, "dir") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


def test_a_live_process_temporary_folder_is_left_alone(tmp_path):
    target = tmp_path / "merged"
    child = start_child(target, "dir", "hold")
    held = wait_for_temp(target, child.pid, PART_SIZE)
    lines: list[str] = []
    assert clean_leftovers(target, notice=lines.append) == 0
    with atomic_dir(target, notice=lines.append) as tmp:  # another writer of the same target, alive meanwhile
        (tmp / "VERSION").write_text("new")
    assert lines == [] and held.is_dir()

    child.kill()  # not reaped yet: a zombie holds the pid, and still counts as gone
    wait_for(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE)
    assert clean_leftovers(target, notice=lines.append) == PART_SIZE
    assert lines == [f"removed a leftover temporary folder from an interrupted run (66 KB freed): {held}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]
    child.wait()


def test_merge_killed_while_saving_leaves_nothing_the_rerun_does_not_clean(tmp_path, lora_adapter):
    """End to end: `python -m finetune merge` SIGKILLed while it writes the shards, then run again."""
    out = tmp_path / "merged"
    command = [sys.executable, "-m", "finetune", "merge", str(lora_adapter), "--out", str(out)]
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def saving() -> bool:  # a shard file has bytes in the temporary folder
        temps = temps_of(out, child.pid)
        return bool(temps) and any(p.stat().st_size for p in temps[0].glob("*.safetensors"))

    wait_for(saving, timeout=120)
    child.kill()
    child.wait()
    assert not out.exists()
    [leftover] = temps_of(out, child.pid)
    size = size_on_disk(leftover)

    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert (f"removed a leftover temporary folder from an interrupted run ({human_bytes(size)} freed): {leftover}"
            in rerun.stderr.splitlines())
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]
