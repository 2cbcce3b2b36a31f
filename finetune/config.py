"""`finetune config`: write a plain XTuner 0.2.0 config (mmengine Python) from a preset and a few flags."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .data.formats import read_text, split_lines
from .errors import InputError
from .fsutil import write_text
from .presets import DEFAULT_PRESET, PRESETS, get_preset
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


def render(spec: ConfigSpec, *, command: str = "", config_path: str = "CONFIG.py",
           plan: SpeedPlan | None = None) -> str:
    preset = get_preset(spec.preset) if spec.preset else None
    template = spec.prompt_template or (preset.prompt_template if preset else "qwen_chat")
    trust = spec.trust_remote_code if spec.trust_remote_code is not None else bool(preset and preset.trust_remote_code)
    if spec.world_size < 1:
        raise InputError(f"--world-size {spec.world_size} is not a number of processes.", "use 1 or more.")
    device = spec.resolved_device()
    on_gpu = device == "cuda"
    quant = check_device_choices(spec)
    checkpointing = _checkpointing(spec, on_gpu)
    plan = plan or plan_for(spec)
    half = plan.dtype
    warmup = warmup_ratio_for(spec, micro_batch=plan.micro_batch)
    eval_inputs = spec.evaluation_inputs or IDENTITY_EVAL["both"]
    grouped = spec.group_by_length and not spec.pack
    model_import = "from finetune.xtuner_compat import SupervisedFinetune" if not on_gpu else \
        "from xtuner.model import SupervisedFinetune"
    if plan.fused_kernels or plan.frozen_16bit or plan.residual_16bit:
        model_import = "from finetune.xtuner_fast import SupervisedFinetune"
    model_args = f"\n    fused_kernels={plan.fused_kernels!r},  # Liger Kernel (finetune/xtuner_fast.py)" \
        if plan.fused_kernels else ""
    if plan.frozen_16bit:
        model_args += "\n    frozen_16bit=True,  # embeddings and head stay 16-bit (finetune/xtuner_fast.py)"
    if plan.residual_16bit:
        model_args += "\n    residual_16bit=True,  # every frozen weight stays 16-bit (finetune/xtuner_fast.py)"
    loader_args = "\n    pin_memory=True,\n    persistent_workers=True," if plan.dataloader_workers else ""
    if grouped:
        model_import += "\nfrom finetune.xtuner_compat import LengthGroupedSampler"
    template_imports = "from xtuner.dataset.map_fns import template_map_fn_factory\n"
    prompt_template_import = "from xtuner.utils import PROMPT_TEMPLATE\n"
    if is_ours(template):  # a template XTuner 0.2.0 lacks (finetune/templates.py)
        template_imports = ""
        prompt_template_import = ("from finetune.xtuner_compat import PROMPT_TEMPLATE, template_map_fn_factory  "
                                  "# XTuner's templates + finetune/templates.py\n")

    quant_block = ""
    if quant == "4bit":
        quant_block = f"""
        quantization_config=dict(
            type=BitsAndBytesConfig,
            load_in_4bit=True,
            load_in_8bit=False,
            llm_int8_threshold=6.0,
            llm_int8_has_fp16_weight=False,
            bnb_4bit_compute_dtype=torch.{half},
            bnb_4bit_use_double_quant=True,
            bnb_4bit_quant_type="nf4",
        ),"""
    elif quant == "8bit":
        quant_block = """
        quantization_config=dict(type=BitsAndBytesConfig, load_in_8bit=True, llm_int8_threshold=6.0),"""

    if on_gpu:
        optim_block = f"""optim_wrapper = dict(
    type=AmpOptimWrapper,
    optimizer=dict(type=optim_type, lr=lr, betas=betas, weight_decay=weight_decay),
    clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False),
    accumulative_counts=accumulative_counts,
    loss_scale="dynamic",
    dtype="{'bfloat16' if half == 'bfloat16' else 'float16'}",
)"""
    else:
        optim_block = """# CPU: plain fp32 OptimWrapper (AmpOptimWrapper refuses to run without a GPU)
optim_wrapper = dict(
    type=OptimWrapper,
    optimizer=dict(type=optim_type, lr=lr, betas=betas, weight_decay=weight_decay),
    clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False),
    accumulative_counts=accumulative_counts,
)"""

    if grouped:
        sampler = ("dict(\n"
                   "        type=LengthGroupedSampler,  # samples of similar length share a batch: less padding\n"
                   "        length_property=\"length\",\n"
                   "        per_device_batch_size=batch_size * accumulative_counts,\n    )")
    else:
        sampler = "dict(type=DefaultSampler, shuffle=True)"
    if spec.pretrain:
        template_map = "None  # incremental pre-training: loss on the whole text, no chat template"
    else:
        template_map = "dict(type=template_map_fn_factory, template=prompt_template)"

    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    run_hint = f"python -m finetune train {shlex.quote(config_path)} --work-dir WORK_DIR"
    if spec.deepspeed != "none":
        run_hint += f" --deepspeed {spec.deepspeed}"
    if spec.world_size > 1:
        run_hint += f"  (with --gpus/--nnodes: {spec.world_size} processes in all)"
    header = f"""# Generated by finetune {__version__} (xtuner 0.2.0 config format) on {now}.
# Command: {command or 'python -m finetune config ...'}
# Model: {spec.model_path}  (preset {spec.preset or '-'}, template {template}, {device}, quant {quant})
# Run it:  {run_hint}
#   (or plain XTuner: PYTHONPATH=<toolkit root> python -m xtuner.tools.train {shlex.quote(config_path)}
#    --work-dir WORK_DIR; never `xtuner train`, which exits 0 even when training crashed)
# Only PART 1 is meant for editing; the rest follows XTuner's own configs.
"""
    if plan.profile != "stock":
        header += (f"# Speed profile: {plan.profile} (the same samples per optimizer step, LoRA, schedule and "
                   "precision as --speed stock):\n")
        header += "".join(f"#   {line}\n" for line in describe(plan))
        header += ("#   (parts off: --micro-batch off, --no-bf16, --fused-kernels off, --varlen-attn off, "
                   "--loader-workers 0, --frozen-16bit off; all: --speed stock)\n")
    body = f'''import torch
from datasets import load_dataset
from mmengine.dataset import DefaultSampler
from mmengine.hooks import (
    CheckpointHook,
    DistSamplerSeedHook,
    IterTimerHook,
    LoggerHook,
    ParamSchedulerHook,
)
from mmengine.optim import AmpOptimWrapper, CosineAnnealingLR, LinearLR, OptimWrapper
from peft import LoraConfig
from torch.optim import AdamW
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

{model_import}
from xtuner.dataset import process_hf_dataset
from xtuner.dataset.collate_fns import default_collate_fn
{template_imports}from xtuner.engine.hooks import DatasetInfoHook, EvaluateChatHook, VarlenAttnArgsToMessageHubHook
from xtuner.engine.runner import TrainLoop
{prompt_template_import}
#######################################################################
#                          PART 1  Settings                           #
#######################################################################
# Model
pretrained_model_name_or_path = {spec.model_path!r}
use_varlen_attn = {plan.varlen_attn}

# Data (XTuner conversation JSONL: {{"conversation": [{{"system", "input", "output"}}, ...]}})
data_files = {list(spec.data_files)!r}
prompt_template = PROMPT_TEMPLATE.{template}
max_length = {spec.max_length}
pack_to_max_length = {spec.pack}
map_num_proc = {max(1, min(32, os.cpu_count() or 1))}  # processes for tokenizing the data

# Scheduler & Optimizer
batch_size = {plan.micro_batch}  # per device
accumulative_counts = {plan.grad_accum}
dataloader_num_workers = {plan.dataloader_workers}
max_epochs = {spec.epochs!r}
optim_type = AdamW
lr = {spec.lr!r}
betas = (0.9, 0.999)
weight_decay = 0
max_norm = 1  # grad clip
warmup_ratio = {warmup!r}  # keeps warmup >= {MIN_WARMUP_ITERS} iterations for this data size

# Save
save_steps = {plan.scaled(spec.save_steps)}
save_total_limit = {spec.save_total_limit}  # checkpoints to keep (-1: all)

# Answer evaluation_inputs before training, every evaluation_freq iterations (None: only before/after)
evaluation_freq = {plan.scaled(spec.evaluation_freq) or None}
SYSTEM = {spec.system!r}
evaluation_inputs = {list(eval_inputs)!r}

#######################################################################
#                      PART 2  Model & Tokenizer                      #
#######################################################################
tokenizer = dict(
    type=AutoTokenizer.from_pretrained,
    pretrained_model_name_or_path=pretrained_model_name_or_path,
    trust_remote_code={trust},
    padding_side="right",
)

model = dict(
    type=SupervisedFinetune,{model_args}
    use_varlen_attn=use_varlen_attn,
    use_activation_checkpointing={checkpointing},
    llm=dict(
        type=AutoModelForCausalLM.from_pretrained,
        pretrained_model_name_or_path=pretrained_model_name_or_path,
        trust_remote_code={trust},
        torch_dtype=torch.{half},{quant_block}
    ),
    lora=dict(
        type=LoraConfig,
        r={spec.lora_r},
        lora_alpha={spec.lora_alpha},
        lora_dropout={spec.lora_dropout!r},
        bias="none",
        task_type="CAUSAL_LM",
    ),
)

#######################################################################
#                      PART 3  Dataset & Dataloader                   #
#######################################################################
train_dataset = dict(
    type=process_hf_dataset,
    dataset=dict(type=load_dataset, path="json", data_files=dict(train=data_files)),
    tokenizer=tokenizer,
    max_length=max_length,
    dataset_map_fn=None,
    template_map_fn={template_map},
    remove_unused_columns=True,
    shuffle_before_pack=True,
    pack_to_max_length=pack_to_max_length,
    use_varlen_attn=use_varlen_attn,
    map_num_proc=map_num_proc,
)

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=dataloader_num_workers,{loader_args}
    dataset=train_dataset,
    sampler={sampler},
    collate_fn=dict(type=default_collate_fn, use_varlen_attn=use_varlen_attn),
)

#######################################################################
#                    PART 4  Scheduler & Optimizer                    #
#######################################################################
{optim_block}

param_scheduler = [
    dict(
        type=LinearLR,
        start_factor=1e-5,
        by_epoch=True,
        begin=0,
        end=warmup_ratio * max_epochs,
        convert_to_iter_based=True,
    ),
    dict(
        type=CosineAnnealingLR,
        eta_min=0.0,
        by_epoch=True,
        begin=warmup_ratio * max_epochs,
        end=max_epochs,
        convert_to_iter_based=True,
    ),
]

train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)

#######################################################################
#                           PART 5  Runtime                           #
#######################################################################
custom_hooks = [
    dict(type=DatasetInfoHook, tokenizer=tokenizer),
    dict(
        type=EvaluateChatHook,
        tokenizer=tokenizer,
        every_n_iters=evaluation_freq,
        evaluation_inputs=evaluation_inputs,
        system=SYSTEM,
        prompt_template=prompt_template,
        max_new_tokens={spec.eval_max_new_tokens},
    ),
]

if use_varlen_attn:
    custom_hooks += [dict(type=VarlenAttnArgsToMessageHubHook)]

default_hooks = dict(
    timer=dict(type=IterTimerHook),
    # interval 1: `finetune train` reads every iteration for its progress bar and loss curve
    logger=dict(type=LoggerHook, log_metric_by_epoch=False, interval=1),
    param_scheduler=dict(type=ParamSchedulerHook),
    checkpoint=dict(
        type=CheckpointHook,
        by_epoch=False,
        interval=save_steps,
        max_keep_ckpts=save_total_limit,
        save_last=True,
    ),
    sampler_seed=dict(type=DistSamplerSeedHook),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="{'nccl' if on_gpu else 'gloo'}"),
)
{"" if on_gpu else CPU_DDP}
visualizer = None
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed={spec.seed}, deterministic=False)
log_processor = dict(by_epoch=False)
'''
    return header + body


# mmengine hands DistributedDataParallel the rank's GPU index unless the config says otherwise
CPU_DDP = """# CPU: DistributedDataParallel over gloo without GPU device ids (under torchrun; one process ignores it)
model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False)
"""


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
