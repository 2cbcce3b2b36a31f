"""`python -m finetune.xtuner_train CONFIG ...`: XTuner's train tool (xtuner.tools.train, same arguments), able to
start on a machine without CUDA and reporting a failing rank's error to torchrun.

- mmengine's pytorch launcher calls torch.cuda.set_device(LOCAL_RANK) before it creates the process group, whatever
  the backend; without CUDA that raises "Found no NVIDIA driver", so gloo ranks could not start on CPU.
- XTuner resolves a DeepSpeed config's "auto" dtypes with torch.cpu.is_bf16_supported(), which torch lacks.
- @record writes the exception of a failing rank to torchrun's error file: torchrun's summary then shows it.
"""

import runpy

import torch
from torch.distributed.elastic.multiprocessing.errors import record


@record
def main() -> None:
    if not hasattr(torch.cpu, "is_bf16_supported"):
        torch.cpu.is_bf16_supported = lambda *args, **kwargs: False
    if not torch.cuda.is_available():
        torch.cuda.set_device = lambda device: None
    runpy.run_module("xtuner.tools.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
