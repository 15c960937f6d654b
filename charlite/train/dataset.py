"""Reading a character's dataset for training: experiences and protective experiences.

``characters/SLUG/data/DATASET/{experiences,protective}.jsonl`` hold
:class:`~charlite.experience.schemas.Experience` records. Records that cannot train (no line
by the character, too short, others "thinking") are skipped and counted; a dataset with none
left, or one written for another character, is refused with one clear line.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from charlite.errors import DataError, NotFoundError
from charlite.experience.schemas import Experience
from charlite.files import read_json, read_jsonl
from charlite.home import CharacterPaths, choices_hint
from charlite.profile import Profile

TRAIN_FILES = ("experiences.jsonl", "protective.jsonl")
MIN_TURNS = 2


@dataclass
class TrainingData:
    name: str
    path: Path
    hash: str
    records: list[Experience]
    counts: Counter = field(default_factory=Counter)
    """experience / protective records kept."""
    skipped: Counter = field(default_factory=Counter)
    """Records left out, by reason."""

    def summary(self) -> dict:
        return {
            "name": self.name,
            "hash": self.hash,
            "experiences": self.counts["experience"],
            "protective": self.counts["protective"],
            "skipped": dict(self.skipped),
        }


def dataset_hash(folder: Path) -> str:
    """sha256 of the training files (names and bytes), first 16 hex digits."""
    digest = hashlib.sha256()
    for name in TRAIN_FILES:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()[:16]


def _manifest_character(folder: Path) -> str | None:
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except DataError:
        return None
    if not isinstance(data, dict):
        return None
    who = data.get("character", data.get("slug"))
    if isinstance(who, dict):
        who = who.get("slug")
    return who if isinstance(who, str) else None


def load_training_data(profile: Profile, dataset: str = "default") -> TrainingData:
    paths = CharacterPaths.of(profile.slug)
    folder = paths.dataset(dataset)
    if not folder.is_dir():
        hint = choices_hint(
            paths.datasets(),
            f"datasets of {profile.slug}",
            f"make one with 'charlite generate {profile.slug}' or 'charlite data import {profile.slug} FILE'",
        )
        raise NotFoundError(f"{profile.slug} has no dataset '{dataset}'", hint=hint)

    owner = _manifest_character(folder)
    if owner and owner != profile.slug:
        raise DataError(
            f"dataset '{dataset}' in {profile.slug}'s folder was made for '{owner}'",
            hint=f"train '{owner}' with it, or pick another with --dataset",
        )

    records: list[Experience] = []
    skipped: Counter = Counter()
    counts: Counter = Counter()
    raw_total = 0
    for name in TRAIN_FILES:
        kind = "protective" if name.startswith("protective") else "experience"
        for raw in read_jsonl(folder / name):
            raw_total += 1
            try:
                record = Experience.model_validate({"kind": kind, **raw})
            except ValidationError:
                skipped["invalid"] += 1
                continue
            problems = record.problems(profile.short_name, min_turns=MIN_TURNS)
            if problems:
                skipped[problems[0]] += 1
                continue
            records.append(record)
            counts[record.kind] += 1

    if raw_total == 0:
        raise DataError(
            f"dataset '{dataset}' of {profile.slug} is empty (no experiences in {folder})",
            hint=f"run 'charlite generate {profile.slug}' or 'charlite data import {profile.slug} FILE'",
        )
    if not records:
        if (
            skipped["character_absent"]
            and skipped["character_absent"] >= raw_total - skipped["invalid"]
        ):
            raise DataError(
                f"dataset '{dataset}' has no lines spoken by {profile.short_name}; "
                "it looks like a dataset for another character",
                hint=f"check that its dialogues use the speaker name '{profile.short_name}'",
            )
        reasons = ", ".join(f"{k}: {v}" for k, v in skipped.most_common())
        raise DataError(
            f"no record of dataset '{dataset}' can be trained on ({reasons})",
            hint="run 'charlite data stats' to inspect it",
        )
    return TrainingData(dataset, folder, dataset_hash(folder), records, counts, skipped)
