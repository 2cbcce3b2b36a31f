"""One entry to the uploaders: the hub table (publish/hubs.py) names each hub's uploader module, which picks the
hub's token and client, sends a staged folder, verifies it and returns."""

from __future__ import annotations

from pathlib import Path

from .hubs import uploader
from .remote import UploadResult
from .secrets import Secret


def upload_model(hub: str, folder: Path, files: list, repo: str, *, private: bool, message: str,
                 work_dir: Path) -> UploadResult:
    """Upload a staged adapter/merged-model folder to `hub`; the uploader verifies the remote afterwards."""
    return uploader(hub).upload_model(folder, files, repo, private=private, message=message, work_dir=work_dir)


def upload_demo(hub: str, folder: Path, files: list, repo: str, *, private: bool, message: str,
                variables: dict[str, str], secrets: dict[str, Secret], hardware: str | None, work_dir: Path,
                git_remote: str | None = None) -> UploadResult:
    """Upload a demo bundle as a Space (hf) or Studio (modelscope), or push it to a git remote (openxlab)."""
    return uploader(hub).upload_demo(folder, files, repo, private=private, message=message, variables=variables,
                                     secrets=secrets, hardware=hardware, work_dir=work_dir, git_remote=git_remote)
