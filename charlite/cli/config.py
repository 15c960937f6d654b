"""charlite config get|set|unset|list: defaults stored in CHARLITE_HOME/config.json."""

from __future__ import annotations

import json
import os

import click
from click.shell_completion import CompletionItem
from rich.table import Table

from charlite.cli.output import console
from charlite.settings import SETTINGS, config_path, effective, resolve, set_value, setting
from charlite.settings import unset as unset_key


def _keys(ctx, param, incomplete):
    return [CompletionItem(k, help=s.help) for k, s in SETTINGS.items() if k.startswith(incomplete)]


@click.group()
def config():
    """Defaults for every command: flag > environment (CHARLITE_KEY) > config file > built-in.

    \b
    charlite config set model qwen2.5-3b      chat and interviews use it without --model
    charlite config get model                 the effective value and where it comes from
    charlite config unset model
    charlite config list
    """


@config.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(as_json):
    """Every key: its effective value, where it comes from, what it sets."""

    rows = effective()
    if as_json:
        data = [{"key": k, "value": v, "source": src, "help": h} for k, v, src, h in rows]
        click.echo(json.dumps(data, indent=2))
        return

    table = Table(title=f"Settings ({config_path()})", title_justify="left")
    for col in ("key", "value", "from", "sets"):
        table.add_column(col)
    for key, value, source, help_ in rows:
        table.add_row(key, str(value), source, help_)
    console().print(table)


@config.command()
@click.argument("key", shell_complete=_keys)
def get(key):
    """Print KEY's effective value; where it comes from goes to stderr."""

    r = resolve(key)
    s = setting(key)
    shown = s.default_note if r.value is None and s.default_note else r.value
    click.echo(str(shown))
    click.echo(f"from: {r.source}", err=True)


@config.command("set")
@click.argument("key", shell_complete=_keys)
@click.argument("value")
def set_(key, value):
    """Store VALUE for KEY in the config file (checked first)."""

    stored = set_value(key, value)
    click.echo(f"{key} = {stored}")
    env = setting(key).env

    if os.environ.get(env, "").strip():
        click.echo(f"note: {env} is set and overrides the config file", err=True)


@config.command()
@click.argument("key", shell_complete=_keys)
def unset(key):
    """Remove KEY from the config file (back to the built-in default)."""

    if unset_key(key):
        click.echo(f"{key} unset")
    else:
        click.echo(f"{key} was not set in the config file", err=True)
