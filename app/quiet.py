"""Hide the libraries' start-up noise that a user cannot act on, for the CLIs of app/, finetune/ and publish/.

Only the messages listed here are hidden, each by its own logger or warning category and text; every other
warning still shows. `--verbose` (where a CLI has it) or the CLI's VERBOSE variable (APP_VERBOSE, FINETUNE_VERBOSE,
PUBLISH_VERBOSE) shows them again. Call `quiet()` before the noisy libraries are imported: bitsandbytes logs its
line while it is being imported."""

from __future__ import annotations

import logging
import os
import warnings

# logger -> the start of each message hidden from it
NOISY_LOGS = {
    # bitsandbytes (imported by peft) on a CPU: an optional kernel package is not installed; nothing uses it here
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",),
    # DeepSpeed (imported by transformers when saving, and by XTuner) on a machine without a GPU says so, on stdout
    "DeepSpeed": ("Setting accelerator to CPU", "Setting ds_accelerator to"),
    # transformers on a keyword some libraries (and older code) still pass
    "transformers.modeling_utils": ("`torch_dtype` is deprecated",),
    "transformers.configuration_utils": ("`torch_dtype` is deprecated",),
}
# (category, regular expression matched at the start of the message)
NOISY_WARNINGS = [
    (FutureWarning, r"`torch\.jit\.script` is (deprecated|not supported)"),  # DeepSpeed's import calls it
    (Warning, r".*HTTP_422_UNPROCESSABLE_ENTITY"),  # inside gradio (starlette's renamed constant)
]


class DropMessages(logging.Filter):
    """Drop the records of one logger whose message starts with one of `starts`."""

    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


FILTERS = {name: DropMessages(starts) for name, starts in NOISY_LOGS.items()}


def is_verbose(verbose: bool = False, env: str = "APP_VERBOSE") -> bool:
    return verbose or os.environ.get(env, "").strip().lower() not in ("", "0", "false", "no")


def quiet(verbose: bool = False, env: str = "APP_VERBOSE") -> bool:
    """Hide the messages above for the rest of this process, unless `verbose` or the variable `env` is set.

    Returns whether they are hidden. Calling it again adds nothing twice."""
    if is_verbose(verbose, env):
        return False
    for name, log_filter in FILTERS.items():
        logging.getLogger(name).addFilter(log_filter)  # a no-op when already there
    for category, message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    return True
