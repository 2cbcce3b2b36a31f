"""Plain transformers + PEFT + bitsandbytes QLoRA training loop (no Trainer).

Usage: python3 hf_qlora_baseline.py MODEL_DIR packed2048.npz STEPS {prep|noprep} [LOGJSON]
  prep   : peft.prepare_model_for_kbit_training (casts non-4bit params to fp32, enables
           gradient checkpointing + input grads) -- the classic QLoRA recipe, as XTuner does
  noprep : keep non-4bit params in bf16; gradient_checkpointing_enable + enable_input_require_grads
Both: NF4 + double quant, bf16 compute, sdpa, LoRA r=64 alpha=16 dropout=0.1 on all 7 linear
projections, AdamW lr 2e-4 (linear warmup 4 steps), grad clip 1.0, bf16 autocast, batch 1 x 2048.
Without CUDA (the GPU queue's dry run) the same loop runs on CPU in fp32, unquantised.
(Vendored from shared/gpu/bench; the GPU path is unchanged, the CPU path is new.)
"""
import json
import os
import sys
import time

import bitsandbytes as bnb
import numpy as np
import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

path, data, steps, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
logjson = sys.argv[5] if len(sys.argv) > 5 else None
WARM = 5
cuda = torch.cuda.is_available()
device = "cuda" if cuda else "cpu"
gpu = torch.cuda.get_device_name(0) if cuda else "cpu"
print(f"torch {torch.__version__} transformers {transformers.__version__} peft {peft.__version__} "
      f"bitsandbytes {bnb.__version__} gpu {gpu} mode {mode}", flush=True)


def sync():
    if cuda:
        torch.cuda.synchronize()


def peak_bytes():
    return torch.cuda.max_memory_allocated() if cuda else 0


d = np.load(data)
ids_all = torch.from_numpy(d["input_ids"].astype(np.int64))
lab_all = torch.from_numpy(d["labels"].astype(np.int64))
seq = ids_all.shape[1]
g = torch.Generator().manual_seed(0)
order = torch.randperm(ids_all.shape[0], generator=g)

t0 = time.time()
if cuda:
    qcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=qcfg, dtype=torch.bfloat16,
                                                 attn_implementation="sdpa", device_map={"": 0})
else:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
model.config.use_cache = False
t_load = time.time() - t0
mem_load = torch.cuda.memory_allocated() if cuda else 0
gc_kwargs = {"use_reentrant": True}  # torch/transformers-4.x default, what XTuner 0.2.0 gets
if mode == "prep":
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs=gc_kwargs)
else:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    model.enable_input_require_grads()
lcfg = LoraConfig(r=64, lora_alpha=16, lora_dropout=0.1, bias="none", task_type="CAUSAL_LM",
                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                  "gate_proj", "up_proj", "down_proj"])
model = get_peft_model(model, lcfg)
model.print_trainable_parameters()
params = [p for p in model.parameters() if p.requires_grad]
print("trainable dtype", {str(p.dtype) for p in params},
      "lm_head dtype", model.get_output_embeddings().weight.dtype, flush=True)
opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.999), weight_decay=0.0)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 4))
model.train()
print(f"load {t_load:.1f}s, allocated after load {mem_load/2**30:.2f} GiB, after peft "
      f"{(torch.cuda.memory_allocated() if cuda else 0)/2**30:.2f} GiB", flush=True)
if cuda:
    torch.cuda.reset_peak_memory_stats()
times, losses, peaks = [], [], []
for step in range(steps):
    i = int(order[step % len(order)])
    ids = ids_all[i:i + 1].to(device, non_blocking=True)
    lab = lab_all[i:i + 1].to(device, non_blocking=True)
    sync()
    t = time.perf_counter()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
        out = model(input_ids=ids, labels=lab)
    out.loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    sync()
    dt = time.perf_counter() - t
    times.append(dt)
    losses.append(out.loss.item())
    peaks.append(peak_bytes())
    print(f"step {step+1}/{steps} time {dt:.3f}s tok/s {seq/dt:.0f} loss {losses[-1]:.4f} "
          f"gnorm {gn.item():.3f} lr {sched.get_last_lr()[0]:.2e} "
          f"peak_alloc {peaks[-1]/2**30:.2f}GiB", flush=True)
ss = np.array(times[WARM:] or times)
res = dict(mode=mode, steps=steps, warm_excluded=WARM, mean_s=float(ss.mean()),
           median_s=float(np.median(ss)), std_s=float(ss.std()),
           tok_per_s_mean=seq / float(ss.mean()), tok_per_s_median=seq / float(np.median(ss)),
           peak_alloc_GiB=peak_bytes() / 2**30,
           peak_reserved_GiB=(torch.cuda.max_memory_reserved() if cuda else 0) / 2**30,
           alloc_after_load_GiB=mem_load / 2**30, load_s=t_load,
           loss_first=losses[0], loss_last=losses[-1],
           versions=dict(torch=torch.__version__, transformers=transformers.__version__,
                         peft=peft.__version__, bitsandbytes=bnb.__version__, gpu=gpu))
print("RESULT", json.dumps(res), flush=True)
if logjson:
    with open(logjson, "w") as f:
        json.dump(dict(res, times=times, losses=losses), f, indent=1)

if cuda and os.environ.get("PROFILE"):
    # GPU-busy time per step vs wall time per step (is the loop GPU-bound or host-bound?)
    from torch.profiler import ProfilerActivity, profile
    n = 3
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        torch.cuda.synchronize()
        t = time.perf_counter()
        for step in range(n):
            i = int(order[step])
            ids = ids_all[i:i + 1].cuda()
            lab = lab_all[i:i + 1].cuda()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(input_ids=ids, labels=lab)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t) / n
    ka = prof.key_averages()

    def dev(e):
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
    busy = sum(dev(e) for e in ka) / n / 1e6
    nk = sum(e.count for e in ka if dev(e) > 0) / n
    print(f"PROFILE wall/step {wall:.3f}s (profiled) GPU kernel time/step {busy:.3f}s "
          f"({100*busy/wall:.0f}% busy), ~{nk:.0f} GPU ops/step", flush=True)
    top = sorted(ka, key=dev, reverse=True)[:12]
    for e in top:
        print(f"  {dev(e)/n/1e3:9.1f} ms/step  x{e.count//n:5d}  {e.key[:90]}", flush=True)
