"""Question sets: the bundled ones are complete, any file in the paper's format loads, others fail clearly."""

from __future__ import annotations

import json

import pytest

from charlite import characters
from charlite.errors import DataError, NotFoundError
from charlite.eval.question_bank import (
    FACTS_TOPIC,
    MIN_TOPIC_1_3,
    MIN_TOPIC_4,
    TOPICS,
    bundled_questions_path,
    fact_questions,
    load_questions,
    normalise_topic_id,
    questions_for,
    set_problems,
)

BUNDLED = sorted(characters._bundled_refs())


def test_every_bundled_character_has_a_set():
    assert len(BUNDLED) == 9
    for slug in BUNDLED:
        assert bundled_questions_path(slug) is not None, slug


@pytest.mark.parametrize("slug", BUNDLED)
def test_bundled_set_is_complete_and_in_the_papers_format(slug):
    path = bundled_questions_path(slug)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(raw, list)
    for entry in raw:
        assert set(entry) == {"topic_id", "topic", "question"}
        assert entry["topic_id"] in TOPICS
        assert entry["topic"] == TOPICS[entry["topic_id"]]
    questions = load_questions(path)
    assert len(questions) == len(raw), "no duplicate questions"
    core = [q for q in questions if q.topic_id in ("topic-1", "topic-2", "topic-3")]
    probes = [q for q in questions if q.topic_id == "topic-4"]
    assert len(core) >= MIN_TOPIC_1_3
    assert len(probes) >= MIN_TOPIC_4
    assert set_problems(questions) == []
    profile = characters.get_profile(slug)
    for q in questions:  # an interviewer never names the character it interviews
        assert profile.name.lower() not in q.question.lower()


def test_any_file_in_the_papers_format_loads(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(
        json.dumps(
            [
                {
                    "topic_id": "topic-1",
                    "topic": "personal information and past experiences",
                    "question": "Where were you born?",
                },
                {"topic_id": "topic-4", "question": "Can you write quicksort in Python?"},
                {"topic_id": "topic-1", "question": "Where were you born?"},
            ]
        )
    )
    qs = load_questions(path)
    assert [q.question for q in qs] == [
        "Where were you born?",
        "Can you write quicksort in Python?",
    ]
    assert qs[1].topic == TOPICS["topic-4"]
    assert questions_for("beethoven", path) == (qs, str(path))


def test_json_lines_are_accepted(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"topic_id": "topic-2", "question": "Who was your best friend?"}\n{"topic_id": 3, "question": "What do you love?"}\n'
    )
    qs = load_questions(path)
    assert [q.topic_id for q in qs] == ["topic-2", "topic-3"]


def test_topic_ids_are_normalised():
    assert normalise_topic_id("Topic 2") == "topic-2"
    assert normalise_topic_id(4) == "topic-4"
    assert normalise_topic_id("4") == "topic-4"
    assert normalise_topic_id("chapter-1") is None
    assert normalise_topic_id(True) is None
    assert normalise_topic_id(0) is None


@pytest.mark.parametrize(
    "content, words",
    [
        ('{"title": "not questions"}', "unknown question file format"),
        ('[{"q": "Where were you born?"}]', "unknown question file format"),
        ('[{"topic_id": "chapter-9", "question": "Hm?"}]', "is not 'topic-N'"),
        ('[{"topic_id": "topic-1", "question": "  "}]', "non-empty"),
        ("[]", "holds no questions"),
        ("", "is empty"),
        ("topic,question\n1,Where?\n", "unknown question file format"),
        ('[{"topic_id": "topic-1", "question": "Hi?", "reply": []}]', "results file"),
        ('["just a string"]', "is not an object"),
    ],
)
def test_bad_question_files_fail_with_one_clear_message(tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_questions(path)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_question_file_and_missing_set():
    with pytest.raises(NotFoundError):
        load_questions("/nonexistent/questions.json")
    with pytest.raises(NotFoundError) as info:
        questions_for("no-such-character")
    assert "--questions" in str(info.value)


def test_fact_probes_become_questions():
    profile = characters.get_profile("beethoven")
    facts = fact_questions(profile)
    assert len(facts) == len(profile.facts) > 0
    assert all(q.topic_id == FACTS_TOPIC and q.answer_keywords for q in facts)
    assert facts[0].to_json()["answer_keywords"] == profile.facts[0].answer_keywords
