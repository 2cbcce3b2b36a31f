"""Upload a staged folder to the Hugging Face Hub (a model repo or a Space) with `huggingface_hub`.

Idempotent and resumable: the remote listing is compared with the staged files first and only what is missing or
different is sent, in commits of at most `max_commit_bytes`, so a re-run after a failure sends only the rest and a
re-run with nothing changed makes no commit. Afterwards the remote listing is checked against the staging folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from app.console import say

from . import hubs, net
from .errors import (
    AuthError,
    HubRejected,
    HubServerError,
    HubUnreachable,
    MissingToken,
    PaymentRequired,
    PublishError,
    RepoNameTaken,
)
from .remote import RemoteFile, UploadResult, human_size, verify
from .secrets import Secret, from_env, redact, redacted_output
from .stage import StagedFile

TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
REPO_TYPES = ("model", "space")


# ------------------------------------------------------------------------------------------- token


def _token_file() -> Path:
    """Where `huggingface-cli login` / `hf auth login` keep the token, by huggingface_hub's rules (HF_TOKEN_PATH, else
    HF_HOME/token, else ~/.cache/huggingface/token) read now. Not `huggingface_hub.get_token()`: it reads the path
    worked out when huggingface_hub was imported (so HF_HOME set later is missed) and cannot say where the token came
    from, which our messages name (the source, never the value)."""
    if os.environ.get("HF_TOKEN_PATH"):
        return Path(os.environ["HF_TOKEN_PATH"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "token"
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache).expanduser() / "huggingface" / "token"


def hf_token() -> Secret:
    """The Hugging Face token: HF_TOKEN, then HUGGING_FACE_HUB_TOKEN, then the login cache. Never from argv."""
    token = from_env(*TOKEN_ENV)
    if token is not None:
        return token
    path = _token_file()
    try:
        cached = path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        cached = ""
    if cached:
        return Secret(cached, f"{path} (huggingface-cli login)")
    raise MissingToken("No Hugging Face token: HF_TOKEN is not set and there is no saved login.",
                       "create a write token at https://huggingface.co/settings/tokens, then `export HF_TOKEN=...` "
                       "or run `huggingface-cli login`.")


# ------------------------------------------------------------------------------------------- errors


def _client_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(the HTTP answers, the transport failures) that huggingface_hub's client raises: its typed HfHubHTTPError
    (RepositoryNotFoundError, GatedRepoError, BadRequestError, ... are ones) and the HTTP library's own (0.x:
    requests, whose HTTPError `whoami` raises for a 401; 1.x/2.x: httpx), and the OS's network errors."""
    from huggingface_hub.errors import HfHubHTTPError

    answers: list[type[BaseException]] = [HfHubHTTPError]
    failures: list[type[BaseException]] = [ConnectionError, TimeoutError]
    with contextlib.suppress(ImportError):
        import requests

        answers.append(requests.HTTPError)
        failures += [requests.ConnectionError, requests.Timeout]  # ProxyError, SSLError, ConnectTimeout among them
    with contextlib.suppress(ImportError):
        import httpx

        answers.append(httpx.HTTPStatusError)
        failures.append(httpx.TransportError)  # ConnectError, timeouts, ProxyError among them
    return tuple(answers), tuple(failures)


def _status(exc: BaseException) -> int | None:
    """The HTTP status of a hub answer the client raised, None for anything else."""
    status = getattr(exc.response, "status_code", None) if isinstance(exc, _client_errors()[0]) else None
    return status if isinstance(status, int) else None


def _short(exc: BaseException, limit: int = 300) -> str:
    """The hub's own words if the client kept them, else the exception text: redacted, on one line."""
    text = " ".join(redact(getattr(exc, "server_message", None) or exc).split())
    return text if len(text) <= limit else text[:limit] + " ..."


WRITE_TOKEN = "create a write token at https://huggingface.co/settings/tokens and set HF_TOKEN (or run " \
              "`huggingface-cli login`)."


def _classify(exc: Exception, *, step: str, repo: str, user: str | None, endpoint: str,
              source: str, settings: net.NetSettings | None = None) -> PublishError | None:
    """Our typed error for a hub/client exception raised while doing `step`, or None for anything else."""
    status = _status(exc)
    namespace = repo.split("/")[0]
    if status == 401:
        return AuthError(f"Hugging Face rejected the token from {source} while {step}: it is invalid, expired or "
                         f"cannot write to {repo}.", WRITE_TOKEN)
    if status in (403, 409) and namespace == user:
        return RepoNameTaken(f"{repo} cannot be written with the token from {source} (HTTP {status} while {step}): "
                             f"{_short(exc)}", f"the token may be read-only: {WRITE_TOKEN}")
    if status in (403, 409):
        return RepoNameTaken(f"{repo} exists or its namespace is not writable by {user or 'this token'} (HTTP "
                             f"{status} while {step}).",
                             f"choose another --repo, e.g. {user or 'YOURNAME'}/{repo.split('/')[-1]}, or use a "
                             f"token with write access to {namespace}.")
    if status == 402:
        return PaymentRequired(f"Hugging Face wants a paid plan for {repo} (HTTP 402 while {step}): {_short(exc)}",
                               "for a Space: add billing or PRO to the account, drop a paid --hardware, or deploy to "
                               "ModelScope (--to modelscope, free CPU); for a model check the storage quota.")
    settings = settings or net.NetSettings()
    if status is not None and status >= 500:
        retried = f" (after {net.retries(settings.retries)})" if status in net.TRANSIENT_STATUS else ""
        return HubServerError(f"{endpoint} answered HTTP {status}{retried} while {step} {repo}.",
                              "run the same command again later: it resumes and sends only the files still missing.")
    if status is not None:
        return HubRejected(f"Hugging Face refused the request while {step} {repo} (HTTP {status}): {_short(exc)}",
                           "check the repo id and the staged files (`python -m publish ... --dry-run` shows them).")
    if isinstance(exc, _client_errors()[1]):
        kind = net.failure_kind(exc)
        # The reason before "while": after "…the token:" the redactor would take it for a token value.
        return HubUnreachable(f"Cannot reach the Hugging Face Hub at {endpoint} ({net.unreachable(kind, settings)}) "
                              f"while {step}.", net.network_fix(kind, "HF_ENDPOINT", endpoint, settings))
    if isinstance(exc, ValueError) and "Invalid metadata in README.md" in str(exc):
        return HubRejected(f"Hugging Face refused the metadata of README.md: {_short(exc)}",
                           "fix the YAML front matter between the --- lines at the top of the staged README.md "
                           "(or re-stage it).")
    if isinstance(exc, ValueError):  # the client refused a malformed hub answer
        return HubServerError(f"Unexpected answer from {endpoint} while {step}: {_short(exc)}",
                              "run the same command again; if it persists, check HF_ENDPOINT.")
    return None


@contextlib.contextmanager
def _hub_errors(step: str, *, repo: str, user: str | None, endpoint: str, source: str,
                settings: net.NetSettings) -> Iterator[None]:
    try:
        yield
    except PublishError:
        raise
    except Exception as exc:
        typed = _classify(exc, step=step, repo=repo, user=user, endpoint=endpoint, source=source, settings=settings)
        if typed is None:
            raise
        raise typed from None


@contextlib.contextmanager
def _online() -> Iterator[None]:
    """Running `publish` is an explicit request to go online: HF_HUB_OFFLINE=1, exported for training and tests,
    must not block it. huggingface_hub reads the variable at import and bakes it into its HTTP sessions."""
    from huggingface_hub import constants, utils

    offline = constants.HF_HUB_OFFLINE
    reset = getattr(utils, "reset_sessions", None)
    if offline:
        constants.HF_HUB_OFFLINE = False
        if reset is not None:
            reset()
    try:
        yield
    finally:
        if offline:
            constants.HF_HUB_OFFLINE = True
            if reset is not None:
                reset()


# ------------------------------------------------------------------------------------------- plan


def _git_sha1(path: Path) -> str:
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _remote_files(info, folder: Path, staged: dict[str, StagedFile]) -> dict[str, RemoteFile]:
    """The repo's files with sizes and sha256. The Hub tells the sha256 of LFS files only; for a regular file it
    tells the git blob id, which we compare with the local file, so every file's content is checked."""
    remote = {}
    for sibling in info.siblings or []:
        path, size = sibling.rfilename, sibling.size
        if sibling.lfs is not None:
            sha256 = sibling.lfs.sha256
        elif path in staged and size == staged[path].size and sibling.blob_id == _git_sha1(folder / path):
            sha256 = staged[path].sha256
        else:
            sha256 = f"git-blob:{sibling.blob_id}" if path in staged else None
        remote[path] = RemoteFile(path, size if size is not None else -1, sha256)
    return remote


def _changed(files: list[StagedFile], remote: dict[str, RemoteFile]) -> list[StagedFile]:
    return [f for f in files if (there := remote.get(f.path)) is None or there.size != f.size
            or there.sha256 != f.sha256]


def _batches(files: list[StagedFile], max_bytes: int) -> list[list[StagedFile]]:
    """Consecutive groups of at most `max_bytes` (a larger file goes alone): one commit each."""
    batches: list[list[StagedFile]] = []
    size = 0
    for item in files:
        if not batches or size + item.size > max_bytes:
            batches.append([])
            size = 0
        batches[-1].append(item)
        size += item.size
    return batches


def _pattern(path: str) -> str:
    """An fnmatch pattern matching exactly `path` (allow_patterns are globs)."""
    return re.sub(r"([*?\[])", r"[\1]", path)


# ------------------------------------------------------------------------------------------- upload


def upload_hf(folder: Path, files: list[StagedFile], repo: str, *, token: Secret, private: bool = False,
              repo_type: str = "model", commit_message: str, space_sdk: str = "gradio",
              space_variables: dict[str, str] | None = None, space_secrets: dict[str, Secret] | None = None,
              space_hardware: str | None = None, max_commit_bytes: int = 5 * 2**30) -> UploadResult:
    """Create `repo` if needed, send the staged `files` of `folder` that the Hub does not hold yet, set the Space's
    variables and secrets, and check the result. Returns the repo URL, the number of commits and the paths sent."""
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {REPO_TYPES}, not {repo_type!r}")
    if repo_type != "space" and (space_variables or space_secrets or space_hardware):
        raise ValueError("space_variables, space_secrets and space_hardware are for Spaces (repo_type='space')")
    settings = net.settings()
    with redacted_output(), _online(), net.huggingface_hub_policy(settings):
        return _upload(Path(folder), files, repo, token=token, private=private, repo_type=repo_type,
                       commit_message=commit_message, space_sdk=space_sdk, space_variables=space_variables or {},
                       space_secrets=space_secrets or {}, space_hardware=space_hardware,
                       max_commit_bytes=max_commit_bytes, settings=settings)


def upload_model(folder: Path, files: list[StagedFile], repo: str, *, private: bool, message: str,
                 work_dir: Path) -> UploadResult:
    """The hub table's entry point for a model (publish/hubs.py): a model repo."""
    return upload_hf(folder, files, repo, token=hf_token(), private=private, repo_type="model",
                     commit_message=message)


def upload_demo(folder: Path, files: list[StagedFile], repo: str, *, private: bool, message: str,
                variables: dict[str, str], secrets: dict[str, Secret], hardware: str | None, work_dir: Path,
                git_remote: str | None = None) -> UploadResult:
    """The hub table's entry point for a demo: a Gradio Space with its variables, secrets and hardware."""
    return upload_hf(folder, files, repo, token=hf_token(), private=private, repo_type="space",
                     commit_message=message, space_sdk="gradio", space_variables=variables,
                     space_secrets=secrets, space_hardware=hardware)


def _upload(folder: Path, files: list[StagedFile], repo: str, *, token: Secret, private: bool, repo_type: str,
            commit_message: str, space_sdk: str, space_variables: dict[str, str],
            space_secrets: dict[str, Secret], space_hardware: str | None, max_commit_bytes: int,
            settings: net.NetSettings) -> UploadResult:
    from huggingface_hub import HfApi

    endpoint = hubs.hf_endpoint()
    url = hubs.repo_url("hf", repo) if repo_type == "model" else f"{endpoint}/spaces/{repo}"
    api = HfApi(endpoint=endpoint, token=token.reveal())
    staged = {f.path: f for f in files}
    user = None

    def errors(step: str):
        return _hub_errors(step, repo=repo, user=user, endpoint=endpoint, source=token.source, settings=settings)

    with errors("checking the token"):
        user = api.whoami()["name"]
    say(f"Hugging Face: logged in as {user} (token from {token.source}); repo {url}")
    with errors("creating"):
        api.create_repo(repo, private=private, repo_type=repo_type, exist_ok=True,
                        space_sdk=space_sdk if repo_type == "space" else None)
    with errors("configuring the Space"):
        for key, value in space_variables.items():
            api.add_space_variable(repo, key, value)
        for key, secret in space_secrets.items():
            api.add_space_secret(repo, key, secret.reveal())
        if space_variables or space_secrets:
            say(f"set {len(space_variables)} variable(s) and {len(space_secrets)} secret(s) on the Space")
    if space_hardware:
        with errors(f"requesting {space_hardware} hardware for"):
            api.request_space_hardware(repo, space_hardware)
        say(f"requested {space_hardware} hardware for the Space (billed by Hugging Face while it runs)")
    with errors("listing"):
        info = api.repo_info(repo, repo_type=repo_type, files_metadata=True)
    todo = _changed(files, _remote_files(info, folder, staged))
    head, commits, sent = info.sha, 0, []
    if len(todo) < len(files):
        say(f"skipped {len(files) - len(todo)} unchanged")
    batches = _batches(todo, max_commit_bytes)
    if todo:
        say(f"uploading {len(todo)} files ({human_size(sum(f.size for f in todo))}) in {len(batches)} commit(s) ...")
    for number, batch in enumerate(batches, 1):
        part = f" (part {number}/{len(batches)})" if len(batches) > 1 else ""
        for item in batch:
            say(f"  {item.path} ({human_size(item.size)}){part}")
        with errors("uploading to"):
            commit = api.upload_folder(repo_id=repo, folder_path=folder, repo_type=repo_type,
                                       commit_message=commit_message + part,
                                       allow_patterns=[_pattern(item.path) for item in batch])
        if commit.oid != head:  # the client returns the current head when the Hub had every file already
            commits, head = commits + 1, commit.oid
            sent += [item.path for item in batch]
    with errors("listing"):
        info = api.repo_info(repo, repo_type=repo_type, files_metadata=True)
    remote = _remote_files(info, folder, staged)
    verify(files, remote)
    say(f"done: {commits} commit(s), {len(sent)} file(s) sent, {len(files)} file(s) verified at {url}")
    return UploadResult(url=url, commits=commits, sent=sent, remote=remote)
