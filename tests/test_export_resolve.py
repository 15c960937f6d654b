"""Which model ``charlite chat NAME`` uses: the newest export that passed its smoke test."""

from __future__ import annotations

import json
import os

from charlite.characters import get_profile
from charlite.voices import newest_export_model, resolve_model


def _export(
    home, run_id, *, created, merged=True, smoke_ok=True, base=None, kind="charlite-export"
):
    """An export folder whose GGUF files are links to the real embedded model."""
    folder = home / "characters" / "beethoven" / "exports" / run_id
    folder.mkdir(parents=True)
    os.symlink(base, folder / "beethoven-lora.gguf")
    if merged:
        os.symlink(base, folder / "beethoven-Q4_K_M.gguf")
    manifest = {
        "format": 1,
        "kind": kind,
        "run_id": run_id,
        "created": created,
        "base": {"spec": "embedded", "gguf": str(base)},
        "lora": {"file": "beethoven-lora.gguf"},
        "merged": "beethoven-Q4_K_M.gguf" if merged else None,
        "smoke_ok": smoke_ok,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_no_export_means_prompted_mode(charlite_home):
    profile = get_profile("beethoven")
    assert newest_export_model(profile) is None
    resolved = resolve_model(profile)
    assert resolved.prompted and resolved.spec.kind == "embedded"


def test_newest_passing_export_wins(charlite_home, embedded_path):
    profile = get_profile("beethoven")
    old = _export(charlite_home, "r1", created="2025-01-01T00:00:00+00:00", base=embedded_path)
    _export(
        charlite_home, "r3", created="2025-03-01T00:00:00+00:00", smoke_ok=False, base=embedded_path
    )
    _export(
        charlite_home, "r4", created="2025-04-01T00:00:00+00:00", base=embedded_path, kind="other"
    )
    resolved = newest_export_model(profile)
    assert resolved.path == old / "beethoven-Q4_K_M.gguf" and resolved.lora is None
    assert not resolved.prompted and "r1" in resolved.label

    adapter = _export(
        charlite_home, "r2", created="2025-02-01T00:00:00+00:00", merged=False, base=embedded_path
    )
    resolved = resolve_model(profile)
    assert resolved.path == embedded_path and resolved.lora == adapter / "beethoven-lora.gguf"
    assert "beethoven-lora.gguf" in resolved.label and not resolved.prompted
    assert resolve_model(profile, prompted=True).prompted  # --prompted forces prompted mode


def test_exports_with_missing_files_are_skipped(charlite_home, embedded_path, tmp_path):
    profile = get_profile("beethoven")
    folder = _export(charlite_home, "r1", created="2025-01-01T00:00:00+00:00", base=embedded_path)
    (folder / "beethoven-Q4_K_M.gguf").unlink()
    # the merged file is gone; the adapter over the base still works
    assert newest_export_model(profile).lora == folder / "beethoven-lora.gguf"
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["base"]["gguf"] = str(tmp_path / "gone.gguf")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert newest_export_model(profile) is None
    (folder / "manifest.json").write_text("{not json")
    assert newest_export_model(profile) is None
