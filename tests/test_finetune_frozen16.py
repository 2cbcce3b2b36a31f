"""--frozen-16bit: XTuner's model keeps the frozen embeddings and head in 16-bit and still computes the same numbers.

Real XTuner SupervisedFinetune on the embedded model loaded in bf16, LoRA as the fast GPU configs build it, and a
bf16 autocast forward and backward on CPU (the GPU configs train under bf16 AMP)."""

import pytest
import torch
from mmengine.config import ConfigDict
from peft import LoraConfig
from transformers import AutoModelForCausalLM

import finetune.xtuner_compat  # noqa: F401  (XTuner's model class asks torch.cpu.is_bf16_supported)
from finetune.xtuner_fast import SupervisedFinetune


def build(embedded_model, frozen_16bit):
    torch.manual_seed(0)
    llm = ConfigDict(type=AutoModelForCausalLM.from_pretrained, pretrained_model_name_or_path=str(embedded_model),
               torch_dtype=torch.bfloat16)
    lora = ConfigDict(type=LoraConfig, r=8, lora_alpha=16, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    return SupervisedFinetune(llm, lora=lora, use_activation_checkpointing=True, frozen_16bit=frozen_16bit)


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
    stock = build(embedded_model, frozen_16bit=False)
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
