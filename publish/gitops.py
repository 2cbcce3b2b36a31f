"""Run git and git-lfs for an upload. The token reaches git only through GIT_ASKPASS, a script that prints a variable
of the child's environment: never argv, a URL, a config file or a credential store (helpers are switched off)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from finetune.errors import EnvironmentProblem

from . import net
from .errors import PublishError
from .secrets import Secret, redact

USER_VAR, TOKEN_VAR = "PUBLISH_GIT_USER", "PUBLISH_GIT_TOKEN"  # set in the git child's environment only
ASKPASS = f"""#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "${USER_VAR}" ;;
  *) printf '%s\\n' "${TOKEN_VAR}" ;;
esac
"""
CONFIG = {
    "credential.helper": "",  # no helper: nothing asks a keychain, nothing stores the token
    "lfs.locksverify": "false",  # the lock API is optional; without this git-lfs warns on every push
    # The working copy's own hooks: git-lfs installs its pre-push hook there, never in a global hooks folder, and
    # the user's global hooks do not run on our commits.
    "core.hooksPath": ".git/hooks",
}
INSTALL = "install them: sudo apt-get install git git-lfs (Debian/Ubuntu) or brew install git git-lfs (macOS)."


class GitMissing(PublishError, EnvironmentProblem):
    """git or git-lfs is not installed."""


class GitFailed(Exception):
    """A git command failed; `output` is its stderr, already redacted. Uploaders turn it into a PublishError."""

    def __init__(self, what: str, output: str):
        super().__init__(f"git {what} failed: {output}")
        self.what, self.output = what, output

    def last_line(self) -> str:
        lines = [line.strip() for line in self.output.replace("\r", "\n").splitlines() if line.strip()]
        return lines[-1] if lines else "(no message)"


def require_git() -> None:
    if shutil.which("git") is None:
        raise GitMissing("git is not installed (OpenXLab models are uploaded with git and git-lfs).", INSTALL)
    if subprocess.run(["git", "lfs", "version"], capture_output=True).returncode != 0:
        raise GitMissing("git-lfs is not installed (OpenXLab stores the weights with Git LFS).", INSTALL)


def write_askpass(path: Path) -> Path:
    """Write the GIT_ASKPASS script to `path` (it holds no secret: it prints the child's environment variables)."""
    path.write_text(ASKPASS, encoding="utf-8")
    path.chmod(0o700)
    return path


def git_env(username: str, token: Secret, askpass: Path, settings: net.NetSettings | None = None) -> dict[str, str]:
    """The environment for every git call of one upload: credentials for the askpass script, English messages
    (errors are recognised by their text), large files left unsmudged on checkout, and the network policy's
    timeouts and retries for git and git-lfs (publish/net.py)."""
    env = dict(os.environ)
    env.update({"GIT_ASKPASS": str(askpass), "GIT_TERMINAL_PROMPT": "0", USER_VAR: username,
                TOKEN_VAR: token.reveal(), "GIT_LFS_SKIP_SMUDGE": "1", "LC_ALL": "C"})
    config = {**CONFIG, **net.git_config(settings or net.NetSettings())}
    count = int(env.get("GIT_CONFIG_COUNT") or 0)
    for offset, (key, value) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{count + offset}"], env[f"GIT_CONFIG_VALUE_{count + offset}"] = key, value
    env["GIT_CONFIG_COUNT"] = str(count + len(config))
    return env


def git(*args: str, cwd: Path, env: dict[str, str], what: str, progress: bool = False,
        timeout: float | None = None) -> str:
    """Run `git ARGS` and return its stdout; raise GitFailed with the redacted stderr. With `progress`, both streams
    are shown on stderr as they come (git-lfs's upload progress comes on the pre-push hook's stdout) and "" returned."""
    if not progress:
        try:
            done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise GitFailed(what, f"timed out after {timeout:.0f} s (could not connect)") from None
        if done.returncode != 0:
            raise GitFailed(what, redact(done.stderr.decode("utf-8", "replace")))
        return done.stdout.decode("utf-8", "replace")
    seen = []
    with subprocess.Popen(["git", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        while chunk := os.read(proc.stdout.fileno(), 65536):
            text = redact(chunk.decode("utf-8", "replace"))
            seen.append(text)
            sys.stderr.write(text)
            sys.stderr.flush()
    if proc.returncode != 0:
        raise GitFailed(what, "".join(seen))
    return ""


def identity_env(cwd: Path, env: dict[str, str], username: str) -> dict[str, str]:
    """Commit as the user's git identity, or as the OpenXLab user when git has none configured."""
    def configured(key: str) -> str:
        done = subprocess.run(["git", "config", "--get", key], cwd=cwd, env=env, capture_output=True, text=True)
        return done.stdout.strip()

    env = dict(env)
    name = configured("user.name") or username
    email = configured("user.email") or f"{username}@openxlab.invalid"  # .invalid: reserved, never delivered
    for role in ("AUTHOR", "COMMITTER"):
        env.setdefault(f"GIT_{role}_NAME", name)
        env.setdefault(f"GIT_{role}_EMAIL", email)
    return env
