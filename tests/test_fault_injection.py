"""SIGKILL at seeded random points of the real commands on a trained run -- `finetune convert`, `finetune export`,
`publish adapter --merged` staging (at seeded filesystem events: it is too quick for a timer) -- and what the user
then finds: the output complete or absent, no tool process still running (the tools we start die with us), and the
same command run again cleans up the dead run's temporary files and ends with the same result as an uninterrupted
run. (Merge: tests/test_fsutil_litter.py; training:
tests/test_resume.py; uploads: the publish tests.)"""

import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def temps_of(target: Path) -> list[Path]:
    return sorted(p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.finetune-tmp."))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def kill_when(argv: list[str], ready, delay: float, timeout: float = 300) -> None:
    """Start `python -m ARGV`, wait until `ready()`, wait `delay` seconds more and SIGKILL the command itself (not
    its process group, as `kill -9 PID` or the out-of-memory killer would); then no tool it started may live on."""
    process = subprocess.Popen([sys.executable, "-m", *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"finished before the kill point: {process.stderr.read()}"
        assert time.monotonic() < deadline, "the command did not get to the kill point in time"
        time.sleep(0.01)
    time.sleep(delay)
    tools = psutil.Process(process.pid).children(recursive=True)
    process.kill()
    process.wait()
    _, alive = psutil.wait_procs(tools, timeout=30)
    assert not alive, f"still running after the command was killed: {[p.cmdline()[:3] for p in alive]}"


def rerun(argv: list[str]) -> str:
    done = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_convert_killed_then_rerun_gives_the_runs_own_adapter(trained_run, tmp_path):
    rng = random.Random(21)
    out = tmp_path / "adapter"
    argv = ["finetune", "convert", str(trained_run / "work_dir"), "--config", str(trained_run / "config.py"),
            "--out", str(out)]
    kill_when(argv, lambda: bool(temps_of(out)), delay=rng.uniform(0.5, 3.0))  # XTuner's pth_to_hf takes > 5 s
    assert not out.exists() and temps_of(out)
    err = rerun(argv)
    assert "removed a leftover temporary folder from an interrupted run" in err
    assert temps_of(out) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    reference = trained_run / "adapter"  # converted by the run's own, uninterrupted convert stage
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer_config.json"):
        assert digest(out / name) == digest(reference / name), name


def test_export_killed_then_rerun_gives_the_same_gguf(trained_run, tmp_path):
    from finetune.export import export

    reference = export(trained_run, ["q8_0"], out=tmp_path / "reference", progress=lambda _: None)
    rng = random.Random(22)
    out = tmp_path / "gguf"
    argv = ["finetune", "export", str(trained_run), "--quant", "q8_0", "--out", str(out)]
    f16 = out / reference.files["q8_0"].name.replace("Q8_0", "F16")

    def converting() -> bool:  # the converter has written part of the f16 file
        return out.is_dir() and any(p.stat().st_size > 1_000_000 for p in temps_of(f16))

    kill_when(argv, converting, delay=rng.uniform(0.0, 1.0))
    target = out / reference.files["q8_0"].name
    assert not target.exists() and not (out / "Modelfile").exists()
    assert temps_of(f16)
    err = rerun(argv)
    assert "removed a leftover temporary file from an interrupted run" in err
    assert digest(target) == digest(reference.files["q8_0"])
    assert (out / "Modelfile").read_text() == reference.modelfile.read_text()
    assert [p.name for p in out.iterdir() if "finetune-tmp" in p.name] == []


# Staging hard-links the weights, so its temporary folder lives for ~20 ms: too short to hit with a timer. The
# command runs unchanged under an audit hook (PEP 578) that SIGKILLs it at the Nth filesystem event whose path
# matches a pattern -- a failpoint with no hook in our code.
KILL_AT_EVENT = """
import atexit, os, re, runpy, signal, sys
pattern, events = re.compile(os.environ["FAULT_PATTERN"]), os.environ["FAULT_EVENTS"].split(",")
at = int(os.environ["FAULT_AT"])
seen = 0
def hook(event, args):
    global seen
    if event in events and any(isinstance(a, str) and pattern.search(a) for a in args):
        seen += 1
        if seen == at:
            os.kill(os.getpid(), signal.SIGKILL)
atexit.register(lambda: print(f"fault events: {seen}", file=sys.stderr))
sys.argv = sys.argv[1:]
sys.addaudithook(hook)
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""
WRITES = "open,os.link,os.mkdir,os.rename,os.remove,os.chmod,shutil.rmtree"


def run_until_event(argv: list[str], pattern: str, at: int, events: str = WRITES) -> subprocess.CompletedProcess:
    env = {**os.environ, "FAULT_PATTERN": pattern, "FAULT_EVENTS": events, "FAULT_AT": str(at)}
    return subprocess.run([sys.executable, "-c", KILL_AT_EVENT, *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_staging_killed_at_seeded_writes_then_rerun_stages_the_same_folder(trained_run, tmp_path):
    def argv(out: Path) -> list[str]:
        return ["publish", "adapter", str(trained_run), "--merged", "--to", "hf", "--repo", "you/xinghe",
                "--dry-run", "--out", str(out)]

    out = tmp_path / "staged"
    inside_temp = r"/\.staged\.finetune-tmp\.[^/]+/"  # a file or folder being written in the temporary folder
    counted = run_until_event(argv(tmp_path / "reference"), inside_temp.replace("staged", "reference"), 0)
    assert counted.returncode == 0, counted.stderr
    writes = int(re.search(r"fault events: (\d+)", counted.stderr).group(1))
    assert writes >= 10  # links, the card, the metadata...
    expected = tree_digest(tmp_path / "reference")

    for at in sorted(random.Random(23).sample(range(1, writes + 1), 3)):
        killed = run_until_event(argv(out), inside_temp, at)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert not out.exists() and len(temps_of(out)) == 1  # absent, with the dead run's temporary folder
    err = rerun(argv(out))
    assert "removed a leftover temporary folder from an interrupted run" in err
    assert tree_digest(out) == expected and temps_of(out) == []

    # Killed while a complete staging folder is being replaced, between moving it aside and renaming the new one:
    killed = run_until_event(argv(out), r"\.staged\.finetune-tmp\.[^/]+$", 1, events="os.rename")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not out.exists()
    rerun(argv(out))
    assert tree_digest(out) == expected and temps_of(out) == []
    shutil.rmtree(tmp_path / "reference")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["staged"]
