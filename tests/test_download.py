"""download: embedded short-circuit, typed errors on unreachable hubs, atomic results (no network used)."""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from finetune import download as dl
from finetune.errors import UnknownPreset


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def hf_online(monkeypatch) -> Iterator[None]:
    """Undo the suite-wide offline mode for one test (env and the constants huggingface_hub read at import)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import reset_sessions

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    reset_sessions()
    yield
    monkeypatch.undo()
    reset_sessions()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*")) if root.exists() else []


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser()
    dl.register(root.add_subparsers(dest="verb", required=True), argparse.HelpFormatter)
    return root


def test_embedded_preset_needs_no_download(embedded_model, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    assert dl.download("smollm2-135m-instruct") == embedded_model
    assert dl.download("HuggingFaceTB/SmolLM2-135M-Instruct", source="modelscope") == embedded_model
    assert "no download needed" in capsys.readouterr().out


def test_unknown_preset_and_raw_ids():
    with pytest.raises(UnknownPreset) as info:
        dl.resolve_target("qwen2.5-0.5b-instrct", "hf")
    assert "did you mean 'qwen2.5-0.5b-instruct'" in info.value.one_line()
    assert dl.resolve_target("org/some-model", "hf") == ("org/some-model", None)
    repo, preset = dl.resolve_target("internlm2.5-7b-chat", "modelscope")
    assert repo == "Shanghai_AI_Laboratory/internlm2_5-7b-chat" and preset.name == "internlm2.5-7b-chat"
    assert dl.resolve_target("Qwen/Qwen2.5-0.5B-Instruct", "hf")[1].name == "qwen2.5-0.5b-instruct"


def test_offline_env_is_a_clean_error(cache):
    with pytest.raises(dl.DownloadError, match="HF_HUB_OFFLINE"):
        dl.download("qwen2.5-0.5b-instruct")
    assert leftovers(cache) == ["models"]


def test_unreachable_endpoint_is_typed_and_leaves_nothing(cache, hf_online, monkeypatch):
    port = free_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_never_printed")
    with pytest.raises(dl.DownloadError) as info:
        dl.download("qwen2.5-0.5b-instruct")
    line = info.value.one_line()
    assert f"could not reach http://127.0.0.1:{port}" in line and "HF_ENDPOINT=https://hf-mirror.com" in line
    assert "\n" not in line and "hf_secret" not in line
    assert leftovers(cache) == ["models"]  # the temporary folder is gone


def test_cli_reports_one_line(cache, hf_online, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    args = parser().parse_args(["download", "--preset", "org/tiny", "--out", str(cache / "x")])
    with pytest.raises(dl.DownloadError):
        args.func(args)
    assert not (cache / "x").exists()
    args = parser().parse_args(["download", "--list"])
    assert args.func(args) == 0
    assert "internlm2.5-7b-chat" in capsys.readouterr().out


def test_refuses_to_overwrite_a_non_model_folder(cache, tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    with pytest.raises(dl.InputError, match="not a model folder"):
        dl.download("org/tiny", out=keep, force=True)
    assert (keep / "notes.txt").read_text() == "precious"


# ---------------------------------------------------------------- a tiny Hugging Face-like server on 127.0.0.1

FILES = {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"\x00" * 64}
SHA = "0123456789abcdef0123456789abcdef01234567"


class FakeHub(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _send(self, body: bytes, *, head: bool = False, etag: str = "", status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Repo-Commit", SHA)
        if etag:
            self.send_header("ETag", f'"{etag}"')
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _route(self, head: bool) -> None:
        if self.path.startswith("/api/models/org/tiny/revision/"):
            info = {"id": "org/tiny", "sha": SHA, "siblings": [{"rfilename": name} for name in FILES]}
            return self._send(json.dumps(info).encode(), head=head)
        prefix = f"/org/tiny/resolve/{SHA}/"
        name = self.path[len(prefix):] if self.path.startswith(prefix) else ""
        if name in FILES:
            return self._send(FILES[name], head=head, etag=hashlib.sha256(FILES[name]).hexdigest())
        return self._send(b'{"error": "Repository not found"}', head=head, status=404)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self._route(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(head=True)


@pytest.fixture
def fake_hub(hf_online, monkeypatch) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    yield url
    server.shutdown()
    server.server_close()


def test_download_from_local_server_is_atomic_and_found_by_resolve(cache, fake_hub):
    from finetune.modelload import resolve_model

    path = dl.download("org/tiny")
    assert path == cache / "models" / "org--tiny"
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    assert (path / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert resolve_model("org/tiny") == path
    assert leftovers(cache / "models") == ["config.json", "model.safetensors", "org--tiny"]
    assert dl.download("org/tiny") == path  # second call: already there


def test_missing_repo_is_repo_not_found(cache, fake_hub):
    with pytest.raises(dl.RepoNotFound, match="org/absent was not found"):
        dl.download("org/absent")
    assert leftovers(cache) == ["models"]


def test_modelscope_unreachable_endpoint(cache, monkeypatch):
    # ~9 s: modelscope retries the listing with back-off (1 + 2 + 4 s) before giving up.
    port = free_port()
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(dl.DownloadError) as info:
        dl.download("qwen2.5-0.5b-instruct", source="modelscope")
    assert f"could not reach http://127.0.0.1:{port}" in info.value.one_line()
    assert leftovers(cache) == ["models"]


def test_cli_main_unknown_preset(monkeypatch, capsys):
    from finetune import cli

    monkeypatch.setattr(cli, "VERB_MODULES", ["download"])
    assert cli.main(["download", "--preset", "qwen2.5-0.5b-instrct"]) == 2
    err = capsys.readouterr().err
    assert "Unknown model preset 'qwen2.5-0.5b-instrct'" in err and "did you mean" in err
