"""Which model voices a character: an explicit ``--model``, the newest export, or the embedded model.

A chat, an interview and the API server all ask :func:`resolve_model`. Exports are found here:
the character's newest export that passed its smoke test. The merged file is preferred (one
file, no adapter arithmetic per token); an adapter-only export runs as the base GGUF plus the
adapter. Exports whose files are missing, or whose manifest is unreadable, are skipped. A model
charlite created in Ollama is named ``charlite-SLUG`` (:data:`OLLAMA_PREFIX`) and is trained.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charlite import settings
from charlite.backends import Backend, get_backend
from charlite.backends.base import DEFAULT_CTX
from charlite.backends.llamacpp import LlamaCppBackend
from charlite.files import read_json
from charlite.home import CharacterPaths
from charlite.profile import Profile
from charlite.spec import ModelSpec, parse_spec

OLLAMA_PREFIX = "charlite-"


@dataclass
class ResolvedModel:
    """What a chat actually talks to, and how to describe it."""

    spec: ModelSpec
    prompted: bool
    label: str
    lora: Path | None = None
    path: Path | None = None

    def backend(self, verbose: bool = False, n_ctx: int | None = None) -> Backend:
        if self.path is not None:
            return LlamaCppBackend(
                self.spec,
                path=self.path,
                lora=self.lora,
                n_ctx=n_ctx or DEFAULT_CTX,
                verbose=verbose,
            )
        return get_backend(self.spec, lora=self.lora, n_ctx=n_ctx, verbose=verbose)


def resolve_model(
    profile: Profile, model: str | None = None, prompted: bool = False
) -> ResolvedModel:
    """The model a chat with ``profile`` uses.

    An explicit ``--model`` wins. Otherwise the character's newest export (adapter over its
    base, or a merged file) when one exists and ``prompted`` is off, else the default model
    (the ``model`` setting: environment, config file, built-in ``embedded``) in prompted mode.
    """
    if model:
        spec = parse_spec(model)
        trained = spec.kind == "ollama" and spec.name.startswith(OLLAMA_PREFIX)
        return ResolvedModel(spec, prompted or not trained, str(spec))
    if not prompted:
        found = newest_export_model(profile)
        if found is not None:
            return found
    default = settings.resolve("model")
    spec = parse_spec(default.value)
    note = "" if default.source == "default" else f", from {default.source}"
    # the label keeps the name the user gave (a pulled model's short name, not its path)
    return ResolvedModel(spec, True, f"{default.value} (prompted{note})")


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
