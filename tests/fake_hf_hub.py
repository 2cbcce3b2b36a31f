"""A fake Hugging Face Hub for offline tests: the endpoints huggingface_hub 0.36 uses to create repos, upload folders
(preupload, LFS batch/PUT/verify, ndjson commits), list them and set Space secrets and variables, and the read side
that `datasets.load_dataset` and `hf_hub_download` use (repo info, tree, paths-info, resolve with GET and HEAD).

It keeps real state: files per revision, git blob oids (sha1) for regular files and sha256 for LFS objects, so the
real client skips unchanged files exactly as against the Hub. Unknown routes answer 404 naming the route; every
request is logged in `requests` as (method, path).

    with FakeHub(tokens={"hf_good": "alice"}) as hub:   # hub.url -> http://127.0.0.1:PORT
        ...
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

SDKS = {"gradio", "streamlit", "docker", "static"}
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".png",
                ".jpg", ".jpeg", ".gif", ".zip", ".gz", ".tar", ".model", ".npy", ".parquet", ".arrow")
LFS_MIN_SIZE = 10 * 2**20
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES).encode()
REPO = r"(?P<repo>[^/]+/[^/]+)"
TYPES = r"(?P<type>model|space|dataset)s"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Blob:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:  # what the Hub reports as the file's oid: the git blob id (of the pointer for LFS)
        return git_sha1(lfs_pointer(self.sha256, len(self.data)) if self.lfs else self.data)


def file_entry(path: str, blob: Blob) -> dict:
    """A file as the tree and paths-info endpoints list it."""
    entry = {"type": "file", "oid": blob.oid, "size": len(blob.data), "path": path}
    if blob.lfs:
        entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data),
                        "pointerSize": len(lfs_pointer(blob.sha256, len(blob.data)))}
    return entry


def directory_entry(path: str) -> dict:
    return {"type": "directory", "oid": git_sha1(path.encode()), "size": 0, "path": path}


@dataclass
class Commit:
    oid: str
    title: str
    files: dict[str, Blob]
    sent: list[str] = field(default_factory=list)  # the paths whose content or LFS pointer this commit carried


@dataclass
class Repo:
    type: str
    id: str
    private: bool
    sdk: str | None = None
    commits: list[Commit] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    hardware: str = "cpu-basic"

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    @property
    def files(self) -> dict[str, Blob]:
        return self.head.files

    def commit(self, title: str, files: dict[str, Blob], sent: list[str] | None = None) -> Commit:
        parent = self.commits[-1].oid if self.commits else ""
        oid = hashlib.sha1(f"{parent}\n{title}\n{sorted((p, b.oid) for p, b in files.items())}".encode()).hexdigest()
        self.commits.append(Commit(oid, title, dict(files), list(sent or [])))
        return self.commits[-1]


@dataclass(frozen=True)
class FileResponse:
    """A file's bytes and the headers the Hub sends with it (not JSON)."""

    data: bytes
    headers: dict[str, str]


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class FakeHub:
    """`tokens` maps valid tokens to user names; `orgs` maps a user to the organisations they may write to;
    `payment_required` holds repo ids whose creation answers 402; paths in `lose` are silently dropped from commits
    (a hub that loses a file, for the after-upload check)."""

    def __init__(self, tokens: dict[str, str] | None = None, *, orgs: dict[str, set[str]] | None = None,
                 payment_required: set[str] | None = None):
        self.tokens = dict(tokens or {})
        self.orgs = orgs or {}
        self.payment_required = set(payment_required or ())
        self.billing: set[str] = set()  # users allowed to request paid Space hardware
        self.lose: set[str] = set()
        self.echo_token = False  # a careless server: error messages quote the token (for redaction tests)
        self.tokens_seen: set[str] = set()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> content
        self.requests: list[tuple[str, str]] = []
        self._failures: list[list] = []  # [method, pattern, status, requests to let through first]
        # Called with (method, path) once a request's body has arrived, before it is handled; returning True drops
        # it unanswered (the fault-injection tests kill the client here).
        self.on_request = None
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    # ------------------------------------------------------------------------------------------- test helpers

    def __enter__(self) -> FakeHub:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def fail_once(self, method: str, path_regex: str, status: int = 500, *, skip: int = 0, times: int = 1) -> None:
        """After `skip` requests matching `method` and `path_regex` (re.search), the next `times` answer `status`."""
        for _ in range(times):
            self._failures.append([method, re.compile(path_regex), status, skip])

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def seed(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model", *, private: bool = False) -> Repo:
        """A public repo holding `files` (path -> bytes) in one commit, as if someone had uploaded them."""
        repo = Repo(repo_type, repo_id, private)
        blobs = {path: Blob(data, lfs=path.endswith(LFS_SUFFIXES)) for path, data in files.items()}
        repo.commit("initial commit", {".gitattributes": Blob(GITATTRIBUTES, lfs=False), **blobs})
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def count(self, method: str, path_regex: str) -> int:
        pattern = re.compile(path_regex)
        return sum(1 for m, p in self.requests if m == method and pattern.search(p))

    def commit_posts(self) -> int:
        return self.count("POST", r"/commit/")

    def lfs_puts(self) -> int:
        return self.count("PUT", r"^/lfs-upload/")

    # ------------------------------------------------------------------------------------------- routing

    def handle(self, method: str, path: str, query: dict, token: str | None, body: bytes) -> tuple[int, object]:
        with self._lock:
            self.requests.append((method, path))
            if token:
                self.tokens_seen.add(token)
            for failure in self._failures:
                m, pattern, status, skip = failure
                if m == method and pattern.search(path):
                    if skip:
                        failure[3] -= 1
                        continue
                    self._failures.remove(failure)
                    raise HubError(status, "Internal Error (forced by the test)")
        for route_method, pattern, action in ROUTES:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                with self._lock:
                    return action(self, match.groupdict(), query, token, body)
        raise HubError(404, f"fake hub has no route {method} {path}")

    def _user(self, token: str | None) -> str:
        if not token:
            raise HubError(401, "Invalid credentials in Authorization header")
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header" + self._echo(token))
        return self.tokens[token]

    def _writable(self, token: str | None, repo_id: str) -> str:
        user = self._user(token)
        namespace = repo_id.split("/")[0]
        if namespace != user and namespace not in self.orgs.get(user, set()):
            raise HubError(403, f"You don't have the rights to create or write to {repo_id}" + self._echo(token))
        return user

    def _echo(self, token: str | None) -> str:
        return f" (token {token})" if self.echo_token else ""

    def _find(self, repo_type: str, repo_id: str, token: str | None) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        user = self.tokens.get(token or "")
        if repo is None or (repo.private and user != repo_id.split("/")[0]):
            raise HubError(404, "Repository not found", code="RepoNotFound")
        return repo

    # ------------------------------------------------------------------------------------------- endpoints

    def whoami(self, args, query, token, body):
        user = self._user(token)
        orgs = [{"name": org} for org in sorted(self.orgs.get(user, set()))]
        return 200, {"type": "user", "name": user, "orgs": orgs, "auth": {"accessToken": {"role": "write"}}}

    def create_repo(self, args, query, token, body):
        data = json.loads(body or b"{}")
        repo_type = data.get("type") or "model"
        repo_id = f"{data.get('organization') or self.tokens.get(token or '', '')}/{data['name']}"
        self._writable(token, repo_id)
        if repo_id in self.payment_required:
            raise HubError(402, "Payment required: this needs a PRO subscription" + self._echo(token))
        if repo_type == "space" and data.get("sdk") not in SDKS:
            raise HubError(400, f"Invalid sdk: {data.get('sdk')}")
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.url}/{prefix}{repo_id}"
        if (repo_type, repo_id) in self.repos:  # like the Hub, the 409 names the existing repo's url
            raise HubError(409, f"You already created this {repo_type} repo", url=url)
        repo = Repo(repo_type, repo_id, bool(data.get("private")), sdk=data.get("sdk"))
        repo.commit("initial commit", {".gitattributes": Blob(GITATTRIBUTES, lfs=False)})
        self.repos[(repo_type, repo_id)] = repo
        return 200, {"url": url, "name": repo_id}

    def validate_yaml(self, args, query, token, body):
        content = json.loads(body)["content"]
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
        if match:
            try:
                meta = yaml.safe_load(match.group(1))
            except yaml.YAMLError as e:
                return 400, {"errors": [{"message": f"Invalid YAML: {' '.join(str(e).split())}"}], "warnings": []}
            if meta is not None and not isinstance(meta, dict):
                return 400, {"errors": [{"message": "Metadata must be a YAML mapping"}], "warnings": []}
        return 200, {"errors": [], "warnings": []}

    def repo_info(self, args, query, token, body):
        repo = self._find(args["type"], args["repo"], token)
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path, blob in sorted(repo.files.items()):
            sibling: dict = {"rfilename": path}
            if blobs:
                sibling.update(size=len(blob.data), blobId=blob.oid)
                if blob.lfs:
                    pointer = lfs_pointer(blob.sha256, len(blob.data))
                    sibling["lfs"] = {"sha256": blob.sha256, "size": len(blob.data), "pointerSize": len(pointer)}
            siblings.append(sibling)
        info = {"id": repo.id, "author": repo.id.split("/")[0], "sha": repo.head.oid, "private": repo.private,
                "siblings": siblings, "tags": []}
        if repo.type == "space":
            info["sdk"] = repo.sdk
        return 200, info

    def tree(self, args, query, token, body):
        repo = self._find(args["type"], args["repo"], token)
        base = (args.get("path") or "").strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries: dict[str, dict] = {}
        for path, blob in sorted(repo.files.items()):
            if base and not path.startswith(base + "/"):
                continue
            rest = path[len(base) + 1:] if base else path
            parts = rest.split("/")
            prefix = f"{base}/" if base else ""
            folders = parts[:-1] if recursive else parts[:1] if len(parts) > 1 else []
            for depth in range(len(folders)):
                folder = prefix + "/".join(parts[:depth + 1])
                entries.setdefault(folder, directory_entry(folder))
            if len(parts) > 1 and not recursive:
                continue
            entries[path] = file_entry(path, blob)
        return 200, list(entries.values())

    def paths_info(self, args, query, token, body):
        repo = self._find(args["type"], args["repo"], token)
        form = parse_qs(body.decode())
        asked = [p.strip("/") for p in form.get("paths", [])]
        entries = []
        for path in asked:
            blob = repo.files.get(path)
            if blob is not None:
                entries.append(file_entry(path, blob))
            elif any(p.startswith(path + "/") for p in repo.files):
                entries.append(directory_entry(path))
        return 200, entries

    def resolve(self, args, query, token, body):
        repo = self._find(args.get("type") or "model", args["repo"], token)
        path = unquote(args["path"])
        blob = repo.files.get(path)
        if blob is None:
            raise HubError(404, f"Entry not found: {path}", code="EntryNotFound")
        headers = {"X-Repo-Commit": repo.head.oid, "ETag": f'"{blob.oid}"'}
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(blob.data))})
        return 200, FileResponse(blob.data, headers)

    def preupload(self, args, query, token, body):
        repo = self._find(args["type"], args["repo"], token)
        self._writable(token, repo.id)
        answers = []
        for item in json.loads(body)["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = item["path"].lower().endswith(LFS_SUFFIXES) or item["size"] > LFS_MIN_SIZE or b"\0" in sample
            there = repo.files.get(item["path"])
            oid = None
            if there is not None:
                oid = there.sha256 if there.lfs else git_sha1(there.data)
            answers.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})
        return 200, {"files": answers, "commitOid": repo.head.oid}

    def lfs_batch(self, args, query, token, body):
        repo = self._find(args.get("type") or "model", args["repo"], token)
        self._writable(token, repo.id)
        objects = []
        for obj in json.loads(body)["objects"]:
            answer = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs:
                answer["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"},
                                     "verify": {"href": f"{self.url}/lfs-verify/{obj['oid']}"}}
            objects.append(answer)
        return 200, {"transfer": "basic", "objects": objects}

    def lfs_upload(self, args, query, token, body):
        if hashlib.sha256(body).hexdigest() != args["oid"]:
            raise HubError(400, "sha256 of the uploaded content does not match the oid")
        self.lfs[args["oid"]] = body
        return 200, {}

    def lfs_verify(self, args, query, token, body):
        data = json.loads(body)
        stored = self.lfs.get(args["oid"])
        if stored is None or len(stored) != data["size"]:
            raise HubError(404, f"LFS object {args['oid']} not found")
        return 200, {}

    def commit(self, args, query, token, body):
        repo = self._find(args["type"], args["repo"], token)
        self._writable(token, repo.id)
        files = dict(repo.files)
        title, sent = "", []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                title = value["summary"]
            elif key == "file":
                files[value["path"]] = Blob(base64.b64decode(value["content"]), lfs=False)
                sent.append(value["path"])
            elif key == "lfsFile":
                data = self.lfs.get(value["oid"])
                if data is None or len(data) != value["size"]:
                    raise HubError(422, f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = Blob(data, lfs=True)
                sent.append(value["path"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", code="EntryNotFound")
            elif key == "deletedFolder":
                for path in [p for p in files if p.startswith(value["path"].rstrip("/") + "/")]:
                    del files[path]
            else:
                raise HubError(400, f"fake hub does not support commit operation {key}")
        for path in self.lose:
            files.pop(path, None)
        commit = repo.commit(title, files, sent)
        prefix = "" if repo.type == "model" else f"{repo.type}s/"
        return 200, {"commitUrl": f"{self.url}/{prefix}{repo.id}/commit/{commit.oid}", "commitOid": commit.oid,
                     "pullRequestUrl": None}

    def space_secret(self, args, query, token, body):
        repo = self._find("space", args["repo"], token)
        self._writable(token, repo.id)
        data = json.loads(body)
        target = repo.secrets if args["kind"] == "secrets" else repo.variables
        target[data["key"]] = data["value"]
        if args["kind"] == "secrets":
            return 200, {}
        return 200, {k: {"value": v, "updatedAt": "2025-01-01T00:00:00.000Z"} for k, v in repo.variables.items()}

    def space_hardware(self, args, query, token, body):
        """Paid flavours answer 402 unless the user is in `billing` (as a free account does on the real Hub)."""
        repo = self._find("space", args["repo"], token)
        self._writable(token, repo.id)
        flavor = json.loads(body)["flavor"]
        if flavor != "cpu-basic" and self.tokens.get(token) not in self.billing:
            raise HubError(402, "Payment required: add a payment method to request upgraded hardware")
        repo.hardware = flavor
        return 200, {"stage": "BUILDING", "hardware": {"current": None, "requested": flavor}}


ROUTES = [
    ("GET", r"/api/whoami-v2", FakeHub.whoami),
    ("POST", r"/api/repos/create", FakeHub.create_repo),
    ("POST", r"/api/validate-yaml", FakeHub.validate_yaml),
    ("GET", rf"/api/{TYPES}/{REPO}(?:/revision/[^/]+)?", FakeHub.repo_info),
    ("GET", rf"/api/{TYPES}/{REPO}/tree/[^/]+(?:/(?P<path>.+))?", FakeHub.tree),
    ("POST", rf"/api/{TYPES}/{REPO}/paths-info/[^/]+", FakeHub.paths_info),
    ("GET", rf"/(?:(?P<type>dataset|space)s/)?{REPO}/resolve/[^/]+/(?P<path>.+)", FakeHub.resolve),
    ("HEAD", rf"/(?:(?P<type>dataset|space)s/)?{REPO}/resolve/[^/]+/(?P<path>.+)", FakeHub.resolve),
    ("POST", rf"/api/{TYPES}/{REPO}/preupload/[^/]+", FakeHub.preupload),
    ("POST", rf"/(?:(?P<type>space|dataset)s/)?{REPO}\.git/info/lfs/objects/batch", FakeHub.lfs_batch),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", FakeHub.lfs_upload),
    ("POST", r"/lfs-verify/(?P<oid>[0-9a-f]{64})", FakeHub.lfs_verify),
    ("POST", rf"/api/{TYPES}/{REPO}/commit/[^/]+", FakeHub.commit),
    ("POST", rf"/api/spaces/{REPO}/(?P<kind>secrets|variables)", FakeHub.space_secret),
    ("POST", rf"/api/spaces/{REPO}/hardware", FakeHub.space_hardware),
]


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, *args) -> None:  # the hub keeps its own request log
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        auth = self.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        headers = {}
        body = self._body()
        if self.hub.on_request is not None and self.hub.on_request(self.command, parts.path):
            self.close_connection = True
            return
        try:
            status, payload = self.hub.handle(self.command, parts.path, parse_qs(parts.query), token, body)
        except HubError as e:
            status, payload = e.status, {"error": e.message, **e.extra}
            if e.code:
                headers["X-Error-Code"] = e.code
        if isinstance(payload, FileResponse):
            data, content_type = payload.data, "application/octet-stream"
            headers.update(payload.headers)
        else:
            data, content_type = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve
