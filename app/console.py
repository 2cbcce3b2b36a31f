"""The one way our three programs print progress and notices: a line on stderr, flushed at once, so stdout keeps
only results (a staged file list, a dry-run's card) and a line shows up before a long step starts. finetune/ and
publish/ use it too (app/ imports nothing of theirs, so it lives here)."""

from __future__ import annotations

import sys


def say(text: str) -> None:
    """Print `text` as one line on stderr, now."""
    print(text, file=sys.stderr, flush=True)
