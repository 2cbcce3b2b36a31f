"""Speed profile of generated configs: which fast paths a config gets, and why the others stay off.

`plan_speed` is a pure decision over values (the spec, a DeviceInfo, a ModelShape), so every choice can be tested
without a GPU; `probe_device` and `read_model_shape` gather those values on the machine writing the config.
Every part keeps the stock training semantics: the same samples per optimizer step, LoRA, learning-rate schedule
and precision; `--speed stock` writes the plain XTuner recipe.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from .errors import InputError

SPEED_CHOICES = ("fast", "stock")
SWITCH_CHOICES = ("auto", "on", "off")
LIGER_PIN = "0.5.10"  # the last liger-kernel line for transformers 4.48 (0.6 needs >= 4.49, 0.8 needs 5.x)
LIGER_MODEL_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "granite", "olmo2",
                     "glm4")
LIGER_OPTIONS = dict(rope=True, rms_norm=True, swiglu=True, fused_linear_cross_entropy=True, cross_entropy=False)
# A 7B QLoRA step of ~8k tokens keeps an H100 busy; larger micro-batches only cost memory.
TOKENS_PER_MICRO_STEP = 8192
MEMORY_HEADROOM = 0.85  # share of the free GPU memory the micro-batch estimate may plan for
DATALOADER_WORKERS = 2
CUDA_OVERHEAD_GIB = 1.5  # CUDA context, cuBLAS workspaces, allocator fragmentation


@dataclass(frozen=True)
class DeviceInfo:
    """What the machine writing the config can see."""

    cuda: bool = False
    bf16: bool = False
    free_gib: float = 0.0
    name: str = ""
    liger: str | None = None  # installed liger-kernel version
    flash_attn: str | None = None


@dataclass(frozen=True)
class ModelShape:
    model_type: str
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    kv_dim: int
    tied: bool = False

    @property
    def matmul_params(self) -> int:
        """Parameters of the decoder's linear layers (attention q/k/v/o and the gated MLP)."""
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_dim
        return self.layers * (attention + 3 * self.hidden * self.intermediate)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)


@dataclass(frozen=True)
class Part:
    name: str
    active: bool
    detail: str


@dataclass
class SpeedPlan:
    profile: str
    micro_batch: int
    grad_accum: int
    dtype: str  # bfloat16 | float16 | float32
    fused_kernels: dict | None = None  # Liger options, applied by finetune.xtuner_fast
    varlen_attn: bool = False
    dataloader_workers: int = 0
    frozen_16bit: bool = False  # embeddings and output head keep 16-bit storage (finetune.xtuner_fast)
    residual_16bit: bool = False  # every frozen weight stays 16-bit: the residual stream too (opt-in)
    iteration_scale: float = 1.0  # stock iterations per iteration of this plan (for save/eval intervals)
    parts: list[Part] = field(default_factory=list)

    def scaled(self, iterations: int) -> int:
        """An interval in stock iterations, as iterations of this plan (the same samples between events)."""
        return max(1, round(iterations * self.iteration_scale)) if iterations else iterations

    def summary(self) -> dict:
        return asdict(self)


def probe_device(device: str) -> DeviceInfo:
    """The facts plan_speed needs, from this machine (rendering for `device`)."""
    liger, flash = _version("liger-kernel"), _version("flash-attn")
    if device != "cuda":
        return DeviceInfo(liger=liger, flash_attn=flash)
    import torch

    bf16 = bool(torch.cuda.is_bf16_supported())
    if not torch.cuda.is_available():
        return DeviceInfo(cuda=False, bf16=bf16, liger=liger, flash_attn=flash)
    try:
        free, _total = torch.cuda.mem_get_info(0)
    except RuntimeError:
        free = 0
    return DeviceInfo(cuda=True, bf16=bf16, free_gib=free / 2**30, name=torch.cuda.get_device_name(0), liger=liger,
                      flash_attn=flash)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def read_model_shape(model_path: str) -> ModelShape | None:
    """The model's dimensions from its config.json; None when the folder is not readable here."""
    try:
        config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        return ModelShape(model_type=str(config.get("model_type", "")), hidden=hidden,
                          layers=int(config["num_hidden_layers"]), intermediate=int(config["intermediate_size"]),
                          vocab=int(config["vocab_size"]), kv_dim=kv_heads * (hidden // heads),
                          tied=bool(config.get("tie_word_embeddings", False)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def estimate_memory_gib(shape: ModelShape, *, micro_batch: int, max_length: int, quant: str, lora_r: int,
                        checkpointing: bool, fused_ce: bool, frozen_16bit: bool = False,
                        residual_16bit: bool = False) -> float:
    """Peak training memory of a (Q)LoRA run, a rough model calibrated on measured 7B QLoRA runs (H100, packed
    2048, docs/benchmarks.md): XTuner stock 15.0 GiB (estimated 15.5), fast micro-batch 4 with frozen 16-bit
    14.7 (14.7) and without it 16.7 (16.8). Weights, fp32 LoRA weights + grads + AdamW moments, and per token one
    layer's live activations, the checkpointed fp32 residual stream (peft's prep makes the embeddings' output fp32)
    and the fp32 logits and their gradient that a fused linear cross-entropy never materialises."""
    weight_bytes = {"4bit": 0.54, "8bit": 1.06, "none": 2.0}[quant]
    # peft's prepare_model_for_kbit_training keeps embeddings (and norms) in fp32 unless frozen_16bit undoes it
    weights = shape.matmul_params * weight_bytes + shape.embedding_params * (2 if frozen_16bit or residual_16bit else 4)
    lora_params = lora_r * shape.layers * (8 * shape.hidden + 2 * shape.kv_dim + 3 * shape.intermediate)
    lora = lora_params * 16
    tokens = micro_batch * max_length
    layer = tokens * (15 * shape.hidden + 6 * shape.intermediate) * 2  # one layer's live activations
    checkpoints = tokens * shape.layers * shape.hidden * (2 if residual_16bit else 4)
    activations = layer + checkpoints if checkpointing else layer * shape.layers
    logits = 0 if fused_ce else tokens * shape.vocab * 10  # bf16 logits, fp32 copy, fp32 gradient
    return (weights + lora + activations + logits) / 2**30 + CUDA_OVERHEAD_GIB


def plan_speed(spec, device: DeviceInfo, shape: ModelShape | None, *, on_gpu: bool, quant: str,
               checkpointing: bool) -> SpeedPlan:
    """Decide every speed part for `spec` (a ConfigSpec); raises InputError for impossible explicit choices."""
    dtype = ("bfloat16" if device.bf16 and spec.bf16 else "float16") if on_gpu else "float32"
    if spec.speed == "stock":
        return SpeedPlan("stock", spec.batch_size, spec.grad_accum, dtype,
                         parts=[Part("profile", False, "stock: XTuner's recipe as written (--speed fast for the "
                                     "fast paths)")])
    parts = [_dtype_part(spec, device, on_gpu, dtype)]
    fused, fused_part = _fused(spec, device, shape, on_gpu)
    varlen, varlen_part = _varlen(spec, device, on_gpu)
    frozen, frozen_part = _frozen_16bit(spec, on_gpu, dtype)
    residual, residual_part = _residual_16bit(spec, on_gpu, dtype)
    micro, accum, micro_part = _micro_batch(spec, device, shape, on_gpu=on_gpu, quant=quant,
                                            checkpointing=checkpointing, fused_ce=fused is not None, varlen=varlen,
                                            frozen_16bit=frozen, residual_16bit=residual)
    workers, workers_part = _loader(spec, on_gpu)
    parts += [micro_part, fused_part, varlen_part, workers_part, frozen_part, residual_part]
    return SpeedPlan("fast", micro, accum, dtype, fused_kernels=fused, varlen_attn=varlen, dataloader_workers=workers,
                     frozen_16bit=frozen, residual_16bit=residual, iteration_scale=spec.batch_size / micro,
                     parts=parts)


def _frozen_16bit(spec, on_gpu: bool, dtype: str) -> tuple[bool, Part]:
    name = "frozen 16-bit"
    if spec.frozen_16bit == "off":
        return False, Part(name, False, "off (--frozen-16bit off): peft's fp32 copies of the embeddings and head")
    if not on_gpu or dtype == "float32":
        if spec.frozen_16bit == "on":
            raise InputError("--frozen-16bit on needs 16-bit weights (a GPU run).", "use --frozen-16bit off or auto.")
        return False, Part(name, False, "CPU: the model trains in fp32")
    bits = "bf16" if dtype == "bfloat16" else "fp16"
    return True, Part(name, True, f"the frozen embeddings and output head stay {bits} (peft's prep copies them to "
                      "fp32: ~2 GiB on a 7B model); same values, the embeddings still hand fp32 to the layers")


def _loader(spec, on_gpu: bool) -> tuple[int, Part]:
    choice = str(spec.loader_workers).strip().lower()
    if choice != "auto":
        if not choice.isdigit():
            raise InputError(f"--loader-workers {spec.loader_workers} is not a number.", "use auto, 0, 1, 2, ...")
        workers = int(choice)
        return workers, Part("dataloader", workers > 0, f"{workers} workers (--loader-workers)")
    if not on_gpu:
        return 0, Part("dataloader", False, "CPU: loader workers would take cores from the training")
    return DATALOADER_WORKERS, Part("dataloader", True, f"{DATALOADER_WORKERS} workers, pinned memory: the next "
                                    "batch is collated while the GPU computes")


def _dtype_part(spec, device: DeviceInfo, on_gpu: bool, dtype: str) -> Part:
    if not on_gpu:
        return Part("bf16", False, "CPU: fp32 (AMP needs a GPU)")
    if not spec.bf16:
        return Part("bf16", False, "off (--no-bf16): fp16 AMP with dynamic loss scaling")
    if dtype == "bfloat16":
        return Part("bf16", True, "bf16 AMP, 4-bit compute and weights in bf16")
    if not device.cuda:
        return Part("bf16", False, "no GPU visible here to check for bf16: fp16 AMP (write the config on the GPU "
                    "machine to get bf16 where it has it)")
    return Part("bf16", False, "this GPU has no bf16: fp16 AMP with dynamic loss scaling")


def _fused(spec, device: DeviceInfo, shape: ModelShape | None, on_gpu: bool) -> tuple[dict | None, Part]:
    name = "fused kernels"
    if spec.fused_kernels == "off":
        return None, Part(name, False, "off (--fused-kernels off)")
    if not on_gpu:
        if spec.fused_kernels == "on":
            raise InputError("--fused-kernels on needs a CUDA GPU (Liger's kernels are Triton GPU kernels).",
                             "use --fused-kernels off or auto on CPU.")
        return None, Part(name, False, "CPU: Liger's kernels are Triton GPU kernels")
    if shape is not None and shape.model_type not in LIGER_MODEL_TYPES:
        return None, Part(name, False, f"liger-kernel has no kernels for model type {shape.model_type!r}")
    if device.liger is None and spec.fused_kernels == "auto":
        return None, Part(name, False, f"liger-kernel not installed: pip install --no-deps liger-kernel=={LIGER_PIN}")
    installed = f"liger-kernel {device.liger}" if device.liger else "liger-kernel (not installed here)"
    return dict(LIGER_OPTIONS), Part(name, True, f"{installed}: RMSNorm, SwiGLU, RoPE, fused linear cross-entropy "
                                     "(no logits tensor); skipped with a log line where it cannot load")


def _varlen(spec, device: DeviceInfo, on_gpu: bool) -> tuple[bool, Part]:
    name = "varlen attention"
    if spec.varlen_attn == "off":
        return False, Part(name, False, "off (default: it stops attention across packed samples, which changes what "
                           "is learned, and needs micro-batch 1); --varlen-attn on")
    if not on_gpu or not spec.pack:
        problem = "needs flash-attn on a GPU" if not on_gpu else "needs packed samples (--pack)"
        if spec.varlen_attn == "on":
            raise InputError(f"--varlen-attn on {problem}.", "use --varlen-attn off.")
        return False, Part(name, False, problem)
    detail = "XTuner's use_varlen_attn: attention stays within each packed sample (flash-attn varlen; micro-batch 1)"
    if device.flash_attn is None:
        if spec.varlen_attn == "auto":
            return False, Part(name, False, "flash-attn not installed (pip install flash-attn)")
        detail += "; flash-attn is not installed here, and without it XTuner attends across the whole pack"
    return True, Part(name, True, detail)


def _residual_16bit(spec, on_gpu: bool, dtype: str) -> tuple[bool, Part]:
    name = "16-bit residual"
    if spec.residual_16bit == "off":
        return False, Part(name, False, "off (default: the layers add in fp32 as in stock); --residual-16bit on keeps "
                           "every frozen weight 16-bit, as in inference: less memory and fewer casts, different "
                           "rounding")
    if not on_gpu or dtype == "float32":
        if spec.residual_16bit == "on":
            raise InputError("--residual-16bit on needs 16-bit weights (a GPU run).",
                             "use --residual-16bit off.")
        return False, Part(name, False, "CPU: the model trains in fp32")
    if dtype != "bfloat16":  # fp16's range is too small for the residual adds of large models
        if spec.residual_16bit == "on":
            raise InputError("--residual-16bit on needs bf16 (fp16 residual adds can overflow).",
                             "write the config on a GPU with bf16, or use --residual-16bit off.")
        return False, Part(name, False, "fp16 here: the residual stream stays fp32 (bf16 GPUs only)")
    return True, Part(name, True, "every frozen weight stays bf16 and the layers add in bf16 (peft's prep makes them "
                      "fp32); LoRA weights stay fp32")


def _micro_batch(spec, device: DeviceInfo, shape: ModelShape | None, *, on_gpu: bool, quant: str,
                 checkpointing: bool, fused_ce: bool, varlen: bool, frozen_16bit: bool,
                 residual_16bit: bool) -> tuple[int, int, Part]:
    name = "micro-batch"
    effective = spec.batch_size * spec.grad_accum
    stock = f"stock {spec.batch_size} x {spec.grad_accum}"

    def chosen(micro: int, active: bool, why: str) -> tuple[int, int, Part]:
        return micro, effective // micro, Part(name, active, f"{micro} x accumulation {effective // micro} = "
                                               f"{effective} samples per step ({stock}): {why}")

    choice = str(spec.micro_batch).strip().lower()
    if choice == "off":
        return chosen(spec.batch_size, False, "off (--micro-batch off)")
    if choice != "auto":
        if not choice.isdigit() or int(choice) < 1 or effective % int(choice):
            raise InputError(f"--micro-batch {spec.micro_batch} must divide the samples per optimizer step "
                             f"({spec.batch_size} x {spec.grad_accum} = {effective}).",
                             "use a divisor of it, auto, or off.")
        if varlen and int(choice) > 1:
            raise InputError("varlen attention needs micro-batch 1 (XTuner's collate packs one sequence).",
                             "use --micro-batch 1 or --varlen-attn off.")
        return chosen(int(choice), int(choice) != spec.batch_size, "set by --micro-batch")
    if varlen:
        return chosen(1, spec.batch_size != 1, "varlen attention takes one packed sequence per micro-step")
    if not on_gpu:
        return chosen(spec.batch_size, False, "CPU: kept (the step is compute-bound)")
    if not device.cuda:
        return chosen(spec.batch_size, False, "no GPU visible here to size it: pass --micro-batch N")
    if shape is None:
        return chosen(spec.batch_size, False, "the model's config.json is not readable here: pass --micro-batch N")
    limit = max(spec.batch_size, TOKENS_PER_MICRO_STEP // spec.max_length)
    budget = device.free_gib * MEMORY_HEADROOM
    candidates = [m for m in range(min(limit, effective), 0, -1) if effective % m == 0]
    for micro in candidates:
        need = estimate_memory_gib(shape, micro_batch=micro, max_length=spec.max_length, quant=quant,
                                   lora_r=spec.lora_r, checkpointing=checkpointing, fused_ce=fused_ce,
                                   frozen_16bit=frozen_16bit, residual_16bit=residual_16bit)
        if need <= budget:
            return chosen(micro, micro != spec.batch_size,
                          f"~{need:.1f} GiB estimated of {device.free_gib:.1f} GiB free")
    return chosen(candidates[-1], candidates[-1] != spec.batch_size,
                  f"even this is estimated above {MEMORY_HEADROOM:.0%} of the {device.free_gib:.1f} GiB free")


def describe(plan: SpeedPlan) -> list[str]:
    """One line per part: on/off, name, detail."""
    return [f"{'on ' if part.active else 'off'}  {part.name:<16} {part.detail}" for part in plan.parts]


def add_speed_arguments(parser) -> None:
    parser.add_argument("--speed", choices=SPEED_CHOICES, default=None,
                        help="fast (default): the fast paths below where they apply; stock: XTuner's recipe as is")
    parser.add_argument("--micro-batch", dest="micro_batch", default=None,
                        help="auto (default: by free GPU memory), off (= --batch-size), or N; samples per optimizer "
                        "step stay --batch-size x --grad-accum")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", default=None,
                        help="fp16 AMP even where the GPU has bf16")
    parser.add_argument("--fused-kernels", dest="fused_kernels", choices=SWITCH_CHOICES, default=None,
                        help=f"Liger Kernel (liger-kernel=={LIGER_PIN}) RMSNorm/SwiGLU/RoPE/fused linear "
                        "cross-entropy on CUDA (default auto: when installed)")
    parser.add_argument("--loader-workers", dest="loader_workers", default=None,
                        help="dataloader worker processes, pinned memory (default auto: 2 on GPU, 0 on CPU)")
    parser.add_argument("--frozen-16bit", dest="frozen_16bit", choices=SWITCH_CHOICES, default=None,
                        help="keep the frozen embeddings and output head in 16-bit instead of peft's fp32 copies "
                        "(default auto: on GPU)")
    parser.add_argument("--residual-16bit", dest="residual_16bit", choices=SWITCH_CHOICES, default=None,
                        help="keep every frozen weight in 16-bit, so the layers add in bf16/fp16 as in inference "
                        "(default off: changes rounding; auto: on for bf16 GPU configs)")
    parser.add_argument("--varlen-attn", dest="varlen_attn", choices=SWITCH_CHOICES, default=None,
                        help="attention within each packed sample (flash-attn; default off)")
