"""Correlation statistics for word-similarity scores: Pearson's r, Spearman's rho (average ranks
for ties) and their two-sided p-values, as scipy's ``pearsonr`` and ``spearmanr`` compute them.

Written with numpy and ``math`` only, so that scoring embeddings never needs scipy.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

__all__ = ["Correlation", "average_ranks", "betainc", "pearson", "spearman", "with_p_value"]


class Correlation(namedtuple("Correlation", ["statistic", "pvalue"])):
    """A correlation with its two-sided p-value; indexable like scipy's results (``r[0]``)."""

    @property
    def correlation(self) -> float:
        return self.statistic


def average_ranks(x) -> np.ndarray:
    """Ranks from 1, ties sharing the mean of their positions (scipy.stats.rankdata's default)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[True, xs[1:] != xs[:-1]]
    group = np.cumsum(starts) - 1
    bounds = np.r_[np.flatnonzero(starts), len(x)]
    avg = 0.5 * (bounds[:-1] + bounds[1:] - 1) + 1
    r = np.empty(len(x))
    r[order] = avg[group]
    return r


def pearson(a, b) -> float:
    """Pearson's r of two equal-length sequences; NaN for fewer than two values or no spread."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return max(-1.0, min(1.0, float(a @ b) / denom)) if denom > 0 else math.nan


def spearman(a, b) -> float:
    """Spearman's rho with average ranks for ties (scipy.stats.spearmanr's definition)."""
    if len(a) < 2:
        return math.nan
    return pearson(average_ranks(np.asarray(a, float)), average_ranks(np.asarray(b, float)))


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b), by its continued fraction (Lentz's method)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast below this point
        return 1.0 - betainc(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(log_front + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f


def with_p_value(r: float, n: int) -> Correlation:
    """``r`` with the two-sided p-value of the t test with n - 2 degrees of freedom, which is
    ``I_{1 - r^2}((n - 2) / 2, 1 / 2)`` (scipy's ``pearsonr`` and ``spearmanr``)."""
    if math.isnan(r) or n < 3:
        return Correlation(r, math.nan)
    return Correlation(r, betainc((n - 2) / 2, 0.5, 1.0 - r * r) if abs(r) < 1 else 0.0)
