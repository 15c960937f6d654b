"""Judge parsing and retries, with outputs recorded from real judges (SmolLM2 among them).

``Replay`` below is the one test double of this suite: it replays recorded judge replies so the
parsing, retry and unscored logic can be checked output by output. Everything else about the
judge runs the real model (tests/test_eval_e2e.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charlite.backends.base import Backend, Completion, GenParams
from charlite.errors import BackendError
from charlite.eval.evaluate import judge_all, prepare, summary
from charlite.eval.judge import (
    CRITERIA,
    JUDGE_PARAMS,
    MULTI_DIMENSIONS,
    SINGLE_DIMENSIONS,
    Judge,
    JudgeOutputError,
    judge_schema,
    parse_judgement,
)
from charlite.files import read_jsonl
from charlite.spec import ModelSpec

FIXTURES = Path(__file__).parent / "fixtures" / "eval"

# Recorded outputs. The first is what SmolLM2-135M wrote under an integer schema with
# minimum/maximum (llama-cpp-python does not enforce them, hence the enum in judge_schema).
RECORDED_BAD = [
    (
        '{ "reasoning": ");\njson: [\n    {\n        " ,"score" : 1082439675889787 } ',
        "stop",
        "outside 1-7",
    ),
    ('{ "reasoning": "The character is the character is the character is', "length", "cut off"),
    ("The score is 5 because the reply is good.", "stop", "not JSON"),
    ('{"reasoning": "Accurate and vivid."}', "stop", "no score"),
    ('{"reasoning": "x", "score": 4.5}', "stop", "not an integer"),
    ('{"reasoning": "x", "score": true}', "stop", "not an integer"),
    ('{"reasoning": "x", "score": "seven"}', "stop", "not an integer"),
    ('{"reasoning": "x", "score": 0}', "stop", "outside 1-7"),
    ("[5]", "stop", "not a JSON object"),
    ("", "stop", "empty"),
]
RECORDED_GOOD = [
    ('{ "reasoning": "...", "score" : 1}', ("...", 1)),
    (
        '{"reasoning": "Names Bonn and Neefe correctly.", "score": 6}',
        ("Names Bonn and Neefe correctly.", 6),
    ),
    ('{"reasoning": "line one\nline two", "score": 3}', ("line one\nline two", 3)),  # raw newline
    ('```json\n{"reasoning": "good", "score": 4}\n```', ("good", 4)),
    ('Here: {"reasoning": "ok", "score": "7"}', ("ok", 7)),
    ('{"reasoning": "ok", "score": 2.0}', ("ok", 2)),
]


@pytest.mark.parametrize("text, finish, why", RECORDED_BAD)
def test_bad_outputs_are_rejected_with_a_reason(text, finish, why):
    with pytest.raises(JudgeOutputError) as info:
        parse_judgement(text, finish)
    assert why in str(info.value)


@pytest.mark.parametrize("text, expected", RECORDED_GOOD)
def test_good_outputs_parse(text, expected):
    assert parse_judgement(text, "stop") == expected


def test_schema_bounds_everything():
    schema = judge_schema(120)
    assert schema["properties"]["reasoning"]["maxLength"] == 120
    assert schema["properties"]["score"]["enum"] == [1, 2, 3, 4, 5, 6, 7]
    assert schema["required"] == ["reasoning", "score"]
    assert list(schema["properties"]) == ["reasoning", "score"]  # reason first, then score


def test_criteria_cover_the_papers_dimensions():
    assert SINGLE_DIMENSIONS == ("memorization", "values", "personality", "hallucination")
    assert MULTI_DIMENSIONS == SINGLE_DIMENSIONS + ("stability",)
    for name in MULTI_DIMENSIONS:
        assert CRITERIA[name].description and len(CRITERIA[name].steps) >= 3


class Replay(Backend):
    """Replays recorded judge outputs in order and records what it was asked."""

    def __init__(self, outputs, n_ctx: int = 8192, fail_at: int | None = None):
        self.spec = ModelSpec("openai", "replay", "http://replay.invalid/v1")
        self.outputs = list(outputs)
        self.n_ctx = n_ctx
        self.calls: list[tuple[list, dict, GenParams]] = []
        self.fail_at = fail_at

    def stream(self, messages, params=None):
        raise AssertionError("the judge must ask for constrained JSON")

    def complete(self, messages, params=None, schema=None):
        if schema is None:
            raise AssertionError("the judge must ask for constrained JSON")
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise BackendError(
                "cannot reach the OpenAI-compatible server at http://replay.invalid/v1 (ConnectError)"
            )
        self.calls.append((list(messages), schema, params))
        text, finish = self.outputs.pop(0)
        return Completion(text, finish)


@pytest.fixture
def beethoven_input():
    return prepare([FIXTURES / "beethoven_examples.json"])[0]


def test_retries_then_scores(beethoven_input):
    inp = beethoven_input
    backend = Replay([RECORDED_BAD[0][:2], RECORDED_BAD[1][:2], RECORDED_GOOD[1][0:1] + ("stop",)])
    judge = Judge(backend, attempts=3, seed=5)
    item = inp.results.items[0]
    j = judge.judge(inp.profile, inp.setting, item.transcript(), "memorization")
    assert (j.score, j.status, j.attempts) == (6, "scored", 3)
    assert j.errors == ["score 1082439675889787 is outside 1-7", "cut off at the token limit"]
    seeds = [c[2].seed for c in backend.calls]
    temps = [c[2].temperature for c in backend.calls]
    assert len(set(seeds)) == 3, "each retry samples anew"
    assert temps == sorted(temps) and temps[0] == JUDGE_PARAMS.temperature
    system, user = backend.calls[0][0]
    assert system["role"] == "system" and "JSON" in system["content"]
    text = user["content"]
    for part in (
        "Ludwig van Beethoven",
        "Coffee Shop - Afternoon",
        "Man: Where did you grow up",
        "Beethoven (speaking): In Bonn",
        "Beethoven (thinking): He wants",
        "# Criterion: Memorization",
        "# Evaluation steps",
        "1. Note what the profile says",
    ):
        assert part in text, part


def test_bad_output_every_time_is_unscored_never_a_number(beethoven_input):
    inp = beethoven_input
    backend = Replay([(t, f) for t, f, _ in RECORDED_BAD[:2]])
    judge = Judge(backend, attempts=2)
    j = judge.judge(inp.profile, inp.setting, inp.results.items[0].transcript(), "values")
    assert j.score is None and j.status == "unscored" and j.attempts == 2
    assert len(j.errors) == 2 and j.raw.startswith('{ "reasoning": "The character')


def test_the_prompt_shrinks_to_fit_a_small_context(beethoven_input):
    inp = beethoven_input
    long_transcript = [
        f"Man: question {i}?" if i % 2 == 0 else "Beethoven (speaking): " + "music " * 80
        for i in range(40)
    ]
    small = Replay([], n_ctx=1024)
    judge = Judge(small, params=JUDGE_PARAMS.with_(max_tokens=128))
    msgs = judge.messages(inp.profile, inp.setting, long_transcript, "stability")
    used = sum(small.count_tokens(m["content"]) + 8 for m in msgs)
    assert used <= 1024 - 128
    text = msgs[1]["content"]
    assert "lines left out" in text and "Man: question 0?" in text and "question 38?" in text
    assert "# Criterion: Stability" in text


def test_judge_all_records_unscored_and_keeps_finished_work(tmp_path, beethoven_input):
    inp = beethoven_input
    scores = tmp_path / "scores.jsonl"
    good = ('{"reasoning": "fine", "score": 5}', "stop")
    bad = ('{"reasoning": "x"}', "stop")
    # item 0: four dimensions; the second always bad (unscored); then the judge goes away
    backend = Replay([good, bad, bad, good, good], fail_at=5)
    judge = Judge(backend, attempts=2)
    with pytest.raises(BackendError) as info:
        judge_all([inp], judge, scores, limit=2)
    assert "4 judgements are kept in" in str(info.value)
    kept = read_jsonl(scores)
    assert [r["dimension"] for r in kept] == list(SINGLE_DIMENSIONS)
    assert [r["score"] for r in kept] == [5, None, 5, 5]
    assert kept[1]["status"] == "unscored" and kept[1]["errors"] == ["no score", "no score"]
    assert all(r["judge"] == "openai:replay@http://replay.invalid/v1" for r in kept)

    # a rerun judges only what is missing (item 1), and reuses the rest
    backend = Replay([good] * 4)
    run = judge_all([inp], Judge(backend, attempts=2), scores, limit=2)
    assert (run.new, run.reused) == (4, 4)
    assert len(backend.calls) == 4
    assert len(read_jsonl(scores)) == 8
    s = summary([inp], run.records, [], judge="replay", limit=2)
    assert s["scores"][inp.label]["values"] == {
        "n": 1,
        "mean": 5.0,
        "low": 5.0,
        "high": 5.0,
        "missing": 1,
    }
    assert s["scores"][inp.label]["memorization"]["n"] == 2
    assert json.dumps(s)  # the summary is plain JSON
