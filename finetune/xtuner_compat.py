"""Fixes for XTuner 0.2.0 in this environment, imported by generated configs where they are needed.

- `SupervisedFinetune` (CPU configs): XTuner calls `torch.cpu.is_bf16_supported()`, which torch does not
  have, whenever no GPU is present. mmengine parses configs in lazy-import mode, so a patch in the config
  itself has no effect; importing the model class from here installs the attribute first.
- `LengthGroupedSampler` (unpacked configs): with datasets >= 4 `dataset["length"]` is a Column, not the
  list XTuner's sampler asserts on.
- `PROMPT_TEMPLATE` and `template_map_fn_factory` (configs of the templates in finetune/templates.py): XTuner's
  templates plus ours, and XTuner's template map with our SYSTEM_IN_USER / PREFIX keys.
- `get_bos_eos_token_ids`: XTuner prepends `tokenizer.bos_token_id` for every non-Qwen tokenizer and crashes on
  tokenizers without a BOS (GLM-4-0414: `input_ids += None`); no BOS means none is added.
"""

import torch

if not hasattr(torch.cpu, "is_bf16_supported"):
    torch.cpu.is_bf16_supported = lambda *args, **kwargs: False

from functools import partial  # noqa: E402

import xtuner.dataset.utils as _xtuner_dataset_utils  # noqa: E402
from mmengine.config import ConfigDict  # noqa: E402
from xtuner.dataset.samplers import LengthGroupedSampler as _XTunerLengthGroupedSampler  # noqa: E402
from xtuner.model import SupervisedFinetune  # noqa: E402
from xtuner.utils.templates import PROMPT_TEMPLATE as _XTUNER_TEMPLATES  # noqa: E402

from finetune.templates import NEW_TEMPLATES, apply_template  # noqa: E402

PROMPT_TEMPLATE = ConfigDict({**_XTUNER_TEMPLATES, **NEW_TEMPLATES})
_xtuner_bos_eos = _xtuner_dataset_utils.get_bos_eos_token_ids


def _bos_eos_token_ids(tokenizer):
    bos, eos = _xtuner_bos_eos(tokenizer) if tokenizer.bos_token_id is not None else ([], None)
    if eos is None:
        eos = [tokenizer.eos_token_id]
    return bos, eos


_xtuner_dataset_utils.get_bos_eos_token_ids = _bos_eos_token_ids


def template_map_fn(example, template):
    return {"conversation": apply_template(example.get("conversation", []), template)}


def template_map_fn_factory(template):
    return partial(template_map_fn, template=template)


class LengthGroupedSampler(_XTunerLengthGroupedSampler):
    def __init__(self, dataset, *args, length_property: str = "length", **kwargs):
        lengths = getattr(dataset, length_property, None)
        if lengths is not None and not isinstance(lengths, (list, tuple)):
            setattr(dataset, length_property, list(lengths))
        super().__init__(dataset, *args, length_property=length_property, **kwargs)


__all__ = ["PROMPT_TEMPLATE", "LengthGroupedSampler", "SupervisedFinetune", "template_map_fn_factory"]
