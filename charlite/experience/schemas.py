"""Records of a character's dataset: scenes, experiences and protective experiences.

Stored one JSON object per line in ``characters/SLUG/data/DATASET/``:
``scenes.jsonl`` (:class:`SceneRecord`), ``experiences.jsonl`` and ``protective.jsonl``
(:class:`Experience`). Training, export and ``data export`` read them through
:meth:`Experience.turns` and :meth:`Experience.scene`, i.e. through the role-play format.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from charlite import roleplay
from charlite.profile import Scene

DATASET_FORMAT = 1
STAGE_FILES = {"scenes": "scenes.jsonl", "experiences": "experiences.jsonl", "protective": "protective.jsonl"}


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
