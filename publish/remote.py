"""What every uploader returns and how the result is checked against the staging folder."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import RemoteMismatch


@dataclass(frozen=True)
class RemoteFile:
    path: str  # '/'-separated, relative to the repo root
    size: int
    sha256: str | None = None  # when the hub tells it (LFS files on HF, every file on ModelScope)


@dataclass
class UploadResult:
    url: str  # the repo page for people
    commits: int  # 0 when nothing changed
    sent: list[str] = field(default_factory=list)  # paths whose content was sent this time
    remote: dict[str, RemoteFile] = field(default_factory=dict)  # what the hub holds afterwards


def human_size(size: int) -> str:
    """1536 -> '1.5 KiB' (bytes as a whole number, larger units with one decimal, GiB at most)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def verify(staged_files, remote: dict[str, RemoteFile]) -> None:
    """Every staged file is on the remote with the same size (and sha256 when known); raise RemoteMismatch if not.

    `staged_files` are `stage.StagedFile`s (path, size, sha256). Extra remote files are allowed (an older card's
    picture, the hub's own .gitattributes)."""
    problems = []
    for item in staged_files:
        there = remote.get(item.path)
        if there is None:
            problems.append(f"{item.path} is missing")
        elif there.size != item.size:
            problems.append(f"{item.path} is {there.size:,} B there, {item.size:,} B here")
        elif there.sha256 and there.sha256 != item.sha256:
            problems.append(f"{item.path} has different content there")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise RemoteMismatch(f"After the upload the remote repo does not match the staging folder: {shown}.",
                             "run the same command again: it sends only what is missing or different.")
