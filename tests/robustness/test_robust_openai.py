"""``--model openai:MODEL@URL``: a broken URL and an upstream that reports an error (issue 16).

The URL is the user's typo: one ``error:`` line, never a traceback. An upstream that stops a
stream with ``data: {"error": …}`` (OpenAI, llama.cpp's server, vLLM) or an SSE ``error:``
event must be reported, not dropped into an empty reply.
"""

from __future__ import annotations

import pytest
from helpers import assert_one_error, invoke
from sse_upstream import GOOD_CHUNK, upstream

from charlite.backends.openai_compat import OpenAIBackend
from charlite.errors import BackendError, SpecError
from charlite.spec import parse_spec


def _tried(text: str) -> None:
    print(f"bad input: {text}")  # shown with -s / -rP


BROKEN_URLS = [
    "openai:x@http://[::1",
    "openai:x@http://[::1/v1",
    "openai:x@http://[zz]:8080/v1",
    "openai:x@http://host:abc/v1",
    "openai:x@http://host:99999/v1",
    "openai:x@http://:8080/v1",
    "openai:x@http:///v1",
    "openai:x@http://a b/v1",
]


@pytest.mark.parametrize("spec", BROKEN_URLS)
def test_a_broken_server_url_is_one_error_line(spec):
    _tried(f"--model {spec}")
    with pytest.raises(SpecError, match="broken server URL"):
        parse_spec(spec)


def test_the_issue_command_with_a_broken_url():
    out = invoke("chat", "beethoven", "-m", "hi", "--model", "openai:x@http://[::1")
    assert_one_error(out, "broken server URL")


def test_good_urls_still_parse():
    for spec, url in [
        ("openai:x@http://[::1]:8080/v1", "http://[::1]:8080/v1"),
        ("openai:x@https://h.example/v1/", "https://h.example/v1"),
        ("openai:org/m@x@http://127.0.0.1:1/v1", "http://127.0.0.1:1/v1"),
    ]:
        assert parse_spec(spec).url == url


UPSTREAM_ERRORS = {
    "openai error object": 'data: {"error": {"message": "the model crashed", "type": "server_error"}}',
    "error string": 'data: {"error": "the model crashed"}',
    "vllm error object": 'data: {"object": "error", "message": "the model crashed", "code": 500}',
    "sse error event": 'error: {"message": "the model crashed", "code": 500}',
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_ERRORS))
def test_an_upstream_error_chunk_is_raised(name):
    _tried(f"upstream {name}")
    with upstream([GOOD_CHUNK, UPSTREAM_ERRORS[name], "data: [DONE]"]) as spec:
        backend = OpenAIBackend(parse_spec(spec), timeout=30)
        try:
            got = []
            with pytest.raises(BackendError, match="the model crashed"):
                for delta in backend.stream([{"role": "user", "content": "hi"}]):
                    got.append(delta.text)
            assert got == ["Good day, friend."]  # what came before the error was delivered
        finally:
            backend.close()


def test_an_error_body_of_a_plain_reply_is_raised():
    _tried("upstream 200 with an error body")
    whole = {"error": {"message": "the model crashed", "code": 500}}
    with upstream([], whole=whole) as spec:
        backend = OpenAIBackend(parse_spec(spec), timeout=30)
        try:
            with pytest.raises(BackendError, match="the model crashed"):
                backend.complete([{"role": "user", "content": "hi"}])
        finally:
            backend.close()


def test_chat_reports_an_upstream_error_in_one_line():
    with upstream([GOOD_CHUNK, UPSTREAM_ERRORS["openai error object"]]) as spec:
        out = invoke("chat", "beethoven", "-m", "hi", "--model", spec)
    assert_one_error(out, "the model crashed")
