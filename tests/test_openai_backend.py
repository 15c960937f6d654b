"""The OpenAI-compatible backend against llama-cpp-python's own server on the embedded model."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner

from charlite.backends import GenParams, get_backend
from charlite.backends.openai_compat import OpenAIBackend
from charlite.cli import cli
from charlite.errors import BackendError, PromptTooLongError, RequestError
from charlite.history import History
from charlite.spec import parse_spec

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name one composer."},
]
GREEDY = GenParams(temperature=0.0, top_p=1.0, max_tokens=16, seed=7, repeat_penalty=1.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(embedded_path, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(embedded_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                pytest.fail("llama_cpp.server did not start in 120 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


@pytest.fixture
def backend(server):
    b = get_backend(f"openai:smollm2@{server}")
    assert isinstance(b, OpenAIBackend)
    yield b
    b.close()


@pytest.mark.slow
def test_chat(backend):
    out = backend.complete(MESSAGES, GREEDY)
    assert out.text.strip()
    assert out.finish_reason in ("stop", "length")
    assert out.prompt_tokens and out.prompt_tokens > 10
    assert 0 < out.completion_tokens <= 16


@pytest.mark.slow
def test_stream_matches_chat_when_greedy(backend):
    deltas = list(backend.stream(MESSAGES, GREEDY))
    assert len(deltas) > 1
    assert deltas[-1].finish_reason in ("stop", "length")
    assert all(d.finish_reason is None for d in deltas[:-1])
    streamed = "".join(d.text for d in deltas)
    assert streamed.strip()
    assert streamed == backend.complete(MESSAGES, GREEDY).text


@pytest.mark.slow
def test_stop_strings(backend):
    params = GREEDY.with_(max_tokens=40, stop=(".", "\n"))
    out = backend.complete(
        [{"role": "user", "content": "Write two sentences about Vienna."}], params
    )
    assert "." not in out.text and "\n" not in out.text


@pytest.mark.slow
def test_complete_with_a_schema(backend):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "year": {"type": "integer", "minimum": 1000, "maximum": 2100},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 2},
        },
        "required": ["name", "year", "tags"],
        "additionalProperties": False,
    }
    msgs = [{"role": "user", "content": "Give a composer and the year of his birth as JSON."}]
    # the schema bounds every value; 200 tokens leave room for the whitespace the grammar allows,
    # however a machine's greedy decoding fills it
    out = backend.complete(msgs, GREEDY.with_(max_tokens=200, repeat_penalty=1.2), schema)
    assert not out.truncated, out.text
    data = out.json()
    assert set(data) == {"name", "year", "tags"}
    assert isinstance(data["name"], str) and len(data["name"]) <= 24
    assert isinstance(data["year"], int) and 1000 <= data["year"] <= 2100
    assert isinstance(data["tags"], list) and len(data["tags"]) <= 2
    # llama-cpp-python's server refuses OpenAI's json_schema form; the backend fell back
    assert backend._json_object_only
    again = backend.complete(msgs, GREEDY.with_(max_tokens=80, repeat_penalty=1.2), schema=schema)
    assert set(again.json()) == {"name", "year", "tags"}


@pytest.mark.slow
def test_server_error_is_a_backend_error(backend):
    with pytest.raises(BackendError) as info:
        backend.complete([{"role": "wizard", "content": "hi"}], GREEDY)
    assert "answered" in str(info.value) and backend.base_url in str(info.value)


@pytest.mark.slow
def test_an_over_long_prompt_is_the_same_error_as_with_llama_cpp(backend):
    # the server's context is 2048 tokens: the same typed error as the in-process backend
    with pytest.raises(PromptTooLongError, match="answered 400") as info:
        backend.complete([{"role": "user", "content": "word " * 3000}], GREEDY)
    assert isinstance(info.value, RequestError) and not isinstance(info.value, BackendError)


@pytest.mark.slow
def test_cli_chat_through_the_server(server, charlite_home):
    spec = f"openai:smollm2@{server}"
    result = CliRunner().invoke(
        cli,
        ["chat", "beethoven", "-m", "Where were you born?", "--model", spec, "--max-tokens", "24"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()
    h = History()
    (session,) = h.sessions("beethoven")
    assert session.model == spec
    turns = h.turns(session.id)
    assert [t.role for t in turns] == ["user", "assistant"]
    assert turns[0].content == "Where were you born?"
    assert turns[1].content.strip()
    h.close()


# ---------------------------------------------------------------------------------------------
# No server


@pytest.mark.parametrize("call", ["complete", "stream", "complete with a schema"])
def test_connection_failure_is_one_line(call):
    port = _free_port()  # nothing listens there
    b = OpenAIBackend(parse_spec(f"openai:x@http://127.0.0.1:{port}/v1"), timeout=5)
    with pytest.raises(BackendError) as info:
        if call == "complete":
            b.complete(MESSAGES)
        elif call == "stream":
            list(b.stream(MESSAGES))
        else:
            b.complete(MESSAGES, schema={"type": "object"})
    message = str(info.value)
    assert message == (
        f"cannot reach the OpenAI-compatible server at http://127.0.0.1:{port}/v1 (ConnectError); "
        "is the server running, and is the URL right?"
    )


def test_cli_connection_failure(charlite_home):
    port = _free_port()
    result = CliRunner().invoke(
        cli, ["chat", "beethoven", "-m", "hi", "--model", f"openai:x@http://127.0.0.1:{port}/v1"]
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot reach the OpenAI-compatible server")
