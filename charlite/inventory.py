"""Every model charlite can use on this machine, for ``charlite models``.

The embedded model, GGUFs fetched with ``charlite pull``, GGUFs already in the Hugging Face
cache, the tags of an Ollama server that answers within a short timeout, and each character's
exports (base, quantization, size, smoke test). Each entry carries the ``spec`` to pass to
``--model``.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from charlite import characters
from charlite.doctor import _ollama_url
from charlite.errors import CharliteError
from charlite.pulled import pulled_models
from charlite.spec import EMBEDDED_DESCRIPTION, embedded_model_path
from charlite.voices import export_manifests

OLLAMA_TIMEOUT = 1.0


@dataclass
class ModelEntry:
    source: str  # embedded | pulled | hf-cache | ollama | export
    spec: str  # what --model takes
    size: int | None = None
    path: str | None = None
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def embedded() -> list[ModelEntry]:
    try:
        path = embedded_model_path()
    except CharliteError as exc:
        return [ModelEntry("embedded", "embedded", details={"error": str(exc)})]
    size = path.stat().st_size if path.is_file() else None
    return [
        ModelEntry("embedded", "embedded", size, str(path), {"description": EMBEDDED_DESCRIPTION})
    ]


def pulled() -> list[ModelEntry]:
    return [
        ModelEntry(
            "pulled",
            m.name,
            m.size,
            str(m.path),
            {"repo": m.repo, "file": m.filename, "revision": m.revision, "pulled_at": m.pulled_at},
        )
        for m in pulled_models()
    ]


def _hf_hub_cache() -> Path:
    """The hub cache as the environment says now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "huggingface"
    )
    return Path(home).expanduser() / "hub"


def hf_cache() -> list[ModelEntry]:
    """GGUF files in the Hugging Face cache (HF_HOME / HF_HUB_CACHE), newest revision each."""
    try:
        from huggingface_hub import scan_cache_dir
    except ImportError:
        return []
    try:
        info = scan_cache_dir(_hf_hub_cache())
    except Exception:  # no cache folder yet, or an unreadable one
        return []
    found = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for rev in repo.revisions:
            for f in rev.files:
                if f.file_name.lower().endswith(".gguf"):
                    found.append(
                        ModelEntry(
                            "hf-cache",
                            f"gguf:{f.file_path}",
                            f.size_on_disk,
                            str(f.file_path),
                            {"repo": repo.repo_id, "revision": rev.commit_hash[:12]},
                        )
                    )
    return found


def ollama_tags(timeout: float = OLLAMA_TIMEOUT) -> tuple[list[ModelEntry], str | None]:
    """The tags of the Ollama server (OLLAMA_HOST), or ([], why not)."""
    url = _ollama_url()
    try:
        with urllib.request.urlopen(f"{url}/api/tags", timeout=timeout) as resp:  # noqa: S310
            data = json.loads(resp.read(4 * 1024 * 1024))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return [], f"no Ollama server at {url} ({getattr(exc, 'reason', exc)})"
    entries = []
    for m in data.get("models") or []:
        if not isinstance(m, dict):
            continue
        tag = m.get("name") or m.get("model")
        if not tag:
            continue
        d = m.get("details") or {}
        entries.append(
            ModelEntry(
                "ollama",
                f"ollama:{tag}",
                m.get("size"),
                None,
                {k: d[k] for k in ("family", "parameter_size", "quantization_level") if d.get(k)},
            )
        )
    return entries, None


def exports() -> list[ModelEntry]:
    found = []
    for slug in characters.character_refs():
        with contextlib.suppress(CharliteError):
            for folder, manifest in export_manifests(slug):
                run = manifest.get("run_id") or folder.name
                base = manifest.get("base") or {}
                merged = manifest.get("merged")
                lora = (manifest.get("lora") or {}).get("file")
                main = folder / (merged or lora or "")
                size = sum(p.stat().st_size for p in folder.glob("*.gguf"))
                found.append(
                    ModelEntry(
                        "export",
                        f"{slug} (chat {slug})",
                        size,
                        str(main) if main.is_file() else str(folder),
                        {
                            "character": slug,
                            "run": run,
                            "base": base.get("spec") or Path(str(base.get("gguf", ""))).name,
                            "quant": manifest.get("quant") or "adapter only",
                            "smoke_test": "passed" if manifest.get("smoke_ok") else "FAILED",
                            "created": manifest.get("created"),
                        },
                    )
                )
    return found


def all_models(ollama_timeout: float = OLLAMA_TIMEOUT) -> tuple[list[ModelEntry], list[str]]:
    """Every entry, and notes on sources that could not be read (no Ollama server...)."""
    notes: list[str] = []
    tags, why = ollama_tags(ollama_timeout)
    if why:
        notes.append(why)
    return embedded() + pulled() + hf_cache() + tags + exports(), notes
