"""A stand-in for the Hugging Face hub on 127.0.0.1: the few endpoints ``huggingface_hub``'s
``snapshot_download`` calls (a repository's revision, its file tree, each file's HEAD and GET),
serving repositories from local folders. ``requests`` records every path asked for, so a test
can see what was (and was not) downloaded."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path


class HubServer:
    def __init__(self, repos: dict[str, Path]):
        self.repos = repos  # repo id -> folder
        self.requests: list[str] = []
        self.commit = "c0ffee" + "0" * 34
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._answer(head=True)

            def do_GET(self):
                self._answer(head=False)

            def _send(self, code, body=b"", headers=None, head=False):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _answer(self, head):
                path = self.path.split("?")[0]
                server.requests.append(f"{self.command} {path}")
                if path.startswith("/api/models/"):
                    rest = path[len("/api/models/"):]
                    for repo, folder in server.repos.items():
                        if rest.startswith(repo + "/revision/"):
                            body = {"id": repo, "sha": server.commit,
                                    "siblings": [{"rfilename": f} for f in server.files(folder)]}
                            return self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
                        if rest.startswith(repo + "/tree/"):
                            body = [{"type": "file", "path": f, "size": (folder / f).stat().st_size,
                                     "oid": hashlib.sha1((folder / f).read_bytes()).hexdigest()}
                                    for f in server.files(folder)]
                            return self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
                    return self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}, head)
                if "/resolve/" in path:
                    repo, _, rest = path.lstrip("/").partition("/resolve/")
                    name = rest.partition("/")[2]
                    folder = server.repos.get(repo)
                    if folder is None:
                        return self._send(404, b"", {"X-Error-Code": "RepoNotFound"}, head)
                    if name not in server.files(folder):
                        return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head)
                    body = (folder / name).read_bytes()
                    return self._send(200, body, {"X-Repo-Commit": server.commit,
                                                  "ETag": f'"{hashlib.sha1(body).hexdigest()}"'}, head)
                return self._send(404, head=head)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def files(folder: Path) -> list[str]:
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())

    def downloaded(self) -> list[str]:
        """The files fetched whole (GET of a resolve URL), without the repository prefix."""
        return sorted({r.split("/resolve/")[1].partition("/")[2] for r in self.requests
                       if r.startswith("GET ") and "/resolve/" in r})

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
