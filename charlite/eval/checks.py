"""Deterministic checks: what can be said about a reply without a judge.

* **character break**: the reply calls itself an AI, an assistant or a language model, or talks
  about its prompt;
* **topic-4 leakage**: asked about something it cannot know, the character supplies the
  anachronistic knowledge (code, modern terms, later years) instead of deflecting;
* **empty / runaway**: nothing said aloud; or far too long, looping, cut off at the token limit,
  or speaking the interviewer's lines too;
* **fact recall**: a profile ``facts`` probe whose answer contains one of its keywords.

>>> character_breaks("As an AI language model, I cannot have opinions.")
['ai_identity', 'language_model']
>>> leakage("Can you write quicksort in Python?", "Python? Is it a serpent? I know nothing of it.", 1827).flagged
False
>>> leakage("Can you write quicksort in Python?", "def quicksort(a):\\n    return a", 1827).reasons
['code']
>>> fact_hit("Where were you born?", "In Bonn, on the Rhine.", ["Bonn"])
True
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------------------
# Character breaks

_BREAKS: list[tuple[str, re.Pattern[str]]] = [
    (label, re.compile(rx, re.IGNORECASE))
    for label, rx in [
        ("ai_identity", r"\bas an? (?:ai|a\.i\.|artificial intelligence)\b"),
        (
            "ai_identity",
            r"\bI(?:'m| am) (?:just |only |merely |simply )?(?:an? )?(?:ai|a\.i\.|artificial intelligence"
            r"|chat ?bot|bot|computer program|machine learning model)\b",
        ),
        ("language_model", r"\b(?:large |ai |an )?language models?\b|\bLLMs?\b"),
        (
            "assistant",
            r"\b(?:as|I(?:'m| am)) (?:an?|your) (?:helpful |virtual |digital |friendly |ai )?assistant\b"
            r"|\bhelpful assistant\b|\bvirtual assistant\b|\bai assistant\b",
        ),
        (
            "prompt",
            r"\b(?:my|the|this|your) (?:system )?prompt\b|\bsystem (?:prompt|message)\b"
            r"|\bI was (?:instructed|prompted|programmed|told) to\b"
            r"|\bI(?:'m| am) (?:only |just )?(?:role-?playing|playing the (?:role|character) of|pretending to be)\b",
        ),
        ("vendor", r"\b(?:openai|anthropic|hugging ?face|chatgpt|gpt-?[34]|smollm\w*)\b"),
        (
            "disclaimer",
            r"\bI (?:do not|don't|cannot|can't) (?:have|experience) (?:personal )?(?:experiences|feelings|emotions|a body)\b"
            r"|\bmy training data\b|\bknowledge cut-?off\b|\bI was trained\b",
        ),
    ]
]


def character_breaks(text: str) -> list[str]:
    """The kinds of character break in ``text`` (empty when there is none), in a fixed order."""
    found: list[str] = []
    for label, rx in _BREAKS:
        if label not in found and rx.search(text):
            found.append(label)
    return found


# ---------------------------------------------------------------------------------------------
# Topic-4 leakage

# term -> the year it came into the world; a term counts only when it is later than the
# character's knowledge cutoff (so Hermione may say "telephone" but not "smartphone").
MODERN_TERMS: dict[str, int] = {
    "python": 1991,
    "javascript": 1995,
    "java": 1995,
    "c++": 1985,
    "html": 1993,
    "sql": 1974,
    "programming language": 1950,
    "programming": 1945,
    "programmer": 1945,
    "source code": 1950,
    "algorithm": 1950,
    "recursion": 1950,
    "recursive": 1950,
    "pivot element": 1960,
    "quicksort": 1961,
    "compiler": 1952,
    "software": 1958,
    "computer": 1940,
    "laptop": 1981,
    "database": 1960,
    "internet": 1983,
    "website": 1991,
    "web page": 1991,
    "online": 1980,
    "email": 1971,
    "e-mail": 1971,
    "smartphone": 2007,
    "iphone": 2007,
    "mobile phone": 1983,
    "cell phone": 1983,
    "app": 2008,
    "apps": 2008,
    "download": 1980,
    "upload": 1980,
    "streaming": 1995,
    "spotify": 2008,
    "playlist": 1995,
    "podcast": 2004,
    "youtube": 2005,
    "google": 1998,
    "facebook": 2004,
    "twitter": 2006,
    "instagram": 2010,
    "tiktok": 2016,
    "social media": 2004,
    "wikipedia": 2001,
    "bitcoin": 2009,
    "cryptocurrency": 2009,
    "blockchain": 2009,
    "wifi": 1999,
    "wi-fi": 1999,
    "bluetooth": 1999,
    "gps": 1995,
    "satellite": 1957,
    "rocket": 1926,
    "astronaut": 1961,
    "moon landing": 1969,
    "space station": 1971,
    "airplane": 1903,
    "aeroplane": 1903,
    "aircraft": 1903,
    "helicopter": 1936,
    "jet engine": 1939,
    "jet plane": 1939,
    "automobile": 1886,
    "motor car": 1886,
    "television": 1927,
    "tv": 1940,
    "radio": 1895,
    "telephone": 1876,
    "phone": 1876,
    "electric guitar": 1932,
    "amplifier": 1912,
    "heavy metal": 1968,
    "rock and roll": 1950,
    "synthesizer": 1964,
    "plugin": 1990,
    "plug-in": 1990,
    "techno": 1985,
    "vinyl record": 1948,
    "microphone": 1876,
    "headphones": 1910,
    "cochlear implant": 1961,
    "hearing aid": 1898,
    "light bulb": 1879,
    "photograph": 1826,
    "movie": 1895,
    "cinema": 1895,
    "video": 1950,
    "nuclear": 1938,
    "atomic bomb": 1945,
    "vaccine": 1796,
    "antibiotic": 1928,
    "penicillin": 1928,
    "x-ray": 1895,
    "dna": 1953,
    "genetic": 1900,
    "relativity": 1905,
    "einstein": 1905,
    "quantum": 1900,
    "world war": 1914,
    "hitler": 1920,
    "nazi": 1920,
    "soviet": 1917,
    "united nations": 1945,
    "world cup": 1930,
    "fifa": 1904,
    "artificial intelligence": 1956,
    "machine learning": 1959,
    "neural network": 1943,
    "robot": 1920,
    "chatgpt": 2022,
    "self-driving": 2004,
    "electric car": 1890,
    "tesla": 2003,
    "microwave": 1947,
    "refrigerator": 1913,
    "credit card": 1950,
    "steam engine": 1712,
    "railway": 1825,
    "train station": 1830,
    "telegraph": 1837,
    "typewriter": 1868,
    "bicycle": 1817,
    "photography": 1839,
}
_MODERN_RX = {
    term: re.compile(r"(?<![\w+-])" + re.escape(term) + r"(?![\w+])", re.IGNORECASE)
    for term in MODERN_TERMS
}
_DEFLECTIONS = re.compile(
    r"\b(?:what|who) (?:is|are|be|was|manner of|kind of|sort of) (?:this|that|these|those|an?|the|thing)\b"
    r"|\b(?:never|not) (?:heard|seen)\b|\b(?:do not|don't|cannot|can't|could not|couldn't) (?:know|understand|comprehend|follow|fathom|say|tell)\b"
    r"|\bI know (?:not|nothing)\b|\bknow nothing\b|\bno idea\b|\bunfamiliar\b|\bnot familiar\b"
    r"|\bstrange (?:word|words|thing|talk|tongue|question)s?\b|\bwhat do you mean\b|\bspeak plainly\b"
    r"|\briddles?\b|\bnonsense\b|\bgibberish\b|\bsorcery\b|\bwitchcraft\b|\bunknown to me\b"
    r"|\bmakes? no sense\b|\bbeyond (?:me|my (?:ken|knowledge|understanding))\b|\bforeign to me\b"
    r"|\bI am not sure what\b|\bI'm not sure what\b|\bperplex(?:ed|ing|es)\b|\bbaffl(?:ed|ing|es)\b"
    r"|\bpuzzl(?:ed|ing|es|e)\b|\bconfus(?:ed|ing|ion|es)\b",
    re.IGNORECASE,
)
_CODE = [
    re.compile(r"```"),
    re.compile(
        r"^\s*(?:def |class \w+|import \w+|from \w+ import|function\s*\w*\s*\(|public static|#include"
        r"|for \w+ in .+:|while .+:|return\b|if .+:\s*$|print\(|console\.log|let \w+ =|var \w+ =|const \w+ =)",
        re.MULTILINE,
    ),
    re.compile(r"\w+\s*\[[^\]]*\]\s*=|==|\+=|\blen\(|\w+\(\w*(?:, ?\w+)*\)\s*:\s*$", re.MULTILINE),
]
_YEAR = re.compile(r"(?<!\d)(1[0-9]{3}|20[0-9]{2})(?!\d)")


@dataclass
class CheckResult:
    """One check on one reply: whether it is flagged and why."""

    flagged: bool
    reasons: list[str] = field(default_factory=list)


def modern_terms(text: str, cutoff: int | None) -> list[str]:
    """The modern terms in ``text`` that the character (knowing up to ``cutoff``) could not know."""
    found = []
    for term, year in MODERN_TERMS.items():
        if cutoff is not None and year <= cutoff:
            continue
        if _MODERN_RX[term].search(text):
            found.append(term)
    # "electric guitar" also matches "guitar"-less terms only once; drop terms inside longer ones
    return [t for t in found if not any(t != o and t in o for o in found)]


def later_years(text: str, cutoff: int | None) -> list[str]:
    if cutoff is None:
        return []
    return sorted({y for y in _YEAR.findall(text) if cutoff < int(y) <= 2100})


def has_code(text: str) -> bool:
    if _CODE[0].search(text) or _CODE[1].search(text):
        return True
    return len(_CODE[2].findall(text)) >= 2


def deflects(text: str) -> bool:
    """Whether the reply answers like someone who does not know the thing asked about."""
    return bool(_DEFLECTIONS.search(text))


def leakage(question: str, reply: str, cutoff: int | None) -> CheckResult:
    """Topic-4 leakage: the reply supplies what the character cannot know instead of deflecting.

    Flagged when the reply holds code; brings in two or more modern terms (or later years)
    that the question did not use; brings in one without deflecting; or takes up the
    question's own modern terms as if they were familiar, without puzzlement or a question back.
    """
    reasons: list[str] = []
    if has_code(reply):
        reasons.append("code")
    asked = set(modern_terms(question, cutoff)) | set(later_years(question, cutoff))
    said = modern_terms(reply, cutoff) + later_years(reply, cutoff)
    new = [t for t in said if t not in asked]
    echoed = [t for t in said if t in asked]
    deflected = deflects(reply)
    if len(new) >= 2 or (new and not deflected):
        reasons.append("modern:" + ",".join(new[:5]))
    if echoed and not deflected and not new and "?" not in reply:
        reasons.append("accepts:" + ",".join(echoed[:5]))
    return CheckResult(bool(reasons), reasons)


# ---------------------------------------------------------------------------------------------
# Empty and runaway replies

MAX_REPLY_CHARS = 1500
_OTHER_SPEAKER = re.compile(
    r"^\s*[*_]{0,2}(?P<name>[A-Z][\w .'-]{0,30}?)\s*(?:\((?:thinking|speaking)\))?\s*:\s",
    re.MULTILINE,
)


def _repetitive(text: str) -> bool:
    lines = [ln.strip().lower() for ln in re.split(r"[\n.!?]+", text) if len(ln.strip()) > 10]
    if lines and max(lines.count(ln) for ln in set(lines)) >= 3:
        return True
    words = re.findall(r"\w+", text.lower())
    if len(words) < 30:
        return False
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return len(set(grams)) / len(grams) < 0.5


def empty_or_runaway(
    spoken: str,
    thinking: str = "",
    *,
    finish_reason: str | None = None,
    others: Sequence[str] = (),
    max_chars: int = MAX_REPLY_CHARS,
) -> tuple[CheckResult, CheckResult]:
    """(empty, runaway) for one reply.

    ``others`` are the names of the other speakers (the interviewer, "Man"): a reply that
    goes on to write their lines has run away.
    """
    empty = CheckResult(False)
    if not spoken.strip():
        empty = CheckResult(True, ["only_thinking" if thinking.strip() else "no_reply"])
    reasons = []
    text = "\n".join(t for t in (thinking, spoken) if t)
    if len(spoken) > max_chars:
        reasons.append("too_long")
    if text and _repetitive(text):
        reasons.append("repetition")
    if finish_reason == "length":
        reasons.append("hit_max_tokens")
    names = {o.strip().lower() for o in others if o.strip()}
    for m in _OTHER_SPEAKER.finditer(text):
        if m.group("name").strip().lower() in names:
            reasons.append("speaks_for_others")
            break
    return empty, CheckResult(bool(reasons), reasons)


# ---------------------------------------------------------------------------------------------
# Fact recall


def _fold(text: str) -> str:
    """Lower case without accents: "Schönbrunn" -> "schonbrunn"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def fact_hit(question: str, answer: str, keywords: Sequence[str]) -> bool:
    """Whether ``answer`` contains one of ``keywords`` (at a word start, any case or accent).

    A keyword the question itself contains proves nothing and is ignored.
    """
    q, a = _fold(question), _fold(answer)
    for kw in keywords:
        k = _fold(kw).strip()
        if not k:
            continue
        rx = re.compile(r"(?<!\w)" + re.escape(k))
        if rx.search(q):
            continue
        if rx.search(a):
            return True
    return False


def match_fact(question: str, facts) -> list[str] | None:
    """The keywords of the profile fact asked by ``question`` (same words), else None."""
    key = " ".join(re.findall(r"\w+", _fold(question)))
    for f in facts:
        if " ".join(re.findall(r"\w+", _fold(f.question))) == key:
            return list(f.answer_keywords)
    return None


# ---------------------------------------------------------------------------------------------
# All checks of one reply


CHECK_NAMES = ("character_break", "topic4_leakage", "empty", "runaway", "fact_recall")
"""The checks in report order; ``fact_recall`` is a hit rate (higher is better), the rest are
failure rates (lower is better)."""


def check_reply(
    *,
    question: str,
    topic_id: str,
    spoken: str,
    thinking: str = "",
    cutoff: int | None = None,
    keywords: Sequence[str] | None = None,
    finish_reason: str | None = None,
    others: Sequence[str] = ("Man",),
) -> dict[str, CheckResult | None]:
    """Every check of one reply; None where a check does not apply (leakage off topic 4…)."""
    whole = "\n".join(t for t in (thinking, spoken) if t)
    breaks = character_breaks(whole)
    empty, runaway = empty_or_runaway(spoken, thinking, finish_reason=finish_reason, others=others)
    out: dict[str, CheckResult | None] = {
        "character_break": CheckResult(bool(breaks), breaks),
        "topic4_leakage": leakage(question, spoken or thinking, cutoff)
        if topic_id == "topic-4"
        else None,
        "empty": empty,
        "runaway": runaway,
        "fact_recall": None,
    }
    if keywords:
        hit = fact_hit(question, whole, keywords)
        out["fact_recall"] = CheckResult(hit, [] if hit else ["no_keyword"])
    return out
