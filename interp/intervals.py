"""Intervals, tests and verdicts of one table's cells from their moments (see :mod:`interp.stats` for the choices).

:func:`describe_cells` turns per-cell :class:`interp.stats.Moments` (or a clustered standard error) into the mean,
std, n, se, interval, statistic, p-value, adjusted p-value and significance; :func:`significance` and
:func:`mark_bold` are the paper's verdict and bold rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

if TYPE_CHECKING:  # pragma: no cover
    from interp.stats import Moments, StatsOptions


# -------------------------------------------------------------------------------------------- significance


def significance(low: np.ndarray, high: np.ndarray, baseline: float | np.ndarray) -> np.ndarray:
    """ "above" where the interval lies wholly above the baseline, "below" wholly below, else "" (NaN → "")."""
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    out = np.full(low.shape, "", dtype=object)
    with np.errstate(invalid="ignore"):
        out[low > baseline] = "above"
        out[high < baseline] = "below"
    return out


def mark_bold(cells: pd.DataFrame) -> np.ndarray:
    """The paper's bold rule on one table (columns concept, mean, significant): in each concept column the cell(s)
    with the largest mean are bold if significant "above"; otherwise nothing in that column is bold."""
    bold = np.zeros(len(cells), dtype=bool)
    means = cells["mean"].to_numpy(dtype=np.float64)
    above = (cells["significant"] == "above").to_numpy()
    for _, index in cells.groupby("concept", sort=False).indices.items():
        column = means[index]
        finite = np.isfinite(column)
        if finite.any():
            top = index[finite & (column == column[finite].max())]
            bold[top] = above[top]
    return bold


def _bootstrap(values: np.ndarray, alpha: float, baseline: float, samples: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """(low, high, p-value) of the percentile bootstrap of the mean of ``values`` (sorted first)."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    n = len(values)
    chunk = max(1, min(samples, 2_000_000 // max(n, 1)))
    means = np.concatenate([values[rng.integers(0, n, size=(min(chunk, samples - done), n))].mean(axis=1)
                            for done in range(0, samples, chunk)])
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    below = (np.count_nonzero(means <= baseline) + 1) / (samples + 1)
    above = (np.count_nonzero(means >= baseline) + 1) / (samples + 1)
    return float(low), float(high), float(min(1.0, 2.0 * min(below, above)))


def describe_cells(
    moments: "Moments",
    baseline: float,
    options: "StatsOptions",
    values: Sequence[np.ndarray] | None = None,
    rng: np.random.Generator | None = None,
    *,
    se: np.ndarray | None = None,
    units: np.ndarray | None = None,
    judged: bool = True,
) -> pd.DataFrame:
    """Mean, std, n, se, interval, statistic, p-value, adjusted p-value and significance of one table's cells
    (flat moments, one per cell). ``values`` (one array per cell): the bootstrap's. ``se`` and ``units``: a
    clustered standard error and the clusters per cell (z quantile). ``judged=False`` (p): no test, no verdict."""
    options = options.validated()
    n = moments.count.ravel()
    mean = np.where(n > 0, moments.mean.ravel(), np.nan)
    std = moments.std.ravel()
    units = n if units is None else np.asarray(units).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        se = std / np.sqrt(n) if se is None else np.asarray(se, dtype=np.float64).ravel()
    testable = (units >= 2) & np.isfinite(se)
    family = int(testable.sum())
    alpha = options.alpha
    interval_alpha = alpha / family if judged and options.correction == "bonferroni" and family else alpha
    low, high = np.full(n.shape, np.nan), np.full(n.shape, np.nan)
    statistic, p_value = np.full(n.shape, np.nan), np.full(n.shape, np.nan)
    if options.interval == "bootstrap":
        if values is None:
            raise ValueError("the bootstrap needs the values of each cell")
        rng = rng if rng is not None else np.random.default_rng(options.seed)
        for k in np.flatnonzero(testable):
            low[k], high[k], p_value[k] = _bootstrap(values[k], interval_alpha, baseline, int(options.bootstrap_samples), rng)
    else:
        t_quantile = options.interval == "t"
        critical = (sps.t.ppf(1 - interval_alpha / 2, np.maximum(units - 1, 1)) if t_quantile
                    else np.full(n.shape, sps.norm.ppf(1 - interval_alpha / 2)))
        low[testable] = mean[testable] - critical[testable] * se[testable]
        high[testable] = mean[testable] + critical[testable] * se[testable]
        difference = mean - baseline
        with np.errstate(invalid="ignore", divide="ignore"):
            statistic[testable] = np.where(se[testable] > 0, difference[testable] / se[testable],
                                           np.sign(difference[testable]) * np.inf)
        statistic[testable & (se == 0) & (difference == 0)] = 0.0
        tail = sps.t.sf(np.abs(statistic), np.maximum(units - 1, 1)) if t_quantile else sps.norm.sf(np.abs(statistic))
        p_value[testable] = np.minimum(1.0, 2.0 * tail[testable])
    if not judged:
        statistic[:], p_value[:] = np.nan, np.nan
        return _frame(mean, std, n, np.where(testable, se, np.nan), low, high, np.nan, statistic, p_value, p_value,
                      np.full(n.shape, "", dtype=object))
    p_adjusted = p_value.copy()
    reject = np.zeros(n.shape, dtype=bool)
    if family and options.correction == "none":
        reject[testable] = p_value[testable] < alpha
    elif family:
        reject[testable], p_adjusted[testable], _, _ = multipletests(p_value[testable], alpha=alpha, method=options.correction)
    if options.correction == "holm":
        significant = np.full(n.shape, "", dtype=object)
        significant[reject & (mean > baseline)] = "above"
        significant[reject & (mean < baseline)] = "below"
    else:
        significant = significance(low, high, baseline)
    return _frame(mean, std, n, np.where(testable, se, np.nan), low, high, baseline, statistic, p_value, p_adjusted,
                  significant)


def _frame(mean, std, n, se, low, high, baseline, statistic, p_value, p_adjusted, significant) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    return pd.DataFrame({"mean": mean, "std": std, "n": n.astype(np.int64), "se": se, "low": low, "high": high,
                         "baseline": np.full(n.shape, float(baseline)), "statistic": statistic, "p_value": p_value,
                         "p_adjusted": p_adjusted, "significant": significant})


__all__ = ["describe_cells", "mark_bold", "significance"]
