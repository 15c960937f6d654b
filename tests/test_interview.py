"""Interview building blocks: plans, context fitting, the interviewer's questions, resuming safely."""

from __future__ import annotations

import pytest

from charlite import characters, roleplay
from charlite.errors import DataError
from charlite.eval import interview as iv
from charlite.eval.question_bank import fact_questions, questions_for
from charlite.files import write_json_atomic
from charlite.spec import parse_spec
from charlite.voices import ResolvedModel


@pytest.fixture(scope="module")
def embedded():
    from charlite.backends import get_backend

    return get_backend("embedded")


@pytest.fixture
def beethoven():
    return characters.get_profile("beethoven")


def _plan(profile, limit=None, turns=0, facts=True):
    qs, source = questions_for(profile.slug)
    if facts:
        qs = qs + fact_questions(profile)
    return iv.InterviewPlan(profile, qs, source, turns=turns, limit=limit)


def test_limit_takes_the_first_questions_and_the_first_fact_probes(beethoven):
    plan = _plan(beethoven, limit=2)
    picked = [plan.questions[i] for i in plan.planned()]
    assert [q.topic_id for q in picked] == ["topic-1", "topic-1", "facts", "facts"]
    assert picked[2].question == beethoven.facts[0].question
    assert _plan(beethoven).planned() == list(range(len(plan.questions)))
    assert _plan(beethoven, turns=2, facts=False).mode == "multi"


def test_other_speakers_lines_are_cut():
    text, cut = iv.cut_other_speakers(
        "(speaking) I was born in Bonn.\nMan: And your father?\n(speaking) He sang.", ["Man"]
    )
    assert (text, cut) == ("(speaking) I was born in Bonn.", True)
    text, cut = iv.cut_other_speakers("Many a man: that is life.", ["Man"])
    assert not cut


def test_fit_turns_keeps_the_last_question_and_whole_exchanges(embedded):
    turns = []
    for i in range(30):
        turns.append(
            roleplay.Turn(roleplay.INTERVIEWER, f"Question number {i}? " + "Tell me more. " * 10)
        )
        turns.append(roleplay.Turn("Beethoven", "I think about it. " * 5, "thinking"))
        turns.append(roleplay.Turn("Beethoven", "Music, always music. " * 10, "speaking"))
    turns.append(roleplay.Turn(roleplay.INTERVIEWER, "And the last question?"))
    system = "You are Beethoven."
    fitted = iv.fit_turns(embedded, system, turns, max_tokens=200)
    assert fitted[-1].content == "And the last question?"
    assert fitted[0].action is None, "an exchange is dropped whole, from its question"
    assert len(fitted) < len(turns)
    used = embedded.count_tokens(system) + sum(embedded.count_tokens(t.content) + 8 for t in fitted)
    assert used <= embedded.n_ctx - 200
    short = turns[-4:]
    assert iv.fit_turns(embedded, system, short, 200) == short


def test_interviewer_never_names_the_character(embedded, beethoven):
    qs, _ = questions_for("beethoven")
    interviewer = iv.Interviewer(embedded, beethoven, qs)
    assert (
        interviewer.anonymise("Herr Beethoven, tell me about Ludwig van Beethoven's music?")
        == "Herr you, tell me about you music?"
    )
    assert (
        interviewer.clean('Man: "What did Beethoven love most? And why?"')
        == "What did you love most?"
    )
    assert (
        interviewer.clean("Interviewer (speaking): Who taught you?\nMore text") == "Who taught you?"
    )
    assert interviewer.clean("???\n\n") == ""
    assert all(q.topic_id != "topic-4" for q in interviewer.pool)


def test_interviewer_reasks_an_earlier_question(embedded, beethoven):
    interviewer = iv.Interviewer(embedded, beethoven, [], reask_every=2)
    exchanges = [
        {"question": "Where were you born?", "speaking": "Bonn.", "reask_of": None},
        {"question": "Who taught you?", "speaking": "Neefe.", "reask_of": None},
    ]
    nxt = interviewer.next_question(exchanges, "personal information", step=1, seed=0)
    assert nxt == {"question": "Where were you born?", "source": "reask", "reask_of": 0}
    exchanges.append({**exchanges[0], "reask_of": 0})
    exchanges.append({"question": "Your mother?", "speaking": "Gentle.", "reask_of": None})
    nxt = interviewer.next_question(exchanges, "personal information", step=3, seed=0)
    assert nxt["reask_of"] == 1, "each earlier question is re-asked once, oldest first"


def test_artifact_names_what_was_interviewed(embedded, tmp_path):
    base = ResolvedModel(parse_spec("embedded"), True, "embedded (prompted)")
    art = iv.artifact_of(base, embedded)
    assert art["kind"] == "base" and art["path"].endswith(".gguf") and art["lora"] is None
    lora = tmp_path / "beethoven-lora.gguf"
    exported = ResolvedModel(parse_spec("embedded"), False, "export run-1", lora=lora)
    assert iv.artifact_of(exported, embedded)["kind"] == "export"
    assert iv.artifact_of(exported, embedded)["lora"] == str(lora)
    ollama = ResolvedModel(
        parse_spec("ollama:charlite-beethoven"), False, "ollama:charlite-beethoven"
    )
    assert iv.artifact_of(ollama, embedded)["kind"] == "export"


def test_a_results_file_is_continued_only_for_the_same_interview(tmp_path, beethoven):
    plan = _plan(beethoven, limit=1)
    model = {"spec": "embedded", "label": "embedded (prompted)", "prompted": True, "artifact": {}}
    out = tmp_path / "r.json"
    fresh = iv.open_results(out, plan, model, None)
    assert fresh["format"] == 1 and fresh["items"] == [] and fresh["mode"] == "single"
    assert fresh["setting"]["location"] == "Coffee Shop - Afternoon"
    assert fresh["setting"]["interviewer"] == "Man"
    write_json_atomic(out, fresh)
    assert iv.open_results(out, plan, model, None)["questions"] == fresh["questions"]
    with pytest.raises(DataError, match="started with model"):
        iv.open_results(out, plan, {**model, "spec": "gguf:/x.gguf", "label": "x"}, None)
    with pytest.raises(DataError, match="different question list"):
        iv.open_results(out, _plan(beethoven, facts=False), model, None)
    with pytest.raises(DataError, match="multi interview|single interview"):
        iv.open_results(out, _plan(beethoven, turns=2), model, None)
    out.write_text("[1, 2]")
    with pytest.raises(DataError, match="not a charlite interview results file"):
        iv.open_results(out, plan, model, None)


def test_profile_interview_scene_wins(beethoven):
    beethoven.metadata["interview_scene"] = {
        "location": "A tavern",
        "status": "Beethoven drinks with a stranger.",
    }
    plan = _plan(beethoven)
    model = {"spec": "embedded", "label": "e", "prompted": True, "artifact": {}}
    data = iv.new_results(plan, model, None)
    assert data["setting"]["location"] == "A tavern"
