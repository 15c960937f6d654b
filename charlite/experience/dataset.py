"""A character's dataset folder: its JSONL stores, its manifest and its lock.

``characters/SLUG/data/DATASET/`` holds ``scenes.jsonl``, ``experiences.jsonl``,
``protective.jsonl`` (append-only, one record a line), ``failures.jsonl`` (one line per failed
teacher attempt) and ``manifest.json`` (written atomically, with a ``format`` version).

Only one process writes a dataset at a time: :meth:`Dataset.lock` takes an exclusive lock that
the operating system releases when the process dies, even by ``kill -9``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from charlite import __version__
from charlite.errors import DataError, StorageError
from charlite.experience.schemas import DATASET_FORMAT, STAGE_FILES, Experience, SceneRecord
from charlite.files import read_json, read_jsonl, write_json_atomic
from charlite.home import CharacterPaths, check_name, choices_hint, ensure_dir

FAILURES_FILE = "failures.jsonl"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"
MANIFEST_KIND = "charlite.dataset"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


class DatasetBusy(DataError):
    """Another charlite process is writing this dataset."""


class Dataset:
    """The dataset ``name`` of character ``slug``."""

    def __init__(self, slug: str, name: str = "default"):
        self.slug = slug
        self.name = check_name(name, "dataset name")
        self.path = CharacterPaths.of(slug).dataset(name)

    def __repr__(self) -> str:
        return f"Dataset({self.slug!r}, {self.name!r})"

    @property
    def label(self) -> str:
        return f"{self.slug}/{self.name}"

    def file(self, stage: str) -> Path:
        return self.path / STAGE_FILES[stage]

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def failures_path(self) -> Path:
        return self.path / FAILURES_FILE

    def exists(self) -> bool:
        return self.path.is_dir() and (
            self.manifest_path.exists() or any(self.file(s).exists() for s in STAGE_FILES)
        )

    def require(self) -> Dataset:
        if not self.exists():
            hint = choices_hint(
                CharacterPaths.of(self.slug).datasets(),
                "its datasets",
                f"run 'charlite generate {self.slug}' or 'charlite data import {self.slug} FILE'",
            )
            raise DataError(f"{self.slug} has no dataset '{self.name}'", hint=hint)
        return self

    def create(self) -> Path:
        """Make the folder, or explain why it cannot be written."""
        ensure_dir(self.path)
        return self.path

    # -- manifest ---------------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        data = read_json(self.manifest_path)
        fmt = data.get("format") if isinstance(data, dict) else None
        if not isinstance(fmt, int) or isinstance(fmt, bool):
            raise DataError(
                f"{self.manifest_path} is not a charlite dataset manifest",
                hint="move the folder away or use another --dataset",
            )
        if data["format"] > DATASET_FORMAT:
            raise DataError(
                f"{self.manifest_path} has format {data['format']}, newer than this charlite "
                f"reads ({DATASET_FORMAT})",
                hint="upgrade charlite",
            )
        return data

    def new_manifest(self, profile_hash: str | None = None) -> dict[str, Any]:
        return {
            "format": DATASET_FORMAT,
            "kind": MANIFEST_KIND,
            "character": self.slug,
            "dataset": self.name,
            "profile_hash": profile_hash,
            "teacher": None,
            "teachers": [],
            "prompt_version": None,
            "seed": None,
            "parameters": {},
            "counts": {},
            "expected": {},
            "failures": {},
            "status": "empty",
            "sources": [],
            "runs": [],
            "created": now(),
            "updated": now(),
            "charlite_version": __version__,
        }

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        manifest["updated"] = now()
        manifest["counts"] = self.counts()
        manifest["failures"] = self.failure_counts()
        write_json_atomic(self.manifest_path, manifest)

    # -- records -----------------------------------------------------------------------------

    def raw(self, stage: str) -> list[dict]:
        """Records of one stage in file order, the first of any repeated id kept."""
        seen: set[str] = set()
        out = []
        for rec in read_jsonl(self.file(stage)):
            if not isinstance(rec, dict):
                continue
            rid = rec.get("id")
            if rid is not None and not isinstance(rid, (list, dict)):  # unhashable: no id
                if rid in seen:
                    continue
                seen.add(rid)
            out.append(rec)
        return out

    def ids(self, stage: str) -> set[str]:
        return {r["id"] for r in self.raw(stage) if isinstance(r.get("id"), str)}

    def scenes(self) -> list[SceneRecord]:
        out = []
        for rec in self.raw("scenes"):
            with contextlib.suppress(ValidationError):
                out.append(SceneRecord.model_validate(rec))
        return out

    def experiences(self, stage: str = "experiences") -> list[Experience]:
        out = []
        for rec in self.raw(stage):
            with contextlib.suppress(ValidationError):
                out.append(Experience.model_validate(rec))
        return out

    def all_experiences(self) -> list[Experience]:
        return self.experiences("experiences") + self.experiences("protective")

    def counts(self) -> dict[str, int]:
        return {stage: len(self.raw(stage)) for stage in STAGE_FILES}

    def failures(self) -> list[dict]:
        return [r for r in read_jsonl(self.failures_path) if isinstance(r, dict)]

    def failure_counts(self) -> dict[str, int]:
        counts = Counter(str(r.get("reason", "unknown")) for r in self.failures())
        return dict(sorted(counts.items()))

    # -- lock --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, what: str = "charlite") -> Iterator[None]:
        """Hold the dataset's write lock, or raise :class:`DatasetBusy` at once."""
        self.create()
        path = self.path / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(
                f"cannot create the lock file {path}: {exc.strerror or exc}",
                hint="make the dataset folder writable",
            ) from None
        try:
            if not _try_lock(fd):
                holder = _read_pid(fd)
                who = f" (pid {holder})" if holder else ""
                raise DatasetBusy(
                    f"dataset '{self.name}' of {self.slug} is being written by another charlite "
                    f"process{who}",
                    hint="wait for it to finish, or use another --dataset",
                )
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                _unlock(fd)
        finally:
            os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None
