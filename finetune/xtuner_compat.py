"""Fixes for XTuner 0.2.0 in this environment, imported by generated configs where they are needed.

- `SupervisedFinetune` (CPU configs): XTuner calls `torch.cpu.is_bf16_supported()`, which torch does not
  have, whenever no GPU is present. mmengine parses configs in lazy-import mode, so a patch in the config
  itself has no effect; importing the model class from here installs the attribute first.
- `LengthGroupedSampler` (unpacked configs): with datasets >= 4 `dataset["length"]` is a Column, not the
  list XTuner's sampler asserts on.
"""

import torch

if not hasattr(torch.cpu, "is_bf16_supported"):
    torch.cpu.is_bf16_supported = lambda *args, **kwargs: False

from xtuner.dataset.samplers import LengthGroupedSampler as _XTunerLengthGroupedSampler  # noqa: E402
from xtuner.model import SupervisedFinetune  # noqa: E402


class LengthGroupedSampler(_XTunerLengthGroupedSampler):
    def __init__(self, dataset, *args, length_property: str = "length", **kwargs):
        lengths = getattr(dataset, length_property, None)
        if lengths is not None and not isinstance(lengths, (list, tuple)):
            setattr(dataset, length_property, list(lengths))
        super().__init__(dataset, *args, length_property=length_property, **kwargs)


__all__ = ["LengthGroupedSampler", "SupervisedFinetune"]
