"""Fetch an OpenXLab model repo (git + git-lfs, as the platform's own tutorial does) into a local folder.

OpenXLab has no download API the app could use; its model repos are git repos with the weights in LFS. A clone is
kept under ./models (the working directory of an OpenXLab app) and updated on the next start."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .errors import ModelSourceError

ENDPOINT_ENV = "OPENXLAB_GIT_ENDPOINT"
DEFAULT_ENDPOINT = "https://code.openxlab.org.cn"
MODELS_DIR_ENV = "OPENXLAB_MODELS_DIR"


def _git(*args: str, cwd: Path | None = None) -> None:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_LFS_SKIP_SMUDGE": "1", "LC_ALL": "C"}
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise ModelSourceError(f"git {args[0]} failed: {lines[-1] if lines else 'no output'}",
                               "check the repo id (OWNER/NAME, public) and the network; "
                               f"{ENDPOINT_ENV} sets the git host (default {DEFAULT_ENDPOINT}).")


def download(repo: str, notice) -> str:
    """A local folder holding the OpenXLab repo `repo` (OWNER/NAME) with its LFS files, cloned or updated."""
    if shutil.which("git") is None or subprocess.run(["git", "lfs", "version"], capture_output=True).returncode:
        raise ModelSourceError("MODEL_SOURCE=openxlab needs git and git-lfs.",
                               "add a packages.txt with the lines `git` and `git-lfs` (apt), or install both.")
    endpoint = (os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")
    folder = Path(os.environ.get(MODELS_DIR_ENV, "models")).expanduser() / repo.replace("/", "--")
    if (folder / ".git").is_dir():
        notice(f"Updating {repo} from OpenXLab ...")
        _git("pull", "--ff-only", "-q", cwd=folder)
    else:
        notice(f"Downloading {repo} from OpenXLab ...")
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _git("clone", "-q", "--depth", "1", f"{endpoint}/{repo}.git", str(partial))
        partial.rename(folder)
    _git("lfs", "install", "--local", cwd=folder)
    _git("lfs", "pull", cwd=folder)
    return str(folder)
