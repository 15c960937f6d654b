"""Which export a chat uses: the character's newest export that passed its smoke test.

The merged file is preferred (one file, no adapter arithmetic per token); an adapter-only
export runs as the base GGUF plus the adapter. Exports whose files are missing, or whose
manifest is unreadable, are skipped.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charlite.files import read_json
from charlite.home import CharacterPaths

if TYPE_CHECKING:
    from charlite.chat import ResolvedModel
    from charlite.profile import Profile


def export_manifests(slug: str) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, manifest) of every complete export of ``slug``, newest first."""
    paths = CharacterPaths.of(slug)
    found = []
    for run_id in paths.exports():
        folder = paths.export(run_id)
        manifest = None
        with contextlib.suppress(Exception):
            manifest = read_json(folder / "manifest.json")
        if not isinstance(manifest, dict) or manifest.get("kind") != "charlite-export":
            continue
        found.append((folder, manifest))
    found.sort(key=lambda fm: (str(fm[1].get("created") or ""), fm[0].name), reverse=True)
    return found


def newest_export_model(profile: Profile) -> ResolvedModel | None:
    """The newest usable export of ``profile`` as a chat model, or None."""
    from charlite.chat import ResolvedModel
    from charlite.spec import ModelSpec

    for folder, manifest in export_manifests(profile.slug):
        if not manifest.get("smoke_ok"):
            continue
        run_id = manifest.get("run_id") or folder.name
        merged = manifest.get("merged")
        if merged and (folder / merged).is_file():
            path = folder / merged
            label = f"export {run_id}: {merged} (trained)"
            return ResolvedModel(ModelSpec("gguf", str(path)), False, label, path=path)
        lora = (manifest.get("lora") or {}).get("file")
        base = (manifest.get("base") or {}).get("gguf")
        if lora and base and (folder / lora).is_file() and Path(base).is_file():
            label = f"export {run_id}: {Path(base).name} + {lora} (trained)"
            return ResolvedModel(
                ModelSpec("gguf", base), False, label, lora=folder / lora, path=Path(base)
            )
    return None
