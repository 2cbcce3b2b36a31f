"""Liger Kernel's fused ops, the four the fast profile applies (RMSNorm, SwiGLU, RoPE, fused linear cross-entropy),
against plain torch, forward and backward, on this machine's torch and triton at the Qwen2.5-7B shape (one packed
2,048-token sequence, bf16). liger-kernel is pinned in the lock once this passes on the lock's torch: the JSON says
whether this torch is the lock's.

Usage: python3 bench/gpu/liger_check.py OUT.json
Without CUDA it writes {"ran": false, ...} and exits 0: Liger's kernels are Triton GPU kernels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from versions import installed, lock_pins

TOKENS, HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 2048, 3584, 18944, 28, 4, 128, 152064
TOLERANCE = 2e-2  # largest error relative to the reference's largest magnitude; bf16 keeps 8 mantissa bits


def rms_norm(x, weight, eps=1e-6):  # transformers' Qwen2RMSNorm
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return weight * (x.float() * torch.rsqrt(variance + eps)).to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope(q, k, cos, sin):  # transformers' apply_rotary_pos_emb, unsqueeze_dim=1
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def compare(reference, fused, inputs: list[torch.Tensor]) -> dict[str, float]:
    """Both functions on copies of `inputs`, then backward through the same random weighting of their outputs: the
    relative error of each output and of each input's gradient."""
    runs = []
    weights = None
    for function in (reference, fused):
        leaves = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs]
        outputs = function(*leaves)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        if weights is None:
            generator = torch.Generator(device=outputs[0].device).manual_seed(1)
            weights = [torch.randn(o.shape, device=o.device, generator=generator) for o in outputs]
        sum((o.float() * w).sum() for o, w in zip(outputs, weights, strict=True)).backward()
        runs.append(([o.detach() for o in outputs], [x.grad for x in leaves if x.requires_grad]))
    (ref_out, ref_grad), (our_out, our_grad) = runs
    errors = {}
    for kind, ours, theirs in (("out", our_out, ref_out), ("grad", our_grad, ref_grad)):
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            errors[f"{kind}{i}"] = float((a.float() - b.float()).abs().max() / b.float().abs().max())
    return errors


def check() -> dict:
    from liger_kernel.transformers.functional import (
        liger_fused_linear_cross_entropy,
        liger_rms_norm,
        liger_rope,
        liger_swiglu,
    )

    torch.manual_seed(0)
    bf16 = {"device": "cuda", "dtype": torch.bfloat16}
    x = torch.randn(1, TOKENS, HIDDEN, **bf16, requires_grad=True)
    norm_weight = (1 + 0.1 * torch.randn(HIDDEN, **bf16)).requires_grad_()
    gate = torch.randn(1, TOKENS, INTERMEDIATE, **bf16, requires_grad=True)
    up = torch.randn(1, TOKENS, INTERMEDIATE, **bf16, requires_grad=True)
    q = torch.randn(1, HEADS, TOKENS, HEAD_DIM, **bf16, requires_grad=True)
    k = torch.randn(1, KV_HEADS, TOKENS, HEAD_DIM, **bf16, requires_grad=True)
    inv_freq = 1.0 / (1e6 ** (torch.arange(0, HEAD_DIM, 2, device="cuda").float() / HEAD_DIM))
    angles = torch.arange(TOKENS, device="cuda").float()[:, None] * inv_freq
    angles = torch.cat((angles, angles), dim=-1)[None]
    cos, sin = angles.cos().to(torch.bfloat16), angles.sin().to(torch.bfloat16)
    hidden = torch.randn(TOKENS, HIDDEN, **bf16, requires_grad=True)
    head = 0.02 * torch.randn(VOCAB, HIDDEN, **bf16)  # frozen, as in LoRA training
    labels = torch.randint(0, VOCAB, (TOKENS,), device="cuda")
    labels[: TOKENS // 4] = -100  # the prompt part of a packed sample is not trained on

    cases = {
        "rms_norm": (rms_norm, lambda a, w: liger_rms_norm(a, w, 1e-6), [x, norm_weight]),
        "swiglu": (lambda a, b: F.silu(a) * b, liger_swiglu, [gate, up]),
        "rope": (lambda a, b: rope(a, b, cos, sin), lambda a, b: liger_rope(a, b, cos, sin), [q, k]),
        "fused_linear_cross_entropy": (lambda h: F.cross_entropy((h @ head.T).float(), labels),
                                       lambda h: liger_fused_linear_cross_entropy(h, head, labels), [hidden]),
    }
    ops = {}
    for name, (reference, fused, inputs) in cases.items():
        errors = compare(reference, fused, inputs)
        ops[name] = {"max_rel_err": errors, "ok": max(errors.values()) <= TOLERANCE}
        print(f"{name:28} {'ok' if ops[name]['ok'] else 'FAILED'}  worst relative error {max(errors.values()):.2e}")
    return ops


def main() -> int:
    lock_torch = lock_pins().get("torch")
    result = {"torch": torch.__version__, "triton": installed("triton"), "liger_kernel": installed("liger-kernel"),
              "lock_torch": lock_torch, "on_lock_torch": torch.__version__.split("+")[0] == lock_torch,
              "tolerance": TOLERANCE}
    if torch.cuda.is_available():
        ops = check()
        result.update(ran=True, device=torch.cuda.get_device_name(0), ops=ops, ok=all(o["ok"] for o in ops.values()))
    else:
        result.update(ran=False, reason="no CUDA: Liger's kernels are Triton GPU kernels", ok=True)
    Path(sys.argv[1]).write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"torch {result['torch']} (lock {lock_torch}), triton {result['triton']}, "
          f"liger-kernel {result['liger_kernel']}: {'ran' if result['ran'] else result['reason']}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
