"""Replies cut by the token limit, trimmed to their last full sentence.

SillyTavern users know this as "trim incomplete sentences": a reply that stopped because it
reached ``max_tokens`` usually ends mid-word; showing it up to its last full sentence reads
better. A reply with no full sentence at all is kept as it is (nothing better to show).

>>> trim_incomplete("I was born in Bonn. My father was a sing")
'I was born in Bonn.'
>>> trim_incomplete('He said "Enough!" and then')
'He said "Enough!"'
>>> trim_incomplete("no sentence ends here")
'no sentence ends here'
"""

from __future__ import annotations

import re

# a sentence end: . ! ? or … then any closing quotes/brackets/emphasis, then a space or the end
_END = re.compile(r"[.!?…][\"'”’»)\]*_]*(?=\s|\Z)")


def trim_incomplete(text: str) -> str:
    """``text`` up to the end of its last full sentence (the whole text if it has none)."""
    ends = [m.end() for m in _END.finditer(text)]
    return text[: ends[-1]] if ends else text
