"""`finetune train`: run XTuner training with a progress bar, a loss curve and honest failure reporting."""

from __future__ import annotations

import json
import os
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from app.console import say

from .errors import InputError, StageFailed
from .fsutil import write_text
from .runner import Launch, run_tool

ITER_LINE = re.compile(r"Iter\(train\)\s*\[\s*(\d+)\s*/\s*(\d+)\s*\](.*)")
METRIC = re.compile(r"(\w+):\s*([-+0-9.eE:]+)")
EVAL_START = "Sample output:"
DEEPSPEED_NAMES = {"zero1": "deepspeed_zero1", "zero2": "deepspeed_zero2", "zero3": "deepspeed_zero3"}


@dataclass
class TrainResult:
    work_dir: Path
    checkpoint: Path | None  # None on nodes other than node 0: rank 0 writes the checkpoints
    history: list[dict] = field(default_factory=list)
    loss_curve: Path | None = None

    @property
    def final_loss(self) -> float | None:
        losses = [h["loss"] for h in self.history if "loss" in h]
        return losses[-1] if losses else None


def checkpoints(work_dir: str | Path) -> list[Path]:
    """XTuner checkpoints, oldest first: `iter_N.pth` files, or directories for DeepSpeed runs."""
    found = []
    for path in Path(work_dir).glob("iter_*.pth"):
        match = re.fullmatch(r"iter_(\d+)\.pth", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def is_complete_checkpoint(path: Path) -> bool:
    """torch.save writes a zip archive whose directory comes last: a file cut off while being written (the process
    was killed, the disk filled) has none. A DeepSpeed checkpoint is a folder; one with no files is unfinished."""
    if path.is_dir():
        return any(p.is_file() for p in path.rglob("*"))
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def newest_checkpoint(work_dir: str | Path, notice=None) -> Path | None:
    """The newest complete checkpoint; `notice` hears of newer ones that were cut off while being written."""
    for path in reversed(checkpoints(work_dir)):
        if is_complete_checkpoint(path):
            return path
        if notice:
            notice(f"skipping {path.name}: it was cut off while being written (an interrupted run)")
    return None


def parse_iter_line(line: str) -> dict | None:
    match = ITER_LINE.search(line)
    if not match:
        return None
    record: dict = {"iter": int(match.group(1)), "total": int(match.group(2))}
    for key, value in METRIC.findall(match.group(3)):
        if key == "eta":
            record["eta"] = value
            continue
        try:
            record[key] = float(value)
        except ValueError:
            continue
    return record


class Progress:
    """Turns XTuner's log lines into a progress bar and a metrics history."""

    def __init__(self, verbose: bool = False, stream=None, journal: Path | None = None):
        self.verbose = verbose
        self.stream = stream or sys.stderr
        self.journal = journal  # metrics.jsonl: each record appended as it arrives, so a killed run keeps its curve
        self.history: list[dict] = []
        self.bar = None
        self.in_sample = False

    def __call__(self, line: str) -> None:
        record = parse_iter_line(line)
        if record:
            self.in_sample = False
            self.history.append(record)
            if self.journal is not None:
                with open(self.journal, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
            self._update(record)
            return
        if self.verbose:
            self._print(line)
        elif EVAL_START in line or self.in_sample:
            # EvaluateChatHook answers: worth seeing while the model learns
            self.in_sample = EVAL_START in line or (self.in_sample and bool(line.strip()))
            self._print(line[line.find(EVAL_START):] if EVAL_START in line else line)

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _update(self, record: dict) -> None:
        from tqdm import tqdm

        if not self.stream.isatty():
            self._plain(record)
            return
        if self.bar is None:
            self.bar = tqdm(total=record["total"], desc="train", unit="it", file=self.stream, dynamic_ncols=True,
                            initial=record["iter"] - 1)
        self.bar.n = record["iter"]
        postfix = {k: f"{record[k]:.4f}" for k in ("loss",) if k in record}
        if "lr" in record:
            postfix["lr"] = f"{record['lr']:.2e}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()

    def _plain(self, record: dict) -> None:
        """One line per iteration when the output is a log file, not a terminal."""
        parts = [f"train {record['iter']}/{record['total']}"]
        if "loss" in record:
            parts.append(f"loss {record['loss']:.4f}")
        if "lr" in record:
            parts.append(f"lr {record['lr']:.2e}")
        if "time" in record:
            parts.append(f"{record['time']:.1f}s/it")
        if "eta" in record:
            parts.append(f"eta {record['eta']}")
        print("  ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def plot_loss(history: list[dict], out: str | Path, title: str = "training loss") -> Path | None:
    points = [(h["iter"], h["loss"]) for h in history if "loss" in h]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot([p[0] for p in points], [p[1] for p in points], color="#2563eb", linewidth=1.6, label="loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    lrs = [(h["iter"], h["lr"]) for h in history if "lr" in h]
    if lrs:
        ax2 = ax.twinx()
        ax2.plot([p[0] for p in lrs], [p[1] for p in lrs], color="#f59e0b", linewidth=1, alpha=0.7, label="lr")
        ax2.set_ylabel("learning rate")
    fig.legend(loc="upper right", bbox_to_anchor=(0.88, 0.88))
    fig.tight_layout()
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def train(
    config: str | Path,
    work_dir: str | Path,
    *,
    resume: bool = False,
    deepspeed: str = "none",
    launch: Launch | None = None,
    verbose: bool = False,
    seed: int | None = None,
) -> TrainResult:
    config = Path(config)
    if not config.is_file():
        raise InputError(f"Config {config} does not exist.", "write one with `python -m finetune config ...`.")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    node_rank = launch.node_rank if launch else 0
    args = [str(config), "--work-dir", str(work_dir)]
    if deepspeed != "none":
        args += ["--deepspeed", deepspeed_config(deepspeed, work_dir)]
    if seed is not None:
        args += ["--seed", str(seed)]
    if resume:
        last = newest_checkpoint(work_dir, notice=say)
        if last is not None:
            say(f"Resuming from {last}")
            args += ["--resume", str(last)]
        elif node_rank > 0:  # this node's ranks would start from scratch beside node 0's resumed ones
            raise InputError(f"Node {node_rank} finds no checkpoint to resume from in {work_dir}.",
                             "every node must load the same one: give all nodes the same --work-dir on a shared "
                             "filesystem (or copy node 0's newest iter_*.pth there), or start over without --resume.")
        else:
            say(f"No checkpoint in {work_dir} yet: starting from the beginning.")
    if node_rank > 0:
        say(f"Node {node_rank}: rank 0 on node 0 ({launch.master_addr}) shows the progress and writes the "
            "checkpoints.")
    progress = Progress(verbose=verbose, journal=work_dir / "metrics.jsonl")
    log_path = work_dir / "train.log"
    try:
        run_tool("train", args, log_path=log_path, on_line=progress, launch=launch,
                 fix="read the log tail above (common: out of memory -> lower --batch-size/--max-length or use "
                 "--quant 4bit; a bad data line -> `python -m finetune data check FILE`), then rerun with --resume.")
    finally:
        progress.close()
        history = _merge_history(work_dir, progress.history)
        curve = plot_loss(history, work_dir / "loss.png")
    if node_rank > 0:
        return TrainResult(work_dir=work_dir, checkpoint=None)
    last = newest_checkpoint(work_dir)
    if last is None:
        raise StageFailed(
            f"XTuner finished but wrote no checkpoint in {work_dir}.",
            "the config's CheckpointHook must keep save_last=True; regenerate it with `python -m finetune config`.",
            log_path=str(log_path),
        )
    total = history[-1]["total"] if history else None
    if history and history[-1]["iter"] != total:
        raise StageFailed(f"Training stopped at iteration {history[-1]['iter']} of {total}.",
                          "rerun with --resume to continue from the last checkpoint.", log_path=str(log_path))
    return TrainResult(work_dir=work_dir, checkpoint=last, history=history, loss_curve=curve)


def deepspeed_config(stage: str, work_dir: Path) -> str:
    """What `--deepspeed` gets: XTuner's own ZeRO config by name on a GPU. Without CUDA, a copy in `work_dir` with
    16-bit off: XTuner turns its "auto" dtypes into fp16 wherever torch.cpu exists; DeepSpeed refuses fp16 on CPU."""
    import torch

    name = DEEPSPEED_NAMES[stage]
    if torch.cuda.is_available():
        return name
    settings = json.loads(xtuner_deepspeed_file(name).read_text(encoding="utf-8"))
    settings["fp16"], settings["bf16"] = {"enabled": False}, {"enabled": False}
    return str(write_text(work_dir / f"{name}_cpu.json", json.dumps(settings, indent=2) + "\n"))


def xtuner_deepspeed_file(name: str) -> Path:
    """XTuner's ZeRO config file for a name such as deepspeed_zero2 (what `--deepspeed NAME` loads)."""
    import importlib.util

    return Path(importlib.util.find_spec("xtuner").origin).parent / "configs" / "deepspeed" / f"{name}.json"


def _merge_history(work_dir: Path, new: list[dict]) -> list[dict]:
    """Keep metrics across resumed runs in work_dir/metrics.jsonl, one record an iteration in order (later records
    win for the same iteration: a resumed run repeats the iterations after its checkpoint)."""
    path = work_dir / "metrics.jsonl"
    by_iter: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # blank, or the last line of a run killed while appending it
                continue
            if isinstance(record, dict) and isinstance(record.get("iter"), int):
                by_iter[record["iter"]] = record
    for record in new:
        by_iter[record["iter"]] = record
    history = [by_iter[k] for k in sorted(by_iter)]
    write_text(path, "".join(json.dumps(r) + "\n" for r in history))
    return history


def launch_from_args(args) -> Launch:
    env = os.environ
    launch = Launch(
        gpus=args.gpus or int(env.get("NPROC_PER_NODE", "1")),
        nnodes=args.nnodes or int(env.get("NNODES", "1")),
        node_rank=args.node_rank if args.node_rank is not None else int(env.get("NODE_RANK", "0")),
        master_addr=args.master_addr or env.get("ADDR", env.get("MASTER_ADDR", "127.0.0.1")),
        master_port=args.master_port or int(env.get("PORT", env.get("MASTER_PORT", "29500"))),
    )
    if launch.gpus < 1 or launch.nnodes < 1 or not 0 <= launch.node_rank < launch.nnodes:
        raise InputError(f"--gpus {launch.gpus} --nnodes {launch.nnodes} --node-rank {launch.node_rank} is not a "
                         "launch.", "use --gpus >= 1 and --nnodes >= 1, and number the nodes 0 .. nnodes-1.")
    return launch


def add_launch_arguments(parser) -> None:
    parser.add_argument("--gpus", type=int, default=None, help="training processes on this node, one per GPU (on "
                        "CPU: gloo processes); more than 1 starts torchrun (env NPROC_PER_NODE)")
    parser.add_argument("--nnodes", type=int, default=None, help="nodes (env NNODES)")
    parser.add_argument("--node-rank", dest="node_rank", type=int, default=None, help="this node (env NODE_RANK)")
    parser.add_argument("--master-addr", dest="master_addr", default=None, help="rank-0 node address (env ADDR)")
    parser.add_argument("--master-port", dest="master_port", type=int, default=None, help="port (env PORT)")


def add_verbose_argument(parser) -> None:
    parser.add_argument("--verbose", action="store_true", help="echo XTuner's whole log")


def register(subparsers, formatter_class) -> None:
    parser = subparsers.add_parser(
        "train",
        help="run XTuner training (progress bar, loss curve, real exit code)",
        description="Run XTuner training on a config with this interpreter, show a progress bar (iteration, loss, "
        "lr, ETA), write WORK_DIR/loss.png and WORK_DIR/metrics.jsonl, and exit non-zero with the log tail when "
        "training fails.",
        epilog="examples:\n"
        "  python -m finetune train cfg.py --work-dir runs/x/work_dir\n"
        "  python -m finetune train cfg.py --work-dir wd --resume              # continue from the newest iter_*.pth\n"
        "  python -m finetune train cfg.py --work-dir wd --gpus 2 --deepspeed zero2\n"
        "  NNODES=2 NODE_RANK=0 ADDR=10.0.0.1 PORT=29500 python -m finetune train cfg.py --work-dir wd --gpus 8",
        formatter_class=formatter_class,
    )
    parser.add_argument("config", help="XTuner config (.py)")
    parser.add_argument("--work-dir", dest="work_dir", required=True, help="checkpoints and logs go here")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --work-dir")
    parser.add_argument("--deepspeed", choices=["zero1", "zero2", "zero3", "none"], default="none")
    parser.add_argument("--seed", type=int, default=None)
    add_launch_arguments(parser)
    add_verbose_argument(parser)
    parser.set_defaults(func=handle)


def handle(args) -> int:
    result = train(args.config, args.work_dir, resume=args.resume, deepspeed=args.deepspeed,
                   launch=launch_from_args(args), verbose=args.verbose, seed=args.seed)
    if result.checkpoint is None:
        print("Trained: this node's ranks finished; node 0 has the checkpoint (convert it there).")
        return 0
    print(f"Trained: {result.checkpoint} (final loss {result.final_loss}); loss curve {result.loss_curve}")
    print(f"Next: python -m finetune convert {result.work_dir}")
    return 0
