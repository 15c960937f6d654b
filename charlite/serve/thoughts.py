"""Remove a character's ``(thinking)`` lines from a reply as it streams.

A reply is lines that begin ``(thinking)`` or ``(speaking)`` (see :mod:`charlite.roleplay`); a
line with no marker continues the part above it. The filter lets through only what is said
aloud, piece by piece, holding back the start of each line only until its marker is known
(a few characters, see :func:`could_be_marker`) and trailing blanks until more words follow, so a client
sees the same text whether it streams or not.

>>> f = ThoughtFilter("Beethoven")
>>> f.feed("(thinking) Who is th") + f.feed("is?\\n(speaking) Good ") + f.feed("day.") + f.finish()
'Good day.'
>>> visible_text("(thinking) Hm.")
'Hm.'
"""

from __future__ import annotations

from charlite import roleplay

HEAD = 256
"""Longest line start held back (only runs of blanks get near it; see :func:`could_be_marker`)."""


def visible_text(reply: str, name: str | None = None) -> str:
    """What a client sees of a whole reply: the spoken words, else the thoughts, else the text."""
    f = ThoughtFilter(name)
    return f.feed(reply) + f.finish()


_ACTIONS = ("thinking", "speaking", "think", "speak")
_LABEL_MAX = 42  # roleplay's loose marker: up to 2 of "*_" and a label of at most 40 characters


def could_be_marker(head: str) -> bool:
    """Whether more text could still make ``head`` (a line start) a ``(thinking)``-style marker.

    False once the marker is settled either way: ``(speaking) Hi`` (content has begun),
    ``The visitor is`` past the longest label, ``a: b`` (a label never holds ``:``).

    >>> could_be_marker("Beethoven (speak"), could_be_marker("Hello: there"), could_be_marker("(speaking): H")
    (True, False, False)
    """
    if head.startswith("\\"):
        return False  # an escaped line is never a marker
    rest = head.lstrip()
    before, paren, after = rest.partition("(")
    if ":" in before or ")" in before or len(before.rstrip()) > _LABEL_MAX:
        return False
    if not paren:
        return True
    word, close, tail = after.partition(")")
    if not close:
        return any(a.startswith(word.lower()) for a in _ACTIONS)
    if word.lower() not in _ACTIONS:
        return False
    tail = tail.lstrip()
    if tail.startswith(":"):
        tail = tail[1:].lstrip()
    return not tail  # blanks and one ':' may still follow the marker


class ThoughtFilter:
    """Streamed reply text in, the spoken words out."""

    def __init__(self, name: str | None = None):
        self.name = name
        self._raw: list[str] = []
        self._line = ""  # the start of the current line, while its marker is undecided
        self._decided = False
        self._action: str | None = None  # action of the current part
        self._started = False  # whether the current part has let out any words
        self._pending = ""  # blanks held back inside the current part
        self._emitted = False

    def feed(self, text: str) -> str:
        self._raw.append(text)
        out: list[str] = []
        for ch in text:
            if self._decided:
                if ch == "\n":
                    self._decided, self._line = False, ""
                    self._put("\n", out)
                else:
                    self._put(ch, out)
                continue
            self._line += ch
            if ch == "\n":
                self._decide(self._line[:-1], out)
                self._decided, self._line = False, ""
                self._put("\n", out)
            elif (
                len(self._line) >= HEAD
                or roleplay._MARKER.match(self._line)
                or not could_be_marker(self._line)
            ):
                self._decide(self._line, out)
                self._decided = True
        return "".join(out)

    def finish(self) -> str:
        """The rest: an undecided last line, or, when nothing was said aloud, the thoughts."""
        out: list[str] = []
        if not self._decided and self._line:
            self._decide(self._line, out)
            self._decided = True
        if not self._emitted and not out:
            full = "".join(self._raw)
            return roleplay.thoughts(full, self.name) or full.strip()
        return "".join(out)

    def _decide(self, head: str, out: list[str]) -> None:
        escaped = head.startswith("\\")  # an escaped line is never a marker (as in roleplay)
        m = (
            None
            if escaped
            else (roleplay._MARKER.match(head) or roleplay._loose_match(head, self.name))
        )
        if m:
            group = m.group(m.re.groupindex.get("action", 1)).lower()
            self._start("thinking" if group.startswith("think") else "speaking")
            self._put(head[m.end() :], out)
            return
        if escaped:
            head = head[1:]
        if self._action is None:
            self._start("speaking")
        self._put(head, out)

    def _start(self, action: str) -> None:
        self._action, self._started, self._pending = action, False, ""

    def _put(self, text: str, out: list[str]) -> None:
        if self._action is None:
            if not text.strip():
                return
            self._start("speaking")
        if self._action != "speaking" or not text:
            return
        if not self._started:
            text = text.lstrip()
            if not text:
                return
            self._started = True
            if self._emitted:
                out.append("\n")
        body = (self._pending + text).rstrip()
        if not body:
            self._pending += text
            return
        self._pending = (self._pending + text)[len(body) :]
        if body:
            out.append(body)
            self._emitted = True
