"""A profile's sentences told by the character: third person turned into the first.

Profiles are written about a character ("Beethoven left Bonn in 1792 with his brother."); the
character speaks of itself ("I left Bonn in 1792 with my brother."). The profile-grounded
dataset (:mod:`charlite.experience.grounded`) tells every answer this way.

The rewrite is a small rule set: the character's names and third-person pronouns become
I/me/my by where they stand. It is right for most biography sentences and never invents
content; a "he" that means someone else becomes "I" too. A profile already written in the
first person is left as it is (:meth:`Names.tell`).

>>> first_person("Beethoven left Bonn in 1792 with his brother.", ["Beethoven"], "he")
'I left Bonn in 1792 with my brother.'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from charlite.profile import Profile


@dataclass(frozen=True)
class Names:
    """How the profile refers to the character, and with which pronouns."""

    names: tuple[str, ...]
    pronoun: str  # "he", "she" or "they"
    told_in_first_person: bool = False
    """The profile is written in the first person already: its sentences stay as they are."""

    def tell(self, sentence: str) -> str:
        """``sentence`` of the profile as the character tells it (:func:`first_person`)."""
        if self.told_in_first_person:
            return sentence
        return first_person(sentence, self.names, self.pronoun)


_PRONOUNS = {"he": r"\b(?:he|his|him)\b", "she": r"\b(?:she|her|hers)\b"}
_FIRST = re.compile(r"\b(?:I|[Mm]e|[Mm]y|[Mm]ine|[Mm]yself)\b")


def character_names(profile: Profile) -> Names:
    full = profile.name.strip()
    parts = [p for p in full.split() if len(p) > 2 and p[0].isupper()]
    names = sorted({full, profile.short_name, *parts}, key=len, reverse=True)
    text = " ".join(profile.paragraph_texts())
    lower = text.lower()
    he, she = (len(re.findall(_PRONOUNS[p], lower)) for p in ("he", "she"))
    pronoun = "he" if he >= she else "she"
    # more I/me/my than he/his/him (she/her): the profile speaks as the character
    first = len(_FIRST.findall(text)) > max(he, she)
    return Names(tuple(n for n in names if n), pronoun, first)


_SUBJECT_AFTER = {
    "and", "but", "or", "when", "while", "that", "as", "because", "so", "where", "after",
    "before", "until", "since", "though", "although", "if", "then", "once", "yet", "which",
    "who", "whom",
}  # fmt: skip
_NOT_AFTER_MY = (
    "and|or|but|to|in|as|at|on|with|that|for|from|by|after|before|when|because|so|up|down|"
    "out|off|into|again|back|over|away|until|while|if|than|the|a|an"
)
_PREVIOUS_WORD = re.compile(r"([A-Za-z]+)\W*$")


def _object_position(before: str) -> bool:
    """Whether a name after ``before`` is an object ("offered Beethoven a post")."""
    if not before.strip() or before.rstrip().endswith((",", ";", ":", ".", "(")):
        return False
    m = _PREVIOUS_WORD.search(before)
    if not m:
        return False
    word = m.group(1)
    return word.islower() and word not in _SUBJECT_AFTER


_PARTICLE_BEFORE = re.compile(r"(?:\b(?:van|von|de|da|del|di|le|la)\s+|[A-Z][\w'’-]*\s+)$")


def _replace_name(text: str, name: str, full: bool) -> str:
    """``name`` in ``text`` as I, me or my, by where it stands."""
    pattern = re.compile(rf"(?<![\w-]){re.escape(name)}(?:'s|’s)?(?![\w-])")

    def swap(m: re.Match) -> str:
        before = text[: m.start()]
        if not full and _PARTICLE_BEFORE.search(before):
            return m.group(0)  # "Johann van Beethoven" is someone else
        if m.group(0).endswith(("'s", "’s")):
            return "My" if _at_start(before) else "my"
        if _object_position(before):
            return "me"
        return "I"

    return pattern.sub(swap, text)


_PRONOUN_SWAPS: dict[str, tuple[tuple[str, str], ...]] = {
    "she": (
        (r"\bShe\b", "I"),
        (r"\bshe\b", "I"),
        (r"\bherself\b", "myself"),
        (r"\bHer\b", "My"),
        (rf"\bher(?=\s+\w)(?!\s+(?:{_NOT_AFTER_MY})\b)", "my"),
        (r"\bher\b", "me"),
        (r"\bhers\b", "mine"),
    ),
    "he": (
        (r"\bHe\b", "I"),
        (r"\bhe\b", "I"),
        (r"\bhimself\b", "myself"),
        (r"\bHis\b", "My"),
        (r"\bhis\b", "my"),
        (r"\bhim\b", "me"),
    ),
}
_VERB_AGREEMENT = ((r"\bI is\b", "I am"), (r"\bI has\b", "I have"), (r"\bI does\b", "I do"))


def first_person(sentence: str, names: list[str] | tuple[str, ...], pronoun: str = "he") -> str:
    """A third-person sentence about the character, told by the character."""
    text = sentence
    for n, name in enumerate(names):
        text = _replace_name(text, name, full=n == 0)
    for pattern, repl in (*_PRONOUN_SWAPS.get(pronoun, ()), *_VERB_AGREEMENT):
        text = re.sub(pattern, repl, text)
    return text[:1].upper() + text[1:] if text else text


def _at_start(before: str) -> bool:
    return not before.strip() or before.rstrip().endswith((".", "!", "?", '"', "“"))
