"""The grammar fast path (charlite.backends.batching.Sampler) on the embedded model.

The chain samples without the grammar and only its choice is checked; a rejected choice is
resampled under the grammar. With temperature 0 the text must equal the full-grammar pass
(``GRAMMAR_FAST_PATH`` off: the grammar inside the chain, llama-cpp-python's order), in the
batch engine and in the single-sequence chat path. Texts are compared with each other, never
with text fixed in advance.
"""

from __future__ import annotations

import json

import pytest
from helpers_models import PERSON_SCHEMA

import charlite.backends.batching as batching
from charlite.backends import GenParams, get_backend

SYSTEM = (
    "You are Ludwig van Beethoven, the composer, born in Bonn in 1770. You speak plainly, "
    "with passion, about music, Vienna, your deafness and your friends. Stay in character."
)
PERSON = PERSON_SCHEMA
NUMBERS = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4}
GREEDY = GenParams(temperature=0.0, seed=7, max_tokens=72)
ASK = "Introduce yourself as JSON."


def _messages(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


@pytest.fixture(scope="module")
def backend():  # loads the embedded model: slow
    b = get_backend("embedded")
    b.batching(4)
    yield b


def _json_among_free_text(backend, schema, question: str) -> tuple[list, dict]:
    free = GenParams(temperature=0.0, seed=3, max_tokens=32)
    items = [
        (_messages("Describe a thunderstorm over the sea."), free, None),
        (_messages(question), GREEDY, schema),
        (_messages("List three composers."), free, None),
        (_messages(ASK), GREEDY, PERSON),
    ]
    engine = backend.batching()
    before = (engine.grammar_tokens, engine.grammar_resampled, engine.grammar_resampled_full)
    out = backend.complete_many(items)
    after = (engine.grammar_tokens, engine.grammar_resampled, engine.grammar_resampled_full)
    counts = dict(zip(("tokens", "resampled", "full"), (a - b for a, b in zip(after, before))))
    return out, counts


@pytest.mark.slow
def test_fast_path_text_equals_the_full_grammar_pass(backend, monkeypatch):
    fast, counts = _json_among_free_text(backend, PERSON, "Tell me who you are, as JSON.")
    assert counts["tokens"] > 20  # the grammar was checked on the chain's choices
    monkeypatch.setattr(batching, "GRAMMAR_FAST_PATH", False)
    full, none = _json_among_free_text(backend, PERSON, "Tell me who you are, as JSON.")
    assert none["tokens"] == 0  # the old path: the grammar inside the chain
    assert [c.text for c in fast] == [c.text for c in full]
    assert [c.finish_reason for c in fast] == [c.finish_reason for c in full]
    for i in (1, 3):
        data = json.loads(fast[i].text)
        assert set(data) == {"name", "born", "instruments"}
    for i in (0, 2):  # the neighbours decoded free text
        with pytest.raises(json.JSONDecodeError):
            json.loads(fast[i].text)


def _schema_rejecting_the_first_choice(backend) -> dict:
    """A schema whose grammar rejects the token the model itself chooses first for :data:`ASK`
    (greedy, without a grammar): an array, or the object when the model opens an array."""
    first = backend.complete(_messages(ASK), GREEDY.with_(max_tokens=1)).text
    return PERSON if first.lstrip().startswith("[") else NUMBERS


@pytest.mark.slow
@pytest.mark.parametrize("best", [batching.BEST_CANDIDATES, 0], ids=["among-best", "whole-vocab"])
def test_a_rejected_first_choice_still_gives_valid_json(backend, monkeypatch, best):
    """The model's first choice does not open the schema's value: resampled under the grammar,
    among the best candidates or (``BEST_CANDIDATES`` 0) over the whole vocabulary; same text
    both ways."""
    schema = _schema_rejecting_the_first_choice(backend)
    monkeypatch.setattr(batching, "BEST_CANDIDATES", best)
    out, counts = _json_among_free_text(backend, schema, ASK)
    assert counts["resampled"] >= 1
    if best == 0:
        assert counts["full"] == counts["resampled"]
    assert out[1].finish_reason == "stop", out[1].text
    data = json.loads(out[1].text)
    if schema is NUMBERS:
        assert isinstance(data, list) and 2 <= len(data) <= 4
        assert all(isinstance(n, int) for n in data)
    else:
        assert set(data) == {"name", "born", "instruments"}
    monkeypatch.setattr(batching, "GRAMMAR_FAST_PATH", False)
    full, _ = _json_among_free_text(backend, schema, ASK)
    assert out[1].text == full[1].text


@pytest.mark.slow
def test_sampled_json_stays_valid_on_the_fast_path(backend):
    params = GenParams(temperature=0.8, top_p=0.95, seed=11, max_tokens=96, repeat_penalty=1.1)
    items = [(_messages(ASK), params.with_(seed=s), PERSON) for s in (1, 2)]
    items += [(_messages("Give me some numbers as JSON."), params.with_(seed=3), NUMBERS)]
    out = backend.complete_many(items)
    for c in out:
        assert c.finish_reason == "stop", c.text
        json.loads(c.text)


@pytest.mark.slow
def test_single_sequence_chat_path_matches_llama_cpp_python_grammar(monkeypatch):
    """The chat path (``Llama.create_chat_completion`` with ``response_format``) takes the fast
    path too; its greedy text equals llama-cpp-python's own grammar sampling."""
    plain = get_backend("embedded")  # not routed through the batch
    texts = {}
    for fast in (True, False):
        monkeypatch.setattr(batching, "GRAMMAR_FAST_PATH", fast)
        for schema in (PERSON, NUMBERS):
            plain.llm.reset()  # the same full prompt evaluation both times
            out = plain.complete(_messages(ASK), GREEDY, schema)
            texts[fast, json.dumps(schema)] = out.text
            json.loads(out.text)
    for schema in (PERSON, NUMBERS):
        assert texts[True, json.dumps(schema)] == texts[False, json.dumps(schema)]
