"""A local server speaking the part of the Hugging Face Hub's API that huggingface_hub's
snapshot_download uses (model info, the file tree, HEAD and GET of /resolve/), on loopback, for
testing the real client: repositories with commits and a main branch, a gated one, missing
ones, and a file whose connection drops halfway."""

from __future__ import annotations

import hashlib
import json
import re
import socketserver
import threading
from http.server import BaseHTTPRequestHandler


class Hub:
    def __init__(self):
        self.repos: dict[str, dict] = {}  # repo -> {"main": sha, "commits": {sha: {file: bytes}}, "gated": bool}
        self.log: list[tuple[str, str]] = []
        self.drop: set[str] = set()  # file names whose GET stops halfway
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.serve(self, body=False)

            def do_GET(self):
                hub.serve(self, body=True)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, repo: str, files: dict[str, bytes], gated: bool = False, sha: str | None = None) -> str:
        """A new commit of `repo` holding `files` (its sha given, or made from them), made its main; its sha."""
        sha = sha or hashlib.sha1(repr(sorted(files.items())).encode() + repo.encode()).hexdigest()
        r = self.repos.setdefault(repo, {"commits": {}, "gated": gated})
        r["commits"][sha] = dict(files)
        r["main"] = sha
        return sha

    def downloads(self) -> list[str]:
        return [p for m, p in self.log if m == "GET" and "/resolve/" in p]

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # -- the API -----------------------------------------------------------------------------
    def _error(self, h, status: int, code: str):
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def _commit(self, h, repo: str, rev: str):
        r = self.repos.get(repo)
        if r is None:
            self._error(h, 404, "RepoNotFound")
            return None, None
        if r["gated"] and "authorization" not in {k.lower() for k in h.headers}:
            self._error(h, 403, "GatedRepo")
            return None, None
        sha = r["main"] if rev == "main" else rev
        if sha not in r["commits"]:
            self._error(h, 404, "RevisionNotFound")
            return None, None
        return sha, r["commits"][sha]

    def _json(self, h, obj):
        data = json.dumps(obj).encode()
        h.send_response(200)
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
                self._json(h, {"id": m.group(1), "sha": sha, "siblings": [{"rfilename": f} for f in files]})
            return
        if m := re.match(r"^/api/models/([^/]+/[^/]+|[^/]+)$", path):  # model info at main
            sha, files = self._commit(h, m.group(1), "main")
            if sha:
                self._json(h, {"id": m.group(1), "sha": sha, "siblings": [{"rfilename": f} for f in files]})
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
