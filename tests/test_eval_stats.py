"""Bootstrap intervals and aggregates on data whose answer is known."""

from __future__ import annotations

import math
import random

import pytest

from charlite.eval.stats import Stat, bootstrap_ci, group_stats, summarize


def test_constant_data_has_a_zero_width_interval():
    assert bootstrap_ci([5, 5, 5, 5, 5]) == (5.0, 5.0)
    assert bootstrap_ci([3]) == (3.0, 3.0)
    assert bootstrap_ci([]) is None


def test_interval_matches_the_normal_approximation_on_a_large_sample():
    rnd = random.Random(7)
    values = [rnd.randint(1, 7) for _ in range(400)]
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = 1.96 * sd / math.sqrt(len(values))
    low, high = bootstrap_ci(values, resamples=4000, seed=1)
    assert low < mean < high
    # percentile bootstrap of a mean ≈ mean ± 1.96·SE for n=400
    assert low == pytest.approx(mean - half, abs=0.05)
    assert high == pytest.approx(mean + half, abs=0.05)


def test_a_wider_level_gives_a_wider_interval_and_seeds_repeat():
    values = [1, 2, 2, 3, 5, 6, 7, 7, 4, 4]
    a = bootstrap_ci(values, level=0.95, seed=3)
    b = bootstrap_ci(values, level=0.5, seed=3)
    assert a[0] < b[0] < b[1] < a[1]
    assert bootstrap_ci(values, seed=11) == bootstrap_ci(values, seed=11)
    assert bootstrap_ci(values, seed=11) != bootstrap_ci(values, seed=12)
    assert min(values) <= a[0] and a[1] <= max(values)


def test_binary_rates():
    s = summarize([1.0] * 30 + [0.0] * 70, seed=0)
    assert s.n == 100 and s.mean == pytest.approx(0.3)
    # binomial SE = sqrt(.3*.7/100) = 0.0458
    assert s.low == pytest.approx(0.3 - 1.96 * 0.0458, abs=0.02)
    assert s.high == pytest.approx(0.3 + 1.96 * 0.0458, abs=0.02)
    assert s.fmt(percent=True).startswith("30% [")


def test_group_stats_never_averages_unscored():
    records = [
        {"file": "a", "dimension": "values", "score": 7},
        {"file": "a", "dimension": "values", "score": 5},
        {"file": "a", "dimension": "values", "score": None},
        {"file": "b", "dimension": "values", "score": None},
        {"file": "a", "dimension": "personality", "score": 2},
    ]
    stats = group_stats(records, ["file", "dimension"])
    assert stats[("a", "values")].mean == 6.0
    assert stats[("a", "values")].n == 2 and stats[("a", "values")].missing == 1
    assert stats[("b", "values")] == Stat(0, None, None, None, 1)
    assert stats[("a", "personality")].fmt() == "2.00 [2.00, 2.00] n=1"
    assert stats[("b", "values")].fmt() == "– n=0 (1 unscored)"


def test_large_inputs_stay_bounded():
    values = list(range(1, 8)) * 3000
    low, high = bootstrap_ci(values, resamples=500, seed=0)
    assert 3.95 < low < 4.0 < high < 4.05
