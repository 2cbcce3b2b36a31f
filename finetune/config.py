"""`finetune config`: write a plain XTuner 0.2.0 config (mmengine Python) from a preset and a few flags."""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .data.formats import read_text, split_lines
from .errors import InputError
from .fsutil import write_text
from .presets import DEFAULT_PRESET, PRESETS, Preset, get_preset
from .speed import (
    DeviceInfo,
    ModelShape,
    SpeedPlan,
    add_speed_arguments,
    describe,
    plan_speed,
    probe_device,
    read_model_shape,
)
from .templates import is_ours

if TYPE_CHECKING:
    import jinja2

QUANT_CHOICES = ("4bit", "8bit", "none")
DEEPSPEED_CHOICES = ("zero1", "zero2", "zero3", "none")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
IDENTITY_EVAL = {
    "zh": ["请介绍一下你自己", "你是谁？"],
    "en": ["Who are you?", "Please introduce yourself."],
    "both": ["请介绍一下你自己", "Who are you?"],
}
DEFAULT_SYSTEM = "You are a helpful assistant."
MIN_WARMUP_ITERS = 2
TEMPLATE_DIR = Path(__file__).parent / "config_templates"


@dataclass
class ConfigSpec:
    """Everything a generated config depends on; stored in the run manifest."""

    model_path: str
    data_files: list[str]
    preset: str = DEFAULT_PRESET
    prompt_template: str = ""  # empty: the preset's
    trust_remote_code: bool | None = None  # None: the preset's
    system: str = DEFAULT_SYSTEM
    pretrain: bool = False
    epochs: float = 3
    lr: float = 2e-4
    batch_size: int = 1
    grad_accum: int = 16
    max_length: int = 2048
    pack: bool = True
    group_by_length: bool = True  # without packing: batch samples of similar length (less padding)
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    quant: str = "auto"  # auto: 4bit on GPU, none on CPU
    deepspeed: str = "none"
    device: str = "auto"
    grad_checkpointing: bool | None = None  # None: on for GPU, off on CPU
    warmup_ratio: float = 0.03
    evaluation_inputs: list[str] = field(default_factory=list)
    evaluation_freq: int = 500  # 0: only before and after training
    eval_max_new_tokens: int = 200
    save_steps: int = 500
    save_total_limit: int = 2
    seed: int = 42
    world_size: int = 1  # training processes (GPUs x nodes): each one reads batch_size samples per iteration
    num_samples: int = 0  # filled from the data: used to keep warmup >= 2 iterations
    mean_tokens: float = 0.0
    # speed profile (finetune/speed.py): the same samples per optimizer step, LoRA, schedule and precision
    speed: str = "fast"  # stock: XTuner's recipe as is
    micro_batch: str = "auto"  # auto | off | N (divides batch_size * grad_accum)
    bf16: bool = True  # bf16 AMP where the GPU has it; False: fp16
    fused_kernels: str = "auto"  # auto | on | off (Liger Kernel, CUDA)
    varlen_attn: str = "off"  # auto | on | off (flash-attn, packed data)
    frozen_16bit: str = "auto"  # auto | on | off: embeddings and output head stay 16-bit (GPU)
    residual_16bit: str = "off"  # auto | on | off: every frozen weight stays 16-bit, the residual stream too (GPU)
    loader_workers: str = "auto"  # auto | N (0: load in the training process)

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def data_language(records: list[dict]) -> str:
    cjk = latin = 0
    for record in records[:2000]:
        for turn in record.get("conversation", []):
            text = str(turn.get("input", ""))
            cjk += len(re.findall(r"[\u4e00-\u9fff]", text))
            latin += len(re.findall(r"[A-Za-z]", text)) // 4
    if cjk and latin:
        share = cjk / (cjk + latin)
        return "zh" if share > 0.8 else "en" if share < 0.2 else "both"
    return "zh" if cjk else "en"


def read_data_summary(paths: list[str]) -> tuple[int, float, str]:
    """(number of records, mean characters per record, language) of JSONL files, for schedule estimates."""
    records: list[dict] = []
    chars = 0
    for path in paths:
        file = Path(path)
        if not file.is_file():
            raise InputError(f"Data file {path} does not exist.", "create it with `python -m finetune data identity` "
                             "or `python -m finetune data convert`, or fix the path.")
        for line in split_lines(read_text(file)):
            if line.strip():
                chars += len(line)
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    if not records:
        raise InputError(f"No records in {', '.join(paths)}.", "run `python -m finetune data check FILE` to see why.")
    return len(records), chars / len(records), data_language(records)


def warmup_ratio_for(spec: ConfigSpec, micro_batch: int | None = None) -> float:
    """XTuner warms up int(ratio * total_iters) iterations; fewer than 2 freezes the LR (xtuner.md §5).
    Iterations are micro-steps of each process (the scheduler steps every dataloader batch): they count
    `micro_batch` and `world_size`."""
    if spec.pack and spec.mean_tokens:
        samples = max(1.0, spec.num_samples * spec.mean_tokens / spec.max_length)
    else:
        samples = spec.num_samples
    iters_per_epoch = max(1, math.ceil(samples / ((micro_batch or spec.batch_size) * spec.world_size)))
    total = max(1, int(iters_per_epoch * spec.epochs))
    needed = (MIN_WARMUP_ITERS + 0.5) / total
    return round(min(0.5, max(spec.warmup_ratio, needed)), 4)


def _quant(spec: ConfigSpec, on_gpu: bool) -> str:
    return spec.quant if spec.quant != "auto" else ("4bit" if on_gpu else "none")


def _checkpointing(spec: ConfigSpec, on_gpu: bool) -> bool:
    return spec.grad_checkpointing if spec.grad_checkpointing is not None else on_gpu


def plan_for(spec: ConfigSpec, device_info: DeviceInfo | None = None, shape: ModelShape | None = None) -> SpeedPlan:
    """The speed plan of `spec` on this machine (or on the given device facts and model shape)."""
    device = spec.resolved_device()
    on_gpu = device == "cuda"
    return plan_speed(spec, device_info or probe_device(device), shape or read_model_shape(spec.model_path),
                      on_gpu=on_gpu, quant=_quant(spec, on_gpu), checkpointing=_checkpointing(spec, on_gpu))


def check_device_choices(spec: ConfigSpec) -> str:
    """The quantisation `spec` gets on its device; InputError for choices the device cannot run."""
    on_gpu = spec.resolved_device() == "cuda"
    quant = _quant(spec, on_gpu)
    if quant != "none" and not on_gpu:
        raise InputError(f"--quant {quant} needs an NVIDIA GPU (bitsandbytes has no CPU kernels).",
                         "use --quant none on CPU, or run on a CUDA machine.")
    if quant == "4bit" and spec.deepspeed == "zero3":
        raise InputError("QLoRA (4-bit) cannot be sharded with ZeRO-3.", "use --deepspeed zero2 or --quant none.")
    return quant


@dataclass(frozen=True)
class ConfigChoices:
    """Everything a generated config says, decided; config_templates/xtuner_config.py.jinja only lays it out."""

    # header
    version: str
    created: str
    command: str
    preset: str  # "-" without one
    device: str
    quant: str  # 4bit | 8bit | none
    run_hint: str
    config_path: str  # shell-quoted
    speed_profile: str  # "stock" leaves the speed lines out of the header
    speed_parts: tuple[str, ...]
    # imports
    model_module: str  # where SupervisedFinetune comes from
    length_grouped: bool
    our_template: bool  # a template XTuner 0.2.0 lacks (finetune/templates.py)
    # PART 1  Settings
    model_path: str
    varlen_attn: bool
    data_files: tuple[str, ...]
    prompt_template: str
    max_length: int
    pack: bool
    map_num_proc: int
    micro_batch: int
    grad_accum: int
    dataloader_workers: int
    epochs: float
    lr: float
    warmup_ratio: float
    min_warmup_iters: int
    save_steps: int
    save_total_limit: int
    evaluation_freq: int | None
    system: str
    evaluation_inputs: tuple[str, ...]
    # PART 2  Model & Tokenizer
    trust_remote_code: bool
    fused_kernels: dict | None
    frozen_16bit: bool
    residual_16bit: bool
    checkpointing: bool
    dtype: str  # bfloat16 | float16 | float32
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    # PART 3-5  Dataset, optimizer, runtime
    pretrain: bool
    on_gpu: bool
    amp_dtype: str
    eval_max_new_tokens: int
    seed: int


def render(spec: ConfigSpec, *, command: str = "", config_path: str = "CONFIG.py",
           plan: SpeedPlan | None = None) -> str:
    return _template().render(asdict(config_choices(spec, command=command, config_path=config_path, plan=plan)))


def config_choices(spec: ConfigSpec, *, command: str = "", config_path: str = "CONFIG.py",
           plan: SpeedPlan | None = None) -> ConfigChoices:
    """What the config for `spec` says; InputError for choices that cannot run (in the order users meet them)."""
    preset = get_preset(spec.preset) if spec.preset else None
    if spec.world_size < 1:
        raise InputError(f"--world-size {spec.world_size} is not a number of processes.", "use 1 or more.")
    device = spec.resolved_device()
    on_gpu = device == "cuda"
    quant = check_device_choices(spec)
    plan = plan or plan_for(spec)
    template = _prompt_template(spec, preset)
    grouped = spec.group_by_length and not spec.pack
    return ConfigChoices(
        version=__version__,
        created=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=command or "python -m finetune config ...",
        preset=spec.preset or "-",
        device=device,
        quant=quant,
        run_hint=_run_hint(spec, config_path),
        config_path=shlex.quote(config_path),
        speed_profile=plan.profile,
        speed_parts=tuple(describe(plan)),
        model_module=_model_module(plan, on_gpu),
        length_grouped=grouped,
        our_template=is_ours(template),
        model_path=spec.model_path,
        varlen_attn=plan.varlen_attn,
        data_files=tuple(spec.data_files),
        prompt_template=template,
        max_length=spec.max_length,
        pack=spec.pack,
        map_num_proc=max(1, min(32, os.cpu_count() or 1)),
        micro_batch=plan.micro_batch,
        grad_accum=plan.grad_accum,
        dataloader_workers=plan.dataloader_workers,
        epochs=spec.epochs,
        lr=spec.lr,
        warmup_ratio=warmup_ratio_for(spec, micro_batch=plan.micro_batch),
        min_warmup_iters=MIN_WARMUP_ITERS,
        save_steps=plan.scaled(spec.save_steps),
        save_total_limit=spec.save_total_limit,
        evaluation_freq=plan.scaled(spec.evaluation_freq) or None,
        system=spec.system,
        evaluation_inputs=tuple(spec.evaluation_inputs or IDENTITY_EVAL["both"]),
        trust_remote_code=_trust_remote_code(spec, preset),
        fused_kernels=plan.fused_kernels,
        frozen_16bit=plan.frozen_16bit,
        residual_16bit=plan.residual_16bit,
        checkpointing=_checkpointing(spec, on_gpu),
        dtype=plan.dtype,
        lora_r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        pretrain=spec.pretrain,
        on_gpu=on_gpu,
        amp_dtype="bfloat16" if plan.dtype == "bfloat16" else "float16",
        eval_max_new_tokens=spec.eval_max_new_tokens,
        seed=spec.seed,
    )


def _prompt_template(spec: ConfigSpec, preset: Preset | None) -> str:
    return spec.prompt_template or (preset.prompt_template if preset else "qwen_chat")


def _trust_remote_code(spec: ConfigSpec, preset: Preset | None) -> bool:
    return spec.trust_remote_code if spec.trust_remote_code is not None else bool(preset and preset.trust_remote_code)


def _model_module(plan: SpeedPlan, on_gpu: bool) -> str:
    if plan.fused_kernels or plan.frozen_16bit or plan.residual_16bit:
        return "finetune.xtuner_fast"
    return "xtuner.model" if on_gpu else "finetune.xtuner_compat"


def _run_hint(spec: ConfigSpec, config_path: str) -> str:
    hint = f"python -m finetune train {shlex.quote(config_path)} --work-dir WORK_DIR"
    if spec.deepspeed != "none":
        hint += f" --deepspeed {spec.deepspeed}"
    if spec.world_size > 1:
        hint += f"  (with --gpus/--nnodes: {spec.world_size} processes in all)"
    return hint


@functools.cache
def _template() -> jinja2.Template:
    import jinja2  # here, not at the top: every `python -m finetune` verb imports this module when it starts

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR), undefined=jinja2.StrictUndefined, autoescape=False,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    environment.filters["py"] = repr  # a Python literal
    return environment.get_template("xtuner_config.py.jinja")


def write_config(spec: ConfigSpec, out: str | Path, *, command: str = "") -> tuple[Path, SpeedPlan]:
    """Write the config and return it with the speed plan it was rendered with: the plan probes free GPU memory,
    which a second probe in the same process (after CUDA initialised) would see smaller."""
    if not spec.num_samples:
        spec.num_samples, mean_chars, language = read_data_summary(spec.data_files)
        spec.mean_tokens = mean_chars / 2.5
        if not spec.evaluation_inputs:
            spec.evaluation_inputs = IDENTITY_EVAL[language]
    check_device_choices(spec)  # before the plan, as in render: these errors come first
    plan = plan_for(spec)
    text = render(spec, command=command, config_path=str(out), plan=plan)
    compile(text, str(out), "exec")  # a generated config must at least be valid Python
    return write_text(out, text), plan


def spec_from_args(args) -> ConfigSpec:
    from .modelload import resolve_model

    preset = get_preset(args.preset) if args.preset else None
    model_path = str(resolve_model(args.model or (preset.name if preset else None)))
    defaults = ConfigSpec(model_path="", data_files=[])
    values = {
        "model_path": model_path,
        "data_files": [str(Path(p).resolve()) for p in args.data],
        "preset": preset.name if preset else "",
    }
    for name in asdict(defaults):
        if name in values:
            continue
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    if preset and args.lora_r is None:
        values["lora_r"], values["lora_alpha"] = preset.lora_r, preset.lora_alpha
    if preset and getattr(args, "quant", None) is None:
        values["quant"] = preset.quant
    return ConfigSpec(**values)


def add_config_arguments(parser, *, data_required: bool = True) -> None:
    """Flags shared by `config` and `run`."""
    parser.add_argument("--preset", default=None,
                        help=f"model preset, one of: {', '.join(PRESETS)} (default: the embedded SmolLM2 model; "
                        "`python -m finetune download --list` shows their hub ids and sizes)")
    parser.add_argument("--model", default=None, help="local model folder (overrides the preset's weights)")
    parser.add_argument("--data", action="append", required=data_required, default=None,
                        help="XTuner conversation JSONL (repeatable)")
    parser.add_argument("--prompt-template", dest="prompt_template", default=None,
                        help="XTuner template name (default: the preset's)")
    parser.add_argument("--system", default=None, help=f"system prompt used in training (default: {DEFAULT_SYSTEM!r})")
    parser.add_argument("--pretrain", action="store_true", default=None, help="incremental pre-training data")
    parser.add_argument("--epochs", type=float, default=None, help="epochs (default 3)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default 2e-4)")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=None, help="per device (default 1)")
    parser.add_argument("--grad-accum", dest="grad_accum", type=int, default=None,
                        help="gradient accumulation (default 16)")
    parser.add_argument("--max-length", dest="max_length", type=int, default=None, help="tokens (default 2048)")
    parser.add_argument("--pack", dest="pack", action="store_true", default=None, help="pack samples (default)")
    parser.add_argument("--no-pack", dest="pack", action="store_false", help="one sample per sequence")
    parser.add_argument("--no-group-by-length", dest="group_by_length", action="store_false", default=None,
                        help="without packing, batch samples in random order instead of by similar length")
    parser.add_argument("--lora-r", dest="lora_r", type=int, default=None, help="LoRA rank (default: preset's)")
    parser.add_argument("--lora-alpha", dest="lora_alpha", type=int, default=None, help="LoRA alpha")
    parser.add_argument("--quant", choices=QUANT_CHOICES, default=None,
                        help="base weights: 4bit = QLoRA (GPU default for presets of 3B and more), none = 16-bit LoRA "
                        "(GPU default for smaller presets; always on CPU)")
    parser.add_argument("--deepspeed", choices=DEEPSPEED_CHOICES, default=None, help="DeepSpeed ZeRO stage")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default=None, help="where the config will train")
    parser.add_argument("--grad-checkpointing", dest="grad_checkpointing", action="store_true", default=None,
                        help="activation checkpointing (default: on for GPU, off for CPU)")
    parser.add_argument("--no-grad-checkpointing", dest="grad_checkpointing", action="store_false")
    parser.add_argument("--eval", dest="evaluation_inputs", action="append", default=None,
                        help="prompt to answer during training (repeatable; default: identity questions)")
    parser.add_argument("--eval-every", dest="evaluation_freq", type=int, default=None,
                        help="iterations between sample answers (default 500)")
    parser.add_argument("--eval-max-new-tokens", dest="eval_max_new_tokens", type=int, default=None)
    parser.add_argument("--save-every", dest="save_steps", type=int, default=None,
                        help="iterations between checkpoints (default 500; the last one is always saved)")
    parser.add_argument("--save-total-limit", dest="save_total_limit", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 42)")
    add_speed_arguments(parser)


def register(subparsers, formatter_class) -> None:
    parser = subparsers.add_parser(
        "config",
        help="write a plain XTuner config from a preset and flags",
        description="Write an XTuner 0.2.0 config (the file `xtuner train` accepts) from a model preset and a "
        "few flags. QLoRA on GPU, fp32 LoRA on CPU; warmup is kept >= 2 iterations.",
        epilog="examples:\n"
        "  python -m finetune config --data data/identity.jsonl --out cfg.py          # embedded model, CPU\n"
        "  python -m finetune config --preset internlm2.5-7b-chat --model /models/internlm2_5-7b-chat \\\n"
        "      --data data/train.jsonl --epochs 3 --deepspeed zero2 --out internlm2_5_7b_qlora.py\n"
        "  python -m finetune config --preset qwen2.5-0.5b-instruct --quant none --lr 1e-4 \\\n"
        "      --data a.jsonl --data b.jsonl --max-length 1024 --out qwen.py\n"
        "  python -m finetune config --preset qwen2.5-7b-instruct --data d.jsonl --out q.py --speed stock  # XTuner's "
        "recipe as is\n"
        "  python -m finetune config --preset qwen3-8b --data d.jsonl --out q.py --world-size 16   # 2 nodes x 8 GPUs\n"
        "  python -m finetune config --preset qwen2.5-7b-instruct --data d.jsonl --out q.py --micro-batch 2 "
        "--fused-kernels off",
        formatter_class=formatter_class,
    )
    add_config_arguments(parser)
    parser.add_argument("--world-size", dest="world_size", type=int, default=None,
                        help="training processes the config is for, GPUs x nodes (default 1): warmup stays >= 2 "
                        "iterations of each")
    parser.add_argument("--out", required=True, help="where to write the config (.py)")
    parser.set_defaults(func=handle)


def handle(args) -> int:
    import sys

    spec = spec_from_args(args)
    path, plan = write_config(spec, args.out, command="python -m finetune " + shlex.join(sys.argv[1:]))
    print(f"Wrote {path} ({spec.num_samples} samples, template "
          f"{spec.prompt_template or get_preset(spec.preset or DEFAULT_PRESET).prompt_template}).")
    print(f"Speed profile {plan.profile}:" + "".join(f"\n  {line}" for line in describe(plan)))
    print(f"Train it: python -m finetune train {shlex.quote(str(path))} --work-dir {Path(path).stem}_work")
    return 0
