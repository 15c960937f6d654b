"""charlite pull REPO[:QUANT|:FILE]: download one GGUF from the Hugging Face Hub."""

from __future__ import annotations

import click
from rich.table import Table

from charlite.cli.output import console
from charlite.pull import CURATED
from charlite.pull import pull as do_pull


@click.command()
@click.argument("ref", required=False, metavar="REPO[:QUANT|:FILE]")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def pull(ref, quiet):
    """Download a GGUF from the Hugging Face Hub into CHARLITE_HOME/models (resumable, verified).

    \b
    charlite pull                                        a short list of laptop models
    charlite pull qwen2.5-3b                             one of them, by name
    charlite pull Qwen/Qwen2.5-3B-Instruct-GGUF:Q4_K_M   any repository, by quantization
    charlite pull OWNER/REPO:FILE.gguf                   or by file name

    The pulled model is then usable by its short name: --model NAME, or
    'charlite config set model NAME'. HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE are honoured.
    """
    if not ref:
        _curated_table()
        return

    model, already = do_pull(ref, quiet=quiet)
    verb = "already pulled" if already else "pulled"
    click.echo(
        f"{verb} {model.name}: {model.repo}/{model.filename} "
        f"({model.size / 1e6:.0f} MB, sha256 verified)"
    )
    click.echo(f"use it with --model {model.name}, or: charlite config set model {model.name}")


def _curated_table() -> None:
    table = Table(title="Laptop models (charlite pull NAME)", title_justify="left")
    for col in ("name", "size", "RAM", "licence", "good for"):
        table.add_column(col)
    for c in CURATED:
        table.add_row(c.name, c.size, c.ram, c.licence, c.good_for)
    out = console()
    out.print(table)
    out.print("Any other GGUF repository: charlite pull OWNER/REPO[:QUANT|:FILE.gguf]")
