"""--frozen-16bit and --residual-16bit: XTuner's model without peft's fp32 copies of frozen weights.

--frozen-16bit keeps the embeddings and head in 16-bit and computes the same numbers; --residual-16bit keeps every
frozen weight in 16-bit, so the layers add in bf16: different rounding, the same training within bf16 noise.
Real XTuner SupervisedFinetune on the embedded model loaded in bf16, LoRA as the fast GPU configs build it, and
bf16 autocast forward and backward passes on CPU (the GPU configs train under bf16 AMP)."""

import pytest
import torch
from mmengine.config import ConfigDict
from peft import LoraConfig
from transformers import AutoModelForCausalLM

import finetune.xtuner_compat  # noqa: F401  (XTuner's model class asks torch.cpu.is_bf16_supported)
from finetune.xtuner_fast import SupervisedFinetune


def build(embedded_model, **options):
    torch.manual_seed(0)
    llm = ConfigDict(type=AutoModelForCausalLM.from_pretrained, pretrained_model_name_or_path=str(embedded_model),
               torch_dtype=torch.bfloat16)
    lora = ConfigDict(type=LoraConfig, r=8, lora_alpha=16, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    return SupervisedFinetune(llm, lora=lora, use_activation_checkpointing=True, **options)


def loss_and_grads(model, tokenizer):
    ids = tokenizer("Who are you? I am Xiaowei's assistant.", return_tensors="pt").input_ids
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.llm(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.slow
def test_frozen_16bit_keeps_bf16_storage_and_the_same_loss_and_gradients(embedded_model, tokenizer):
    stock = build(embedded_model)
    lean = build(embedded_model, frozen_16bit=True)
    stock_embed, lean_embed = stock.llm.get_input_embeddings().weight, lean.llm.get_input_embeddings().weight
    # peft's prep made an fp32 copy in the stock model; the lean one keeps the loaded bf16 (the head is tied here)
    assert stock_embed.dtype == torch.float32 and lean_embed.dtype == torch.bfloat16
    assert lean.llm.get_output_embeddings().weight.dtype == torch.bfloat16
    assert torch.equal(stock_embed, lean_embed.float())
    assert not lean_embed.requires_grad
    stock_bytes = sum(p.numel() * p.element_size() for p in stock.parameters())
    lean_bytes = sum(p.numel() * p.element_size() for p in lean.parameters())
    assert stock_bytes - lean_bytes == stock_embed.numel() * 2

    stock_loss, stock_grads = loss_and_grads(stock, tokenizer)
    lean_loss, lean_grads = loss_and_grads(lean, tokenizer)
    assert torch.isfinite(stock_loss)
    assert torch.equal(stock_loss, lean_loss)
    assert stock_grads.keys() == lean_grads.keys() and len(stock_grads) > 0
    assert all(torch.equal(stock_grads[name], lean_grads[name]) for name in stock_grads)

    # outside autocast (XTuner's sample generation before and between iterations) the logits are the same too
    ids = tokenizer("Who are you?", return_tensors="pt").input_ids
    stock.eval(), lean.eval()
    with torch.no_grad():
        stock_logits, lean_logits = stock.llm(input_ids=ids).logits, lean.llm(input_ids=ids).logits
    assert stock_logits.dtype == lean_logits.dtype == torch.float32
    assert torch.equal(stock_logits, lean_logits)


def test_frozen_16bit_leaves_an_fp32_model_alone(embedded_model):
    from finetune.xtuner_fast import keep_frozen_16bit

    model = AutoModelForCausalLM.from_pretrained(str(embedded_model), torch_dtype=torch.float32)
    assert keep_frozen_16bit(model).startswith("skipped: the model was loaded as torch.float32")
    assert model.get_input_embeddings().weight.dtype == torch.float32


def train_steps(model, tokenizer, steps=4):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    model.train()
    losses = []
    for step in range(steps):
        ids = tokenizer(f"Q: who are you? A: I am Xiaowei's assistant, number {step}.", return_tensors="pt").input_ids
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.llm(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
def test_residual_16bit_keeps_every_frozen_weight_16bit_and_trains_like_stock(embedded_model, tokenizer):
    residual = build(embedded_model, residual_16bit=True)
    frozen = [p for p in residual.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.float32 for p in residual.parameters() if p.requires_grad)  # LoRA stays fp32
    ids = tokenizer("Who are you?", return_tensors="pt").input_ids
    with torch.no_grad():  # outside autocast too (XTuner's sample generation): the model runs in bf16 end to end
        assert residual.llm(input_ids=ids).logits.dtype == torch.bfloat16

    stock_losses = train_steps(build(embedded_model), tokenizer)
    residual_losses = train_steps(residual, tokenizer)
    # measured: 0.2-1.5 % apart per step (bf16 rounding of the residual adds); both learn the sentence
    gaps = [abs(a - b) / a for a, b in zip(stock_losses, residual_losses, strict=True)]
    assert max(gaps) < 0.05, (stock_losses, residual_losses)
    assert stock_losses[-1] < 0.7 * stock_losses[0] and residual_losses[-1] < 0.7 * residual_losses[0]
