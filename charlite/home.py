"""Where every artifact lives under CHARLITE_HOME.

``CHARLITE_HOME`` if set, else the platform's user data folder. Everything else derives from
:func:`charlite_home`, so tests point it at a temporary folder and touch nothing else.

Layout::

    config.json                           defaults set with charlite config (charlite.settings)
    history.sqlite                        chat sessions and turns (with its -wal/-shm files)
    characters/SLUG/profile.md            user-added profiles (charlite add)
    characters/SLUG/data/DATASET/         scenes.jsonl, experiences.jsonl, protective.jsonl,
                                          failures.jsonl, manifest.json, .lock (charlite generate)
    characters/SLUG/runs/RUN/             adapter/, manifest.json, metrics.jsonl, checkpoints/
                                          while resumable (charlite train)
    characters/SLUG/exports/RUN/          SLUG-lora.gguf, SLUG-QUANT.gguf, Modelfile,
                                          Modelfile.adapter, manifest.json (charlite export)
    characters/SLUG/interviews/           STAMP-MODE.json: interview results (charlite interview)
    eval/DIGEST/                          scores.jsonl: judgements without --report (charlite eval)
    models/NAME/                          a pulled GGUF and its manifest.json (charlite pull)
    models/.downloads/NAME/               FILE.part while a download is unfinished
    cache/bases/HASH/                     prepared training bases (safetensors, tokenizer, base.json)
    cache/gguf/KEY/                       base-F16-TOOL.gguf: a Hugging Face base converted for export
    cache/persona/KEY.state               evaluated system prompts, restored to skip re-evaluation
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from charlite.errors import CharliteError, StorageError

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}", re.IGNORECASE)
"""A whole name (use ``fullmatch``: ``$`` would also match before a final newline)."""


def charlite_home() -> Path:
    """The data folder: ``$CHARLITE_HOME`` or the platform's user data folder."""
    env = os.environ.get("CHARLITE_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("charlite", appauthor=False))


def check_name(name: str, what: str = "name") -> str:
    """Refuse names that could escape their folder (``..``, ``/``) or are not simple words.

    >>> check_name("beethoven")
    'beethoven'
    >>> bool(NAME_RE.fullmatch("beethoven\\n"))
    False
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        shown = name if not isinstance(name, str) or len(name) <= 70 else name[:67] + "..."
        raise CharliteError(
            f"invalid {what} {shown!r}",
            hint="use letters, digits, '-', '_' or '.', starting with a letter or digit",
        )
    return name


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and parents) or explain why it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create {path}: {exc.strerror or exc}",
            hint="set CHARLITE_HOME to a writable folder",
        ) from None
    if not os.access(path, os.W_OK):
        raise StorageError(f"{path} is not writable", hint="set CHARLITE_HOME to a writable folder")
    return path


@dataclass(frozen=True)
class CharacterPaths:
    """The folders of one character under CHARLITE_HOME."""

    slug: str
    root: Path

    @classmethod
    def of(cls, slug: str, home: Path | None = None) -> CharacterPaths:
        check_name(slug, "character name")
        return cls(slug, (home or charlite_home()) / "characters" / slug)

    @property
    def profile(self) -> Path:
        return self.root / "profile.md"

    def dataset(self, name: str = "default") -> Path:
        return self.root / "data" / check_name(name, "dataset name")

    def run(self, run_id: str) -> Path:
        return self.root / "runs" / check_name(run_id, "run id")

    def export(self, run_id: str) -> Path:
        return self.root / "exports" / check_name(run_id, "run id")

    def datasets(self) -> list[str]:
        return _subdirs(self.root / "data")

    def runs(self) -> list[str]:
        return _subdirs(self.root / "runs")

    def exports(self) -> list[str]:
        return _subdirs(self.root / "exports")


def choices_hint(have: list[str], listing: str, otherwise: str) -> str:
    """The hint for a missing name: ``listing: a, b`` of the ones there are, else ``otherwise``."""
    return f"{listing}: {', '.join(have)}" if have else otherwise


def _subdirs(path: Path) -> list[str]:
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def cache_dir(*parts: str) -> Path:
    return charlite_home().joinpath("cache", *parts)


def history_db() -> Path:
    return charlite_home() / "history.sqlite"
