"""A real OpenAI-compatible server for tests and benchmarks: llama.cpp's (`python -m llama_cpp.server`, from
llama-cpp-python[server] in requirements-export.txt) on the embedded SmolLM2-135M-Instruct GGUF, on CPU."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from finetune.embedded import find_gguf

MODEL = "smollm2"
BASE = "smollm2-base"  # the same GGUF under a second name, for compare mode


@dataclass
class LlamaServer:
    url: str  # the API base, ending in /v1
    log: Path  # the server's stdout + stderr
    process: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def llama_server(workdir: Path, *, api_key: str | None = None, two_models: bool = True, n_ctx: int = 2048,
                 threads: int = 2, timeout: float = 180) -> Iterator[LlamaServer]:
    """Start the server (one request at a time, no interrupting), wait until GET /v1/models answers, stop it."""
    gguf = str(find_gguf())
    port = free_port()
    model = {"model": gguf, "n_ctx": n_ctx, "n_threads": threads, "n_threads_batch": threads, "verbose": True}
    models = [{**model, "model_alias": MODEL}] + ([{**model, "model_alias": BASE}] if two_models else [])
    config = {"host": "127.0.0.1", "port": port, "interrupt_requests": False, "models": models}
    if api_key:
        config["api_key"] = api_key
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "llama_server.json").write_text(json.dumps(config))
    log = workdir / "llama_server.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--config_file",
                                    str(workdir / "llama_server.json")], stdout=out, stderr=subprocess.STDOUT)
    server = LlamaServer(f"http://127.0.0.1:{port}/v1", log, process)
    try:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {process.returncode}:\n{server.log_text()[-3000:]}")
            try:
                if httpx.get(f"{server.url}/models", headers=headers, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not answer in {timeout} s:\n{server.log_text()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
