"""Write a 3 M-parameter model with the embedded SmolLM2's config and tokenizer (2 layers, hidden 64, random
weights), on which CPU decoding is host-bound as a compiled GPU step makes it: the app's per-token host work shows.

Usage: python bench/tiny_model.py [OUT_DIR, default /tmp/tinylm]
       python bench/app_decode.py --model /tmp/tinylm --new-tokens 256 --modes raw,dynamic,static,compiled
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from finetune.embedded import ensure_embedded_model

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "/tmp/tinylm")
    source = ensure_embedded_model()
    config = AutoConfig.from_pretrained(source)
    config.update({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "num_key_value_heads": 1, "head_dim": 64})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    print(f"{out}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
