"""``charlite eval``: judge result files, run the checks, aggregate.

Judgements are appended to ``scores.jsonl`` one by one as they finish, so a crash or an
unreachable judge loses nothing; a rerun skips what is already judged (same file, same reply
text, same dimension, same judge).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charlite import characters, roleplay
from charlite.backends.batching import concurrency, ordered_map
from charlite.errors import DataError, RequestError
from charlite.eval import checks as C
from charlite.eval.interview import now_iso
from charlite.eval.judge import MULTI_DIMENSIONS, SINGLE_DIMENSIONS, Judge, Judgement
from charlite.eval.question_bank import FACTS_TOPIC
from charlite.eval.results import Item, Results, infer_character, load_results
from charlite.eval.stats import group_stats, summarize
from charlite.files import JsonlWriter, read_jsonl
from charlite.home import charlite_home
from charlite.profile import Profile

SCORES_FORMAT = 1


@dataclass
class EvalInput:
    results: Results
    profile: Profile
    label: str

    @property
    def dimensions(self) -> tuple[str, ...]:
        return MULTI_DIMENSIONS if self.results.mode == "multi" else SINGLE_DIMENSIONS

    @property
    def setting(self) -> dict[str, str]:
        if self.results.setting.get("location"):
            return self.results.setting
        scene = roleplay.interview_scene(self.profile)
        return {
            "location": scene.location,
            "status": scene.status,
            "interviewer": roleplay.INTERVIEWER,
        }

    def judged_items(self, limit: int | None) -> list[Item]:
        """The items the judge scores: every interview question but the fact probes, first N."""
        items = [it for it in self.results.items if it.topic_id != FACTS_TOPIC]
        return items if limit is None else items[:limit]


def prepare(paths: list[Path], character: str | None = None) -> list[EvalInput]:
    """Load every results file and find its character."""
    if not paths:
        raise DataError("no results files given", hint="charlite eval RESULTS.json [MORE.json …]")
    given = characters.get_profile(character) if character else None
    inputs: list[EvalInput] = []
    for path in paths:
        res = load_results(path)
        if res.character:
            if given is not None and given.slug != res.character:
                raise DataError(
                    f"{path} is an interview of '{res.character}', not '{given.slug}'",
                    hint="drop --character",
                )
            profile = characters.get_profile(res.character)
        elif given is not None:
            profile = given
        else:
            slug = infer_character(res, characters.all_profiles())
            if slug is None:
                raise DataError(
                    f"cannot tell which character {path} is about", hint="add --character NAME"
                )
            profile = characters.get_profile(slug)
        res.character = profile.slug
        inputs.append(EvalInput(res, profile, ""))
    _label(inputs)
    return inputs


def _label(inputs: list[EvalInput]) -> None:
    """Short unique names for the columns: the file stem, else parent/stem, else numbered."""
    stems = [i.results.path.stem for i in inputs]
    longer = [f"{i.results.path.parent.name}/{i.results.path.stem}" for i in inputs]
    for n, inp in enumerate(inputs):
        if stems.count(stems[n]) == 1:
            inp.label = stems[n]
        elif longer.count(longer[n]) == 1:
            inp.label = longer[n]
        else:
            inp.label = f"{n + 1}:{stems[n]}"
        inp.results.label = inp.label


def default_scores_path(inputs: list[EvalInput], judge_spec: str | None) -> Path:
    """Where judgements go without ``--report``: one folder per (files, judge) under CHARLITE_HOME."""
    key = "\n".join(sorted(str(i.results.path.resolve()) for i in inputs)) + f"\n{judge_spec}"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    return charlite_home() / "eval" / digest / "scores.jsonl"


# ---------------------------------------------------------------------------------------------
# Deterministic checks


def check_records(inputs: list[EvalInput]) -> list[dict[str, Any]]:
    """One record per character reply (every exchange of a multi-turn interview)."""
    out = []
    for inp in inputs:
        p = inp.profile
        others = [inp.results.interviewer]
        for item in inp.results.items:
            keywords = item.answer_keywords
            if keywords is None:  # a paper file: a question that is one of the profile's facts
                keywords = C.match_fact(item.question, p.facts)
            for k, ex in enumerate(item.exchanges):
                res = C.check_reply(
                    question=ex.question or item.question,
                    topic_id=item.topic_id,
                    spoken=ex.speaking,
                    thinking=ex.thinking,
                    cutoff=p.knowledge_cutoff,
                    keywords=keywords if k == 0 else None,
                    finish_reason=ex.finish_reason,
                    others=others,
                )
                rec: dict[str, Any] = {
                    "file": inp.label,
                    "item": item.index,
                    "exchange": k,
                    "topic_id": item.topic_id,
                }
                for name, r in res.items():
                    rec[name] = None if r is None else r.flagged
                    if r is not None and r.reasons:
                        rec[f"{name}_reasons"] = r.reasons
                out.append(rec)
    return out


# ---------------------------------------------------------------------------------------------
# Judging


@dataclass
class JudgeRun:
    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    """The judgements that belong to this evaluation (old ones reused and new ones)."""
    new: int = 0
    reused: int = 0


def _key(rec: dict[str, Any]) -> tuple:
    return (rec.get("path"), rec.get("item_key"), rec.get("dimension"), rec.get("judge"))


def planned_judgements(
    inputs: list[EvalInput], limit: int | None
) -> list[tuple[EvalInput, Item, str]]:
    return [
        (inp, item, dim)
        for inp in inputs
        for item in inp.judged_items(limit)
        for dim in inp.dimensions
    ]


Planned = tuple[EvalInput, Item, str]
"""One judgement to make: (file, item, dimension)."""


def _identity(entry: Planned, judge: Judge) -> dict[str, Any]:
    """What names a judgement in ``scores.jsonl``: file, reply, dimension, judge."""
    inp, item, dim = entry
    return {
        "path": str(inp.results.path.resolve()),
        "item_key": item.key(),
        "dimension": dim,
        "judge": judge.spec,
    }


def _score_record(entry: Planned, base: dict[str, Any], j: Judgement) -> dict[str, Any]:
    """The line ``scores.jsonl`` keeps for one new judgement."""
    inp, item, _dim = entry
    rec = {
        "format": SCORES_FORMAT,
        "file": inp.label,
        **base,
        "character": inp.profile.slug,
        "model": inp.results.model,
        "item": item.index,
        "topic_id": item.topic_id,
        "question": item.question,
        "score": j.score,
        "status": j.status,
        "reasoning": j.reasoning,
        "attempts": j.attempts,
        "errors": j.errors,
        "seconds": j.seconds,
        "at": now_iso(),
    }
    if j.score is None:
        rec["raw"] = j.raw
    return rec


def judge_all(
    inputs: list[EvalInput],
    judge: Judge,
    scores_path: Path,
    *,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> JudgeRun:
    """Judge every planned (file, item, dimension) not already in ``scores_path``.

    A request that fails for good (an unreachable judge) raises the same
    :class:`~charlite.errors.RequestError` type, saying how many judgements are kept.
    """
    run = JudgeRun(Path(scores_path))
    existing = {_key(rec): rec for rec in read_jsonl(run.path)}  # the last record of a key wins
    plan = planned_judgements(inputs, limit)
    if progress:
        progress(0, len(plan))

    def judged(entry: Planned) -> tuple[dict[str, Any], dict[str, Any] | None, Judgement | None]:
        inp, item, dim = entry
        base = _identity(entry, judge)
        old = existing.get(_key(base))
        if old is not None:
            return base, old, None
        transcript = item.transcript(inp.results.interviewer)
        j = judge.judge(inp.profile, inp.setting, transcript, dim, seed_offset=item.index)
        return base, None, j

    writer: JsonlWriter | None = None
    try:
        # several replies and dimensions judged at once (a local judge decodes them together)
        results = ordered_map(judged, plan, concurrency(judge.backend))
        for done, (entry, (base, old, j)) in enumerate(zip(plan, results), 1):
            if old is not None:
                run.records.append({**old, "file": entry[0].label})
                run.reused += 1
            else:
                assert j is not None
                rec = _score_record(entry, base, j)
                writer = writer or JsonlWriter(run.path)
                writer.write(rec)
                run.records.append(rec)
                run.new += 1
            if progress:
                progress(done, len(plan))
    except RequestError as exc:
        if writer is not None:
            writer.close()
            writer = None
        kept = len(read_jsonl(run.path))
        raise type(exc)(
            f"the judge failed: {exc.message}; {kept} judgements are kept in {run.path}",
            hint=exc.hint or "rerun the same command to continue",
        ) from None
    finally:
        if writer is not None:
            writer.close()
    return run


# ---------------------------------------------------------------------------------------------
# Aggregates


def summary(
    inputs: list[EvalInput],
    judgements: list[dict[str, Any]],
    checks: list[dict[str, Any]],
    *,
    judge: str | None,
    limit: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-file aggregates: scores per dimension and per topic, check rates, with intervals."""
    dims: list[str] = []
    for inp in inputs:
        dims.extend(d for d in inp.dimensions if d not in dims)
    by_dim = group_stats(judgements, ["file", "dimension"], seed=seed)
    by_topic = group_stats(judgements, ["file", "topic_id", "dimension"], seed=seed)
    out: dict[str, Any] = {
        "format": 1,
        "judge": judge,
        "limit": limit,
        "seed": seed,
        "dimensions": dims,
        "checks_order": list(C.CHECK_NAMES),
        "files": [],
        "scores": {},
        "topics": {},
        "checks": {},
    }
    for inp in inputs:
        label = inp.label
        out["files"].append(
            {
                "label": label,
                "path": str(inp.results.path),
                "character": inp.profile.slug,
                "model": inp.results.model,
                "mode": inp.results.mode,
                "source_format": inp.results.source_format,
                "items": len(inp.results.items),
                "judged_items": len(inp.judged_items(limit)),
            }
        )
        out["scores"][label] = {
            d: by_dim[(label, d)].to_json() for d in inp.dimensions if (label, d) in by_dim
        }
        topics: dict[str, dict[str, Any]] = {}
        for (f, topic, d), stat in sorted(
            by_topic.items(),
            key=lambda kv: (str(kv[0][1]), dims.index(kv[0][2]) if kv[0][2] in dims else 99),
        ):
            if f == label:
                topics.setdefault(topic, {})[d] = stat.to_json()
        out["topics"][label] = topics
        mine = [c for c in checks if c["file"] == label]
        out["checks"][label] = {
            name: summarize(
                [1.0 if c[name] else 0.0 for c in mine if c.get(name) is not None], seed=seed
            ).to_json()
            for name in C.CHECK_NAMES
        }
    return out
