"""Atomic writes and append-only JSONL that survives a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from charlite.errors import DataError, StorageError
from charlite.files import (
    JsonlWriter,
    atomic_path,
    read_json,
    read_jsonl,
    repair_jsonl,
    write_json_atomic,
    write_text_atomic,
)


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name]


def test_write_text_and_json_atomic(tmp_path):
    target = tmp_path / "deep" / "er" / "manifest.json"
    write_json_atomic(target, {"format": 1, "name": "Ludwig", "ü": [1, 2]})
    assert read_json(target) == {"format": 1, "name": "Ludwig", "ü": [1, 2]}
    assert target.read_text(encoding="utf-8").endswith("}\n")
    assert "ü" in target.read_text(encoding="utf-8")  # not \u escaped
    write_text_atomic(target, "replaced")
    assert target.read_text() == "replaced"
    assert _leftovers(target.parent) == []


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "data.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-written new content")
        raise RuntimeError("crash in the middle")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_write_into_an_unwritable_place(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot write"):
        write_text_atomic(blocker / "sub" / "a.txt", "hello")
    with pytest.raises(StorageError, match="cannot write"):
        JsonlWriter(blocker / "sub" / "a.jsonl")


def test_killed_writer_leaves_old_or_new_never_partial(tmp_path):
    """SIGKILL a process that keeps rewriting a file: the file always parses."""
    target = tmp_path / "state.json"
    write_json_atomic(target, {"n": -1, "pad": "x" * 100_000})
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from charlite.files import write_json_atomic
        i = 0
        while True:
            write_json_atomic(Path({str(target)!r}), {{"n": i, "pad": "x" * 100_000}})
            i += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 20
        while read_json(target)["n"] < 3 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    data = read_json(target)
    assert data["n"] >= 3 and len(data["pad"]) == 100_000


def test_read_json_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_json(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="is not valid JSON"):
        read_json(bad)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"a": "caf\xe9"}')
    with pytest.raises(DataError):
        read_json(latin)


# ---------------------------------------------------------------------------------------------
# JSONL


def test_jsonl_append_and_read(tmp_path):
    path = tmp_path / "d" / "experiences.jsonl"
    with JsonlWriter(path) as w:
        w.write({"i": 0, "text": "Grüß Gott"})
        w.write_many({"i": i} for i in range(1, 4))
    with JsonlWriter(path) as w:  # a second writer appends
        w.write({"i": 4})
    assert [r["i"] for r in read_jsonl(path)] == [0, 1, 2, 3, 4]
    assert path.read_bytes().count(b"\n") == 5
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_torn_last_line_is_ignored_then_repaired(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"i": 0}\n{"i": 1}\n{"i": 2, "te')
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}]
    assert repair_jsonl(path) == len(b'{"i": 2, "te')
    assert path.read_bytes() == b'{"i": 0}\n{"i": 1}\n'
    assert repair_jsonl(path) == 0

    path.write_bytes(b'{"i": 0}\n{"i": 1}\n{"i": 2, "te')
    with JsonlWriter(path) as w:  # opening a writer repairs before appending
        w.write({"i": 2})
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert all(json.loads(ln) for ln in path.read_text().splitlines())


def test_whole_last_record_without_newline_is_kept(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"i": 0}\n{"i": 1}')
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}]
    assert repair_jsonl(path) == 0
    assert path.read_bytes() == b'{"i": 0}\n{"i": 1}\n'
    with JsonlWriter(path) as w:
        w.write({"i": 2})
    assert [r["i"] for r in read_jsonl(path)] == [0, 1, 2]


def test_torn_multibyte_character(tmp_path):
    path = tmp_path / "s.jsonl"
    whole = json.dumps({"t": "ü"}, ensure_ascii=False).encode()
    path.write_bytes(whole + b"\n" + whole[:-3])  # cut inside the two-byte ü
    assert read_jsonl(path) == [{"t": "ü"}]
    repair_jsonl(path)
    assert path.read_bytes() == whole + b"\n"


def test_blank_and_garbage_middle_lines_do_not_fail(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"i": 0}\n\n   \nnot json\n{"i": 1}\n')
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}]


def test_empty_file(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"")
    assert read_jsonl(path) == [] and repair_jsonl(path) == 0


@pytest.mark.slow
def test_killed_jsonl_writer_loses_at_most_the_last_record(tmp_path):
    path = tmp_path / "s.jsonl"
    code = textwrap.dedent(
        f"""
        from charlite.files import JsonlWriter
        w = JsonlWriter({str(path)!r})
        i = 0
        while True:
            w.write({{"i": i, "pad": "y" * 5000}})
            i += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 20
        while (not path.exists() or path.stat().st_size < 200_000) and time.time() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    records = read_jsonl(path)
    assert len(records) >= 20
    assert [r["i"] for r in records] == list(range(len(records)))
    with JsonlWriter(path) as w:
        w.write({"i": len(records), "pad": ""})
    again = read_jsonl(path)
    assert [r["i"] for r in again] == list(range(len(records) + 1))
    assert all(json.loads(ln) for ln in path.read_bytes().decode().splitlines())
