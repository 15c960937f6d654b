"""Safe file reading and writing: atomic replaces and append-only JSONL that survives a crash.

A file is either whole under its final name or absent: writers write ``.NAME.tmp-PID`` beside
the target, fsync, then ``os.replace``; a temp file left by a killed writer (its PID dead) is
removed by the next write of the same target. JSONL stores append whole lines and flush each
one; a torn last line left by a crash is detected on read and cut off before the next append.

Every file a user names is opened through :func:`open_regular`, which refuses anything that is
not a regular file (a FIFO would hang, ``/dev/zero`` never ends) before reading it, and every
file a user names with ``-o`` is written through :func:`write_output`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from charlite.errors import CharliteError, DataError, NotFoundError, StorageError

MAX_LINE_BYTES = 16 * 1024 * 1024


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # another user's process (or a PID that cannot be signalled): keep it
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove ``.NAME.tmp-PID`` files of ``path`` left by writers that were killed.

    Only temp files of this very target whose PID is no longer running are removed, so a
    writer still at work (in this or another process) keeps its file.
    """
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.tmp-") + r"(\d{1,10})")
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            m = pattern.fullmatch(entry.name)
            if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
                if entry.is_file(follow_symlinks=False):
                    _remove(Path(entry.path))
                    removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``path``, on failure it is removed."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
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


def create_text_exclusive(path: Path, text: str) -> None:
    """Write ``path`` whole, only if it does not exist yet: of two writers racing for one name,
    one wins and the other gets FileExistsError (the file is linked in, never replaced)."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        remove_stale_temps(path)
        tmp.write_text(text, encoding="utf-8")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            # a file system without hard links: an exclusive create claims the name first
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            os.replace(tmp, path)
    except FileExistsError:
        _remove(tmp)
        raise
    except OSError as exc:
        _remove(tmp)
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        _remove(tmp)


def write_output(path: Path, data: str | bytes, *, force: bool) -> None:
    """Write a file the user named with ``-o``, the way ``card -o`` always has.

    An existing regular file (or a link to one) is replaced only with ``force``, atomically and
    through the link, so the link stays. A special file (``/dev/stdout``, ``/dev/null``, a pipe,
    or a link to one) is written into, as the user meant, never replaced by a regular file.
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None
    if st is None and path.is_symlink():
        raise StorageError(
            f"{path} is a link to {os.readlink(path)}, which does not exist",
            hint="remove the link or name another file",
        )
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise StorageError(f"{path} is a folder", hint="name a file to write")
    if st is not None and not stat.S_ISREG(st.st_mode):
        try:
            with open(path, "wb") as fh:  # noqa: PTH123 - a device or pipe: no temp, no fsync
                fh.write(raw)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None
        return
    if st is not None and not force:
        raise StorageError(f"{path} already exists", hint="pass --force to replace it")
    with atomic_path(path.resolve() if path.is_symlink() else path) as tmp:
        tmp.write_bytes(raw)


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


def read_json_or_lines(
    path: Path,
    *,
    what: str,
    empty_hint: str,
    unreadable: Callable[[json.JSONDecodeError], CharliteError],
) -> Any:
    """A whole JSON file, or the list of a JSON-lines file (blank lines skipped).

    A missing file is a NotFoundError naming ``what``; a file that cannot be read as UTF-8 or is
    empty a DataError; text that is neither JSON nor JSON lines the error
    ``unreadable(the JSON-lines decoding error)``.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{what} {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as UTF-8 text ({exc})") from None
    if not text.strip():
        raise DataError(f"{path} is empty", hint=empty_hint)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    except json.JSONDecodeError as exc:
        raise unreadable(exc) from None


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


_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _refuse_kind(path: Path, mode: int, error: type[CharliteError], what: str) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise error(f"{path} is a folder, not a {what}")
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise error(f"{path} is {kind}, not a {what}", hint="give a regular file")


def require_regular_file(path: Path, *, error: type[CharliteError], what: str) -> os.stat_result:
    """The ``stat`` of ``path`` (links followed), refused with ``error`` unless it is a regular
    file: nothing is opened, so a FIFO cannot block and a device is not touched."""
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    _refuse_kind(Path(path), st.st_mode, error, what)
    return st


def open_regular(path: Path, *, error: type[CharliteError], what: str) -> BinaryIO:
    """``path`` opened for reading, only if it is a regular file (checked before opening, and
    again on the open file, so a path swapped for a FIFO in between cannot block)."""
    require_regular_file(path, error=error, what=what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        _refuse_kind(Path(path), os.fstat(fd).st_mode, error, what)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_bytes_limited(
    path: Path,
    *,
    max_bytes: int,
    error: type[CharliteError],
    what: str,
    too_big: Callable[[int], str],
) -> bytes:
    """The bytes of a regular file, refused over ``max_bytes`` (never more is read, even from a
    file that grows while it is read)."""
    with open_regular(path, error=error, what=what) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > max_bytes:
            raise error(f"{path}: {too_big(size)}")
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise error(f"{path}: {too_big(len(data))}")
    return data


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
    is not a regular file (``what`` names the expected kind), is over ``max_bytes``
    (``too_big(size)`` says so) or is not UTF-8."""
    data = read_bytes_limited(path, max_bytes=max_bytes, error=error, what=what, too_big=too_big)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start})", hint=utf8_hint) from None
