"""Chat with a `.gguf` file: llama.cpp's own server (`python -m llama_cpp.server`, llama-cpp-python[server]) runs it
in a child process, and the page talks to it through the OpenAI-compatible backend, so streaming, Stop and history
trimming work as with any served model. llama.cpp renders the chat template stored in the GGUF (the training
template, for files written by `finetune export`).

The child dies with the app (atexit, and PR_SET_PDEATHSIG on Linux when the app is killed outright).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from .errors import BackendError, SettingsError
from .process import die_with_parent

DEFAULT_CONTEXT = 4096
START_TIMEOUT = 180.0
INSTALL_FIX = ("install llama.cpp's server: `make export-tools` in the toolkit, or `pip install "
               "'llama-cpp-python[server]'` (prebuilt CPU wheels: --extra-index-url "
               "https://abetlen.github.io/llama-cpp-python/whl/cpu).")


def is_gguf(name: str | None) -> bool:
    return bool(name) and str(name).lower().endswith(".gguf")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LlamaServer:
    url: str  # the API base, ending in /v1
    alias: str
    process: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.unlink(missing_ok=True)


def start(path: str | Path, *, context: int | None = None, threads: int | None = None, notice=print) -> LlamaServer:
    """Start llama.cpp's server on `path` and wait until it answers; clear errors for a missing file or server."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SettingsError(f"{path} does not exist.", "pass the .gguf file `python -m finetune export` wrote.")
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise SettingsError(f"{path} is not a GGUF file.", "export it again with `python -m finetune export`.")
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
        raise SettingsError("Chatting with a .gguf file needs llama.cpp's server, which is not installed.",
                            INSTALL_FIX)
    port, alias = _free_port(), path.stem
    fd, log_name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
    os.close(fd)
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", alias,
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(context or DEFAULT_CONTEXT),
               "--n_threads", str(threads or os.cpu_count() or 1)]
    notice(f"Starting llama.cpp's server on {path.name} ...")
    with open(log_name, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent())
    server = LlamaServer(f"http://127.0.0.1:{port}/v1", alias, process, Path(log_name))
    atexit.register(server.stop)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            tail = server.log_tail()
            server.stop()
            raise BackendError(f"llama.cpp's server could not load {path.name} (exit {process.returncode}): "
                               f"{tail.splitlines()[-1] if tail else 'no output'}",
                               "check that the file is complete (export it again).")
        try:
            if httpx.get(f"{server.url}/models", timeout=5).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise BackendError(f"llama.cpp's server did not answer within {START_TIMEOUT:.0f} s.",
                               "try again; on a slow disk, copy the .gguf to a local disk first.")
        time.sleep(0.2)
