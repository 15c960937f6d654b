"""Shared rendering helpers for the command modules."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def verbose(ctx: click.Context | None = None) -> bool:
    ctx = ctx or click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    return bool(root and root.obj and root.obj.get("verbose"))


@contextlib.contextmanager
def progress_bar(description: str, transient: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A bar on stderr (done of total, time taken) and the ``progress(done, total)`` callback
    that moves it."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(
        *columns, TimeElapsedColumn(), console=console(stderr=True), transient=transient
    ) as bar:
        task = bar.add_task(description, total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield progress
