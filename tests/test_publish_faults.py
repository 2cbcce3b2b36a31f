"""Fault injection: `python -m publish adapter RUN` is SIGKILLed (with every git and git-lfs process it started) at a
seeded random request of its upload to a local hub, then run again. After each kill nothing is left in the system's
temporary folder, and the rerun leaves no temporary file, finishes with the remote exactly as an uninterrupted upload
leaves it, and does not send again what already reached the hub (LFS objects, files already committed).

The kill comes when request number N (1 <= N <= the requests of an uninterrupted upload) has reached the server,
which then either drops it or carries it out with nobody left to hear the answer (a commit or a push applied, the
client killed before it knew). PUBLISH_FAULT_RUNS=20 runs more kills per hub (default 2)."""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest
from fake_hf_hub import FakeHub
from fake_modelscope import FakeModelScope
from net_servers import BlackHole, closed_port_url

from publish import cli
from tests import publish_helpers
from tests.git_http_server import GitHttpServer
from tests.publish_helpers import make_run

ROOT = Path(__file__).resolve().parents[1]
HF_TOKEN = "hf_FAULTtokenZZZZZZZZZZZZZZZZZZZZZZZZ"
MS_TOKEN = "ms-" + str(uuid.uuid4())
OX_TOKEN = "OXfault" + uuid.uuid4().hex
REPO = "alice/xiaowei"
RUNS = int(os.environ.get("PUBLISH_FAULT_RUNS", "2"))
tiny = publish_helpers.tiny
isolated_git = publish_helpers.isolated_git


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, isolated_git):
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_ENDPOINT", "MODELSCOPE_API_TOKEN",
                 "MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN", "OPENXLAB_GIT_ENDPOINT", "PUBLISH_CONNECT_TIMEOUT",
                 "PUBLISH_READ_TIMEOUT", "PUBLISH_RETRIES", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("PUBLISH_RETRY_BACKOFF", "0")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


class Hub:
    """One fake hub of a kind, the environment that points publish at it, and what it holds."""

    def __init__(self, kind: str, tmp: Path, monkeypatch):
        self.kind, self.tmp, self.monkeypatch = kind, tmp, monkeypatch
        if kind == "hf":
            self.server = FakeHub({HF_TOKEN: "alice"})
        elif kind == "modelscope":
            self.server = FakeModelScope({MS_TOKEN: "alice"})
        else:
            self.server = GitHttpServer(tmp / "git-server", user="alice", token=OX_TOKEN)
        self.server.__enter__()
        if kind == "openxlab":
            self.server.create_repo(REPO)

    def close(self) -> None:
        self.server.__exit__(None, None, None)

    def env(self) -> dict[str, str]:
        return {"hf": {"HF_ENDPOINT": self.server.url, "HF_TOKEN": HF_TOKEN},
                "modelscope": {"MODELSCOPE_ENDPOINT": self.server.url, "MODELSCOPE_API_TOKEN": MS_TOKEN},
                "openxlab": {"OPENXLAB_GIT_ENDPOINT": self.server.url, "OPENXLAB_GIT_USER": "alice",
                             "OPENXLAB_GIT_TOKEN": OX_TOKEN}}[self.kind]

    def point_here(self) -> None:
        """Make this process publish to this hub (for in-process runs)."""
        from huggingface_hub import constants

        for key, value in self.env().items():
            self.monkeypatch.setenv(key, value)
        if self.kind == "hf":  # huggingface_hub read HF_ENDPOINT when it was imported
            self.monkeypatch.setattr(constants, "ENDPOINT", self.server.url)

    def contents(self) -> dict[str, bytes]:
        """path -> bytes of every file the repo holds (for git: the blob, an LFS pointer for weights)."""
        if self.kind == "hf":
            repo = self.server.repos.get(("model", REPO))
            return {p: b.data for p, b in repo.files.items()} if repo else {}
        if self.kind == "modelscope":
            repo = self.server.repos.get(("models", REPO))
            return dict(repo.files) if repo else {}
        archive = subprocess.run(["git", "--git-dir", str(self.server.repo_path(REPO)), "archive", "--format=tar",
                                  "main"], capture_output=True).stdout
        if not archive:
            return {}
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}

    def files(self) -> dict[str, str]:
        """path -> sha256 of each file, this hub's own address written as <endpoint> (the card names it)."""
        url = self.server.url.encode()
        return {p: hashlib.sha256(data.replace(url, b"<endpoint>")).hexdigest() for p, data in self.contents().items()}

    def objects(self) -> set[str]:
        """The large-file objects (sha256) the hub stores."""
        if self.kind == "hf":
            return set(self.server.lfs)
        if self.kind == "modelscope":
            return set(self.server.blobs)
        store = self.server.repo_path(REPO) / "lfs-store"
        return {p.name for p in store.iterdir()} if store.is_dir() else set()

    def uploads(self) -> list[str]:
        """The object ids of every large-file upload request so far, in order."""
        if self.kind == "hf":
            return [p.rsplit("/", 1)[1] for m, p in self.server.requests if m == "PUT"]
        if self.kind == "modelscope":
            return [p.rsplit("/", 1)[1] for m, p in self.server.requests if m == "PUT"]
        return [line.split()[1].rsplit("/", 1)[1] for line in self.server.log if line.startswith("PUT ")]

    def commits(self) -> list[list[str]]:
        """The paths each commit carried (HF, ModelScope; not asked of git, where a commit holds the whole tree)."""
        if self.kind == "openxlab":
            return []
        if self.kind == "hf":
            repo = self.server.repos.get(("model", REPO))
            return [c.sent for c in repo.commits[1:]] if repo else []
        repo = self.server.repos.get(("models", REPO))
        return [c["paths"] for c in repo.commits] if repo else []


def _publish_in_process(run: Path, hub: str, capsys) -> tuple[int, str]:
    code = cli.main(["adapter", str(run), "--to", hub, "--repo", REPO])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _leftovers(*roots: Path) -> list[Path]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if "finetune-tmp" in path.name or path.name.endswith(".old"):
                found.append(path)
    return found


@pytest.mark.parametrize("hub", ["hf", "modelscope", "openxlab"])
def test_a_kill_at_a_random_request_then_a_rerun_ends_as_an_uninterrupted_upload(hub, tmp_path, tiny, monkeypatch,
                                                                                capsys):
    # The reference: an uninterrupted upload, counting the requests it makes.
    reference = Hub(hub, tmp_path / "reference", monkeypatch)
    seen = []
    reference.server.on_request = lambda method, path: seen.append((method, path)) and False
    reference.point_here()
    code, output = _publish_in_process(make_run(tmp_path / "reference", tiny), hub, capsys)
    assert code == 0, output
    expected, total = reference.files(), len(seen)
    reference.close()
    assert total >= 5 and len(expected) >= 8

    for attempt in range(RUNS):
        kill_at = random.Random(f"{hub}-{attempt}").randint(1, total)
        drop = attempt % 2 == 1  # the killed request: carried out, then dropped, in turn
        where = tmp_path / f"try{attempt}"
        run = make_run(where, tiny)
        child_tmp = where / "tmp"
        child_tmp.mkdir()
        target = Hub(hub, where, monkeypatch)
        child = subprocess.Popen(
            [sys.executable, "-m", "publish", "adapter", str(run), "--to", hub, "--repo", REPO], cwd=ROOT,
            env={**os.environ, **target.env(), "TMPDIR": str(child_tmp), "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        count, killed = 0, []

        def kill(method, path, child=child, kill_at=kill_at, drop=drop, killed=killed):
            nonlocal count
            count += 1
            if count != kill_at:
                return False
            killed += [method, path]
            os.killpg(child.pid, signal.SIGKILL)  # publish and every git / git-lfs process under it
            child.wait()
            return drop

        target.server.on_request = kill
        try:
            child_output = child.communicate(timeout=120)[0].decode("utf-8", "replace")
        finally:
            target.server.on_request = None
        context = f"{hub}: killed at request {kill_at} of {total} ({'dropped' if drop else 'carried out'})"
        context += f": {' '.join(killed)}"
        assert child.returncode == -signal.SIGKILL, f"{context}: the upload ended first:\n{child_output}"
        assert not list(child_tmp.iterdir()), f"{context}: left in the temporary folder: {list(child_tmp.iterdir())}"
        time.sleep(0.3)  # a request carried out after the kill: let the server finish it
        held, objects, puts, commits = target.contents(), target.objects(), len(target.uploads()), len(target.commits())

        target.point_here()
        code, output = _publish_in_process(run, hub, capsys)

        assert code == 0, f"{context}:\n{output}"
        assert "the remote matches the staging folder" in output, context
        assert target.files() == expected, context
        assert not _leftovers(run, child_tmp), f"{context}: {_leftovers(run, child_tmp)}"
        for token in (HF_TOKEN, MS_TOKEN, OX_TOKEN):  # in no output and no file written, the killed run's too
            assert token not in child_output + output, context
            assert not [path for path in tmp_path.rglob("*") if path.is_file() and token.encode() in path.read_bytes()]
        resent = set(target.uploads()[puts:]) & objects
        assert not resent, f"{context}: objects the hub already had were sent again: {resent}"
        if hub != "openxlab":
            staged = run / "publish" / hub
            there = {p for p, data in held.items() if (staged / p).is_file() and (staged / p).read_bytes() == data}
            again = {p for paths in target.commits()[commits:] for p in paths} & there
            assert not again, f"{context}: files already on the hub were committed again: {again}"
        target.close()


# ------------------------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("hub", ["hf", "modelscope", "openxlab"])
def test_cli_unreachable_hub_is_one_line_and_exit_2(hub, tmp_path, tiny, monkeypatch, capsys):
    url = closed_port_url()
    variable = {"hf": "HF_ENDPOINT", "modelscope": "MODELSCOPE_ENDPOINT", "openxlab": "OPENXLAB_GIT_ENDPOINT"}[hub]
    monkeypatch.setenv(variable, url)
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", MS_TOKEN)
    monkeypatch.setenv("OPENXLAB_GIT_USER", "alice")
    monkeypatch.setenv("OPENXLAB_GIT_TOKEN", OX_TOKEN)
    if hub == "hf":
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", url)
    run = make_run(tmp_path, tiny)

    code, output = _publish_in_process(run, hub, capsys)

    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and errors[0] == output.splitlines()[-1]
    assert "connection refused" in errors[0] and variable in errors[0].split(" Fix: ")[1]
    assert "PUBLISH_CONNECT_TIMEOUT (now 4 s)" in errors[0]
    for token in (HF_TOKEN, MS_TOKEN, OX_TOKEN):
        assert token not in output


def test_cli_modelscope_host_that_never_connects_fails_within_5_s_with_the_defaults(tmp_path, tiny, monkeypatch,
                                                                                    capsys):
    """The report of issue 14 (16 s), through `python -m publish` with the default settings."""
    monkeypatch.delenv("PUBLISH_RETRY_BACKOFF")
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", MS_TOKEN)
    run = make_run(tmp_path, tiny)
    with BlackHole() as hole:
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", hole.url)
        start = time.monotonic()
        code, output = _publish_in_process(run, "modelscope", capsys)
        seconds = time.monotonic() - start
    assert code == 2 and seconds <= 5, (seconds, output)
    assert output.splitlines()[-1] == (
        f"error: Cannot reach ModelScope at {hole.url} (no connection within 4 s) while signing in. Fix: check "
        f"MODELSCOPE_ENDPOINT (now {hole.url}) and the network or proxy (HTTPS_PROXY); on a slow network raise "
        "PUBLISH_CONNECT_TIMEOUT (now 4 s). The hosts: https://modelscope.cn, or https://modelscope.ai "
        "(international).")


# ------------------------------------------------------------------------------------------- OpenXLab's working copy


def test_what_a_killed_git_left_in_the_working_copy_is_cleared(tmp_path, capfd):
    """A kill while git held a lock (git add, commit, fetch) leaves the lock; the next run removes it (and the dead
    run's askpass script), and refuses a copy that a live publish is using."""
    from publish.errors import InputError
    from publish.secrets import Secret
    from publish.stage import StagedFile
    from publish.upload_openxlab import upload_openxlab

    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "README.md").write_text("# one\n")
    work_dir = tmp_path / ".git-openxlab"

    def upload():
        files = [StagedFile("README.md", (staged / "README.md").stat().st_size,
                            hashlib.sha256((staged / "README.md").read_bytes()).hexdigest())]
        return upload_openxlab(staged, files, REPO, username="alice", token=Secret(OX_TOKEN, "test"),
                               commit_message="Upload", work_dir=work_dir, remote_url=server.repo_url(REPO))

    with GitHttpServer(tmp_path / "git-server", user="alice", token=OX_TOKEN) as server:
        server.create_repo(REPO)
        upload()
        dead = subprocess.Popen(["true"])
        dead.wait()
        (work_dir / ".git" / "index.lock").write_text("")
        (work_dir / ".git" / "refs" / "remotes" / "origin" / "main.lock").write_text("")
        leftover = tmp_path / f"..git-openxlab.askpass.finetune-tmp.{dead.pid}.abc123"
        leftover.write_text("#!/bin/sh\n")
        (staged / "README.md").write_text("# two\n")

        assert upload().commits == 1
        err = capfd.readouterr().err
        assert "removed 2 lock or temporary file(s) an interrupted git left in" in err
        assert "removed a leftover temporary file from an interrupted run" in err and not leftover.exists()
        assert not list((work_dir / ".git").rglob("*.lock"))

        alive = tmp_path / f"..git-openxlab.askpass.finetune-tmp.{os.getppid()}.abc123"
        alive.write_text("#!/bin/sh\n")
        with pytest.raises(InputError) as busy:
            upload()
        assert f"Another publish (process {os.getppid()}) is uploading through {work_dir}" in busy.value.message
        assert alive.exists() and (work_dir / ".git").is_dir()
