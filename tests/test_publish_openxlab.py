"""OpenXLab uploads with real git + git-lfs against a local HTTP git server (Basic auth + the LFS batch API), so the
GIT_ASKPASS path, LFS transfer and error mapping are exercised end to end, offline."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from finetune.errors import EnvironmentProblem
from finetune.fsutil import sha256_file
from publish.errors import AuthError, HubUnreachable, InputError, ManualStepsRequired, MissingToken
from publish.gitops import GitMissing
from publish.secrets import Secret
from publish.stage import StagedFile
from publish.upload_openxlab import lfs_patterns, openxlab_credentials, upload_openxlab
from tests import publish_helpers
from tests.git_http_server import GitHttpServer

USER, REPO = "xiaowei", "xiaowei/adapter"
CANARY = "OXCANARY" + secrets.token_hex(12)
isolated_git = publish_helpers.isolated_git  # autouse: HOME and git config of its own


@pytest.fixture
def server(tmp_path):
    with GitHttpServer(tmp_path / "server", user=USER, token=CANARY) as running:
        running.create_repo(REPO)
        yield running


@pytest.fixture
def staged(tmp_path):
    """A staging folder like `stage_adapter` writes for OpenXLab (weights are random bytes)."""
    folder = tmp_path / "run" / "publish" / "openxlab"
    folder.mkdir(parents=True)
    (folder / "README.md").write_text("# 小薇 adapter\n", encoding="utf-8")
    (folder / "adapter_config.json").write_text('{"base_model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}\n')
    (folder / "adapter_model.safetensors").write_bytes(os.urandom(300_000))
    (folder / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2_000))
    (folder / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0}}}\n')
    (folder / "metafile.yml").write_text("Collections: []\nModels: []\n")
    return folder


def _files(folder: Path) -> list[StagedFile]:
    return [StagedFile(p.name, p.stat().st_size, sha256_file(p)) for p in sorted(folder.iterdir())]


def _upload(staged: Path, server: GitHttpServer, *, token: str = CANARY, repo: str = REPO, message: str = "Upload"):
    return upload_openxlab(staged, _files(staged), repo, username=USER, token=Secret(token, "test"),
                           commit_message=message, work_dir=staged.parent / ".git-openxlab-adapter",
                           remote_url=server.repo_url(repo))


def _upload_default(staged: Path):
    """Upload to the repo under OPENXLAB_GIT_ENDPOINT (no remote_url)."""
    return upload_openxlab(staged, _files(staged), REPO, username=USER, token=Secret(CANARY, "test"),
                           commit_message="Upload adapter", work_dir=staged.parent / ".git-openxlab-adapter")


def _bare(server: GitHttpServer, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(server.repo_path(REPO)), *args], capture_output=True,
                          text=True, check=True).stdout


def test_first_push_sends_the_weights_through_lfs(staged, server, monkeypatch, capfd):
    monkeypatch.setenv("OPENXLAB_GIT_ENDPOINT", server.url)  # the default remote: endpoint + /OWNER/NAME.git
    result = _upload_default(staged)

    assert result.commits == 1
    assert result.url == "https://openxlab.org.cn/models/detail/xiaowei/adapter"
    assert set(result.sent) == {f.path for f in _files(staged)} | {".gitattributes"}
    assert _bare(server, "log", "--format=%an %s", "main").splitlines() == [f"{USER} Upload adapter"]
    assert _bare(server, "ls-tree", "--name-only", "main").split() == sorted(result.remote)
    for name in ("adapter_model.safetensors", "loss.png"):  # in git: a pointer; the bytes: in the LFS store
        data = (staged / name).read_bytes()
        oid = sha256_file(staged / name)
        assert _bare(server, "show", f"main:{name}").startswith("version https://git-lfs.github.com/spec/v1")
        assert f"oid sha256:{oid}" in _bare(server, "show", f"main:{name}")
        assert server.lfs_object(REPO, oid).read_bytes() == data
        assert result.remote[name].size == len(data) and result.remote[name].sha256 == oid
    assert _bare(server, "show", "main:README.md") == "# 小薇 adapter\n"  # text stays a plain blob
    assert result.remote["tokenizer.json"].sha256 == sha256_file(staged / "tokenizer.json")
    assert "OpenXLab: verified 6 file(s) on the remote" in capfd.readouterr().err


def test_rerun_commits_nothing_and_a_changed_readme_one_commit(staged, server):
    _upload(staged, server)
    uploads = sum(line.startswith("PUT ") for line in server.log)
    assert uploads == 2  # the safetensors and the png

    again = _upload(staged, server)
    assert (again.commits, again.sent) == (0, [])
    assert len(_bare(server, "log", "--format=%H", "main").split()) == 1

    (staged / "README.md").write_text("# 小薇 adapter\n\nNow with a card.\n", encoding="utf-8")
    changed = _upload(staged, server, message="Update card")
    assert (changed.commits, changed.sent) == (1, ["README.md"])
    assert _bare(server, "log", "--format=%s", "main").splitlines() == ["Update card", "Upload"]
    assert _bare(server, "show", "main:README.md").endswith("Now with a card.\n")
    assert sum(line.startswith("PUT ") for line in server.log) == uploads  # the weights were not sent again


def test_a_fresh_working_copy_does_not_download_the_weights(staged, server):
    _upload(staged, server)
    shutil.rmtree(staged.parent / ".git-openxlab-adapter")
    before = len(server.log)
    again = _upload(staged, server)
    assert again.commits == 0 and again.remote["adapter_model.safetensors"].size == 300_000
    assert server.log[before:] and not any("/info/lfs/" in line for line in server.log[before:])


def test_existing_master_branch_and_remote_only_files_are_kept(staged, server, tmp_path):
    """A repo created on the website may already hold files on `master`: we build on it and delete nothing."""
    bare = server.repo_path(REPO)
    seed = tmp_path / "seed"
    for args in (["init", "-q", "-b", "master", str(seed)], ["-C", str(seed), "commit", "-q", "--allow-empty",
                                                             "-m", "Initial commit"]):
        subprocess.run(["git", "-c", "user.name=site", "-c", "user.email=s@x", *args], check=True)
    (seed / "LICENSE").write_text("Apache-2.0\n")
    subprocess.run(["git", "-C", str(seed), "add", "LICENSE"], check=True)
    subprocess.run(["git", "-C", str(seed), "-c", "user.name=site", "-c", "user.email=s@x", "commit", "-q", "-m",
                    "License"], check=True)
    subprocess.run(["git", "-C", str(seed), "push", "-q", str(bare), "master"], check=True)
    subprocess.run(["git", "--git-dir", str(bare), "symbolic-ref", "HEAD", "refs/heads/master"], check=True)

    result = _upload(staged, server)
    assert result.commits == 1 and "LICENSE" in result.remote
    assert "README.md" in _bare(server, "ls-tree", "--name-only", "master")
    assert _bare(server, "log", "--format=%s", "master").splitlines() == ["Upload", "License", "Initial commit"]
    assert "main" not in _bare(server, "branch", "--format=%(refname:short)").split()


def test_a_file_remote_works_too_with_lfs(staged, tmp_path, monkeypatch):
    """git-lfs (3.x) serves file:// remotes itself: OPENXLAB_GIT_ENDPOINT may name a local folder of bare repos."""
    bare = tmp_path / "hub" / f"{REPO}.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    monkeypatch.setenv("OPENXLAB_GIT_ENDPOINT", (tmp_path / "hub").as_uri())
    result = _upload_default(staged)
    assert result.commits == 1
    oid = sha256_file(staged / "adapter_model.safetensors")
    assert (bare / "lfs" / "objects" / oid[:2] / oid[2:4] / oid).read_bytes() == \
        (staged / "adapter_model.safetensors").read_bytes()
    with pytest.raises(ManualStepsRequired):
        upload_openxlab(staged, _files(staged), "xiaowei/missing", username=USER, token=Secret(CANARY, "test"),
                        commit_message="x", work_dir=tmp_path / "wc")


def test_a_working_copy_is_rebuilt_for_an_empty_remote(staged, server):
    """A working copy whose commit never reached the (still empty) remote is started again, not pushed as is."""
    server.create_repo("xiaowei/other")
    _upload(staged, server)
    result = _upload(staged, server, repo="xiaowei/other", message="Fresh")
    assert result.commits == 1
    log = subprocess.run(["git", "--git-dir", str(server.repo_path("xiaowei/other")), "log", "--format=%s", "main"],
                         capture_output=True, text=True, check=True).stdout
    assert log.splitlines() == ["Fresh"]


def test_a_password_in_the_git_url_is_refused(staged, monkeypatch):
    monkeypatch.setenv("OPENXLAB_GIT_ENDPOINT", f"https://{USER}:{CANARY}@code.example")
    with pytest.raises(InputError) as caught:
        upload_openxlab(staged, _files(staged), REPO, username=USER, token=Secret(CANARY, "test"),
                        commit_message="x", work_dir=staged.parent / "wc")
    assert CANARY not in caught.value.one_line() and "OPENXLAB_GIT_TOKEN" in caught.value.fix
    assert not (staged.parent / "wc").exists()


def test_token_goes_only_through_askpass_and_is_never_written(staged, server, isolated_git, monkeypatch, capfd):
    argv_seen = []
    real_popen = subprocess.Popen

    class RecordingPopen(real_popen):
        def __init__(self, args, *rest, **kwargs):
            argv_seen.append(" ".join(map(str, args)))
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", RecordingPopen)
    _upload(staged, server)
    (staged / "README.md").write_text("changed\n")
    _upload(staged, server)

    assert set(server.auth_seen) == {(USER, CANARY)}  # git and git-lfs both asked GIT_ASKPASS
    assert any(line.startswith("POST /xiaowei/adapter.git/info/lfs/objects/batch 200") for line in server.log)
    assert argv_seen and not any(CANARY in argv for argv in argv_seen)
    output = capfd.readouterr()
    assert "OpenXLab: " in output.err and CANARY not in output.out + output.err
    assert not (isolated_git / "stored-credentials").exists()  # the user's credential helper was never asked
    assert not any((isolated_git / "global-hooks").iterdir())  # git-lfs hooks went into the working copy only
    work_dir = staged.parent / ".git-openxlab-adapter"
    assert "@127.0.0.1" not in (work_dir / ".git" / "config").read_text()  # no user or token in any URL
    for root in (work_dir, server.root, isolated_git):
        for path in root.rglob("*"):
            assert not path.is_file() or CANARY.encode() not in path.read_bytes(), path


def test_wrong_token_is_an_auth_error(staged, server, capfd):
    wrong = "OXCANARYwrong" + secrets.token_hex(8)
    with pytest.raises(AuthError) as caught:
        _upload(staged, server, token=wrong)
    text = caught.value.one_line()
    assert "OPENXLAB_GIT_TOKEN" in text and "密钥管理" in text and USER in text
    assert (USER, wrong) in server.auth_seen
    output = capfd.readouterr()
    assert wrong not in text + str(caught.value) + output.out + output.err


def test_missing_repo_says_create_it_on_openxlab_first(staged, server):
    with pytest.raises(ManualStepsRequired) as caught:
        _upload(staged, server, repo="xiaowei/nope")
    assert "xiaowei/nope does not exist" in caught.value.message
    assert "create it first on https://openxlab.org.cn" in caught.value.fix
    assert not (staged.parent / ".git-openxlab-adapter").exists()


def test_unreachable_server_names_the_endpoint_variable(staged):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before git connects: nothing listens there
    with pytest.raises(HubUnreachable) as caught:
        upload_openxlab(staged, _files(staged), REPO, username=USER, token=Secret(CANARY, "test"),
                        commit_message="x", work_dir=staged.parent / "wc", remote_url=f"http://127.0.0.1:{port}/x.git")
    assert "OPENXLAB_GIT_ENDPOINT" in caught.value.fix


def test_credentials_come_from_the_environment(monkeypatch):
    with pytest.raises(MissingToken) as caught:
        openxlab_credentials()
    assert "OPENXLAB_GIT_USER and OPENXLAB_GIT_TOKEN" in caught.value.message and "密钥管理" in caught.value.fix
    monkeypatch.setenv("OPENXLAB_GIT_USER", USER)
    with pytest.raises(MissingToken, match="OPENXLAB_GIT_TOKEN not set"):
        openxlab_credentials()
    monkeypatch.setenv("OPENXLAB_GIT_TOKEN", f" {CANARY}\n")
    username, token = openxlab_credentials()
    assert (username, token.reveal(), str(token)) == (USER, CANARY, "***")


def test_missing_git_is_an_environment_problem(staged, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(GitMissing) as caught:
        upload_openxlab(staged, _files(staged), REPO, username=USER, token=Secret(CANARY, "test"),
                        commit_message="x", work_dir=tmp_path / "wc", remote_url="http://127.0.0.1:9/x.git")
    assert isinstance(caught.value, EnvironmentProblem) and "apt-get install git git-lfs" in caught.value.fix


def test_lfs_patterns_cover_weights_by_suffix_and_other_big_files_by_path():
    files = [StagedFile("tokenizer.json", 8 * 2**20, "0"), StagedFile("config.json", 900, "0"),
             StagedFile("model-00001-of-00002.safetensors", 10**9, "0"), StagedFile("sub dir/big.txt", 6 * 2**20, "0")]
    patterns = lfs_patterns(files)
    assert {"*.safetensors", "*.bin", "*.png", "*.model", "/tokenizer.json", "/sub[[:space:]]dir/big.txt"} <= \
        set(patterns)
    assert not any("config.json" in p or "model-00001" in p for p in patterns)
