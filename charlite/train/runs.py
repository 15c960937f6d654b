"""Training runs: ``characters/SLUG/runs/RUN/`` and the library calls other modules use.

A run folder holds ``manifest.json`` (what produced it, see :data:`RUN_FORMAT`),
``metrics.jsonl`` (the loss per logging step), ``adapter/`` (peft ``adapter_model.safetensors``
and ``adapter_config.json``; present once the run has completed) and, while it can be resumed,
``checkpoints/checkpoint-STEP/``.

>>> latest_run("beethoven") is None   # nothing trained yet
True
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charlite.errors import DataError, NotFoundError, TrainingError
from charlite.files import read_json
from charlite.home import CharacterPaths, check_name, choices_hint

RUN_FORMAT = 1
RUN_KIND = "charlite-run"
STATUSES = ("running", "interrupted", "completed", "failed")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Run:
    slug: str
    run_id: str
    path: Path
    manifest: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.manifest.get("status", "unknown"))

    @property
    def completed(self) -> bool:
        return self.status == "completed" and (self.adapter_dir / "adapter_config.json").is_file()

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def base(self) -> dict[str, Any]:
        return dict(self.manifest.get("base") or {})

    @property
    def base_spec(self) -> str | None:
        return self.base.get("spec")

    @property
    def base_hash(self) -> str | None:
        return self.base.get("hash")

    @property
    def base_gguf(self) -> Path | None:
        gguf = self.base.get("gguf")
        return Path(gguf) if gguf else None

    @property
    def base_dir(self) -> Path | None:
        path = self.base.get("path")
        return Path(path) if path else None

    @property
    def lora_r(self) -> int | None:
        return (self.manifest.get("lora") or {}).get("r")

    @property
    def lora_alpha(self) -> float | None:
        return (self.manifest.get("lora") or {}).get("alpha")

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint with the highest step, or None."""
        if not self.checkpoints_dir.is_dir():
            return None
        found = []
        for child in self.checkpoints_dir.iterdir():
            m = _CHECKPOINT.match(child.name)
            if m and child.is_dir() and (child / "trainer_state.json").is_file():
                found.append((int(m.group(1)), child))
        return max(found)[1] if found else None


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def load_run(slug: str, run_id: str) -> Run:
    """The run ``run_id`` of character ``slug``; NotFoundError when absent."""
    paths = CharacterPaths.of(slug)
    check_name(run_id, "run id")
    folder = paths.run(run_id)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        hint = choices_hint(
            paths.runs(), f"runs of {slug}", f"train one with 'charlite train {slug}'"
        )
        raise NotFoundError(f"{slug} has no run '{run_id}'", hint=hint)
    try:
        manifest = read_json(manifest_path)
    except DataError as exc:
        raise TrainingError(f"run '{run_id}' of {slug} has a broken manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != RUN_FORMAT:
        raise TrainingError(
            f"run '{run_id}' of {slug} has a manifest of an unknown format "
            f"({manifest.get('format') if isinstance(manifest, dict) else '?'})",
            hint="it was made by another version of charlite",
        )
    return Run(slug, run_id, folder, manifest)


def list_runs(slug: str) -> list[Run]:
    """Every readable run of ``slug``, oldest first (by creation time, then id)."""
    runs = []
    for run_id in CharacterPaths.of(slug).runs():
        try:
            runs.append(load_run(slug, run_id))
        except (NotFoundError, TrainingError):
            continue
    return sorted(runs, key=lambda r: (str(r.manifest.get("created", "")), r.run_id))


def latest_run(slug: str, completed: bool = True) -> Run | None:
    """The newest run of ``slug`` (only completed ones unless ``completed=False``), or None."""
    runs = [r for r in list_runs(slug) if r.completed or not completed]
    return runs[-1] if runs else None
