"""Download a preset (or any hub model id) from the Hugging Face Hub or ModelScope into the model cache.

The files go to a temporary folder that is renamed into place only when the download is complete, so a failed
download leaves nothing behind. `resolve_model()` then finds the model by its preset name. Tokens come only
from the environment (HF_TOKEN, MODELSCOPE_API_TOKEN) and are never printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.formats import is_model_dir

from .errors import EnvironmentProblem, InputError
from .fsutil import atomic_dir, clean_leftovers, dir_size
from .modelload import downloaded_dir
from .presets import PRESETS, Preset, find_preset_for_hub_id, get_preset

SOURCES = ("hf", "modelscope")
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
MS_DEFAULT_ENDPOINT = "https://www.modelscope.cn"
HF_MIRROR_HINT = "set HF_ENDPOINT=https://hf-mirror.com, or use --source modelscope"
TRUE = {"1", "on", "yes", "true"}


class DownloadError(EnvironmentProblem):
    """The hub could not be reached, or the transfer failed."""


class RepoNotFound(InputError):
    """The hub answered, but has no such model (or it is gated / private)."""


def endpoint(source: str) -> str:
    if source == "modelscope":
        return (os.environ.get("MODELSCOPE_ENDPOINT") or MS_DEFAULT_ENDPOINT).rstrip("/")
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


def resolve_target(preset_or_id: str, source: str) -> tuple[str, Preset | None]:
    """(hub id to fetch, preset or None). A name with '/' that is not a preset is used as a raw hub id."""
    key = preset_or_id.strip()
    if key.lower() in PRESETS:
        preset = PRESETS[key.lower()]
    elif "/" in key:
        preset = find_preset_for_hub_id(key)
        if preset is None:
            return key, None
    else:
        preset = get_preset(key)  # raises UnknownPreset with a did-you-mean
    return (preset.modelscope_id if source == "modelscope" else preset.hf_id), preset


def download(preset_or_id: str, *, source: str = "hf", out: str | os.PathLike | None = None,
             revision: str | None = None, force: bool = False, progress: Callable[[str], None] = print) -> Path:
    """Download a preset or hub id into `out` (default: cache_dir()/models/<preset>) and return the folder."""
    if source not in SOURCES:
        raise InputError(f"Unknown download source '{source}'.", f"use one of: {', '.join(SOURCES)}.")
    repo_id, preset = resolve_target(preset_or_id, source)
    if preset is not None and preset.embedded:
        from .embedded import ensure_embedded_model

        path = ensure_embedded_model(progress=progress)
        progress(f"{preset.name} ships with this toolkit; no download needed: {path}")
        return path
    target = Path(out).expanduser() if out else downloaded_dir(preset.name if preset else repo_id)
    clean_leftovers(target, progress)  # an interrupted download's temporary, or its complete previous output
    if is_model_dir(target) and not force:
        progress(f"Already downloaded: {target} (pass --force to download it again).")
        return target
    if target.is_file() or (target.is_dir() and any(target.iterdir()) and not is_model_dir(target)):
        raise InputError(f"{target} exists and is not a model folder; it is left untouched.",
                         "choose another --out (or move that folder away).")
    size = f" (~{preset.params_b * 2:.1f} GB in bf16)" if preset else ""
    progress(f"Downloading {repo_id} from {endpoint(source)}{size} to {target} ...")
    with atomic_dir(target) as tmp:
        _fetch(source, repo_id, tmp, revision)
        shutil.rmtree(tmp / ".cache", ignore_errors=True)  # hub client bookkeeping, not part of the model
        if not (tmp / "config.json").is_file():
            progress(f"warning: {repo_id} has no config.json; it may not load as a Hugging Face model.")
    progress(f"Downloaded {repo_id}: {target} ({dir_size(target) / 1e9:.2f} GB)")
    return target


def _fetch(source: str, repo_id: str, dest: Path, revision: str | None) -> None:
    try:
        if source == "modelscope":
            _fetch_modelscope(repo_id, dest, revision)
        else:
            _fetch_hf(repo_id, dest, revision)
    except (DownloadError, RepoNotFound):
        raise
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        raise _classify(exc, source, repo_id) from exc


def _env_true(*names: str) -> bool:
    return any((os.environ.get(name) or "").strip().lower() in TRUE for name in names)


def _fetch_hf(repo_id: str, dest: Path, revision: str | None) -> None:
    if _env_true("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        raise DownloadError("HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, so downloads are disabled.",
                            "unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE for this command.")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise EnvironmentProblem("huggingface_hub is not installed.", "pip install --no-deps -r requirements.txt"
                                 ) from exc
    snapshot_download(repo_id, revision=revision, local_dir=dest, endpoint=endpoint("hf"),
                      token=os.environ.get("HF_TOKEN") or None)


def _fetch_modelscope(repo_id: str, dest: Path, revision: str | None) -> None:
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError as exc:
        raise EnvironmentProblem("modelscope is not installed.", "pip install --no-deps -r requirements.txt"
                                 ) from exc
    kwargs: dict[str, Any] = {"local_dir": str(dest), "endpoint": endpoint("modelscope"),
                              "token": os.environ.get("MODELSCOPE_API_TOKEN") or None}
    if revision:
        kwargs["revision"] = revision
    snapshot_download(repo_id, **kwargs)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def _is_network(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, ConnectionError | TimeoutError) or bool(
        names & {"ConnectionError", "Timeout", "NewConnectionError", "MaxRetryError", "NetworkError",
                 "ProtocolError", "SSLError", "ProxyError"}
    )


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _classify(exc: BaseException, source: str, repo_id: str) -> Exception:
    """Map a hub client exception to DownloadError / RepoNotFound with a one-line message and a fix."""
    chain = _chain(exc)
    where = endpoint(source)
    token = "HF_TOKEN" if source == "hf" else "MODELSCOPE_API_TOKEN"
    names = {cls.__name__ for err in chain for cls in type(err).__mro__}
    if "OfflineModeIsEnabled" in names:
        return DownloadError("Hugging Face offline mode is on, so downloads are disabled.",
                             "unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE for this command.")
    if names & {"RepositoryNotFoundError", "GatedRepoError", "NotExistError"} or any(
        _status(err) in (401, 403, 404) for err in chain
    ):
        return RepoNotFound(
            f"{repo_id} was not found on {where} (or it is gated/private).",
            f"check the id (`python -m finetune download --list`); for a gated model accept its licence on the hub "
            f"and export {token}=<your token>.",
        )
    if "RevisionNotFoundError" in names:
        return RepoNotFound(f"{repo_id} has no revision named that on {where}.", "check --revision, or leave it out.")
    network = next((err for err in chain if _is_network(err)), None)
    if network is not None:
        hint = HF_MIRROR_HINT if source == "hf" else "set MODELSCOPE_ENDPOINT, or use --source hf"
        return DownloadError(f"could not reach {where}: {_first_line(network)}",
                             f"check your connection or {hint}; nothing was written.")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return DownloadError("No space left on the device during the download.",
                             "free disk space or pass --out on another disk; nothing was written.")
    return DownloadError(f"Download of {repo_id} from {where} failed: {type(exc).__name__}: {_first_line(exc)}",
                         "run the command again (FINETUNE_DEBUG=1 shows the traceback); nothing was written.")


# ----------------------------------------------------------------------------------------------- CLI


def preset_table() -> str:
    rows = [f"  {p.name:<32} {p.params_b:>6.2f} B  {'(ships with the toolkit)' if p.embedded else p.hf_id}"
            for p in PRESETS.values()]
    return "presets:\n" + "\n".join(rows)


def handle(args: argparse.Namespace) -> int:
    if args.list or not args.preset:
        print(preset_table())
        if not args.list:
            raise InputError("Which model? --preset is missing.", "pass --preset NAME (a name above or a hub id).")
        return 0
    download(args.preset, source=args.source, out=args.out, revision=args.revision, force=args.force)
    return 0


def register(subparsers: Any, formatter_class: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "download",
        help="download a model preset (or hub id) from Hugging Face or ModelScope",
        description="Download a model into the toolkit's cache (FINETUNE_CACHE_DIR/models/<preset>), where chat, "
        "config and train find it by its preset name. The download goes to a temporary folder first: a failed one "
        "leaves nothing. Endpoints: HF_ENDPOINT (e.g. https://hf-mirror.com) and MODELSCOPE_ENDPOINT. Tokens for "
        "gated models only from the environment: HF_TOKEN, MODELSCOPE_API_TOKEN.",
        epilog="examples:\n"
        "  python -m finetune download --list\n"
        "  python -m finetune download --preset qwen2.5-0.5b-instruct\n"
        "  python -m finetune download --preset internlm2.5-1.8b-chat --source modelscope\n"
        "  HF_ENDPOINT=https://hf-mirror.com python -m finetune download --preset qwen2.5-1.5b-instruct\n"
        "  python -m finetune download --preset Qwen/Qwen2.5-3B-Instruct --out models/qwen3b",
        formatter_class=formatter_class,
    )
    parser.add_argument("--preset", metavar="NAME_OR_ID", help="a preset name (see --list) or a hub id 'org/name'")
    parser.add_argument("--source", choices=SOURCES, default="hf",
                        help="hf = Hugging Face Hub (or HF_ENDPOINT), modelscope = ModelScope")
    parser.add_argument("--out", default=None,
                        help="destination folder; unset = FINETUNE_CACHE_DIR/models/<preset>")
    parser.add_argument("--revision", default=None, help="branch, tag or commit; unset = the main branch")
    parser.add_argument("--force", action="store_true", help="download again even if the folder is complete")
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    parser.set_defaults(func=handle)
    return parser
