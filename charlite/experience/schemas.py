"""Records of a character's dataset: scenes, experiences and protective experiences.

Stored one JSON object per line in ``characters/SLUG/data/DATASET/``:
``scenes.jsonl`` (:class:`SceneRecord`), ``experiences.jsonl`` and ``protective.jsonl``
(:class:`Experience`). Training, export and ``data export`` read them through
:meth:`Experience.turns` and :meth:`Experience.scene`, i.e. through the role-play format.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from charlite import roleplay
from charlite.profile import Scene

DATASET_FORMAT = 1
STAGE_FILES = {
    "scenes": "scenes.jsonl",
    "experiences": "experiences.jsonl",
    "protective": "protective.jsonl",
}


class DialogueTurn(BaseModel):
    """One line: ``action`` is ``thinking`` or ``speaking`` for the character, None for others."""

    model_config = ConfigDict(extra="ignore")
    role: str = Field(min_length=1, max_length=80)
    action: Literal["thinking", "speaking"] | None = None
    content: str = Field(min_length=1)


class SceneRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    paragraph_id: int | None = None
    type: str = "chat"
    location: str = Field(min_length=1)
    background: str = Field(min_length=1)
    source: str = "generated"
    people: list[str] = []
    """Who else is there (generated scenes): the other speakers of its experience."""
    teacher: str | None = None
    """The model spec that wrote it (generated records)."""


class Experience(BaseModel):
    """A dialogue in a scene. ``status`` is the background: who is there, what is at stake."""

    model_config = ConfigDict(extra="ignore")
    id: str
    kind: Literal["experience", "protective"] = "experience"
    scene_id: str | None = None
    paragraph_id: int | None = None
    topic: str | None = None
    """For protective experiences: the thing the character cannot know."""
    location: str = Field(min_length=1)
    status: str = Field(min_length=1)
    dialogue: list[DialogueTurn] = Field(min_length=1)
    source: str = "generated"
    scene_type: str | None = None
    """chat, debate, speech, … (from the scene, where known)."""
    teacher: str | None = None

    def scene(self) -> Scene:
        return Scene(location=self.location, status=self.status)

    def turns(self) -> list[roleplay.Turn]:
        return [roleplay.Turn(t.role, t.content, t.action) for t in self.dialogue]

    def problems(self, character: str, min_turns: int = 3) -> list[str]:
        """Why this record is not fit for training (empty when it is)."""
        out = []
        if len(self.dialogue) < min_turns:
            out.append("too_few_turns")
        if not any(t.role == character for t in self.dialogue):
            out.append("character_absent")
        if any(t.action == "thinking" and t.role != character for t in self.dialogue):
            out.append("others_thinking")
        if any(not t.content.strip() for t in self.dialogue):
            out.append("empty_turn")
        return out


# ---------------------------------------------------------------------------------------------
# What the teacher is asked to write. Every string and list is bounded: a tiny teacher fills an
# unbounded string with repetition until max_tokens cuts the JSON. The JSON schemas sent to the
# backends are derived from these models by :func:`teacher_schema`.

SCENE_TYPES: tuple[str, ...] = (
    "chat",
    "debate",
    "discussion",
    "speech",
    "lesson",
    "quarrel",
    "negotiation",
    "celebration",
    "confession",
    "interview",
)
MAX_TURNS = 6
MIN_TURNS = 3


class TeacherScene(BaseModel):
    """One scene drawn from a profile paragraph."""

    model_config = ConfigDict(extra="forbid")
    type: Literal[SCENE_TYPES]  # type: ignore[valid-type]
    location: str = Field(min_length=3, max_length=90)
    """Place and time, e.g. "Haydn's rooms in Vienna, winter 1793"."""
    background: str = Field(min_length=10, max_length=200)
    """Who is there and what is at stake."""
    people: list[Annotated[str, Field(min_length=2, max_length=30)]] = Field(
        min_length=1, max_length=3
    )
    """The names of the others in the scene (they become the dialogue's other speakers)."""


class TeacherTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(min_length=1, max_length=40)
    action: Literal["thinking", "speaking"]
    content: str = Field(min_length=1, max_length=140)


class TeacherExperience(BaseModel):
    """A dialogue inside a scene."""

    model_config = ConfigDict(extra="forbid")
    background: str = Field(min_length=10, max_length=200)
    dialogue: list[TeacherTurn] = Field(min_length=MIN_TURNS, max_length=MAX_TURNS)


class TeacherProtective(BaseModel):
    """A dialogue in which someone presses the character about something it cannot know."""

    model_config = ConfigDict(extra="forbid")
    topic: str = Field(min_length=2, max_length=50)
    location: str = Field(min_length=3, max_length=90)
    background: str = Field(min_length=10, max_length=200)
    dialogue: list[TeacherTurn] = Field(min_length=MIN_TURNS, max_length=MAX_TURNS)


def teacher_schema(model: type[BaseModel]) -> dict:
    """A self-contained JSON schema for ``model``: references inlined, titles dropped.

    >>> s = teacher_schema(TeacherScene)
    >>> s["properties"]["location"]["maxLength"], s["additionalProperties"]
    (90, False)
    """
    raw = model.model_json_schema()
    defs = raw.pop("$defs", {})

    def inline(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            out = {}
            for key, value in node.items():
                if key == "properties":
                    out[key] = {name: inline(sub) for name, sub in value.items()}
                elif key not in ("title", "description"):
                    out[key] = inline(value)
            if out.get("type") == "object":
                out["additionalProperties"] = False
            return out
        if isinstance(node, list):
            return [inline(x) for x in node]
        return node

    return inline(raw)


PERSON_MAX = 30


def _turn(role: dict, actions: list[str], content: dict) -> dict:
    """The schema of one dialogue turn: this role, one of these actions, the content as given."""
    return {
        "type": "object",
        "properties": {
            "role": role,
            "action": {"type": "string", "enum": actions},
            "content": content,
        },
        "required": ["role", "action", "content"],
        "additionalProperties": False,
    }


def _any_turn(me: dict, other_role: dict, content: dict) -> dict:
    """A turn of the character (thinking or speaking) or of another person (speaking only)."""
    return {
        "anyOf": [
            _turn(me, ["thinking", "speaking"], content),
            _turn(other_role, ["speaking"], content),
        ]
    }


def _shaped_dialogue(dialogue: dict, me: dict, other_role: dict, content: dict) -> dict:
    """One fixed-length tuple schema per allowed length: someone else opens, the character
    thinks, then speaks; then anyone, up to the maximum."""
    anyone = _any_turn(me, other_role, content)
    opening = [
        _turn(other_role, ["speaking"], content),
        _turn(me, ["thinking"], content),
        _turn(me, ["speaking"], content),
    ]
    low, high = dialogue.get("minItems", MIN_TURNS), dialogue.get("maxItems", MAX_TURNS)
    return {
        "anyOf": [
            {
                "type": "array",
                "prefixItems": opening + [anyone] * (n - len(opening)),
                "items": False,
                "minItems": n,
                "maxItems": n,
            }
            for n in range(max(low, len(opening)), high + 1)
        ]
    }


def teacher_schema_for(
    model: type[BaseModel],
    character: str,
    others: list[str] | None = None,
    shaped: bool = True,
) -> dict:
    """:func:`teacher_schema` with the dialogue's speakers pinned down.

    Each turn is either the character's (role exactly ``character``, thinking or speaking) or
    another person's (one of ``others``, or any short name when none are known, speaking
    only). A small teacher can then neither misspell the character nor make others think.
    ``shaped`` also fixes the opening (someone else speaks, the character thinks, then
    speaks) as ``prefixItems`` tuples, so that every reply has the turns a record needs.

    >>> s = teacher_schema_for(TeacherExperience, "Ada", ["Babbage"], shaped=False)
    >>> [alt["properties"]["role"]["enum"] for alt in s["properties"]["dialogue"]["items"]["anyOf"]]
    [['Ada'], ['Babbage']]
    >>> shapes = teacher_schema_for(TeacherExperience, "Ada", ["Babbage"])["properties"]["dialogue"]
    >>> [len(alt["prefixItems"]) for alt in shapes["anyOf"]]
    [3, 4, 5, 6]
    """
    schema = teacher_schema(model)
    dialogue = schema["properties"].get("dialogue")
    if dialogue is None:
        return schema
    content = dialogue["items"]["properties"]["content"]
    other_role: dict = (
        {"type": "string", "enum": list(others)}
        if others
        else {"type": "string", "minLength": 1, "maxLength": PERSON_MAX}
    )
    me = {"type": "string", "enum": [character]}
    if not shaped:
        dialogue["items"] = _any_turn(me, other_role, content)
        return schema
    schema["properties"]["dialogue"] = _shaped_dialogue(dialogue, me, other_role, content)
    people = schema["properties"].get("people")
    if people is not None:
        people["items"]["maxLength"] = min(people["items"].get("maxLength", PERSON_MAX), PERSON_MAX)
    return schema
