"""Network endpoints that misbehave, for the timeout tests: a closed port, a listener that accepts and never answers,
and a host that never completes a connection (a black hole, like an address that is not routed)."""

from __future__ import annotations

import socket
import threading
import time


def closed_port_url() -> str:
    """http://127.0.0.1:PORT where nothing listens: a connection is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class SilentServer:
    """Accepts every connection, reads what comes and never answers; `connections` counts the accepted ones."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()

    def __enter__(self) -> SilentServer:
        self.sock.settimeout(0.05)
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            self._held.append(conn)  # kept open, never written to

    def __exit__(self, *exc) -> None:
        self._stop.set()
        time.sleep(0.1)
        for conn in self._held:
            conn.close()
        self.sock.close()


class BlackHole:
    """A port whose connections never complete: a listener with a full accept queue, which Linux answers by
    dropping every further SYN, as a firewall or an unrouted address does. The client waits for its connect timeout."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._fillers: list[socket.socket] = []

    def __enter__(self) -> BlackHole:
        for _ in range(8):  # fill the queue (backlog 0 holds one or two) until a connect no longer completes
            filler = socket.socket()
            filler.settimeout(0.3)
            try:
                filler.connect(("127.0.0.1", self.port))
            except (TimeoutError, OSError):
                filler.close()
                return self
            self._fillers.append(filler)
        raise RuntimeError("could not fill the accept queue: this system accepts beyond the backlog")

    def __exit__(self, *exc) -> None:
        for filler in self._fillers:
            filler.close()
        self.sock.close()
