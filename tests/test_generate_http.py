"""charlite generate against a real OpenAI-compatible server: llama-cpp-python's server on
loopback, serving the embedded GGUF, with --workers 2."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner

from charlite.cli import cli
from charlite.experience.dataset import Dataset

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_path, port: int, log_path) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model_path),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1",
    ]  # fmt: skip
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("llama_cpp.server did not start in time")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def teacher_url(embedded_path, tmp_path_factory):
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    proc = start_server(embedded_path, port, tmp_path_factory.mktemp("server") / "server.log")
    try:
        wait_ready(proc, url)
        yield url
    finally:
        stop_server(proc)


@pytest.mark.timeout(1800)
def test_http_teacher_with_two_workers(teacher_url):
    from tests.test_generate import check_dataset

    spec = f"openai:smollm2@{teacher_url}"
    args = ["generate", "beethoven", "--teacher", spec, "--paragraphs", "1", "--scenes", "2",
            "--protective", "1", "--workers", "2", "--max-attempts", "6", "--quiet"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    ds = Dataset("beethoven")
    counts = check_dataset(ds)
    manifest = ds.read_manifest()
    assert manifest["teacher"] == spec
    assert manifest["runs"][-1]["workers"] == 2
    assert manifest["expected"] == {"scenes": 2, "experiences": 2, "protective": 1}
    assert manifest["counts"] == counts
    assert counts["scenes"] >= 1 and counts["experiences"] >= 1 and counts["protective"] == 1
    assert all(s.teacher == spec for s in ds.scenes())
    assert all(s.paragraph_id == 0 for s in ds.scenes())

    # a torn last line (a crash in the middle of a write) is dropped on the next run
    with open(ds.file("experiences"), "ab") as fh:
        fh.write(b'{"id": "e-torn", "kind": "exper')
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "dropped a torn last line from experiences.jsonl" in res.output
    after = check_dataset(ds)
    assert after["scenes"] == counts["scenes"] and after["protective"] == 1
    assert after["experiences"] >= counts["experiences"]
    assert "e-torn" not in ds.ids("experiences")
    failures = [json.loads(x) for x in ds.failures_path.read_text().splitlines()]
    assert all(f["reason"] != "backend_error" for f in failures)
