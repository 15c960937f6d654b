"""The typed ``manifest.json`` of an export (``characters/SLUG/exports/RUN/manifest.json``).

A pydantic model rather than a dataclass: the same class writes the file and can check one
that is read back (:meth:`ExportManifest.read`), fields keep their order in the JSON, and each
field says what it holds. The JSON is the one written before this model existed, key for key,
so what reads it as plain JSON (``voices``, ``inventory``, ``charlite models``) is unchanged.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_serializer

from charlite.files import read_json
from charlite.gguf import file_sha256

EXPORT_FORMAT = 1
EXPORT_KIND = "charlite-export"


class FileEntry(BaseModel):
    """One file of the export folder."""

    model_config = ConfigDict(extra="allow")
    name: str
    """The file name inside the export folder."""
    role: Literal["adapter", "merged", "modelfile"]
    bytes: int
    sha256: str
    type: str | None = None
    """``f16`` for the adapter, the quant tag (``Q4_K_M``) for the merged model."""
    alpha: float | None = None
    """The adapter's LoRA alpha."""
    rank: int | None = None
    """The adapter's LoRA rank."""

    @model_serializer(mode="wrap")
    def _only_what_applies(self, handler) -> dict[str, Any]:
        # type/alpha/rank are written only for the files they describe
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None or k not in _OPTIONAL}

    @classmethod
    def of(cls, path: Path, role: str, **extra: Any) -> FileEntry:
        return cls(
            name=path.name,
            role=role,
            bytes=path.stat().st_size,
            sha256=file_sha256(path),
            **extra,
        )


_OPTIONAL = ("type", "alpha", "rank")


class CharacterEntry(BaseModel):
    slug: str
    name: str
    profile_digest: str
    """The digest of the profile the run was trained on (see ``Profile.digest``)."""


class BaseEntry(BaseModel):
    """The base model the adapter pairs with."""

    spec: str
    """The run's base, as given to ``charlite train --base``."""
    gguf: str
    """The absolute path of the base GGUF (the Modelfile's ``FROM`` with ``ADAPTER``)."""
    architecture: str
    converted: bool
    """Whether the base GGUF was converted from the run's 16-bit weights."""
    source: Literal["gguf", "given", "converted"]
    """``gguf`` (the run was trained on it), ``given`` (--base-gguf) or ``converted``."""
    converter: str | None = None


class LoraEntry(BaseModel):
    file: str
    alpha: float
    rank: int
    tensors: int


class ExportManifest(BaseModel):
    """What an export holds and how it was made."""

    model_config = ConfigDict(extra="allow")
    format: int = EXPORT_FORMAT
    kind: str = EXPORT_KIND
    character: CharacterEntry
    run_id: str
    created: str
    """UTC, ISO 8601, to the second."""
    base: BaseEntry
    merged_on: str | None
    """What the merged model was built on, in words (``None`` with --adapter-only)."""
    quant: str | None
    adapter_only: bool
    lora: LoraEntry
    merged: str | None
    """The merged model's file name."""
    modelfiles: dict[str, str]
    """``merged``/``adapter`` -> Modelfile name."""
    chat_format: str
    files: list[FileEntry]
    smoke: list[dict[str, Any]]
    """One smoke test per model (``SmokeResult.to_json()``)."""
    smoke_ok: bool
    versions: dict[str, str | None]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def read(cls, path: Path) -> ExportManifest:
        return cls.model_validate(read_json(path))


def package_versions() -> dict[str, str | None]:
    """The versions of the packages an export depends on (``None`` when not installed)."""
    out: dict[str, str | None] = {}
    for pkg in ("charlite", "gguf", "llama_cpp_python"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
