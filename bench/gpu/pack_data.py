"""Pack the synthetic corpus exactly as the XTuner config does (process_hf_dataset,
qwen_chat template, max_length 2048, pack_to_max_length) and dump input_ids/labels to
an .npz for the plain HF baseline. Run in the XTuner environment.
Usage: python pack_data.py corpus.jsonl TOKENIZER_DIR OUT.npz [MAX_LENGTH]
(Vendored from shared/gpu/bench; MAX_LENGTH is new, for the GPU queue's dry run.)
"""
import os
import sys

import numpy as np
from datasets import load_dataset
from transformers import AutoTokenizer
from xtuner.dataset import process_hf_dataset
from xtuner.dataset.map_fns import template_map_fn_factory
from xtuner.utils import PROMPT_TEMPLATE

corpus, tokdir, out = sys.argv[1:4]
max_length = int(sys.argv[4]) if len(sys.argv) > 4 else 2048
tok = AutoTokenizer.from_pretrained(tokdir, trust_remote_code=True, padding_side="right")
ds = process_hf_dataset(
    dataset=load_dataset("json", data_files=dict(train=corpus)),
    tokenizer=tok,
    max_length=max_length,
    dataset_map_fn=None,
    template_map_fn=template_map_fn_factory(template=PROMPT_TEMPLATE.qwen_chat),
    remove_unused_columns=True,
    shuffle_before_pack=True,
    pack_to_max_length=True,
    use_varlen_attn=False,
    map_num_proc=min(8, os.cpu_count() or 1),
)
ids = np.array(ds["input_ids"], dtype=np.int16)
labels = np.array(ds["labels"], dtype=np.int16)
assert ids.shape[1] == max_length and ids.max() < 32767
np.savez_compressed(out, input_ids=ids, labels=labels)
print("packed", ids.shape, "supervised frac", float((labels != -100).mean()))
