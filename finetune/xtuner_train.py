"""`python -m finetune.xtuner_train CONFIG ...`: XTuner's train tool (xtuner.tools.train, same arguments), able to
start on a machine without CUDA and reporting a failing rank's error to torchrun.

- mmengine's pytorch launcher calls torch.cuda.set_device(LOCAL_RANK) before it creates the process group, whatever
  the backend; without CUDA that raises "Found no NVIDIA driver", so gloo ranks could not start on CPU.
- XTuner resolves a DeepSpeed config's "auto" dtypes with torch.cpu.is_bf16_supported(), which torch lacks.
- @record writes the exception of a failing rank to torchrun's error file: torchrun's summary then shows it.
- mmengine's iteration loop sleeps 2 s each time the dataloader restarts ("possible deadlock" of re-spawned worker
  processes). Our configs use no workers (CPU) or persistent ones (GPU), so nothing is re-spawned, and identity data is
  small: an epoch can be one iteration, and the sleeps were most of a short run's wall time. The sleep is skipped only
  for such dataloaders; any other config keeps it.
"""

import runpy
import types

import torch
from torch.distributed.elastic.multiprocessing.errors import record


def skip_needless_epoch_sleeps() -> None:
    from mmengine.runner import loops

    next_batch = loops._InfiniteDataloaderIterator.__next__
    no_sleep = types.SimpleNamespace(sleep=lambda seconds: None)

    def __next__(self):
        loader = self._dataloader
        if getattr(loader, "num_workers", 1) and not getattr(loader, "persistent_workers", False):
            return next_batch(self)
        real_time, loops.time = loops.time, no_sleep
        try:
            return next_batch(self)
        finally:
            loops.time = real_time

    loops._InfiniteDataloaderIterator.__next__ = __next__


@record
def main() -> None:
    skip_needless_epoch_sleeps()
    if not hasattr(torch.cpu, "is_bf16_supported"):
        torch.cpu.is_bf16_supported = lambda *args, **kwargs: False
    if not torch.cuda.is_available():
        torch.cuda.set_device = lambda device: None
    runpy.run_module("xtuner.tools.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
