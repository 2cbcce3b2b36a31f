"""The app finds models the way users name them, fails clearly, runs from environment variables alone, and stays
self-contained (nothing from finetune/ or publish/)."""

from __future__ import annotations

import ast
import io
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app import cli as app_cli
from app import main as app_main
from app.errors import AdapterMismatch, ModelSourceError, SettingsError
from app.models import ModelRequest, load, resolve
from app.options import build_engine

REPO = Path(__file__).resolve().parents[1]


def link_model(source: Path, target: Path, meta: dict | None = None) -> Path:
    """A model folder whose files are symlinks to `source` (no 500 MB copies), plus an optional finetune_meta."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        (target / path.name).symlink_to(path)
    if meta is not None:
        (target / "finetune_meta.json").write_text(json.dumps(meta))
    return target


@pytest.fixture
def run_dir(tmp_path, embedded_model, lora_adapter) -> Path:
    run = tmp_path / "runs" / "xiaowei"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    link_model(embedded_model, run / "merged", {"base_model": str(embedded_model), "system": "Be brief.",
                                                "prompt_template": "qwen_chat"})
    shutil.copytree(lora_adapter, run / "adapter")
    return run


# ---------------------------------------------------------------------------------------------- resolve


def test_default_is_the_embedded_model(embedded_model):
    resolved = resolve(ModelRequest())
    assert Path(resolved.model) == embedded_model and resolved.adapter is None


def test_run_directory_gives_merged_with_its_base_for_compare(run_dir, embedded_model):
    resolved = resolve(ModelRequest(model=str(run_dir)))
    assert resolved.model == str(run_dir / "merged")
    assert resolved.compare_base == str(embedded_model)
    assert resolved.label == "xiaowei"
    assert resolve(ModelRequest(model=str(run_dir), compare=False)).compare_base is None


def test_run_directory_with_use_adapter_gives_base_plus_adapter(run_dir, embedded_model):
    resolved = resolve(ModelRequest(model=str(run_dir), use_adapter=True))
    assert resolved.model == str(embedded_model)
    assert resolved.adapter == str(run_dir / "adapter")
    assert resolved.tokenizer == str(run_dir / "adapter")  # it carries the training template


def test_adapter_folder_as_the_model_is_base_plus_adapter(lora_adapter, embedded_model):
    resolved = resolve(ModelRequest(model=str(lora_adapter)))
    assert resolved.adapter == str(lora_adapter) and resolved.model == str(embedded_model)


def test_adapter_whose_base_is_missing_says_pass_base(tmp_path, lora_adapter):
    adapter = shutil.copytree(lora_adapter, tmp_path / "adapter")
    (adapter / "finetune_meta.json").write_text(json.dumps({"model_path": "/nowhere/base"}))
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "/nowhere/base"}))
    with pytest.raises(ModelSourceError, match="'/nowhere/base' is not on this machine") as info:
        resolve(ModelRequest(adapter=str(adapter)))
    assert "--base" in info.value.fix


def test_unknown_model_lists_what_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ModelSourceError) as info:
        resolve(ModelRequest(model="no-such-model"))
    line = info.value.one_line()
    assert "Looked for" in line and "local folder" in line and str(tmp_path / "cache" / "models") in line
    assert "hub id" in info.value.fix


def test_folders_that_are_not_models(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="has no config.json"):
        resolve(ModelRequest(model=str(tmp_path / "empty")))
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text("{}")
    with pytest.raises(ModelSourceError, match="no weights"):
        resolve(ModelRequest(model=str(tmp_path / "noweights")))
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "run.json").write_text("{}")
    with pytest.raises(ModelSourceError, match="neither a merged/ model nor an adapter/"):
        resolve(ModelRequest(model=str(tmp_path / "runs" / "r")))


def test_downloaded_presets_and_hub_ids(tmp_path, monkeypatch, embedded_model):
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path / "cache"))
    link_model(embedded_model, tmp_path / "cache" / "models" / "qwen2.5-0.5b-instruct")
    link_model(embedded_model, tmp_path / "cache" / "models" / "org--tiny")
    assert resolve(ModelRequest(model="qwen2.5-0.5b-instruct")).model.endswith("qwen2.5-0.5b-instruct")
    assert resolve(ModelRequest(model="org/tiny")).model.endswith("org--tiny")
    assert resolve(ModelRequest(model="owner/not-downloaded")).model == "owner/not-downloaded"  # from the hub


def test_hub_id_that_cannot_be_fetched_offline_is_a_clear_error():
    with pytest.raises(ModelSourceError, match="Cannot load model .owner/not-downloaded") as info:
        load(ModelRequest(model="owner/not-downloaded"), notice=lambda _: None)
    assert "HF_ENDPOINT" in info.value.fix


# ------------------------------------------------------------------------------------------------- load


def test_adapter_for_another_base_is_refused(tmp_path, embedded_model):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    other = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4, vocab_size=49152))
    peft_model = get_peft_model(other, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    peft_model.peft_config["default"].base_model_name_or_path = "tiny/other-base"
    peft_model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(AdapterMismatch) as info:
        load(ModelRequest(adapter=str(tmp_path / "adapter"), base=str(embedded_model)), notice=lambda _: None)
    line = info.value.one_line()
    assert "does not fit the base model" in line and "'tiny/other-base'" in line
    assert "--base" in info.value.fix


def test_4bit_on_cpu_warns_and_falls_back(monkeypatch):
    notices: list[str] = []
    monkeypatch.setenv("BITS", "4")
    args = app_main.build_parser().parse_args(["--no-compare"])
    engine = build_engine(args, notices.append)
    assert any("4-bit quantization needs an NVIDIA GPU" in n for n in notices)
    assert engine.info["Quantization"] == "none" and engine.info["dtype"] == "float32"
    assert engine.decode == "dynamic" and engine.info["Decoding"].startswith("dynamic")  # auto on CPU


def test_decode_mode_comes_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.setenv("DECODE", "static")
    engine = build_engine(app_main.build_parser().parse_args(["--no-compare"]), lambda _: None)
    assert engine.decode == "static" and engine.info["Decoding"].startswith("static KV cache")
    engine = build_engine(app_main.build_parser().parse_args(["--no-compare", "--decode", "dynamic"]), lambda _: None)
    assert engine.decode == "dynamic"
    monkeypatch.setenv("DECODE", "turbo")
    with pytest.raises(SettingsError, match="DECODE=turbo"):
        build_engine(app_main.build_parser().parse_args(["--no-compare"]), lambda _: None)


def test_hosted_mode_is_configured_by_environment_alone(monkeypatch, lora_adapter, embedded_model):
    monkeypatch.setenv("MODEL_ID", str(embedded_model))
    monkeypatch.setenv("ADAPTER_ID", str(lora_adapter))
    monkeypatch.setenv("SYSTEM_PROMPT", "You are Xiaowei's assistant.")
    monkeypatch.setenv("MAX_NEW_TOKENS", "7")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "0")
    monkeypatch.setenv("APP_TAB", "compare")
    server = app_main.start(app_main.build_parser().parse_args([]), block=False, log=lambda _: None)
    try:
        assert server.engine.info["Adapter"] == str(lora_adapter)
        assert server.engine.default_system == "You are Xiaowei's assistant."
        assert server.engine.shares_base
        config = server.demo.get_config_file()
        sliders = [c for c in config["components"] if c.get("props", {}).get("label") == "Max new tokens"]
        assert sliders[0]["props"]["value"] == 7
    finally:
        server.close()


# ------------------------------------------------------------------------------------------------- main


def test_main_unknown_model_is_one_line_and_exit_2(capsys):
    assert app_main.main(["/no/such/folder", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Cannot find model '/no/such/folder'") and "Fix:" in err[0]


def test_main_port_in_use_is_a_clear_error(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert app_main.main(["--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"Port {port} on 127.0.0.1 is in use" in err and "--port 0" in err and "Traceback" not in err


def test_bad_environment_value_names_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("BITS", "five")
    assert app_main.main(["--port", "0"]) == 2
    assert "BITS='five'" in capsys.readouterr().err


def test_terminal_chat_streams_and_resets():
    out, err = io.StringIO(), io.StringIO()
    code = app_cli.main(["--temperature", "0", "--max-new-tokens", "12", "--prompt", "Who are you?",
                         "--prompt", "RESET", "--prompt", "你好", "--prompt", "EXIT", "--prompt", "never sent"],
                        output_stream=out, error_stream=err)
    assert code == 0
    text = out.getvalue()
    assert text.count("Assistant: ") == 2
    assert "User: Who are you?" in text and "(history cleared)" in text and "never sent" not in text


def test_terminal_chat_reads_stdin_until_eof():
    out = io.StringIO()
    code = app_cli.main(["--temperature", "0", "--max-new-tokens", "8"], input_stream=io.StringIO("Hi\n\n"),
                        output_stream=out, error_stream=io.StringIO())
    assert code == 0 and "User: Hi" in out.getvalue() and out.getvalue().count("Assistant: ") == 1


# ------------------------------------------------------------------------------------------- isolation


def test_app_imports_nothing_from_finetune_or_publish():
    for path in sorted((REPO / "app").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            assert not any(n.split(".")[0] in ("finetune", "publish") for n in names), f"{path.name} imports {names}"
    probe = ("import sys, app.main, app.ui, app.cli, app.models, app.engine; "
             "bad = [m for m in sys.modules if m.split('.')[0] in ('finetune', 'publish')]; "
             "assert not bad, bad")
    subprocess.run([sys.executable, "-c", probe], cwd=REPO, check=True)


def test_space_bundle_runs_from_environment_alone(tmp_path, embedded_model, lora_adapter):
    """The bundle `python -m publish demo` uploads (app.py + app/ + requirements + README, nothing else of this
    repo), started as a platform starts it, with the variables pointing at local folders instead of hub ids."""
    import os
    import time

    from gradio_client import Client

    from publish.demo import build_demo

    bundle = tmp_path / "space"
    build_demo(bundle, hub="hf", repo="me/xiaowei-chat", model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
               adapter_id="me/xiaowei-adapter")
    assert sorted(p.name for p in bundle.iterdir()) == ["README.md", "app", "app.py", "requirements.txt"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MODEL_ID": str(embedded_model), "ADAPTER_ID": str(lora_adapter), "GRADIO_SERVER_PORT":
           str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "TEMPERATURE": "0", "MAX_NEW_TOKENS": "12",
           "PYTHONPATH": ""}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=bundle, env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            lines.append(line)
            if "Chat page:" in line or process.poll() is not None:
                break
        assert any("Chat page:" in line for line in lines), "".join(lines)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        chatbot = client.predict("Who are you?", api_name="/chat")[0]
        assert chatbot[-1]["role"] == "assistant" and chatbot[-1]["content"]
        base, tuned, _ = client.predict("Who are you?", api_name="/compare")
        assert base[-1]["content"] != tuned[-1]["content"]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_openxlab_source_clones_the_repo_with_its_lfs_weights(tmp_path, monkeypatch, lora_adapter):
    """MODEL_SOURCE=openxlab: git + git-lfs from OPENXLAB_GIT_ENDPOINT (a local bare repo here), then a pull."""
    import hashlib

    from app.models import _download
    from publish.remote import UploadResult
    from publish.secrets import Secret
    from publish.stage import StagedFile
    from publish.upload_openxlab import upload_openxlab

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    root = tmp_path / "server"
    (root / "alice").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(root / "alice" / "xw.git")], check=True)
    files = [StagedFile(p.name, p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
             for p in sorted(Path(lora_adapter).iterdir()) if p.is_file()]
    result = upload_openxlab(Path(lora_adapter), files, "alice/xw", username="alice", token=Secret("unused", "test"),
                             commit_message="adapter", work_dir=tmp_path / "push", remote_url=f"file://{root}/alice/xw.git")
    assert isinstance(result, UploadResult) and result.commits == 1
    monkeypatch.setenv("OPENXLAB_GIT_ENDPOINT", f"file://{root}")
    monkeypatch.setenv("OPENXLAB_MODELS_DIR", str(tmp_path / "models"))
    notices = []
    folder = Path(_download("alice/xw", "openxlab", notices.append))
    weights = folder / "adapter_model.safetensors"
    assert weights.read_bytes() == (Path(lora_adapter) / "adapter_model.safetensors").read_bytes()  # not a pointer
    assert notices == ["Downloading alice/xw from OpenXLab ..."]
    assert _download("alice/xw", "openxlab", notices.append) == str(folder) and notices[-1].startswith("Updating")
    with pytest.raises(ModelSourceError, match="git clone failed"):
        _download("alice/missing", "openxlab", notices.append)
