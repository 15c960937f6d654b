"""GGUFs fetched with ``charlite pull``: where they live and the short names they answer to.

Layout under CHARLITE_HOME::

    models/NAME/FILE.gguf          the verified file
    models/NAME/manifest.json      repo, file, revision, sha256, size: written last, so a
                                   folder without it is not a pulled model
    models/.downloads/...          huggingface_hub's resumable partial downloads

``NAME`` is the short name every ``--model`` accepts (``--model qwen2.5-3b``): see
:func:`charlite.spec.parse_spec`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from charlite.files import read_json
from charlite.home import NAME_RE, charlite_home

MANIFEST = "manifest.json"
MANIFEST_KIND = "charlite-pulled-model"


@dataclass(frozen=True)
class PulledModel:
    name: str
    path: Path
    repo: str
    filename: str
    revision: str
    sha256: str
    size: int
    pulled_at: str


def models_dir() -> Path:
    return charlite_home() / "models"


def _load(folder: Path) -> PulledModel | None:
    manifest = None
    with contextlib.suppress(Exception):
        manifest = read_json(folder / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        return None
    path = folder / str(manifest.get("file", ""))
    if not manifest.get("file") or not path.is_file():
        return None
    return PulledModel(
        name=folder.name,
        path=path,
        repo=str(manifest.get("repo", "")),
        filename=str(manifest.get("filename", manifest["file"])),
        revision=str(manifest.get("revision", "")),
        sha256=str(manifest.get("sha256", "")),
        size=int(manifest.get("size") or path.stat().st_size),
        pulled_at=str(manifest.get("pulled_at", "")),
    )


def find_pulled(name: str) -> PulledModel | None:
    """The pulled model called ``name`` (case-insensitive), or None."""
    if not NAME_RE.fullmatch(name or "") or ".." in name:
        return None
    folder = models_dir() / name.lower()
    return _load(folder) if folder.is_dir() else None


def pulled_models() -> list[PulledModel]:
    root = models_dir()
    if not root.is_dir():
        return []
    found = (_load(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith("."))
    return [m for m in found if m is not None]
