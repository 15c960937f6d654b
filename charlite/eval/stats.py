"""Aggregates with bootstrap confidence intervals.

A :class:`Stat` is a mean with its count and a percentile bootstrap interval. The same seed
always gives the same interval.

>>> s = summarize([4, 4, 4, 4])
>>> (s.n, s.mean, s.low, s.high)
(4, 4.0, 4.0, 4.0)
>>> summarize([]).mean is None
True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Stat:
    """``n`` values with mean ``mean`` and bootstrap interval ``[low, high]``.

    ``missing`` counts what could not be measured (unscored judgements); it is never part of
    the mean.
    """

    n: int
    mean: float | None
    low: float | None
    high: float | None
    missing: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    def fmt(self, digits: int = 2, percent: bool = False) -> str:
        """``4.25 [3.90, 4.60] n=12`` (or percentages), ``–`` when nothing was measured."""
        if self.mean is None:
            text = "–"
        elif percent:
            text = f"{self.mean * 100:.0f}% [{self.low * 100:.0f}, {self.high * 100:.0f}]"
        else:
            text = f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"
        text += f" n={self.n}"
        if self.missing:
            text += f" ({self.missing} unscored)"
        return text


def bootstrap_ci(
    values: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int | None = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (None when there are none).

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
    """
    import numpy as np

    data = np.asarray(list(values), dtype=float)
    if data.size == 0:
        return None
    if data.size == 1 or np.all(data == data[0]):
        return float(data[0]), float(data[0])
    if not 0 < level < 1:
        raise ValueError("level must be between 0 and 1")
    rng = np.random.default_rng(seed)
    # resample in chunks so memory stays bounded for long result files
    means = []
    chunk = max(1, 2_000_000 // data.size)
    left = resamples
    while left > 0:
        k = min(chunk, left)
        idx = rng.integers(0, data.size, size=(k, data.size))
        means.append(data[idx].mean(axis=1))
        left -= k
    all_means = np.concatenate(means)
    alpha = (1 - level) / 2
    low, high = np.quantile(all_means, [alpha, 1 - alpha])
    return float(low), float(high)


def summarize(
    values: Iterable[float],
    *,
    missing: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int | None = 0,
) -> Stat:
    data = [float(v) for v in values]
    if not data:
        return Stat(0, None, None, None, missing)
    ci = bootstrap_ci(data, resamples=resamples, level=level, seed=seed)
    assert ci is not None
    return Stat(len(data), sum(data) / len(data), ci[0], ci[1], missing)


def group_stats(
    records: Iterable[dict],
    keys: Sequence[str],
    value: str = "score",
    *,
    seed: int | None = 0,
    resamples: int = DEFAULT_RESAMPLES,
) -> dict[tuple, Stat]:
    """One :class:`Stat` per combination of ``keys`` over dict records.

    A record whose ``value`` is None counts as missing (an unscored judgement), never as a
    number.

    >>> recs = [{"d": "a", "score": 2}, {"d": "a", "score": 4}, {"d": "a", "score": None}]
    >>> s = group_stats(recs, ["d"])[("a",)]
    >>> (s.n, s.mean, s.missing)
    (2, 3.0, 1)
    """
    groups: dict[tuple, list[float]] = {}
    missing: dict[tuple, int] = {}
    for rec in records:
        key = tuple(rec.get(k) for k in keys)
        groups.setdefault(key, [])
        missing.setdefault(key, 0)
        v = rec.get(value)
        if v is None:
            missing[key] += 1
        else:
            groups[key].append(float(v))
    return {
        key: summarize(vals, missing=missing[key], seed=seed, resamples=resamples)
        for key, vals in groups.items()
    }
