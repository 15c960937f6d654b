"""A misbehaving OpenAI-compatible server on a loopback port, for ``--model openai:…`` tests.

It answers every ``POST …/chat/completions`` with the lines it was given: server-sent events
(``data: {...}``, ``error: {...}``) for a streamed request, or ``whole`` as the JSON body of a
plain one. Everything on charlite's side is real: its HTTP backend, the CLI, the API server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GOOD_CHUNK = 'data: {"choices": [{"index": 0, "delta": {"content": "Good day, friend."}}]}'


@contextmanager
def upstream(events: list[str], whole: Any = None) -> Iterator[str]:
    """Serve ``events`` (streamed) / ``whole`` (not streamed); yields the model spec."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
            try:
                self.send_response(200)
                if body.get("stream"):
                    self.send_header("content-type", "text/event-stream")
                    self.end_headers()
                    for line in events:
                        self.wfile.write(line.encode() + b"\n\n")
                        self.wfile.flush()
                else:
                    payload = json.dumps(whole).encode()
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"openai:up@http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
