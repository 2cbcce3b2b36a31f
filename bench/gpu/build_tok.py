"""Train a byte-level BPE on the synthetic corpus and save it as a Qwen2-style fast tokenizer.

Usage: python3 build_tok.py corpus.jsonl OUTDIR
On gen_data.py's 2,000-sample corpus, tokenizers 0.22.2 writes the same tokenizer.json, byte for byte, as the 0.21.x
that made shared/gpu/bench/tok (vocab 23,176); transformers 4.48 to 5.x read it. (Vendored from shared/gpu/bench.)
"""
import json
import os
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

corpus, outdir = sys.argv[1], sys.argv[2]
os.makedirs(outdir, exist_ok=True)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def it():
    with open(corpus) as f:
        for line in f:
            c = json.loads(line)["conversation"][0]
            yield c["system"]
            yield c["input"]
            yield c["output"]


tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.post_processor = processors.ByteLevel(trim_offsets=False)
trainer = trainers.BpeTrainer(vocab_size=32000, special_tokens=SPECIAL,
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                              show_progress=False)
tok.train_from_iterator(it(), trainer=trainer)
tok.save(os.path.join(outdir, "tokenizer.json"))
cfg = {
    "tokenizer_class": "Qwen2TokenizerFast",
    "model_max_length": 32768,
    "bos_token": None,
    "eos_token": "<|im_end|>",
    "pad_token": "<|endoftext|>",
    "unk_token": None,
    "clean_up_tokenization_spaces": False,
    "errors": "replace",
    "split_special_tokens": False,
    "add_prefix_space": False,
    "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
}
json.dump(cfg, open(os.path.join(outdir, "tokenizer_config.json"), "w"), indent=1)
json.dump({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
           "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]},
          open(os.path.join(outdir, "special_tokens_map.json"), "w"), indent=1)
print("vocab", tok.get_vocab_size(), "ids", [tok.token_to_id(s) for s in SPECIAL])
