"""A fake ModelScope hub for tests: the endpoints modelscope-hub 0.5.1 calls to publish a model or a Studio.

It keeps real state (repos, blobs by sha256, commits on `master`, Studio secrets/variables, deploys), answers
errors with the hub's status codes and bodies, logs every request, and names any route it does not implement.

    with FakeModelScope({"ms-token": "alice"}) as hub:   # token -> username
        hub.url                                          # http://127.0.0.1:PORT, for MODELSCOPE_ENDPOINT
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

NAME = r"(?P<owner>[^/]+)/(?P<name>[^/?]+)"
KIND = r"(?P<kind>models|studios)"
EXISTS_CODE = 10010101001  # the China site's "model already exists" business code
EXISTS_MESSAGE = "该名称已被注册使用，请重新命名"


@dataclass
class Repo:
    kind: str  # models | studios
    owner: str
    name: str
    private: bool = False
    settings: dict = field(default_factory=dict)  # what the create call sent
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)  # {"id", "message", "paths"}
    secrets: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    deploys: int = 0


@dataclass
class Failure:
    method: str
    pattern: str  # a regex searched in the path
    status: int
    times: int | None  # None: until cleared


class HubError(Exception):
    def __init__(self, status: int, body: dict):
        self.status, self.body = status, body


def _legacy_error(status: int, message: str, code: int | None = None) -> HubError:
    return HubError(status, {"Code": code or status, "Message": message, "Success": False, "RequestId": "fake"})


def _openapi_error(status: int, code: str, message: str) -> HubError:
    return HubError(status, {"success": False, "code": code, "message": message, "request_id": "fake"})


class FakeModelScope:
    def __init__(self, tokens: dict[str, str], *, soft_create_errors: bool = False):
        self.tokens = tokens
        # The real hub has answered a refused model creation with HTTP 200 and "Success": false.
        self.soft_create_errors = soft_create_errors
        self.repos: dict[tuple[str, str], Repo] = {}  # (kind, "owner/name")
        self.blobs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.unknown: list[str] = []
        self.failures: list[Failure] = []
        # Called with (method, path) once a request's body has arrived, before it is handled; returning True drops
        # it unanswered (the fault-injection tests kill the client here).
        self.on_request = None
        self.lock = threading.Lock()
        self.routes = [
            ("GET", r"/openapi/v1/users/me", self.me),
            ("GET", rf"/openapi/v1/{KIND}/{NAME}", self.get_repo_openapi),
            ("POST", r"/openapi/v1/studios", self.create_studio),
            ("POST", rf"/openapi/v1/studios/{NAME}/(?P<what>secrets|variables)", self.add_setting),
            ("PUT", rf"/openapi/v1/studios/{NAME}/(?P<what>secrets|variables)", self.update_setting),
            ("POST", rf"/openapi/v1/studios/{NAME}/deploy", self.deploy),
            ("GET", rf"/api/v1/models/{NAME}", self.get_repo_legacy),
            ("POST", r"/api/v1/models", self.create_model),
            ("GET", rf"/api/v1/{KIND}/{NAME}/repo/files", self.list_files),
            ("POST", rf"/api/v1/repos/{KIND}/{NAME}/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", rf"/lfs/{KIND}/{NAME}/(?P<oid>[0-9a-f]{{64}})", self.lfs_put),
            ("POST", rf"/api/v1/repos/{KIND}/{NAME}/commit/(?P<rev>[^/]+)", self.commit),
        ]

    # ------------------------------------------------------------------ test helpers

    def __enter__(self) -> FakeModelScope:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self):
                fake.serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_one

            def log_message(self, *args):  # the request log is `fake.requests`
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_repo(self, kind: str, repo_id: str, *, private: bool = False, files: dict[str, bytes] | None = None):
        """A repo that already exists (e.g. someone else's)."""
        owner, name = repo_id.split("/")
        repo = self.repos[(kind, repo_id)] = Repo(kind, owner, name, private)
        repo.files.update(files or {})
        return repo

    def repo(self, repo_id: str, kind: str = "models") -> Repo:
        return self.repos[(kind, repo_id)]

    def fail(self, method: str, pattern: str, *, status: int = 500, times: int | None = 1) -> None:
        """Answer the next `times` matching requests (all of them with None) with `status`."""
        self.failures.append(Failure(method, pattern, status, times))

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, path in self.requests if m == method and re.search(pattern, path))

    # ------------------------------------------------------------------ plumbing

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        method, url = handler.command, urlsplit(handler.path)
        body = self._read_body(handler)
        if self.on_request is not None and self.on_request(method, url.path):
            handler.close_connection = True
            return
        with self.lock:
            self.requests.append((method, url.path))
            forced = self._forced(method, url.path)
        try:
            if forced:
                raise _legacy_error(forced, "fake forced failure")
            for route_method, pattern, func in self.routes:
                match = re.fullmatch(pattern, url.path)
                if route_method == method and match:
                    with self.lock:
                        status, payload = 200, func(handler, body, parse_qs(url.query), **match.groupdict())
                    break
            else:
                self.unknown.append(f"{method} {url.path}")
                raise _legacy_error(404, f"fake ModelScope has no route {method} {url.path}")
        except HubError as error:
            status, payload = error.status, error.body
        data = json.dumps(payload, ensure_ascii=False).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(handler.rfile.readline().strip() or b"0", 16):
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()
            handler.rfile.readline()
            return b"".join(chunks)
        return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))

    def _forced(self, method: str, path: str) -> int | None:
        for failure in self.failures:
            if failure.method == method and re.search(failure.pattern, path) and failure.times != 0:
                if failure.times is not None:
                    failure.times -= 1
                return failure.status
        return None

    def user(self, handler: BaseHTTPRequestHandler) -> str | None:
        auth = handler.headers.get("Authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else None
        if token is None:
            found = re.search(r"m_session_id=([^;\s]+)", handler.headers.get("Cookie", ""))
            token = found.group(1) if found else None
        return self.tokens.get(token) if token else None

    def signed_in(self, handler) -> str:
        user = self.user(handler)
        if user is None:
            raise _openapi_error(401, "InvalidAuthentication", "Invalid or missing access token")
        return user

    def visible(self, handler, kind: str, owner: str, name: str) -> Repo | None:
        repo = self.repos.get((kind, f"{owner}/{name}"))
        if repo is None or (repo.private and self.user(handler) != repo.owner):
            return None
        return repo

    def writable(self, handler, kind: str, owner: str, name: str) -> Repo:
        user = self.signed_in(handler)
        repo = self.visible(handler, kind, owner, name)
        if repo is None:
            raise _legacy_error(404, f"repo {owner}/{name} not found")
        if repo.owner != user:
            raise _legacy_error(403, f"{user} has no write permission on {owner}/{name}")
        return repo

    @staticmethod
    def ok_legacy(data) -> dict:
        return {"Code": 200, "Data": data, "Message": "success", "Success": True, "RequestId": "fake"}

    @staticmethod
    def ok_openapi(data) -> dict:
        return {"success": True, "data": data, "request_id": "fake"}

    # ------------------------------------------------------------------ routes

    def me(self, handler, body, query):
        user = self.signed_in(handler)
        return self.ok_openapi({"username": user, "email": f"{user}@example.com"})

    def get_repo_openapi(self, handler, body, query, kind, owner, name):
        repo = self.visible(handler, kind, owner, name)
        if repo is None:
            raise _openapi_error(404, "ResourceNotFound", f"{owner}/{name} not found")
        return self.ok_openapi({"id": f"{owner}/{name}", "owner": owner, "name": name, "private": repo.private})

    def get_repo_legacy(self, handler, body, query, owner, name):
        repo = self.visible(handler, "models", owner, name)
        if repo is None:
            raise _legacy_error(404, "模型不存在", 10010101002)
        return self.ok_legacy({"Path": owner, "Name": name, "Visibility": 1 if repo.private else 5})

    def create_model(self, handler, body, query):
        request = json.loads(body)
        owner, name = request["Path"], request["Name"]
        user = self.user(handler)
        if user is None:
            raise _legacy_error(401, "用户未登录", 10010103001)
        try:
            if owner != user:
                raise _legacy_error(403, f"{user} cannot create models in namespace {owner}")
            if ("models", f"{owner}/{name}") in self.repos:
                raise _legacy_error(400, EXISTS_MESSAGE, EXISTS_CODE)
        except HubError as error:
            if self.soft_create_errors:
                return error.body
            raise
        self.repos[("models", f"{owner}/{name}")] = Repo("models", owner, name, request.get("Visibility") == 1,
                                                         settings=request)
        return self.ok_legacy({"Path": owner, "Name": name})

    def create_studio(self, handler, body, query):
        request = json.loads(body)
        owner, name, user = request["owner"], request["repo_name"], self.signed_in(handler)
        if owner != user:
            raise _openapi_error(403, "OperationNotAllowed", f"{user} cannot create studios in namespace {owner}")
        if ("studios", f"{owner}/{name}") in self.repos:
            raise _openapi_error(409, "DuplicateEntity", f"studio {owner}/{name} already exists")
        private = request.get("visibility") == "private" or request.get("private") is True
        self.repos[("studios", f"{owner}/{name}")] = Repo("studios", owner, name, private, settings=request)
        return self.ok_openapi({"owner": owner, "repo_name": name, "visibility": request.get("visibility")})

    def add_setting(self, handler, body, query, owner, name, what):
        store = getattr(self.writable(handler, "studios", owner, name), what)
        request = json.loads(body)
        if request["key"] in store:
            raise _openapi_error(409, "DuplicateEntity", f"{what[:-1]} {request['key']} already exists")
        store[request["key"]] = request["value"]
        return self.ok_openapi({"key": request["key"]})

    def update_setting(self, handler, body, query, owner, name, what):
        store = getattr(self.writable(handler, "studios", owner, name), what)
        request = json.loads(body)
        if request["key"] not in store:
            raise _openapi_error(404, "ResourceNotFound", f"{what[:-1]} {request['key']} not found")
        store[request["key"]] = request["value"]
        return self.ok_openapi({"key": request["key"]})

    def deploy(self, handler, body, query, owner, name):
        self.writable(handler, "studios", owner, name).deploys += 1
        return self.ok_openapi({"status": "Deploying"})

    def list_files(self, handler, body, query, kind, owner, name):
        repo = self.visible(handler, kind, owner, name)
        if repo is None:
            raise _legacy_error(404, f"repo {owner}/{name} not found")
        if query.get("Revision", ["master"])[0] != "master":
            raise _legacy_error(404, "revision not found")
        files = [{"Name": path.rsplit("/", 1)[-1], "Path": path, "Type": "blob", "Size": len(data),
                  "Sha256": hashlib.sha256(data).hexdigest()} for path, data in sorted(repo.files.items())]
        return self.ok_legacy({"Files": files})

    def lfs_batch(self, handler, body, query, kind, owner, name):
        self.writable(handler, kind, owner, name)
        objects = []
        for obj in json.loads(body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.blobs:  # no href: the blob is already stored
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs/{kind}/{owner}/{name}/{obj['oid']}"}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects}

    def lfs_put(self, handler, body, query, kind, owner, name, oid):
        self.writable(handler, kind, owner, name)
        if hashlib.sha256(body).hexdigest() != oid:
            raise _legacy_error(400, f"sha256 mismatch for {oid}")
        self.blobs[oid] = body
        return {"Code": 200, "Success": True}

    def commit(self, handler, body, query, kind, owner, name, rev):
        repo = self.writable(handler, kind, owner, name)
        if rev != "master":
            raise _legacy_error(404, f"branch {rev} not found")
        request = json.loads(body)
        changes: dict[str, bytes | None] = {}
        for action in request["actions"]:
            path = action["path"]
            if action["action"] == "delete":
                changes[path] = None
            elif action["type"] == "lfs":
                data = self.blobs.get(action["sha256"])
                if data is None or len(data) != action["size"]:
                    raise _legacy_error(400, f"lfs object for {path} is not uploaded")
                changes[path] = data
            else:
                data = base64.b64decode(action["content"])
                if len(data) != action["size"]:
                    raise _legacy_error(400, f"size mismatch for {path}")
                changes[path] = data
        for path, data in changes.items():
            if data is None:
                repo.files.pop(path, None)
            else:
                repo.files[path] = data
        commit_id = hashlib.sha1(f"{len(repo.commits)}{sorted(changes)}".encode()).hexdigest()
        repo.commits.append({"id": commit_id, "message": request["commit_message"], "paths": sorted(changes)})
        return self.ok_legacy({"CommitId": commit_id})
