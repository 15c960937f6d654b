"""What a dataset holds: records per stage, turns, words, thinking share, coverage, failures."""

from __future__ import annotations

import statistics
from typing import Any

from charlite.experience.dataset import Dataset
from charlite.knowledge import coverage as knowledge_coverage
from charlite.profile import Profile


def _turn_figures(who: str, exps: list, prot: list) -> tuple[dict, dict, int]:
    """(words per stage, the character's thinking/speaking turns, other turns)."""
    thinking = speaking = others = 0
    words = {"experiences": 0, "protective": 0}
    for stage, records in (("experiences", exps), ("protective", prot)):
        for e in records:
            for t in e.dialogue:
                words[stage] += len(t.content.split())
                if t.role != who:
                    others += 1
                elif t.action == "thinking":
                    thinking += 1
                else:
                    speaking += 1
    mine = thinking + speaking
    character_turns = {
        "thinking": thinking,
        "speaking": speaking,
        "thinking_share": round(thinking / mine, 3) if mine else 0,
        "speaking_share": round(speaking / mine, 3) if mine else 0,
    }
    return {**words, "total": sum(words.values())}, character_turns, others


def _coverage(profile: Profile, scenes: list, exps: list, prot: list) -> dict[str, Any]:
    """Paragraphs with scenes or experiences of their own, and facts the records state."""
    coverage = []
    for i, para in enumerate(profile.paragraphs):
        n_scenes = sum(1 for s in scenes if s.paragraph_id == i)
        n_exps = sum(1 for e in exps if e.paragraph_id == i)
        coverage.append(
            {"paragraph": i, "scenes": n_scenes, "experiences": n_exps, "text": para.text[:60]}
        )
    covered = sum(1 for c in coverage if c["scenes"] or c["experiences"])
    facts = knowledge_coverage(profile, exps + prot)
    return {
        "paragraphs": len(profile.paragraphs),
        "covered": covered,
        "per_paragraph": coverage,
        "facts": facts["facts"],
        "facts_covered": facts["facts_covered"],
        "per_fact": facts["per_fact"],
    }


def dataset_stats(profile: Profile, dataset: Dataset) -> dict[str, Any]:
    """Figures for ``charlite data stats`` (a plain dict, ready for JSON)."""
    dataset.require()
    manifest = dataset.read_manifest() or {}
    scenes = dataset.scenes()
    exps = dataset.experiences("experiences")
    prot = dataset.experiences("protective")
    turns = [len(e.dialogue) for e in exps + prot]
    words, character_turns, others = _turn_figures(profile.short_name, exps, prot)
    coverage = _coverage(profile, scenes, exps, prot)
    return {
        "character": profile.slug,
        "dataset": dataset.name,
        "path": str(dataset.path),
        "status": manifest.get("status"),
        "teacher": manifest.get("teacher"),
        "prompt_version": manifest.get("prompt_version"),
        "records": {
            "scenes": len(scenes),
            "experiences": len(exps),
            "protective": len(prot),
        },
        "turns_per_experience": {
            "mean": round(statistics.fmean(turns), 2) if turns else 0,
            "min": min(turns, default=0),
            "max": max(turns, default=0),
        },
        "words": words,
        "character_turns": character_turns,
        "other_turns": others,
        "coverage": coverage,
        "failures": dataset.failure_counts(),
        "sources": [
            {"file": s.get("file"), "records": s.get("records"), "skipped": s.get("skipped")}
            for s in manifest.get("sources", [])
        ],
    }
