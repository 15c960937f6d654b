"""The typed export manifest writes the JSON that voices, inventory and `charlite models` read."""

from __future__ import annotations

import json

from charlite.export.manifest import (
    EXPORT_FORMAT,
    BaseEntry,
    CharacterEntry,
    ExportManifest,
    FileEntry,
    LoraEntry,
)
from charlite.files import write_json_atomic


def _manifest(tmp_path) -> ExportManifest:
    lora = tmp_path / "beethoven-lora.gguf"
    lora.write_bytes(b"GGUF" + bytes(60))
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("FROM x\n")
    return ExportManifest(
        character=CharacterEntry(slug="beethoven", name="Ludwig van Beethoven", profile_digest="d"),
        run_id="r1",
        created="2026-01-01T00:00:00+00:00",
        base=BaseEntry(
            spec="embedded", gguf="/m.gguf", architecture="llama", converted=False, source="gguf"
        ),
        merged_on=None,
        quant=None,
        adapter_only=True,
        lora=LoraEntry(file=lora.name, alpha=16.0, rank=8, tensors=4),
        merged=None,
        modelfiles={"adapter": "Modelfile"},
        chat_format="chatml",
        files=[
            FileEntry.of(lora, "adapter", type="f16", alpha=16.0, rank=8),
            FileEntry.of(modelfile, "modelfile"),
        ],
        smoke=[{"ok": True, "model": "m.gguf"}],
        smoke_ok=True,
        versions={"charlite": "0", "gguf": None},
    )


def test_the_manifest_json_keeps_its_layout(tmp_path):
    data = _manifest(tmp_path).to_json()
    assert list(data) == [
        "format", "kind", "character", "run_id", "created", "base", "merged_on", "quant",
        "adapter_only", "lora", "merged", "modelfiles", "chat_format", "files", "smoke",
        "smoke_ok", "versions",
    ]  # fmt: skip
    assert data["format"] == EXPORT_FORMAT and data["kind"] == "charlite-export"
    assert data["base"]["converter"] is None and data["base"]["source"] == "gguf"
    adapter, modelfile = data["files"]
    assert list(adapter) == ["name", "role", "bytes", "sha256", "type", "alpha", "rank"]
    assert adapter["bytes"] == 64 and len(adapter["sha256"]) == 64
    assert list(modelfile) == ["name", "role", "bytes", "sha256"]  # no type/alpha/rank
    assert data["versions"] == {"charlite": "0", "gguf": None}


def test_a_written_manifest_reads_back(tmp_path):
    manifest = _manifest(tmp_path)
    path = tmp_path / "manifest.json"
    write_json_atomic(path, manifest.to_json())
    assert ExportManifest.read(path) == manifest
    assert json.loads(path.read_text())["lora"] == {
        "file": "beethoven-lora.gguf",
        "alpha": 16.0,
        "rank": 8,
        "tensors": 4,
    }
