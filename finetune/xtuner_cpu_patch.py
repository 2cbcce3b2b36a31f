"""Imported by generated CPU configs instead of `xtuner.model`.

XTuner 0.2.0 calls `torch.cpu.is_bf16_supported()`, which torch does not have, whenever no GPU is
present. mmengine parses configs in lazy-import mode, so a patch in the config itself has no effect;
this module installs the attribute and re-exports the model class the config builds.
"""

import torch

if not hasattr(torch.cpu, "is_bf16_supported"):
    torch.cpu.is_bf16_supported = lambda *args, **kwargs: False

from xtuner.model import SupervisedFinetune  # noqa: E402

__all__ = ["SupervisedFinetune"]
