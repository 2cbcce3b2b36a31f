"""Typed errors. The CLI boundary turns each into one line (message + fix) and a non-zero exit."""

from __future__ import annotations

from app.errors import AppError, InputError

__all__ = ["FinetuneError", "InputError", "DataError", "UnknownPreset", "ModelNotFound", "EnvironmentProblem",
           "StageFailed"]


class FinetuneError(AppError):
    """A user-facing error of the fine-tuning chain: `message` says what is wrong, `fix` says what to do about it
    (`one_line()` for both). A wrong input is an InputError (shared with publish, from app/errors.py)."""


class DataError(InputError):
    """A dataset has bad records; `problems` lists (line number, reason)."""

    def __init__(self, message: str, fix: str = "", problems: list[tuple[int, str]] | None = None):
        super().__init__(message, fix)
        self.problems = problems or []


class UnknownPreset(InputError):
    pass


class ModelNotFound(InputError):
    pass


class EnvironmentProblem(FinetuneError):
    """Something missing from the machine (a package, CUDA, disk space)."""

    exit_code = 3


class StageFailed(FinetuneError):
    """An XTuner step failed; `log_tail` holds the last lines of its output."""

    exit_code = 4

    def __init__(self, message: str, fix: str = "", log_tail: str = "", log_path: str = ""):
        super().__init__(message, fix)
        self.log_tail = log_tail
        self.log_path = log_path
