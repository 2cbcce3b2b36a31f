"""The root of every user-facing error (AppError) and the chat app's own errors. `main()` turns each into one line
(what is wrong + the fix) and exit code 2; `guard_main` turns any other exception into one line and exit code 70.

finetune/errors.py and publish/errors.py derive from AppError (and share InputError): app/ must stay importable on
its own (it ships alone to a Space), so the shared base lives here and the arrows point from them to it."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from .console import say


class AppError(Exception):
    """A user-facing problem: `message` says what is wrong, `fix` says what to do about it."""

    exit_code = 2

    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.fix:
            text += f" Fix: {' '.join(self.fix.split())}"
        return text


class InputError(AppError):
    """A file, flag or value the user gave is missing or wrong (finetune's and publish's; both import it from here)."""


class ModelSourceError(AppError):
    """The model, adapter or base the user named cannot be found or does not load."""


class AdapterMismatch(ModelSourceError):
    """The adapter was trained on a different base model than the one given."""


class SettingsError(AppError):
    """A generation setting or launch option is out of range."""


class BackendError(AppError):
    """The external serving engine (--backend openai) cannot be reached, or refused or failed a request."""


EX_SOFTWARE = 70  # sysexits.h: an internal error, i.e. one we did not anticipate, not a problem with the input
SECRET_ENV = ("OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN", "OPENXLAB_GIT_TOKEN",
              "GIT_TOKEN")
MAX_DETAIL = 300


def hide_env_secrets(text: str) -> str:
    """`text` with the values of the token variables we read replaced by ***."""
    for name in SECRET_ENV:
        value = os.environ.get(name, "").strip()
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def guard_main(debug_env: str, scrub: Callable[[str], str] | None = None) -> Callable:
    """Decorate a CLI's `main`: an exception nobody anticipated becomes one line on stderr and exit EX_SOFTWARE (the
    traceback too when `debug_env` is set) instead of a traceback. KeyboardInterrupt and SystemExit pass through;
    every line goes through `scrub` (and hide_env_secrets), so no token is printed."""

    def clean(text: str) -> str:
        text = hide_env_secrets(text)
        return scrub(text) if scrub else text

    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def guarded(*args: Any, **kwargs: Any) -> int:
            try:
                return main(*args, **kwargs)
            except AppError as error:  # one that main() does not catch itself
                say(clean(f"error: {error.one_line()}"))
                return error.exit_code
            except Exception as error:
                if os.environ.get(debug_env):
                    print(clean(traceback.format_exc()), file=sys.stderr, end="")
                detail = " ".join(f"{type(error).__name__}: {error}".split()).rstrip(".")
                detail = detail[:MAX_DETAIL] + "..." if len(detail) > MAX_DETAIL else detail + "."
                say(clean(f"error: unexpected {detail} Fix: run again with {debug_env}=1 for the details (the "
                          "traceback), and report it if the cause is not on your side."))
                return EX_SOFTWARE

        return guarded

    return decorate
