"""charlite models: every model charlite can use on this machine."""

from __future__ import annotations

import json

import click
from rich.table import Table

from charlite.cli.output import console
from charlite.inventory import all_models


def _size(n: int | None) -> str:
    if not n:
        return ""
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json):
    """Every model charlite can use here: embedded, pulled, HF cache, Ollama, exports.

    The SPEC column is what --model (and 'charlite config set model') takes; a character's
    export is used by 'charlite chat NAME' on its own.
    """

    entries, notes = all_models()
    if as_json:
        click.echo(json.dumps({"models": [e.to_json() for e in entries], "notes": notes}, indent=2))
        return

    table = Table(title="Models", title_justify="left")
    for col in ("source", "spec", "size", "details"):
        table.add_column(col, overflow="fold")
    for e in entries:
        details = ", ".join(f"{k} {v}" for k, v in e.details.items() if v)
        table.add_row(e.source, e.spec, _size(e.size), details)
    out = console()
    out.print(table)
    for note in notes:
        out.print(f"[dim]{note}[/dim]")
