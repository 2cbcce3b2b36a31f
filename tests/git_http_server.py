"""A git + Git LFS server on 127.0.0.1 for tests: `git http-backend` (CGI) behind HTTP Basic auth, and the LFS batch
API (https://github.com/git-lfs/git-lfs/blob/main/docs/api/batch.md) with sha256-checked uploads.

    with GitHttpServer(root, user="me", token="...") as server:
        server.create_repo("me/model")
        url = server.repo_url("me/model")      # http://127.0.0.1:PORT/me/model.git

Bare repos live under `root`; LFS objects under `<repo>.git/lfs-store/<oid>`. `server.auth_seen` lists every
(user, password) a client sent; `server.log` every request as "METHOD path status".
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LFS_JSON = "application/vnd.git-lfs+json"
BATCH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$")
OBJECT = re.compile(r"^/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/(?P<oid>[0-9a-f]{64})$")
GIT = re.compile(r"^/(?P<repo>[^/]+/[^/]+)\.git(?P<rest>/.*)$")


class GitHttpServer:
    def __init__(self, root: Path, *, user: str, token: str):
        self.root = Path(root)
        self.user, self.token = user, token
        self.auth_seen: list[tuple[str, str]] = []
        self.log: list[str] = []
        self._object_keys: set[str] = set()  # per-object Authorization values handed out in batch answers
        self._failures: list[list] = []  # [method, compiled path pattern, status, times left]
        # Called with (method, path) once a request's body has arrived, before it is handled; returning True drops
        # it unanswered (the fault-injection tests kill the client here).
        self.on_request = None
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def repo_url(self, repo: str) -> str:
        return f"{self.url}/{repo}.git"

    def repo_path(self, repo: str) -> Path:
        return self.root / f"{repo}.git"

    def create_repo(self, repo: str) -> Path:
        path = self.repo_path(repo)
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
        return path

    def fail(self, method: str, pattern: str, status: int = 503, *, times: int = 1) -> None:
        """Answer the next `times` requests whose path matches `pattern` (re.search) with `status`."""
        self._failures.append([method, re.compile(pattern), status, times])

    def count(self, method: str, pattern: str) -> int:
        """How many requests `METHOD path` matched `pattern` (re.search), whatever their answer."""
        return sum(1 for line in self.log if line.startswith(f"{method} ") and re.search(pattern, line.split()[1]))

    def _forced(self, method: str, path: str) -> int | None:
        for failure in self._failures:
            if failure[0] == method and failure[1].search(path) and failure[3] > 0:
                failure[3] -= 1
                return failure[2]
        return None

    def lfs_object(self, repo: str, oid: str) -> Path:
        return self.repo_path(repo) / "lfs-store" / oid

    def __enter__(self) -> GitHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler_for(server: GitHttpServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean; `server.log` has every request
            pass

        def do_GET(self) -> None:
            self._handle()

        do_POST = do_PUT = do_GET

        def _handle(self) -> None:
            path, _, query = self.path.partition("?")
            body = self._read_body()
            if server.on_request is not None and server.on_request(self.command, path):
                self.close_connection = True
                return
            forced = server._forced(self.command, path)
            if forced:
                return self._reply(forced, b"forced failure (test)")
            match = OBJECT.match(path)
            if match:  # object transfers carry the key the batch answer gave, not the user's credentials
                if self.headers.get("Authorization") not in server._object_keys:
                    return self._reply(401, b"bad object key")
                return self._object(match["repo"], match["oid"], body)
            if not self._authorized():
                return self._reply(401, b"authentication required", {"WWW-Authenticate": 'Basic realm="test"'})
            match = BATCH.match(path) or GIT.match(path)
            if not match or not server.repo_path(match["repo"]).is_dir():
                return self._reply(404, f"no repository at {path}".encode())
            if BATCH.match(path):
                return self._batch(match["repo"], json.loads(body))
            self._git(match["repo"], match["rest"], query, body)

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorized(self) -> bool:
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return False
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            server.auth_seen.append((user, password))
            return (user, password) == (server.user, server.token)

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            server.log.append(f"{self.command} {self.path} {status}")
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _batch(self, repo: str, request: dict) -> None:
            answers = []
            for item in request.get("objects", []):
                oid, size = item["oid"], item["size"]
                stored = server.lfs_object(repo, oid)
                answer = {"oid": oid, "size": size, "authenticated": True}
                wanted = request.get("operation")
                if wanted == "upload" and not stored.is_file() or wanted == "download" and stored.is_file():
                    key = f"RemoteAuth {secrets.token_hex(8)}"
                    server._object_keys.add(key)
                    href = f"{server.repo_url(repo)}/info/lfs/objects/{oid}"
                    answer["actions"] = {wanted: {"href": href, "header": {"Authorization": key}}}
                elif wanted == "download":
                    answer["error"] = {"code": 404, "message": "object not found"}
                answers.append(answer)
            body = json.dumps({"transfer": "basic", "objects": answers}).encode()
            self._reply(200, body, {"Content-Type": LFS_JSON})

        def _object(self, repo: str, oid: str, body: bytes) -> None:
            stored = server.lfs_object(repo, oid)
            if self.command == "GET":
                return self._reply(200, stored.read_bytes()) if stored.is_file() else self._reply(404, b"")
            if hashlib.sha256(body).hexdigest() != oid:
                return self._reply(422, b"sha256 mismatch")
            stored.parent.mkdir(exist_ok=True)
            stored.write_bytes(body)
            self._reply(200, b"")

        def _git(self, repo: str, rest: str, query: str, body: bytes) -> None:
            env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(server.root), "GIT_HTTP_EXPORT_ALL": "1",
                   "PATH_INFO": f"/{repo}.git{rest}", "QUERY_STRING": query, "REQUEST_METHOD": self.command,
                   "REMOTE_USER": server.user, "REMOTE_ADDR": "127.0.0.1", "CONTENT_LENGTH": str(len(body)),
                   "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                   "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                   "GIT_HTTP_MAX_REQUEST_BUFFER": "1G", "HOME": str(server.root)}
            out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
            head, _, payload = out.partition(b"\r\n\r\n")
            status, headers = 200, {}
            for line in head.decode("latin-1").split("\r\n"):
                key, _, value = line.partition(":")
                if key.lower() == "status":
                    status = int(value.split()[0])
                elif key:
                    headers[key] = value.strip()
            self._reply(status, payload, headers)

    return Handler
