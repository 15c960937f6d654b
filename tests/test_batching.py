"""Continuous batching on the embedded model (charlite.backends.batching).

Model tests compare the engine with itself (a sequence decoded in a batch of neighbours
against the same sequence decoded alone), never with text fixed in advance.
"""

from __future__ import annotations

import json
import time

import pytest
from helpers_models import PERSON_SCHEMA

from charlite.backends import GenParams, get_backend
from charlite.backends.batching import (
    ENV_PARALLEL,
    BatchRequest,
    default_parallel,
    gguf_kv_bytes_per_token,
    parallel_setting,
)
from charlite.errors import ModelError

QUESTIONS = [
    ("Say hello.", 6),
    ("Describe a thunderstorm over the sea in detail.", 48),
    ("What is your favourite colour and why?", 20),
    ("List three composers.", 36),
    ("Tell me a story about a dragon who learns to play the violin.", 64),
    ("Count from one to ten in words.", 28),
]
SYSTEM = (
    "You are Ludwig van Beethoven, the composer, born in Bonn in 1770. You speak plainly, "
    "with passion, about music, Vienna, your deafness and your friends. Stay in character."
)


def _messages(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


# -- the setting (no model) -----------------------------------------------------------------------


def test_parallel_setting_from_the_environment(monkeypatch):
    monkeypatch.setenv(ENV_PARALLEL, "3")
    assert parallel_setting(2048, 23040) == (3, ENV_PARALLEL)
    for bad in ("0", "x", "-2", "1000"):
        monkeypatch.setenv(ENV_PARALLEL, bad)
        with pytest.raises(ModelError, match=ENV_PARALLEL):
            parallel_setting(2048, 23040)
    monkeypatch.delenv(ENV_PARALLEL)
    n, source = parallel_setting(2048, 23040)
    assert 1 <= n <= 4 and "2048-token context" in source


def test_default_parallel_follows_memory():
    per_token = 23040  # SmolLM2-135M: 30 layers, 3 KV heads of 64, f16
    assert default_parallel(2048, per_token, memory=64 * 1024**3) == 4
    per_seq = 2048 * per_token
    assert default_parallel(2048, per_token, memory=int(per_seq * 2 / 0.25)) == 2
    assert default_parallel(2048, per_token, memory=1024) == 1
    assert default_parallel(8192, per_token * 64, memory=8 * 1024**3) == 1


def test_kv_bytes_from_the_embedded_header(embedded_path):
    from charlite.gguf import check_gguf

    assert gguf_kv_bytes_per_token(check_gguf(embedded_path).kv) == 30 * 2 * 3 * 64 * 2
    assert gguf_kv_bytes_per_token({"general.architecture": "llama"}) is None


def test_doctor_shows_the_setting(monkeypatch, embedded_path):
    from charlite.doctor import check_parallel

    monkeypatch.setenv(ENV_PARALLEL, "5")
    row = check_parallel(embedded_path)
    assert row.status == "ok" and row.detail.startswith("5 (CHARLITE_PARALLEL")
    monkeypatch.setenv(ENV_PARALLEL, "many")
    assert check_parallel(embedded_path).status == "warn"
    monkeypatch.delenv(ENV_PARALLEL)
    assert "MiB" in check_parallel(embedded_path).detail


# -- the engine on the embedded model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def backend():  # the tests below load the embedded model: slow
    b = get_backend("embedded")
    b.batching(4)
    yield b


@pytest.mark.slow
def test_batched_text_is_identical_to_decoding_alone(backend):
    engine = backend.batching(4)
    params = [GenParams(temperature=0.0, seed=7, max_tokens=n) for _, n in QUESTIONS]
    requests = [
        BatchRequest(backend.prompt_tokens(_messages(q)), p, prefix_len=40)
        for (q, _), p in zip(QUESTIONS, params)
    ]
    steps = engine.steps
    alone = [engine.complete_many([r])[0] for r in requests]
    alone_steps = engine.steps - steps
    steps = engine.steps
    together = engine.complete_many(requests)
    together_steps = engine.steps - steps

    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.finish_reason for c in together] == [c.finish_reason for c in alone]
    assert all(c.text for c in together)
    # they finished at different times, and shared the decode steps
    assert len({c.completion_tokens for c in together}) >= 3
    assert together_steps < alone_steps * 0.6
    assert engine.busy() == 0


@pytest.mark.slow
def test_engine_matches_the_single_sequence_chat_path(backend):
    """Same sampler chain as llama-cpp-python's Llama: greedy text equals backend.complete's."""
    plain = get_backend("embedded")  # shares the loaded model; not routed through the batch
    for question, n in QUESTIONS[:3]:
        params = GenParams(temperature=0.0, seed=3, max_tokens=n)
        via_chat = plain.complete(_messages(question), params)
        via_engine = backend.submit(_messages(question), params).result()
        assert via_engine.text == via_chat.text
        assert via_engine.completion_tokens == via_chat.completion_tokens


@pytest.mark.slow
def test_grammar_sequence_stays_json_among_free_text(backend):
    schema = PERSON_SCHEMA
    free = GenParams(temperature=0.8, seed=11, max_tokens=48, repeat_penalty=1.3)
    items = [(_messages(q), free, None) for q, _ in QUESTIONS[1:4]]
    items.insert(
        1,
        (
            _messages("Introduce yourself as JSON."),
            GenParams(temperature=0.7, seed=5, max_tokens=120, repeat_penalty=1.3),
            schema,
        ),
    )
    out = backend.complete_many(items)
    constrained = out[1]
    assert constrained.finish_reason == "stop", constrained.text
    data = json.loads(constrained.text)
    assert set(data) == {"name", "born", "instruments"}
    assert isinstance(data["born"], int) and len(data["instruments"]) <= 3
    for i in (0, 2, 3):
        assert out[i].text.strip()
        with pytest.raises(json.JSONDecodeError):
            json.loads(out[i].text)


@pytest.mark.slow
def test_a_prompt_too_long_fails_alone(backend):
    long = _messages("Tell me about music. " * 500)  # over 2048 tokens
    short = GenParams(temperature=0.0, max_tokens=12)
    items = [(_messages(q), short, None) for q, _ in QUESTIONS[:3]]
    items.insert(2, (long, short, None))
    out = backend.complete_many(items)
    assert isinstance(out[2], ModelError)
    assert "longer than the model's context" in str(out[2])
    for i in (0, 1, 3):
        assert not isinstance(out[i], Exception) and out[i].text


@pytest.mark.slow
def test_closing_a_stream_frees_its_slot(backend):
    engine = backend.batching(4)
    cancelled = engine.cancelled
    long = GenParams(temperature=0.0, max_tokens=400)
    stories = [QUESTIONS[i][0] for i in (1, 4, 1, 4)]
    handles = [backend.submit(_messages(q), long.with_(seed=i)) for i, q in enumerate(stories)]
    waiting = backend.submit(_messages("Say hello."), GenParams(temperature=0.0, max_tokens=6))
    for h in handles:
        stream = iter(h)
        next(stream)
        stream.close()  # the client went away
    done = waiting.result()  # took a freed slot long before 400-token neighbours could end
    assert done.text and done.finish_reason in ("stop", "length")
    deadline = time.monotonic() + 10
    while engine.busy() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.busy() == 0
    assert [h.finish_reason for h in handles] == ["cancelled"] * 4
    assert engine.cancelled == cancelled + 4
    assert all(h.completion_tokens < 100 for h in handles)


@pytest.mark.slow
def test_stop_strings_and_adapters(backend, random_adapters):
    params = GenParams(temperature=0.0, max_tokens=40)
    free = backend.submit(_messages("Count from one to ten in words."), params).result()
    assert len(free.text) > 6
    stop = free.text[3:6]
    cut = backend.submit(_messages("Count from one to ten in words."), params.with_(stop=(stop,)))
    cut = cut.result()
    assert cut.finish_reason == "stop" and cut.text == free.text[: free.text.index(stop)]

    adapted = get_backend("embedded", lora=random_adapters[0])
    adapted.enable_batching(4)
    plain_adapted = get_backend("embedded", lora=random_adapters[0])
    expect = plain_adapted.complete(_messages("Say hello."), params)
    out = adapted.complete_many([(_messages("Say hello."), params, None)] * 2)
    assert [c.text for c in out] == [expect.text] * 2
    assert backend.submit(_messages("Say hello."), params).result().text != expect.text


# -- users of the batch ----------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_answers_concurrent_clients_from_the_batch():
    import threading

    import httpx

    from charlite.serve.app import create_app
    from charlite.serve.server import serve_in_thread

    app = create_app(parallel=3)

    def body(question: str, tokens: int) -> dict:
        return {
            "model": "beethoven",
            "messages": [{"role": "user", "content": question}],
            "stream": True,
            "max_tokens": tokens,
            "temperature": 0.0,
            "charlite": {"prompted": True},
        }

    with serve_in_thread(app) as url, httpx.Client(timeout=300) as client:
        texts: dict[int, str] = {}

        def ask(i: int) -> None:
            parts = []
            with client.stream(
                "POST", f"{url}/chat/completions", json=body(QUESTIONS[i][0], 12)
            ) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        chunk = json.loads(line[6:])
                        for choice in chunk.get("choices") or []:
                            parts.append(choice["delta"].get("content") or "")
            texts[i] = "".join(parts)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(texts[i].strip() for i in range(3))
        (backend,) = app.state.models._backends.values()
        engine = backend.batching()
        assert engine.parallel == 3 and engine.busy() == 0
        # the same question alone streams the same greedy text as among the others
        among_others = texts[1]
        ask(1)
        assert texts[1] == among_others
