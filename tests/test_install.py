"""`make setup` installs the project itself (editable): the commands are in the virtualenv's bin and run."""

import os
import subprocess
import sysconfig
from pathlib import Path

import pytest

COMMANDS = ["finetune", "publish", "chat-app", "chat"]


def test_console_scripts_are_installed():
    scripts = Path(sysconfig.get_path("scripts"))
    missing = [name for name in COMMANDS if not (scripts / name).is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing from {scripts}: run `make setup` (it installs the project with "
                    "`pip install --no-deps --no-build-isolation --editable .`)")


def test_finetune_help_runs_from_anywhere(tmp_path):
    finetune = Path(sysconfig.get_path("scripts")) / "finetune"
    if not finetune.is_file():
        pytest.fail(f"{finetune} is missing: run `make setup`")
    done = subprocess.run([str(finetune), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    assert "VERB" in done.stdout
