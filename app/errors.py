"""Typed errors of the chat app. `main()` turns each into one line (what is wrong + the fix) and exit code 2."""

from __future__ import annotations


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


class ModelSourceError(AppError):
    """The model, adapter or base the user named cannot be found or does not load."""


class AdapterMismatch(ModelSourceError):
    """The adapter was trained on a different base model than the one given."""


class SettingsError(AppError):
    """A generation setting or launch option is out of range."""


class BackendError(AppError):
    """The external serving engine (--backend openai) cannot be reached, or refused or failed a request."""
