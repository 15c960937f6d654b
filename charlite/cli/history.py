"""charlite history [NAME]: list chat sessions, or show / export one as Markdown or JSON."""

from __future__ import annotations

import json
import time
from io import StringIO
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from charlite import characters
from charlite import history as store
from charlite.cli.complete import complete_character
from charlite.cli.output import console
from charlite.errors import NotFoundError
from charlite.files import write_text_atomic


@click.command()
@click.argument("name", required=False, shell_complete=complete_character)
@click.option("--session", "session_id", metavar="ID", help="Show this session.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["markdown", "json"]),
    help="Show a session (or the list) in this format (default: Markdown for a session, a table for the list).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of the terminal.",
)
def history(name, session_id, fmt, output):
    """List chat sessions (of character NAME), or show one: NAME may be a session id.

    \b
    charlite history                      every session, least recently used first
    charlite history beethoven            Beethoven's sessions
    charlite history ID                   one session as Markdown
    charlite history ID --format json -o chat.json
    """

    if not store.history_exists():
        if session_id:
            raise NotFoundError(f"no chat session '{session_id}'", hint="there is no history yet")
        _emit(_render_list([], fmt), output)
        return
    with store.History() as h:
        if session_id is None and name and h.find(name) is not None:
            session_id = name
            name = None
        if session_id is not None:
            text = _render_session(h, session_id, fmt or "markdown")
        else:
            slug = _character_slug(name) if name else None
            text = _render_list(h.summaries(slug), fmt)
    _emit(text, output)


def _character_slug(name: str) -> str:
    return characters.find(name).slug


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _render_list(rows, fmt: str | None):
    if fmt == "json":
        return json.dumps(
            [
                {
                    "id": r.id,
                    "character": r.character,
                    "model": r.model,
                    "turns": r.turns,
                    "created_at": r.created_at,
                    "last_used": r.last_used,
                }
                for r in rows
            ],
            indent=2,
            ensure_ascii=False,
        )
    if fmt == "markdown":
        lines = ["| id | character | model | turns | last used |", "|---|---|---|---|---|"]
        lines += [
            f"| {r.id} | {r.character} | {r.model} | {r.turns} | {_when(r.last_used)} |"
            for r in rows
        ]
        return "\n".join(lines)

    table = Table(title="Chat sessions", title_justify="left")
    for col in ("id", "character", "model", "turns", "last used"):
        table.add_column(col, justify="right" if col == "turns" else "left")
    for r in rows:
        table.add_row(r.id, r.character, r.model, str(r.turns), _when(r.last_used))
    if not rows:
        return "no chat sessions yet; start one with: charlite chat NAME"
    return table


def session_record(h, session_id: str) -> dict:
    """One session and its turns as plain data (the JSON export)."""
    row = h.session(session_id)
    turns = h.turns(session_id)
    return {
        "id": row.id,
        "character": row.character,
        "model": row.model,
        "location": row.location,
        "status": row.status,
        "created_at": row.created_at,
        "last_used": max([row.created_at] + [t.created_at for t in turns]),
        "turns": [
            {
                "role": t.role,
                "speaker": t.speaker,
                "content": t.content,
                "created_at": t.created_at,
                "cut": t.cut,
            }
            for t in turns
        ],
    }


def _render_session(h, session_id: str, fmt: str) -> str:
    record = session_record(h, session_id)
    if fmt == "json":
        return json.dumps(record, indent=2, ensure_ascii=False)
    name = record["character"]
    try:
        name = characters.get_profile(record["character"]).name
    except Exception:  # a deleted or broken profile: the slug still names it
        pass
    lines = [
        f"# Chat with {name}",
        "",
        f"- session: {record['id']}",
        f"- model: {record['model']}",
    ]
    if record["location"] or record["status"]:
        lines.append(f"- scene: {record['location'] or ''} — {record['status'] or ''}")
    lines += [f"- started: {_when(record['created_at'])}", ""]
    for t in record["turns"]:
        who = t["speaker"] or ("You" if t["role"] == "user" else name)
        cut = " *(cut at the token limit)*" if t["cut"] else ""
        lines += [f"**{who}:** {t['content'].strip()}{cut}", ""]
    return "\n".join(lines).rstrip() + "\n"


def _emit(content, output: Path | None) -> None:
    if output is None:
        if isinstance(content, str):
            click.echo(content.rstrip("\n"))
        else:
            console().print(content)
        return

    if not isinstance(content, str):
        buf = StringIO()
        Console(file=buf, width=120).print(content)
        content = buf.getvalue()
    write_text_atomic(output, content.rstrip("\n") + "\n")
    click.echo(f"wrote {output}", err=True)
