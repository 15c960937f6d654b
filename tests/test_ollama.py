"""The Ollama backend with the real ``ollama`` client against a local HTTP server.

No Ollama server can be installed on the machines these tests run on (no network, no
binary), so the server here is a small ``http.server`` on the loopback interface that speaks
the parts of Ollama's API charlite uses: ``/api/chat`` (streamed NDJSON and whole), ``/api/tags``,
``/api/blobs/DIGEST`` and ``/api/create``. It records every request, and the tests assert the
exact request bodies the client sent.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from charlite.backends import GenParams, get_backend
from charlite.backends.ollama import OllamaBackend
from charlite.cli import cli
from charlite.errors import BackendError
from charlite.spec import parse_spec

MODEL = "charlite-beethoven"
REPLY = ["(speaking) ", "Good ", "day!"]


class FakeOllama(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[str, str, object]] = []
        self.models = {f"{MODEL}:latest"}
        self.blobs: dict[str, bytes] = {}
        self.done_reason = "stop"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeOllama

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _json(self, status: int, data: dict) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        self.server.requests.append(("GET", self.path, None))
        if self.path == "/api/tags":
            models = [
                {
                    "name": m,
                    "model": m,
                    "modified_at": "2025-01-01T00:00:00Z",
                    "size": 1,
                    "digest": "d" * 64,
                }
                for m in sorted(self.server.models)
            ]
            return self._json(200, {"models": models})
        return self._json(404, {"error": "not found"})

    def do_POST(self):
        raw = self._body()
        if self.path.startswith("/api/blobs/"):
            digest = self.path.rsplit("/", 1)[1]
            self.server.requests.append(("POST", self.path, len(raw)))
            if digest != "sha256:" + hashlib.sha256(raw).hexdigest():
                return self._json(400, {"error": "digest mismatch"})
            self.server.blobs[digest] = raw
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        body = json.loads(raw)
        self.server.requests.append(("POST", self.path, body))
        if self.path == "/api/create":
            self.server.models.add(body["model"] + ":latest")
            return self._json(200, {"status": "success"})
        if self.path != "/api/chat":
            return self._json(404, {"error": "not found"})
        if body["model"] + ":latest" not in self.server.models:
            return self._json(404, {"error": f"model '{body['model']}' not found"})
        if body.get("format") is not None:
            return self._json(200, self._part('{"answer": "Bonn"}', done=True))
        if not body.get("stream", True):
            return self._json(200, self._part("".join(REPLY), done=True))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        for piece in REPLY:
            self.wfile.write(json.dumps(self._part(piece, done=False)).encode() + b"\n")
            self.wfile.flush()
        self.wfile.write(json.dumps(self._part("", done=True)).encode() + b"\n")
        return None

    def _part(self, content: str, done: bool) -> dict:
        part = {
            "model": MODEL,
            "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": content},
            "done": done,
        }
        if done:
            part.update(done_reason=self.server.done_reason, prompt_eval_count=12, eval_count=3)
        return part


@pytest.fixture
def ollama_server(monkeypatch):
    server = FakeOllama()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


MESSAGES = [
    {"role": "system", "content": "I want you to act like Ludwig van Beethoven."},
    {"role": "user", "content": "Visitor: Good morning."},
]
PARAMS = GenParams(
    temperature=0.2, top_p=0.9, max_tokens=64, seed=7, repeat_penalty=1.1, stop=("<|im_end|>",)
)
OPTIONS = {
    "temperature": 0.2,
    "top_p": 0.9,
    "num_predict": 64,
    "repeat_penalty": 1.1,
    "seed": 7,
    "stop": ["<|im_end|>"],
}


def test_streaming_chat_sends_the_exact_request(ollama_server):
    backend = get_backend("ollama:" + MODEL)
    assert isinstance(backend, OllamaBackend) and backend.host == ollama_server.url
    deltas = list(backend.stream(MESSAGES, PARAMS))
    assert "".join(d.text for d in deltas) == "".join(REPLY)
    assert deltas[-1].finish_reason == "stop"
    assert ollama_server.requests == [
        (
            "POST",
            "/api/chat",
            {
                "model": MODEL,
                "messages": MESSAGES,
                "tools": [],
                "stream": True,
                "options": OPTIONS,
                "think": False,  # thinking models would spend the budget on hidden reasoning
            },
        )
    ]


def test_whole_reply_and_json_schema(ollama_server):
    backend = OllamaBackend(parse_spec("ollama:" + MODEL))
    reply = backend.complete(MESSAGES, GenParams(seed=None))
    assert reply.text == "".join(REPLY) and reply.finish_reason == "stop"
    assert (reply.prompt_tokens, reply.completion_tokens) == (12, 3)
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 40}}}
    answer = backend.complete(MESSAGES, PARAMS, schema=schema)
    assert answer.json() == {"answer": "Bonn"}
    default_options = {"temperature": 0.7, "top_p": 0.95, "num_predict": 256, "repeat_penalty": 1.1}
    assert ollama_server.requests == [
        (
            "POST",
            "/api/chat",
            {
                "model": MODEL,
                "messages": MESSAGES,
                "tools": [],
                "stream": False,
                "options": default_options,
                "think": False,
            },
        ),
        (
            "POST",
            "/api/chat",
            {
                "model": MODEL,
                "messages": MESSAGES,
                "tools": [],
                "stream": False,
                "format": schema,
                "options": OPTIONS,
                "think": False,
            },
        ),
    ]


def test_reply_cut_at_max_tokens_is_truncated(ollama_server):
    ollama_server.done_reason = "length"
    backend = OllamaBackend(parse_spec("ollama:" + MODEL))
    assert backend.complete(MESSAGES).truncated
    assert list(backend.stream(MESSAGES))[-1].finish_reason == "length"


def test_list_models(ollama_server):
    assert OllamaBackend(parse_spec("ollama:x")).list_models() == [f"{MODEL}:latest"]
    assert ollama_server.requests == [("GET", "/api/tags", None)]


def test_missing_model_is_a_clear_error(ollama_server):
    backend = OllamaBackend(parse_spec("ollama:charlite-nobody"))
    with pytest.raises(
        BackendError, match="has no model 'charlite-nobody'.*ollama pull charlite-nobody"
    ):
        list(backend.stream(MESSAGES))
    with pytest.raises(BackendError, match="has no model"):
        backend.complete(MESSAGES)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server(monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{port}")
    backend = OllamaBackend(parse_spec("ollama:" + MODEL))
    want = f"cannot reach Ollama at http://127.0.0.1:{port}: is `ollama serve` running?"
    for call in (
        lambda: list(backend.stream(MESSAGES)),
        lambda: backend.complete(MESSAGES),
        backend.list_models,
    ):
        with pytest.raises(BackendError) as info:
            call()
        assert str(info.value) == want
    result = CliRunner().invoke(
        cli, ["chat", "beethoven", "--model", "ollama:" + MODEL, "-m", "Hello"]
    )
    assert result.exit_code == 1
    assert result.stderr == f"error: {want}\n"


def test_chat_command_through_ollama(ollama_server):
    """``charlite chat NAME --model ollama:charlite-NAME``: a trained export, no profile in the prompt."""
    from charlite import roleplay

    result = CliRunner().invoke(
        cli,
        ["chat", "beethoven", "--model", "ollama:" + MODEL, "-m", "Good morning."]
        + ["--knowledge", "off"],  # the exact request of today's prompts (no recall in the turn)
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "Good day!\n"
    (method, path, body) = ollama_server.requests[-1]
    assert (method, path, body["model"], body["stream"]) == ("POST", "/api/chat", MODEL, True)
    system, user = body["messages"]
    assert system["role"] == "system" and system["content"].startswith(
        "I want you to act like Ludwig van Beethoven."
    )
    assert (
        "What you know of your own life:" not in system["content"]
    )  # trained: no profile paragraphs
    assert user == {"role": "user", "content": roleplay.user_line(None, "Good morning.")}
    assert body["options"] == {
        "temperature": 0.7,
        "top_p": 0.95,
        "num_predict": 200,
        "repeat_penalty": 1.15,
    }


def _export_folder(tmp_path):
    from charlite.characters import get_profile
    from charlite.export.modelfile import CHATML, character_modelfile

    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "beethoven-lora.gguf").write_bytes(b"GGUF adapter bytes")
    (folder / "base.gguf").write_bytes(b"GGUF base bytes")
    text = character_modelfile(
        get_profile("beethoven"), from_="./base.gguf", adapter="./beethoven-lora.gguf", fmt=CHATML
    )
    (folder / "Modelfile").write_text(text, encoding="utf-8")
    return folder


def test_create_through_the_api(ollama_server, tmp_path, monkeypatch):
    from charlite.characters import get_profile
    from charlite.export.ollama import create_in_ollama
    from charlite.roleplay import profile_system_message

    monkeypatch.setenv("PATH", str(tmp_path / "no-ollama-here"))  # the program is not installed
    folder = _export_folder(tmp_path)
    outcome = create_in_ollama(folder, "beethoven")
    assert (outcome.how, outcome.model) == ("api", MODEL)
    base = "sha256:" + hashlib.sha256(b"GGUF base bytes").hexdigest()
    adapter = "sha256:" + hashlib.sha256(b"GGUF adapter bytes").hexdigest()
    assert ollama_server.requests[:3] == [
        ("GET", "/api/tags", None),
        ("POST", f"/api/blobs/{base}", len(b"GGUF base bytes")),
        ("POST", f"/api/blobs/{adapter}", len(b"GGUF adapter bytes")),
    ]
    from charlite.export.modelfile import CHATML

    assert ollama_server.requests[3] == (
        "POST",
        "/api/create",
        {
            "model": MODEL,
            "stream": False,
            "files": {"base.gguf": base},
            "adapters": {"beethoven-lora.gguf": adapter},
            "template": CHATML.template,
            "system": profile_system_message(get_profile("beethoven")),
            "parameters": {
                "stop": ["<|im_start|>", "<|im_end|>"],
                "temperature": 0.7,
                "top_p": 0.95,
                "repeat_penalty": 1.15,
                "num_ctx": 2048,
                "num_predict": 200,
            },
        },
    )


def test_create_without_ollama_prints_the_command(tmp_path, monkeypatch):
    from charlite.export.ollama import create_in_ollama

    monkeypatch.setenv("PATH", str(tmp_path / "no-ollama-here"))
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{_closed_port()}")
    folder = _export_folder(tmp_path)
    outcome = create_in_ollama(folder, "beethoven")
    assert outcome.how == "command"
    assert outcome.command == f"ollama create {MODEL} -f {folder / 'Modelfile'}"
