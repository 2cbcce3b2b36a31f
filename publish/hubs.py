"""The three hubs: names, web URLs and endpoint variables. Nothing here touches the network."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import InputError

HUB_NAMES = ("hf", "modelscope", "openxlab")
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
OPENXLAB_GIT_ENV = "OPENXLAB_GIT_ENDPOINT"  # our own variable: the OpenXLab git host (mirrors, tests)


@dataclass(frozen=True)
class Hub:
    name: str  # hf | modelscope | openxlab
    label: str  # for people
    base_field: str  # which Preset field holds the base model's id on this hub


HUBS: dict[str, Hub] = {
    "hf": Hub("hf", "Hugging Face", "hf_id"),
    "modelscope": Hub("modelscope", "ModelScope", "modelscope_id"),
    # OpenXLab has no mirror of the bases our presets use; cards point at the Hugging Face ids.
    "openxlab": Hub("openxlab", "OpenXLab", "hf_id"),
}


def get_hub(name: str) -> Hub:
    key = name.strip().lower()
    aliases = {"huggingface": "hf", "hugging-face": "hf", "ms": "modelscope", "xlab": "openxlab"}
    key = aliases.get(key, key)
    if key not in HUBS:
        raise InputError(f"Unknown hub '{name}'.", f"use --to one of: {', '.join(HUB_NAMES)}.")
    return HUBS[key]


def check_repo_id(repo: str, *, flag: str = "--repo") -> str:
    repo = repo.strip()
    if not REPO_ID.match(repo) or len(repo.split("/")[1]) > 96 or "--" in repo or ".." in repo:
        raise InputError(f"'{repo}' is not a repo id of the form OWNER/NAME.",
                         f"pass {flag} OWNER/NAME, e.g. {flag} yourname/xiaowei-adapter (letters, digits, '-', '_', "
                         "'.'; no '--' or '..').")
    return repo


def _endpoint(variable: str, default: str) -> str:
    return (os.environ.get(variable) or default).strip().rstrip("/")


def hf_endpoint() -> str:
    return _endpoint("HF_ENDPOINT", "https://huggingface.co")


def modelscope_endpoint() -> str:
    return _endpoint("MODELSCOPE_ENDPOINT", "https://modelscope.cn")


def openxlab_git_endpoint() -> str:
    return _endpoint(OPENXLAB_GIT_ENV, "https://code.openxlab.org.cn")


def repo_url(hub: str, repo: str) -> str:
    """The model page a publish would create (endpoint variables respected)."""
    if hub == "hf":
        return f"{hf_endpoint()}/{repo}"
    if hub == "modelscope":
        return f"{modelscope_endpoint()}/models/{repo}"
    return f"https://openxlab.org.cn/models/detail/{repo}"


def git_url(hub: str, repo: str) -> str | None:
    """Where `git clone` finds the repo (OpenXLab only: the other hubs are used through their clients)."""
    return f"{openxlab_git_endpoint()}/{repo}.git" if hub == "openxlab" else None
