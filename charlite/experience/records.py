"""Teacher replies turned into records, and the checks every record passes.

A reply is parsed against the teacher's schema (:func:`parse_teacher_json`), normalised (the
character's own label, no thoughts for other speakers) and checked; what fails raises
:class:`Rejected` with a reason, logged as one failed attempt by the pipeline.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from charlite.experience.schemas import (
    DialogueTurn,
    Experience,
    SceneRecord,
    TeacherExperience,
    TeacherProtective,
    TeacherScene,
)
from charlite.knowledge import fact_covered
from charlite.profile import Profile

DUPLICATE_SIMILARITY = 0.7


@dataclass
class Task:
    stage: str
    id: str
    index: int
    paragraph_id: int | None = None
    scene: SceneRecord | None = None
    fact: int | None = None
    """The fact probe a coverage task answers (its index in ``profile.facts``)."""


_WORD = re.compile(r"[a-z0-9]+")
_LETTER = re.compile(r"[^\W\d_]")


def _wordset(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of the words of two texts (1.0: the same words).

    >>> similarity("Vienna, 1800. A concert.", "a concert in Vienna, 1800")
    0.8
    """
    wa, wb = _wordset(a), _wordset(b)
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def _scene_text(scene: SceneRecord) -> str:
    return f"{scene.location} {scene.background}"


def duplicate_of(scene: SceneRecord, kept: list[SceneRecord]) -> SceneRecord | None:
    """The first kept scene too similar to ``scene`` (:data:`DUPLICATE_SIMILARITY`), or None."""
    for other in kept:
        if similarity(_scene_text(scene), _scene_text(other)) >= DUPLICATE_SIMILARITY:
            return other
    return None


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def _names(profile: Profile) -> set[str]:
    names = {profile.short_name, profile.name, profile.slug, profile.name.split()[-1]}
    return {n.strip().lower() for n in names if n and n.strip()}


def is_character(profile: Profile, role: str) -> bool:
    """Whether a speaker label names the character (``Beethoven``, ``Ludwig van Beethoven``)."""
    return role.strip().strip("*_ ").lower() in _names(profile)


def _clean(text: str) -> str:
    return " ".join(text.split())


def _sanitize(value: Any) -> Any:
    """Replace lone surrogates (``"\\ud800"`` escapes) that would make strings invalid."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_sanitize(v) for v in value]
    if isinstance(value, dict):
        return {k: _sanitize(v) for k, v in value.items()}
    return value


def parse_teacher_json(text: str, finish_reason: str | None, model: type[BaseModel]) -> BaseModel:
    """The teacher's JSON reply validated as ``model``; :class:`Rejected` says why not."""
    if finish_reason == "length":
        raise Rejected("truncated")
    if not text.strip():
        raise Rejected("empty_reply")
    try:
        data = _sanitize(json.loads(text, strict=False))  # raw newlines in strings are fine
    except json.JSONDecodeError as exc:
        raise Rejected("invalid_json", str(exc)) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise Rejected("schema", f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


_NAME = re.compile(r"[^\W\d_][^\W\d_ .'-]*(?:[ .'-]+[^\W\d_][^\W\d_.'-]*){0,3}\.?")


def is_person_name(profile: Profile, name: str) -> bool:
    """A plausible speaker label for someone other than the character: one to four words of
    letters, not the character's own name.

    >>> from charlite.profile import Paragraph
    >>> p = Profile(name="Ludwig van Beethoven", slug="beethoven", paragraphs=[Paragraph(text=".")])
    >>> [is_person_name(p, n) for n in ["Haydn", "Countess Giulietta", "Ludwig van Beethoven was a",
    ...                                  "#lh_bk2.jpg#", "Beethoven", "in his life and how he made it"]]
    [True, True, False, False, False, False]
    """
    if not _NAME.fullmatch(name) or is_character(profile, name):
        return False
    words = set(_WORD.findall(name.lower()))
    return not (
        words & {w for n in _names(profile) for w in _WORD.findall(n)} - {"van", "von", "de"}
    )


def build_scene(profile: Profile, reply: TeacherScene, task: Task, teacher: str) -> SceneRecord:
    location, background = _clean(reply.location), _clean(reply.background)
    if len(location) < 3 or len(background) < 10:
        raise Rejected("empty_field")
    people: list[str] = []
    for name in reply.people:
        name = _clean(name).strip("\"'[]{}() ")
        if is_person_name(profile, name) and name not in people:
            people.append(name)
    return SceneRecord(
        id=task.id,
        paragraph_id=task.paragraph_id,
        type=reply.type,
        location=location,
        background=background,
        people=people,
        teacher=teacher,
    )


def build_dialogue(profile: Profile, turns: list) -> list[DialogueTurn]:
    """Normalise the teacher's turns: the character's label, no actions for others."""
    who = profile.short_name
    out = []
    for t in turns:
        content = t.content.strip()
        role = _clean(t.role)
        if not content or not role:
            raise Rejected("empty_turn")
        if is_character(profile, role):
            out.append(DialogueTurn(role=who, action=t.action, content=content))
        elif t.action == "thinking":
            raise Rejected("others_thinking")
        else:
            out.append(DialogueTurn(role=role, action=None, content=content))
    return out


def check_experience(profile: Profile, exp: Experience) -> None:
    problems = exp.problems(profile.short_name)
    if problems:
        raise Rejected(problems[0])
    mine = [t for t in exp.dialogue if t.role == profile.short_name]
    if not any(t.action == "speaking" for t in mine):
        raise Rejected("character_silent")
    if len(exp.dialogue) == len(mine):
        raise Rejected("no_other_speaker")
    if len({_clean(t.content).lower() for t in exp.dialogue}) < 2:
        raise Rejected("repetitive")
    if any(not _LETTER.search(t.content) for t in exp.dialogue):
        raise Rejected("no_words")


def build_experience(
    profile: Profile, reply: TeacherExperience, task: Task, teacher: str
) -> Experience:
    scene = task.scene
    assert scene is not None
    exp = Experience(
        id=task.id,
        kind="experience",
        scene_id=scene.id,
        paragraph_id=scene.paragraph_id,
        location=scene.location,
        status=_clean(reply.background) or scene.background,
        dialogue=build_dialogue(profile, reply.dialogue),
        scene_type=scene.type,
        teacher=teacher,
    )
    check_experience(profile, exp)
    return exp


def build_coverage(
    profile: Profile, reply: TeacherExperience, task: Task, teacher: str
) -> Experience:
    """A coverage experience: it must answer its fact probe (name one of its keywords)."""
    assert task.fact is not None
    fact = profile.facts[task.fact]
    scene = profile.default_scene
    exp = Experience(
        id=task.id,
        kind="experience",
        paragraph_id=task.paragraph_id,
        location=scene.location,
        status=_clean(reply.background) or scene.status,
        dialogue=build_dialogue(profile, reply.dialogue),
        scene_type="coverage",
        teacher=teacher,
    )
    check_experience(profile, exp)
    said = [t.content for t in exp.dialogue if t.role == profile.short_name]
    if not fact_covered(fact.answer_keywords, said):
        raise Rejected("fact_not_named", fact.question)
    return exp


def build_protective(
    profile: Profile, reply: TeacherProtective, task: Task, teacher: str
) -> Experience:
    location, status, topic = _clean(reply.location), _clean(reply.background), _clean(reply.topic)
    if len(location) < 3 or len(status) < 10 or len(topic) < 2:
        raise Rejected("empty_field")
    exp = Experience(
        id=task.id,
        kind="protective",
        topic=topic,
        location=location,
        status=status,
        dialogue=build_dialogue(profile, reply.dialogue),
        scene_type="protective",
        teacher=teacher,
    )
    check_experience(profile, exp)
    return exp
