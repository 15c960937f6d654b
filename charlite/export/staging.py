"""The hidden staging folder an export is built in, renamed to its final name only at the end.

``final`` is built as ``.RUN.tmp-PID`` beside it; a previous export is moved aside as
``.RUN.old-PID`` while the new one takes its name. Folders left by a killed export (its PID is
gone) are cleaned up by the next one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from charlite.home import ensure_dir


@contextlib.contextmanager
def staging_folder(final: Path) -> Iterator[Path]:
    """A fresh staging folder for ``final``: it becomes ``final`` when the block ends, and is
    removed when the block raises (Ctrl-C included), leaving no file under a final name."""
    ensure_dir(final.parent)
    clean_up_after_killed_exports(final)
    staging = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        replace_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_dir(staging: Path, final: Path) -> None:
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    try:
        os.replace(staging, final)
    except OSError:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would end the process there: assume it is alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def clean_up_after_killed_exports(final: Path) -> None:
    """Staging folders (``.RUN.tmp-PID``) of exports whose process died (kill -9, power cut) are
    removed; a previous export moved aside (``.RUN.old-PID``) and never replaced is put back."""
    for path in final.parent.glob(f".{final.name}.*-*"):
        stem, _, pid = path.name.rpartition("-")
        if stem not in (f".{final.name}.tmp", f".{final.name}.old") or not pid.isdigit():
            continue
        if int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        if stem.endswith(".old") and not final.exists():
            with contextlib.suppress(OSError):
                os.replace(path, final)
            continue
        shutil.rmtree(path, ignore_errors=True)
