"""Our CLIs hide the libraries' start-up noise by default and show it with the verbose switch: real commands in
subprocesses, on the embedded model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BNB_KERNEL = "Failed to load CPU gemm_4bit_forward from kernels-community"  # bitsandbytes, imported by peft
NOISE = [
    BNB_KERNEL,
    "Setting accelerator to CPU",  # DeepSpeed (on stdout)
    "Setting ds_accelerator to cpu",
    "`torch.jit.script` is deprecated",  # torch, called by DeepSpeed's import
]
TORCH_DTYPE = "`torch_dtype` is deprecated! Use `dtype` instead!"


def run(args: list[str], **env: str) -> str:
    """stdout and stderr of `python ARGS` (exit code 0 asserted); env entries set to '' are removed."""
    environment = {k: v for k, v in {**os.environ, **env}.items() if v}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_merge_is_quiet_by_default_and_verbose_shows_the_libraries(tmp_path, lora_adapter):
    merge = ["-m", "finetune", "merge", str(lora_adapter), "--out", str(tmp_path / "merged")]
    quiet = run(merge, FINETUNE_VERBOSE="")
    assert [line for line in NOISE if line in quiet] == []
    assert "Merged model ready" in quiet  # our own progress lines are unchanged

    verbose = run(merge, FINETUNE_VERBOSE="1")
    assert [line for line in expected_noise() if line not in verbose] == []


def expected_noise() -> list[str]:
    """The noise this machine's libraries print: bitsandbytes tries (and, offline, fails to fetch) its CPU kernel only
    on CPUs with AVX512-BF16, by its own check (seen on the CI machine, not on an AMD EPYC without it)."""
    from bitsandbytes.functional import has_avx512bf16

    return [line for line in NOISE if line != BNB_KERNEL or has_avx512bf16()]


def test_chat_in_the_terminal_is_quiet(lora_adapter):
    out = run(["-m", "app.cli", "--adapter", str(lora_adapter), "--prompt", "hi", "--max-new-tokens", "2",
               "--temperature", "0"], APP_VERBOSE="")
    assert [line for line in NOISE if line in out] == []
    assert "Assistant:" in out


def test_transformers_torch_dtype_notice_is_hidden_unless_verbose(embedded_model):
    """transformers' deprecation line for `torch_dtype=`, which the embedded model's first conversion triggers."""
    code = ("import sys; from app.quiet import quiet; quiet('--verbose' in sys.argv)\n"
            "from transformers import AutoConfig\n"
            f"AutoConfig.from_pretrained({str(embedded_model)!r}, torch_dtype='float32')\n")
    assert TORCH_DTYPE not in run(["-c", code], APP_VERBOSE="")
    assert TORCH_DTYPE in run(["-c", code, "--verbose"], APP_VERBOSE="")
