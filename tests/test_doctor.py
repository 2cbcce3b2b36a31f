"""doctor: the real checks on this machine (once), their rendering, JSON output and the known-problem verdicts."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import pytest

from finetune import doctor
from finetune.doctor import Check
from finetune.runner import Launch

EXPECTED = {"python", "torch", "cuda", "bf16", "bitsandbytes", "deepspeed", "xtuner", "transformers", "peft",
            "mmengine", "gradio", "lock", "embedded model", "xtuner cpu patch", "offline/hub", "fast: fused kernels",
            "fast: varlen attention", "distributed", "dist: processes", "dist: network", "dist: master port"}


@pytest.fixture(scope="module")
def checks() -> list[Check]:
    return doctor.diagnose()


def test_diagnose_reports_every_check(checks):
    names = {check.name for check in checks}
    assert EXPECTED <= names
    assert any(name.startswith("disk: ") for name in names)
    assert all(check.status in doctor.STATUSES and check.detail for check in checks)
    assert all(check.fix for check in checks if check.status in ("warn", "fail"))
    by_name = {check.name: check for check in checks}
    assert by_name["python"].status == "ok"
    assert by_name["xtuner"].detail.startswith("0.2.0")


def test_table_and_json_via_cli(checks, monkeypatch, capsys):
    monkeypatch.setattr(doctor, "diagnose", lambda launch=None: checks)
    root = argparse.ArgumentParser()
    doctor.register(root.add_subparsers(dest="verb", required=True), argparse.HelpFormatter)
    args = root.parse_args(["doctor", "--json"])
    code = args.func(args)
    payload = json.loads(capsys.readouterr().out)
    assert code == doctor.exit_code(checks) and payload["ok"] is (code == 0)
    assert {item["name"] for item in payload["checks"]} == {check.name for check in checks}
    assert set(payload["checks"][0]) == {"name", "status", "detail", "fix"}
    args = root.parse_args(["doctor"])
    args.func(args)
    table = capsys.readouterr().out
    assert table.startswith("STATUS") and "bitsandbytes" in table and " ok," in table


def test_fail_sets_exit_code_and_shows_fix():
    checks = [Check("python", "ok", "3.11"), Check("xtuner", "fail", "broken", "pip install --no-deps xtuner==0.2.0")]
    assert doctor.exit_code(checks) == 1 and doctor.exit_code(checks[:1]) == 0
    assert "fix: pip install --no-deps xtuner==0.2.0" in doctor.render_table(checks)


def test_no_tokens_printed(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_topsecret")
    check = doctor.check_offline()
    assert "HF_TOKEN" in check.detail and "topsecret" not in check.detail


def _torch(cuda: bool, version: str = "13.0") -> SimpleNamespace:
    return SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: cuda), version=SimpleNamespace(cuda=version))


def test_bitsandbytes_verdicts():
    pins = {"bitsandbytes": "0.45.1"}
    broken = doctor.check_bitsandbytes(
        {"ok": False, "version": "0.45.0", "error": "ModuleNotFoundError: No module named 'triton.ops'"},
        _torch(False), pins)
    assert broken.status == "fail" and "triton" in broken.detail and "bitsandbytes==0.45.1" in broken.fix
    cpu = doctor.check_bitsandbytes({"ok": True, "version": "0.45.1", "stderr": "OSError: GLIBCXX_3.4.32"},
                                    _torch(False), pins)
    assert cpu.status == "info" and "harmless" in cpu.detail
    no_cuda_lib = doctor.check_bitsandbytes(
        {"ok": True, "version": "0.45.1", "cuda_lib": False, "expected_lib": "libbitsandbytes_cuda130.so",
         "expected_lib_exists": False}, _torch(True), pins)
    assert no_cuda_lib.status == "warn" and "libbitsandbytes_cuda130.so" in no_cuda_lib.detail
    good = doctor.check_bitsandbytes({"ok": True, "version": "0.45.1", "cuda_lib": True}, _torch(True), pins)
    assert good.status == "ok"


def test_gpu_checks_with_a_fake_cuda():
    cuda = SimpleNamespace(is_available=lambda: True, device_count=lambda: 1, get_device_name=lambda i: "NVIDIA H100",
                           get_device_capability=lambda i: (9, 0), mem_get_info=lambda i: (70 * 2**30, 80 * 2**30),
                           is_bf16_supported=lambda: True)
    torch = SimpleNamespace(cuda=cuda, version=SimpleNamespace(cuda="13.0"), cpu=SimpleNamespace())
    (gpu,) = doctor.check_cuda(torch)
    assert gpu.name == "gpu 0" and "H100" in gpu.detail and "70.0 GiB free of 80.0 GiB" in gpu.detail
    assert doctor.check_bf16(torch).status == "ok"
    assert doctor.check_cpu_patch(torch).status == "ok"


def test_deepspeed_and_xtuner_verdicts(monkeypatch):
    missing = doctor.check_deepspeed({"ok": False, "error": "ModuleNotFoundError: No module named 'deepspeed'"},
                                     {"deepspeed": "0.16.2"})
    assert missing.status == "warn" and "pip install --no-deps deepspeed==0.16.2" in missing.fix
    monkeypatch.setattr(doctor, "installed_version", lambda name: "0.1.23")
    old = doctor.check_xtuner({"ok": True}, {"xtuner": "0.2.0"})
    assert old.status == "warn" and "xtuner==0.2.0" in old.fix
    vision = doctor.check_xtuner({"ok": False, "error": "RuntimeError: operator torchvision::nms does not exist"},
                                 {"xtuner": "0.2.0"})
    assert vision.status == "fail" and "torchvision" in vision.fix


def test_lock_mismatch_is_a_warning(tmp_path, monkeypatch):
    lock = tmp_path / "requirements.txt"
    lock.write_text("# comment\ntransformers==9.9.9\nPyYAML==6.0.3  # trailing\n")
    pins = doctor.read_lock(lock)
    assert pins == {"transformers": "9.9.9", "pyyaml": "6.0.3"}
    check = doctor._pin_check("transformers", "4.48.0", pins, "ok", "4.48.0")
    assert check.status == "warn" and check.fix == "pip install --no-deps -r requirements.txt"


def test_probe_crash_does_not_crash_the_doctor():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit('boom')"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    result = doctor._collect(proc)
    assert result["ok"] is False and "boom" in result["error"]
    check = doctor.check_deepspeed(result, {})
    assert check.status == "warn" and "boom" in check.detail


def test_summary_line_counts_statuses():
    checks = [Check("a", "ok", "x"), Check("b", "warn", "y", "do z"), Check("c", "info", "w")]
    assert doctor.render_table(checks).splitlines()[-1] == "1 ok, 1 info, 1 warn, 0 fail"


def test_cli_main_doctor_json(checks, monkeypatch, capsys):
    from finetune import cli

    monkeypatch.setattr(cli, "VERB_MODULES", ["doctor"])
    monkeypatch.setattr(doctor, "diagnose", lambda launch=None: checks)
    assert cli.main(["doctor", "--json"]) == doctor.exit_code(checks)
    assert json.loads(capsys.readouterr().out)["checks"]


def test_distributed_launch_is_described_as_train_would_start_it(monkeypatch, capsys):
    from finetune import cli

    seen = []
    monkeypatch.setattr(cli, "VERB_MODULES", ["doctor"])
    monkeypatch.setattr(doctor, "diagnose", lambda launch=None: seen.append(launch) or [Check("python", "ok", "x")])
    assert cli.main(["doctor", "--gpus", "8", "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1"]) == 0
    assert seen == [Launch(gpus=8, nnodes=2, node_rank=1, master_addr="10.0.0.1")]
    (summary,) = [c for c in doctor.check_distributed(None, seen[0]) if c.name == "distributed"]
    assert "torchrun, 8 process(es) per node x 2 node(s) = world size 16, this node is node 1" in summary.detail
    assert "backend gloo" in summary.detail
    cuda = SimpleNamespace(is_available=lambda: True, device_count=lambda: 8)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    (summary, *_) = doctor.check_distributed(SimpleNamespace(cuda=cuda), seen[0])
    assert "backend nccl; CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7: 8 GPU(s) visible" in summary.detail
    (one,) = [c for c in doctor.check_distributed(None, Launch()) if c.name == "distributed"]
    assert one.detail.startswith("one process, no torchrun")


def test_process_count_traps():
    more = doctor.check_dist_processes(Launch(gpus=8, nnodes=2), cuda=True, visible=4, cores=64)
    assert more.status == "fail" and "sees 4 GPU(s)" in more.detail and more.fix.startswith("--gpus 4 on every node")
    assert doctor.check_dist_processes(Launch(gpus=4), cuda=True, visible=8, cores=64).status == "ok"
    assert doctor.check_dist_processes(Launch(gpus=4), cuda=False, visible=0, cores=2).status == "warn"
    assert doctor.check_dist_processes(Launch(gpus=2), cuda=False, visible=0, cores=2).status == "ok"


def test_network_interface_traps():
    two_nodes = Launch(gpus=8, nnodes=2, master_addr="10.0.0.1")
    several = doctor.check_dist_network(two_nodes, ["lo", "eth0", "ib0", "docker0"], {})
    assert several.status == "warn" and "eth0, ib0, docker0" in several.detail
    assert "NCCL_SOCKET_IFNAME" in several.fix and "GLOO_SOCKET_IFNAME" in several.fix
    chosen = doctor.check_dist_network(two_nodes, ["lo", "eth0", "ib0"], {"NCCL_SOCKET_IFNAME": "ib0"})
    assert chosen.status == "ok" and "NCCL_SOCKET_IFNAME=ib0" in chosen.detail
    assert doctor.check_dist_network(Launch(gpus=8), ["lo", "eth0", "ib0"], {}).status == "info"  # one node
    assert doctor.check_dist_network(two_nodes, ["lo", "eth0"], {}).status == "ok"
    local = doctor.check_dist_network(Launch(nnodes=2), ["lo", "eth0"], {})
    assert local.status == "warn" and "--master-addr 127.0.0.1" in local.detail


def test_a_master_port_in_use_is_a_warning():
    import socket

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = doctor.check_dist_port(Launch(gpus=2, master_port=port))
        assert busy.status == "warn" and f"port {port} is in use" in busy.detail and "--master-port" in busy.fix
        assert doctor.check_dist_port(Launch(gpus=2, nnodes=2, node_rank=1, master_port=port)).status == "info"
    assert doctor.check_dist_port(Launch(gpus=2, master_port=port)).status == "ok"
