"""The hub table: one entry per hub with its names, web URLs, endpoint variables and uploader module. Nothing here
touches the network."""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from .errors import InputError

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
OPENXLAB_GIT_ENV = "OPENXLAB_GIT_ENDPOINT"  # our own variable: the OpenXLab git host (mirrors, tests)


def _endpoint(variable: str, default: str) -> str:
    return (os.environ.get(variable) or default).strip().rstrip("/")


def hf_endpoint() -> str:
    return _endpoint("HF_ENDPOINT", "https://huggingface.co")


def modelscope_endpoint() -> str:
    return _endpoint("MODELSCOPE_ENDPOINT", "https://modelscope.cn")


def openxlab_endpoint() -> str:
    return "https://openxlab.org.cn"


def openxlab_git_endpoint() -> str:
    return _endpoint(OPENXLAB_GIT_ENV, "https://code.openxlab.org.cn")


@dataclass(frozen=True)
class Hub:
    """Everything publish/ does differently per hub. Adding a hub is one entry in HUBS (and its uploader module)."""

    name: str  # hf | modelscope | openxlab
    label: str  # for people
    base_field: str  # which Preset field holds the base model's id on this hub
    uploader: str  # the module whose upload_model() and upload_demo() send a staged folder (imported when used)
    endpoint: Callable[[], str]  # the web site (its endpoint variable respected)
    model_page: str  # a model's page, from {endpoint} and {repo}
    demo_page: str  # a deployed demo's page, from {endpoint} and {repo}
    demo_source: str  # where its demo downloads the model from by default (MODEL_SOURCE)
    demo_secret: str = "HF_TOKEN"  # the demo's secret that --token-secret-env fills
    demo_lists_gradio: bool = True  # the demo's requirements.txt pins gradio (a Space installs its sdk_version)
    demo_api: bool = True  # demos are created through an API (OpenXLab apps: console steps, or a git remote)
    gguf: bool = False  # lists GGUF files as such (and `ollama run` can pull from it)
    git_endpoint: Callable[[], str] | None = None  # its git host, where repos are used through git


HUBS: dict[str, Hub] = {
    "hf": Hub("hf", "Hugging Face", "hf_id", "publish.upload_hf", hf_endpoint, "{endpoint}/{repo}",
              "{endpoint}/spaces/{repo}", demo_source="hf", demo_lists_gradio=False, gguf=True),
    "modelscope": Hub("modelscope", "ModelScope", "modelscope_id", "publish.upload_modelscope", modelscope_endpoint,
                      "{endpoint}/models/{repo}", "{endpoint}/studios/{repo}", demo_source="modelscope",
                      demo_secret="MODELSCOPE_API_TOKEN", gguf=True),
    # OpenXLab has no mirror of the bases our presets use; cards point at the Hugging Face ids.
    "openxlab": Hub("openxlab", "OpenXLab", "hf_id", "publish.upload_openxlab", openxlab_endpoint,
                    "{endpoint}/models/detail/{repo}", "{endpoint}/apps", demo_source="hf",
                    demo_secret="MODELSCOPE_API_TOKEN", demo_api=False, git_endpoint=openxlab_git_endpoint),
}
HUB_NAMES = tuple(HUBS)
GGUF_HUBS = tuple(name for name, hub in HUBS.items() if hub.gguf)


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


def repo_url(hub: str, repo: str) -> str:
    """The model page a publish would create (endpoint variables respected)."""
    entry = HUBS[hub]
    return entry.model_page.format(endpoint=entry.endpoint(), repo=repo)


def demo_url(hub: str, repo: str) -> str:
    """The page of a deployed demo."""
    entry = HUBS[hub]
    return entry.demo_page.format(endpoint=entry.endpoint(), repo=repo)


def git_url(hub: str, repo: str) -> str | None:
    """Where `git clone` finds the repo (OpenXLab only: the other hubs are used through their clients)."""
    git_endpoint = HUBS[hub].git_endpoint
    return f"{git_endpoint()}/{repo}.git" if git_endpoint else None


def uploader(hub: str) -> ModuleType:
    """The module that sends a staged folder to `hub`: upload_model() and upload_demo(), same signatures on all."""
    return importlib.import_module(HUBS[hub].uploader)
