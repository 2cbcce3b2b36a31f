"""Create a randomly initialised Qwen2.5-7B-architecture model (bf16) and save it with the
synthetic tokenizer. Usage: python3 make_model.py OUTDIR TOKDIR [SHAPE]
SHAPE: qwen2.5-7b (default), qwen3-8b (Qwen3-8B's architecture), tiny or tiny-qwen3.
Builds directly on the GPU (fast); 'tiny' builds a 2-layer CPU model (hidden 64, the tokenizer's
vocabulary) for the GPU queue's dry run. Writes a hand-made config.json readable by transformers
4.48 and 5.x alike. (Vendored from shared/gpu/bench; the tiny and Qwen3 shapes are new.)
"""
import json
import os
import shutil
import sys
import time

import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForCausalLM

out, tokdir = sys.argv[1], sys.argv[2]
shape = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else "qwen2.5-7b"
if shape not in ("qwen2.5-7b", "qwen3-8b", "tiny", "tiny-qwen3"):
    sys.exit(f"unknown shape {shape!r}: use qwen2.5-7b, qwen3-8b, tiny or tiny-qwen3")
tiny = shape.startswith("tiny")
cfg_dict = {
    "architectures": ["Qwen2ForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "model_type": "qwen2",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "rope_scaling": None,
    "sliding_window": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 152064,
}
if "qwen3" in shape:  # Qwen3-8B's config.json (Qwen/Qwen3-8B): head_dim 128 with q/k norms, no attention bias
    cfg_dict.update(architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_size=4096, intermediate_size=12288,
                    num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                    max_position_embeddings=40960, max_window_layers=36, vocab_size=151936, attention_bias=False)
if tiny:
    tokenizer = Tokenizer.from_file(os.path.join(tokdir, "tokenizer.json"))
    vocab = -(-tokenizer.get_vocab_size() // 64) * 64
    cfg_dict.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, max_window_layers=2, vocab_size=vocab,
                    bos_token_id=tokenizer.token_to_id("<|endoftext|>"),
                    eos_token_id=tokenizer.token_to_id("<|im_end|>"))
    if "qwen3" in shape:
        cfg_dict.update(head_dim=32, max_window_layers=2)
cfg = AutoConfig.for_model(**cfg_dict)
dev = "cpu" if tiny else "cuda"
t = time.time()
torch.manual_seed(0)
with torch.device(dev):
    torch.set_default_dtype(torch.bfloat16)
    model = AutoModelForCausalLM.from_config(cfg)
    torch.set_default_dtype(torch.float32)
    # make sure every weight holds random (not zero / not uninitialised) values
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.fill_(1.0)  # RMSNorm weights
            else:
                p.normal_(0.0, 0.02)
    model = model.to(torch.bfloat16)
if dev == "cuda":
    torch.cuda.synchronize()
n = sum(p.numel() for p in model.parameters())
print(f"built {n/1e9:.3f}B params dtype={next(model.parameters()).dtype} in {time.time()-t:.1f}s",
      flush=True)
t = time.time()
model.save_pretrained(out, max_shard_size="5GB")
with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(cfg_dict, f, indent=2)
gen = os.path.join(out, "generation_config.json")
if os.path.exists(gen):
    os.remove(gen)
for f in os.listdir(tokdir):
    shutil.copy(os.path.join(tokdir, f), out)
print(f"saved to {out} in {time.time()-t:.1f}s:", sorted(os.listdir(out)), flush=True)
