"""Knowledge in every mode: the profile paragraphs a turn is about, recalled with BM25.

Training gives a character its voice; the profile's facts reach the model by retrieval, in
prompted and trained mode alike. For each user turn the paragraphs most related to it are
found with `bm25s <https://github.com/xhluca/bm25s>`_ (a small, maintained lexical BM25
library: numpy only, its index a sparse matrix) and put into that turn, never into the system
message, so the system prefix stays byte-stable and the persona cache and KV reuse keep
working (see :func:`charlite.roleplay.with_recall`).

The index is built once per profile (keyed by :meth:`Profile.digest`) and kept in-process: a
profile has tens of paragraphs, so building one takes a few milliseconds, less than reading
it from disk would.

``--knowledge auto|always|off``: ``off`` renders exactly the prompts charlite always did;
``always`` recalls in every mode; ``auto`` recalls for the prompted base, and for a trained
export unless its run's manifest shows that its data covered every paragraph and fact probe of
the profile and that it was trained without recalled paragraphs.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charlite import roleplay, settings
from charlite.errors import CharliteError
from charlite.files import read_json
from charlite.home import CharacterPaths

if TYPE_CHECKING:
    from charlite.profile import Profile
    from charlite.voices import ResolvedModel

KNOWLEDGE_MODES: tuple[str, ...] = ("auto", "always", "off")
KNOWLEDGE_ENV = "CHARLITE_KNOWLEDGE"
RECALL_K = 2
"""Paragraphs recalled from per turn, at most."""
RECALL_SENTENCES = 2
"""Sentences taken from each recalled paragraph, at most: those that best match the turn."""
RECALL_BUDGET_CHARS = 800
"""Characters of recalled text per turn, about (~200 tokens). A 135M model copies from a few
sentences more often than from whole paragraphs (the best paragraph goes last, nearest the
question), and a CPU trains on them faster."""


def default_knowledge_mode() -> str:
    """The ``--knowledge`` default: the ``knowledge`` setting (``CHARLITE_KNOWLEDGE``, the
    config file, else ``auto``)."""
    return settings.knowledge_mode()


def check_mode(value: str, where: str = "--knowledge") -> str:
    if value not in KNOWLEDGE_MODES:
        raise CharliteError(
            f"{where}: '{value}' is not a knowledge mode",
            hint="use one of: " + ", ".join(KNOWLEDGE_MODES),
        )
    return value


# ---------------------------------------------------------------------------------------------
# The index


@dataclass
class Hit:
    paragraph: int
    score: float
    text: str


class ProfileIndex:
    """A BM25 index over one profile's paragraphs (heading included with its paragraph)."""

    def __init__(self, profile: Profile):
        import bm25s
        import Stemmer
        from bm25s.tokenization import Tokenizer

        self.texts = profile.paragraph_texts()
        # Snowball stems, so "studies" finds "study" and "musical" finds "music"
        self.tokenizer = Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english"))
        docs = [f"{p.heading or ''} {p.text}" for p in profile.paragraphs]
        tokens = self.tokenizer.tokenize(docs, return_as="string", show_progress=False)
        self.bm25 = bm25s.BM25()
        self.bm25.index(tokens, create_empty_token=False, show_progress=False)
        # every sentence on its own, its paragraph's heading with it
        self.sentences: list[tuple[int, str]] = [
            (i, s) for i, t in enumerate(self.texts) for s in sentences(t)
        ]
        heads = [profile.paragraphs[i].heading or "" for i, _ in self.sentences]
        stokens = self.tokenizer.tokenize(
            [f"{h} {s}" for h, (_, s) in zip(heads, self.sentences, strict=True)],
            return_as="string",
            show_progress=False,
        )
        self.sentence_bm25 = bm25s.BM25()
        self.sentence_bm25.index(stokens, create_empty_token=False, show_progress=False)

    def words(self, text: str) -> list[str]:
        """``text`` as the index sees it: lower-case stems, stop words left out."""
        [words] = self.tokenizer.tokenize(
            [text], update_vocab=True, return_as="string", show_progress=False
        )
        return [w for w in words if w]

    def sentence_scores(self, query: str) -> list[float]:
        """The BM25 score of every sentence of the profile (:attr:`sentences`) for ``query``."""
        known = [w for w in self.words(query) if w in self.sentence_bm25.vocab_dict]
        if not known:
            return [0.0] * len(self.sentences)
        return [float(x) for x in self.sentence_bm25.get_scores(known)]

    def best_sentences(self, paragraph: int, scores: Sequence[float], n: int, budget: int) -> str:
        """The ``n`` best-scoring sentences of ``paragraph``, in order, within ``budget``
        characters (the best one always, even when longer)."""
        mine = [i for i, (p, _) in enumerate(self.sentences) if p == paragraph]
        keep: list[int] = []
        used = 0
        for i in sorted(mine, key=lambda i: (-scores[i], i))[:n]:
            if keep and used + len(self.sentences[i][1]) > budget:
                continue
            keep.append(i)
            used += len(self.sentences[i][1]) + 1
        return " ".join(self.sentences[i][1] for i in sorted(keep))

    def search(self, query: str, k: int = RECALL_K) -> list[Hit]:
        """The ``k`` best paragraphs for ``query`` that share a word with it, best first."""
        known = [w for w in self.words(query) if w in self.bm25.vocab_dict]
        if not known:
            return []
        scores = self.bm25.get_scores(known)
        order = sorted(range(len(self.texts)), key=lambda i: (-float(scores[i]), i))
        return [Hit(i, float(scores[i]), self.texts[i]) for i in order[:k] if scores[i] > 0]


_INDEXES: dict[str, ProfileIndex] = {}
_LOCK = threading.Lock()


def index_for(profile: Profile) -> ProfileIndex:
    """The profile's index, built on first use and kept for the process."""
    key = profile.digest()
    with _LOCK:
        index = _INDEXES.get(key)
        if index is None:
            index = _INDEXES[key] = ProfileIndex(profile)
        return index


def paragraphs_in(profile: Profile, system: str) -> list[str]:
    """The profile's paragraphs that ``system`` already holds (recall skips them)."""
    return [t for t in profile.paragraph_texts() if t.strip() and t.strip() in system]


def recall(
    profile: Profile,
    query: str,
    *,
    exclude: Iterable[str] = (),
    k: int = RECALL_K,
    per_paragraph: int = RECALL_SENTENCES,
    budget_chars: int = RECALL_BUDGET_CHARS,
) -> list[str]:
    """What ``query`` brings back: from each of the ``k`` best paragraphs, its
    ``per_paragraph`` sentences that best match the query on their own (BM25 over sentences,
    in the paragraph's order), ``budget_chars`` in all; the best paragraph comes **last**, so
    that its sentences stand right before the question.

    Paragraphs in ``exclude`` (already in the system message) are skipped. Nothing comes back
    when the query shares no word with the profile ("write me some Python").
    """
    index = index_for(profile)
    skip = {e.strip() for e in exclude}
    hits = [h for h in index.search(query, k + len(skip)) if h.text.strip() not in skip][:k]
    if not hits:
        return []
    scores = index.sentence_scores(query)
    out: list[str] = []
    left = budget_chars
    for hit in hits:
        if left <= 0:
            break
        chosen = index.best_sentences(hit.paragraph, scores, per_paragraph, left)
        out.append(chosen)
        left -= len(chosen)
    return out[::-1]


# ---------------------------------------------------------------------------------------------
# Where a fact probe's answer sits in the profile

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"“(]?[A-Z0-9])")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


_WORD = re.compile(r"[a-z]{4,}")
_QUESTION_WORDS = {
    "what", "were", "your", "with", "which", "when", "where", "there", "that", "this", "from",
    "have", "does", "whom", "whose", "into", "about", "tell", "they", "them", "their", "would",
    "could", "should", "first", "name", "some", "many", "much", "most", "other", "very", "after",
}  # fmt: skip


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _QUESTION_WORDS}


def fact_sentence(profile: Profile, question: str, keywords: list[str]) -> tuple[int, str] | None:
    """(paragraph, answer) for a fact probe: the profile sentence that names one of
    ``keywords`` and, with its neighbours, shares most words with ``question``; a neighbour
    that shares words with the question comes along (the first such sentence on a tie)."""
    best: tuple[int, int, str] | None = None
    wanted = [k.lower() for k in keywords]
    asked = _content_words(question)
    for i, text in enumerate(profile.paragraph_texts()):
        sents = sentences(text)
        for j, sent in enumerate(sents):
            hits = sum(1 for k in wanted if k in sent.lower())
            if not hits:
                continue
            near = [
                (n, len(asked & _content_words(sents[n])))
                for n in (j - 1, j + 1)
                if 0 <= n < len(sents)
            ]
            own = len(asked & _content_words(sent))
            extra = max(near, key=lambda x: x[1], default=(None, 0))
            score = 2 * (own + extra[1]) + hits
            if best is None or score > best[0]:
                chosen = [j] if not extra[1] else sorted([j, extra[0]])
                best = (score, i, " ".join(sents[n] for n in chosen))
    return (best[1], best[2]) if best else None


# ---------------------------------------------------------------------------------------------
# What a dataset covers


def fact_covered(keywords: Sequence[str], texts: Iterable[str]) -> bool:
    """Whether any of ``texts`` names one of the ``keywords`` (case-insensitive)."""
    wanted = [k.lower() for k in keywords if k.strip()]
    return any(any(k in t.lower() for k in wanted) for t in texts)


def coverage(profile: Profile, records: Sequence[Any]) -> dict[str, Any]:
    """Which paragraphs (by ``paragraph_id``) and fact probes (a keyword in one of the
    character's lines) a dataset's experience records cover."""
    who = profile.short_name
    said = [t.content for r in records for t in r.dialogue if t.role == who]
    paragraphs = {r.paragraph_id for r in records if r.paragraph_id is not None}
    facts = [
        {
            "question": f.question,
            "covered": fact_covered(f.answer_keywords, said),
            "records": sum(
                1
                for r in records
                if fact_covered(f.answer_keywords, [t.content for t in r.dialogue if t.role == who])
            ),
        }
        for f in profile.facts
    ]
    n_par = len(profile.paragraphs)
    covered_par = sum(1 for i in range(n_par) if i in paragraphs)
    covered_facts = sum(1 for f in facts if f["covered"])
    return {
        "paragraphs": n_par,
        "paragraphs_covered": covered_par,
        "facts": len(facts),
        "facts_covered": covered_facts,
        "per_fact": facts,
        "complete": covered_par == n_par and covered_facts == len(facts),
    }


# ---------------------------------------------------------------------------------------------
# Deciding, per chat


def use_knowledge(mode: str, profile: Profile, resolved: ResolvedModel) -> bool:
    """Whether a chat recalls paragraphs into its turns (see the module docstring)."""
    mode = check_mode(mode)
    if mode != "auto":
        return mode == "always"
    if resolved.prompted:
        return True
    run = trained_run_manifest(profile, resolved)
    if run is None:  # no manifest says the data covered the profile
        return True
    knowledge = run.get("knowledge") or {}
    if (knowledge.get("share") or 0) > 0:  # trained to read recalled paragraphs
        return True
    return not (knowledge.get("coverage") or {}).get("complete", False)


def trained_run_manifest(profile: Profile, resolved: ResolvedModel) -> dict | None:
    """The run manifest behind the export a chat uses, when it is one of the character's."""
    paths = CharacterPaths.of(profile.slug)
    for file in (resolved.lora, resolved.path):
        if file is None:
            continue
        folder = Path(file).parent
        if folder.parent != paths.root / "exports":
            continue
        try:
            export = read_json(folder / "manifest.json")
            run_id = export.get("run_id") or folder.name
            run = read_json(paths.run(run_id) / "manifest.json")
        except (CharliteError, OSError, AttributeError):
            return None
        return run if isinstance(run, dict) else None
    return None


# ---------------------------------------------------------------------------------------------
# Hooks for prompts built outside ChatSession (serve, multi-turn interviews)

_SPEAKER_PREFIX = re.compile(r"^[^\n:]{1,60}: ")


def recall_into_messages(
    profile: Profile,
    resolved: ResolvedModel,
    messages: list[dict[str, str]],
    *,
    count_tokens: Callable[[str], int],
    budget: int,
    mode: str | None = None,
) -> list[str]:
    """Recall paragraphs for the newest user message of ``messages`` and put them in front of
    it, as ``charlite chat`` renders a turn (:func:`charlite.roleplay.with_recall`); the system
    message is left as it is. Returns what was recalled (empty when nothing was).

    ``mode`` is the knowledge mode (default: the ``knowledge`` setting), decided for the
    character's model as chat decides it (:func:`use_knowledge`). The recalled text is added
    only when the prompt stays within ``budget`` tokens (the context less the reply).
    """
    if not messages or messages[-1].get("role") != "user":
        return []
    if not use_knowledge(mode or default_knowledge_mode(), profile, resolved):
        return []
    system = messages[0]["content"] if messages[0].get("role") == "system" else ""
    in_system = paragraphs_in(profile, system)
    lines = messages[-1]["content"].split("\n")
    query = " ".join(_SPEAKER_PREFIX.sub("", ln, count=1) for ln in lines)
    recalled = recall(profile, query, exclude=in_system)
    if not recalled:
        return []
    extra = count_tokens(roleplay.with_recall("", recalled))
    used = sum(count_tokens(m["content"]) + roleplay.MESSAGE_OVERHEAD for m in messages)
    if used + extra > budget:
        return []  # a context too small for it: the turn goes without, as in chat
    messages[-1] = {
        **messages[-1],
        "content": roleplay.with_recall(messages[-1]["content"], recalled),
    }
    return recalled
