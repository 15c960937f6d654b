"""The Profile: who a character is, and its two text forms.

* charlite Markdown (``.md``): YAML front matter (name, slug, era, knowledge_cutoff, scene, …)
  then paragraphs separated by blank lines (:func:`parse_markdown`, :func:`dump_markdown`).
* Character-LLM wiki text (``wiki_Name.txt``): first line ``# Full Name``, then paragraphs; a
  paragraph may begin with a section heading line (:func:`parse_wiki_txt`).

Files are read elsewhere: :func:`charlite.characters.load_profile` picks the reader by a file's
extension, and Character Cards are mapped onto the same model by :mod:`charlite.cards`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from charlite.errors import ProfileError

MAX_PROFILE_BYTES = 5 * 1024 * 1024
MAX_FRONT_MATTER_DEPTH = 128
"""Deeper nesting is refused (pydantic cannot serialise past ~255 levels)."""
MAX_FRONT_MATTER_VALUES = 500_000
"""YAML aliases can make a small file a huge tree ("billion laughs"): count values as expanded."""
SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
"""A whole slug (``fullmatch``: ``$`` would also match before a final newline)."""
DEFAULT_USER = "Visitor"
"""The name of the one a character talks to when none is given: a chat user's lines that come
back from stored messages without a name, ``{{user}}`` in a Character Card."""


class Fact(BaseModel):
    """A recall probe: a question to the character and keywords a correct answer contains."""

    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1)
    answer_keywords: list[str] = Field(min_length=1)


class Scene(BaseModel):
    """Where the character is and what is going on: the ``Location:`` and ``Status:`` lines."""

    model_config = ConfigDict(extra="forbid")
    location: str = Field(min_length=1)
    status: str = Field(min_length=1)


class Paragraph(BaseModel):
    """One paragraph of the profile; ``heading`` is the section it sits under, if any."""

    text: str
    heading: str | None = None


class Profile(BaseModel):
    """A character. Bundled profiles live in ``profiles/``, user ones under CHARLITE_HOME."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    """Full name, e.g. "Ludwig van Beethoven"."""
    slug: str
    """Folder and command name, e.g. "beethoven"."""
    short_name: str = ""
    """The speaker label in dialogues, e.g. "Beethoven". Defaults to the name's last word."""
    era: str = "unknown"
    """Years or the fictional period."""
    knowledge_cutoff: int | None = None
    """The last year the character can know about (negative: BC)."""
    home: str = ""
    scene: Scene | None = None
    """The default scene of a chat."""
    speaking_style: str = ""
    traits: list[str] = []
    facts: list[Fact] = []
    license: str | None = None
    example_dialogue: list[str] = []
    """Example exchanges (from a card's first_mes / mes_example)."""
    metadata: dict[str, Any] = {}
    """Fields charlite does not use, kept so an export can give them back (cards)."""
    paragraphs: list[Paragraph] = Field(min_length=1)

    source: str | None = Field(default=None, exclude=True)
    bundled: bool = Field(default=False, exclude=True)
    warnings: list[str] = Field(default_factory=list, exclude=True)

    @field_validator("slug")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not SLUG_RE.fullmatch(v):
            raise ValueError("must be lowercase letters, digits and '-' (e.g. 'beethoven')")
        return v

    @field_validator("traits", "example_dialogue")
    @classmethod
    def _strings(cls, v: list[str]) -> list[str]:
        return [s for s in (str(x).strip() for x in v) if s]

    def model_post_init(self, __context: Any) -> None:
        if not self.short_name:
            self.short_name = self.name.split()[-1] if self.name.split() else self.name

    @property
    def default_scene(self) -> Scene:
        if self.scene:
            return self.scene
        return Scene(
            location=self.home or "a quiet room",
            status=f"{self.short_name} is talking with a visitor.",
        )

    def digest(self) -> str:
        """A stable hash of everything that shapes prompts and training data."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    def paragraph_texts(self) -> list[str]:
        return [p.text for p in self.paragraphs]


# ---------------------------------------------------------------------------------------------
# Reading


def slugify(name: str) -> str:
    """A folder-safe name: lowercase letters, digits and ``-``.

    >>> slugify("Ludwig van Beethoven")
    'ludwig-van-beethoven'
    """
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:64].strip("-") or "character"


def _is_plain_heading(line: str) -> bool:
    """A short line with no closing punctuation, like Wikipedia's "Family and early life"."""
    line = line.strip()
    return 0 < len(line) <= 80 and line[-1] not in ".!?,;:\"'”’)]"


def split_paragraphs(body: str, plain_headings: bool = False) -> list[Paragraph]:
    """Paragraphs separated by blank lines; a leading ``#`` line is the section heading.

    With ``plain_headings`` (Character-LLM wiki text), a short unpunctuated first line followed
    by more lines is a heading too.

    >>> [p.text for p in split_paragraphs("One.\\n\\n## Later\\nTwo.")]
    ['One.', 'Two.']
    >>> [(p.heading, p.text) for p in split_paragraphs("Early life\\nBorn in Bonn.", True)]
    [('Early life', 'Born in Bonn.')]
    """
    paragraphs: list[Paragraph] = []
    heading: str | None = None
    for block in re.split(r"\n\s*\n", body.replace("\r\n", "\n")):
        lines = [ln.rstrip() for ln in block.strip().split("\n") if ln.strip()]
        while lines and lines[0].lstrip().startswith("#"):
            heading = lines.pop(0).lstrip("#").strip() or heading
        if plain_headings and len(lines) > 1 and _is_plain_heading(lines[0]):
            heading = lines.pop(0).strip()
        if not lines:
            continue
        text = " ".join(ln.strip() for ln in lines)
        paragraphs.append(Paragraph(text=text, heading=heading))
    return paragraphs


def _validation_message(path: Path, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "profile"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{path}: field '{loc}': {err['msg']}{more}"


def build_profile(data: dict[str, Any], path: Path, **extra: Any) -> Profile:
    try:
        return Profile.model_validate({**data, **extra})
    except ValidationError as exc:
        raise ProfileError(_validation_message(path, exc)) from None


_PLAIN_YAML = (str, int, float, bool, type(None), datetime.date)
"""Scalar types a profile keeps (YAML timestamps read as dates are written back as text)."""


def walk_tree(value: Any) -> Iterator[tuple[Any, int, bool]]:
    """Every node of a JSON- or YAML-like tree with its depth (the root is 1) and whether it is a
    mapping key; mappings, lists, tuples and sets are walked into, keys included.

    >>> list(walk_tree({"a": [1]}))
    [({'a': [1]}, 1, False), ('a', 2, True), ([1], 2, False), (1, 3, False)]
    """
    stack: list[tuple[Any, int, bool]] = [(value, 1, False)]
    while stack:
        item, depth, is_key = stack.pop()
        yield item, depth, is_key
        if isinstance(item, dict):
            for key, child in item.items():
                stack.append((child, depth + 1, False))
                stack.append((key, depth + 1, True))
        elif isinstance(item, (list, tuple, set)):
            stack.extend((child, depth + 1, False) for child in item)


def _check_front_matter(meta: dict[str, Any], path: Path) -> None:
    """Refuse front matter nested too deep, with too many values or too much text (aliases
    counted expanded), or with values that cannot be written back as text (``!!binary``)."""
    count = 0
    chars = 0
    for value, depth, is_key in walk_tree(meta):
        if is_key and isinstance(value, _PLAIN_YAML):
            chars += len(value) if isinstance(value, str) else 0
            continue
        count += 1
        if count > MAX_FRONT_MATTER_VALUES:
            raise ProfileError(
                f"{path}: the front matter has more than {MAX_FRONT_MATTER_VALUES} values",
                hint="YAML aliases (*name) repeat whole trees; write the values out",
            )
        if depth > MAX_FRONT_MATTER_DEPTH:
            raise ProfileError(
                f"{path}: the front matter is nested more than {MAX_FRONT_MATTER_DEPTH} levels deep"
            )
        if isinstance(value, (dict, list, tuple, set)):
            continue
        if not isinstance(value, _PLAIN_YAML):
            kind = "binary data (!!binary)" if isinstance(value, bytes) else type(value).__name__
            raise ProfileError(
                f"{path}: the front matter holds {kind}, which a profile cannot keep",
                hint="use text, numbers, lists and mappings",
            )
        if isinstance(value, str):
            chars += len(value)
            if chars > MAX_PROFILE_BYTES:
                raise ProfileError(
                    f"{path}: the front matter expands to more than "
                    f"{MAX_PROFILE_BYTES // 1024 // 1024} MiB of text",
                    hint="YAML aliases (*name) repeat whole trees; write the values out",
                )


def parse_markdown(text: str, path: Path) -> Profile:
    """A charlite ``.md`` profile: YAML front matter between ``---`` lines, then paragraphs."""
    meta: dict[str, Any] = {}
    text = text.replace("\r\n", "\n")  # a profile saved on Windows
    body = text
    stripped = text.lstrip()
    if stripped.startswith("---"):
        parts = re.split(r"^---[ \t]*$", stripped, maxsplit=2, flags=re.MULTILINE)
        if len(parts) < 3:
            raise ProfileError(f"{path}: front matter starts with '---' but never ends")
        try:
            meta = yaml.load(parts[1], Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 2}" if mark else ""
            raise ProfileError(f"{path}: front matter is not valid YAML{where}") from None
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            # e.g. an integer of thousands of digits (Python's int limit), a bad !!timestamp
            why = str(exc).split(";")[0]
            raise ProfileError(
                f"{path}: front matter holds a value charlite cannot read: {why}"
            ) from None
        if not isinstance(meta, dict):
            raise ProfileError(f"{path}: front matter must be a mapping of fields")
        _check_front_matter(meta, path)
        body = parts[2]
    warnings: list[str] = []
    if "name" not in meta:
        first = re.match(r"\s*#\s+(.+)", body)
        if first:
            meta["name"] = first.group(1).strip()
            body = body[first.end() :]
        else:
            raise ProfileError(
                f"{path}: field 'name' is missing", hint="add 'name:' to the front matter"
            )
    if "slug" not in meta and isinstance(meta.get("name"), str):
        meta["slug"] = slugify(meta["name"])
    paragraphs = split_paragraphs(body)
    if not paragraphs:
        raise ProfileError(
            f"{path}: the profile has no paragraphs",
            hint="write the character's story below the front matter",
        )
    for key, default in (("era", "unknown"), ("knowledge_cutoff", None)):
        if key not in meta:
            warnings.append(
                f"no '{key}' in {path.name}; add it so the character knows what it cannot know"
            )
            meta.setdefault(key, default)
    return build_profile(meta, path, paragraphs=paragraphs, source=str(path), warnings=warnings)


def parse_wiki_txt(text: str, path: Path) -> Profile:
    """A Character-LLM ``wiki_Name.txt``: ``# Full Name`` then paragraphs."""
    lines = text.replace("\r\n", "\n").split("\n")
    first = next((ln for ln in lines if ln.strip()), "")
    if first.startswith("#"):
        name = first.lstrip("#").strip()
        body = text.split(first, 1)[1]
    else:
        stem = path.stem
        name = stem[5:] if stem.lower().startswith("wiki_") else stem
        name = name.replace("_", " ").strip() or "Unknown"
        body = text
    paragraphs = split_paragraphs(body, plain_headings=True)
    if not paragraphs:
        raise ProfileError(f"{path}: the profile has no paragraphs")
    warnings = [
        f"{path.name} has no era, knowledge cutoff or scene; edit the profile to add them "
        "(charlite show NAME prints where it is)"
    ]
    meta = {"name": name, "slug": slugify(name.split()[-1] if name.split() else name)}
    return build_profile(meta, path, paragraphs=paragraphs, source=str(path), warnings=warnings)


# ---------------------------------------------------------------------------------------------
# Writing


class _Dumper(yaml.SafeDumper):
    """Double-quotes strings holding NEL/LS/PS, which PyYAML would read back as spaces."""


def _represent_str(dumper: yaml.SafeDumper, value: str):
    style = '"' if any(c in value for c in "\x85\u2028\u2029") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_markdown(profile: Profile) -> str:
    """The charlite ``.md`` form of a profile; :func:`parse_markdown` reads it back unchanged."""
    meta = profile.model_dump(mode="json", exclude={"paragraphs"}, exclude_defaults=True)
    meta["name"], meta["slug"] = profile.name, profile.slug
    ordered = {k: meta[k] for k in ("name", "slug") if k in meta}
    ordered.update({k: v for k, v in meta.items() if k not in ordered})
    front = yaml.dump(ordered, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return f"---\n{front}---\n\n" + render_paragraphs(profile.paragraphs) + "\n"


def render_paragraphs(paragraphs: list[Paragraph]) -> str:
    """Paragraphs separated by blank lines, a ``## heading`` line opening each new section:
    what :func:`split_paragraphs` reads back.

    >>> render_paragraphs([Paragraph(text="A.", heading="Early"), Paragraph(text="B.", heading="Early")])
    '## Early\\nA.\\n\\nB.'
    """
    chunks = []
    heading = None
    for p in paragraphs:
        if p.heading and p.heading != heading:
            chunks.append(f"## {p.heading}\n{p.text}")
        else:
            chunks.append(p.text)
        heading = p.heading
    return "\n\n".join(chunks)
