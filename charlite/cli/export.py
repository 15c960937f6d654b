"""charlite export NAME / charlite modelfile NAME: GGUF files and Ollama Modelfiles."""

from __future__ import annotations

from pathlib import Path

import click

from charlite import characters
from charlite.cli.complete import complete_character, complete_run
from charlite.cli.output import verbose, warn
from charlite.errors import StorageError
from charlite.export.exporter import export_run
from charlite.export.modelfile import character_modelfile, gguf_chat_format, tag_chat_format
from charlite.export.ollama import create_in_ollama, ollama_model_name
from charlite.files import write_output
from charlite.spec import embedded_model_path


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


@click.command()
@click.argument("name", shell_complete=complete_character)
@click.option(
    "--run",
    "run_id",
    shell_complete=complete_run,
    metavar="ID",
    help="The training run to export (default: the newest completed one).",
)
@click.option(
    "--quant",
    default="q4_k_m",
    show_default=True,
    metavar="TYPE",
    help="Merged model type: q4_k_m, q5_k_m, q8_0 or f16.",
)
@click.option(
    "--adapter-only",
    is_flag=True,
    help="Write only the LoRA adapter (and its Modelfile), no merged model.",
)
@click.option(
    "--base-gguf",
    "base_gguf",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="A GGUF of the model an hf: run was trained on (checked); no conversion needed.",
)
@click.option(
    "--ollama",
    "to_ollama",
    is_flag=True,
    help="Create the model charlite-NAME in Ollama afterwards.",
)
def export(name, run_id, quant, adapter_only, base_gguf, to_ollama):
    """Export a trained character as GGUF files and an Ollama Modelfile."""

    result = export_run(
        name.strip().lower(),
        run_id,
        quant=quant,
        adapter_only=adapter_only,
        base_gguf=base_gguf,
        verbose=verbose(),
        progress=lambda msg: click.secho(f"{msg}...", err=True, dim=True),
    )
    click.echo(f"exported {result.slug} run {result.run_id} -> {result.path}")
    for entry in result.files:
        what = {"adapter": "LoRA adapter", "merged": f"merged model ({entry.type})"}.get(
            entry.role, "Ollama Modelfile"
        )
        click.echo(f"  {entry.name:<28} {_size(entry.bytes):>10}  {what}")
    if result.manifest.merged_on:
        click.echo(f"merged model built on {result.manifest.merged_on}")
    for warning in result.warnings:
        click.secho(f"note: {warning}", err=True, fg="yellow")
    for smoke in result.smoke:
        target = smoke.model + (f" + {smoke.lora}" if smoke.lora else "")
        reply = " ".join(smoke.reply.split())
        reply = reply if len(reply) <= 90 else reply[:87] + "..."
        click.echo(
            f"smoke test passed: {target} ({smoke.tokens} tokens, {smoke.seconds:.1f} s): {reply}"
        )
        for problem in smoke.warnings:
            warn(f"smoke test of {target}: {problem}")
    click.echo(f"chat: charlite chat {result.slug}")
    if to_ollama:
        outcome = create_in_ollama(result.path, result.slug)
        if outcome.how == "command":
            click.echo(
                f"ollama is not installed or running here; to add the model, run:\n  {outcome.command}"
            )
        else:
            click.echo(
                f"created Ollama model {outcome.model}; chat: charlite chat {result.slug} --model ollama:{outcome.model}"
            )
    else:
        click.echo(f"ollama: ollama create {ollama_model_name(result.slug)} -f {result.modelfile}")


@click.command()
@click.argument("name", shell_complete=complete_character)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of printing.",
)
@click.option(
    "--from",
    "from_tag",
    metavar="TAG",
    help="An Ollama base model tag (default: the embedded GGUF file).",
)
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
def modelfile(name, output, from_tag, force):
    """Print or write an Ollama Modelfile for a character in prompted mode (no training)."""

    profile = characters.get_profile(name)
    if output is not None and output.is_file() and not force:  # before the work
        raise StorageError(f"{output} already exists", hint="pass --force to replace it")
    if from_tag:
        base, fmt = from_tag.strip(), tag_chat_format(from_tag.strip())
    else:
        path = embedded_model_path()
        base, fmt = str(path), gguf_chat_format(path)
    text = character_modelfile(profile, from_=base, fmt=fmt, prompted=True)
    if output is None:
        click.echo(text, nl=False)
        return
    write_output(output, text, force=force)
    click.echo(f"wrote {output}", err=not output.is_file())  # not into /dev/stdout
