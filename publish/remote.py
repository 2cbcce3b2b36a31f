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


def verify(staged_files, remote: dict[str, RemoteFile], *, ignore: tuple[str, ...] = (".gitattributes",)) -> None:
    """Every staged file is on the remote with the same size (and sha256 when known); raise RemoteMismatch if not.

    `staged_files` are `stage.StagedFile`s (path, size, sha256). Extra remote files are allowed (an older card's
    picture, the hub's own .gitattributes) unless they shadow nothing we sent."""
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
