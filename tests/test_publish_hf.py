"""Uploads to the Hugging Face Hub: the real huggingface_hub client against the local fake in fake_hf_hub.py
(offline, CPU). Idempotence, resumable multi-commit uploads, Spaces, the error mapping and a token canary."""

from __future__ import annotations

import hashlib
import logging
import socket
import traceback
from pathlib import Path

import pytest
from fake_hf_hub import FakeHub

from publish.errors import (
    AuthError,
    HubRejected,
    HubServerError,
    HubUnreachable,
    MissingToken,
    PaymentRequired,
    PublishError,
    RemoteMismatch,
    RepoNameTaken,
)
from publish.secrets import Secret
from publish.stage import StagedFile
from publish.upload_hf import hf_token, upload_hf
from tests import publish_helpers
from tests.publish_helpers import make_run

TOKEN = "hf_testtokenAAAAAAAAAAAAAAAAAAAA"
CANARY = "hf_CANARYtokenZZZZZZZZZZZZZZZZZZZZ"
REPO = "alice/xiaowei-adapter"
tiny = publish_helpers.tiny  # the tiny random model, adapter and run folder of the staging tests
README = "---\nlicense: apache-2.0\nlibrary_name: peft\ntags: [lora, peft]\n---\n# Xiaowei adapter\n"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("PUBLISH_RETRY_BACKOFF", "0")  # transient errors are retried (publish/net.py): no waits here


PERSISTENT = 4  # answers that outlast the 3 retries of publish/net.py


@pytest.fixture
def hub(monkeypatch):
    from huggingface_hub import constants

    with FakeHub({TOKEN: "alice", CANARY: "alice"}, payment_required={"alice/paid-demo"}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        # As if HF_ENDPOINT had been set before huggingface_hub was imported (it parses commit URLs with it).
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        yield server


def _listing(folder: Path) -> list[StagedFile]:
    return [StagedFile(p.relative_to(folder).as_posix(), p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()]


@pytest.fixture
def staged(tmp_path):
    folder = tmp_path / "staged"
    folder.mkdir()
    (folder / "README.md").write_text(README, encoding="utf-8")
    (folder / "adapter_config.json").write_text('{"r": 4, "base_model_name_or_path": "HuggingFaceTB/SmolLM2"}\n')
    (folder / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 16)  # 4 KiB
    (folder / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(3000))
    return folder


def _upload(folder: Path, repo: str = REPO, token: str = TOKEN, **kwargs):
    kwargs.setdefault("commit_message", "Upload adapter")
    return upload_hf(folder, _listing(folder), repo, token=Secret(token, "HF_TOKEN"), **kwargs)


# ------------------------------------------------------------------------------------------- uploads


def test_first_upload_stores_every_file_in_one_commit(hub, staged, capsys):
    result = _upload(staged)

    stored = hub.repo(REPO).files
    for item in _listing(staged):
        assert stored[item.path].data == (staged / item.path).read_bytes()
    assert stored["adapter_model.safetensors"].lfs and stored["loss.png"].lfs
    assert not stored["README.md"].lfs and not stored["adapter_config.json"].lfs
    assert result.commits == 1 and hub.commit_posts() == 1
    assert hub.lfs_puts() == 2
    assert sorted(result.sent) == sorted(f.path for f in _listing(staged))
    assert result.url == f"{hub.url}/{REPO}"
    assert result.remote["loss.png"].size == (staged / "loss.png").stat().st_size
    weights = next(f for f in _listing(staged) if f.path == "adapter_model.safetensors")
    assert result.remote["adapter_model.safetensors"].sha256 == weights.sha256
    assert hub.repo(REPO).head.title == "Upload adapter"
    err = capsys.readouterr().err
    assert "uploading 4 files" in err and "adapter_model.safetensors" in err


def test_reupload_of_unchanged_files_sends_nothing(hub, staged, capsys):
    _upload(staged)
    before = len(hub.requests)
    capsys.readouterr()

    result = _upload(staged)

    assert result.commits == 0 and result.sent == []
    later = hub.requests[before:]
    assert not [r for r in later if "/commit/" in r[1] or "/preupload/" in r[1] or r[0] == "PUT"]
    assert hub.commit_posts() == 1 and hub.lfs_puts() == 2
    assert "skipped 4 unchanged" in capsys.readouterr().err
    assert set(result.remote) >= {f.path for f in _listing(staged)}


def test_a_changed_readme_makes_one_commit_with_only_it(hub, staged):
    _upload(staged)
    before = dict(hub.repo(REPO).files)
    (staged / "README.md").write_text(README.replace("Xiaowei", "Xiaowei v2"), encoding="utf-8")

    result = _upload(staged)

    after = hub.repo(REPO).files
    assert result.commits == 1 and result.sent == ["README.md"]
    assert hub.commit_posts() == 2 and hub.lfs_puts() == 2
    assert [p for p in after if after[p] != before.get(p)] == ["README.md"]
    assert after["README.md"].data == (staged / "README.md").read_bytes()


def test_large_upload_is_split_into_commits_and_resumes_after_a_server_error(hub, staged):
    # README + config | safetensors (4 KiB) | png (3 KiB): three parts of at most 4000 bytes.
    hub.fail_once("POST", r"/commit/", 500, skip=1, times=PERSISTENT)
    with pytest.raises(HubServerError) as failed:
        _upload(staged, max_commit_bytes=4000)
    assert "again" in failed.value.fix
    repo = hub.repo(REPO)
    assert [c.title for c in repo.commits[1:]] == ["Upload adapter (part 1/3)"]
    assert set(repo.files) == {".gitattributes", "README.md", "adapter_config.json"}

    puts_before = hub.lfs_puts()
    result = _upload(staged, max_commit_bytes=4000)

    assert result.commits == 2
    assert result.sent == ["adapter_model.safetensors", "loss.png"]
    assert [c.title for c in repo.commits[2:]] == ["Upload adapter (part 1/2)", "Upload adapter (part 2/2)"]
    assert hub.lfs_puts() - puts_before <= 2  # the first try's safetensors object may already be stored
    for item in _listing(staged):
        assert repo.files[item.path].data == (staged / item.path).read_bytes()


def test_space_is_created_with_its_sdk_variables_and_secrets(hub, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "README.md").write_text("---\ntitle: Xiaowei\nsdk: gradio\napp_file: app.py\n---\n", encoding="utf-8")
    (app / "app.py").write_text("import gradio as gr\n", encoding="utf-8")
    secret = Secret("hf_spacesecretBBBBBBBBBBBBBBBBBBBB", "HF_TOKEN")

    result = _upload(app, "alice/xiaowei-demo", repo_type="space", space_variables={"MODEL_ID": REPO},
                     space_secrets={"HF_TOKEN": secret})

    space = hub.repo("alice/xiaowei-demo", "space")
    assert space.sdk == "gradio"
    assert space.variables == {"MODEL_ID": REPO}
    assert space.secrets == {"HF_TOKEN": secret.reveal()}
    assert space.files["app.py"].data == b"import gradio as gr\n"
    assert result.url == f"{hub.url}/spaces/alice/xiaowei-demo" and result.commits == 1


def test_upload_works_with_hf_hub_offline_and_leaves_it_set(hub, staged):
    """`make test` exports HF_HUB_OFFLINE=1, as a user might for training: an explicit publish still uploads."""
    from huggingface_hub import constants
    from huggingface_hub.utils import reset_sessions

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    reset_sessions()
    try:
        assert _upload(staged).commits == 1
        assert constants.HF_HUB_OFFLINE is True
    finally:
        constants.HF_HUB_OFFLINE = saved
        reset_sessions()


def test_a_file_the_hub_lost_is_a_remote_mismatch(hub, staged):
    hub.lose = {"loss.png"}
    with pytest.raises(RemoteMismatch) as lost:
        _upload(staged)
    assert "loss.png is missing" in lost.value.message


# ------------------------------------------------------------------------------------------- tokens


def test_token_comes_from_env_then_the_login_cache(tmp_path, monkeypatch):
    with pytest.raises(MissingToken) as missing:
        hf_token()
    assert "HF_TOKEN" in missing.value.one_line() and "huggingface-cli login" in missing.value.one_line()

    (tmp_path / "hf_home").mkdir()
    (tmp_path / "hf_home" / "token").write_text(TOKEN + "\n")
    assert hf_token().reveal() == TOKEN and "login" in hf_token().source

    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "hf_legacyCCCCCCCCCCCCCCCCCCCCCC")
    assert hf_token().source == "HUGGING_FACE_HUB_TOKEN"
    monkeypatch.setenv("HF_TOKEN", "hf_envDDDDDDDDDDDDDDDDDDDDDDDDDD")
    token = hf_token()
    assert token.source == "HF_TOKEN" and token.reveal() == "hf_envDDDDDDDDDDDDDDDDDDDDDDDDDD"
    assert str(token) == "***"


# ------------------------------------------------------------------------------------------- errors


def test_bad_token_is_an_auth_error_and_creates_nothing(hub, staged):
    with pytest.raises(AuthError) as rejected:
        _upload(staged, token="hf_wrongEEEEEEEEEEEEEEEEEEEEEEEEE")
    assert "HF_TOKEN" in rejected.value.fix
    assert hub.repos == {}


def test_another_users_namespace_is_repo_name_taken(hub, staged):
    with pytest.raises(RepoNameTaken) as taken:
        _upload(staged, "bob/xiaowei-adapter")
    assert "alice" in taken.value.one_line()
    assert hub.repos == {}


def test_another_users_existing_repo_is_repo_name_taken_and_left_alone(hub, staged):
    hub.tokens["hf_bobGGGGGGGGGGGGGGGGGGGGGGGGGG"] = "bob"
    _upload(staged, "bob/xiaowei-adapter", token="hf_bobGGGGGGGGGGGGGGGGGGGGGGGGGG")
    (staged / "README.md").write_text(README + "alice was here\n", encoding="utf-8")
    # huggingface_hub answers create's 403 by reading the repo, which exists: the 403 comes on the upload.
    with pytest.raises(RepoNameTaken):
        _upload(staged, "bob/xiaowei-adapter")
    assert b"alice" not in hub.repo("bob/xiaowei-adapter").files["README.md"].data
    assert hub.commit_posts() == 1


def test_payment_required_for_a_space(hub, staged):
    with pytest.raises(PaymentRequired) as paid:
        _upload(staged, "alice/paid-demo", repo_type="space")
    assert "billing" in paid.value.fix and "--to modelscope" in paid.value.fix


def test_server_down_is_hub_unreachable(staged, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    with pytest.raises(HubUnreachable) as down:
        _upload(staged)
    assert url in down.value.message and "HF_ENDPOINT" in down.value.fix


def test_invalid_readme_metadata_is_rejected_before_any_commit(hub, staged):
    (staged / "README.md").write_text("---\nlicense: [apache-2.0\n---\n# broken\n", encoding="utf-8")
    with pytest.raises(HubRejected) as rejected:
        _upload(staged)
    assert "README.md" in rejected.value.one_line()
    assert hub.commit_posts() == 0


def test_server_error_is_hub_server_error(hub, staged):
    hub.fail_once("POST", r"/preupload/", 503, times=PERSISTENT)
    with pytest.raises(HubServerError) as failed:
        _upload(staged)
    assert "503" in failed.value.message and "resumes" in failed.value.fix


# ------------------------------------------------------------------------------------------- canary


def test_the_token_appears_nowhere(hub, staged, tmp_path, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    hub.echo_token = True  # error answers quote the token: what reaches the user must still not
    texts = []

    def attempt(expected, *args, **kwargs):
        try:
            result = _upload(*args, token=CANARY, **kwargs)
            texts.append(repr(result))
        except PublishError as e:
            assert isinstance(e, expected), e
            texts.extend([str(e), e.one_line(), repr(e), "".join(traceback.format_exception(e))])
        else:
            assert expected is None

    attempt(None, staged)
    attempt(None, staged)
    attempt(RepoNameTaken, staged, "bob/xiaowei-adapter")
    attempt(PaymentRequired, staged, "alice/paid-demo", repo_type="space")
    hub.fail_once("POST", r"/commit/", 500, times=PERSISTENT)
    (staged / "README.md").write_text(README + "\nmore\n", encoding="utf-8")
    attempt(HubServerError, staged)
    (staged / "README.md").write_text("---\nlicense: [x\n---\n", encoding="utf-8")
    attempt(HubRejected, staged)
    (staged / "README.md").write_text(README, encoding="utf-8")
    hub.lose = {"loss.png"}
    attempt(RemoteMismatch, staged, "alice/other-adapter")
    with FakeHub({}) as strict:
        strict.echo_token = True
        monkeypatch.setenv("HF_ENDPOINT", strict.url)
        attempt(AuthError, staged)
    assert CANARY in hub.tokens_seen and CANARY in strict.tokens_seen
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{sock.getsockname()[1]}")
    attempt(HubUnreachable, staged)

    out, err = capsys.readouterr()
    texts += [out, err, caplog.text] + [r.getMessage() for r in caplog.records]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert len(texts) > 10 and "uploading" in err
    assert not [t for t in texts if CANARY in t]


# ------------------------------------------------------------------------------------------- staged by publish


def test_a_folder_staged_by_stage_adapter_uploads_and_verifies(hub, tmp_path, tiny):
    from publish.stage import stage_adapter

    staged = stage_adapter(make_run(tmp_path, tiny), hub="hf", repo=REPO)
    result = upload_hf(staged.path, staged.files, staged.repo, token=Secret(TOKEN, "HF_TOKEN"),
                       commit_message="Upload adapter")

    stored = hub.repo(REPO).files
    assert result.commits == 1 and sorted(result.sent) == sorted(staged.names())
    for item in staged.files:
        assert stored[item.path].data == (staged.path / item.path).read_bytes()
    assert stored["adapter_model.safetensors"].lfs
    assert result.url == staged.url.replace("https://huggingface.co", hub.url)
