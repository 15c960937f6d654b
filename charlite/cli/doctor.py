"""charlite doctor: what this machine can do, and how to fix what it cannot."""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from charlite import doctor as checks_mod
from charlite.cli.output import console
from charlite.settings import effective

STYLE = {
    "ok": "[green]ok[/green]",
    "warn": "[yellow]warn[/yellow]",
    "fail": "[bold red]FAIL[/bold red]",
    "off": "[dim]-[/dim]",
}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option(
    "--quick", is_flag=True, help="Do not load the embedded model to prove that chat works."
)
def doctor(as_json: bool, quick: bool) -> None:
    """What this machine can do: Python, torch and GPU, Unsloth, llama.cpp, models, Ollama, disk.

    Exits 0 when chat works, 1 otherwise.
    """

    err = console(stderr=True)
    with err.status("checking…") as status:
        checks = checks_mod.run_checks(
            deep=not quick, progress=lambda name: status.update(f"checking {name}…")
        )
    works = checks_mod.chat_works(checks)

    settings_rows = effective()
    if as_json:
        data = checks_mod.as_json(checks)
        data["settings"] = [{"key": k, "value": v, "source": src} for k, v, src, _ in settings_rows]
        click.echo(json.dumps(data, indent=2))
    else:
        table = Table(title="charlite doctor")
        for col in ("check", "status", "detail", "fix"):
            table.add_column(col, overflow="fold")
        for c in checks:
            table.add_row(c.name, STYLE.get(c.status, c.status), c.detail, c.fix or "")
        out = console()
        out.print(table)
        defaults = Table(title="settings (flag > env > config file > default)")
        for col in ("key", "value", "from"):
            defaults.add_column(col, overflow="fold")
        for key, value, source, _ in settings_rows:
            defaults.add_row(key, str(value), source)
        out.print(defaults)
        if works:
            out.print("[green]chat works[/green] (charlite chat NAME)")
        else:
            failed = ", ".join(c.name for c in checks if c.status == "fail" and c.chat)
            out.print(f"[bold red]chat does not work[/bold red]: fix {failed} (see the fix column)")
    sys.exit(0 if works else 1)
