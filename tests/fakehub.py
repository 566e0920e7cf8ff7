"""A local server speaking the part of the Hugging Face Hub's API that huggingface_hub uses, on
loopback, for testing the real client.

Read side (snapshot_download, from_pretrained): model info, the file tree, HEAD and GET of
/resolve/; repositories with commits and branches, a gated one, private ones, missing ones, and a
file whose connection drops halfway.

Write side (HfApi.create_repo, create_branch, create_commit / upload_folder without hf_xet):
/api/repos/create, /branch/, /api/validate-yaml, /preupload/, the LFS batch API with a basic
upload and its verify call, and the NDJSON /commit/. Writes need `Authorization: Bearer` with a
token in `tokens` (401 otherwise). A commit is applied to its branch in one assignment, after its
whole request was read and checked, so readers see the branch before or after it, never between;
`drop_writes` makes the next LFS upload or commit request stop halfway through its body.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socketserver
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote

TOKEN = "hf_fakehub_write_token"  # the token the hub accepts unless told otherwise (`tokens`)
# What the Hub's default .gitattributes stores in LFS (a new repository's first commit holds it).
LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt", ".msgpack", ".h5")
GITATTRIBUTES = b"".join(b"*%s filter=lfs diff=lfs merge=lfs -text\n" % s.encode() for s in LFS_SUFFIXES)


class Hub:
    def __init__(self):
        # repo -> {"branches": {name: sha}, "commits": {sha: {file: bytes}}, "gated": bool, "private": bool}
        self.repos: dict[str, dict] = {}
        self.log: list[tuple[str, str]] = []
        self.drop: set[str] = set()  # file names whose GET stops halfway
        self.tokens: set[str] = {TOKEN}  # bearer tokens that may write
        self.lfs: dict[str, bytes] = {}  # LFS objects uploaded, by sha256
        # "lfs" / "commit": how many of the next LFS uploads / commit requests stop halfway through their body
        self.drop_writes: Counter[str] = Counter()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.serve(self, body=False)

            def do_GET(self):
                hub.serve(self, body=True)

            def do_POST(self):
                hub.write(self)

            def do_PUT(self):
                hub.write(self)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, repo: str, files: dict[str, bytes], gated: bool = False, sha: str | None = None) -> str:
        """A new commit of `repo` holding `files` (its sha given, or made from them), made its main; its sha."""
        sha = sha or hashlib.sha1(repr(sorted(files.items())).encode() + repo.encode()).hexdigest()
        r = self.repos.setdefault(repo, {"commits": {}, "branches": {}, "gated": gated, "private": False})
        r["commits"][sha] = dict(files)
        r["branches"]["main"] = sha
        return sha

    def head(self, repo: str, branch: str = "main") -> str | None:
        """The commit `branch` of `repo` points to (None: no such repo or branch)."""
        return self.repos.get(repo, {}).get("branches", {}).get(branch)

    def files(self, repo: str, rev: str = "main") -> dict[str, bytes]:
        r = self.repos[repo]
        return r["commits"][r["branches"].get(rev, rev)]

    def env(self, home: Path, **extra) -> dict:
        """The environment of a child process whose huggingface_hub talks to this hub, its cache in
        `home`; no HF_ variable of this machine's (huggingface_hub reads them when imported)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
        return {**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HF_ENDPOINT": self.url,
                "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1", **extra}

    def downloads(self) -> list[str]:
        return [p for m, p in self.log if m == "GET" and "/resolve/" in p]

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # -- the API -----------------------------------------------------------------------------
    def _error(self, h, status: int, code: str, message: str = ""):
        data = json.dumps({"error": message}).encode() if message else b""
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        if message:
            h.send_header("X-Error-Message", message)
            h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _authorized(self, h) -> bool:
        return h.headers.get("Authorization", "").removeprefix("Bearer ") in self.tokens

    def _commit(self, h, repo: str, rev: str):
        r = self.repos.get(repo)
        if r is None:
            self._error(h, 404, "RepoNotFound")
            return None, None
        if r["private"] and not self._authorized(h):  # as the Hub: a private repo is not there for others
            self._error(h, 401, "RepoNotFound")
            return None, None
        if r["gated"] and "authorization" not in {k.lower() for k in h.headers}:
            self._error(h, 403, "GatedRepo")
            return None, None
        rev = unquote(rev)
        sha = r["branches"].get(rev, rev)
        if sha not in r["commits"]:
            self._error(h, 404, "RevisionNotFound")
            return None, None
        return sha, r["commits"][sha]

    def _json(self, h, obj, status: int = 200):
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def serve(self, h, body: bool):
        path = h.path.split("?")[0]
        self.log.append(("GET" if body else "HEAD", path))
        if m := re.match(r"^/api/models/(.+)/revision/([^/]+)$", path):
            sha, files = self._commit(h, m.group(1), m.group(2))
            if sha:
                self._json(h, {"id": m.group(1), "sha": sha, "private": self.repos[m.group(1)]["private"],
                               "siblings": [{"rfilename": f} for f in files]})
            return
        if m := re.match(r"^/api/models/([^/]+/[^/]+|[^/]+)$", path):  # model info at main
            sha, files = self._commit(h, m.group(1), "main")
            if sha:
                self._json(h, {"id": m.group(1), "sha": sha, "private": self.repos[m.group(1)]["private"],
                               "siblings": [{"rfilename": f} for f in files]})
            return
        if m := re.match(r"^/api/models/(.+)/tree/([^/]+)$", path):
            sha, files = self._commit(h, m.group(1), m.group(2))
            if sha:
                self._json(h, [{"type": "file", "path": f, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                               for f, d in files.items()])
            return
        if m := re.match(r"^/(.+)/resolve/([^/]+)/(.+)$", path):
            sha, files = self._commit(h, m.group(1), m.group(2))
            if not sha:
                return
            if m.group(3) not in files:
                self._error(h, 404, "EntryNotFound")
                return
            data = files[m.group(3)]
            h.send_response(200)
            h.send_header("X-Repo-Commit", sha)
            h.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            if body:
                if m.group(3) in self.drop:  # the connection drops halfway through the file
                    h.wfile.write(data[:len(data) // 2])
                    h.wfile.flush()
                    h.close_connection = True
                    h.connection.shutdown(2)
                    return
                h.wfile.write(data)
            return
        self._error(h, 404, "NotFound")

    # -- the write side ----------------------------------------------------------------------
    def _body(self, h, drop: str | None = None) -> bytes | None:
        """The request's body (Content-Length or chunked); None after a drop: when `drop` names a
        kind in `drop_writes`, half of the body is read and the connection closed, no answer sent."""
        dropping = drop is not None and self.drop_writes[drop] > 0
        if dropping:
            self.drop_writes[drop] -= 1
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while size := int(h.rfile.readline().split(b";")[0], 16):
                data += h.rfile.read(size)
                h.rfile.readline()
                if dropping:
                    break
            else:
                h.rfile.readline()
        else:
            n = int(h.headers.get("Content-Length") or 0)
            data = h.rfile.read(n // 2 if dropping else n)
        if dropping:
            h.close_connection = True
            h.connection.shutdown(2)
            return None
        return bytes(data)

    def _lfs_mode(self, path: str, size: int) -> str:
        return "lfs" if path.endswith(LFS_SUFFIXES) or size > 10 * 2**20 else "regular"

    def write(self, h):
        method, path = h.command, h.path.split("?")[0]
        self.log.append((method, path))
        if m := re.match(r"^/lfs-upload/([0-9a-f]{64})$", path):  # presigned: no token, as S3's
            data = self._body(h, drop="lfs")
            if data is None:
                return
            if hashlib.sha256(data).hexdigest() != m.group(1):
                self._error(h, 400, "BadRequest", "the content does not match its sha256")
                return
            self.lfs[m.group(1)] = data
            self._json(h, {})
            return
        body = self._body(h, drop="commit" if "/commit/" in path else None)
        if body is None:
            return
        if not self._authorized(h):
            self._error(h, 401, "Unauthorized", "Invalid credentials in Authorization header")
            return
        if "create_pr" in h.path:
            self._error(h, 400, "BadRequest", "pull requests are not part of the fake hub")
            return
        if path == "/api/validate-yaml":
            self._json(h, {"errors": [], "warnings": []})
            return
        if path == "/api/repos/create":
            self._create_repo(h, json.loads(body))
            return
        if m := re.match(r"^/(.+)\.git/info/lfs/objects/batch$", path):
            self._lfs_batch(h, m.group(1), json.loads(body))
            return
        if m := re.match(r"^/lfs-verify/([0-9a-f]{64})$", path):
            obj = json.loads(body)
            ok = len(self.lfs.get(m.group(1), b"")) == obj.get("size") and obj.get("oid") == m.group(1)
            self._json(h, {}) if ok else self._error(h, 404, "NotFound", "LFS object not uploaded")
            return
        m = re.match(r"^/api/models/(.+)/(branch|preupload|commit)/([^/]+)$", path)
        if m is None:
            self._error(h, 404, "NotFound")
            return
        repo, what, rev = m.group(1), m.group(2), unquote(m.group(3))
        r = self.repos.get(repo)
        if r is None:
            self._error(h, 404, "RepoNotFound", "Repository not found")
            return
        if what == "branch":
            self._create_branch(h, r, rev, json.loads(body or b"{}"))
            return
        if rev not in r["branches"]:
            self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        if what == "preupload":
            present = r["commits"][r["branches"][rev]]
            out = []
            for f in json.loads(body)["files"]:
                mode, old = self._lfs_mode(f["path"], f["size"]), present.get(f["path"])
                oid = None if old is None else hashlib.sha256(old).hexdigest() if mode == "lfs" else \
                    hashlib.sha1(b"blob %d\0" % len(old) + old).hexdigest()
                out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
            self._json(h, {"files": out})
            return
        self._apply_commit(h, repo, r, rev, body)

    def _create_repo(self, h, payload: dict):
        if payload.get("type") not in (None, "model"):
            self._error(h, 400, "BadRequest", "the fake hub holds models only")
            return
        repo = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if repo in self.repos:
            self._json(h, {"error": "You already created this model repo", "url": f"{self.url}/{repo}"}, status=409)
            return
        self.add(repo, {".gitattributes": GITATTRIBUTES})
        self.repos[repo]["private"] = payload.get("visibility") == "private"
        self._json(h, {"url": f"{self.url}/{repo}", "name": repo})

    def _create_branch(self, h, r: dict, branch: str, payload: dict):
        if branch in r["branches"]:
            self._error(h, 409, "Conflict", f"Reference already exists: refs/heads/{branch}")
            return
        start = payload.get("startingPoint") or "main"
        sha = r["branches"].get(start, start)
        if sha not in r["commits"]:
            self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {start}")
            return
        r["branches"][branch] = sha
        self._json(h, {})

    def _lfs_batch(self, h, repo: str, payload: dict):
        if repo not in self.repos:
            self._error(h, 404, "RepoNotFound", "Repository not found")
            return
        objects = []
        for o in payload["objects"]:
            done = len(self.lfs.get(o["oid"], b"")) == o["size"]
            actions = {} if done else {"actions": {"upload": {"href": f"{self.url}/lfs-upload/{o['oid']}"},
                                                   "verify": {"href": f"{self.url}/lfs-verify/{o['oid']}"}}}
            objects.append({"oid": o["oid"], "size": o["size"], "authenticated": True, **actions})
        self._json(h, {"transfer": "basic", "objects": objects})

    def _apply_commit(self, h, repo: str, r: dict, branch: str, body: bytes):
        """Every operation checked first, then the branch moved in one assignment."""
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            self._error(h, 400, "BadRequest", "a commit starts with its header")
            return
        parent = r["branches"][branch]
        if lines[0]["value"].get("parentCommit") not in (None, parent):
            self._error(h, 412, "PreconditionFailed", "the branch has moved since the parent commit")
            return
        files = dict(r["commits"][parent])
        for op in lines[1:]:
            key, value = op["key"], op["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value["oid"] not in self.lfs:
                    self._error(h, 422, "LfsObjectMissing", f"{value['path']}: LFS object {value['oid']} not uploaded")
                    return
                files[value["path"]] = self.lfs[value["oid"]]
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {k: v for k, v in files.items() if not k.startswith(value["path"].rstrip("/") + "/")}
            else:
                self._error(h, 400, "BadRequest", f"unknown operation {key}")
                return
        sha = hashlib.sha1(parent.encode() + repr(sorted(files.items())).encode()).hexdigest()
        r["commits"][sha] = files
        r["branches"][branch] = sha
        self._json(h, {"commitUrl": f"{self.url}/{repo}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None})
