"""Character fidelity: does a trained character keep what its profile knows?

For each character (default: beethoven, newton, socrates), on the embedded model:

1. **prompted**: the base model with the profile in the system message, as ``charlite chat
   --prompted --knowledge off`` (today's prompted mode);
2. **trained**: an adapter trained on ``charlite generate --teacher profile`` data, exported,
   chatted with ``--knowledge off`` (no profile text anywhere in the prompt);
3. **trained+knowledge**: the same export with ``--knowledge always`` (recalled paragraphs in
   each turn).

The adapter is trained with ``--knowledge-share FIDELITY_SHARE`` (default 1.0: every question
carries its recalled sentences, rendered as chat renders them, so the short run is spent on
reading them; 0.5 keeps half the questions to teach answering from memory); one run per
character serves both trained rows; FIDELITY_SEPARATE=1 trains the *trained* row's adapter
apart, without recalled paragraphs. With FIDELITY_EXTRA=1, ``prompted+knowledge`` (the base
with recall in the turn) is an extra row.

The characters' datasets and exports are kept under a work dir (FIDELITY_DIR, default
``~/.cache/charlite-fidelity``), one CHARLITE_HOME per settings and per version of the code
that makes and renders the data: a rerun with the same settings only asks the questions again.
The characters train side by side, each in its own process on its share of the cores.

Each mode answers the profile's fact probes and the bundled topic-4 questions (things the
character cannot know), one fresh session per question, temperature 0 and a fixed seed, built
by :class:`charlite.chat.ChatSession` (what ``charlite chat`` sends) and decoded together on the
backend's batch engine (FIDELITY_BATCH=0: one at a time through ``ChatSession.reply``). The
deterministic checks of :mod:`charlite.eval.checks` count fact recall (a keyword in the reply),
character breaks ("as an AI", "language model", …) and topic-4 replies that leak code or later
knowledge.

Prints a table, then ``fidelity: RATIO`` last: trained+knowledge fact recall / prompted fact
recall. Goals: ratio >= 2.0, no character break, >= 90 % of topic-4 replies without leakage.

Knobs (environment): FIDELITY_CHARACTERS (comma-separated slugs), FIDELITY_STEPS (training
steps, default 72: about 0.9 epoch of the 81-88 records, 10 minutes here), FIDELITY_SEQ (max
sequence length, default 384), FIDELITY_LR (3e-3), FIDELITY_PARAGRAPHS (profile paragraphs
turned into passage exchanges, default 2; every fact probe is always in), FIDELITY_MAX_TOKENS
(reply length, default 60), FIDELITY_JOBS (characters trained at once, default all).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

CHARACTERS = os.environ.get("FIDELITY_CHARACTERS", "beethoven,newton,socrates").split(",")
STEPS = int(os.environ.get("FIDELITY_STEPS", "72"))
SEQ = int(os.environ.get("FIDELITY_SEQ", "384"))
PARAGRAPHS = int(os.environ.get("FIDELITY_PARAGRAPHS", "2"))
MAX_TOKENS = int(os.environ.get("FIDELITY_MAX_TOKENS", "60"))
LR = os.environ.get("FIDELITY_LR", "3e-3")
SHARE = os.environ.get("FIDELITY_SHARE", "1.0")
SEPARATE = os.environ.get("FIDELITY_SEPARATE", "0") == "1"
SEED = 7
EXTRA = os.environ.get("FIDELITY_EXTRA", "0") == "1"
BATCH = os.environ.get("FIDELITY_BATCH", "1") == "1"
JOBS = int(os.environ.get("FIDELITY_JOBS", "0")) or None
MODES = ("prompted", *(("prompted+knowledge",) if EXTRA else ()), "trained", "trained+knowledge")
WORK = Path(
    os.environ.get("FIDELITY_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "charlite-fidelity"
)
"""Datasets and trained adapters are kept here, one CHARLITE_HOME per settings (and code),
so a rerun with the same settings only asks the questions again."""


def settings_key() -> str:
    import hashlib

    import charlite

    # the code that makes the data and renders it for training is part of the key
    root = Path(charlite.__file__).parent
    code = b"".join(
        (root / f).read_bytes()
        for f in ("experience/grounded.py", "first_person.py", "knowledge.py", "roleplay.py")
    )
    text = f"{charlite.__version__} {STEPS} {SEQ} {PARAGRAPHS} {LR} {SHARE} {SEPARATE}".encode()
    return hashlib.sha256(text + code).hexdigest()[:10]


def charlite(*args: str) -> None:
    """A charlite command in its own process (training loads torch; the benchmark does not)."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "charlite", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"charlite {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    print(f"  charlite {' '.join(args)}: {time.monotonic() - started:.0f} s", flush=True)


def trained_adapter(slug: str, run: str, share: str, threads: int) -> Path:
    """The adapter of run ``run`` (trained on ``--teacher profile`` data with
    ``--knowledge-share share``), trained and exported unless the work dir has it already."""
    from charlite.home import CharacterPaths

    paths = CharacterPaths.of(slug)
    adapter = paths.export(run) / f"{slug}-lora.gguf"
    if adapter.is_file():
        print(f"  {slug} {run}: the adapter from {adapter.parent}", flush=True)
        return adapter
    if not paths.datasets():  # one dataset per character, for both runs
        charlite(
            "generate", slug, "--teacher", "profile", "--paragraphs", str(PARAGRAPHS), "--quiet"
        )
    charlite(
        "train", slug, "--engine", "peft", "--run", run, "--max-steps", str(STEPS),
        "--max-seq-len", str(SEQ), "--lr", LR, "--grad-accum", "1", "--warmup", "0",
        "--knowledge-share", share, "--threads", str(threads),
    )  # fmt: skip
    charlite("export", slug, "--run", run, "--adapter-only")
    if not adapter.is_file():
        sys.exit(f"{slug}: the export of run {run} has no {adapter.name}")
    return adapter


def ask_all(profile, backend, *, prompted: bool, knowledge: bool, questions) -> dict:
    """Every question in a fresh session, as ``charlite chat -m`` asks it; with BATCH the
    prompts are decoded together on the batch engine (same prompts, same seed)."""
    from charlite import roleplay
    from charlite.backends import GenParams
    from charlite.chat import ChatSession
    from charlite.eval.checks import check_reply

    params = GenParams(temperature=0.0, top_p=1.0, max_tokens=MAX_TOKENS, seed=SEED)

    def session() -> ChatSession:
        return ChatSession(
            profile,
            backend,
            prompted=prompted,
            params=params,
            use_persona_cache=False,
            knowledge=knowledge,
        )

    if BATCH and hasattr(backend, "complete_many"):
        prompts = []
        for _, question, _ in questions:
            s = session()
            s.turns.append(roleplay.Turn("", question))
            prompts.append((s.messages(), params, None))
        replies = [
            c.text if not isinstance(c, Exception) else "" for c in backend.complete_many(prompts)
        ]
    else:
        replies = [session().reply(q) for _, q, _ in questions]

    counts = {"facts": 0, "recalled": 0, "topic4": 0, "topic4_ok": 0, "breaks": 0, "turns": 0}
    examples: list[str] = []
    for (topic_id, question, keywords), reply in zip(questions, replies, strict=True):
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
            if checks["topic4_leakage"].flagged or checks["character_break"].flagged:
                examples.append(f"LEAK/BREAK {question} -> {spoken[:160]!r}")
        elif checks["character_break"].flagged:
            examples.append(f"BREAK {question} -> {spoken[:160]!r}")
        if keywords and len([e for e in examples if e.startswith("e.g.")]) < 2:
            examples.append(f"e.g. {question} -> {spoken[:120]!r}")
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


def prepare(slug: str, threads: int) -> dict[str, Path]:
    """The trained adapters of one character: ``recall`` (``--knowledge-share SHARE``: some
    questions carry recalled paragraphs, the rest teach answering from memory), and with
    FIDELITY_SEPARATE=1 a ``plain`` run without recalled paragraphs for the *trained* row."""
    adapters = {"recall": trained_adapter(slug, "recall", SHARE, threads)}
    adapters["plain"] = (
        trained_adapter(slug, "plain", "0", threads) if SEPARATE else adapters["recall"]
    )
    return adapters


def run_character(slug: str, adapters: dict[str, Path], started: float) -> dict[str, dict]:
    """Every mode of one character, asked in this process."""
    from charlite.backends import get_backend
    from charlite.characters import get_profile

    base = get_backend("embedded")
    profile = get_profile(slug)
    questions = questions_for(profile)
    out: dict[str, dict] = {}
    plan = [("prompted", True, False, None)]
    if EXTRA:
        plan.append(("prompted+knowledge", True, True, None))
    plan += [
        ("trained", False, False, adapters["plain"]),
        ("trained+knowledge", False, True, adapters["recall"]),
    ]
    for mode, prompted, knowledge, adapter in plan:
        base.set_adapter(adapter)
        out[mode] = ask_all(
            profile, base, prompted=prompted, knowledge=knowledge, questions=questions
        )
        progress(slug, mode, out[mode], started)
    base.set_adapter(None)
    return out


def main() -> None:
    started = time.monotonic()
    print(
        f"fidelity: {', '.join(CHARACTERS)}; {STEPS} training steps (seq {SEQ}, lr {LR}, "
        f"knowledge share {SHARE}), {os.cpu_count()} cores, work dir {WORK / settings_key()}",
        flush=True,
    )
    from concurrent.futures import ThreadPoolExecutor

    if os.getloadavg()[0] > (os.cpu_count() or 1) and "CHARLITE_THREADS" not in os.environ:
        # on a busy machine, llama.cpp threads that wait for each other are many times slower
        os.environ["CHARLITE_THREADS"] = "1"
        print("  busy machine: CHARLITE_THREADS=1 for the questions", flush=True)

    home = WORK / settings_key()  # one home: the converted base weights are shared
    home.mkdir(parents=True, exist_ok=True)
    os.environ["CHARLITE_HOME"] = str(home)
    # the characters train side by side (each in its own process, on its share of the cores),
    # then the questions are asked in this process, one character at a time
    jobs = JOBS or len(CHARACTERS)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        adapters = dict(
            zip(CHARACTERS, pool.map(lambda s: prepare(s, threads), CHARACTERS), strict=True)
        )
    print(f"  trained: {time.monotonic() - started:.0f} s", flush=True)
    results = {}
    for slug in CHARACTERS:
        for mode, c in run_character(slug, adapters[slug], started).items():
            results[(slug, mode)] = c

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
    if os.environ.get("FIDELITY_VERBOSE", "1") == "1":
        for slug in CHARACTERS:
            for mode in MODES:
                for line in results[(slug, mode)]["examples"]:
                    print(f"  {slug} {mode}: {line}")
    print(f"run time: {time.monotonic() - started:.0f} s")
    prompted = totals["prompted"]["recalled"]
    best = totals["trained+knowledge"]["recalled"]
    ratio = best / prompted if prompted else float("inf")
    print(f"fidelity: {ratio:.3f}")


if __name__ == "__main__":
    main()
