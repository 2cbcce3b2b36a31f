"""Upload a staging folder to ModelScope, as a model repo or a Studio (demo app), with the modelscope-hub client.

ModelScope's `upload_folder` commits whatever it is given, so we compare the remote sha256 of every file with the
staged one first and send only what differs: a re-run with nothing changed makes no commit. The client's resume cache
is off (it would be written inside the staged folder, whose files may be hard links to the run's own).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from app.console import say

from . import net
from .errors import (
    AuthError,
    HubRejected,
    HubServerError,
    HubUnreachable,
    InputError,
    MissingToken,
    PaymentRequired,
    PublishError,
    RepoNameTaken,
)
from .hubs import modelscope_endpoint, repo_url
from .remote import RemoteFile, UploadResult, human_size, verify
from .secrets import RedactingFilter, Secret, from_env, redact
from .stage import StagedFile

TOKEN_ENV = "MODELSCOPE_API_TOKEN"
TOKEN_PAGE = "https://modelscope.cn/my/myaccesstoken"
REPO_TYPES = ("model", "studio")
STUDIO_SDK = "gradio"
RETRY_FIX = "run the same command again: files already on ModelScope are not sent again."


def modelscope_token() -> Secret:
    """MODELSCOPE_API_TOKEN, else the token the ModelScope client saved at login ($MODELSCOPE_HOME/credentials)."""
    found = from_env(TOKEN_ENV)
    if found is not None:
        return found
    from modelscope_hub import HubConfig

    config = HubConfig(token="")  # an explicit empty token: only the saved login is read below
    saved = config.load_token()
    if saved and saved.strip():
        return Secret(saved, f"the ModelScope login in {config.credentials_dir}")
    raise MissingToken(f"No ModelScope token: {TOKEN_ENV} is not set and there is no saved login in "
                       f"{config.credentials_dir}.",
                       f"create an access token (write permission) at {TOKEN_PAGE} and set {TOKEN_ENV}.")


def upload_modelscope(folder: Path, files: list[StagedFile], repo: str, *, token: Secret, private: bool = False,
                      repo_type: str = "model", commit_message: str,
                      studio_variables: dict[str, str] | None = None, studio_secrets: dict[str, Secret] | None = None,
                      deploy: bool = False, hardware: str | None = None) -> UploadResult:
    """Create `repo` if missing, send the staged files ModelScope lacks or holds differently, then check the result.

    For a Studio (`repo_type="studio"`) the variables and secrets are set before the upload, so the first build
    sees them, and `deploy` starts it. `hardware` (e.g. `paid/<instance>`) applies when the Studio is created."""
    if repo_type not in REPO_TYPES:
        raise InputError(f"Unknown ModelScope repo type '{repo_type}'.", f"use one of: {', '.join(REPO_TYPES)}.")
    studio = repo_type == "studio"
    if not studio and (studio_variables or studio_secrets or deploy or hardware):
        raise InputError("Variables, secrets, deploy and hardware apply only to a ModelScope Studio.",
                         "upload the demo as repo_type='studio', or drop those options for a model.")
    endpoint = modelscope_endpoint()
    hub = _Hub(endpoint, repo, token, net.settings())
    with _client_output():
        hub.sign_in()
        created = hub.ensure_repo(repo_type, private=private, hardware=hardware)
        if studio:
            hub.set_studio_env(studio_variables or {}, studio_secrets or {})
        remote = hub.remote_files(repo_type)
        changed = [f for f in files if not _same(remote.get(f.path), f)]
        if len(files) > len(changed):
            _progress(f"skipped {len(files) - len(changed)} unchanged")
        commits = hub.upload(folder, changed, repo_type, commit_message, check_write=not created) if changed else 0
        if not changed:
            _progress("nothing to upload: ModelScope already holds every file")
        if deploy:
            hub.deploy()
        if changed:
            remote = hub.remote_files(repo_type)
    verify(files, remote)
    url = f"{endpoint}/studios/{repo}" if studio else repo_url("modelscope", repo)
    return UploadResult(url=url, commits=commits, sent=[f.path for f in changed], remote=remote)


def upload_model(folder: Path, files: list[StagedFile], repo: str, *, private: bool, message: str,
                 work_dir: Path) -> UploadResult:
    """The hub table's entry point for a model (publish/hubs.py): a model repo."""
    return upload_modelscope(folder, files, repo, token=modelscope_token(), private=private, repo_type="model",
                             commit_message=message)


def upload_demo(folder: Path, files: list[StagedFile], repo: str, *, private: bool, message: str,
                variables: dict[str, str], secrets: dict[str, Secret], hardware: str | None, work_dir: Path,
                git_remote: str | None = None) -> UploadResult:
    """The hub table's entry point for a demo: a Studio with its variables and secrets, deployed."""
    return upload_modelscope(folder, files, repo, token=modelscope_token(), private=private, repo_type="studio",
                             commit_message=message, studio_variables=variables, studio_secrets=secrets, deploy=True,
                             hardware=hardware)


class _Hub:
    """One repo on one endpoint through `modelscope_hub.HubApi`; every client error leaves as one of ours."""

    def __init__(self, endpoint: str, repo: str, token: Secret, settings: net.NetSettings):
        import requests
        from modelscope_hub import HubApi, HubConfig
        from modelscope_hub._openapi import OpenAPIClient
        from modelscope_hub.constants import API_CONNECTION_POOL_MAXSIZE

        self.endpoint, self.repo, self.user, self.net = endpoint, repo, "", settings
        # Our own config: the client's process-wide default would read the environment and the saved login.
        config = HubConfig(endpoint=endpoint, token=token.reveal())
        self.api = HubApi(config=config)
        # The network policy (publish/net.py) on both of the client's sessions. HubApi builds its clients itself and
        # reads timeouts and retries from MODELSCOPE_* variables once, at import, so they are set here: the OpenAPI
        # client takes a session and a retry count (its own loop, 5 attempts with 1-8 s waits, also retried refused
        # connections: 16 s to report an unreachable endpoint); the legacy client's session gets our adapter in
        # place of its own Retry. Its upload-level blob and commit retries are left as they are.
        pool = {"pool_connections": API_CONNECTION_POOL_MAXSIZE, "pool_maxsize": API_CONNECTION_POOL_MAXSIZE}
        self.api._openapi = OpenAPIClient(config, session=net.mount(requests.Session(), settings, **pool),
                                          max_retries=1)
        net.mount(self.api.legacy._session, settings, **pool)

    def sign_in(self) -> None:
        with self.guard("signing in"):
            self.user = self.api.whoami().username or ""
        if not self.user:
            raise AuthError(f"ModelScope at {self.endpoint} did not say who the token belongs to.",
                            f"create a new token at {TOKEN_PAGE} and set {TOKEN_ENV}.")
        _progress(f"signed in to {self.endpoint} as {self.user}")

    def ensure_repo(self, repo_type: str, *, private: bool, hardware: str | None) -> bool:
        """True when this call created the repo."""
        with self.guard(f"looking up {self.repo}"):
            if self.api.repo_exists(self.repo, repo_type):
                if hardware:
                    _progress(f"{self.repo} exists: its hardware is left as it is (change it on the website)")
                return False
        visibility = "private" if private else "public"
        _progress(f"creating {visibility} {repo_type} {self.repo}")
        extra = {}
        if repo_type == "studio":
            extra = {"sdk_type": STUDIO_SDK, **({"hardware": hardware} if hardware else {})}
        with self.guard(f"creating {self.repo}"):
            self.api.create_repo(self.repo, repo_type, visibility=visibility, **extra)
            # A refused creation can come back as HTTP 200 with "Success": false, which the client does not raise.
            exists = self.api.repo_exists(self.repo, repo_type)
        if not exists:
            if self.owner != self.user:
                raise self.taken("ModelScope did not create it")
            raise HubRejected(f"ModelScope did not create {self.repo} and gave no reason.",
                              "check the name on modelscope.cn (or create the repo there), then run again.")
        return True

    def set_studio_env(self, variables: dict[str, str], secrets: dict[str, Secret]) -> None:
        from modelscope_hub.errors import AlreadyExistsError

        settings = [(self.api.add_variable, self.api.update_variable, k, v) for k, v in variables.items()]
        settings += [(self.api.add_secret, self.api.update_secret, k, s.reveal()) for k, s in secrets.items()]
        for add, update, key, value in settings:
            with self.guard(f"setting {key} on the Studio"):
                try:
                    add(self.repo, key, value)
                except AlreadyExistsError:
                    update(self.repo, key, value)
        if settings:
            _progress(f"Studio settings: {len(variables)} variable(s), {len(secrets)} secret(s) "
                      f"({', '.join(key for *_, key, _ in settings)})")

    def remote_files(self, repo_type: str) -> dict[str, RemoteFile]:
        with self.guard(f"listing the files of {self.repo}"):
            listed = self.api.list_repo_files(self.repo, repo_type)
        return {f.path: RemoteFile(f.path, f.size, f.sha256 or None) for f in listed if not f.is_dir}

    def upload(self, folder: Path, changed: list[StagedFile], repo_type: str, message: str, *,
               check_write: bool) -> int:
        """Send `changed` (exact paths) in the client's commits; return how many commits it made."""
        if check_write:
            # upload_folder folds refusals into "N file(s) failed"; the LFS batch call it starts with needs write
            # access, so asking it first turns a 403 into a clear error.
            probe = changed[0]
            with self.guard(f"checking write access to {self.repo}"):
                self.api.legacy.validate_blobs(self.repo, repo_type, [{"oid": probe.sha256, "size": probe.size}])
        total = sum(f.size for f in changed)
        names = ", ".join(f.path for f in changed[:5]) + (", …" if len(changed) > 5 else "")
        _progress(f"uploading {len(changed)} file(s) ({human_size(total)}): {names}")
        with self.guard(f"uploading to {self.repo}", RuntimeError):  # RuntimeError: "N consecutive commits failed"
            info = self.api.upload_folder(self.repo, repo_type, str(folder), commit_message=message,
                                          allow_patterns=[glob.escape(f.path) for f in changed],
                                          use_cache=False, disable_tqdm=True)
        commits = 0 if info is None else len(info) if isinstance(info, list) else 1
        _progress(f"sent {len(changed)} file(s) in {commits} commit(s)")
        return commits

    def deploy(self) -> None:
        _progress(f"deploying Studio {self.repo}")
        with self.guard("deploying the Studio"):
            self.api.deploy_repo(self.repo, "studio")

    # ------------------------------------------------------------------------------------------- errors

    @property
    def owner(self) -> str:
        return self.repo.split("/")[0]

    def taken(self, detail: str) -> RepoNameTaken:
        name = self.repo.split("/")[-1]
        return RepoNameTaken(f"{self.repo} cannot be written by {self.user or 'this token'} ({detail}).",
                             f"choose a repo in your own namespace, e.g. --repo {self.user or 'YOU'}/{name}.")

    @contextlib.contextmanager
    def guard(self, action: str, *also: type[Exception]) -> Iterator[None]:
        from modelscope_hub import HubError

        try:
            yield
        except (HubError, *also) as error:
            raise self.translate(error, action) from None

    def translate(self, error: Exception, action: str) -> PublishError:
        import modelscope_hub as ms
        from modelscope_hub.errors import AlreadyExistsError

        lines = str(error).strip().splitlines()
        detail = redact(lines[0] if lines else type(error).__name__)
        if isinstance(error, ms.NetworkError):  # timeouts included
            kind = net.failure_kind(error)
            return HubUnreachable(f"Cannot reach ModelScope at {self.endpoint} ({net.unreachable(kind, self.net)}) "
                                  f"while {action}.",
                                  net.network_fix(kind, "MODELSCOPE_ENDPOINT", self.endpoint, self.net) +
                                  " The hosts: https://modelscope.cn, or https://modelscope.ai (international).")
        if isinstance(error, ms.AuthenticationError):
            return AuthError(f"ModelScope rejected the token while {action}: {detail}",
                             f"create a token with write permission at {TOKEN_PAGE} and set {TOKEN_ENV} (a "
                             "modelscope.ai token needs MODELSCOPE_ENDPOINT=https://modelscope.ai).")
        if isinstance(error, ms.QuotaExceededError):
            return PaymentRequired(f"ModelScope refused {action}: the account's quota is used up ({detail}).",
                                   "free up or delete unused repos/Studios, or ask ModelScope for more quota.")
        if isinstance(error, AlreadyExistsError):
            return self.taken("the name is already taken")
        if isinstance(error, ms.PermissionDeniedError):
            if self.owner != self.user:
                return self.taken(detail)
            return AuthError(f"The token signs in as {self.user} but may not write to {self.repo}: {detail}",
                             f"create a token with write permission at {TOKEN_PAGE} and set {TOKEN_ENV}.")
        if isinstance(error, (ms.InvalidParameter, ms.NotExistError)):
            return HubRejected(f"ModelScope refused {action}: {detail}",
                               "check the repo name and the staged files, then run again.")
        return HubServerError(f"ModelScope failed while {action}: {detail}", RETRY_FIX)


def _same(remote: RemoteFile | None, staged: StagedFile) -> bool:
    return remote is not None and remote.size == staged.size and remote.sha256 == staged.sha256


@contextlib.contextmanager
def _client_output() -> Iterator[None]:
    """While the client runs: its prints (an "Upload Report") go to stderr, and its logger, which does not propagate
    to the root logger, writes redacted warnings to the current stderr."""
    logger = logging.getLogger("modelscope_hub")
    level, log_filter = logger.level, RedactingFilter()
    streams = [(h, h.stream) for h in logger.handlers if type(h) is logging.StreamHandler]
    for handler in logger.handlers:
        handler.addFilter(log_filter)
    for handler, _ in streams:
        _set_stream(handler, sys.stderr)
    if "MODELSCOPE_LOG_LEVEL" not in os.environ:
        logger.setLevel(logging.WARNING)  # our progress lines replace its INFO chatter
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logger.setLevel(level)
        for handler, stream in streams:
            _set_stream(handler, stream)
        for handler in logger.handlers:
            handler.removeFilter(log_filter)


def _set_stream(handler: logging.StreamHandler, stream) -> None:
    """handler.setStream without its flush of the old stream, which may be closed by now (a second upload in one
    process, e.g. under pytest's capture, found the first one's stderr closed)."""
    handler.acquire()
    try:
        handler.stream = stream
    finally:
        handler.release()


def _progress(line: str) -> None:
    say(f"ModelScope: {line}")
