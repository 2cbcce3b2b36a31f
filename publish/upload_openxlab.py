"""Upload a staging folder to an OpenXLab model repo with git + git-lfs (OpenXLab has no upload API for models).

The repo must already exist (it is created on openxlab.org.cn). A working clone is kept in `work_dir` and reused:
each run resets it to the remote branch, copies the staged files over it, commits only when something changed and
pushes; then the remote tree is read back and checked against the staged files."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from app.console import say
from finetune.fsutil import TMP_MARK, scratch_path

from . import net
from .errors import (
    AuthError,
    HubRejected,
    HubServerError,
    HubUnreachable,
    InputError,
    ManualStepsRequired,
    MissingToken,
    PublishError,
)
from .gitops import GitFailed, git, git_env, identity_env, require_git, write_askpass
from .hubs import OPENXLAB_GIT_ENV, git_url, repo_url
from .remote import RemoteFile, UploadResult, human_size, verify
from .secrets import Secret, from_env, redact

if TYPE_CHECKING:
    from .stage import StagedFile

USER_ENV, TOKEN_ENV = "OPENXLAB_GIT_USER", "OPENXLAB_GIT_TOKEN"
TOKEN_HELP = ("create a Git access token on https://openxlab.org.cn (个人中心 → 密钥管理 → Git 访问令牌 / Git access "
              f"token), then set {USER_ENV}=<your OpenXLab user name> and {TOKEN_ENV}=<the token>.")
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".h5", ".msgpack", ".npy", ".npz",
                ".model", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".zip", ".gz", ".tar")
LFS_THRESHOLD = 5 * 2**20  # any other file above this goes to LFS too: git hosts refuse big plain blobs
LFS_ATTRIBUTES = "filter=lfs diff=lfs merge=lfs -text"
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\n"
PROBE_TIMEOUT = 120
GIT_TOKEN_ENV = ("GIT_TOKEN", "GITHUB_TOKEN")  # for pushing a demo bundle to a git remote (OpenXLab apps)


@dataclass(frozen=True)
class GitTarget:
    """Who is on the other end, for the error messages: OpenXLab's git host, or another remote (an app's repo)."""

    label: str
    token_help: str
    create_help: str  # what to do when the repo does not exist
    endpoint_help: str  # how to point at another host


OPENXLAB = GitTarget(
    "OpenXLab", TOKEN_HELP,
    "create it first on https://openxlab.org.cn/models (创建模型 / Create model) as {repo}, then run this again.",
    f"check the network or proxy, or set {OPENXLAB_GIT_ENV} to the git host (default https://code.openxlab.org.cn).")


def openxlab_credentials() -> tuple[str, Secret]:
    """(user name, Git access token) from OPENXLAB_GIT_USER and OPENXLAB_GIT_TOKEN."""
    username = os.environ.get(USER_ENV, "").strip()
    token = from_env(TOKEN_ENV)
    missing = [name for name, value in ((USER_ENV, username), (TOKEN_ENV, token)) if not value]
    if missing:
        raise MissingToken(f"No OpenXLab git credentials: {' and '.join(missing)} not set.", TOKEN_HELP)
    return username, token


def upload_openxlab(folder: Path, files: list[StagedFile], repo: str, *, username: str, token: Secret,
                    commit_message: str, work_dir: Path, remote_url: str | None = None,
                    target: GitTarget = OPENXLAB) -> UploadResult:
    """Push the staged `files` of `folder` to the OpenXLab repo `repo` (OWNER/NAME) through a clone in `work_dir`.
    Returns commits=0 when the remote already holds these files."""
    folder, work_dir = Path(folder).resolve(), Path(work_dir).resolve()
    if work_dir == folder or folder in work_dir.parents:
        raise InputError(f"The git working copy {work_dir} is inside the staging folder {folder}.",
                         "pass a work_dir outside it, e.g. RUN/publish/.git-openxlab-NAME.")
    remote = remote_url or git_url("openxlab", repo)
    if urlsplit(remote).password:
        raise InputError(f"The OpenXLab git URL {redact(remote)} holds a password; it would be saved in "
                         f"{work_dir}/.git/config.", f"drop it from {OPENXLAB_GIT_ENV} and set {TOKEN_ENV} instead.")
    require_git()
    settings = net.settings()
    work_dir.parent.mkdir(parents=True, exist_ok=True)
    # The askpass script sits beside the working copy under a name carrying our process id (finetune/fsutil.py):
    # after a kill the next run removes it, and while we run it tells another publish that the copy is in use.
    marker = work_dir.with_name(f"{work_dir.name}.askpass")
    with scratch_path(marker, notice=_say) as askpass:
        _claim(marker, work_dir)
        env = git_env(username, token, write_askpass(askpass), settings)
        try:
            return _upload(folder, files, repo, remote, env, username, commit_message, work_dir, settings)
        except GitFailed as exc:
            raise _explain(exc, repo, remote, username, target, settings) from None


def upload_model(folder: Path, files: list[StagedFile], repo: str, *, private: bool, message: str,
                 work_dir: Path) -> UploadResult:
    """The hub table's entry point for a model (publish/hubs.py): a push to the OpenXLab model repo."""
    username, token = openxlab_credentials()
    return upload_openxlab(folder, files, repo, username=username, token=token, commit_message=message,
                           work_dir=work_dir)


def upload_demo(folder: Path, files: list[StagedFile], repo: str, *, private: bool, message: str,
                variables: dict[str, str], secrets: dict[str, Secret], hardware: str | None, work_dir: Path,
                git_remote: str | None = None) -> UploadResult:
    """The hub table's entry point for a demo: OpenXLab apps have no API, so the bundle is pushed to the app's git
    remote (the console steps do the rest)."""
    token_help = (f"export {GIT_TOKEN_ENV[0]}=<a token with push access to {git_remote}> (GitHub: a fine-grained "
                  "token with Contents read/write) and GIT_USER if the host needs a user name; it reaches git "
                  "through GIT_ASKPASS, never the URL.")
    target = GitTarget("the app's git remote", token_help,
                       "create the (empty) repo first, e.g. on https://github.com/new, then run this again.",
                       f"check the network or proxy and the --git-remote URL ({git_remote}).")
    token = from_env(*GIT_TOKEN_ENV)
    if token is None:
        raise MissingToken(f"No git token to push the app to {git_remote}.", token_help)
    result = upload_openxlab(folder, files, repo, username=os.environ.get("GIT_USER", "git"), token=token,
                             commit_message=message, work_dir=work_dir, remote_url=git_remote, target=target)
    result.url = git_remote or result.url
    return result


def _claim(marker: Path, work_dir: Path) -> None:
    """Refuse a working copy another live publish is using; otherwise clear what a killed git left in it."""
    import psutil

    pattern = re.compile(rf"\.{re.escape(marker.name)}\.{TMP_MARK}\.(\d+)\.[a-z0-9_]+")
    for entry in marker.parent.iterdir():
        found = pattern.fullmatch(entry.name)
        if found and int(found.group(1)) != os.getpid() and psutil.pid_exists(int(found.group(1))):
            raise InputError(f"Another publish (process {found.group(1)}) is uploading through {work_dir}.",
                             "wait until it has finished, then run this again.")
    git_dir = work_dir / ".git"
    if not git_dir.is_dir():
        return
    stale = [p for p in git_dir.rglob("*.lock") if p.is_file()]  # index.lock, refs/…/main.lock, shallow.lock, …
    stale += list((git_dir / "objects").glob("incoming-*")) + list((git_dir / "objects" / "pack").glob("tmp_*"))
    stale += list((git_dir / "objects").glob("??/tmp_obj_*")) + list((git_dir / "lfs" / "tmp").glob("*"))
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if stale:
        _say(f"removed {len(stale)} lock or temporary file(s) an interrupted git left in {work_dir}")


def _network_git(*args: str, what: str, settings: net.NetSettings, **kwargs) -> str:
    """`git` for a command that talks to the remote: transient failures (5xx, a reset, a stall) retried."""
    def retrying(attempt: int, exc: GitFailed) -> None:
        _say(f"git {what} failed ({exc.last_line()}); retry {attempt} of {settings.retries}")

    return net.retry_git(lambda: git(*args, what=what, **kwargs), settings, on_retry=retrying)


def _upload(folder, files, repo, remote, env, username, message, work_dir, settings) -> UploadResult:
    _say(f"checking {redact(remote)}")
    failed = net.probe(remote, settings, env)
    if failed:
        raise GitFailed("connect", f"could not open a connection to {failed[1]}: "
                                   f"{net.unreachable(failed[0], settings)}")
    heads = _network_git("ls-remote", "--symref", remote, cwd=work_dir.parent, env=env, what="ls-remote",
                         timeout=PROBE_TIMEOUT, settings=settings)
    branch, empty = _default_branch(heads)
    _say(f"updating the working copy {work_dir} ({'empty repo' if empty else 'branch ' + branch})")
    _prepare_clone(work_dir, remote, branch, empty, env, settings)
    _mirror(folder, files, work_dir)
    _track_large_files(work_dir, files)
    git("add", "-A", "-f", cwd=work_dir, env=env, what="add")  # -f: a .gitignore of the repo must not drop ours
    sent = [p for p in git("diff", "--cached", "--name-only", "-z", cwd=work_dir, env=env, what="diff").split("\0")
            if p]
    commits = 0
    if sent:
        size = sum(f.size for f in files if f.path in sent)
        _say(f"committing {len(sent)} changed file(s), {human_size(size)}; pushing to {redact(remote)}")
        git("commit", "-q", "-m", message, cwd=work_dir, env=identity_env(work_dir, env, username), what="commit")
        _network_git("push", "origin", f"HEAD:refs/heads/{branch}", cwd=work_dir, what="push", progress=True,
                     env=dict(env, GIT_LFS_FORCE_PROGRESS="1"), settings=settings)  # lfs: progress off a terminal too
        _fetch(work_dir, branch, env, settings)
        commits = 1
    else:
        _say("nothing changed since the last upload: no commit")
    there = remote_tree(work_dir, f"refs/remotes/origin/{branch}", env)
    verify(files, there)
    _say(f"verified {len(files)} file(s) on the remote")
    return UploadResult(url=repo_url("openxlab", repo), commits=commits, sent=sent, remote=there)


def _say(text: str) -> None:
    say(f"OpenXLab: {text}")


def _default_branch(ls_remote: str) -> tuple[str, bool]:
    """(branch to push, whether the remote is empty) from `git ls-remote --symref`: HEAD's branch, else main or
    master, else the first branch; `main` for an empty repo."""
    heads, head_target = [], None
    for line in ls_remote.splitlines():
        left, _, name = line.partition("\t")
        if left.startswith("ref: refs/heads/") and name == "HEAD":
            head_target = left.removeprefix("ref: refs/heads/")
        elif name.startswith("refs/heads/"):
            heads.append(name.removeprefix("refs/heads/"))
    if head_target in heads:
        return head_target, False
    for name in ("main", "master", *heads):
        if name in heads:
            return name, False
    return "main", True


def _fetch(work_dir: Path, branch: str, env: dict, settings: net.NetSettings) -> None:
    _network_git("fetch", "-q", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}", cwd=work_dir,
                 env=env, what="fetch", settings=settings)


def _prepare_clone(work_dir: Path, remote: str, branch: str, empty: bool, env: dict,
                   settings: net.NetSettings) -> None:
    """Make `work_dir` a clone of the remote branch (large files left as LFS pointers), reusing an earlier one."""
    if work_dir.exists() and not (work_dir / ".git").is_dir() and any(work_dir.iterdir()):
        raise InputError(f"{work_dir} exists and is not a git working copy made by publish.",
                         "remove it or choose another work_dir.")
    if (work_dir / ".git").is_dir() and (empty or subprocess.run(
            ["git", "remote", "get-url", "origin"], cwd=work_dir, env=env, capture_output=True).returncode != 0):
        # An earlier attempt may hold a commit that never reached the (still empty) remote, or was killed before
        # the copy was set up: it is only a cache of the remote, so start it again.
        shutil.rmtree(work_dir)
    if not (work_dir / ".git").is_dir():
        work_dir.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "-b", branch, cwd=work_dir, env=env, what="init")
        git("remote", "add", "origin", remote, cwd=work_dir, env=env, what="remote add")
    else:
        git("remote", "set-url", "origin", remote, cwd=work_dir, env=env, what="remote set-url")
    git("lfs", "install", "--local", cwd=work_dir, env=env, what="lfs install")
    if not empty:
        _fetch(work_dir, branch, env, settings)
        git("checkout", "-q", "-f", "-B", branch, f"refs/remotes/origin/{branch}", cwd=work_dir, env=env,
            what="checkout")
        git("clean", "-q", "-fdx", cwd=work_dir, env=env, what="clean")


def _mirror(folder: Path, files: list[StagedFile], work_dir: Path) -> None:
    """Put each staged file into the working copy (hard link when possible; files the remote has besides stay)."""
    for item in files:
        src, dst = folder / item.path, work_dir / item.path
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)  # git replaces files rather than writing into them, so a link is never edited
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)


def lfs_patterns(files: list[StagedFile], threshold: int = LFS_THRESHOLD) -> list[str]:
    """The .gitattributes patterns stored with Git LFS: weights, pictures, archives by suffix, and any other
    staged file larger than `threshold` by its path."""
    patterns = [f"*{suffix}" for suffix in LFS_SUFFIXES]
    for item in files:
        if item.size > threshold and not item.path.lower().endswith(LFS_SUFFIXES):
            patterns.append("/" + item.path.replace(" ", "[[:space:]]"))
    return patterns


def _track_large_files(work_dir: Path, files: list[StagedFile]) -> None:
    path = work_dir / ".gitattributes"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    patterns = {line.split()[0] for line in lines if line.strip() and not line.startswith("#")}
    added = [f"{p} {LFS_ATTRIBUTES}" for p in lfs_patterns(files) if p not in patterns]
    if added:
        path.write_text("\n".join(lines + added) + "\n", encoding="utf-8")


def remote_tree(work_dir: Path, ref: str, env: dict[str, str]) -> dict[str, RemoteFile]:
    """Every file of `ref` with its size and sha256; for an LFS pointer, the size and sha256 of the real file."""
    listing = git("ls-tree", "-r", "-l", "-z", ref, cwd=work_dir, env=env, what="ls-tree")
    entries = []
    for entry in filter(None, listing.split("\0")):
        meta, _, path = entry.partition("\t")
        _mode, kind, sha, _size = meta.split()
        if kind == "blob":
            entries.append((path, sha))
    found = {}
    with subprocess.Popen(["git", "cat-file", "--batch"], cwd=work_dir, env=env, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE) as reader:
        for path, sha in entries:
            reader.stdin.write(sha.encode() + b"\n")
            reader.stdin.flush()
            size = int(reader.stdout.readline().split()[2])
            digest, head, left = hashlib.sha256(), b"", size
            while left:
                chunk = reader.stdout.read(min(left, 1 << 20))
                digest.update(chunk)
                head = head or chunk[:1024]
                left -= len(chunk)
            reader.stdout.read(1)  # the newline after each object
            is_pointer = size < 1024 and head.startswith(LFS_POINTER)
            found[path] = _lfs_pointer(path, head) if is_pointer else RemoteFile(path, size, digest.hexdigest())
        reader.stdin.close()
    return found


def _lfs_pointer(path: str, pointer: bytes) -> RemoteFile:
    fields = dict(line.split(" ", 1) for line in pointer.decode().splitlines() if " " in line)
    return RemoteFile(path, int(fields["size"]), fields["oid"].removeprefix("sha256:"))


def _explain(exc: GitFailed, repo: str, remote: str, username: str, target: GitTarget = OPENXLAB,
             settings: net.NetSettings | None = None) -> PublishError:
    """The typed error for a failed git command, recognised by git's (English) message."""
    text = exc.output.lower()
    shown = redact(remote)
    settings = settings or net.NetSettings()
    kind = net.failure_kind(exc.output)
    if exc.what == "connect" or kind in net.CONNECT_FAILURES:
        return HubUnreachable(f"Cannot reach the {target.label} git server {shown}: {exc.last_line()}.",
                              f"{target.endpoint_help} On a slow network raise PUBLISH_CONNECT_TIMEOUT (now "
                              f"{settings.connect:g} s).")
    if any(s in text for s in ("authentication failed", "access denied", "returned error: 401",
                               "authorization error", "invalid username or password", "could not read username",
                               "could not read password")):
        return AuthError(f"{target.label} refused the git credentials of user '{username}' for {shown}.",
                         target.token_help)
    if "returned error: 403" in text or "permission denied" in text or "not allowed" in text:
        return AuthError(f"User '{username}' may not push to {repo} on {target.label} ({exc.last_line()}).",
                         f"use a token of the repo's owner, or a repo you own. {target.token_help}")
    if exc.what in ("ls-remote", "fetch") and any(s in text for s in (
            "not found", "does not appear to be a git repository", "returned error: 404", "does not exist")):
        return ManualStepsRequired(f"The {target.label} repo {repo} does not exist ({shown}).",
                                   target.create_help.format(repo=repo))
    if "returned error: 5" in text:
        return HubServerError(f"The {target.label} git server failed during git {exc.what} (after "
                              f"{net.retries(settings.retries)}): {exc.last_line()}",
                              "wait a little and run the same command again: it resumes, files already there are "
                              "not sent again.")
    if kind in ("read-timeout", "reset"):
        return HubUnreachable(f"The {target.label} git server {shown} stopped answering during git {exc.what} "
                              f"({net.unreachable(kind, settings)}): {exc.last_line()}",
                              "run the same command again: it resumes, files already there are not sent again; on "
                              f"a slow network raise PUBLISH_READ_TIMEOUT (now {settings.read:g} s).")
    if any(s in text for s in ("could not resolve", "failed to connect", "couldn't connect", "connection refused",
                               "timed out", "network is unreachable", "unable to access", "ssl", "proxy")):
        return HubUnreachable(f"Cannot reach the {target.label} git server {shown} ({exc.last_line()}).",
                              target.endpoint_help)
    if exc.what == "push":
        return HubRejected(f"{target.label} refused the push: {exc.last_line()}",
                           "run the same command again (it starts from the remote's latest commit); if a file is "
                           "too large, check the LFS settings of the repo.")
    return PublishError(f"git {exc.what} failed: {exc.last_line()}",
                        "run the same command again; if it fails the same way, report it with this message.")
