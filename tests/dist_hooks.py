"""An mmengine hook for tests/test_distributed.py: one rank dies mid-training, as a rank killed by the OOM killer or a
crashed node would (os._exit: no exception, no clean-up, its sockets simply close)."""

import os

from mmengine.dist import get_rank
from mmengine.hooks import Hook


class ExitOnRank(Hook):
    def __init__(self, rank: int = 1, after_iter: int = 1, code: int = 3):
        self.rank, self.after_iter, self.code = rank, after_iter, code

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if get_rank() == self.rank and runner.iter + 1 >= self.after_iter:
            print(f"rank {self.rank} exits with code {self.code} after iteration {runner.iter + 1}", flush=True)
            os._exit(self.code)
