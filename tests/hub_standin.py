"""A stand-in for the Hugging Face Hub on loopback, for `charlite pull` tests (HF_ENDPOINT).

It answers what ``huggingface_hub`` asks when it downloads one file:

- ``GET /api/models/OWNER/REPO[/revision/REV]?blobs=True`` (``HfApi.model_info``): the commit
  ``sha`` and ``siblings`` with each file's size and ``lfs.sha256``;
- ``HEAD /OWNER/REPO/resolve/REV/FILE`` (``get_hf_file_metadata``): ``X-Repo-Commit``, ``ETag``
  and ``X-Linked-Etag`` (the sha256 of an LFS file), ``X-Linked-Size``, ``Content-Length``,
  ``Accept-Ranges``;
- ``GET`` of the same URL, honouring ``Range: bytes=N-`` with ``206`` and ``Content-Range``.

Repositories: ``REPO`` serves the file as is; ``missing/...`` answers 404 (``RepoNotFound``),
``private/...`` 401 and ``gated/...`` 403 (``GatedRepo``), as the Hub does. ``corrupt`` serves one
byte flipped (the metadata still gives the true sha256); ``delay`` slows the body down.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CHUNK = 256 * 1024


class StandInHub:
    def __init__(self, files: dict[str, dict[str, Path]]):
        """``files``: repo id -> {file name in the repo -> local file}."""
        self.repos = {
            repo: {
                name: (path, _sha256(path), path.stat().st_size) for name, path in entries.items()
            }
            for repo, entries in files.items()
        }
        self.corrupt_at: int | None = None
        self.delay = 0.0  # seconds per CHUNK of body
        self.claimed_size: int | None = None  # a size to state instead of the true one
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> StandInHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub.requests.append(("HEAD", self.path, self.headers.get("Range")))
                self._resolve(body=False)

            def do_GET(self):
                hub.requests.append(("GET", self.path, self.headers.get("Range")))
                path = self.path.split("?")[0]
                if path.startswith("/api/models/"):
                    self._api(path[len("/api/models/") :])
                else:
                    self._resolve(body=True)

            # -- answers ------------------------------------------------------------------------

            def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body and self.command != "HEAD":
                    self.wfile.write(body)

            def _refuse(self, repo: str) -> bool:
                owner = repo.split("/")[0]
                error = {
                    "missing": (404, "RepoNotFound", "Repository not found"),
                    "private": (401, None, "Invalid username or password."),
                    "gated": (403, "GatedRepo", "Access to model is restricted."),
                }.get(owner)
                if error is None and repo not in hub.repos:
                    error = (404, "RepoNotFound", "Repository not found")
                if error is None:
                    return False
                status, code, message = error
                headers = {"Content-Type": "application/json"}
                if code:
                    headers["X-Error-Code"] = code
                headers["X-Error-Message"] = message
                self._send(status, headers, json.dumps({"error": message}).encode())
                return True

            def _api(self, rest: str) -> None:
                m = re.fullmatch(r"([^/]+/[^/]+)(?:/revision/[^/]+)?", rest)
                repo = m.group(1) if m else rest
                if self._refuse(repo):
                    return
                siblings = [
                    {
                        "rfilename": name,
                        "size": hub.claimed_size or size,
                        "lfs": {
                            "sha256": sha,
                            "size": hub.claimed_size or size,
                            "pointerSize": 134,
                        },
                    }
                    for name, (_, sha, size) in hub.repos[repo].items()
                ]
                info = {
                    "_id": "stand-in",
                    "id": repo,
                    "modelId": repo,
                    "sha": COMMIT,
                    "private": False,
                    "disabled": False,
                    "gated": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": ["gguf"],
                    "siblings": siblings,
                    "lastModified": "2026-01-01T00:00:00.000Z",
                    "createdAt": "2026-01-01T00:00:00.000Z",
                }
                self._send(200, {"Content-Type": "application/json"}, json.dumps(info).encode())

            def _resolve(self, body: bool) -> None:
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path.split("?")[0])
                if not m:
                    self._send(404, {"X-Error-Code": "EntryNotFound"})
                    return
                repo, _, name = m.groups()
                if self._refuse(repo):
                    return
                entry = hub.repos[repo].get(name)
                if entry is None:
                    self._send(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
                    return
                path, sha, size = entry
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    rm = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                    start = int(rm.group(1)) if rm else 0
                headers = {
                    "X-Repo-Commit": COMMIT,
                    "ETag": f'"{sha}"',
                    "X-Linked-Etag": f'"{sha}"',
                    "X-Linked-Size": str(hub.claimed_size or size),
                    "Accept-Ranges": "bytes",
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(size - start),
                }
                status = 200
                if start:
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if not body:
                    return
                with open(path, "rb") as fh:
                    fh.seek(start)
                    pos = start
                    try:
                        while chunk := fh.read(CHUNK):
                            if hub.corrupt_at is not None and pos <= hub.corrupt_at < pos + len(
                                chunk
                            ):
                                i = hub.corrupt_at - pos
                                chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
                            self.wfile.write(chunk)
                            pos += len(chunk)
                            if hub.delay:
                                time.sleep(hub.delay)
                    except (BrokenPipeError, ConnectionResetError):
                        return

        return Handler


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
