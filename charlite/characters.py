"""Finding characters: the bundled ones shipped with charlite and the ones a user added.

User profiles live at ``CHARLITE_HOME/characters/SLUG/profile.md`` and take precedence over a
bundled profile of the same slug. :func:`load_profile` reads any supported profile file, the
reader chosen by its extension.
"""

from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from charlite import cards
from charlite.errors import CharliteError, NotFoundError, ProfileError
from charlite.files import (
    create_text_exclusive,
    read_text_file,
    remove_stale_temps,
    write_text_atomic,
)
from charlite.home import CharacterPaths, charlite_home, ensure_dir
from charlite.profile import (
    MAX_PROFILE_BYTES,
    Profile,
    build_profile,
    dump_markdown,
    parse_markdown,
    parse_wiki_txt,
    walk_tree,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def bundled_dir(kind: str = "profiles") -> Path:
    """``profiles/`` (or ``modelfiles/``) from an installed wheel, else from the checkout."""
    packaged = resources.files("charlite").joinpath("_bundled", kind)
    if packaged.is_dir():
        return Path(str(packaged))
    return REPO_ROOT / kind


def _read_text(path: Path) -> str:
    return read_text_file(
        path,
        max_bytes=MAX_PROFILE_BYTES,
        error=ProfileError,
        what="profile file",
        too_big=lambda size: (
            f"{size // 1024} KiB is over the {MAX_PROFILE_BYTES // 1024 // 1024} MiB limit for a profile"
        ),
        utf8_hint="save the file as UTF-8",
    )


def load_profile(path: Path | str) -> Profile:
    """Read any supported profile file, chosen by its extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".json", ".png"):
        return cards.load_card_profile(path)
    text = _read_text(path)
    if suffix == ".txt":
        return parse_wiki_txt(text, path)
    if suffix in (".md", ".markdown", ""):
        return parse_markdown(text, path)
    raise ProfileError(
        f"{path}: unknown profile format '{suffix}'",
        hint="use a charlite .md, a Character-LLM wiki .txt or a Character Card .json/.png",
    )


@dataclass(frozen=True)
class CharacterRef:
    slug: str
    path: Path
    bundled: bool


def _bundled_refs() -> dict[str, CharacterRef]:
    folder = bundled_dir()
    if not folder.is_dir():
        return {}
    return {p.stem: CharacterRef(p.stem, p, True) for p in sorted(folder.glob("*.md"))}


def _user_refs() -> dict[str, CharacterRef]:
    folder = charlite_home() / "characters"
    if not folder.is_dir():
        return {}
    return {
        p.parent.name: CharacterRef(p.parent.name, p, False)
        for p in sorted(folder.glob("*/profile.md"))
    }


def character_refs() -> dict[str, CharacterRef]:
    refs = _bundled_refs()
    refs.update(_user_refs())
    return dict(sorted(refs.items()))


def find(name: str) -> CharacterRef:
    """The character called ``name``, or a NotFoundError suggesting the closest one."""
    refs = character_refs()
    key = name.strip().lower()
    if key in refs:
        return refs[key]
    close = difflib.get_close_matches(key, list(refs), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else "run 'charlite characters' to list them"
    raise NotFoundError(f"no character '{name}'", hint=hint)


@lru_cache(maxsize=64)
def _load_cached(path: str, mtime_ns: int, size: int, bundled: bool) -> Profile:
    profile = load_profile(Path(path))
    profile.bundled = bundled
    return profile


def get_profile(name: str) -> Profile:
    """Load and validate a character's profile by slug."""
    ref = find(name)
    st = ref.path.stat()
    return _load_cached(str(ref.path), st.st_mtime_ns, st.st_size, ref.bundled).model_copy(
        deep=True
    )


def all_profiles() -> list[Profile]:
    return [get_profile(slug) for slug in character_refs()]


def add_profile(path: Path, slug: str | None = None, force: bool = False) -> Profile:
    """Import a profile file into CHARLITE_HOME, normalised to charlite Markdown."""
    profile = load_profile(path)
    if slug:
        data = profile.model_dump()
        data["slug"] = slug
        profile = build_profile(data, Path(path), warnings=profile.warnings, source=profile.source)
    refs = character_refs()
    existing = refs.get(profile.slug)
    if existing and not force:
        raise _exists(profile.slug, existing)
    # the size of what will be written, not of what was read: a card or YAML aliases can turn
    # a small file into a profile charlite would then refuse to read. Its text alone is a lower
    # bound, known before the (slow, for megabytes) YAML dump.
    body = sum(len(t.encode("utf-8", "surrogatepass")) for t in profile.paragraph_texts())
    _check_written_size(path, body + _text_bytes(profile.model_dump(exclude={"paragraphs"})))
    text = dump_markdown(profile)
    _check_written_size(path, len(text.encode("utf-8")))
    # with --force a user profile shadows a bundled one; the bundled file is never touched
    for folder in (charlite_home() / "characters").glob("*/"):
        remove_stale_temps(folder / "profile.md")  # left by an add that was killed
    paths = CharacterPaths.of(profile.slug)
    created = not paths.root.exists()
    ensure_dir(paths.root)
    try:
        if force:
            write_text_atomic(paths.profile, text)
        else:  # linked in only if the name is still free: of two adds at once, one wins
            create_text_exclusive(paths.profile, text)
    except FileExistsError:
        raise _exists(profile.slug, CharacterRef(profile.slug, paths.profile, False)) from None
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                paths.root.rmdir()  # only if still empty
        raise
    _load_cached.cache_clear()
    return profile


def _text_bytes(value: object) -> int:
    """UTF-8 bytes of every string in a JSON-like tree (keys included)."""
    return sum(
        len(v.encode("utf-8", "surrogatepass"))
        for v, _, _ in walk_tree(value)
        if isinstance(v, str)
    )


def _check_written_size(path: Path, size: int) -> None:
    if size > MAX_PROFILE_BYTES:
        raise ProfileError(
            f"{path}: the profile would be at least {size / 2**20:.1f} MiB, over the "
            f"{MAX_PROFILE_BYTES // 2**20} MiB limit for a profile",
            hint="shorten the longest fields (description, metadata) and add it again",
        )


def _exists(slug: str, existing: CharacterRef) -> CharliteError:
    where = "a bundled character" if existing.bundled else f"{existing.path}"
    return CharliteError(
        f"a character '{slug}' already exists ({where})",
        hint="choose another name with --name SLUG, or --force to replace a user profile",
    )
