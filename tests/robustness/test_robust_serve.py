"""``charlite serve`` against hostile and careless clients (issue 16).

Real parts throughout: the app on a loopback port (uvicorn), raw sockets for what a polite
client library would never send (a hang-up mid-stream, a padded key, a 64 MiB chunked body),
the embedded model where a reply is generated, and a real HTTP upstream for
``--model openai:…`` that misbehaves mid-stream.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

pytest.importorskip("fastapi")

from helpers import USER_PROFILE, assert_one_error, run_cli  # noqa: E402
from sse_upstream import GOOD_CHUNK, upstream  # noqa: E402

from charlite.errors import CharliteError  # noqa: E402
from charlite.serve.app import create_app  # noqa: E402
from charlite.serve.server import serve_in_thread  # noqa: E402


def _tried(text: str) -> None:
    print(f"hostile client: {text}")  # shown with -s / -rP


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def _request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def _events(raw: bytes) -> list[str]:
    """The ``data:`` payloads of a server-sent-event stream, in order."""
    return [
        line[len("data: ") :]
        for line in raw.decode("utf-8", "replace").splitlines()
        if line.startswith("data: ")
    ]


@pytest.fixture
def ada(charlite_home):
    """A user character with a two-paragraph profile: a short prompt keeps model tests quick."""
    folder = charlite_home / "characters" / "ada"
    folder.mkdir(parents=True)
    (folder / "profile.md").write_text(USER_PROFILE, encoding="utf-8")
    return "ada"


def _stream_body(model: str, **extra) -> bytes:
    body = {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me about virtue"}],
        "max_tokens": 200,
        **extra,
    }
    return json.dumps(body).encode()


# -------------------------------------------------------------------------------------------
# A client that hangs up mid-stream


def _hang_up_mid_stream(host: str, port: int, model: str) -> bool:
    """Ask for a streamed reply, read until its first words arrive, then close the socket.
    True when the hang-up came mid-stream (before ``[DONE]``)."""
    sock = socket.create_connection((host, port), timeout=120)
    try:
        sock.sendall(
            _request(
                "POST",
                "/v1/chat/completions",
                {"Content-Type": "application/json"},
                _stream_body(model, show_thoughts=True),  # every token as it comes
            )
        )
        got = b""
        while True:
            part = sock.recv(65536)
            if not part:
                return False
            got += part
            events = _events(got)
            if "[DONE]" in events:
                return False
            for event in events:
                if event.startswith("{"):
                    choices = json.loads(event).get("choices") or [{}]
                    if (choices[0].get("delta") or {}).get("content"):
                        return True  # the first words: hang up now
    finally:
        sock.close()


@pytest.mark.slow
def test_client_hanging_up_mid_stream_does_not_wedge_the_server(ada):
    """The issue's curl sequence: ``timeout 5 curl -N`` on a stream, then a plain request."""
    with serve_in_thread(create_app()) as url:
        host, port = _address(url)
        hang_ups = 0
        for _ in range(2):
            hang_ups += _hang_up_mid_stream(host, port, ada)
            _tried("serve: client hangs up mid-stream")
        assert hang_ups >= 1, "every reply ended before the client could hang up"
        start = time.monotonic()
        reply = httpx.post(
            f"{url}/chat/completions",
            json={"model": ada, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            timeout=90,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] is not None
        assert time.monotonic() - start < 60


# -------------------------------------------------------------------------------------------
# API keys


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--api-key", ""], {}),
        (["--api-key", "   "], {}),
        ([], {"CHARLITE_API_KEY": ""}),  # `CHARLITE_API_KEY=$UNSET charlite serve`
        (["--host", "0.0.0.0", "--api-key", ""], {}),
        (["--host", "0.0.0.0"], {"CHARLITE_API_KEY": " "}),
    ],
)
def test_an_empty_api_key_is_refused(charlite_home, args, env):
    _tried(f"serve: empty key {args} {env}")
    out = run_cli("serve", "--port", "0", *args, home=charlite_home, env=env, timeout=30)
    assert_one_error(out, "the API key is empty")
    assert "Traceback" not in out.output


def test_an_empty_api_key_is_refused_by_the_app():
    with pytest.raises(CharliteError, match="API key is empty"):
        create_app(api_key=" \t ")


def test_surrounding_spaces_of_a_key_do_not_matter():
    """Neither the server's key nor the client's: a padded variable on either side works."""
    with serve_in_thread(create_app(api_key=" k3y-secret ")) as url:
        host, port = _address(url)

        def status(headers: dict[str, str]) -> int:
            with socket.create_connection((host, port), timeout=30) as sock:
                sock.sendall(_request("GET", "/v1/models", {**headers, "Connection": "close"}))
                raw = b""
                while part := sock.recv(65536):
                    raw += part
            return _status(raw)

        for header in (
            {"Authorization": "Bearer k3y-secret"},
            {"Authorization": "Bearer   k3y-secret  "},
            {"Authorization": "bearer k3y-secret\t"},
            {"X-Api-Key": "  k3y-secret "},
        ):
            _tried(f"serve: padded key {header}")
            assert status(header) == 200, header
        for header in (
            {"Authorization": "Bearer k3y-secre"},
            {"Authorization": "Bearer k3y -secret"},
            {"Authorization": "Bearer "},
            {},
        ):
            _tried(f"serve: wrong key {header}")
            assert status(header) == 401, header


# -------------------------------------------------------------------------------------------
# A huge chunked body


def test_a_64_mib_chunked_body_gets_413_before_it_is_read():
    """No Content-Length to refuse it by: the server must stop reading at its limit."""
    from charlite.serve.protocol import MAX_BODY_BYTES

    _tried("serve: 64 MiB chunked body")
    total = 64 * 1024 * 1024
    piece = b"x" * (256 * 1024)
    with serve_in_thread(create_app()) as url:
        host, port = _address(url)
        sock = socket.create_connection((host, port), timeout=30)
        try:
            sock.sendall(
                _request(
                    "POST",
                    "/v1/chat/completions",
                    {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
                )
            )
            sent = 0
            answer = b""
            sock.settimeout(5)
            while sent < total:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break  # the server answered before the body ended
                try:
                    sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    break
                except TimeoutError:
                    break  # the server stopped reading: it should be answering
                sent += len(piece)
            if sent >= total:
                sock.sendall(b"0\r\n\r\n")
            sock.settimeout(30)
            try:
                while b"\r\n\r\n" not in answer and (part := sock.recv(65536)):
                    answer += part
            except ConnectionResetError:
                pass
        finally:
            sock.close()
    assert answer, "no answer"
    assert _status(answer) == 413, answer[:200]
    # what the server read is at most its limit plus what the sockets' buffers held
    assert sent < total // 2, f"the client could send {sent} bytes: the body was read in full"
    assert sent >= MAX_BODY_BYTES // 2


# -------------------------------------------------------------------------------------------
# n > 1 and tools (SillyTavern's multi-swipe and function calling)


def test_tool_choice_that_demands_a_call_is_refused_and_others_are_accepted(caplog):
    from charlite.serve import app as serve_app
    from charlite.serve.protocol import APIError, parse_request

    ask = [{"role": "user", "content": "x"}]
    tool = {"type": "function", "function": {"name": "roll", "parameters": {"type": "object"}}}
    for choice in ("required", {"type": "function", "function": {"name": "roll"}}):
        _tried(f"serve: tool_choice {choice}")
        with pytest.raises(APIError, match="do not call tools") as info:
            parse_request({"model": "m", "messages": ask, "tools": [tool], "tool_choice": choice})
        assert info.value.status == 400 and info.value.param == "tool_choice"
    said_none = parse_request(
        {"model": "m", "messages": ask, "tools": [tool], "tool_choice": "none"}
    )
    assert said_none.ignored_tools == 0
    auto = parse_request({"model": "m", "messages": ask, "tools": [tool, tool]})
    assert auto.ignored_tools == 2
    legacy = parse_request({"model": "m", "messages": ask, "functions": [tool["function"]]})
    assert legacy.ignored_tools == 1
    for n in (0, 17, -1):
        with pytest.raises(APIError) as info:
            parse_request({"model": "m", "messages": ask, "n": n})
        assert info.value.param == "n"
    assert parse_request({"model": "m", "messages": ask, "n": 16}).choices == 16

    serve_app._WARNED.discard("tools")
    with (
        caplog.at_level(logging.WARNING, logger="charlite.serve"),
        serve_in_thread(create_app()) as url,
    ):
        # an unknown character: the request is parsed (and its tools noted) before the 404
        body = {"model": "nobody", "messages": ask, "tools": [tool]}
        assert httpx.post(f"{url}/chat/completions", json=body, timeout=30).status_code == 404
    assert any("never call tools" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_several_choices_and_offered_tools(ada):
    tool = {"type": "function", "function": {"name": "roll", "parameters": {"type": "object"}}}
    ask = [{"role": "user", "content": "Where were you born?"}]
    with serve_in_thread(create_app()) as url:
        whole = httpx.post(
            f"{url}/chat/completions",
            json={
                "model": ada,
                "messages": ask,
                "n": 3,
                "max_tokens": 4,
                "seed": 5,
                "tools": [tool],
                "tool_choice": "auto",
            },
            timeout=600,
        )
        assert whole.status_code == 200, whole.text
        body = whole.json()
        assert [c["index"] for c in body["choices"]] == [0, 1, 2]
        assert all(isinstance(c["message"]["content"], str) for c in body["choices"])
        assert all(c["finish_reason"] in ("stop", "length") for c in body["choices"])
        assert 0 < body["usage"]["completion_tokens"] <= 3 * 4

        with httpx.stream(
            "POST",
            f"{url}/chat/completions",
            json={
                "model": ada,
                "messages": ask,
                "n": 2,
                "max_tokens": 4,
                "stream": True,
                "stream_options": {"include_usage": True},
                "tools": [tool],
                "tool_choice": "none",
            },
            timeout=600,
        ) as resp:
            assert resp.status_code == 200
            events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert not any("error" in c for c in chunks)
    finished = [
        c["choices"][0]["index"]
        for c in chunks
        if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    assert finished == [0, 1]
    roles = [
        c["choices"][0]["index"]
        for c in chunks
        if c["choices"] and c["choices"][0]["delta"].get("role")
    ]
    assert roles == [0, 1]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


# -------------------------------------------------------------------------------------------
# Any failure while streaming ends the stream cleanly


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("malformed choice", 'data: {"choices": [5]}'),
        ("malformed delta", 'data: {"choices": [{"delta": "x"}]}'),
        ("not an object", "data: [1, 2]"),
        ("error chunk", 'data: {"error": {"message": "upstream ran out of memory"}}'),
    ],
)
def test_a_failure_mid_stream_becomes_an_error_event_then_done(name, bad):
    _tried(f"serve: upstream {name} mid-stream")
    with (
        upstream([GOOD_CHUNK, bad, "data: [DONE]"]) as spec,
        serve_in_thread(create_app(model=spec)) as url,
    ):
        with httpx.stream(
            "POST",
            f"{url}/chat/completions",
            json={
                "model": "beethoven",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
                "show_thoughts": True,  # no thought filter holding back the unfinished line
            },
            timeout=60,
        ) as resp:
            assert resp.status_code == 200
            events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
        # the server still answers afterwards
        assert httpx.get(f"{url}/models", timeout=30).status_code == 200
    assert events[-1] == "[DONE]", events
    error = json.loads(events[-2])
    assert error["error"]["type"] == "server_error" and error["error"]["message"], error
    if name == "error chunk":
        assert "upstream ran out of memory" in error["error"]["message"]
    contents = [
        (json.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") for e in events[:-2]
    ]
    assert "Good day, friend." in "".join(c or "" for c in contents)
