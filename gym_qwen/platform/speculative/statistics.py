"""Statistics that can separate settings played on the same episodes.

Retained return is a paired ratio: mean(setting's returns) / mean(baseline's returns) over the same episodes, with a
95% percentile bootstrap interval that resamples episodes (the same draw for both: the pairing is kept). The
bootstrap is scipy.stats.bootstrap (paired=True), seeded, so an interval is reproducible. With one task per table
rliable's stratified bootstrap reduces to this one. Beside the mean every row gives the interquartile mean (the
mean of the middle 50% of episodes, scipy.stats.trim_mean at 25%, as rliable defines it) and the fall rate: the
share of episodes below half the baseline's median return.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 10_000
FALL_FRACTION = 0.5  # an episode is a fall below this fraction of the baseline's median return


def _ratio_of_means(a, b, axis=-1):
    return np.mean(a, axis=axis) / np.mean(b, axis=axis)


def _mean(a, axis=-1):
    return np.mean(a, axis=axis)


def paired_ratio_interval(setting, baseline, seed: int = 0) -> tuple[float, float, float]:
    """(ratio, low, high): mean(setting) / mean(baseline) over paired episodes and its 95% bootstrap interval.
    The two sequences must be paired (episode i of each); nan bounds with fewer than 2 episodes."""
    x, y = np.asarray(setting, dtype=float), np.asarray(baseline, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired episodes differ in number: {len(x)} and {len(y)}")
    ratio = float(_ratio_of_means(x, y))
    if len(x) < 2:
        return ratio, math.nan, math.nan
    res = stats.bootstrap((x, y), _ratio_of_means, paired=True, vectorized=True, n_resamples=RESAMPLES,
                          confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(seed))
    return ratio, float(res.confidence_interval.low), float(res.confidence_interval.high)


def mean_interval(values, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean return and its 95% percentile bootstrap interval over episodes."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if len(x) else math.nan
    if len(x) < 2:
        return mean, math.nan, math.nan
    res = stats.bootstrap((x,), _mean, vectorized=True, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                          method="percentile", rng=np.random.default_rng(seed))
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def interquartile_mean(values) -> float:
    """The mean of the middle 50% of the values (25% trimmed from each end)."""
    x = np.asarray(values, dtype=float)
    return float(stats.trim_mean(x, 0.25)) if len(x) else math.nan


def fall_rate(values, baseline) -> float:
    """The share of episodes whose return is below FALL_FRACTION of the baseline's median return."""
    x = np.asarray(values, dtype=float)
    if not len(x) or not len(baseline):
        return math.nan
    return float(np.mean(x < FALL_FRACTION * float(np.median(baseline))))


@dataclass(frozen=True)
class PairedSummary:
    """A setting's returns summarised against the baseline's on the same episodes."""

    episodes: int
    mean: float
    mean_low: float
    mean_high: float
    iqm: float
    retained: float | None
    retained_low: float | None
    retained_high: float | None
    fall_rate: float | None


def paired_summary(returns, baseline_returns=None, seed: int = 0) -> PairedSummary:
    """Every statistic of one row; the retained ratio and fall rate only when the baseline's returns on the same
    episodes are given."""
    mean, low, high = mean_interval(returns, seed)
    retained = retained_low = retained_high = falls = None
    if baseline_returns is not None and len(baseline_returns):
        retained, retained_low, retained_high = paired_ratio_interval(returns, baseline_returns, seed)
        falls = fall_rate(returns, baseline_returns)
    return PairedSummary(len(returns), mean, low, high, interquartile_mean(returns), retained, retained_low,
                         retained_high, falls)
