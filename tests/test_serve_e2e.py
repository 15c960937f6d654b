"""charlite serve end to end: the real server on a loopback port, the `openai` client, the embedded model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from charlite.characters import character_refs  # noqa: E402
from charlite.serve.app import create_app  # noqa: E402
from charlite.serve.server import serve_in_thread  # noqa: E402
from charlite.serve.thoughts import visible_text  # noqa: E402

KEY = "test-key-123"
ASK = [{"role": "user", "content": "Where were you born?"}]
GREEDY = {"temperature": 0.0, "seed": 1}


@pytest.fixture(scope="module")
def server():
    with serve_in_thread(create_app()) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_server():
    with serve_in_thread(create_app(api_key=KEY)) as url:
        yield url


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server, api_key="unused", max_retries=0, timeout=600)


def test_models_lists_the_characters(client):
    models = client.models.list().data
    ids = [m.id for m in models]
    assert ids == sorted(character_refs())
    assert "beethoven" in ids and all(
        m.object == "model" and m.owned_by == "charlite" for m in models
    )
    one = client.models.retrieve("beethoven")
    assert one.id == "beethoven"
    assert one.model_extra["name"] == "Ludwig van Beethoven"
    assert one.model_extra["charlite"]["model"] == "embedded (prompted)"


@pytest.mark.slow
def test_chat_non_streaming(client):
    reply = client.chat.completions.create(model="beethoven", messages=ASK, max_tokens=12, **GREEDY)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == "beethoven"
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert "(thinking)" not in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert 0 < reply.usage.completion_tokens <= 12
    assert reply.usage.prompt_tokens > 100  # the character's system message is in the prompt


@pytest.mark.slow
def test_chat_streaming(client):
    stream = client.chat.completions.create(
        model="beethoven", messages=ASK, max_tokens=16, stream=True,
        stream_options={"include_usage": True}, **GREEDY,
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) >= 2  # it arrived piece by piece
    assert "".join(texts).strip()
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finals in (["stop"], ["length"])
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and 0 < usage.completion_tokens <= 16


@pytest.mark.slow
def test_max_tokens_stop_and_thoughts_are_honoured(client):
    short = client.chat.completions.create(model="beethoven", messages=ASK, max_tokens=3, **GREEDY)
    assert short.usage.completion_tokens <= 3 and short.choices[0].finish_reason == "length"

    raw = (
        client.chat.completions.create(
            model="beethoven",
            messages=ASK,
            max_tokens=16,
            extra_body={"show_thoughts": True},
            **GREEDY,
        )
        .choices[0]
        .message.content
    )
    shown = client.chat.completions.create(model="beethoven", messages=ASK, max_tokens=16, **GREEDY)
    # without show_thoughts the reply is the same text with its (thinking) lines removed
    assert shown.choices[0].message.content == visible_text(raw, "Beethoven")

    words = re.findall(r"[A-Za-z]{4,}", raw)
    assert len(words) >= 2, raw
    stop_word = words[1]
    stopped = client.chat.completions.create(
        model="beethoven",
        messages=ASK,
        max_tokens=16,
        stop=[stop_word],
        extra_body={"show_thoughts": True},
        **GREEDY,
    )
    assert stop_word not in stopped.choices[0].message.content
    assert raw.startswith(stopped.choices[0].message.content)
    assert stopped.choices[0].finish_reason == "stop"


@pytest.mark.slow
def test_concurrent_requests_share_one_model(client):
    results: list[str] = []
    errors: list[BaseException] = []

    def ask(slug: str) -> None:
        try:
            r = client.chat.completions.create(model=slug, messages=ASK, max_tokens=4, **GREEDY)
            results.append(r.choices[0].message.content)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=ask, args=(slug,))
        for slug in ("beethoven", "socrates", "beethoven")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors and len(results) == 3


def test_errors_are_openai_shaped(client, server):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="beethovn", messages=ASK, max_tokens=2)
    err = info.value.body
    assert (
        err["code"] == "model_not_found"
        and err["param"] == "model"
        and err["type"] == "invalid_request_error"
    )
    assert "did you mean 'beethoven'" in err["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="beethoven", messages=ASK, temperature=9)
    assert info.value.status_code == 400 and info.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="beethoven", messages=[{"role": "system", "content": "only"}]
        )
    assert "at least one user message" in info.value.body["message"]
    bad_json = httpx.post(f"{server}/chat/completions", content=b"{not json")
    assert bad_json.status_code == 400
    assert set(bad_json.json()["error"]) == {"message", "type", "param", "code"}
    nowhere = httpx.get(f"{server}/nowhere")
    assert nowhere.status_code == 404 and nowhere.json()["error"]["code"] == "not_found"
    wrong_method = httpx.get(f"{server}/chat/completions")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_api_key_is_required(keyed_server):
    with pytest.raises(openai.AuthenticationError) as info:
        openai.OpenAI(base_url=keyed_server, api_key="wrong", max_retries=0).models.list()
    assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
    bare = httpx.get(f"{keyed_server}/models")
    assert bare.status_code == 401 and "Missing API key" in bare.json()["error"]["message"]
    assert bare.headers["www-authenticate"] == "Bearer"
    chat = httpx.post(
        f"{keyed_server}/chat/completions", json={"model": "beethoven", "messages": ASK}
    )
    assert chat.status_code == 401
    ok = openai.OpenAI(base_url=keyed_server, api_key=KEY, max_retries=0).models.list()
    assert "beethoven" in [m.id for m in ok.data]


@pytest.mark.slow
def test_serve_command_runs_and_stops(tmp_path):
    exe = Path(sys.executable).with_name("charlite")
    env = {**os.environ, "CHARLITE_HOME": str(tmp_path / "home"), "NO_COLOR": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", "0", "--api-key", KEY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line)
        assert m, line + proc.stderr.read()
        url = m.group(1)
        assert httpx.get(f"{url}/models", timeout=30).status_code == 401
        listed = httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert listed.status_code == 200 and "beethoven" in [m["id"] for m in listed.json()["data"]]
    finally:
        proc.terminate()
        proc.wait(timeout=30)  # raises when the server does not stop
    stderr = proc.stderr.read()
    assert "Traceback" not in stderr, stderr


def test_serve_command_refuses_a_busy_port(tmp_path):
    import socket

    from click.testing import CliRunner

    from charlite.cli import cli

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--port", str(port)])
    finally:
        busy.close()
    assert result.exit_code == 1
    assert f"port {port} on 127.0.0.1 is in use; choose another with --port" in result.output
