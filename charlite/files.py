"""Safe file writing: atomic replaces and append-only JSONL that survives a crash.

A file is either whole under its final name or absent: writers write ``.NAME.tmp-PID`` beside
the target, fsync, then ``os.replace``. JSONL stores append whole lines and flush each one; a
torn last line left by a crash is detected on read and cut off before the next append.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from charlite.errors import CharliteError, DataError, StorageError

MAX_LINE_BYTES = 16 * 1024 * 1024


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``path``, on failure it is removed."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):  # e.g. a parent that is a file: there is nothing to remove
        path.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise DataError(f"{path} is not valid JSON: nested too deeply") from None


def read_jsonl(path: Path) -> list[dict]:
    """Read a JSONL store, ignoring a torn (unterminated or unparsable) last line."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    for raw in complete:
        if not raw.strip():
            continue
        try:
            records.append(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            continue  # a line torn by a crash in the middle of the file cannot happen, but never fail on it
    if tail.strip():
        with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            records.append(json.loads(tail))  # complete record missing only its newline
    return records


def repair_jsonl(path: Path) -> int:
    """Cut a torn last line off ``path``. Returns the number of bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    cut = data.rfind(b"\n") + 1
    tail = data[cut:]
    try:
        json.loads(tail)
        with open(path, "ab") as fh:  # a whole record that only lacks its newline: keep it
            fh.write(b"\n")
        return 0
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        with open(path, "r+b") as fh:
            fh.truncate(cut)
        return len(tail)


class JsonlWriter:
    """Append records as whole lines, flushed and fsynced one by one."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            repair_jsonl(self.path)
            self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open across appends
        except OSError as exc:
            raise StorageError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def write(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
        try:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise StorageError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def write_many(self, records: Iterable[dict]) -> None:
        for record in records:
            self.write(record)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_text_file(
    path: Path,
    *,
    max_bytes: int,
    error: type[CharliteError],
    what: str,
    too_big: Callable[[int], str],
    utf8_hint: str,
) -> str:
    """A whole UTF-8 text file (BOM dropped), refused with ``error`` when it cannot be read,
    is a folder (``what`` names the expected kind), is over ``max_bytes`` (``too_big(size)`` says
    so) or is not UTF-8."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    if path.is_dir():
        raise error(f"{path} is a folder, not a {what}")
    if size > max_bytes:
        raise error(f"{path}: {too_big(size)}")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start})", hint=utf8_hint) from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
