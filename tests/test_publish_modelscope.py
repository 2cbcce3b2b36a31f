"""ModelScope uploads: the real modelscope-hub client against the local fake hub in tests/fake_modelscope.py."""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from pathlib import Path

import pytest
from modelscope_hub import HubConfig, _legacy_api, _openapi, _upload

from publish.errors import AuthError, HubServerError, HubUnreachable, MissingToken, RepoNameTaken
from publish.secrets import Secret
from publish.stage import StagedFile
from publish.upload_modelscope import modelscope_token, upload_modelscope
from tests.fake_modelscope import FakeModelScope
from tests.publish_helpers import NoWait

TOKEN = "ms-" + str(uuid.uuid4())  # the shape of a real token: a canary that must never show up
OTHER_TOKEN = "ms-" + str(uuid.uuid4())
FILES = {
    "README.md": b"---\nlibrary_name: peft\n---\n# Xiaowei adapter\n",
    "configuration.json": b'{"framework": "pytorch", "task": "text-generation", "allow_remote": true}\n',
    "adapter_config.json": b'{"r": 8, "lora_alpha": 16, "base_model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}\n',
    "adapter_model.safetensors": bytes(range(256)) * 24,  # 6 KiB: goes through LFS by its suffix
}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    for module in (_openapi, _legacy_api, _upload):
        monkeypatch.setattr(module, "time", NoWait())
    for name in ("MODELSCOPE_API_TOKEN", "MODELSCOPE_DOMAIN", "MODELSCOPE_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("PUBLISH_RETRY_BACKOFF", "0")  # our transport retries (publish/net.py), without their waits
    with FakeModelScope({TOKEN: "alice", OTHER_TOKEN: "bob"}) as fake:
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", fake.url)
        yield fake
    assert fake.unknown == []  # the client called nothing the fake does not implement


def stage(folder: Path, files: dict[str, bytes] = FILES) -> list[StagedFile]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).unlink(missing_ok=True)
        (folder / name).write_bytes(data)
    return [StagedFile(name, len(data), hashlib.sha256(data).hexdigest()) for name, data in sorted(files.items())]


def upload(folder, files, repo="alice/xiaowei", token=TOKEN, **kwargs):
    return upload_modelscope(folder, files, repo, token=Secret(token, "test"), commit_message="Upload adapter",
                             **kwargs)


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def writes(fake: FakeModelScope) -> int:
    return fake.count("PUT", "/lfs/") + fake.count("POST", "/commit/") + fake.count("POST", "/lfs/objects/batch")


def test_first_upload_stores_identical_files_in_one_commit(hub, tmp_path, capsys):
    files = stage(tmp_path / "staged")
    result = upload(tmp_path / "staged", files, private=True)

    repo = hub.repo("alice/xiaowei")
    assert repo.files == FILES
    assert repo.private and repo.settings["Visibility"] == 1
    assert [c["paths"] for c in repo.commits] == [sorted(FILES)]
    assert hub.count("PUT", "/lfs/") == 1  # the weights went through LFS, the rest inline
    assert result.commits == 1 and sorted(result.sent) == sorted(FILES)
    assert result.url == f"{hub.url}/models/alice/xiaowei"
    assert {p: (f.size, f.sha256) for p, f in result.remote.items()} == {f.path: (f.size, f.sha256) for f in files}
    captured = capsys.readouterr()
    assert "uploading 4 file(s)" in captured.err and captured.out == ""


def test_rerun_makes_no_commit_and_sends_nothing(hub, tmp_path):
    files = stage(tmp_path / "staged")
    upload(tmp_path / "staged", files)
    before = writes(hub)

    result = upload(tmp_path / "staged", files)

    assert result.commits == 0 and result.sent == []
    assert len(hub.repo("alice/xiaowei").commits) == 1
    assert writes(hub) == before


def test_changed_readme_makes_one_commit_with_only_it(hub, tmp_path):
    upload(tmp_path / "staged", stage(tmp_path / "staged"))
    changed = {**FILES, "README.md": b"# Xiaowei adapter, second card\n"}

    result = upload(tmp_path / "staged", stage(tmp_path / "staged", changed))

    commits = hub.repo("alice/xiaowei").commits
    assert result.commits == 1 and result.sent == ["README.md"]
    assert len(commits) == 2 and commits[-1]["paths"] == ["README.md"]
    assert hub.repo("alice/xiaowei").files == changed


def test_nothing_is_written_inside_the_staged_folder(hub, tmp_path):
    originals = tmp_path / "run" / "adapter"
    files = stage(originals)
    staged = tmp_path / "staged"
    staged.mkdir()
    for name in FILES:  # staging hard-links the run's files
        os.link(originals / name, staged / name)
    before, before_originals = listing(staged), listing(originals)

    hub.fail("POST", "/commit/", times=None)  # a failing run must not leave a resume cache behind either
    with pytest.raises(HubServerError):
        upload(staged, files)
    hub.failures.clear()
    upload(staged, files)

    assert listing(staged) == before and listing(originals) == before_originals


def test_studio_gets_variables_secret_and_deploy(hub, tmp_path):
    app = {"app.py": b"import gradio as gr\n", "requirements.txt": b"peft\n", "README.md": b"# demo\n"}
    files = stage(tmp_path / "app", app)
    hf_token = Secret("hf_" + "a" * 30, "test")

    result = upload(tmp_path / "app", files, repo="alice/xiaowei-demo", repo_type="studio",
                    studio_variables={"ADAPTER_ID": "alice/xiaowei"}, studio_secrets={"HF_TOKEN": hf_token},
                    deploy=True, hardware="paid/xgpu")

    studio = hub.repo("alice/xiaowei-demo", "studios")
    assert studio.files == app and len(studio.commits) == 1
    assert studio.settings["sdk_type"] == "gradio" and studio.settings["hardware"] == "paid/xgpu"
    assert studio.settings["visibility"] == "public"
    assert studio.variables == {"ADAPTER_ID": "alice/xiaowei"}
    assert studio.secrets == {"HF_TOKEN": hf_token.reveal()}
    assert studio.deploys == 1
    assert result.url == f"{hub.url}/studios/alice/xiaowei-demo"

    new_token = Secret("hf_" + "b" * 30, "test")
    again = upload(tmp_path / "app", files, repo="alice/xiaowei-demo", repo_type="studio",
                   studio_secrets={"HF_TOKEN": new_token}, deploy=True)
    assert again.commits == 0 and studio.secrets == {"HF_TOKEN": new_token.reveal()} and studio.deploys == 2


def test_a_single_500_is_retried_by_the_client(hub, tmp_path):
    hub.fail("POST", "/commit/", times=1)

    result = upload(tmp_path / "staged", stage(tmp_path / "staged"))

    assert result.commits == 1 and hub.repo("alice/xiaowei").files == FILES


def test_failing_upload_raises_and_the_rerun_sends_only_the_rest(hub, tmp_path):
    files = stage(tmp_path / "staged")
    hub.fail("PUT", "/lfs/", times=None)  # the weights' blob store is down for this run

    with pytest.raises(HubServerError) as failed:
        upload(tmp_path / "staged", files)

    assert "again" in failed.value.fix
    assert sorted(hub.repo("alice/xiaowei").files) == ["README.md", "adapter_config.json", "configuration.json"]
    hub.failures.clear()
    result = upload(tmp_path / "staged", files)
    assert result.sent == ["adapter_model.safetensors"] and result.commits == 1
    assert hub.repo("alice/xiaowei").files == FILES


def test_token_from_env_or_saved_login_else_missing(hub, monkeypatch):
    with pytest.raises(MissingToken) as missing:
        modelscope_token()
    assert "MODELSCOPE_API_TOKEN" in missing.value.message and "modelscope.cn/my/myaccesstoken" in missing.value.fix

    HubConfig(endpoint=hub.url, token="").save_token(OTHER_TOKEN)  # what a login leaves in $MODELSCOPE_HOME
    assert modelscope_token().reveal() == OTHER_TOKEN

    monkeypatch.setenv("MODELSCOPE_API_TOKEN", TOKEN)
    found = modelscope_token()
    assert found.reveal() == TOKEN and found.source == "MODELSCOPE_API_TOKEN"


def test_bad_token_is_an_auth_error(hub, tmp_path):
    with pytest.raises(AuthError) as error:
        upload(tmp_path / "staged", stage(tmp_path / "staged"), token="ms-" + str(uuid.uuid4()))
    assert "MODELSCOPE_API_TOKEN" in error.value.fix
    assert hub.repos == {}


def test_repo_of_another_owner_is_taken(hub, tmp_path):
    files = stage(tmp_path / "staged")
    hub.add_repo("models", "bob/xiaowei", files={"README.md": b"bob's"})

    with pytest.raises(RepoNameTaken) as existing:
        upload(tmp_path / "staged", files, repo="bob/xiaowei")
    with pytest.raises(RepoNameTaken) as namespace:
        upload(tmp_path / "staged", files, repo="bob/new-model")

    assert "alice/xiaowei" in existing.value.fix and "alice/new-model" in namespace.value.fix
    assert hub.repo("bob/xiaowei").files == {"README.md": b"bob's"} and ("models", "bob/new-model") not in hub.repos


def test_refusal_answered_with_http_200_is_caught(tmp_path, hub):
    hub.soft_create_errors = True  # {"Success": false} with HTTP 200: the client does not raise

    with pytest.raises(RepoNameTaken):
        upload(tmp_path / "staged", stage(tmp_path / "staged"), repo="bob/xiaowei")


def test_server_down_is_unreachable(hub, tmp_path, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", down)

    with pytest.raises(HubUnreachable) as error:
        upload(tmp_path / "staged", stage(tmp_path / "staged"))

    assert down in error.value.message and "MODELSCOPE_ENDPOINT" in error.value.fix


def test_token_never_shows(hub, tmp_path, capsys, caplog):
    caplog.set_level("DEBUG")
    files = stage(tmp_path / "staged")
    errors = []
    upload(tmp_path / "staged", files, repo_type="studio", repo="alice/demo", deploy=True,
           studio_secrets={"MS_TOKEN": Secret(TOKEN, "test")})
    hub.fail("PUT", "/lfs/", times=None)
    for call in (lambda: upload(tmp_path / "staged", files, repo="alice/other"),
                 lambda: upload(tmp_path / "staged", files, repo="bob/xiaowei"),
                 lambda: upload(tmp_path / "staged", files, token="ms-" + str(uuid.uuid4()))):
        with pytest.raises(Exception) as error:
            call()
        errors.append(error.value)

    captured = capsys.readouterr()
    texts = [captured.out, captured.err, caplog.text] + [f"{e!s} {e!r} {e.one_line()}" for e in errors]
    assert "ModelScope:" in captured.err and len(errors) == 3
    assert all(TOKEN not in text for text in texts)
    for path in tmp_path.rglob("*"):  # MODELSCOPE_HOME, the caches and the staged folder included
        assert path.is_dir() or TOKEN.encode() not in path.read_bytes(), path
