"""The ``charlite`` command: a lazy click group, one module per command.

Commands are imported only when run, so ``charlite --help`` loads no model library. Every
:class:`~charlite.errors.CharliteError` becomes one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

from charlite import __version__
from charlite.errors import CharliteError

# name -> "module:attribute"; each module holds one command (or group) and no logic.
COMMANDS: dict[str, str] = {
    "characters": "charlite.cli.characters:characters",
    "show": "charlite.cli.characters:show",
    "add": "charlite.cli.characters:add",
    "chat": "charlite.cli.chat:chat",
    "generate": "charlite.cli.generate:generate",
    "data": "charlite.cli.data:data",
    "train": "charlite.cli.train:train",
    "export": "charlite.cli.export:export",
    "modelfile": "charlite.cli.export:modelfile",
    "card": "charlite.cli.card:card",
    "interview": "charlite.cli.interview:interview",
    "eval": "charlite.cli.eval:eval_",
    "serve": "charlite.cli.serve:serve",
    "doctor": "charlite.cli.doctor:doctor",
    "pull": "charlite.cli.pull:pull",
    "models": "charlite.cli.models:models",
    "config": "charlite.cli.config:config",
    "history": "charlite.cli.history:history",
}

HELP = {
    "characters": "List bundled and user characters, with what each has.",
    "show": "A character's profile summary and artifacts.",
    "add": "Import a profile (.md, Character-LLM wiki .txt, Character Card .json/.png).",
    "chat": "Talk with a character.",
    "generate": "Reconstruct a character's experiences with a teacher model.",
    "data": "Inspect, export and import training data.",
    "train": "Fine-tune a character as a LoRA adapter.",
    "export": "Export a trained character as GGUF files and an Ollama Modelfile.",
    "modelfile": "Print or write an Ollama Modelfile for a character.",
    "card": "Export a character as a Character Card V3.",
    "interview": "Interview a character with a question set.",
    "eval": "Judge interview results.",
    "serve": "Serve characters over an OpenAI-compatible API.",
    "doctor": "What this machine can do: GPU, Unsloth, Ollama, models.",
    "pull": "Download a GGUF from the Hugging Face Hub (resumable, verified).",
    "models": "Every model charlite can use here: embedded, pulled, HF cache, Ollama, exports.",
    "config": "Defaults: chat model, teacher, judge, interviewer, chat settings, threads.",
    "history": "Chat sessions: list them, show or export one.",
}


def _available(name: str) -> bool:
    module = COMMANDS[name].split(":")[0]
    return importlib.util.find_spec(module) is not None


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _available(name)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None or not _available(name):
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CharliteError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="charlite")
@click.option("-v", "--verbose", is_flag=True, help="Show llama.cpp's own log and more detail.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """charlite: turn a written profile into a role-play agent that runs offline.

    Data lives in CHARLITE_HOME (default: your user data folder).
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    if verbose:
        os.environ["CHARLITE_VERBOSE"] = "1"


def main() -> None:
    cli(prog_name="charlite")
