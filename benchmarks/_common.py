"""Shared helpers for the ratio benchmarks: timing, medians, a private CHARLITE_HOME."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable


def private_home() -> str:
    """Point CHARLITE_HOME at a fresh temporary folder (benchmarks never touch the user's)."""
    home = tempfile.mkdtemp(prefix="charlite-bench-")
    os.environ["CHARLITE_HOME"] = home
    return home


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def medians(
    a: Callable[[], object], b: Callable[[], object], reps: int = 5, warmup: int = 1
) -> tuple[float, float]:
    """Median wall times of ``a`` and ``b``, run alternately after a warm-up of each."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for _ in range(reps):
        ta.append(timed(a))
        tb.append(timed(b))
    return statistics.median(ta), statistics.median(tb)


def report(name: str, ratio: float, **figures: object) -> None:
    for key, value in figures.items():
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    print(f"{name}: {ratio:.3f}")
