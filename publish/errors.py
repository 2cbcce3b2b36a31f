"""Typed errors for `python -m publish`. The CLI prints each as one line (message + fix) and exits non-zero."""

from __future__ import annotations

from finetune.errors import FinetuneError


class PublishError(FinetuneError):
    """A user-facing error: `message` says what is wrong, `fix` says what to do (one line at the CLI, exit 2)."""


class InputError(PublishError):
    """A folder, flag or value the user gave is missing or wrong."""


class SourceError(InputError):
    """The source is not a run directory, an adapter folder or a merged model folder (or is incomplete)."""


class BaseModelUnknown(InputError):
    """The base model's hub id cannot be worked out from its local path."""


class StagingError(PublishError):
    """The staging folder could not be made safe to publish (e.g. a local path would leak)."""


class NotImplementedYet(PublishError):
    """A mode that is planned but not built yet (uploads)."""
