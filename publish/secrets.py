"""Tokens: read from the environment or a hub's login cache, never from argv; wrapped so they do not print; and a
redactor that scrubs them (and anything shaped like a token) from text, log records and our own output streams."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from collections.abc import Iterator

MASK = "***"
# Shapes of tokens we might meet even when we do not know their value (a hub echoing a header, a cached cookie).
TOKEN_PATTERNS = [  # (pattern, replacement)
    (re.compile(r"hf_[A-Za-z0-9]{20,}"), MASK),
    (re.compile(r"ms-[0-9a-fA-F-]{36}"), MASK),
    (re.compile(r"(?i)(bearer\s+)[^\s'\"]+"), r"\1" + MASK),
    (re.compile(r"(m_session_id=)[^\s;'\"]+"), r"\1" + MASK),
    (re.compile(r"(?i)(\"?(?:refresh_token|access_token|token|password|sk)\"?\s*[:=]\s*\"?)[^\s\"',}]{8,}"),
     r"\1" + MASK),
    (re.compile(r"(https?://)[^/\s:@]+:[^/\s@]+@"), r"\1" + MASK + "@"),  # user:secret@ in a URL
]
_KNOWN: set[str] = set()


class Secret:
    """A token that shows as *** in str/repr/f-strings; `.reveal()` at the one call site that sends it."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str):
        self._value = value.strip()
        self.source = source  # where it came from, e.g. "HF_TOKEN" (safe to print)
        register(self._value)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)


def register(value: str | None) -> None:
    """Remember a secret value so `redact` removes it wherever it shows up."""
    if value and len(value.strip()) >= 4:
        _KNOWN.add(value.strip())


def from_env(*names: str) -> Secret | None:
    """The first non-empty environment variable among `names`, as a Secret."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return Secret(value, name)
    return None


def redact(text: object) -> str:
    text = str(text)
    for value in sorted(_KNOWN, key=len, reverse=True):
        text = text.replace(value, MASK)
    for pattern, replacement in TOKEN_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites every record's final message with `redact` (args folded in, so nothing is formatted later)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logger's problem, not a reason to leak
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class RedactingStream(io.TextIOBase):
    """A text stream that redacts each write before passing it on (progress bars and client prints included)."""

    def __init__(self, inner):
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return getattr(self.inner, "isatty", lambda: False)()

    @property
    def encoding(self):
        return getattr(self.inner, "encoding", "utf-8")


@contextlib.contextmanager
def redacted_output() -> Iterator[None]:
    """While publishing: stdout, stderr and all logging go through `redact`."""
    log_filter = RedactingFilter()
    root = logging.getLogger()
    handlers = list(root.handlers)
    for handler in handlers:
        handler.addFilter(log_filter)
    root.addFilter(log_filter)
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(old_out), RedactingStream(old_err)
    # Records from named loggers skip the root logger's filters but not its handlers': lastResort has none.
    last_resort = logging.lastResort
    if last_resort is not None:
        last_resort.addFilter(log_filter)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        root.removeFilter(log_filter)
        for handler in handlers:
            handler.removeFilter(log_filter)
        if last_resort is not None:
            last_resort.removeFilter(log_filter)
