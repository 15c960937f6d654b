"""Knowledge where prompts are built outside ChatSession: ``charlite serve`` and multi-turn
interviews recall profile paragraphs into the newest user turn, as chat does, on the real
embedded model; the system message never carries them."""

from __future__ import annotations

import httpx
import pytest

from charlite import characters, knowledge, roleplay
from charlite.backends import GenParams
from charlite.backends.llamacpp import LlamaCppBackend
from charlite.eval import interview as iv
from charlite.eval.question_bank import Question
from charlite.spec import parse_spec
from charlite.voices import ResolvedModel

pytest.importorskip("fastapi")

from charlite.serve.app import create_app  # noqa: E402
from charlite.serve.server import serve_in_thread  # noqa: E402

HEADER = f"[{roleplay.RECALL_HEADER} "


@pytest.fixture
def beethoven():
    return characters.get_profile("beethoven")


@pytest.fixture
def sent(monkeypatch):
    """The messages of every completion the real backend is asked for."""
    calls: list[list[dict]] = []
    original = LlamaCppBackend.complete

    def complete(self, messages, params=None, schema=None):
        calls.append([dict(m) for m in messages])
        return original(self, messages, params, schema)

    monkeypatch.setattr(LlamaCppBackend, "complete", complete)
    return calls


def test_the_hook_puts_recall_before_the_newest_user_line_only(beethoven):
    resolved = ResolvedModel(parse_spec("embedded"), False, "embedded")  # trained-mode system
    system = roleplay.profile_system_message(beethoven, prompted=False)
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Visitor: Where were you born?"},
        {"role": "assistant", "content": "(speaking) In Bonn."},
        {"role": "user", "content": "Visitor: Who taught you in Bonn?"},
    ]
    before = [dict(m) for m in messages]

    def words(text: str) -> int:
        return len(text.split())

    off = [dict(m) for m in messages]
    assert not knowledge.recall_into_messages(
        beethoven, resolved, off, count_tokens=words, budget=4000, mode="off"
    )
    assert off == before  # off: the prompt of before, unchanged
    recalled = knowledge.recall_into_messages(
        beethoven, resolved, messages, count_tokens=words, budget=4000, mode="always"
    )
    assert recalled and "Neefe" in recalled[-1]  # the best paragraph last, nearest the question
    assert messages[:3] == before[:3]  # the system message and earlier turns as they were
    assert messages[3]["content"] == roleplay.with_recall(before[3]["content"], recalled)
    # the query is what was said, not the speaker's label; a context too small gets nothing
    small = [dict(m) for m in before]
    assert not knowledge.recall_into_messages(
        beethoven, resolved, small, count_tokens=words, budget=words(system) + 20, mode="always"
    )
    assert small == before


@pytest.mark.slow
def test_serve_recalls_into_the_newest_user_turn(monkeypatch, sent, beethoven):
    ask = {
        "model": "beethoven",
        "messages": [
            {"role": "user", "content": "Who taught you in Bonn?"},
            {"role": "assistant", "content": "Neefe did."},
            {"role": "user", "content": "What is the name of your only opera?"},
        ],
        "max_tokens": 6,
        "temperature": 0,
        "seed": 1,
    }
    with serve_in_thread(create_app()) as url:
        for mode in ("off", "always", "auto"):
            monkeypatch.setenv(knowledge.KNOWLEDGE_ENV, mode)
            reply = httpx.post(f"{url}/chat/completions", json=ask, timeout=600)
            assert reply.status_code == 200, reply.text
    off, always, auto = sent
    assert always[0] == off[0] == auto[0]  # the system message is byte-identical
    assert roleplay.RECALL_HEADER not in always[0]["content"]
    assert not any(HEADER in m["content"] for m in off)  # off: today's prompt
    assert always[1:-1] == off[1:-1]  # earlier turns render as they always did
    last = always[-1]["content"]
    assert last.startswith(HEADER) and last.endswith(off[-1]["content"])
    assert "Fidelio" in last or "Fidelio" in always[0]["content"]
    recalled = last[len(HEADER) : last.index("]\n")]
    in_system = [p for p in beethoven.paragraph_texts() if p.strip() in always[0]["content"]]
    assert not any(" ".join(p.split()) in recalled for p in in_system)  # nothing twice
    assert auto == always  # auto: a prompted base recalls


@pytest.mark.slow
def test_a_multi_turn_interview_recalls_for_every_question(sent, beethoven):
    from charlite.backends import get_backend

    backend = get_backend("embedded")
    question = Question("facts", "Who taught you in Bonn?", "teachers", ("Neefe",))
    params = GenParams(temperature=0.0, max_tokens=12, seed=3)
    plan = iv.InterviewPlan(beethoven, [question], "test", turns=2, params=params)
    # the third question re-asks the first (every second follow-up is a re-ask)
    interviewer = iv.Interviewer(backend, beethoven, [question], reask_every=2)
    model = {"spec": "embedded", "label": "embedded", "prompted": False, "artifact": {}}
    data, _ = iv.run_interview(
        plan,
        backend,
        iv.default_output("beethoven", 2),
        model=model,
        prompted=False,
        interviewer=interviewer,
        knowledge=True,
    )
    [item] = data["items"]
    assert [e["source"] for e in item["exchanges"]][2] == "reask"
    answers = [m for m in sent if m[0]["content"] != iv.INTERVIEWER_SYSTEM]
    assert len({m[0]["content"] for m in answers}) == 1  # one system message throughout
    assert roleplay.RECALL_HEADER not in answers[0][0]["content"]
    asked = [m for m in answers if m[-1]["role"] == "user"]  # not the continuations
    first, last = asked[0], asked[-1]
    assert first[-1]["content"].startswith(HEADER) and "Neefe" in first[-1]["content"]
    assert last[-1]["content"].startswith(HEADER) and "Neefe" in last[-1]["content"]
    # only the newest question carries recall; earlier ones are as they were asked
    assert not any(HEADER in m["content"] for m in last[1:-1])
