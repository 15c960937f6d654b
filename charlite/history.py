"""Chat history in SQLite: sessions and their turns, with named migrations.

WAL mode and a busy timeout let two chat processes write the same database at once.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from charlite.errors import NotFoundError, StorageError
from charlite.home import ensure_dir, history_db

MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_sessions_and_turns",
        """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            character TEXT NOT NULL,
            model TEXT NOT NULL,
            location TEXT,
            status TEXT,
            created_at REAL NOT NULL
        );
        CREATE TABLE turns (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL REFERENCES sessions(id),
            role TEXT NOT NULL,
            speaker TEXT NOT NULL,
            content TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX turns_session ON turns(session_id, id);
        """,
    ),
    (
        # a reply cut by the token limit: `content` holds what was shown, `cut` says it was cut
        "002_turn_cut",
        "ALTER TABLE turns ADD COLUMN cut INTEGER NOT NULL DEFAULT 0;",
    ),
]


@dataclass
class SessionRow:
    id: str
    character: str
    model: str
    location: str | None
    status: str | None
    created_at: float


@dataclass
class TurnRow:
    role: str  # "user" or "assistant"
    speaker: str
    content: str
    created_at: float
    cut: bool = False


@dataclass
class SessionSummary:
    """One line of ``charlite history``: a session, its size and when it was last used."""

    id: str
    character: str
    model: str
    turns: int
    created_at: float
    last_used: float


def _storage_error(
    what: str, exc: sqlite3.Error, hint: str | None = "move the file aside to start a new history"
) -> StorageError:
    """A full disk (or one that fails to write) asks for space; a damaged file, to be moved."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_FULL", "SQLITE_IOERR")) or "disk is full" in str(exc):
        return StorageError(
            f"{what}: {exc}",
            hint="free space on that disk (or check the disk) and try again; the history is kept",
        )
    return StorageError(f"{what}: {exc}", hint=hint)


class History:
    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else history_db()
        ensure_dir(self.path.parent)
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA busy_timeout = 30000")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise _storage_error(f"cannot open the chat history {self.path}", exc) from None

    def _migrate(self) -> None:
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        done = {row[0] for row in self.db.execute("SELECT name FROM _migrations")}
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if self.db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                    self.db.execute("ROLLBACK")
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def _write(self, sql: str, args: tuple) -> None:
        try:
            self.db.execute(sql, args)
        except sqlite3.OperationalError as exc:  # a full disk, a locked or read-only file
            raise _storage_error(f"cannot write the chat history {self.path}", exc, None) from None

    def migrations(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM _migrations ORDER BY name")]

    def new_session(
        self,
        character: str,
        model: str,
        location: str | None = None,
        status: str | None = None,
        *,
        sid: str | None = None,
    ) -> str:
        """Start a session; ``sid`` names it (a user-chosen, already validated name)."""
        sid = sid or secrets.token_hex(4)
        self._write(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
            (sid, character, model, location, status, time.time()),
        )
        return sid

    def session(self, sid: str) -> SessionRow:
        row = self.db.execute("SELECT * FROM sessions WHERE id = ?", (sid,)).fetchone()
        if not row:
            raise NotFoundError(
                f"no chat session '{sid}'", hint="start a new one without --session"
            )
        return SessionRow(*row)

    def sessions(self, character: str | None = None) -> list[SessionRow]:
        sql = "SELECT * FROM sessions"
        args: tuple = ()
        if character:
            sql += " WHERE character = ?"
            args = (character,)
        return [SessionRow(*r) for r in self.db.execute(sql + " ORDER BY created_at", args)]

    def find(self, sid: str) -> SessionRow | None:
        row = self.db.execute("SELECT * FROM sessions WHERE id = ?", (sid,)).fetchone()
        return SessionRow(*row) if row else None

    def summaries(self, character: str | None = None) -> list[SessionSummary]:
        """Every session (of ``character``), least recently used first."""
        sql = """
            SELECT s.id, s.character, s.model, COUNT(t.id), s.created_at,
                   MAX(s.created_at, COALESCE(MAX(t.created_at), 0)) AS last_used
            FROM sessions s LEFT JOIN turns t ON t.session_id = s.id
            {where} GROUP BY s.id ORDER BY last_used, s.rowid
        """
        where, args = ("WHERE s.character = ?", (character,)) if character else ("", ())
        rows = self.db.execute(sql.format(where=where), args)
        return [SessionSummary(*r) for r in rows]

    def latest(self, character: str) -> SessionRow | None:
        """The character's most recently used session, or None."""
        found = self.summaries(character)
        return self.session(found[-1].id) if found else None

    def set_scene(self, sid: str, location: str, status: str) -> None:
        self._write(
            "UPDATE sessions SET location = ?, status = ? WHERE id = ?", (location, status, sid)
        )

    def add_turn(
        self, sid: str, role: str, speaker: str, content: str, *, cut: bool = False
    ) -> None:
        self._write(
            "INSERT INTO turns (session_id, role, speaker, content, created_at, cut)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (sid, role, speaker, content, time.time(), int(cut)),
        )

    def turns(self, sid: str) -> list[TurnRow]:
        rows = self.db.execute(
            "SELECT role, speaker, content, created_at, cut FROM turns"
            " WHERE session_id = ? ORDER BY id",
            (sid,),
        )
        return [TurnRow(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def history_exists() -> bool:
    """Whether the history database exists yet (opening :class:`History` creates it)."""
    return history_db().is_file()
