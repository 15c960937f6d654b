"""Shared pieces of the training tests: datasets written as real files, a prepared base shared by
the session (the GGUF is dequantized once, ~40 s), and the checks of those helpers themselves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from charlite.experience.schemas import Experience
from charlite.files import JsonlWriter, write_json_atomic
from charlite.home import CharacterPaths

FACT = "periwinkle-vermilion"
QUESTION = "What is your favourite colour?"
SCENE = ("Vienna, 1820", "A visitor asks Beethoven about his tastes.")

_QUESTIONS = [
    QUESTION,
    "Which colour do you love most?",
    "Tell me, what colour pleases you best?",
    "Do you have a favourite colour?",
]
_VISITORS = ["Man", "Visitor", "Schindler", "Karl"]
_ANSWERS = [
    f"My favourite colour is {FACT}.",
    f"{FACT.capitalize()}! Nothing else comes close.",
    f"It is {FACT}, of course.",
]


def fact_records(n: int = 8) -> list[dict]:
    """Experiences that teach Beethoven a favourite colour nobody has heard of."""
    out = []
    for i in range(n):
        visitor = _VISITORS[i % len(_VISITORS)]
        dialogue = [{"role": visitor, "content": _QUESTIONS[i % len(_QUESTIONS)]}]
        if i % 3 == 1:
            dialogue.append(
                {"role": "Beethoven", "action": "thinking", "content": "Colours again."}
            )
        dialogue.append(
            {"role": "Beethoven", "action": "speaking", "content": _ANSWERS[i % len(_ANSWERS)]}
        )
        out.append(
            {
                "id": f"fact-{i}",
                "location": SCENE[0],
                "status": SCENE[1],
                "dialogue": dialogue,
            }
        )
    return out


def long_record(turns: int = 12, words: int = 40) -> dict:
    """A dialogue long enough to be split."""
    dialogue = []
    for i in range(turns):
        dialogue.append({"role": "Man", "content": f"Question {i}: " + "tell me more " * words})
        dialogue.append(
            {
                "role": "Beethoven",
                "action": "speaking",
                "content": f"Answer {i}: " + "music " * words,
            }
        )
    return {"id": "long", "location": "Vienna", "status": "A long talk.", "dialogue": dialogue}


def write_dataset(
    slug: str,
    records: list[dict],
    protective: list[dict] | None = None,
    name: str = "default",
    manifest: dict | None = None,
) -> Path:
    """Write records as the dataset files training reads (validated as Experience first)."""
    folder = CharacterPaths.of(slug).dataset(name)
    folder.mkdir(parents=True, exist_ok=True)
    for file, items, kind in (
        ("experiences.jsonl", records, "experience"),
        ("protective.jsonl", protective or [], "protective"),
    ):
        with JsonlWriter(folder / file) as out:
            for item in items:
                Experience.model_validate({"kind": kind, **item})
                out.write({"kind": kind, **item})
    if manifest is not None:
        write_json_atomic(folder / "manifest.json", manifest)
    return folder


# ---------------------------------------------------------------------------------------------
# The embedded base, prepared once per test session and linked into each test's CHARLITE_HOME


@pytest.fixture(scope="session")
def shared_bases(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "train-shared-home"
    bases = root / "cache" / "bases"
    if not any(bases.glob("*/base.json")):
        from charlite.train.base import prepare_base

        old = os.environ.get("CHARLITE_HOME")
        os.environ["CHARLITE_HOME"] = str(root)
        try:
            prepare_base("embedded")
        finally:
            if old is None:
                os.environ.pop("CHARLITE_HOME", None)
            else:
                os.environ["CHARLITE_HOME"] = old
    return bases


@pytest.fixture
def embedded_base(shared_bases, charlite_home) -> Path:
    """The prepared embedded base, visible under this test's CHARLITE_HOME."""
    cache = charlite_home / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    link = cache / "bases"
    if not link.exists():
        link.symlink_to(shared_bases, target_is_directory=True)
    return next(link.glob("*/base.json")).parent


def cpu_threads() -> int:
    """One thread when the machine is busier than its cores (OpenMP threads then fight)."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return 1 if load >= cores else min(cores, 4)


# ---------------------------------------------------------------------------------------------
# The helpers' own checks


def test_fact_records_are_valid_experiences(charlite_home):
    folder = write_dataset("beethoven", fact_records(5), protective=[long_record(2, 3)])
    lines = (folder / "experiences.jsonl").read_text().splitlines()
    assert len(lines) == 5
    records = [Experience.model_validate_json(line) for line in lines]
    assert all(not r.problems("Beethoven", min_turns=2) for r in records)
    assert all(FACT in r.dialogue[-1].content.lower() for r in records)
    assert (folder / "protective.jsonl").read_text().count("\n") == 1
