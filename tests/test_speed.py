"""Speed plans: pure decisions from device facts and the model shape, each part switchable off."""

import pytest

from finetune.config import ConfigSpec
from finetune.errors import InputError
from finetune.speed import DeviceInfo, ModelShape, estimate_memory_gib, plan_speed, read_model_shape

QWEN7B = ModelShape("qwen2", hidden=3584, layers=28, intermediate=18944, vocab=152064, kv_dim=512)
INTERNLM2 = ModelShape("internlm2", hidden=4096, layers=32, intermediate=14336, vocab=92544, kv_dim=1024)
H100 = DeviceInfo(cuda=True, bf16=True, free_gib=78.0, name="NVIDIA H100 80GB HBM3", liger="0.5.10")
SMALL_GPU = DeviceInfo(cuda=True, bf16=True, free_gib=14.5, name="16 GB card", liger="0.5.10")


def gpu_plan(device=H100, shape=QWEN7B, **spec_values):
    spec = ConfigSpec(model_path="/m", data_files=[], **spec_values)
    return plan_speed(spec, device, shape, on_gpu=True, quant="4bit", checkpointing=True)


def parts(plan):
    return {part.name: part for part in plan.parts}


def test_memory_estimate_matches_the_measured_7b_qlora_runs():
    # docs/benchmarks.md, H100, Qwen2.5-7B shape, packed 2048: measured peaks of XTuner stock (micro-batch 1, no fused
    # cross-entropy) and of the fast config (micro-batch 4, Liger) with and without frozen 16-bit
    common = dict(max_length=2048, quant="4bit", lora_r=64, checkpointing=True)
    measured = {(1, False, False): 15.02, (4, True, True): 14.73, (4, True, False): 16.71}
    for (micro, fused, frozen), peak in measured.items():
        estimate = estimate_memory_gib(QWEN7B, micro_batch=micro, fused_ce=fused, frozen_16bit=frozen, **common)
        assert abs(estimate - peak) / peak < 0.05, (micro, fused, frozen, estimate)
    stock = estimate_memory_gib(QWEN7B, micro_batch=1, fused_ce=False, **common)
    fused = estimate_memory_gib(QWEN7B, micro_batch=1, fused_ce=True, **common)
    assert stock - fused > 2.5  # the 152k-vocab logits and their gradient


def test_auto_fills_the_gpu_up_to_the_token_target_and_keeps_the_effective_batch():
    plan = gpu_plan()
    assert (plan.micro_batch, plan.grad_accum) == (4, 4)  # 8192 tokens per micro-step at 2048
    assert plan.micro_batch * plan.grad_accum == 16
    assert plan.dtype == "bfloat16" and plan.fused_kernels and plan.dataloader_workers == 2
    assert not plan.varlen_attn
    assert plan.iteration_scale == 0.25 and plan.scaled(500) == 125
    assert gpu_plan(max_length=512).micro_batch == 16  # short sequences: up to the whole step
    # a 16 GB card with 14.5 GiB free: two sequences with 16-bit frozen weights (~11.9 GiB estimated), else one
    assert gpu_plan(device=SMALL_GPU).micro_batch == 2
    assert gpu_plan(device=SMALL_GPU, frozen_16bit="off").micro_batch == 1
    assert gpu_plan(batch_size=2, grad_accum=3).micro_batch == 3  # a divisor of 6 that fits


def test_auto_is_deterministic_for_the_same_facts():
    assert gpu_plan().summary() == gpu_plan().summary()
    assert gpu_plan(device=SMALL_GPU).summary() == gpu_plan(device=SMALL_GPU).summary()


def test_auto_keeps_stock_split_without_facts_to_size_it():
    remote = DeviceInfo(cuda=False, bf16=False)  # writing a GPU config on a CPU machine
    plan = gpu_plan(device=remote)
    assert (plan.micro_batch, plan.grad_accum) == (1, 16)
    assert "pass --micro-batch N" in parts(plan)["micro-batch"].detail
    assert plan.dtype == "float16"
    assert gpu_plan(shape=None).micro_batch == 1


def test_each_switch_turns_its_part_off():
    assert (gpu_plan(micro_batch="off").micro_batch, gpu_plan(micro_batch="off").grad_accum) == (1, 16)
    assert gpu_plan(bf16=False).dtype == "float16"
    assert gpu_plan(fused_kernels="off").fused_kernels is None
    assert gpu_plan(varlen_attn="off").varlen_attn is False
    flash = DeviceInfo(cuda=True, bf16=True, free_gib=78.0, flash_attn="2.8.3")
    assert gpu_plan(device=flash, varlen_attn="auto").varlen_attn is True
    stock = gpu_plan(speed="stock")
    assert (stock.micro_batch, stock.grad_accum, stock.fused_kernels, stock.dataloader_workers) == (1, 16, None, 0)
    assert stock.dtype == "bfloat16"  # what the config generator already wrote for bf16 GPUs


def test_16bit_weight_parts_default_and_switches():
    plan = gpu_plan()
    assert plan.frozen_16bit and not plan.residual_16bit  # lossless on by default, the rounding change opt-in
    assert "--residual-16bit on" in parts(plan)["16-bit residual"].detail
    assert not gpu_plan(frozen_16bit="off").frozen_16bit
    assert gpu_plan(residual_16bit="on").residual_16bit and gpu_plan(residual_16bit="auto").residual_16bit
    assert "layers add in bf16" in parts(gpu_plan(residual_16bit="on"))["16-bit residual"].detail
    assert not gpu_plan(residual_16bit="auto", bf16=False).residual_16bit  # fp16 AMP: the residual stays fp32
    with pytest.raises(InputError, match="needs bf16"):
        gpu_plan(residual_16bit="on", bf16=False)
    for option in ("frozen_16bit", "residual_16bit"):
        spec = ConfigSpec(model_path="/m", data_files=[], **{option: "on"})
        with pytest.raises(InputError, match="needs 16-bit weights"):
            plan_speed(spec, DeviceInfo(), None, on_gpu=False, quant="none", checkpointing=False)
        cpu = plan_speed(ConfigSpec(model_path="/m", data_files=[], **{option: "auto"}), DeviceInfo(), None,
                         on_gpu=False, quant="none", checkpointing=False)
        assert not cpu.frozen_16bit and not cpu.residual_16bit
    # 16-bit checkpoints: the estimate at micro-batch 4 drops by the fp32 half of the residual stream
    common = dict(micro_batch=4, max_length=2048, quant="4bit", lora_r=64, checkpointing=True, fused_ce=True)
    lean = estimate_memory_gib(QWEN7B, frozen_16bit=True, **common)
    residual = estimate_memory_gib(QWEN7B, residual_16bit=True, **common)
    assert lean - residual == pytest.approx(4 * 2048 * 28 * 3584 * 2 / 2**30)


def test_fused_kernels_only_where_liger_has_them():
    assert gpu_plan(device=DeviceInfo(cuda=True, bf16=True, free_gib=78.0)).fused_kernels is None  # not installed
    off = parts(gpu_plan(device=DeviceInfo(cuda=True, bf16=True, free_gib=78.0)))["fused kernels"]
    assert "pip install --no-deps liger-kernel==" in off.detail
    assert gpu_plan(shape=INTERNLM2).fused_kernels is None
    assert gpu_plan(device=DeviceInfo(cuda=False), fused_kernels="on").fused_kernels  # requested for another box


def test_explicit_micro_batch_and_impossible_choices():
    assert (gpu_plan(micro_batch="8").micro_batch, gpu_plan(micro_batch="8").grad_accum) == (8, 2)
    with pytest.raises(InputError, match="must divide"):
        gpu_plan(micro_batch="3")
    flash = DeviceInfo(cuda=True, bf16=True, free_gib=78.0, flash_attn="2.8.3")
    assert gpu_plan(device=flash, varlen_attn="on").micro_batch == 1
    with pytest.raises(InputError, match="micro-batch 1"):
        gpu_plan(device=flash, varlen_attn="on", micro_batch="2")
    with pytest.raises(InputError, match="packed"):
        gpu_plan(varlen_attn="on", pack=False)
    spec = ConfigSpec(model_path="/m", data_files=[], fused_kernels="on")
    with pytest.raises(InputError, match="CUDA"):
        plan_speed(spec, DeviceInfo(), None, on_gpu=False, quant="none", checkpointing=False)


def test_cpu_fast_plan_changes_nothing_but_allows_an_explicit_split():
    spec = ConfigSpec(model_path="/m", data_files=[], batch_size=8, grad_accum=1)
    plan = plan_speed(spec, DeviceInfo(), None, on_gpu=False, quant="none", checkpointing=False)
    assert (plan.micro_batch, plan.grad_accum, plan.dtype, plan.dataloader_workers) == (8, 1, "float32", 0)
    assert not any(part.active for part in plan.parts)
    spec = ConfigSpec(model_path="/m", data_files=[], batch_size=1, grad_accum=4, micro_batch="2")
    plan = plan_speed(spec, DeviceInfo(), None, on_gpu=False, quant="none", checkpointing=False)
    assert (plan.micro_batch, plan.grad_accum) == (2, 2)


def test_read_model_shape(embedded_model, tmp_path):
    shape = read_model_shape(str(embedded_model))
    assert shape.model_type == "llama" and shape.layers == 30 and shape.hidden == 576 and shape.tied
    assert read_model_shape(str(tmp_path)) is None
