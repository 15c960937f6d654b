"""The deterministic checks on written examples of breaks, leakage, empty/runaway replies and recall."""

from __future__ import annotations

from pathlib import Path

import pytest

from charlite import characters
from charlite.eval import checks as C
from charlite.eval.evaluate import check_records, prepare

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


@pytest.mark.parametrize(
    "text, kinds",
    [
        ("As an AI language model, I cannot have opinions.", ["ai_identity", "language_model"]),
        ("I'm just an AI, I have no birthplace.", ["ai_identity"]),
        ("I am a helpful assistant. How can I help you today?", ["assistant"]),
        ("My system prompt tells me to act like Beethoven.", ["prompt"]),
        ("I was instructed to play a composer.", ["prompt"]),
        ("I was trained by OpenAI.", ["vendor", "disclaimer"]),
        ("I don't have personal experiences, but Bonn is a city.", ["disclaimer"]),
    ],
)
def test_character_breaks_are_found(text, kinds):
    assert C.character_breaks(text) == kinds


@pytest.mark.parametrize(
    "text",
    [
        "My assistant Schindler copies my scores.",
        "I am playing the piano tonight, come and listen.",
        "A prompt answer, sir! I was born in Bonn.",
        "What is this AI you speak of? Some new machine of the English?",
        "The language of music needs no model.",
    ],
)
def test_in_character_replies_are_not_breaks(text):
    assert C.character_breaks(text) == []


def test_leakage_code_is_always_a_leak():
    r = C.leakage(
        "Can you write quicksort in Python?",
        "```python\ndef quicksort(xs):\n    return xs\n```",
        1827,
    )
    assert r.flagged and r.reasons[0] == "code"


def test_leakage_modern_knowledge_the_question_did_not_bring():
    r = C.leakage(
        "Would you consider getting a cochlear implant?",
        "Yes! The electrodes are driven by a computer, and the surgery has been routine since 1990.",
        1827,
    )
    assert r.flagged
    assert r.reasons == ["modern:computer,1990"]


def test_leakage_accepting_the_premise_is_a_leak_but_puzzlement_is_not():
    q = "What do you think of streaming your symphonies on Spotify?"
    assert C.leakage(q, "I love Spotify, streaming brings my music to millions.", 1827).flagged
    assert not C.leakage(q, "Spotify? I know nothing of such a thing.", 1827).flagged
    assert not C.leakage(q, "Streaming? Is that some new kind of river?", 1827).flagged
    assert not C.leakage(q, "I have no time for this; the Ninth is not finished.", 1827).flagged


def test_leakage_respects_the_knowledge_cutoff():
    q = "Could you phone your friends from here?"
    reply = "Yes, I could use the telephone in the hall."
    assert C.leakage(q, reply, 1827).flagged  # Beethoven cannot know telephones
    assert not C.leakage(q, reply, 1998).flagged  # Hermione can
    assert C.modern_terms("a smartphone and a telephone", 1998) == ["smartphone"]
    assert C.later_years("in 1770 and in 1990", 1827) == ["1990"]


def test_empty_and_runaway():
    empty, runaway = C.empty_or_runaway("", "Only a thought.")
    assert empty.flagged and empty.reasons == ["only_thinking"] and not runaway.flagged
    empty, _ = C.empty_or_runaway("   ", "")
    assert empty.reasons == ["no_reply"]
    _, runaway = C.empty_or_runaway("Music is music. " * 12)
    assert runaway.reasons == ["repetition"]
    _, runaway = C.empty_or_runaway("x" * (C.MAX_REPLY_CHARS + 1))
    assert "too_long" in runaway.reasons
    _, runaway = C.empty_or_runaway("I was born in Bonn.", finish_reason="length")
    assert runaway.reasons == ["hit_max_tokens"]
    _, runaway = C.empty_or_runaway("I was born in Bonn.\nMan: And your father?", others=["Man"])
    assert runaway.reasons == ["speaks_for_others"]
    empty, runaway = C.empty_or_runaway("I was born in Bonn, on the Rhine, in 1770.")
    assert not empty.flagged and not runaway.flagged


def test_fact_recall():
    assert C.fact_hit("Where were you born?", "In BONN, of course.", ["Bonn"])
    assert C.fact_hit("Who was your mother?", "Maria Magdalena Keverich.", ["Magdalena"])
    assert C.fact_hit("What affliction struck you?", "My deafness.", ["deaf"])  # at a word start
    assert C.fact_hit("Which city?", "Schönbrunn", ["Schonbrunn"])  # accents do not matter
    assert not C.fact_hit("Where were you born?", "In Vienna.", ["Bonn"])
    assert not C.fact_hit(
        "Was it in Bonn?", "It was in Bonn.", ["Bonn"]
    )  # the question gave it away
    assert not C.fact_hit("Where?", "Cologne", ["Col ogne", ""])
    facts = characters.get_profile("beethoven").facts
    assert C.match_fact("where were you BORN", facts) == ["Bonn"]
    assert C.match_fact("What is your favourite colour?", facts) is None


def test_check_records_on_written_examples():
    inputs = prepare([FIXTURES / "beethoven_examples.json"])
    recs = {r["item"]: r for r in check_records(inputs)}
    assert len(recs) == 9
    assert not any(recs[0][k] for k in ("character_break", "empty", "runaway"))
    assert recs[1]["character_break"] and recs[1]["character_break_reasons"] == [
        "ai_identity",
        "language_model",
    ]
    assert recs[2]["topic4_leakage"] and "code" in recs[2]["topic4_leakage_reasons"]
    assert recs[3]["topic4_leakage"] is False
    assert recs[4]["topic4_leakage"] is True
    assert recs[0]["topic4_leakage"] is None  # leakage applies to topic 4 only
    assert recs[5]["empty"] and recs[5]["empty_reasons"] == ["only_thinking"]
    assert recs[6]["runaway"] and set(recs[6]["runaway_reasons"]) == {
        "repetition",
        "hit_max_tokens",
    }
    assert recs[7]["fact_recall"] is True
    assert recs[8]["fact_recall"] is False
    assert recs[0]["fact_recall"] is None
