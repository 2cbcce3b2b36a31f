"""How every hub call of `python -m publish` uses the network: a connect timeout, a read timeout, and a bounded retry
with backoff for transient failures, through each client's own HTTP layer.

Transient (retried): an HTTP 500/502/503/504 answer, a connection reset or closed mid-request, no answer within the
read timeout. Never retried: any 4xx answer (a bad token, a missing repo, a refused file: the same request gets the
same answer), and a connection that cannot be opened (refused, no route, nothing within the connect timeout): an
unreachable hub then fails within the connect timeout with the fix, instead of after minutes of retries. Every write
publish makes is content-addressed (LFS objects by sha256, commits of the same files) and the remote is checked after
the upload, so retrying a POST that the hub may already have applied is safe.

Settings, from the environment when a client is set up:
    PUBLISH_CONNECT_TIMEOUT  seconds to open a connection (default 4): how fast an unreachable hub fails
    PUBLISH_READ_TIMEOUT     seconds to wait for an answer, or for a stalled upload to move again (default 60)
    PUBLISH_RETRIES          retries of a request that failed transiently (default 3)
    PUBLISH_RETRY_BACKOFF    seconds: waits of 0, 2x, 4x ... this between the retries of one request (default 0.5)

Where the settings go: Hugging Face (huggingface_hub on requests): `configure_http_backend` with an adapter carrying
urllib3's `Retry` and the timeouts; on httpx releases (1.x/2.x) `set_client_factory` with the timeouts, retries left
to the library's own `http_backoff`. ModelScope (modelscope-hub on requests): the same adapter on the sessions of its
OpenAPI and legacy clients, the OpenAPI client's own retry loop off (it also retried a refused connection, which made
an unreachable endpoint take 16 s); its upload-level blob and commit retries stay, and so do the file listing's
session and page retries (15 s a page, its own 10 s connect timeout). git: `http.lowSpeedLimit/Time` (a stalled
transfer), git-lfs's `lfs.dialtimeout`, `lfs.tlstimeout`, `lfs.activitytimeout`, `lfs.transfer.maxretries`; git
itself has no connect timeout and no retry, so `probe` and `retry_git` below supply them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.console import say

from .errors import InputError

TRANSIENT_STATUS = (500, 502, 503, 504)
CONNECT_FAILURES = ("proxy", "connect-timeout", "dns", "refused", "no-route")  # failure_kind()s never retried
UPLOAD_BODY = 1 << 20  # a request body larger than this (or a file/stream) is an upload: see request_timeout
MAX_RETRY_AFTER = 30.0  # seconds: the longest wait a server's Retry-After header gets
SETTINGS = {  # variable: (default, what it is, lowest, highest)
    "PUBLISH_CONNECT_TIMEOUT": (4.0, "seconds to open a connection", 0.1, 3600),
    "PUBLISH_READ_TIMEOUT": (60.0, "seconds to wait for an answer", 0.1, 3600),
    "PUBLISH_RETRIES": (3, "retries of a transient failure", 0, 20),
    "PUBLISH_RETRY_BACKOFF": (0.5, "backoff factor in seconds", 0, 60),
}


@dataclass(frozen=True)
class NetSettings:
    connect: float = 4.0
    read: float = 60.0
    retries: int = 3
    backoff: float = 0.5

    def waits(self) -> list[float]:
        """The pauses before each retry of one request: urllib3's schedule (0, 2x, 4x, ... the backoff factor)."""
        return [0.0 if n == 0 else self.backoff * 2 ** n for n in range(self.retries)]


def settings() -> NetSettings:
    """The PUBLISH_* network settings from the environment; a bad value is a one-line InputError naming it."""
    values = {}
    for name, (default, meaning, lowest, highest) in SETTINGS.items():
        raw = os.environ.get(name, "").strip()
        if not raw:
            values[name] = default
            continue
        try:
            value = int(raw) if isinstance(default, int) else float(raw)
        except ValueError:
            value = None
        if value is None or not lowest <= value <= highest:
            kind = "a whole number" if isinstance(default, int) else "a number"
            raise InputError(f"{name}={raw!r} is not a valid setting ({meaning}).",
                             f"set it to {kind} from {lowest:g} to {highest:g} (default {default:g}), or unset it.")
        values[name] = value
    return NetSettings(values["PUBLISH_CONNECT_TIMEOUT"], values["PUBLISH_READ_TIMEOUT"], values["PUBLISH_RETRIES"],
                       values["PUBLISH_RETRY_BACKOFF"])


# ------------------------------------------------------------------------------------------- requests / urllib3


class _OwnRetryLines(logging.Filter):
    """Drops urllib3's "Retrying (SayingRetry(...)) after connection broken by ..." warning: SayingRetry has already
    said it in one plain line. Retries of anyone else's Retry are left alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (str(record.msg).startswith("Retrying (") and args and type(args[0]).__name__ == "SayingRetry")


_RETRY_LINES = _OwnRetryLines()


def retry_policy(net: NetSettings):
    """urllib3's Retry for our policy: connect errors and 4xx are not retried (see the module's docstring). Each retry
    is one line on stderr."""
    from urllib3.util.retry import Retry

    class SayingRetry(Retry):
        RETRY_AFTER_STATUS_CODES = frozenset({503})  # urllib3 also retries a 413 or 429 carrying Retry-After: no 4xx

        def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
            new = super().increment(method, url, response, error, _pool, _stacktrace)  # raises when exhausted
            status = getattr(response, "status", None)
            reason = f"HTTP {status}" if status else unreachable(failure_kind(error), net, retried=False)
            host = f"{_pool.host}:{_pool.port}" if _pool is not None else ""
            wait = new.get_backoff_time()
            say(f"  {reason} from {method} {host}{(url or '').split('?')[0]}; retry {len(new.history)} of "
                f"{net.retries}{f' in {wait:g} s' if wait else ''}")
            return new

        def get_retry_after(self, response):
            """The server's Retry-After, at most MAX_RETRY_AFTER seconds: the retries stay bounded in time."""
            wait = super().get_retry_after(response)
            return None if wait is None else min(wait, MAX_RETRY_AFTER)

    logging.getLogger("urllib3.connectionpool").addFilter(_RETRY_LINES)  # the same object once, however often
    return SayingRetry(
        total=net.retries, connect=0, read=net.retries, status=net.retries, other=0, redirect=5,
        status_forcelist=TRANSIENT_STATUS, allowed_methods=None, backoff_factor=net.backoff,
        raise_on_status=False,  # the last 5xx answer goes to the client, which names it (not "max retries exceeded")
        respect_retry_after_header=True)


def _is_upload(body) -> bool:
    return body is not None and (_is_stream(body) or len(body) > UPLOAD_BODY)


def request_timeout(net: NetSettings, timeout, body) -> tuple:
    """The (connect, read) timeout for one request whose caller asked for `timeout` (None, a number or a pair).

    Our settings replace the caller's: the connect part is capped at PUBLISH_CONNECT_TIMEOUT, the read part is
    PUBLISH_READ_TIMEOUT. Except for uploads: urllib3 sends a request body under the *connect* timeout, so a few
    seconds' stall of a slow link would abort a multi-GB upload; there the caller's own timeout stands (ModelScope's
    blob upload: 30 s, then an hour for the answer), else PUBLISH_READ_TIMEOUT for both parts (the host has just
    answered a small request, so it is reachable)."""
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    if _is_upload(body):
        return (connect if connect is not None else net.read, read if read is not None else net.read)
    return (min(connect, net.connect) if connect is not None else net.connect, net.read)


def _is_stream(body) -> bool:
    return body is not None and not isinstance(body, (bytes, str))


def adapter_class(base=None):
    """An HTTPAdapter subclass (of `base`, e.g. huggingface_hub's own adapter) applying the policy to every request."""
    from requests.adapters import HTTPAdapter
    from urllib3.util import Timeout

    base = base or HTTPAdapter

    class HardenedAdapter(base):
        def __init__(self, net: NetSettings, **kwargs):
            self.net = net
            super().__init__(max_retries=retry_policy(net), **kwargs)
            # A file or stream body is not retried here: urllib3 cannot always rewind it (a retry would send an
            # empty body under the old Content-Length), and the clients retry their uploads themselves
            # (huggingface_hub's http_backoff, modelscope-hub's blob attempts). Those go through a second pool.
            self.streams = base(**kwargs)

        def send(self, request, stream=False, timeout=None, **kwargs):
            if not isinstance(timeout, Timeout):
                timeout = request_timeout(self.net, timeout, request.body)
            if _is_stream(request.body):
                return self.streams.send(request, stream=stream, timeout=timeout, **kwargs)
            return super().send(request, stream=stream, timeout=timeout, **kwargs)

        def close(self):
            self.streams.close()
            super().close()

    return HardenedAdapter


def mount(session, net: NetSettings, base=None, **adapter_kwargs):
    """Route every http(s) request of a requests.Session through the policy; returns the session."""
    adapter = adapter_class(base)(net, **adapter_kwargs)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


@contextlib.contextmanager
def huggingface_hub_policy(net: NetSettings) -> Iterator[None]:
    """While the block runs, huggingface_hub's HTTP sessions follow the policy; its previous backend comes back after.

    huggingface_hub 0.x (requests) gives no per-call timeout to most API calls and retries only LFS transfers; its
    documented hook `configure_http_backend` takes a session factory, whose sessions get our adapter (a subclass of
    the library's own, which adds the request id headers). 1.x/2.x (httpx): `set_client_factory`, timeouts only."""
    from huggingface_hub.utils import _http

    if hasattr(_http, "configure_http_backend"):
        import requests

        base = getattr(_http, "UniqueRequestIdAdapter", None)
        previous = getattr(_http, "_GLOBAL_BACKEND_FACTORY", None) or _http._default_backend_factory

        def factory():
            return mount(requests.Session(), net, base)

        _http.configure_http_backend(backend_factory=factory)
        try:
            yield
        finally:
            _http.configure_http_backend(backend_factory=previous)
        return
    import httpx  # huggingface_hub >= 1.0

    previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None) or _http.default_client_factory

    def client_factory():
        client = _http.default_client_factory()
        client.timeout = httpx.Timeout(net.read, connect=net.connect)
        return client

    _http.set_client_factory(client_factory)
    try:
        yield
    finally:
        _http.set_client_factory(previous)


# ------------------------------------------------------------------------------------------- describing failures

_KINDS = [  # (pattern in the exception text or git's message, what happened); the first match wins
    (r"unable to connect to proxy|proxyerror|proxy connect aborted|could not resolve proxy", "proxy"),
    (r"connect timeout|connecttimeout|connection to \S+ timed out|connection timed out|timed out after \d+ s "
     r"\(could not connect|failed to connect.*timed out|no connection within", "connect-timeout"),
    (r"name or service not known|nodename nor servname|temporary failure in name resolution|nameresolutionerror|"
     r"could not resolve host|getaddrinfo failed|no address associated", "dns"),
    (r"connection refused|couldn't connect to server|failed to connect to", "refused"),
    (r"network is unreachable|no route to host", "no-route"),
    (r"read timed out|read timeout|operation too slow|readtimeout|did not answer", "read-timeout"),
    (r"connection reset|connection aborted|remotedisconnected|remote end closed|broken pipe|early eof|"
     r"transfer closed|unexpected disconnect|rpc failed|incompleteread|chunkedencodingerror", "reset"),
]


def failure_kind(exc_or_text) -> str | None:
    """What went wrong on the wire, from an exception (its text and causes) or git's message: one of proxy,
    connect-timeout, dns, refused, no-route, read-timeout, reset, or None."""
    texts, seen, exc = [], set(), exc_or_text
    if isinstance(exc, str):
        texts.append(exc)
    else:
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            texts.append(f"{type(exc).__name__} {exc}")
            exc = exc.__cause__ or exc.__context__
    text = " ".join(texts).lower()
    for pattern, kind in _KINDS:
        if re.search(pattern, text):
            return kind
    return None


def retries(count: int) -> str:
    return f"{count} {'retry' if count == 1 else 'retries'}"


def unreachable(kind: str | None, net: NetSettings, *, retried: bool = True) -> str:
    """A few words for the message: 'connection refused', 'no connection within 4 s', ..."""
    if not retried and kind in ("read-timeout", "reset"):
        return {"read-timeout": f"no answer within {net.read:g} s", "reset": "connection reset"}[kind]
    return {
        "proxy": "the proxy cannot be reached",
        "connect-timeout": f"no connection within {net.connect:g} s",
        "dns": "the host name does not resolve",
        "refused": "connection refused",
        "no-route": "no route to the host",
        "read-timeout": f"no answer within {net.read:g} s, {retries(net.retries)}",
        "reset": f"the connection was reset, {retries(net.retries)}",
    }.get(kind or "", "network error")


def network_fix(kind: str | None, variable: str, endpoint: str, net: NetSettings) -> str:
    """The fix for a network failure of the hub at `endpoint`, set by the environment variable `variable`."""
    if kind in ("read-timeout", "reset"):
        return (f"run the same command again (it resumes: files already there are not sent again); on a slow "
                f"network raise PUBLISH_READ_TIMEOUT (now {net.read:g} s); {variable} sets the address (now "
                f"{endpoint}).")
    return (f"check {variable} (now {endpoint}) and the network or proxy (HTTPS_PROXY); on a slow network raise "
            f"PUBLISH_CONNECT_TIMEOUT (now {net.connect:g} s).")


# ------------------------------------------------------------------------------------------- git


def git_config(net: NetSettings) -> dict[str, str]:
    """git and git-lfs settings for the policy (passed as GIT_CONFIG_* variables, never written to a file)."""
    seconds = str(max(1, round(net.read)))
    return {
        "http.lowSpeedLimit": "1",  # less than 1 byte/s ...
        "http.lowSpeedTime": seconds,  # ... for this long: a stalled transfer or a server that never answers
        "lfs.dialtimeout": str(max(1, round(net.connect))),
        "lfs.tlstimeout": str(max(1, round(net.connect))),
        "lfs.activitytimeout": seconds,
        "lfs.transfer.maxretries": str(net.retries),
    }


def _proxy_for(url: str, env: dict[str, str]) -> str | None:
    """The proxy git's curl would use for `url`: git's http.proxy (per URL), else the *_proxy variables."""
    done = subprocess.run(["git", "config", "--get-urlmatch", "http.proxy", url], env=env, capture_output=True,
                          text=True)
    if done.stdout.strip():
        return done.stdout.strip()
    proxies = urllib.request.getproxies_environment()
    if proxies.get("no") and urllib.request.proxy_bypass_environment(urlsplit(url).hostname or "", proxies):
        return None
    return proxies.get(urlsplit(url).scheme) or proxies.get("all")


def probe(url: str, net: NetSettings, env: dict[str, str]) -> tuple[str, str] | None:
    """None if a TCP connection to the first hop for `url` (its proxy when one applies) opens within the connect
    timeout, else (failure kind, the host:port tried). Only http(s) URLs; others (file://, ssh) are not probed.

    Why our own: git has no connect timeout setting (curl waits up to 300 s for a host that does not answer), so
    before the first git command over the network we open, and close, one connection ourselves."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    proxy = _proxy_for(url, env)
    if proxy:
        hop = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = hop.hostname or "", hop.port or (443 if hop.scheme == "https" else 1080)
    else:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=net.connect):
            return None
    except TimeoutError:
        kind = "connect-timeout"
    except OSError as exc:
        kind = failure_kind(exc) or "refused"
    return kind, f"{'proxy ' if proxy else ''}{host}:{port}"


_GIT_NO_RETRY = re.compile(r"returned error: 4\d\d|http 4\d\d|authentication failed|could not read (username|"
                           r"password)|not found|does not appear to be a git repository|permission denied", re.I)


def git_transient(output: str) -> bool:
    """Whether a failed git command's message shows a transient failure worth a retry (5xx, reset, a stall), and no
    4xx answer or connect failure."""
    if _GIT_NO_RETRY.search(output) or failure_kind(output) in CONNECT_FAILURES:
        return False
    return bool(re.search(r"returned error: 5\d\d|http 5\d\d", output, re.I)) or \
        failure_kind(output) in ("read-timeout", "reset")


def retry_git(run, net: NetSettings, *, on_retry=None):
    """Call `run()` (one git command) until it succeeds or fails for good: a transient failure (see git_transient)
    is retried up to PUBLISH_RETRIES times with the backoff waits. git has no HTTP retry of its own, hence this loop;
    the commands retried (ls-remote, fetch, push) are idempotent. `run` raises an exception with `.output`."""
    for attempt, wait in enumerate([*net.waits(), None]):
        try:
            return run()
        except Exception as exc:
            output = getattr(exc, "output", None)
            if wait is None or not isinstance(output, str) or not git_transient(output):
                raise
            if on_retry is not None:
                on_retry(attempt + 1, exc)
            time.sleep(wait)
    raise AssertionError("unreachable")
