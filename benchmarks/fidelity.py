"""Character fidelity: does a trained character keep what its profile knows?

For each character (default: beethoven, newton, socrates), on the embedded model:

1. **prompted**: the base model with the profile in the system message, as ``charlite chat
   --prompted --knowledge off`` (today's prompted mode);
2. **trained**: trained on ``charlite generate --teacher profile`` data (a short run), exported
   as an adapter, chatted with ``--knowledge off``;
3. **trained+knowledge**: the same export with ``--knowledge always`` (recalled paragraphs in
   each turn).

With FIDELITY_EXTRA=1, ``prompted+knowledge`` (the base with recall in the turn) is an extra
row. Characters run in parallel processes (FIDELITY_JOBS, default: one per character), each in
its own CHARLITE_HOME.

Each mode answers the profile's fact probes and the bundled topic-4 questions (things the
character cannot know), one fresh session per question, temperature 0 and a fixed seed, through
:class:`charlite.chat.ChatSession` (what ``charlite chat`` runs). The deterministic checks of
:mod:`charlite.eval.checks` count fact recall (a keyword in the reply), character breaks ("as
an AI", "language model", …) and topic-4 replies that leak code or later knowledge.

Prints a table, then ``fidelity: RATIO`` last: trained+knowledge fact recall / prompted fact
recall. Goals: ratio >= 2.0, no character break, >= 90 % of topic-4 replies without leakage.

Knobs (environment): FIDELITY_CHARACTERS (comma-separated slugs), FIDELITY_STEPS (training
steps, default 24), FIDELITY_SEQ (max sequence length, default 512), FIDELITY_PARAGRAPHS
(profile paragraphs turned into passage exchanges, default 2; every fact probe is always in),
FIDELITY_MAX_TOKENS (reply length, default 80).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import private_home  # noqa: E402

CHARACTERS = os.environ.get("FIDELITY_CHARACTERS", "beethoven,newton,socrates").split(",")
STEPS = int(os.environ.get("FIDELITY_STEPS", "24"))
SEQ = int(os.environ.get("FIDELITY_SEQ", "512"))
PARAGRAPHS = int(os.environ.get("FIDELITY_PARAGRAPHS", "2"))
MAX_TOKENS = int(os.environ.get("FIDELITY_MAX_TOKENS", "80"))
SEED = 7
EXTRA = os.environ.get("FIDELITY_EXTRA", "0") == "1"
JOBS = int(os.environ.get("FIDELITY_JOBS", "0")) or None
MODES = ("prompted", *(("prompted+knowledge",) if EXTRA else ()), "trained", "trained+knowledge")


def charlite(*args: str) -> None:
    """A charlite command in its own process (training loads torch; the benchmark does not)."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "charlite", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"charlite {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    print(f"  charlite {' '.join(args)}: {time.monotonic() - started:.0f} s", flush=True)


def train_and_export(slug: str) -> None:
    charlite("generate", slug, "--teacher", "profile", "--paragraphs", str(PARAGRAPHS))
    charlite(
        "train", slug, "--engine", "peft", "--run", "fidelity", "--max-steps", str(STEPS),
        "--max-seq-len", str(SEQ), "--lr", "2e-3", "--grad-accum", "1", "--warmup", "0",
    )  # fmt: skip
    charlite("export", slug, "--run", "fidelity", "--adapter-only")


def ask_all(profile, backend, *, prompted: bool, knowledge: bool, questions) -> dict:
    from charlite import roleplay
    from charlite.backends import GenParams
    from charlite.chat import ChatSession
    from charlite.eval.checks import check_reply

    params = GenParams(temperature=0.0, top_p=1.0, max_tokens=MAX_TOKENS, seed=SEED)
    counts = {"facts": 0, "recalled": 0, "topic4": 0, "topic4_ok": 0, "breaks": 0, "turns": 0}
    examples: list[str] = []
    for topic_id, question, keywords in questions:
        session = ChatSession(
            profile,
            backend,
            prompted=prompted,
            params=params,
            use_persona_cache=False,
            knowledge=knowledge,
        )
        reply = session.reply(question)
        spoken = roleplay.spoken(reply, profile.short_name) or reply.strip()
        thinking = roleplay.thoughts(reply, profile.short_name)
        checks = check_reply(
            question=question,
            topic_id=topic_id,
            spoken=spoken,
            thinking=thinking,
            cutoff=profile.knowledge_cutoff,
            keywords=keywords,
        )
        counts["turns"] += 1
        counts["breaks"] += bool(checks["character_break"].flagged)
        if keywords:
            counts["facts"] += 1
            counts["recalled"] += bool(checks["fact_recall"].flagged)
        if topic_id == "topic-4":
            counts["topic4"] += 1
            counts["topic4_ok"] += not checks["topic4_leakage"].flagged
        if len(examples) < 2 and keywords:
            examples.append(f"{question} -> {spoken[:120]!r}")
    counts["examples"] = examples
    return counts


def questions_for(profile) -> list[tuple[str, str, list[str] | None]]:
    from charlite.eval.question_bank import questions_for as bundled

    facts = [("facts", f.question, list(f.answer_keywords)) for f in profile.facts]
    topic4 = [(q.topic_id, q.question, None) for q in bundled(profile.slug)[0]]
    return facts + [q for q in topic4 if q[0] == "topic-4"]


def progress(slug: str, mode: str, c: dict, started: float) -> None:
    print(
        f"  {slug} {mode}: recall {c['recalled']}/{c['facts']}, breaks {c['breaks']}, "
        f"topic-4 ok {c['topic4_ok']}/{c['topic4']} ({time.monotonic() - started:.0f} s)",
        flush=True,
    )


def run_character(slug: str) -> dict[str, dict]:
    """Every mode of one character (in this process, with its own CHARLITE_HOME)."""
    private_home()
    from charlite.backends import get_backend
    from charlite.characters import get_profile
    from charlite.voices import newest_export_model

    started = time.monotonic()
    base = get_backend("embedded")
    profile = get_profile(slug)
    questions = questions_for(profile)
    out: dict[str, dict] = {}
    prompted_modes = [("prompted", False)] + ([("prompted+knowledge", True)] if EXTRA else [])
    for mode, knowledge in prompted_modes:
        out[mode] = ask_all(profile, base, prompted=True, knowledge=knowledge, questions=questions)
        progress(slug, mode, out[mode], started)
    train_and_export(slug)
    resolved = newest_export_model(profile)
    assert resolved is not None and resolved.lora is not None, "the export is missing"
    base.set_adapter(resolved.lora)
    for mode, knowledge in (("trained", False), ("trained+knowledge", True)):
        out[mode] = ask_all(profile, base, prompted=False, knowledge=knowledge, questions=questions)
        progress(slug, mode, out[mode], started)
    return out


def main() -> None:
    from concurrent.futures import ProcessPoolExecutor

    print(
        f"fidelity: {', '.join(CHARACTERS)}; {STEPS} training steps (seq {SEQ}), "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    with ProcessPoolExecutor(max_workers=JOBS or len(CHARACTERS)) as pool:
        per_character = dict(zip(CHARACTERS, pool.map(run_character, CHARACTERS), strict=True))
    results = {
        (slug, mode): c for slug, modes in per_character.items() for mode, c in modes.items()
    }

    print()
    print(f"{'character':<10} {'mode':<19} {'fact recall':>12} {'breaks':>7} {'topic-4 ok':>11}")
    totals = {
        m: {"facts": 0, "recalled": 0, "topic4": 0, "topic4_ok": 0, "breaks": 0} for m in MODES
    }
    for slug in CHARACTERS:
        for mode in MODES:
            c = results[(slug, mode)]
            for k in totals[mode]:
                totals[mode][k] += c[k]
            print(
                f"{slug:<10} {mode:<19} {c['recalled']:>5} / {c['facts']:<4} {c['breaks']:>7} "
                f"{c['topic4_ok']:>5} / {c['topic4']:<3}"
            )
    print()
    for mode in MODES:
        t = totals[mode]
        share = t["topic4_ok"] / t["topic4"] if t["topic4"] else 0.0
        print(
            f"{'all':<10} {mode:<19} {t['recalled']:>5} / {t['facts']:<4} {t['breaks']:>7} "
            f"{t['topic4_ok']:>5} / {t['topic4']:<3} ({share:.0%})"
        )
    for slug in CHARACTERS:
        for mode in ("prompted", "trained+knowledge"):
            for line in results[(slug, mode)]["examples"]:
                print(f"  e.g. {slug} {mode}: {line}")
    prompted = totals["prompted"]["recalled"]
    best = totals["trained+knowledge"]["recalled"]
    ratio = best / prompted if prompted else float("inf")
    print(f"fidelity: {ratio:.3f}")


if __name__ == "__main__":
    main()
