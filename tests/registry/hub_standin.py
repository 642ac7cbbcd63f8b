"""A HuggingFace Hub stand-in for offline tests: a real HTTP server speaking the subset of the Hub's API that
`huggingface_hub` uses to create a repo, commit files and read them back, so the real client runs unchanged.

Spoken: POST /api/repos/create, POST /api/validate-yaml, GET /api/models/{repo}[/revision/{rev}] (model info with
siblings), POST /api/models/{repo}/preupload/{rev} (every file "regular", with the remote git oid so unchanged files
are skipped), POST /api/models/{repo}/commit/{rev} (NDJSON, base64 "file" entries), HEAD/GET
/{repo}/resolve/{rev}/{path}. Errors carry the Hub's X-Error-Code / X-Error-Message headers.

Hostile and awkward answers, for the tests of what the registry refuses or copes with: sizes declared for a file
that its download exceeds (``declared``: model info and HEAD; ``listed``: model info only), a commit id of the wrong
form (``answered_sha``), gzip-compressed bodies (``gzipped``), Xet headers (``xet``), a redirect before each file
(``redirect``), a body sent a little at a time, each piece within any read's timeout (``trickle``), a first piece
and then a pause, on every GET (``stall``), a connection dropped halfway through a body once (``cut_once``; the
client's retry asks for the rest with a Range, which this stand-in ignores, answering the whole file again).

Not spoken (the real Hub's parts these tests do not exercise): LFS and Xet uploads (every file goes inline, as the
Hub does for small files), pull requests, branches other than main, gated repos, repo tree pagination, rate-limit
windows (a 429 is only injected), and CDN redirects on download.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from tests.registry.servers import in_thread


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    owner: str
    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)


@dataclass
class Fault:
    method: str
    path_part: str
    status: int  # 0: hang for `seconds` before answering normally
    times: int
    seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class HubStandIn:
    """State of the fake Hub; ``url`` once started. ``tokens`` maps a token to the user it authenticates."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.tokens: dict[str, str] = {}
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str]] = []  # (method, path, authorization header)
        self.received_headers: list[dict[str, str]] = []  # each request's headers, as the server read them
        self.url = ""
        self.lock = threading.Lock()
        # a hostile Hub: sizes it declares for "repo_id/path" (model info and HEAD) while GET streams the real
        # bytes without a length; the commit id it answers instead of the real one
        self.declared: dict[str, int] = {}
        self.answered_sha: str | None = None
        self.listed: dict[str, int] = {}  # "repo_id/path": the size model info lists (the file itself says its own)
        self.gzipped: set[str] = set()  # "repo_id/path" sent gzip-compressed whatever was asked
        self.xet = False  # files' metadata names Xet (whose client these tests cannot reach)
        self.redirect = False  # files are sent from another path, after a 302
        self.error_text: str | None = None  # an injected failure's message, in its JSON body only (any characters)
        # "repo_id/path": seconds between the 256-byte pieces its GET body is sent in; ``trickled`` counts the pieces
        # sent (a client that gives up stops the body there)
        self.trickle: dict[str, float] = {}
        self.trickled = 0
        self.stall: dict[str, float] = {}  # "repo_id/path": its GETs send 256 bytes, then pause this long
        self.cut_once: set[str] = set()  # "repo_id/path": its next GET stops halfway, the connection dropped

    # ---- test controls -----------------------------------------------------------------------------------------
    def fail(self, method: str, path_part: str, status: int, *, times: int = 1, **headers: str) -> None:
        self.faults.append(Fault(method, path_part, status, times, headers=headers))

    def hang(self, method: str, path_part: str, seconds: float) -> None:
        self.faults.append(Fault(method, path_part, 0, 1, seconds=seconds))

    def head(self, repo_id: str, branch: str = "main") -> str:
        return self.repos[repo_id].branches[branch]

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.branches.get(revision, revision)]

    def seed_repo(self, repo_id: str, files: dict[str, bytes], *, owner: str | None = None,
                  private: bool = False) -> str:
        """Create a repo holding ``files`` (as someone else would have published it); return the commit."""
        with self.lock:
            repo = self._create(repo_id, owner or repo_id.split("/")[0], private)
            return self._commit(repo, "main", {**repo.commits[repo.branches["main"]], **files})

    # ---- state changes -----------------------------------------------------------------------------------------
    def _create(self, repo_id: str, owner: str, private: bool) -> Repo:
        repo = Repo(owner=owner, private=private)
        self.repos[repo_id] = repo
        self._commit(repo, "main", {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})
        return repo

    def _commit(self, repo: Repo, branch: str, files: dict[str, bytes]) -> str:
        parent = repo.branches.get(branch, "")
        digest = hashlib.sha1(parent.encode() + json.dumps(
            {k: git_oid(v) for k, v in sorted(files.items())}).encode() + str(len(repo.history)).encode())
        sha = digest.hexdigest()
        repo.commits[sha] = dict(files)
        repo.branches[branch] = sha
        repo.history.append(sha)
        return sha

    # ---- the app -----------------------------------------------------------------------------------------------
    def app(self) -> FastAPI:  # noqa: C901 - one closure per Hub route keeps the stand-in readable in one place
        app = FastAPI()

        def error(status: int, message: str, code: str | None = None) -> JSONResponse:
            headers = {"X-Error-Message": message, "X-Request-Id": "standin"}
            if code:
                headers["X-Error-Code"] = code
            return JSONResponse({"error": message}, status_code=status, headers=headers)

        def user_of(request: Request) -> str | None:
            auth = request.headers.get("authorization", "")
            return self.tokens.get(auth.removeprefix("Bearer ").strip()) if auth else None

        def readable(request: Request, repo_id: str) -> Repo | JSONResponse:
            repo = self.repos.get(repo_id)
            if repo is None or (repo.private and user_of(request) != repo.owner):
                return error(401 if user_of(request) is None else 404, "Repository not found", "RepoNotFound")
            return repo

        def writable(request: Request, repo_id: str) -> Repo | JSONResponse:
            user = user_of(request)
            if user is None:
                return error(401, "Invalid credentials in Authorization header")
            repo = readable(request, repo_id)
            if isinstance(repo, Repo) and repo.owner != user:
                return error(403, f"You don't have the rights to write to {repo_id}")
            return repo

        def revision_of(repo: Repo, rev: str) -> str | None:
            return repo.branches.get(rev) or (rev if rev in repo.commits else None)

        @app.middleware("http")
        async def faults(request: Request, call_next: Any) -> Any:
            self.requests.append((request.method, request.url.path, request.headers.get("authorization", "")))
            self.received_headers.append(dict(request.headers))
            if request.headers.get("authorization") and user_of(request) is None:  # the Hub refuses bad tokens
                return error(401, "Invalid credentials in Authorization header")
            for fault in self.faults:
                if fault.times > 0 and request.method == fault.method and fault.path_part in request.url.path:
                    fault.times -= 1
                    if fault.status == 0:  # a hung request: the others are still answered, as by the Hub
                        deadline = time.monotonic() + fault.seconds
                        # until the next test clears the faults, so that no hang outlasts its test
                        while time.monotonic() < deadline and any(f is fault for f in self.faults):
                            await asyncio.sleep(0.05)
                        break
                    said = self.error_text or f"injected {fault.status}"  # error_text: only in the body (JSON)
                    return JSONResponse({"error": said}, status_code=fault.status, headers={
                        "X-Error-Message": f"injected {fault.status}", **fault.headers} if self.error_text is None
                        else dict(fault.headers))
            return await call_next(request)

        @app.post("/api/repos/create")
        async def create(request: Request) -> Response:
            body = await request.json()
            user = user_of(request)
            if user is None:
                return error(401, "Invalid credentials in Authorization header")
            namespace = body.get("organization") or user
            if namespace != user:
                return error(403, f"You don't have the rights to create a repo under {namespace}")
            repo_id = f"{namespace}/{body['name']}"
            with self.lock:
                if repo_id in self.repos:
                    return JSONResponse({"error": "You already created this model repo",
                                         "url": f"{self.url}/{repo_id}"}, status_code=409)
                self._create(repo_id, user, body.get("visibility") == "private" or bool(body.get("private")))
            return JSONResponse({"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id})

        @app.post("/api/validate-yaml")
        async def validate_yaml(request: Request) -> Response:
            body = await request.json()
            content = body.get("content", "")
            if not content.startswith("---\n") or "\n---" not in content[4:]:
                return JSONResponse({"errors": [{"message": "no YAML front matter"}]}, status_code=400)
            return JSONResponse({"errors": [], "warnings": []})

        def model_info(request: Request, repo_id: str, rev: str) -> Response:
            repo = readable(request, repo_id)
            if not isinstance(repo, Repo):
                return repo
            sha = revision_of(repo, rev)
            if sha is None:
                return error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            return JSONResponse({
                "_id": repo_id, "id": repo_id, "modelId": repo_id, "author": repo.owner,
                "sha": self.answered_sha or sha,
                "private": repo.private, "disabled": False, "gated": False, "tags": [], "downloads": 0, "likes": 0,
                "library_name": "peft", "createdAt": now, "lastModified": now,
                "siblings": [{"rfilename": name, "size": self.listed.get(f"{repo_id}/{name}", self.declared.get(
                                  f"{repo_id}/{name}", len(data))),
                              "blobId": git_oid(data)}
                             for name, data in sorted(repo.commits[sha].items())],
            })

        @app.get("/api/models/{ns}/{name}/revision/{rev:path}")
        def info_at(request: Request, ns: str, name: str, rev: str) -> Response:
            return model_info(request, f"{ns}/{name}", rev)

        @app.get("/api/models/{ns}/{name}")
        def info(request: Request, ns: str, name: str) -> Response:
            return model_info(request, f"{ns}/{name}", "main")

        @app.post("/api/models/{ns}/{name}/preupload/{rev}")
        async def preupload(request: Request, ns: str, name: str, rev: str) -> Response:
            repo = writable(request, f"{ns}/{name}")
            if not isinstance(repo, Repo):
                return repo
            sha = revision_of(repo, rev)
            current = repo.commits[sha] if sha else {}
            body = await request.json()
            return JSONResponse({"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                 "oid": git_oid(current[f["path"]]) if f["path"] in current else None}
                for f in body["files"]]})

        @app.post("/api/models/{ns}/{name}/commit/{rev}")
        async def commit(request: Request, ns: str, name: str, rev: str) -> Response:
            repo_id = f"{ns}/{name}"
            repo = writable(request, repo_id)
            if not isinstance(repo, Repo):
                return repo
            if rev not in repo.branches:
                return error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
            with self.lock:
                files = dict(repo.commits[repo.branches[rev]])
                for item in lines:
                    value = item["value"]
                    if item["key"] == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif item["key"] == "deletedFile":
                        files.pop(value["path"], None)
                    elif item["key"] != "header":
                        return error(400, f"the stand-in does not speak {item['key']!r}")
                sha = self._commit(repo, rev, files)
            return JSONResponse({"commitUrl": f"{self.url}/{repo_id}/commit/{sha}",
                                 "commitOid": self.answered_sha or sha, "success": True, "pullRequestUrl": None})

        @app.api_route("/{ns}/{name}/resolve/{rev}/{path:path}", methods=["GET", "HEAD"])
        def resolve(request: Request, ns: str, name: str, rev: str, path: str) -> Response:
            repo = readable(request, f"{ns}/{name}")
            if not isinstance(repo, Repo):
                return repo
            sha = revision_of(repo, rev)
            if sha is None:
                return error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            data = repo.commits[sha].get(path)
            if data is None:
                return error(404, "Entry not found", "EntryNotFound")
            if self.redirect:  # as the Hub sends a file's bytes from its storage (a relative hop here)
                return Response(b"Found. Redirecting to the file", status_code=302, media_type="text/plain",
                                headers={"Location": f"/cdn/{ns}/{name}/{sha}/{path}", "X-Repo-Commit": sha})
            return file_answer(request, f"{ns}/{name}", sha, path, data)

        @app.api_route("/cdn/{ns}/{name}/{sha}/{path:path}", methods=["GET", "HEAD"])
        def cdn(request: Request, ns: str, name: str, sha: str, path: str) -> Response:
            return file_answer(request, f"{ns}/{name}", sha, path, self.repos[f"{ns}/{name}"].commits[sha][path])

        def file_answer(request: Request, repo_id: str, sha: str, path: str, data: bytes) -> Response:
            headers = {"X-Repo-Commit": sha, "ETag": f'"{git_oid(data)}"', "Content-Length": str(len(data))}
            if self.xet:  # what the Hub says of a file stored in Xet (the client then downloads through Xet's)
                headers.update({"X-Xet-Hash": "0" * 64, "X-Xet-Refresh-Route": f"/api/models/{repo_id}/xet-read-token"})
            if f"{repo_id}/{path}" in self.gzipped and request.method == "GET":
                return Response(gzip.compress(data), headers={**headers, "Content-Encoding": "gzip",
                                                              "Content-Length": str(len(gzip.compress(data)))},
                                media_type="application/octet-stream")
            key = f"{repo_id}/{path}"
            if request.method == "GET" and (key in self.trickle or key in self.stall or key in self.cut_once):
                body = (self._trickled(data, self.trickle[key]) if key in self.trickle
                        else self._stalled(data, self.stall[key]) if key in self.stall else self._cut(data))
                self.cut_once.discard(key)
                return StreamingResponse(body, headers=headers, media_type="application/octet-stream")
            declared = self.declared.get(f"{repo_id}/{path}")
            if declared is not None:  # says one size, streams another
                headers["Content-Length"] = str(declared)
                if request.method == "GET":
                    del headers["Content-Length"]
                    return StreamingResponse(iter([data[i:i + 65536] for i in range(0, len(data), 65536)]),
                                             headers=headers, media_type="application/octet-stream")
            body = b"" if request.method == "HEAD" else data
            return Response(body, headers=headers, media_type="application/octet-stream")

        return app

    async def _trickled(self, data: bytes, every_s: float) -> Any:
        for start in range(0, len(data), 256):
            await asyncio.sleep(every_s)
            self.trickled += 1
            yield data[start:start + 256]

    @staticmethod
    async def _stalled(data: bytes, seconds: float) -> Any:
        yield data[:256]
        await asyncio.sleep(seconds)
        yield data[256:]

    @staticmethod
    async def _cut(data: bytes) -> Any:
        yield data[:len(data) // 2]
        raise ConnectionAbortedError("the Hub stand-in drops this connection halfway (cut_once)")


@contextmanager
def running_hub() -> Iterator[HubStandIn]:
    """Serve a fresh stand-in on a free loopback port (uvicorn in a thread) for the duration of the block."""
    hub = HubStandIn()
    with in_thread(hub.app(), "the Hub stand-in") as url:
        hub.url = url
        yield hub
