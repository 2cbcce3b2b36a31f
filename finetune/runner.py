"""The one place that runs XTuner. Never trust `xtuner <verb>`: it exits 0 when the tool crashed and runs
whatever `python` is first on PATH. We run the tool modules with this interpreter and check the exit code."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.process import die_with_parent

from .errors import StageFailed

TOOLKIT_ROOT = Path(__file__).resolve().parent.parent
TOOLS = {
    "train": "finetune.xtuner_train",  # xtuner.tools.train, startable on CPU under torchrun
    "pth_to_hf": "xtuner.tools.model_converters.pth_to_hf",
    "merge": "xtuner.tools.model_converters.merge",
    "chat": "xtuner.tools.chat",
}
NOISE = ("GLIBCXX_3.4.32", "libbitsandbytes_cpu.so", "kernels-community")
# a rank that failed because another one went away (gloo, NCCL), not the cause
PEER_LOST = re.compile(r"Connection (reset|closed) by peer|remote process exited|NCCL communicator was aborted|"
                       r"Broken pipe", re.IGNORECASE)
SUMMARY_LINES = 1000  # torchrun's failure summary carries each failed rank's traceback


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


@dataclass
class RankFailure:
    """One failed process in torchrun's summary."""

    rank: int
    local_rank: int
    host: str
    exitcode: int
    error: str = ""  # the exception's last line, where the rank recorded one (finetune.xtuner_train does)

    @property
    def lost_peer(self) -> bool:
        """Stopped by torchrun, or broken off because another rank went away: a consequence, not the cause."""
        return self.exitcode == -signal.SIGTERM or bool(PEER_LOST.search(self.error))


def rank_failures(lines: list[str]) -> list[RankFailure]:
    """The failed ranks of torchrun's ChildFailedError summary, its root cause first."""
    starts = [i for i, line in enumerate(lines) if "ChildFailedError" in line]
    if not starts:
        return []
    entries: list[tuple[bool, list[str]]] = []  # (root cause?, the entry's lines)
    current, in_root = None, False
    for line in lines[starts[-1] + 1:]:
        if line.startswith("Root Cause"):
            in_root = True
        elif re.fullmatch(r"\[\d+\]:", line.strip()):
            current = []
            entries.append((in_root, current))
        elif line.startswith(("---", "===")):
            current = None
        elif current is not None:
            current.append(line)
    failures = [(root, _rank_failure(entry)) for root, entry in entries]
    return [f for root, f in failures if root] + [f for root, f in failures if not root]


def _rank_failure(entry: list[str]) -> RankFailure:
    """  rank      : 1 (local_rank: 1)  /  exitcode  : 3 (pid: 30068)  /  traceback : ... (the rest of the entry)"""
    fields: dict[str, str] = {}
    traceback: list[str] = []
    for line in entry:
        match = re.match(r"  (time|host|rank|exitcode|error_file|traceback)\s*: ?(.*)$", line)
        if traceback:  # the traceback runs to the end of the entry
            traceback.append(line)
        elif match and match.group(1) == "traceback":
            traceback.append(match.group(2))
        elif match:
            fields[match.group(1)] = match.group(2)
    rank, local_rank = (int(n) for n in re.findall(r"-?\d+", fields.get("rank", "-1 -1"))[:2])
    exitcode = int(re.match(r"-?\d+", fields.get("exitcode", "1").strip()).group(0))
    error = ""
    if traceback and not traceback[0].startswith("To enable traceback"):
        error = next(line.strip() for line in reversed(traceback) if line.strip())
    return RankFailure(rank, local_rank, fields.get("host", "?"), exitcode, error)


def describe_failures(tool: str, failures: list[RankFailure], *, several_nodes: bool) -> str:
    """One sentence naming the rank that failed first (not one that only lost its peers)."""
    culprit = next((f for f in failures if not f.lost_peer), failures[0])
    where = f"rank {culprit.rank} (local rank {culprit.local_rank} on {culprit.host})"
    if culprit.lost_peer:
        lost = PEER_LOST.search(culprit.error)
        why = f" ({lost.group(0)})" if lost else ""
        elsewhere = ", so the rank that failed first is on another node; see that node's log" if several_nodes else ""
        return f"XTuner {tool} stopped on {where}: it lost its connection to another rank{why}{elsewhere}"
    error = culprit.error if len(culprit.error) <= 200 else culprit.error[:200] + "..."
    what = describe_exit(culprit.exitcode) + (f" ({error})" if error else "")
    return f"XTuner {tool} failed on {where}, which {what}; the other ranks were stopped"


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
    recent: collections.deque[str] = collections.deque(maxlen=max(tail_lines, SUMMARY_LINES))
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:  # line by line: a kill keeps the log
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=tool_env(), text=True,
            encoding="utf-8", errors="replace", bufsize=1, preexec_fn=die_with_parent(),
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                if any(marker in line for marker in NOISE):
                    continue
                recent.append(line.rstrip("\n"))
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
    if returncode == 0:
        return
    lines = list(recent)
    message = f"XTuner {tool} {describe_exit(returncode)}"
    fix = fix or "read the log tail above; fix the cause and rerun (finished stages are kept)."
    if launch and launch.distributed:
        failures = rank_failures(lines)
        if failures:
            message = describe_failures(tool, failures, several_nodes=launch.nnodes > 1)
        elif any("EADDRINUSE" in line for line in lines):
            message = f"torchrun could not listen on --master-port {launch.master_port}: the port is in use"
            fix = "pass a free port with --master-port (e.g. 29501) on every node, or stop the run that holds it."
    raise StageFailed(f"{message}; full log: {log_path}.", fix, log_tail="\n".join(lines[-tail_lines:]),
                      log_path=str(log_path))
