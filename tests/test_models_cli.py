"""`charlite models` lists every source, and a pulled model becomes the everyday default.

The pull runs against the stand-in Hub (tests/hub_standin.py); Ollama tags come from the
Ollama test server of tests/test_ollama.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from charlite import settings
from charlite.cli import cli
from charlite.files import write_json_atomic
from charlite.history import History
from tests.hub_standin import StandInHub
from tests.test_ollama import MODEL as OLLAMA_MODEL
from tests.test_ollama import ollama_server  # noqa: F401 - a fixture
from tests.test_pull import FILE, NAME, REPO, _env


@pytest.fixture
def pulled(embedded_path, charlite_home):
    """The embedded GGUF pulled from the stand-in Hub: (short name, path)."""
    with StandInHub({REPO: {FILE: embedded_path}}) as hub:
        result = subprocess.run(
            [sys.executable, "-m", "charlite", "pull", REPO, "--quiet"],
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(hub, charlite_home),
        )
    assert result.returncode == 0, result.stderr
    return NAME, charlite_home / "models" / NAME / FILE


def _fake_export(charlite_home, adapter, embedded_path):
    """An adapter-only export folder of Beethoven as `charlite export` lays it out."""
    folder = charlite_home / "characters" / "beethoven" / "exports" / "run-1"
    folder.mkdir(parents=True)
    shutil.copy(adapter, folder / "beethoven-lora.gguf")
    write_json_atomic(
        folder / "manifest.json",
        {
            "format": 1,
            "kind": "charlite-export",
            "run_id": "run-1",
            "created": "2026-01-01T00:00:00+00:00",
            "base": {"spec": "embedded", "gguf": str(embedded_path)},
            "quant": None,
            "adapter_only": True,
            "lora": {"file": "beethoven-lora.gguf"},
            "merged": None,
            "smoke_ok": True,
        },
    )


def _into_hf_cache(embedded_path, charlite_home) -> None:
    """The embedded GGUF downloaded into the Hugging Face cache by huggingface_hub itself."""
    script = (
        "import sys; from huggingface_hub import hf_hub_download; hf_hub_download(*sys.argv[1:])"
    )
    with StandInHub({"someone/Cached-GGUF": {FILE: embedded_path}}) as hub:
        done = subprocess.run(
            [sys.executable, "-c", script, "someone/Cached-GGUF", FILE],
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(hub, charlite_home, HF_HUB_DISABLE_PROGRESS_BARS="1"),
        )
    assert done.returncode == 0, done.stderr


def test_models_lists_every_source(
    pulled,
    ollama_server,  # noqa: F811 - the fixture imported above
    random_adapters,
    embedded_path,
    charlite_home,
    monkeypatch,  # noqa: F811
):
    monkeypatch.setenv("HF_HOME", str(charlite_home.parent / "hf-home"))
    _fake_export(charlite_home, random_adapters[0], embedded_path)
    _into_hf_cache(embedded_path, charlite_home)
    result = CliRunner().invoke(cli, ["models", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    by_source: dict[str, list] = {}
    for entry in data["models"]:
        by_source.setdefault(entry["source"], []).append(entry)
    assert by_source["embedded"][0]["spec"] == "embedded"
    (pull,) = by_source["pulled"]
    assert pull["spec"] == NAME and pull["details"]["repo"] == REPO
    assert pull["size"] == embedded_path.stat().st_size
    (cached,) = by_source["hf-cache"]
    assert cached["spec"].startswith("gguf:") and cached["spec"].endswith(FILE)
    assert cached["details"]["repo"] == "someone/Cached-GGUF"
    assert [e["spec"] for e in by_source["ollama"]] == [f"ollama:{OLLAMA_MODEL}:latest"]
    (export,) = by_source["export"]
    assert export["details"]["character"] == "beethoven"
    assert export["details"]["base"] == "embedded"
    assert export["details"]["quant"] == "adapter only"
    assert export["details"]["smoke_test"] == "passed"
    assert export["size"] == random_adapters[0].stat().st_size
    assert data["notes"] == []
    table = CliRunner().invoke(cli, ["models"], env={"COLUMNS": "200"})
    assert NAME in table.stdout and "ollama:" in table.stdout


def test_models_without_ollama_says_so(charlite_home, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(charlite_home.parent / "hf-home"))
    data = json.loads(CliRunner().invoke(cli, ["models", "--json"]).stdout)
    assert [e["source"] for e in data["models"]] == ["embedded"]
    assert "no Ollama server" in data["notes"][0]


@pytest.mark.slow
def test_the_default_model_is_used_without_model_flags(
    pulled, charlite_home, tmp_path, monkeypatch
):
    name, path = pulled
    for s in settings.SETTINGS.values():
        monkeypatch.delenv(s.env, raising=False)
    runner = CliRunner()
    assert runner.invoke(cli, ["config", "set", "model", name]).exit_code == 0
    show = runner.invoke(cli, ["show", "beethoven"], env={"COLUMNS": "200"})
    assert f"chat model: {name} (prompted, from config file)" in show.stdout

    chat = runner.invoke(cli, ["chat", "beethoven", "-m", "Hello.", "--max-tokens", "16"])
    assert chat.exit_code == 0, chat.output
    h = History()
    (session,) = h.sessions("beethoven")
    h.close()
    assert session.model == f"{name} (prompted, from config file)"

    out = tmp_path / "interview.json"
    iv = runner.invoke(
        cli,
        [
            "interview",
            "beethoven",
            "--limit",
            "1",
            "--no-facts",
            "--max-tokens",
            "16",
            "-o",
            str(out),
        ],
    )
    assert iv.exit_code == 0, iv.output
    data = json.loads(out.read_text())
    assert data["model"]["spec"] == f"gguf:{path}" and data["model"]["prompted"] is True

    report = tmp_path / "report"
    ev = runner.invoke(cli, ["eval", str(out), "--no-judge", "--report", str(report)])
    assert ev.exit_code == 0, ev.output
    # --no-judge: the checks run on the interview of the pulled model, and no model loads
    assert "Judge: none (checks only)" in (report / "report.md").read_text()
