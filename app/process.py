"""Child processes that do not outlive us: a tool we start (XTuner, llama.cpp's converter or server) gets SIGTERM
when the process that started it dies, even by SIGKILL, so a killed command leaves no orphan still training or
writing into a temporary file that the next run removes."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess.Popen (Linux; None elsewhere). SIGTERM, not SIGKILL, so a launcher such as
    torchrun can still stop its own children. Popen must be called from the thread that lives as long as the child:
    the kernel sends the signal when that thread ends."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def arm() -> None:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(1)

    return arm
