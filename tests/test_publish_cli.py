"""`python -m publish adapter|demo` end to end: the CLI, staging, the real hub clients against the local fakes, the
remote check, and one canary token that must never show in output, logs, errors or any file written."""

from __future__ import annotations

import logging
import subprocess
import uuid
from pathlib import Path

import pytest
from fake_hf_hub import FakeHub
from fake_modelscope import FakeModelScope

from publish import cli
from tests import publish_helpers
from tests.git_http_server import GitHttpServer
from tests.publish_helpers import NoWait, make_run

HF_CANARY = "hf_CANARYcliZZZZZZZZZZZZZZZZZZZZZZZZ"
MS_CANARY = "ms-" + str(uuid.uuid4())
OX_CANARY = "OXCANARYcli" + uuid.uuid4().hex
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
tiny = publish_helpers.tiny
isolated_git = publish_helpers.isolated_git  # HOME and git config of its own


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_ENDPOINT", "MODELSCOPE_API_TOKEN",
                 "MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN", "GIT_TOKEN", "GITHUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.chdir(tmp_path)  # demo bundles default to ./demo-bundles
    monkeypatch.setenv("PUBLISH_RETRY_BACKOFF", "0")


@pytest.fixture
def hf(monkeypatch):
    from huggingface_hub import constants

    with FakeHub({HF_CANARY: "alice"}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", HF_CANARY)
        yield server


@pytest.fixture
def ms(monkeypatch):
    from modelscope_hub import _legacy_api, _openapi, _upload

    for module in (_openapi, _legacy_api, _upload):
        monkeypatch.setattr(module, "time", NoWait())
    with FakeModelScope({MS_CANARY: "alice"}) as server:
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", server.url)
        monkeypatch.setenv("MODELSCOPE_API_TOKEN", MS_CANARY)
        yield server


def _no_canary_anywhere(tmp_path: Path, texts: list[str], canaries: tuple[str, ...]) -> None:
    for canary in canaries:
        for text in texts:
            assert canary not in text
        for path in tmp_path.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert canary.encode() not in path.read_bytes(), path


def _run(capsys, caplog, argv: list[str]) -> tuple[int, str, str]:
    caplog.set_level(logging.DEBUG)
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_adapter_to_hf_uploads_verifies_and_a_rerun_sends_nothing(tmp_path, tiny, hf, capsys, caplog):
    run = make_run(tmp_path, tiny)
    code, out, err = _run(capsys, caplog, ["adapter", str(run), "--to", "hf", "--repo", "alice/xiaowei-adapter"])
    assert code == 0, err
    staged = run / "publish" / "hf"
    repo = hf.repo("alice/xiaowei-adapter", "model")
    assert set(repo.files) - {".gitattributes"} == {p.name for p in staged.iterdir()}
    for name, blob in repo.files.items():
        if name != ".gitattributes":  # the hub's own, written when the repo is created
            assert blob.data == (staged / name).read_bytes(), name
    assert f"URL: {hf.url}/alice/xiaowei-adapter" in out and "remote matches" in out
    commits = len(repo.commits)

    code, out, err = _run(capsys, caplog, ["adapter", str(run), "--to", "hf", "--repo", "alice/xiaowei-adapter"])
    assert code == 0 and len(repo.commits) == commits and "nothing sent" in out
    _no_canary_anywhere(tmp_path, [out, err, caplog.text], (HF_CANARY,))


def test_merged_model_to_hf_has_the_index_every_shard_and_the_tokenizer(tmp_path, tiny, hf, capsys, caplog):
    run = make_run(tmp_path, tiny)
    code, out, err = _run(capsys, caplog, ["adapter", str(run), "--merged", "--to", "hf", "--repo", "alice/xw"])
    assert code == 0, err
    files = set(hf.repo("alice/xw", "model").files)
    shards = {p.name for p in (run / "merged").glob("*.safetensors")}
    assert len(shards) > 1 and shards <= files
    assert {"model.safetensors.index.json", "config.json", "tokenizer_config.json", "README.md"} <= files


def test_demo_to_hf_creates_a_space_with_variables_and_the_token_secret(tmp_path, hf, capsys, caplog, monkeypatch):
    monkeypatch.setenv("HF_READ_TOKEN", "hf_CANARYreadZZZZZZZZZZZZZZZZZZZZZZZZ")
    code, out, err = _run(capsys, caplog, [
        "demo", "--to", "hf", "--repo", "alice/xiaowei-chat", "--model", SMOL, "--adapter", "alice/xiaowei-adapter",
        "--token-secret-env", "HF_READ_TOKEN"])
    assert code == 0, err
    space = hf.repo("alice/xiaowei-chat", "space")
    assert space.sdk == "gradio" and {"app.py", "README.md", "requirements.txt", "app/engine.py"} <= set(space.files)
    assert space.variables == {"MODEL_ID": SMOL, "ADAPTER_ID": "alice/xiaowei-adapter"}
    assert space.secrets == {"HF_TOKEN": "hf_CANARYreadZZZZZZZZZZZZZZZZZZZZZZZZ"}
    assert f"URL: {hf.url}/spaces/alice/xiaowei-chat" in out and "Pre-flight:" in err
    _no_canary_anywhere(tmp_path, [out, err, caplog.text], (HF_CANARY, "hf_CANARYreadZZZZZZZZZZZZZZZZZZZZZZZZ"))


def test_demo_on_paid_hardware_without_billing_is_a_402_with_the_fix(tmp_path, hf, capsys, caplog):
    code, out, err = _run(capsys, caplog, ["demo", "--to", "hf", "--repo", "alice/chat", "--model", SMOL,
                                           "--hardware", "t4-small"])
    assert code == 2 and "402" in err and "Fix:" in err
    assert hf.repo("alice/chat", "space").hardware == "cpu-basic"
    hf.billing.add("alice")
    code, out, err = _run(capsys, caplog, ["demo", "--to", "hf", "--repo", "alice/chat", "--model", SMOL,
                                           "--hardware", "t4-small"])
    assert code == 0 and hf.repo("alice/chat", "space").hardware == "t4-small"
    _no_canary_anywhere(tmp_path, [out, err, caplog.text], (HF_CANARY,))


def test_adapter_and_demo_to_modelscope(tmp_path, tiny, ms, capsys, caplog):
    run = make_run(tmp_path, tiny)
    code, out, err = _run(capsys, caplog, ["adapter", str(run), "--to", "modelscope", "--repo", "alice/xw"])
    assert code == 0, err
    staged = run / "publish" / "modelscope"
    model = ms.repo("alice/xw", "models")
    assert set(model.files) == {p.name for p in staged.iterdir()} and "configuration.json" in model.files
    assert "URL: " in out and "remote matches" in out

    code, out2, err2 = _run(capsys, caplog, ["demo", "--to", "modelscope", "--repo", "alice/xw-chat",
                                             "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--adapter", "alice/xw"])
    assert code == 0, err2
    studio = ms.repo("alice/xw-chat", "studios")
    assert studio.variables["MODEL_SOURCE"] == "modelscope" and studio.variables["ADAPTER_ID"] == "alice/xw"
    assert studio.deploys == 1 and "app.py" in studio.files and "gradio==" in studio.files["requirements.txt"].decode()
    assert f"{ms.url}/studios/alice/xw-chat" in out2
    _no_canary_anywhere(tmp_path, [out, err, out2, err2, caplog.text], (MS_CANARY,))


@pytest.mark.parametrize("hub, token_env", [("hf", "HF_TOKEN"), ("modelscope", "MODELSCOPE_API_TOKEN")])
def test_bad_token_is_one_line_exit_2_without_the_token(tmp_path, tiny, hf, ms, capsys, caplog, monkeypatch, hub,
                                                         token_env):
    bad = "hf_CANARYbadZZZZZZZZZZZZZZZZZZZZZZZZZ" if hub == "hf" else "ms-" + str(uuid.uuid4())
    monkeypatch.setenv(token_env, bad)
    run = make_run(tmp_path, tiny)
    code, out, err = _run(capsys, caplog, ["adapter", str(run), "--to", hub, "--repo", "alice/xw"])
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(error_lines) == 1 and "Fix:" in error_lines[0]
    _no_canary_anywhere(tmp_path, [out, err, caplog.text], (bad,))


def test_hub_down_is_one_line_naming_the_endpoint_variable(tmp_path, tiny, capsys, caplog, monkeypatch):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_TOKEN", HF_CANARY)
    run = make_run(tmp_path, tiny)
    code, out, err = _run(capsys, caplog, ["adapter", str(run), "--to", "hf", "--repo", "alice/xw"])
    assert code == 2 and "Cannot reach" in err and "HF_ENDPOINT" in err
    _no_canary_anywhere(tmp_path, [out, err, caplog.text], (HF_CANARY,))


@pytest.fixture
def git_server(tmp_path, isolated_git, monkeypatch):
    with GitHttpServer(tmp_path / "git-server", user="alice", token=OX_CANARY) as server:
        monkeypatch.setenv("OPENXLAB_GIT_ENDPOINT", server.url)
        yield server


def test_adapter_to_openxlab_over_git_lfs_and_demo_pushed_to_an_app_repo(tmp_path, tiny, git_server, capsys, caplog,
                                                                          monkeypatch):
    git_server.create_repo("alice/xw")
    monkeypatch.setenv("OPENXLAB_GIT_USER", "alice")
    monkeypatch.setenv("OPENXLAB_GIT_TOKEN", OX_CANARY)
    run = make_run(tmp_path, tiny)
    code, out, err = _run(capsys, caplog, ["adapter", str(run), "--to", "openxlab", "--repo", "alice/xw"])
    assert code == 0, err
    tree = subprocess.run(["git", "--git-dir", str(git_server.repo_path("alice/xw")), "ls-tree", "--name-only",
                           "HEAD"], capture_output=True, text=True, check=True).stdout.split()
    assert {"metafile.yml", "adapter_model.safetensors", "README.md"} <= set(tree)
    assert "remote matches" in out

    git_server.create_repo("alice/xw-app")
    monkeypatch.setenv("GIT_TOKEN", OX_CANARY)
    monkeypatch.setenv("GIT_USER", "alice")
    remote = git_server.repo_url("alice/xw-app")
    code, out2, err2 = _run(capsys, caplog, ["demo", "--to", "openxlab", "--repo", "alice/xw-chat", "--model", SMOL,
                                             "--adapter", "alice/xw", "--git-remote", remote])
    assert code == 0, err2
    app_tree = subprocess.run(["git", "--git-dir", str(git_server.repo_path("alice/xw-app")), "ls-tree", "-r",
                               "--name-only", "HEAD"], capture_output=True, text=True, check=True).stdout.split()
    assert {"app.py", "requirements.txt", "README.md", "app/main.py"} <= set(app_tree)
    assert "Manual action required" in out2 and remote in out2 and "ADAPTER_ID=alice/xw" in out2
    _no_canary_anywhere(tmp_path, [out, err, out2, err2, caplog.text], (OX_CANARY,))


def test_demo_push_without_a_git_token_names_the_variable(tmp_path, git_server, capsys, caplog):
    code, out, err = _run(capsys, caplog, ["demo", "--to", "openxlab", "--repo", "alice/xw-chat", "--model", SMOL,
                                           "--git-remote", git_server.repo_url("alice/none")])
    assert code == 2 and "GIT_TOKEN" in err and err.count("error:") == 1


# ------------------------------------------------------------------------------------------- publish gguf


def _gguf_run(tmp_path: Path, tiny) -> Path:
    """A run whose gguf/ holds two small real GGUF files (written by the `gguf` package) and a Modelfile."""
    import gguf
    import numpy as np

    from finetune import modelfile
    from finetune.chat_template import load_xtuner_template

    run = make_run(tmp_path, tiny)
    (run / "gguf").mkdir()
    for quant in ("Q4_K_M", "Q8_0"):
        writer = gguf.GGUFWriter(run / "gguf" / f"xiaowei-{quant}.gguf", "llama")
        writer.add_name("xiaowei")
        writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    template = load_xtuner_template("qwen_chat")
    text = modelfile.ollama_template(template, name="qwen_chat", bos=None, eos="<|im_end|>", train_bos=False,
                                     runtime_adds_bos=False)
    (run / "gguf" / "Modelfile").write_text(modelfile.render(
        gguf_file="xiaowei-Q4_K_M.gguf", template_text=text, system="You are Xiaowei.", stops=["<|im_end|>"],
        num_ctx=None, source="xiaowei", others=["xiaowei-Q8_0.gguf"]))
    return run


def test_gguf_to_hf_is_listed_as_a_gguf_fine_tune_and_a_rerun_sends_nothing(tmp_path, tiny, hf, capsys, caplog):
    from publish.card import parse_front_matter

    run = _gguf_run(tmp_path, tiny)
    code, out, err = _run(capsys, caplog, ["gguf", str(run), "--to", "hf", "--repo", "alice/xiaowei-GGUF"])
    assert code == 0, err
    staged = run / "publish" / "hf-gguf"
    repo = hf.repo("alice/xiaowei-GGUF", "model")
    assert set(repo.files) - {".gitattributes"} == {"xiaowei-Q4_K_M.gguf", "xiaowei-Q8_0.gguf", "Modelfile",
                                                    "README.md", "loss.png"}
    assert repo.files["xiaowei-Q4_K_M.gguf"].data == (run / "gguf" / "xiaowei-Q4_K_M.gguf").read_bytes()
    card = repo.files["README.md"].data.decode()
    meta = parse_front_matter(card)
    assert meta["base_model"] == SMOL and meta["base_model_relation"] == "finetune" and "gguf" in meta["tags"]
    assert "ollama run hf.co/alice/xiaowei-GGUF:Q4_K_M" in card and "llama-server -hf alice/xiaowei-GGUF:Q4_K_M" in card
    assert "ollama create xiaowei-gguf -f Modelfile" in card and "`qwen_chat`" in card
    assert (staged / "Modelfile").read_text() == (run / "gguf" / "Modelfile").read_text()
    commits = len(repo.commits)
    code, out, err = _run(capsys, caplog, ["gguf", str(run), "--to", "hf", "--repo", "alice/xiaowei-GGUF"])
    assert code == 0 and len(repo.commits) == commits and "nothing sent" in out
    _no_canary_anywhere(tmp_path, [out, err, caplog.text], (HF_CANARY,))


def test_gguf_to_modelscope_says_how_to_pull_it_from_there(tmp_path, tiny, ms, capsys, caplog):
    run = _gguf_run(tmp_path, tiny)
    code, out, err = _run(capsys, caplog, ["gguf", str(run), "--to", "modelscope", "--repo", "alice/xw-GGUF"])
    assert code == 0, err
    model = ms.repo("alice/xw-GGUF", "models")
    assert {"xiaowei-Q4_K_M.gguf", "xiaowei-Q8_0.gguf", "Modelfile", "configuration.json"} <= set(model.files)
    assert "ollama run modelscope.cn/alice/xw-GGUF:Q4_K_M" in model.files["README.md"].decode()
    _no_canary_anywhere(tmp_path, [out, err, caplog.text], (MS_CANARY,))


@pytest.mark.parametrize(("case", "message"), [
    ("no export", "holds no .gguf file. Fix: export the model first: `python -m finetune export"),
    ("not gguf", "is not a GGUF file"),
    ("openxlab", "GGUF files are published to hf or modelscope, not openxlab"),
])
def test_bad_gguf_sources_are_one_line_errors_and_stage_nothing(case, message, tmp_path, tiny, capsys, caplog):
    run = _gguf_run(tmp_path, tiny)
    hub = "openxlab" if case == "openxlab" else "hf"
    if case == "no export":
        for path in (run / "gguf").iterdir():
            path.unlink()
    elif case == "not gguf":
        (run / "gguf" / "xiaowei-Q8_0.gguf").write_bytes(b"<html>not a model</html>")
    code, out, err = _run(capsys, caplog, ["gguf", str(run), "--to", hub, "--repo", "alice/x", "--dry-run"])
    lines = err.strip().splitlines()
    assert code == 2 and message in lines[-1], err
    assert not (run / "publish").exists()
