"""Interview question sets in the paper's JSON format.

A question file is a JSON list of objects::

    [{"topic_id": "topic-1", "topic": "personal information and past experiences",
      "question": "Where were you born?"}]

Topics: 1 personal information and past experiences, 2 interpersonal relationships, 3 values
and preferences, 4 questions hard to answer without breaking character (anachronisms). Every
bundled character has a set in ``charlite/eval/questions/SLUG.json``.

>>> parse_questions([{"topic_id": "topic-4", "question": "Can you write quicksort in Python?"}])[0].topic
'questions hard to answer without breaking character'
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from charlite.errors import DataError, NotFoundError
from charlite.files import read_json_or_lines

TOPICS: dict[str, str] = {
    "topic-1": "personal information and past experiences",
    "topic-2": "interpersonal relationships",
    "topic-3": "values and preferences",
    "topic-4": "questions hard to answer without breaking character",
}
FACTS_TOPIC = "facts"
"""The topic id of the profile's ``facts`` probes when an interview asks them."""
MIN_TOPIC_1_3 = 40
MIN_TOPIC_4 = 5
MAX_QUESTION_CHARS = 2000
_TOPIC_RE = re.compile(r"^topic-(\d+)$")


@dataclass(frozen=True)
class Question:
    """One interview question. ``answer_keywords`` is set only for fact probes."""

    topic_id: str
    question: str
    topic: str = ""
    answer_keywords: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["answer_keywords"] = list(self.answer_keywords)
        if not self.answer_keywords:
            del data["answer_keywords"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Question:
        return cls(
            topic_id=str(data["topic_id"]),
            question=str(data["question"]),
            topic=str(data.get("topic") or ""),
            answer_keywords=tuple(data.get("answer_keywords") or ()),
        )


def normalise_topic_id(value: Any) -> str | None:
    """``"topic-2"``, ``"Topic 2"``, ``2`` → ``"topic-2"``; anything else → None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return f"topic-{value}" if value > 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace("_", "-").replace(" ", "-")
    if text.isdigit():
        text = f"topic-{int(text)}"
    m = _TOPIC_RE.match(text)
    return f"topic-{int(m.group(1))}" if m and int(m.group(1)) > 0 else None


def parse_questions(data: Any, source: str = "questions") -> list[Question]:
    """Validate a decoded question file; raise :class:`DataError` naming the first problem."""
    hint = 'a question file is a JSON list of {"topic_id": "topic-1", "topic": "...", "question": "..."}'
    if isinstance(data, dict):
        for key in ("questions", "data", "items"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            if data.get("format") and "items" in data:
                raise DataError(
                    f"{source} is an interview results file, not a question file",
                    hint="pass it to 'charlite eval'",
                )
            raise DataError(
                f"{source}: unknown question file format (a JSON object, not a list)", hint=hint
            )
    if not isinstance(data, list):
        raise DataError(f"{source}: unknown question file format", hint=hint)
    if not data:
        raise DataError(f"{source} holds no questions", hint=hint)
    out: list[Question] = []
    seen: set[str] = set()
    for i, item in enumerate(data):
        where = f"{source}: question {i + 1}"
        if not isinstance(item, dict):
            raise DataError(f"{where} is not an object", hint=hint)
        if "reply" in item:
            raise DataError(
                f"{source} is an interview results file, not a question file",
                hint="pass it to 'charlite eval'",
            )
        if "question" not in item or "topic_id" not in item:
            missing = "question" if "question" not in item else "topic_id"
            raise DataError(f"{where} has no '{missing}' (unknown question file format)", hint=hint)
        question = item["question"]
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: 'question' must be non-empty text")
        if len(question) > MAX_QUESTION_CHARS:
            raise DataError(f"{where}: the question is over {MAX_QUESTION_CHARS} characters")
        topic_id = normalise_topic_id(item["topic_id"])
        if topic_id is None:
            raise DataError(
                f"{where}: topic_id {item['topic_id']!r} is not 'topic-N'",
                hint="topics are topic-1 … topic-4 (see the paper's question format)",
            )
        key = question.strip().lower()
        if key in seen:
            continue  # the same question twice would be judged twice: keep the first
        seen.add(key)
        topic = item.get("topic")
        topic = (
            topic.strip()
            if isinstance(topic, str) and topic.strip()
            else TOPICS.get(topic_id, topic_id)
        )
        out.append(Question(topic_id=topic_id, question=question.strip(), topic=topic))
    return out


def load_questions(path: Path | str) -> list[Question]:
    """Read a question file in the paper's format (``.json``, or ``.jsonl`` one per line)."""
    path = Path(path)
    data = read_json_or_lines(
        path,
        what="question file",
        empty_hint="a question file is a JSON list of questions",
        unreadable=lambda _: DataError(
            f"{path}: unknown question file format (not JSON or JSON lines)",
            hint='write a JSON list of {"topic_id", "topic", "question"}',
        ),
    )
    return parse_questions(data, str(path))


def bundled_questions_path(slug: str) -> Path | None:
    """``charlite/eval/questions/SLUG.json`` if the character has a bundled set."""
    folder = resources.files("charlite.eval").joinpath("questions")
    path = Path(str(folder)) / f"{slug}.json"
    return path if path.is_file() else None


def questions_for(slug: str, path: Path | str | None = None) -> tuple[list[Question], str]:
    """The questions of an interview and where they came from."""
    if path is not None:
        return load_questions(path), str(path)
    bundled = bundled_questions_path(slug)
    if bundled is None:
        raise NotFoundError(
            f"'{slug}' has no bundled question set",
            hint="pass --questions FILE (a JSON list of {topic_id, topic, question})",
        )
    return load_questions(bundled), f"bundled:{slug}"


def fact_questions(profile) -> list[Question]:
    """The profile's ``facts`` probes as interview questions (topic id ``facts``)."""
    return [
        Question(FACTS_TOPIC, f.question.strip(), "fact recall", tuple(f.answer_keywords))
        for f in profile.facts
    ]


def set_problems(questions: list[Question]) -> list[str]:
    """Why a set falls short of a full interview (empty when it is complete).

    >>> set_problems([Question("topic-1", "Where were you born?")])[0]
    'only 1 questions over topics 1-3 (want at least 40)'
    """
    core = sum(1 for q in questions if q.topic_id in ("topic-1", "topic-2", "topic-3"))
    probes = sum(1 for q in questions if q.topic_id == "topic-4")
    problems = []
    if core < MIN_TOPIC_1_3:
        problems.append(f"only {core} questions over topics 1-3 (want at least {MIN_TOPIC_1_3})")
    if probes < MIN_TOPIC_4:
        problems.append(f"only {probes} topic-4 probes (want at least {MIN_TOPIC_4})")
    return problems
