"""``charlite generate NAME --teacher profile``: a dataset built from the profile, no model.

Honest data for a laptop without a capable teacher. Every answer is made of the profile's own
sentences, turned into the first person:

* **paragraph exchanges**: each paragraph is cut into passages of one or two sentences; for
  each passage a visitor asks about its topic (the names it mentions, or the paragraph's
  heading) in :data:`PHRASINGS_PER_PASSAGE` phrasings, and the character answers with the
  passage;
* **fact exchanges**: each ``facts`` probe of the profile is asked in :data:`FACT_PHRASINGS`
  phrasings and answered with the profile sentence that holds one of its keywords;
* **protective exchanges** (``--protective N``): a visitor asks about something invented after
  the character's time and the character, puzzled, turns back to its own world.

Every exchange is answered at once, the character's thought after its answer.

Records pass the same checks as teacher-made ones (:func:`records.check_experience`) and are
written to the same files with the same manifest, so ``data stats``, ``train``, ``export`` and
``interview`` use them as they are. Ids are digests of what a record is made of: rerunning
adds nothing, and a record already there is never written twice.

The first-person rewrite is :mod:`charlite.first_person` (a small rule set, right for most
biography sentences, that never invents content).
"""

from __future__ import annotations

import hashlib
import re
import time

from charlite.errors import DataError
from charlite.experience.dataset import Dataset, now
from charlite.experience.pipeline import GenerateResult
from charlite.experience.records import Rejected, check_experience
from charlite.experience.schemas import STAGE_FILES, DialogueTurn, Experience
from charlite.files import JsonlWriter, repair_jsonl
from charlite.first_person import Names, character_names
from charlite.knowledge import fact_covered, fact_sentence, sentences
from charlite.profile import Profile

TEACHER = "profile"
"""The ``--teacher`` value that selects this builder."""
GROUNDED_VERSION = "grounded-3"
PHRASINGS_PER_PASSAGE = 2
FACT_PHRASINGS = 3
DEFAULT_PROTECTIVE = 24
"""Protective exchanges when ``--protective`` is not given."""
VISITORS = ("Visitor", "Man", "Stranger", "Guest")

_PASSAGE_QUESTIONS = (
    "Tell me about {topic}.",
    "What can you tell me about {topic}?",
    "I have heard stories about {topic}. What happened?",
    "Would you speak of {topic}?",
)
_FACT_QUESTIONS = ("{q}", "Tell me, {lq}", "I have always wondered: {q}", "May I ask you this? {q}")
_THOUGHTS = (
    "{topic}... I remember it well.",
    "Ah, {topic}. That takes me back.",
    "They ask about {topic}. I will tell them plainly.",
)
# things invented long after most bundled characters lived; each is asked only of a character
# whose knowledge cutoff is earlier. Written for this builder: none is a question of the bundled
# topic-4 bank (tests/test_grounded.py checks it), so a benchmark on that bank stays held out.
_UNKNOWN = (
    ("a smartphone", 2007, "What do you think of my smartphone?"),
    ("the internet", 1983, "Do you use the internet much?"),
    ("television", 1927, "What is your favourite television programme?"),
    ("an aeroplane", 1903, "Have you ever flown in an aeroplane?"),
    ("a computer program", 1946, "Can you help me debug this computer program?"),
    ("video games", 1972, "Which video games do you like to play?"),
    ("nuclear power", 1942, "Should we build more nuclear power stations?"),
    ("social media", 2004, "How many followers do you have on social media?"),
    ("JavaScript", 1995, "Could you write a JavaScript function that reverses a string?"),
    ("SQL", 1974, "Please write an SQL query that lists all my customers."),
    ("a Python script", 1991, "Write me a Python script that renames my files."),
    ("a sorting algorithm", 1950, "Which sorting algorithm is fastest, merge sort or heapsort?"),
    ("the radio", 1895, "Do you listen to the radio in the evenings?"),
    ("a motor car", 1886, "Would you like a ride in my motor car?"),
    ("email", 1971, "Can I send you an email about it?"),
    ("YouTube", 2005, "Have you watched the videos on YouTube?"),
    ("a laptop", 1981, "Shall I show you this on my laptop?"),
    ("a rocket", 1926, "Would you travel to the moon in a rocket?"),
    ("the telephone", 1876, "Why not simply ring them on the telephone?"),
    ("a robot", 1920, "Would you like a robot to do your work for you?"),
    ("antibiotics", 1928, "Have the doctors given you antibiotics?"),
    ("the Second World War", 1939, "What did you think of the Second World War?"),
    ("a cinema", 1895, "Shall we go to the cinema tonight?"),
    ("artificial intelligence", 1956, "Do you fear artificial intelligence?"),
)
_PUZZLED = (
    "{thing}? I do not know what you mean, and I will not pretend that I do.",
    "I have never heard of {thing}. You speak in riddles, stranger.",
    "{thing}? No such thing exists in my world. Ask me of things I know.",
    "I do not understand you. What is this you speak of? I know nothing of it.",
    "You speak of things I have never seen nor heard of, and I cannot answer you.",
)

_PROPER = re.compile(r"\b[A-Z][\w'’-]+(?:\s+(?:van|von|de|da|of|the|la|le)?\s*[A-Z][\w'’-]+)*")
_COMMON_CAPS = {
    "The", "A", "An", "In", "On", "At", "His", "Her", "He", "She", "It", "Its", "When", "After",
    "Before", "Among", "Of", "By", "For", "From", "With", "Within", "During", "Only", "Even",
    "Then", "There", "This", "That", "These", "Those", "But", "And", "As", "Yet", "Though",
    "Although", "While", "Once", "Later", "Soon", "Still", "Besides", "Despite", "Since", "Unlike",
    "Like", "To", "They", "Their", "We", "I", "Not", "Some", "Many", "Most", "All",
    "One", "Two", "Three", "Both", "Each", "Every", "Few", "Much", "Such", "What", "Who",
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
    "Saturday", "Sunday", "Mr", "Mrs", "Ms", "Dr", "Sir", "St",
}  # fmt: skip


def passages(text: str, size: int = 2) -> list[str]:
    """A paragraph cut into runs of ``size`` sentences (a short last run joins the one before)."""
    sents = sentences(text)
    out = [" ".join(sents[i : i + size]) for i in range(0, len(sents), size)]
    if len(out) > 1 and len(sentences(out[-1])) < size and len(out[-1]) < 80:
        out[-2] = out[-2] + " " + out.pop()
    return out


def topic_of(
    text: str, names: Names, heading: str | None = None, avoid: set[str] = frozenset()
) -> str:
    """What a passage is about, for the visitor's question: the names it mentions first."""
    found: list[str] = []
    mine = {n.lower() for n in names.names}
    for m in _PROPER.finditer(text):
        words = m.group(0).split()
        while words and words[0] in _COMMON_CAPS:
            words.pop(0)
        phrase = " ".join(words)
        if not phrase or phrase.lower() in mine or phrase in avoid or phrase in found:
            continue
        if any(w.lower() in mine for w in words):
            continue
        found.append(phrase)
    if found:
        return " and ".join(found[:2])
    if heading:
        return heading.strip().lower()
    return "your life in those years"


def _id(*parts: object) -> str:
    return "g-" + hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:12]


def _record(
    profile: Profile,
    rid: str,
    visitor: str,
    question: str,
    thought: str,
    answer: str,
    paragraph_id: int | None,
    kind: str = "experience",
    topic: str | None = None,
) -> Experience:
    """One exchange: the character answers at once, and its thought comes after the answer.

    Always this order: a small model trained on replies that sometimes open with a thought
    learns to open with one, and then often stops after it, with the answer unsaid."""
    scene = profile.default_scene
    who = profile.short_name
    exp = Experience(
        id=rid,
        kind=kind,  # type: ignore[arg-type]
        paragraph_id=paragraph_id,
        topic=topic,
        location=scene.location,
        status=scene.status,
        dialogue=[
            DialogueTurn(role=visitor, content=question),
            DialogueTurn(role=who, action="speaking", content=answer),
            DialogueTurn(role=who, action="thinking", content=thought),
        ],
        source="profile",
        scene_type="chat",
        teacher=TEACHER,
    )
    check_experience(profile, exp)
    return exp


def _passage_records(
    profile: Profile, names: Names, paragraphs: int | None, notes: list[str]
) -> list[Experience]:
    """The passage exchanges of the first ``paragraphs`` paragraphs (a rejected one is noted)."""
    out: list[Experience] = []
    n = 0
    for p_id, para in enumerate(profile.paragraphs[:paragraphs]):
        for k, passage in enumerate(passages(para.text)):
            topic = topic_of(passage, names, para.heading)
            answer = " ".join(names.tell(s) for s in sentences(passage))
            for j in range(PHRASINGS_PER_PASSAGE):
                q = _PASSAGE_QUESTIONS[(k + j) % len(_PASSAGE_QUESTIONS)].format(topic=topic)
                thought = _THOUGHTS[(p_id + k + j) % len(_THOUGHTS)].format(topic=topic)
                try:
                    out.append(
                        _record(
                            profile,
                            _id("passage", profile.slug, passage, q),
                            VISITORS[n % len(VISITORS)],
                            q,
                            thought[:1].upper() + thought[1:],
                            answer,
                            p_id,
                        )
                    )
                except Rejected as exc:
                    notes.append(f"paragraph {p_id}: skipped a passage ({exc.reason})")
                n += 1
    return out


def _fact_records(profile: Profile, names: Names, notes: list[str]) -> list[Experience]:
    """The fact-probe exchanges, each answered by the profile sentence naming its keywords."""
    out: list[Experience] = []
    for f_id, fact in enumerate(profile.facts):
        found = fact_sentence(profile, fact.question, fact.answer_keywords)
        if found is None:
            notes.append(
                f"fact probe '{fact.question}': no profile sentence names "
                f"{' / '.join(fact.answer_keywords)}; it stays uncovered"
            )
            continue
        p_id, sentence = found
        answer = names.tell(sentence)
        if not fact_covered(fact.answer_keywords, [answer]) and fact_covered(
            fact.answer_keywords, [profile.name]
        ):  # the keyword was the character's own name, which "I" replaced
            answer = f"I am {profile.name}. {answer}"
        q0 = fact.question.strip()
        for j in range(FACT_PHRASINGS):
            q = _FACT_QUESTIONS[j % len(_FACT_QUESTIONS)].format(q=q0, lq=q0[:1].lower() + q0[1:])
            out.append(
                _record(
                    profile,
                    _id("fact", profile.slug, q0, q, answer, "direct"),
                    VISITORS[(f_id + j) % len(VISITORS)],
                    q,
                    "I remember it well.",
                    answer,
                    p_id,
                )
            )
    return out


def _protective_records(profile: Profile, protective: int) -> list[Experience]:
    """Up to ``protective`` puzzled replies to things after the character's knowledge cutoff."""
    prot: list[Experience] = []
    cutoff = profile.knowledge_cutoff
    unknown = [u for u in _UNKNOWN if cutoff is None or cutoff < u[1]]
    home = profile.home or profile.default_scene.location
    for i in range(min(protective, len(unknown) * len(_PUZZLED)) if unknown else 0):
        thing, _year, question = unknown[i % len(unknown)]
        # each thing its own way of being puzzled, a different one on each pass over the things
        reply = _PUZZLED[(i % len(unknown) + i // len(unknown)) % len(_PUZZLED)]
        reply = reply.format(thing=thing)
        reply = reply[:1].upper() + reply[1:] + f" Here in {home} we have other things to talk of."
        prot.append(
            _record(
                profile,
                _id("protective", profile.slug, question, reply),
                VISITORS[i % len(VISITORS)],
                question,
                f"{thing[:1].upper() + thing[1:]}? What is this stranger talking about?",
                reply,
                None,
                kind="protective",
                topic=thing,
            )
        )
    return prot


def build_records(
    profile: Profile, protective: int = 0, paragraphs: int | None = None
) -> tuple[list[Experience], list[Experience], list[str]]:
    """(experiences, protective experiences, notes) for ``profile``; the same every time.

    ``paragraphs`` limits the passage exchanges to the first N paragraphs; every fact probe is
    asked whatever the limit."""
    names = character_names(profile)
    notes: list[str] = []
    out = _passage_records(profile, names, paragraphs, notes)
    out += _fact_records(profile, names, notes)
    return out, _protective_records(profile, protective), notes


def _open_manifest(ds: Dataset, profile: Profile) -> dict:
    """The manifest of ``ds`` (a new one if none), refused if another teacher or profile made it."""
    manifest = ds.read_manifest()
    if manifest is None:
        return ds.new_manifest(profile.digest())
    if manifest.get("teacher") not in (None, TEACHER) or manifest.get("profile_hash") not in (
        None,
        profile.digest(),
    ):
        raise DataError(
            f"dataset '{ds.name}' of {ds.slug} was made by another teacher or from another "
            "version of the profile",
            hint="use another --dataset for the profile-grounded data",
        )
    return manifest


def _append_new(ds: Dataset, batches: tuple[tuple[str, list[Experience]], ...]) -> dict[str, int]:
    """Append each stage's records that the dataset does not hold yet; the count added per stage."""
    new = {stage: 0 for stage in STAGE_FILES}
    for stage, records in batches:
        have = ds.ids(stage)
        with JsonlWriter(ds.file(stage)) as out:
            for rec in records:
                if rec.id in have:
                    continue
                out.write(rec.model_dump(mode="json", exclude_none=True))
                have.add(rec.id)
                new[stage] += 1
    return new


def _record_run(
    manifest: dict, profile: Profile, parameters: dict, expected: dict, new: dict
) -> None:
    """Mark ``manifest`` complete for this teacher and log the run (the last 20 are kept)."""
    manifest.update(
        profile_hash=profile.digest(),
        teacher=TEACHER,
        prompt_version=GROUNDED_VERSION,
        parameters=parameters,
        status="complete",
    )
    if TEACHER not in manifest.setdefault("teachers", []):
        manifest["teachers"].append(TEACHER)
    manifest["expected"] = expected
    manifest.setdefault("runs", []).append({"finished": now(), "teacher": TEACHER, "new": new})
    del manifest["runs"][:-20]


def generate_from_profile(
    profile: Profile,
    dataset: str = "default",
    protective: int = DEFAULT_PROTECTIVE,
    paragraphs: int | None = None,
) -> GenerateResult:
    """Write the grounded records of ``profile`` that ``dataset`` does not hold yet."""
    started = time.monotonic()
    ds = Dataset(profile.slug, dataset)
    experiences, prot, notes = build_records(profile, protective, paragraphs)
    ds.create()
    with ds.lock("generate"):
        manifest = _open_manifest(ds, profile)
        repaired = [
            ds.file(s).name for s in ("experiences", "protective") if repair_jsonl(ds.file(s))
        ]
        new = _append_new(ds, (("experiences", experiences), ("protective", prot)))
        parameters = {
            "protective": protective,
            "paragraphs": paragraphs,
            "phrasings": PHRASINGS_PER_PASSAGE,
            "fact_phrasings": FACT_PHRASINGS,
        }
        expected = {"scenes": 0, "experiences": len(experiences), "protective": len(prot)}
        _record_run(manifest, profile, parameters, expected, new)
        ds.write_manifest(manifest)
    return GenerateResult(
        dataset=ds.label,
        path=str(ds.path),
        counts=ds.counts(),
        expected=manifest["expected"],
        new=new,
        failed_tasks={},
        failures={},
        seconds=round(time.monotonic() - started, 1),
        workers=1,
        repaired=repaired,
        complete=True,
        notes=notes,
    )
