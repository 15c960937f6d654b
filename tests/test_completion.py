"""Shell completion through click's mechanism: characters, datasets, runs, model specs."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from charlite.characters import character_refs
from charlite.cli import cli
from charlite.cli.complete import (
    complete_character,
    complete_dataset,
    complete_export,
    complete_model_spec,
    complete_run,
)
from charlite.home import CharacterPaths


def _complete(words: str) -> list[tuple[str, str]]:
    """What bash completion offers for the command line ``words`` (the last word is being typed)."""
    parts = words.split(" ")
    env = {
        "_CHARLITE_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(parts) - 1),
    }
    result = CliRunner().invoke(cli, [], env=env, prog_name="charlite")
    assert result.exit_code == 0, result.output
    items = []
    for line in result.stdout.splitlines():
        kind, _, value = line.partition(",")
        items.append((kind, value))
    return items


@pytest.mark.parametrize("command", ["chat", "show", "card"])
def test_name_argument_completes_characters(command):
    assert _complete(f"charlite {command} bee") == [("plain", "beethoven")]
    everyone = [v for _, v in _complete(f"charlite {command} ")]
    assert everyone == sorted(character_refs())


def test_user_characters_complete_too(charlite_home):
    (charlite_home / "characters" / "zelda").mkdir(parents=True)
    (charlite_home / "characters" / "zelda" / "profile.md").write_text(
        "---\nname: Zelda\n---\n\nA princess.\n"
    )
    assert _complete("charlite chat ze") == [("plain", "zelda")]


def test_commands_complete():
    names = [v for _, v in _complete("charlite d")]
    assert "doctor" in names and all(n.startswith("d") for n in names)


def _ctx(name: str | None) -> click.Context:
    ctx = click.Context(click.Command("x"))
    if name is not None:
        ctx.params["name"] = name
    return ctx


def test_datasets_runs_and_exports_of_the_named_character():
    paths = CharacterPaths.of("beethoven")
    for folder in (
        paths.dataset("default"),
        paths.dataset("dev"),
        paths.run("run-1"),
        paths.run("run-2"),
        paths.export("run-2"),
    ):
        folder.mkdir(parents=True)
    param = click.Option(["--x"])
    assert [i.value for i in complete_dataset(_ctx("beethoven"), param, "")] == ["default", "dev"]
    assert [i.value for i in complete_dataset(_ctx("Beethoven"), param, "de")] == ["default", "dev"]
    assert [i.value for i in complete_run(_ctx("beethoven"), param, "run-")] == ["run-1", "run-2"]
    assert [i.value for i in complete_export(_ctx("beethoven"), param, "")] == ["run-2"]
    # no character named yet, an unknown one, or a hostile name: nothing, and no error
    assert complete_run(_ctx(None), param, "") == []
    assert complete_run(_ctx("nobody"), param, "") == []
    assert complete_dataset(_ctx("../../etc"), param, "") == []


def test_dataset_completion_reads_the_name_from_a_real_command_line():
    CharacterPaths.of("socrates").dataset("athens").mkdir(parents=True)

    @click.command()
    @click.argument("name", shell_complete=complete_character)
    @click.option("--dataset", shell_complete=complete_dataset)
    def probe(name, dataset):  # pragma: no cover - only completed, never run
        pass

    env = {
        "_PROBE_COMPLETE": "bash_complete",
        "COMP_WORDS": "probe socrates --dataset a",
        "COMP_CWORD": "3",
    }
    result = CliRunner().invoke(probe, [], env=env, prog_name="probe")
    assert result.stdout.splitlines() == ["plain,athens"]


def test_model_specs_complete():
    param = click.Option(["--model"])
    assert [i.value for i in complete_model_spec(_ctx(None), param, "")] == [
        "embedded",
        "gguf:",
        "ollama:",
        "openai:",
        "hf:",
    ]
    assert [i.value for i in complete_model_spec(_ctx(None), param, "o")] == ["ollama:", "openai:"]
    assert [i.type for i in complete_model_spec(_ctx(None), param, "gguf:/tm")] == ["file"]


def test_a_broken_home_completes_nothing(monkeypatch, tmp_path):
    home = tmp_path / "file"
    home.write_text("x")
    monkeypatch.setenv("CHARLITE_HOME", str(home))
    assert [i.value for i in complete_character(_ctx(None), click.Argument(["name"]), "bee")] == [
        "beethoven"
    ]
    assert complete_run(_ctx("beethoven"), click.Option(["--run"]), "") == []


def test_bash_source_script_and_no_heavy_imports(tmp_path):
    """The real program: the activation script, and a TAB that imports no model library."""
    env = {**os.environ, "CHARLITE_HOME": str(tmp_path), "_CHARLITE_COMPLETE": "bash_source"}
    exe = os.path.join(os.path.dirname(sys.executable), "charlite")
    script = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=60)
    assert script.returncode == 0
    assert "_charlite_completion" in script.stdout and "complete -o nosort -F" in script.stdout
    code = (
        "import os, sys\n"
        "from charlite.cli import cli\n"
        "try:\n"
        "    cli(prog_name='charlite')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'llama_cpp', 'fastapi') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    env = {
        **env,
        "_CHARLITE_COMPLETE": "bash_complete",
        "COMP_WORDS": "charlite card soc",
        "COMP_CWORD": "2",
    }
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.stdout.splitlines() == ["plain,socrates"]
    assert "HEAVY []" in run.stderr
