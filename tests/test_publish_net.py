"""The network policy of `publish` (publish/net.py) through the real clients over real HTTP: huggingface_hub against
fake_hf_hub, modelscope-hub against fake_modelscope, git + git-lfs against git_http_server, and endpoints that refuse,
never answer, or never complete a connection (tests/net_servers.py).

For each hub: a 503 answered twice is retried and the upload completes; a 4xx is asked once; an unreachable endpoint
fails within the connect timeout (the default, 4 s, measured once per hub) with a one-line error naming the endpoint
variable; a server that never answers is retried and then reported. Timeouts are shortened through PUBLISH_* here."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest
from fake_hf_hub import FakeHub
from fake_modelscope import FakeModelScope
from net_servers import BlackHole, SilentServer, closed_port_url

from publish import net
from publish.errors import (
    AuthError,
    HubRejected,
    HubServerError,
    HubUnreachable,
    InputError,
    ManualStepsRequired,
    RepoNameTaken,
)
from publish.secrets import Secret
from publish.stage import StagedFile
from publish.upload_hf import upload_hf
from publish.upload_modelscope import upload_modelscope
from publish.upload_openxlab import upload_openxlab
from tests import publish_helpers
from tests.git_http_server import GitHttpServer

HF_TOKEN = "hf_netTESTtokenAAAAAAAAAAAAAAAAAAAA"
MS_TOKEN = "ms-00000000-1111-2222-3333-444444444444"
GIT_USER, GIT_TOKEN, GIT_REPO = "xiaowei", "OXnetTESTtoken0123456789", "xiaowei/adapter"
FILES = {
    "README.md": b"---\nlicense: apache-2.0\nlibrary_name: peft\n---\n# Xiaowei adapter\n",
    "adapter_config.json": b'{"r": 4, "base_model_name_or_path": "HuggingFaceTB/SmolLM2"}\n',
    "adapter_model.safetensors": bytes(range(256)) * 16,  # 4 KiB, an LFS file on every hub
}
PUBLISH_VARS = ("PUBLISH_CONNECT_TIMEOUT", "PUBLISH_READ_TIMEOUT", "PUBLISH_RETRIES", "PUBLISH_RETRY_BACKOFF")
isolated_git = publish_helpers.isolated_git  # HOME and git config of its own (autouse there, requested below)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_ENDPOINT", "MODELSCOPE_API_TOKEN",
                 "MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN", "OPENXLAB_GIT_ENDPOINT", *PUBLISH_VARS,
                 "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("PUBLISH_RETRY_BACKOFF", "0")  # the retries without their waits; one test measures those


@pytest.fixture
def staged(tmp_path) -> tuple[Path, list[StagedFile]]:
    folder = tmp_path / "staged"
    folder.mkdir()
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    return folder, [StagedFile(n, len(d), hashlib.sha256(d).hexdigest()) for n, d in sorted(FILES.items())]


@pytest.fixture
def hf(monkeypatch):
    from huggingface_hub import constants

    with FakeHub({HF_TOKEN: "alice"}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        yield server


@pytest.fixture
def ms(monkeypatch):
    with FakeModelScope({MS_TOKEN: "alice"}) as server:
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", server.url)
        yield server


@pytest.fixture
def git_server(tmp_path, isolated_git):
    with GitHttpServer(tmp_path / "git-server", user=GIT_USER, token=GIT_TOKEN) as running:
        running.create_repo(GIT_REPO)
        yield running


def to_hf(staged, repo="alice/xiaowei", token=HF_TOKEN):
    folder, files = staged
    return upload_hf(folder, files, repo, token=Secret(token, "HF_TOKEN"), commit_message="Upload")


def to_ms(staged, repo="alice/xiaowei", token=MS_TOKEN):
    folder, files = staged
    return upload_modelscope(folder, files, repo, token=Secret(token, "MODELSCOPE_API_TOKEN"), commit_message="Upload")


def to_git(staged, remote: str, token=GIT_TOKEN):
    folder, files = staged
    return upload_openxlab(folder, files, GIT_REPO, username=GIT_USER, token=Secret(token, "OPENXLAB_GIT_TOKEN"),
                           commit_message="Upload", work_dir=folder.parent / ".git-wc", remote_url=remote)


def timed(call) -> tuple[BaseException, float]:
    start = time.monotonic()
    with pytest.raises(Exception) as caught:
        call()
    return caught.value, time.monotonic() - start


# ------------------------------------------------------------------------------------------- settings


def test_settings_default_and_a_bad_value_is_one_line_naming_it(monkeypatch):
    monkeypatch.delenv("PUBLISH_RETRY_BACKOFF")
    assert net.settings() == net.NetSettings(4.0, 60.0, 3, 0.5)
    assert net.NetSettings().waits() == [0.0, 1.0, 2.0]  # urllib3's schedule for a backoff factor of 0.5
    for name, bad in (("PUBLISH_CONNECT_TIMEOUT", "soon"), ("PUBLISH_READ_TIMEOUT", "0"), ("PUBLISH_RETRIES", "1.5"),
                      ("PUBLISH_RETRY_BACKOFF", "-1")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(InputError) as caught:
            net.settings()
        assert caught.value.one_line().startswith(f"{name}={bad!r} is not a valid setting")
        assert "Fix: set it to" in caught.value.one_line()
        monkeypatch.delenv(name)


def test_cli_refuses_a_bad_setting_before_staging(tmp_path, monkeypatch, capsys):
    from publish.cli import main

    monkeypatch.setenv("PUBLISH_READ_TIMEOUT", "1m")
    code = main(["adapter", str(tmp_path / "run"), "--to", "hf", "--repo", "alice/x"])
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines() == [
        "error: PUBLISH_READ_TIMEOUT='1m' is not a valid setting (seconds to wait for an answer). Fix: set it to a "
        "number from 0.1 to 3600 (default 60), or unset it."]
    assert not (tmp_path / "run").exists()
    assert main(["adapter", str(tmp_path / "run"), "--to", "hf", "--repo", "alice/x", "--dry-run"]) == 2  # the run
    assert "PUBLISH_READ_TIMEOUT" not in capsys.readouterr().err  # a dry run makes no request: the setting is moot


def test_timeouts_cap_the_connect_part_and_leave_uploads_theirs():
    policy = net.NetSettings(4, 60, 3, 0)
    assert net.request_timeout(policy, None, None) == (4, 60)
    assert net.request_timeout(policy, (10, 90), b"{}") == (4, 60)  # ModelScope's own (10, 60)-style pair
    assert net.request_timeout(policy, 2.0, None) == (2.0, 60)
    # A file body is sent under urllib3's connect timeout: a 4 s stall must not abort a multi-GB upload.
    assert net.request_timeout(policy, None, iter([b"x"])) == (60, 60)
    assert net.request_timeout(policy, (30, 3600), iter([b"x"])) == (30, 3600)
    assert net.request_timeout(policy, None, b"x" * (net.UPLOAD_BODY + 1)) == (60, 60)


def test_the_retry_policy_takes_5xx_and_never_4xx():
    policy = net.retry_policy(net.NetSettings())
    assert [status for status in range(400, 600) if policy.is_retry("POST", status, has_retry_after=True)] == \
        [500, 502, 503, 504]
    assert (policy.connect, policy.read, policy.status, policy.total) == (0, 3, 3, 3)


@pytest.mark.parametrize(("message", "transient"), [
    ("fatal: unable to access 'http://h/x.git/': The requested URL returned error: 503", True),
    ("error: RPC failed; curl 56 Recv failure: Connection reset by peer", True),
    ("fatal: unable to access 'http://h/x.git/': Operation too slow. Less than 1 bytes/sec transferred the last 1 "
     "seconds", True),
    ("fatal: unable to access 'http://h/x.git/': The requested URL returned error: 403", False),
    ("remote: Repository not found.\nfatal: repository 'http://h/x.git/' not found", False),
    ("fatal: Authentication failed for 'http://h/x.git/'", False),
    ("fatal: unable to access 'http://h/x.git/': Failed to connect to h port 80 after 0 ms: Couldn't connect to "
     "server", False),
    ("fatal: unable to access 'http://h/x.git/': Could not resolve host: h", False),
    ("error: RPC failed; HTTP 413 curl 22 The requested URL returned error: 413\nfatal: the remote end hung up "
     "unexpectedly", False),
])
def test_which_git_failures_are_retried(message, transient):
    assert net.git_transient(message) is transient


# ------------------------------------------------------------------------------------------- Hugging Face


def test_hf_503_twice_is_retried_and_the_upload_completes(hf, staged, capfd):
    hf.fail_once("GET", r"^/api/whoami-v2$", 503, times=2)
    hf.fail_once("POST", r"/commit/", 503, times=2)  # a POST too: commits are content-addressed, safe to repeat

    result = to_hf(staged)

    assert result.commits == 1 and {p: b.data for p, b in hf.repo("alice/xiaowei").files.items()
                                    if p != ".gitattributes"} == FILES
    assert hf.count("GET", r"^/api/whoami-v2$") == 3 and hf.commit_posts() == 3
    assert len(hf.repo("alice/xiaowei").commits) == 2  # the initial one + ours, once
    assert "HTTP 503 from POST" in capfd.readouterr().err


def test_hf_4xx_is_asked_once(hf, staged):
    with pytest.raises(AuthError):
        to_hf(staged, token="hf_wrongTOKENBBBBBBBBBBBBBBBBBBBBBBB")
    assert hf.count("GET", r"^/api/whoami-v2$") == 1

    hf.fail_once("POST", r"/preupload/", 404)
    with pytest.raises(HubRejected):
        to_hf(staged)
    assert hf.count("POST", r"/preupload/") == 1

    with pytest.raises(RepoNameTaken):  # 403: another user's namespace
        to_hf(staged, repo="bob/xiaowei")
    assert hf.count("POST", r"^/api/repos/create$") == 2  # huggingface_hub's own create + a 403 once, no retries


def test_hf_persistent_503_stops_after_the_retries_with_backoff(hf, staged, monkeypatch):
    monkeypatch.setenv("PUBLISH_RETRIES", "2")
    monkeypatch.setenv("PUBLISH_RETRY_BACKOFF", "0.25")  # waits 0 s, then 0.5 s
    hf.fail_once("GET", r"^/api/whoami-v2$", 503, times=5)

    error, seconds = timed(lambda: to_hf(staged))

    assert isinstance(error, HubServerError) and "HTTP 503 (after 2 retries)" in error.message
    assert hf.count("GET", r"^/api/whoami-v2$") == 3 and 0.5 <= seconds < 3


def test_hf_closed_port_fails_at_once(staged, monkeypatch):
    url = closed_port_url()
    monkeypatch.setenv("HF_ENDPOINT", url)
    error, seconds = timed(lambda: to_hf(staged))
    assert isinstance(error, HubUnreachable) and seconds < 2
    assert error.one_line() == (
        f"Cannot reach the Hugging Face Hub at {url} (connection refused) while checking the token. Fix: check "
        f"HF_ENDPOINT (now {url}) and the network or proxy (HTTPS_PROXY); on a slow network raise "
        "PUBLISH_CONNECT_TIMEOUT (now 4 s).")


def test_hf_host_that_never_connects_fails_within_the_default_5_s(staged, monkeypatch):
    with BlackHole() as hole:
        monkeypatch.setenv("HF_ENDPOINT", hole.url)
        error, seconds = timed(lambda: to_hf(staged))
    assert isinstance(error, HubUnreachable) and "no connection within 4 s" in error.message
    assert 3.5 <= seconds <= 5


def test_hf_server_that_never_answers_is_retried_then_reported(staged, monkeypatch):
    monkeypatch.setenv("PUBLISH_READ_TIMEOUT", "0.5")
    monkeypatch.setenv("PUBLISH_RETRIES", "1")
    with SilentServer() as silent:
        monkeypatch.setenv("HF_ENDPOINT", silent.url)
        error, seconds = timed(lambda: to_hf(staged))
        assert silent.connections == 2  # the request and one retry
    assert isinstance(error, HubUnreachable) and "no answer within 0.5 s, 1 retry" in error.message
    assert "PUBLISH_READ_TIMEOUT" in error.fix and seconds < 3


@pytest.mark.parametrize("hub", ["hf", "modelscope"])
def test_a_proxy_that_is_down_is_named(hub, staged, monkeypatch):
    proxy = closed_port_url()
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.setenv("HF_ENDPOINT" if hub == "hf" else "MODELSCOPE_ENDPOINT", "http://hub.example")
    error, seconds = timed(lambda: to_hf(staged) if hub == "hf" else to_ms(staged))
    assert isinstance(error, HubUnreachable) and "(the proxy cannot be reached)" in error.message and seconds < 2
    assert "proxy (HTTPS_PROXY)" in error.fix


# ------------------------------------------------------------------------------------------- ModelScope


def test_ms_503_twice_is_retried_and_the_upload_completes(ms, staged):
    ms.fail("GET", r"^/openapi/v1/users/me$", status=503, times=2)
    ms.fail("POST", r"/commit/", status=503, times=2)

    result = to_ms(staged)

    assert result.commits == 1 and ms.repo("alice/xiaowei").files == FILES
    assert ms.count("GET", r"^/openapi/v1/users/me$") == 3 and ms.count("POST", r"/commit/") == 3
    assert len(ms.repo("alice/xiaowei").commits) == 1


def test_ms_4xx_is_asked_once(ms, staged):
    with pytest.raises(AuthError):
        to_ms(staged, token="ms-99999999-1111-2222-3333-444444444444")
    assert ms.count("GET", r"^/openapi/v1/users/me$") == 1

    with pytest.raises(RepoNameTaken):  # 403: another user's namespace
        to_ms(staged, repo="bob/xiaowei")
    assert ms.count("POST", r"^/api/v1/models$") == 1


def test_ms_closed_port_fails_at_once(staged, monkeypatch):
    """The report of issue 14: an unreachable ModelScope endpoint took 16 s (the client retried a refused connection
    five times, waiting 1 + 2 + 4 + 8 s)."""
    url = closed_port_url()
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", url)
    error, seconds = timed(lambda: to_ms(staged))
    assert isinstance(error, HubUnreachable) and seconds < 2
    assert error.message == f"Cannot reach ModelScope at {url} (connection refused) while signing in."
    assert f"check MODELSCOPE_ENDPOINT (now {url})" in error.fix and "PUBLISH_CONNECT_TIMEOUT" in error.fix


def test_ms_server_that_never_answers_is_retried_then_reported(staged, monkeypatch):
    monkeypatch.setenv("PUBLISH_READ_TIMEOUT", "0.5")
    monkeypatch.setenv("PUBLISH_RETRIES", "1")
    with SilentServer() as silent:
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", silent.url)
        error, seconds = timed(lambda: to_ms(staged))
        assert silent.connections == 2
    assert isinstance(error, HubUnreachable) and "no answer within 0.5 s, 1 retry" in error.message
    assert seconds < 3


# ------------------------------------------------------------------------------------------- git (OpenXLab)


def test_git_503_twice_is_retried_and_the_push_completes(git_server, staged, capfd):
    git_server.fail("GET", r"/info/refs$", 503, times=2)

    result = to_git(staged, git_server.repo_url(GIT_REPO))

    assert result.commits == 1 and set(FILES) <= set(result.remote)
    assert git_server.count("GET", r"/info/refs\?service=git-upload-pack") >= 3
    err = capfd.readouterr().err
    assert "git ls-remote failed (fatal: unable to access" in err and "retry 2 of 3" in err


@pytest.mark.parametrize(("status", "error"), [(403, AuthError), (404, ManualStepsRequired)])
def test_git_4xx_is_asked_once(git_server, staged, status, error):
    git_server.fail("GET", r"/info/refs$", status, times=10)
    with pytest.raises(error):
        to_git(staged, git_server.repo_url(GIT_REPO))
    assert git_server.count("GET", r"/info/refs") == 1


def test_git_closed_port_fails_at_once(staged, isolated_git):
    url = closed_port_url()
    error, seconds = timed(lambda: to_git(staged, f"{url}/x.git"))
    assert isinstance(error, HubUnreachable) and seconds < 2
    assert error.one_line().startswith(f"Cannot reach the OpenXLab git server {url}/x.git: could not open a "
                                       f"connection to 127.0.0.1:{url.rsplit(':', 1)[1]}: connection refused.")
    assert "OPENXLAB_GIT_ENDPOINT" in error.fix and "PUBLISH_CONNECT_TIMEOUT (now 4 s)" in error.fix


def test_git_host_that_never_connects_fails_within_the_default_5_s(staged, isolated_git):
    with BlackHole() as hole:
        error, seconds = timed(lambda: to_git(staged, f"{hole.url}/x.git"))
    assert isinstance(error, HubUnreachable) and "no connection within 4 s" in error.message
    assert 3.5 <= seconds <= 5


def test_git_proxy_is_the_host_probed(staged, isolated_git, monkeypatch):
    """Behind a proxy git connects to the proxy, so that is what must answer (here: a closed port)."""
    proxy = closed_port_url()
    monkeypatch.setenv("http_proxy", proxy)
    with socket.create_server(("127.0.0.1", 0)) as listening:  # the hub itself would answer
        error, _ = timed(lambda: to_git(staged, f"http://127.0.0.1:{listening.getsockname()[1]}/x.git"))
    assert isinstance(error, HubUnreachable) and f"proxy 127.0.0.1:{proxy.rsplit(':', 1)[1]}" in error.message


def test_git_server_that_never_answers_is_retried_then_reported(staged, isolated_git, monkeypatch):
    monkeypatch.setenv("PUBLISH_READ_TIMEOUT", "1")  # git's http.lowSpeedTime counts whole seconds
    monkeypatch.setenv("PUBLISH_RETRIES", "1")
    with SilentServer() as silent:
        error, seconds = timed(lambda: to_git(staged, f"{silent.url}/x.git"))
        assert silent.connections == 3  # our connect probe, ls-remote and its retry
    assert isinstance(error, HubUnreachable) and "stopped answering during git ls-remote" in error.message
    assert "PUBLISH_READ_TIMEOUT (now 1 s)" in error.fix and seconds < 6
