"""Shared rendering helpers for the command modules."""

from __future__ import annotations

import click
from rich.console import Console


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def verbose(ctx: click.Context | None = None) -> bool:
    ctx = ctx or click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    return bool(root and root.obj and root.obj.get("verbose"))
