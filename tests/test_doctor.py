"""charlite doctor on this machine: the table, the JSON, the exit code, and what breaks chat."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from click.testing import CliRunner

from charlite import doctor
from charlite.cli import cli

ROWS = [
    "python", "packages (core)", "packages (train)", "packages (serve)", "torch", "unsloth",
    "llama-cpp-python", "embedded model", "parallel sequences", "chat (embedded)",
    "ollama program", "ollama server", "CHARLITE_HOME",
]  # fmt: skip


def _doctor(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, ["doctor", *args], env={"COLUMNS": "200", **(env or {})})


def _checks(result) -> dict[str, dict]:
    data = json.loads(result.stdout)
    assert data["format"] == 1
    return {c["name"]: c for c in data["checks"]}


@pytest.mark.slow
def test_doctor_table_on_this_machine(charlite_home):
    result = _doctor()
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "charlite doctor" in out
    for row in ROWS:
        assert row in out, row
    assert "chat works" in out
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        assert "CPU build (no GPU offload)" in out
    if shutil.which("ollama") is None:
        assert "not on PATH" in out
    assert "writable" in out and "GiB free" in out


@pytest.mark.slow
def test_doctor_json_reports_every_check_and_proves_chat():
    result = _doctor("--json")
    assert result.exit_code == 0, result.output
    checks = _checks(result)
    assert list(checks) == ROWS
    assert json.loads(result.stdout)["chat_works"] is True
    assert (
        checks["chat (embedded)"]["status"] == "ok"
        and "answered" in checks["chat (embedded)"]["detail"]
    )
    import torch

    has_gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
    assert checks["torch"]["status"] == ("ok" if has_gpu else "warn")
    assert torch.__version__ in checks["torch"]["detail"]
    if not has_gpu:
        assert "no CUDA or MPS" in checks["torch"]["detail"]
        assert checks["unsloth"]["status"] == "off"
    ollama = checks["ollama program"]
    assert ollama["status"] == ("ok" if shutil.which("ollama") else "off")
    if ollama["status"] == "off":
        assert ollama["fix"]  # how to install it
    for c in checks.values():
        assert c["status"] in ("ok", "warn", "fail", "off")
        if c["status"] in ("warn", "fail"):
            assert c["fix"], c  # every problem comes with the command that fixes it


def test_missing_embedded_model_fails_with_a_fix(tmp_path):
    result = _doctor(
        "--quick", "--json", env={"CHARLITE_EMBEDDED_MODEL": str(tmp_path / "gone.gguf")}
    )
    assert result.exit_code == 1
    checks = _checks(result)
    row = checks["embedded model"]
    assert (
        row["status"] == "fail"
        and "does not exist" in row["detail"]
        and "pip install" in row["fix"]
    )
    assert json.loads(result.stdout)["chat_works"] is False
    table = _doctor("--quick", env={"CHARLITE_EMBEDDED_MODEL": str(tmp_path / "gone.gguf")})
    assert table.exit_code == 1
    assert "FAIL" in table.stdout and "chat does not work: fix embedded model" in table.stdout


def test_corrupt_embedded_model_fails(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all" * 100)
    result = _doctor("--json", env={"CHARLITE_EMBEDDED_MODEL": str(bad)})
    assert result.exit_code == 1
    checks = _checks(result)
    assert checks["embedded model"]["status"] == "fail"
    assert checks["chat (embedded)"]["status"] == "fail"


def test_unwritable_home_fails(tmp_path):
    home = tmp_path / "a-file"
    home.write_text("not a folder")
    result = _doctor("--quick", "--json", env={"CHARLITE_HOME": str(home)})
    assert result.exit_code == 1
    row = _checks(result)["CHARLITE_HOME"]
    assert (
        row["status"] == "fail"
        and "not writable" in row["detail"]
        and "CHARLITE_HOME=" in row["fix"]
    )


def test_ollama_server_reachable_through_ollama_host(monkeypatch):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = (
                json.dumps({"version": "0.9.9"}).encode() if self.path == "/api/version" else b"{}"
            )
            self.send_response(200 if self.path == "/api/version" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{server.server_port}")
        check = doctor.check_ollama_server()
    finally:
        server.shutdown()
        server.server_close()
    assert check.status == "ok"
    assert check.detail == f"version 0.9.9 at http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{server.server_port}")
    down = doctor.check_ollama_server(timeout=0.5)
    assert down.status == "off" and "not reachable" in down.detail and "serve" in down.fix


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("example.lan:9000", "http://example.lan:9000"),
        ("https://ollama.example", "https://ollama.example:443"),
        ("[::1]:11500", "http://[::1]:11500"),
    ],
)
def test_ollama_host_forms(monkeypatch, value, url):
    monkeypatch.setenv("OLLAMA_HOST", value)
    assert doctor._ollama_url() == url


def test_quick_doctor_does_not_load_the_model():
    result = _doctor("--quick", "--json")
    assert result.exit_code == 0, result.output
    assert "chat (embedded)" not in _checks(result)
