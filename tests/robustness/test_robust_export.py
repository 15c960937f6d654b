"""Exports on any machine, and LoRA files whose metadata lies about its types (issue 16).

* The smoke test fails only on what is really broken; a reply that runs long, or rambles on
  exactly as its base does, is a warning printed with the export. (On another 2-core machine
  the base model rambled past the old 256-token limit and ``make test`` failed.)
* A GGUF LoRA with ``adapter.lora.alpha`` stored as a string, ``adapter.type`` as u32 (and the
  like) is refused before llama.cpp sees it: llama.cpp aborts the process on them.
* A peft adapter config with mistyped fields is one ``error:`` line from ``charlite export``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import USER_PROFILE, assert_one_error, fingerprint, run_cli

from charlite.cli import cli


def _tried(text: str) -> None:
    print(f"bad input: {text}")  # shown with -s / -rP


# -------------------------------------------------------------------------------------------
# LoRA GGUFs with mistyped metadata


def _adapter(base: Path, out: Path, **kv) -> Path:
    """A LoRA for ``base`` that fits it, with key-values overridden: ``key=(value, type)``."""
    import gguf
    import numpy as np

    from charlite.gguf import tensor_shapes

    writer = gguf.GGUFWriter(str(out), "llama")
    values = {
        "general.type": ("adapter", gguf.GGUFValueType.STRING),
        "adapter.type": ("lora", gguf.GGUFValueType.STRING),
        "adapter.lora.alpha": (4.0, gguf.GGUFValueType.FLOAT32),
        **kv,
    }
    for key, (value, kind) in values.items():
        if key == "general.architecture":
            writer.kv_data[0].pop(key, None)
        writer.add_key_value(key, value, kind)
    rng = np.random.default_rng(0)
    for name, dims in tensor_shapes(base).items():
        if name.endswith(".attn_q.weight"):
            n_in, n_out = dims
            writer.add_tensor(
                f"{name}.lora_a", (rng.standard_normal((4, n_in)) * 1e-3).astype(np.float32)
            )
            writer.add_tensor(
                f"{name}.lora_b", (rng.standard_normal((n_out, 4)) * 1e-3).astype(np.float32)
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _mistyped(kind: str):
    import gguf

    T = gguf.GGUFValueType
    return {
        "alpha-string": {"adapter.lora.alpha": ("16", T.STRING)},
        "alpha-f64": {"adapter.lora.alpha": (16.0, T.FLOAT64)},
        "alpha-u32": {"adapter.lora.alpha": (16, T.UINT32)},
        "adapter-type-u32": {"adapter.type": (1, T.UINT32)},
        "general-type-u32": {"general.type": (1, T.UINT32)},
        "architecture-u32": {"general.architecture": (1, T.UINT32)},
    }[kind]


MISTYPED = [
    "alpha-string",
    "alpha-f64",
    "alpha-u32",
    "adapter-type-u32",
    "general-type-u32",
    "architecture-u32",
]


def _fake_export(home: Path, adapter: Path, base: Path) -> None:
    folder = home / "characters" / "beethoven" / "exports" / "r1"
    folder.mkdir(parents=True)
    (folder / "beethoven-lora.gguf").write_bytes(adapter.read_bytes())
    manifest = {
        "format": 1,
        "kind": "charlite-export",
        "run_id": "r1",
        "created": "2030-01-01T00:00:00+00:00",
        "smoke_ok": True,
        "lora": {"file": "beethoven-lora.gguf"},
        "base": {"gguf": str(base)},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("kind", MISTYPED)
def test_chat_with_a_mistyped_lora_is_one_error_not_an_abort(
    tmp_path, embedded_path, charlite_home, kind
):
    """The issue's reproduction: the LoRA of an export, then ``charlite chat beethoven -m hi``."""
    _tried(f"LoRA metadata {kind}")
    adapter = _adapter(embedded_path, tmp_path / "a.gguf", **_mistyped(kind))
    _fake_export(charlite_home, adapter, embedded_path)
    before = fingerprint(charlite_home)
    out = run_cli("chat", "beethoven", "-m", "hi", home=charlite_home)
    assert_one_error(out, "beethoven-lora.gguf")
    assert fingerprint(charlite_home) == before or set(fingerprint(charlite_home)) - set(
        before
    ) <= {"history.sqlite"}


@pytest.mark.parametrize("kind", ["alpha-string", "adapter-type-u32"])
def test_the_export_smoke_test_refuses_a_mistyped_lora(tmp_path, embedded_path, kind):
    """The smoke test loads base + LoRA through llama.cpp: it must check the file first."""
    _tried(f"smoke test of a LoRA with {kind}")
    adapter = _adapter(embedded_path, tmp_path / "a.gguf", **_mistyped(kind))
    code = (
        "import sys\n"
        "from charlite.characters import get_profile\n"
        "from charlite.errors import CharliteError\n"
        "from charlite.export.smoke import smoke_test\n"
        "try:\n"
        f"    smoke_test(get_profile('beethoven'), {str(embedded_path)!r}, {str(adapter)!r})\n"
        "except CharliteError as exc:\n"
        "    print('error:', exc, file=sys.stderr); sys.exit(1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert "not a valid GGUF file" in proc.stderr and "a.gguf" in proc.stderr


def test_a_well_typed_lora_still_passes_the_check(tmp_path, embedded_path):
    from charlite.gguf import check_adapter_matches_base

    check_adapter_matches_base(_adapter(embedded_path, tmp_path / "ok.gguf"), embedded_path)


# -------------------------------------------------------------------------------------------
# export with a mistyped peft adapter config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lora_alpha", "sixteen"),
        ("lora_alpha", [16]),
        ("lora_alpha", "16"),
        ("lora_alpha", True),
        ("lora_alpha", -4),
        ("r", "four"),
        ("alpha_pattern", {"q_proj": "x"}),
        ("alpha_pattern", [1]),
    ],
)
def test_export_of_a_mistyped_adapter_config_is_one_error(
    tmp_path, embedded_path, charlite_home, field, value
):
    from helpers_export import random_adapter, write_run

    _tried(f"adapter_config.json {field}={value!r}")
    adapter = random_adapter(tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config[field] = value
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    write_run(charlite_home, "beethoven", "r1", adapter=adapter, base_gguf=embedded_path)
    result = CliRunner().invoke(cli, ["export", "beethoven", "--run", "r1", "--adapter-only"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and field in lines[0], lines
    assert not (charlite_home / "characters" / "beethoven" / "exports" / "r1").exists()


# -------------------------------------------------------------------------------------------
# The smoke test on any machine


@pytest.mark.slow
def test_an_export_whose_base_rambles_passes_with_a_warning(
    tmp_path, embedded_path, charlite_home, monkeypatch
):
    """The fresh-machine failure: a near-zero adapter, so the reply is the base's, and the base
    talks past the budget. Budgets are shrunk so that this happens on every machine."""
    from helpers_export import random_adapter, write_run

    from charlite.export import smoke

    smoke._base_reply.cache_clear()
    monkeypatch.setattr(smoke, "SMOKE_BUDGET", 12)
    monkeypatch.setattr(smoke, "SMOKE_LONG", 4)
    folder = charlite_home / "characters" / "ada"  # a short profile: a short smoke prompt
    folder.mkdir(parents=True)
    (folder / "profile.md").write_text(USER_PROFILE, encoding="utf-8")
    adapter = random_adapter(tmp_path / "adapter", std=1e-6)
    write_run(charlite_home, "ada", "r1", adapter=adapter, base_gguf=embedded_path)
    result = CliRunner().invoke(cli, ["export", "ada", "--run", "r1", "--adapter-only"])
    assert result.exit_code == 0, result.output
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning: smoke test of")]
    assert warnings, result.stderr
    assert "smoke test passed" in result.stdout
    manifest = json.loads(
        (charlite_home / "characters" / "ada" / "exports" / "r1" / "manifest.json").read_text()
    )
    assert manifest["smoke_ok"] is True
    (entry,) = manifest["smoke"]
    assert entry["ok"] is True and entry["problems"] == [] and entry["warnings"]
    assert "charlite chat ada" in result.stdout
