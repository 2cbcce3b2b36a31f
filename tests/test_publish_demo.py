"""`python -m publish demo`: the bundle, its front matter and pins, and the pre-flight hardware check (offline)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from publish import cli
from publish.card import parse_front_matter
from publish.demo import build_demo, openxlab_steps
from publish.hardware import DoesNotFit, check_fit, get_hardware, params_billion, smallest_fit

REPO = Path(__file__).resolve().parent.parent
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[name.lower()] = version.strip()
    return pins


def test_space_bundle_has_the_app_pinned_requirements_and_a_valid_space_card(tmp_path):
    from huggingface_hub import SpaceCard

    bundle = build_demo(tmp_path / "b", hub="hf", repo="me/xiaowei-chat", model_id=SMOL,
                        adapter_id="me/xiaowei-adapter")
    assert (bundle.path / "app.py").read_text() == (REPO / "app" / "space_app.py").read_text()
    shipped = {p.relative_to(bundle.path / "app").as_posix() for p in (bundle.path / "app").rglob("*.py")}
    assert shipped == {p.name for p in (REPO / "app").glob("*.py")}
    assert not list(bundle.path.rglob("__pycache__"))
    # every requirement is pinned to exactly the lock's version; gradio comes from sdk_version on a Space
    lock = _lock()
    requirements = [line for line in (bundle.path / "requirements.txt").read_text().splitlines()
                    if line and not line.startswith("#")]
    for line in requirements:
        name, version = line.split("==")
        assert lock[name.lower()] == version, line
    names = {line.split("==")[0].lower() for line in requirements}
    assert {"torch", "transformers", "peft"} <= names and "gradio" not in names and "bitsandbytes" not in names
    meta = SpaceCard((bundle.path / "README.md").read_text(encoding="utf-8")).data.to_dict()
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == lock["gradio"] and meta["app_file"] == "app.py"
    assert meta["python_version"] == "3.11" and meta["models"] == ["me/xiaowei-adapter", SMOL]
    assert meta["suggested_hardware"] == "cpu-basic"
    assert bundle.variables == {"MODEL_ID": SMOL, "ADAPTER_ID": "me/xiaowei-adapter"}
    assert {f.path for f in bundle.files} >= {"app.py", "README.md", "requirements.txt", "app/main.py"}


def test_studio_and_openxlab_bundles_list_gradio_and_their_own_card(tmp_path):
    studio = build_demo(tmp_path / "ms", hub="modelscope", repo="me/chat", model_id="me/xiaowei-7b", bits=4,
                        hardware="gpu-a10", compare=False)
    requirements = (studio.path / "requirements.txt").read_text()
    assert "gradio==" in requirements and "modelscope==" in requirements and "bitsandbytes==" in requirements
    meta = parse_front_matter((studio.path / "README.md").read_text(encoding="utf-8"))
    assert meta["deployspec"]["entry_file"] == "app.py" and meta["models"] == ["me/xiaowei-7b"]
    assert studio.variables == {"MODEL_ID": "me/xiaowei-7b", "BITS": "4", "MODEL_SOURCE": "modelscope", "COMPARE": "0"}

    app = build_demo(tmp_path / "ox", hub="openxlab", repo="me/chat", model_id=SMOL, system_prompt="你是小薇的助手")
    assert "gradio==" in (app.path / "requirements.txt").read_text()
    assert not (app.path / "README.md").read_text().startswith("---")
    steps = openxlab_steps(app, "https://github.com/me/chat.git")
    assert any("SYSTEM_PROMPT=你是小薇的助手" in step for step in steps)
    assert any("https://github.com/me/chat.git" in step for step in steps)


@pytest.mark.parametrize("model, expected", [
    ("internlm/internlm2_5-7b-chat", 7.74),  # a preset
    ("someone/Qwen2.5-7B-Instruct-xiaowei", 7.0),  # from the name
    ("someone/internlm2_5-1_8b-xiaowei", 1.8),
    ("someone/SmolLM2-135M-xiaowei", 0.135),
    ("someone/xiaowei", None),
])
def test_model_size_comes_from_presets_or_the_name(model, expected):
    assert params_billion(model) == expected


def test_fit_check_refuses_what_cannot_fit_and_suggests_what_does():
    cpu = get_hardware("hf", None)
    with pytest.raises(DoesNotFit) as refused:
        check_fit("hf", cpu, "Qwen/Qwen2.5-7B-Instruct", bits=None)
    assert "cpu-basic" in refused.value.message and "--hardware t4-small --bits 4" in refused.value.fix
    with pytest.raises(DoesNotFit) as refused:  # fp16 7B is ~18 GB: more than a T4's 16 GB
        check_fit("hf", get_hardware("hf", "t4-small"), "Qwen/Qwen2.5-7B-Instruct", bits=None)
    assert "--bits 4" in refused.value.fix
    assert "needs" in check_fit("hf", get_hardware("hf", "t4-small"), "Qwen/Qwen2.5-7B-Instruct", bits=4)
    with pytest.raises(DoesNotFit, match="needs a GPU"):
        check_fit("hf", cpu, SMOL, bits=4)
    assert "not checked" in check_fit("hf", cpu, "someone/xiaowei", bits=None)
    assert smallest_fit("hf", 0.135) == (cpu, None)
    assert smallest_fit("openxlab", 70) is None


def test_cli_refuses_a_7b_fp16_on_a_cpu_space_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "bundle"
    code = cli.main(["demo", "--to", "hf", "--repo", "me/chat", "--model", "Qwen/Qwen2.5-7B-Instruct",
                     "--out", str(out), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists() and not list(tmp_path.iterdir())
    assert err.count("\n") == 1 and err.startswith("error: The demo will not fit") and "Fix: use --hardware" in err


@pytest.mark.parametrize("args, message", [
    (["--model", "./runs/xiaowei/merged"], "local path"),
    (["--model", "not-an-id"], "OWNER/NAME"),
    (["--model", SMOL, "--hardware", "h100"], "Unknown hardware"),
    (["--model", SMOL, "--token-secret-env", "NO_SUCH_VAR_XYZ"], "is empty"),
])
def test_cli_bad_demo_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.delenv("NO_SUCH_VAR_XYZ", raising=False)
    code = cli.main(["demo", "--to", "hf", "--repo", "me/chat", "--out", str(tmp_path / "b"), "--dry-run", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and not (tmp_path / "b").exists()


def test_demo_dry_run_makes_no_network_request_and_prints_the_card(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network used during --dry-run")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    code = cli.main(["demo", "--to", "hf", "--repo", "me/chat", "--model", SMOL, "--adapter", "me/xiaowei-adapter",
                     "--out", str(tmp_path / "b"), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and "no network request" in out and "sdk: gradio" in out
    assert "ADAPTER_ID=me/xiaowei-adapter" in out and (tmp_path / "b" / "app.py").is_file()
    card = out.split("---- README.md (generated) ----\n")[1].split("---- end of README.md ----")[0]
    assert parse_front_matter(card)["app_file"] == "app.py"


def test_openxlab_demo_without_a_git_remote_prints_the_manual_steps(tmp_path, capsys):
    code = cli.main(["demo", "--to", "openxlab", "--repo", "me/chat", "--model", SMOL, "--out", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert code == 0 and "Manual action required" in out and "NOT published" in out
    assert "MODEL_ID=" + SMOL in out and "openxlab.org.cn/apps" in out


def test_an_existing_folder_that_is_not_a_bundle_is_left_alone(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code = cli.main(["demo", "--to", "hf", "--repo", "me/chat", "--model", SMOL, "--out", str(tmp_path), "--dry-run"])
    assert code == 2 and "not a demo bundle" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_openxlab_source_adds_packages_txt_and_the_variable(tmp_path):
    bundle = build_demo(tmp_path / "b", hub="openxlab", repo="me/chat", model_id="me/xiaowei-merged",
                        source="openxlab")
    assert (bundle.path / "packages.txt").read_text().split() == ["git", "git-lfs"]
    assert bundle.variables["MODEL_SOURCE"] == "openxlab"
    plain = build_demo(tmp_path / "c", hub="hf", repo="me/chat", model_id=SMOL)
    assert not (plain.path / "packages.txt").exists() and "MODEL_SOURCE" not in plain.variables
