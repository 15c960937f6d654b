"""The training run an export starts from (``characters/SLUG/runs/RUN/``).

:mod:`charlite.train`'s ``load_run`` / ``latest_run`` find the run; its manifest (format 1) is
read here: ``adapter/`` holds the peft adapter; ``manifest.json`` says the base
(``base.spec``, ``base.gguf`` when it came from a GGUF, ``base.path`` for the Hugging Face
weights trained on, ``base.architecture``) and the chat template used in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charlite.errors import ExportError, NotFoundError
from charlite.files import read_json
from charlite.train import latest_run, load_run


@dataclass
class RunRef:
    slug: str
    run_id: str
    path: Path
    adapter_dir: Path
    status: str
    base_spec: str
    base_gguf: Path | None
    base_dir: Path | None
    base_hash: str | None
    architecture: str | None
    chat_template: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)


def _from_manifest(slug: str, run_id: str, path: Path) -> RunRef:
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise ExportError(
            f"run '{run_id}' of {slug} has no manifest.json", hint="is it a charlite training run?"
        )
    manifest = read_json(manifest_path)
    if not isinstance(manifest, dict):
        raise ExportError(f"{manifest_path} is not a run manifest")
    base = manifest.get("base") or {}
    gguf = base.get("gguf")
    base_dir = base.get("path")
    return RunRef(
        slug=slug,
        run_id=run_id,
        path=path,
        adapter_dir=path / "adapter",
        status=str(manifest.get("status") or "unknown"),
        base_spec=str(base.get("spec") or "embedded"),
        base_gguf=Path(gguf) if gguf else None,
        base_dir=Path(base_dir) if base_dir else None,
        base_hash=base.get("hash"),
        architecture=base.get("architecture"),
        chat_template=manifest.get("chat_template"),
        manifest=manifest,
    )


def find_run(slug: str, run_id: str | None = None) -> RunRef:
    """The run ``run_id`` of ``slug``, or its newest completed run."""
    run = load_run(slug, run_id) if run_id else latest_run(slug)
    if run is None:
        raise NotFoundError(
            f"{slug} has no completed training run", hint=f"run 'charlite train {slug}' first"
        )
    ref = _from_manifest(slug, Path(run.path).name, Path(run.path))
    ref.adapter_dir = run.adapter_dir
    return ref


def check_exportable(run: RunRef) -> None:
    """A run must be completed and hold an adapter."""
    if run.status != "completed":
        raise ExportError(
            f"run '{run.run_id}' of {run.slug} is {run.status}, not completed",
            hint=f"finish it with 'charlite train {run.slug}' or export another run with --run",
        )
    if (
        not (run.adapter_dir / "adapter_model.safetensors").is_file()
        or not (run.adapter_dir / "adapter_config.json").is_file()
    ):
        raise ExportError(
            f"run '{run.run_id}' of {run.slug} has no adapter ({run.adapter_dir} is missing or incomplete)",
            hint=f"train again with 'charlite train {run.slug}'",
        )
