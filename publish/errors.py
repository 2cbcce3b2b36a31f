"""Typed errors for `python -m publish`. The CLI prints each as one line (message + fix) and exits non-zero."""

from __future__ import annotations

from app.errors import AppError, InputError

__all__ = ["PublishError", "InputError", "SourceError", "BaseModelUnknown", "StagingError", "MissingToken",
           "AuthError", "RepoNameTaken", "PaymentRequired", "HubUnreachable", "HubServerError", "HubRejected",
           "RemoteMismatch", "ManualStepsRequired"]


class PublishError(AppError):
    """A user-facing error: `message` says what is wrong, `fix` says what to do (one line at the CLI, exit 2).
    A wrong input is an InputError (shared with finetune, from app/errors.py)."""


class SourceError(InputError):
    """The source is not a run directory, an adapter folder or a merged model folder (or is incomplete)."""


class BaseModelUnknown(InputError):
    """The base model's hub id cannot be worked out from its local path."""


class StagingError(PublishError):
    """The staging folder could not be made safe to publish (e.g. a local path would leak)."""


class MissingToken(PublishError):
    """No token for the hub in the environment or its login cache."""


class AuthError(PublishError):
    """The hub rejected the token (401) or it lacks write access to the namespace (403)."""


class RepoNameTaken(PublishError):
    """The repo exists and is not writable with this token, or the name is refused (403/409)."""


class PaymentRequired(PublishError):
    """The hub wants a paid plan for this (402: Space hardware, quota)."""


class HubUnreachable(PublishError):
    """The hub cannot be reached: network down, DNS, proxy, timeout."""


class HubServerError(PublishError):
    """The hub answered 5xx or something we cannot read. Re-running resumes: only missing files are sent."""


class HubRejected(PublishError):
    """The hub refused the content (invalid README metadata, a bad parameter)."""


class RemoteMismatch(PublishError):
    """After the upload the remote file list or sizes differ from the staging folder."""


class ManualStepsRequired(PublishError):
    """The platform has no API for the rest; the message lists the console steps (OpenXLab apps)."""
