"""Chat history in SQLite: migrations, sessions and turns, WAL, concurrent writers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from charlite.errors import NotFoundError, StorageError
from charlite.history import MIGRATIONS, History


def _raw(path):
    return sqlite3.connect(path)


def test_created_under_charlite_home(charlite_home):
    h = History()
    assert h.path == charlite_home / "history.sqlite"
    assert h.path.is_file()
    h.close()


def test_migrations_recorded_once(charlite_home):
    for _ in range(3):
        h = History()
        assert h.migrations() == [name for name, _ in MIGRATIONS]
        h.close()
    db = _raw(charlite_home / "history.sqlite")
    rows = db.execute("SELECT name, applied_at FROM _migrations").fetchall()
    assert [r[0] for r in rows] == [name for name, _ in MIGRATIONS]
    assert rows[0][1] > 0
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"sessions", "turns", "_migrations"} <= tables


def test_wal_and_integrity(charlite_home):
    h = History()
    assert h.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert h.db.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    assert h.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert h.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    h.close()


def test_sessions_and_turns():
    h = History()
    a = h.new_session("beethoven", "embedded (prompted)", "Vienna", "At the piano.")
    b = h.new_session("socrates", "embedded (prompted)")
    assert a != b and len(a) == 8
    h.add_turn(a, "user", "", "Where were you born?")
    h.add_turn(a, "assistant", "Beethoven", "In Bonn.\nOn the Rhine.")
    h.add_turn(b, "user", "Man", "What is virtue?")
    h.add_turn(a, "user", "", "And then?")

    turns = h.turns(a)
    assert [(t.role, t.speaker, t.content) for t in turns] == [
        ("user", "", "Where were you born?"),
        ("assistant", "Beethoven", "In Bonn.\nOn the Rhine."),
        ("user", "", "And then?"),
    ]
    assert turns[0].created_at <= turns[1].created_at <= turns[2].created_at
    assert [t.content for t in h.turns(b)] == ["What is virtue?"]

    row = h.session(a)
    assert (row.character, row.model, row.location, row.status) == (
        "beethoven",
        "embedded (prompted)",
        "Vienna",
        "At the piano.",
    )
    h.set_scene(a, "Heiligenstadt", "Walking.")
    assert (h.session(a).location, h.session(a).status) == ("Heiligenstadt", "Walking.")
    assert [s.id for s in h.sessions("beethoven")] == [a]
    assert [s.id for s in h.sessions()] == [a, b]
    assert h.turns("nope") == []
    h.close()

    # everything survives a reopen
    h2 = History()
    assert len(h2.turns(a)) == 3
    h2.close()


def test_unknown_session():
    h = History()
    with pytest.raises(NotFoundError, match="no chat session 'deadbeef'"):
        h.session("deadbeef")
    h.close()


def test_turn_of_a_missing_session_is_refused():
    h = History()
    with pytest.raises(sqlite3.IntegrityError):
        h.add_turn("nope", "user", "", "hi")
    h.close()


def test_unicode_and_large_content():
    h = History()
    sid = h.new_session("beethoven", "m")
    text = "Freude, schöner Götterfunken 🎵 " * 5000
    h.add_turn(sid, "user", "", text)
    assert h.turns(sid)[0].content == text
    h.close()


def test_corrupt_database_is_one_clear_error(charlite_home):
    charlite_home.mkdir(parents=True)
    (charlite_home / "history.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError) as info:
        History()
    assert "cannot open the chat history" in str(info.value)
    assert "move the file aside" in str(info.value)


def test_unwritable_home(tmp_path, monkeypatch):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a regular file, not a folder")
    monkeypatch.setenv("CHARLITE_HOME", str(blocker / "sub"))
    with pytest.raises(StorageError) as info:
        History()
    assert "cannot create" in str(info.value) and "CHARLITE_HOME" in str(info.value)


WRITER = textwrap.dedent(
    """
    import sys
    from charlite.history import History
    sid, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    h = History()
    own = h.new_session("socrates", "writer-" + tag)
    for i in range(n):
        h.add_turn(sid, "user", tag, f"{tag}-{i}")
        h.add_turn(own, "assistant", "Socrates", f"{tag}-own-{i}")
    h.close()
    """
)


@pytest.mark.slow
def test_two_processes_writing_concurrently_lose_nothing(charlite_home, tmp_path):
    n = 150
    h = History()
    shared = h.new_session("beethoven", "shared")
    h.close()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [
        subprocess.Popen([sys.executable, str(script), shared, tag, str(n)], stderr=subprocess.PIPE)
        for tag in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()

    h = History()
    turns = h.turns(shared)
    assert len(turns) == 2 * n
    for tag in ("a", "b"):
        mine = [t.content for t in turns if t.speaker == tag]
        assert mine == [f"{tag}-{i}" for i in range(n)]  # each writer's order is kept
    own = [s for s in h.sessions("socrates")]
    assert sorted(s.model for s in own) == ["writer-a", "writer-b"]
    assert all(len(h.turns(s.id)) == n for s in own)
    assert h.migrations() == [name for name, _ in MIGRATIONS]  # each applied once
    assert h.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    h.close()


@pytest.mark.slow
def test_two_processes_creating_the_database_at_once(charlite_home, tmp_path):
    """Both find no database and run the migrations: they are applied once, nobody fails."""
    script = tmp_path / "writer.py"
    script.write_text(
        WRITER.replace("h = History()\n", 'h = History()\nsid = h.new_session("x", "y")\n', 1)
    )
    procs = [
        subprocess.Popen([sys.executable, str(script), "-", tag, "20"], stderr=subprocess.PIPE)
        for tag in ("a", "b", "c")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    db = _raw(charlite_home / "history.sqlite")
    assert db.execute("SELECT count(*) FROM _migrations").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("SELECT count(*) FROM turns").fetchone()[0] == 3 * 2 * 20
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
