"""End to end on the CPU: profile-grounded data -> a short training run -> an exported GGUF
adapter -> ``charlite chat NAME -m "<a fact probe>"`` names the expected keyword."""

from __future__ import annotations

import pytest
import test_train_support as support
from click.testing import CliRunner
from test_train_support import cpu_threads

from charlite import characters
from charlite.chat import resolve_model
from charlite.cli import cli
from charlite.eval.checks import fact_hit
from charlite.knowledge import use_knowledge
from charlite.train import load_run

pytestmark = pytest.mark.slow
shared_bases = support.shared_bases  # fixtures
embedded_base = support.embedded_base
pytest.importorskip("peft")

PROBE = "What is the name of your only opera?"


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_a_trained_export_answers_a_fact_probe(embedded_base):
    profile = characters.get_profile("beethoven")
    [fact] = [f for f in profile.facts if f.question == PROBE]
    invoke(
        "generate", "beethoven", "--teacher", "profile", "--paragraphs", "1", "--protective", "0"
    )
    invoke(
        "train", "beethoven", "--engine", "peft", "--run", "fid", "--max-steps", "24",
        "--max-seq-len", "512", "--lr", "3e-3", "--grad-accum", "1", "--warmup", "0",
        "--knowledge-share", "1", "--threads", str(cpu_threads()),
    )  # fmt: skip
    run = load_run("beethoven", "fid")
    assert run.manifest["knowledge"]["share"] == 1.0
    assert run.manifest["knowledge"]["coverage"]["facts_covered"] == len(profile.facts)
    assert run.manifest["dataset"]["with_knowledge"] == run.manifest["dataset"]["experiences"]
    invoke("export", "beethoven", "--run", "fid", "--adapter-only")

    resolved = resolve_model(profile)
    assert not resolved.prompted and resolved.lora is not None  # the export, not the base
    assert use_knowledge("auto", profile, resolved)  # trained to read recalled paragraphs
    reply = invoke(
        "chat", "beethoven", "-m", PROBE, "--temperature", "0", "--seed", "1",
        "--max-tokens", "60",
    ).stdout  # fmt: skip
    assert fact_hit(PROBE, reply, fact.answer_keywords), reply
