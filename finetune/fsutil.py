"""Atomic file and directory writes: write to a temporary sibling, then rename.

Each temporary sibling is named `.NAME.finetune-tmp.<pid>.<random>` after the process that writes it. A process
killed outright (SIGKILL, out of memory, power loss) cannot delete its own, so the next atomic write to the same
target removes the ones whose process is gone (never a live process's, never another file) and says how much space
that freed; a kill between the two renames of `atomic_dir`'s swap leaves `.NAME.old`, which the next write puts back
(or deletes, when NAME is there)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import psutil

from app.console import say

from .errors import EnvironmentProblem

TMP_MARK = "finetune-tmp"
Notice = Callable[[str], None]


def _disk_full(path: Path, exc: OSError) -> EnvironmentProblem:
    return EnvironmentProblem(
        f"No space left on the device while writing {path}.",
        "free disk space (or point the output to another disk) and run the command again; nothing was written.",
    )


def human_bytes(size: int) -> str:
    """512_000_000 -> '512 MB' (decimal units, as `df -H` prints them)."""
    value, unit = float(size), "bytes"
    for bigger in ("KB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{value:.0f} {unit}" if unit == "bytes" or value >= 10 else f"{value:.1f} {unit}"


def tmp_prefix(path: Path) -> str:
    """The start of this process's temporary siblings of `path` (a random part follows)."""
    return f".{path.name}.{TMP_MARK}.{os.getpid()}."


def _process_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # e.g. AccessDenied: it exists
        return True


def _disk_usage(entry: Path) -> int:
    if not entry.is_dir() or entry.is_symlink():
        return entry.lstat().st_size
    total = 0
    for folder, _dirs, names in os.walk(entry):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _remove(entry: Path) -> bool:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            entry.unlink()
    return not os.path.lexists(entry)


def old_path(path: Path) -> Path:
    """Where atomic_dir moves the previous version of `path` for the moment between its two renames."""
    return path.with_name(f".{path.name}.old")


def _discard_old(path: Path) -> bool:
    """Delete `.NAME.old`, renamed first to a temporary name of this process: a kill while deleting it then leaves
    litter that the next run removes, never a half-deleted folder under the name that clean_leftovers restores."""
    doomed = path.with_name(f"{tmp_prefix(path)}old")
    _remove(doomed)
    os.replace(old_path(path), doomed)
    return _remove(doomed)


def clean_leftovers(path: str | os.PathLike, notice: Notice | None = None, *, folder: bool = True) -> int:
    """Tidy what interrupted atomic writes of `path` left beside it; return the bytes freed.

    Removes `.NAME.finetune-tmp.<pid>.*` whose process is gone. For a `folder` (atomic_dir's target) also deletes
    `.NAME.old` when NAME exists, and puts it back as NAME when NAME is missing (a kill between atomic_dir's two
    renames). Each action is one line to `notice` (default: stderr)."""
    path = Path(path)
    notice = notice or say
    freed = 0
    old = old_path(path)
    if folder and old.is_dir() and not os.path.lexists(path):
        os.replace(old, path)
        notice(f"restored {path} from {old.name}, where an interrupted run had moved it while replacing it")
    elif folder and old.is_dir():
        size = _disk_usage(old)
        if _discard_old(path):
            freed += size
            notice(f"removed the previous version of {path.name} that an interrupted run had kept aside "
                   f"({human_bytes(size)} freed)")
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{TMP_MARK}\.(\d+)\.[a-z0-9_]+")
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return freed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if not match:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _process_alive(pid):
            continue
        leftover = Path(entry.path)
        kind = "folder" if leftover.is_dir() and not leftover.is_symlink() else "file"
        size = _disk_usage(leftover)
        if _remove(leftover):
            freed += size
            notice(f"removed a leftover temporary {kind} from an interrupted run ({human_bytes(size)} freed): "
                   f"{leftover}")
    return freed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, notice: Notice | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds.

    Leftovers of earlier interrupted writes of `path` are removed first (see clean_leftovers; `notice` gets the
    line saying so)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path, notice, folder=False)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(path), dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise _disk_full(path, exc) from exc
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def scratch_path(path: str | os.PathLike, notice: Notice | None = None) -> Iterator[Path]:
    """Like atomic_path, for an intermediate file that is never kept: the temporary is removed when the block ends
    (and, after a kill, by the next clean_leftovers of `path`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path, notice, folder=False)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(path), dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: object) -> Path:
    return write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, notice: Notice | None = None) -> Iterator[Path]:
    """Yield an empty temporary directory next to `path`; it replaces `path` only on success.

    Leftovers of earlier interrupted writes of `path` are removed (or, for `.NAME.old`, put back) first; see
    clean_leftovers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path, notice)
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(path), dir=path.parent))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        if path.exists():
            old = old_path(path)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)  # a kill from here to the next line leaves only `old`: clean_leftovers restores it
            os.replace(tmp, path)
            _discard_old(path)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise _disk_full(path, exc) from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dir_size(path: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
