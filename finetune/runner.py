"""The one place that runs XTuner. Never trust `xtuner <verb>`: it exits 0 when the tool crashed and runs
whatever `python` is first on PATH. We run the tool modules with this interpreter and check the exit code."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import StageFailed

TOOLKIT_ROOT = Path(__file__).resolve().parent.parent
TOOLS = {
    "train": "xtuner.tools.train",
    "pth_to_hf": "xtuner.tools.model_converters.pth_to_hf",
    "merge": "xtuner.tools.model_converters.merge",
    "chat": "xtuner.tools.chat",
}
NOISE = ("GLIBCXX_3.4.32", "libbitsandbytes_cpu.so", "kernels-community")


@dataclass
class Launch:
    """How to start the tool: one process, or torchrun over GPUs/nodes."""

    gpus: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def distributed(self) -> bool:
        return self.gpus > 1 or self.nnodes > 1


def tool_env() -> dict[str, str]:
    env = dict(os.environ)
    # generated configs may import finetune.xtuner_compat, so the toolkit must be importable in the child
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TOOLKIT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # torch >= 2.6 loads with weights_only=True, which refuses mmengine's own (trusted) checkpoints on --resume
    env.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def command_for(tool: str, args: list[str], launch: Launch | None = None) -> list[str]:
    module = TOOLS[tool]
    if launch and launch.distributed:
        return [
            sys.executable, "-m", "torch.distributed.run",
            f"--nproc_per_node={launch.gpus}", f"--nnodes={launch.nnodes}", f"--node_rank={launch.node_rank}",
            f"--master_addr={launch.master_addr}", f"--master_port={launch.master_port}",
            "-m", module, *args, "--launcher", "pytorch",
        ]
    return [sys.executable, "-m", module, *args]


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        sig = -returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        hint = " (killed: out of memory or stopped by the user?)" if sig in (signal.SIGKILL, signal.SIGTERM) else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {returncode}"


def run_tool(
    tool: str,
    args: list[str],
    *,
    log_path: str | Path,
    on_line: Callable[[str], None] | None = None,
    launch: Launch | None = None,
    fix: str = "",
    tail_lines: int = 40,
) -> None:
    """Run an XTuner tool, stream its output to `log_path` and `on_line`, raise StageFailed on failure."""
    command = command_for(tool, args, launch)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=tool_env(), text=True,
            encoding="utf-8", errors="replace", bufsize=1,
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                if any(marker in line for marker in NOISE):
                    continue
                tail.append(line.rstrip("\n"))
                if on_line:
                    on_line(line.rstrip("\n"))
            returncode = process.wait()
        except BaseException:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
    if returncode != 0:
        raise StageFailed(
            f"XTuner {tool} {describe_exit(returncode)}; full log: {log_path}.",
            fix or "read the log tail above; fix the cause and rerun (finished stages are kept).",
            log_tail="\n".join(tail),
            log_path=str(log_path),
        )
