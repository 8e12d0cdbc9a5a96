"""Global statistics of a run: the paper's confidence intervals of r, p·r and p (§3.2.2, eq. 4).

For every cell (feature i, concept j) and quantity q in {r, pr}, and for every feature and p, this module
computes the mean, the sample standard deviation (ddof = 1), n, and an interval of the mean, and compares it
with the uniform baseline 1/J (DESIGN.md, "Statistics").

Streaming
    The run's parquet files are read column-wise with :meth:`pyarrow.parquet.ParquetFile.iter_batches`, one row
    group at a time, batch by batch (shards alike). Each batch is reduced to per-cell moments (count, mean,
    M2 = sum of squared deviations from the batch mean, in float64) and merged with Chan et al.'s pairwise update,
    so memory stays flat in n and the numbers are the same (to rounding, ~1e-15) whether a run is one file or
    many shards with any row-group size. Only ``interval="bootstrap"`` loads the values of each cell (it needs
    them to resample); it is therefore not streaming.

    Two readers of a routing file give the same numbers (to ~1e-15; tests check 1e-12):

    * by position (fast), when the file's key-value metadata declares the sample-major layout that
      :class:`interp.runwriter.RunWriter` writes (rows in sample order, then feature, then concept order, 7·J
      rows per sample; ``interp.layout``, ``interp.features``, ``interp.concepts``) with the features and
      concepts of meta.json in the same order. Only r and p·r are decoded (plus sample_id with a group or a
      split); each batch is a (samples, 7·J) matrix whose column k is cell k, reduced column-wise. Before
      trusting the metadata the reader checks (:func:`_is_sample_major`) that the row count is a multiple of 7·J
      and that the feature and concept names follow the layout on every row of the first and last row groups
      and on the first :data:`LAYOUT_CHECK_SAMPLES` samples of every other row group; the other rows are not
      checked (a file edited in the middle of a row group while keeping stale metadata would be misread).
    * by codes (general), for files without that metadata (older runs, rewritten or reordered tables) or that
      fail the check: the feature and concept dictionary codes of every row, :func:`numpy.bincount` by cell.

    With a group or a split, samples and routing rows are read in lockstep and each sample's routing rows are
    checked to start and end with its sample_id (either reader); routing rows in another sample order fall back
    to a join on sample_id (memory O(n)).

Intervals (``level`` = 1 - α)
    clt (default, the paper): ``mean ± z_{1-α/2} · s / sqrt(n)`` with ``z = scipy.stats.norm.ppf(1 - α/2)``;
    this is what ``statsmodels``' ``DescrStatsW(x).zconfint_mean(alpha)`` returns, computed here from sufficient
    statistics because DescrStatsW needs the values in memory.
    t: ``mean ± t_{1-α/2, n-1} · s / sqrt(n)`` (``scipy.stats.t.ppf``).
    bootstrap: the percentile interval of ``bootstrap_samples`` resampled means of the cell's values
    (``numpy.random.default_rng(seed)``; each cell's values are sorted first, so the result does not depend on
    the order in which shards were read). A warning says when fewer than 10 resamples fall in each tail (e.g. a
    Bonferroni-widened bootstrap interval with the default 2000 resamples).

Tests against the baseline b = 1/J
    p-value of the two-sided test of mean == b: z test (clt), t test (t), or the bootstrap's two-sided percentile
    p-value ``2·min(P*(mean* <= b), P*(mean* >= b))`` with the usual +1 correction (bootstrap).
    A cell is significant "above" ("below") if its interval lies wholly above (below) b. The cell with the largest
    mean of its concept column is **bold** if it is significant above (the paper's rule); when the largest mean is
    not significant, nothing in that column is bold.

Multiple comparisons (``correction``), one family per table (the cells of one quantity of one run that have
n >= 2): ``statsmodels.stats.multitest.multipletests`` gives ``p_adjusted``.
    none: p_adjusted = p_value; significance from the interval (paper-exact).
    bonferroni: intervals are widened to the level 1 - α/m (m = cells in the table), significance from the widened
    interval (for clt and t this is exactly "Bonferroni-adjusted p < α").
    holm: Holm's step-down has no matching simultaneous interval, so intervals stay unadjusted (level 1 - α) and
    significance comes from the Holm-adjusted p-values (p_adjusted < α), in the direction of mean - b.

Groups (``group``)
    all (the paper): every sample enters every concept's column.
    label / pred: a sample enters concept j's column only if its true / predicted label is j (``label_<j>`` /
    ``pred_<j>`` of samples.parquet).
    p does not depend on the concept, so with group "all" the p table has one column, ``"all"``; with "label" or
    "pred" it has one column per concept (p_i over the samples of that concept).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from interp.errors import InterpError, RunError
from interp.runs import read_meta, routing_files, run_name, samples_files
from interp.runwriter import CONCEPTS_KEY, FEATURES_KEY, LAYOUT_KEY, SAMPLE_MAJOR
from interp.schema import FEATURES, label_column, p_column

#: The quantities, in table order: routing coefficient r_ij, activation times routing p_i·r_ij, activation p_i.
QUANTITIES: tuple[str, ...] = ("r", "pr", "p")
GROUPS: tuple[str, ...] = ("all", "label", "pred")
INTERVALS: tuple[str, ...] = ("clt", "t", "bootstrap")
CORRECTIONS: tuple[str, ...] = ("none", "holm", "bonferroni")
BASELINES: tuple[str, ...] = ("uniform",)
#: The single column of the p table when every sample enters every column (group "all").
ALL_COLUMN = "all"
#: Samples read per batch (routing rows per batch = this × 7 × J).
DEFAULT_BATCH_SAMPLES = 8192

#: Columns of :attr:`GlobalStats.cells`, in order.
CELL_COLUMNS: tuple[str, ...] = (
    "run",
    "task",
    "quantity",
    "feature",
    "concept",
    "mean",
    "std",
    "n",
    "se",
    "low",
    "high",
    "baseline",
    "statistic",
    "p_value",
    "p_adjusted",
    "significant",
    "bold",
)


# ------------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class StatsOptions:
    """How the statistics are computed; the defaults reproduce the paper (95% CLT, all samples, no correction).

    ``baseline`` is ``"uniform"`` (1/J) or a number in (0, 1) (library use). ``split`` keeps only the samples of
    that split (``None``: all samples of the run).
    """

    level: float = 0.95
    group: str = "all"
    interval: str = "clt"
    correction: str = "none"
    split: str | None = None
    baseline: str | float = "uniform"
    bootstrap_samples: int = 2000
    seed: int = 0

    @property
    def alpha(self) -> float:
        """1 - level."""
        return 1.0 - self.level

    def validated(self) -> "StatsOptions":
        """The options themselves, or an :class:`InterpError` naming the bad one."""
        if not 0.0 < float(self.level) < 1.0:
            raise InterpError(f"level must lie strictly between 0 and 1, got {self.level}")
        for name, value, choices in (
            ("group", self.group, GROUPS),
            ("interval", self.interval, INTERVALS),
            ("correction", self.correction, CORRECTIONS),
        ):
            if value not in choices:
                raise InterpError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        if isinstance(self.baseline, str):
            if self.baseline not in BASELINES:
                raise InterpError(f"unknown baseline {self.baseline!r}; choose one of {', '.join(BASELINES)}")
        elif not 0.0 < float(self.baseline) < 1.0:
            raise InterpError(f"a numeric baseline must lie strictly between 0 and 1, got {self.baseline}")
        if int(self.bootstrap_samples) < 1:
            raise InterpError(f"bootstrap samples must be at least 1, got {self.bootstrap_samples}")
        return self

    def baseline_value(self, n_concepts: int) -> float:
        """The baseline for J = ``n_concepts`` concepts: 1/J for "uniform"."""
        if isinstance(self.baseline, str):
            return 1.0 / n_concepts
        return float(self.baseline)


# ------------------------------------------------------------------------------------------------- moments


@dataclass
class Moments:
    """Per-cell sufficient statistics: count, mean and M2 (sum of squared deviations from the mean), float64.

    Merging two of them (:meth:`merge`) is Chan, Golub and LeVeque's pairwise update, which is numerically
    stable and gives the same result (to rounding) however the values were split into batches.
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def zeros(cls, size: int) -> "Moments":
        """Empty moments for ``size`` cells."""
        return cls(np.zeros(size, dtype=np.int64), np.zeros(size), np.zeros(size))

    @classmethod
    def of(cls, codes: np.ndarray, values: np.ndarray, size: int) -> "Moments":
        """Moments of ``values`` grouped by cell index ``codes`` (0 <= code < size), two-pass within the batch."""
        codes = np.asarray(codes, dtype=np.intp)
        values = np.asarray(values, dtype=np.float64)
        count = np.bincount(codes, minlength=size).astype(np.int64)
        total = np.bincount(codes, weights=values, minlength=size)
        mean = np.divide(total, count, out=np.zeros(size), where=count > 0)
        deviation = values - mean[codes]
        m2 = np.bincount(codes, weights=deviation * deviation, minlength=size)
        return cls(count, mean, m2)

    @classmethod
    def of_columns(cls, values: np.ndarray, mask: np.ndarray | None = None) -> "Moments":
        """Moments of each column of ``values`` (m, k): cell k is column k; where ``mask`` (m, k) bool is given,
        only its True entries count. Two-pass within the matrix, in float64 (float32 values are converted)."""
        x = np.array(values, dtype=np.float64)
        if mask is not None:
            np.copyto(x, 0.0, where=~mask)  # left-out entries may be NaN
        return cls._of_owned_columns(x, mask)

    @classmethod
    def _of_owned_columns(cls, x: np.ndarray, mask: np.ndarray | None, total: np.ndarray | None = None) -> "Moments":
        """:meth:`of_columns` of a float64 matrix that may be overwritten and is 0 wherever ``mask`` is False;
        ``total``: its column sums, if already known."""
        size = x.shape[1]
        if mask is None:
            count = np.full(size, x.shape[0], dtype=np.int64)
        else:
            count = np.count_nonzero(mask, axis=0).astype(np.int64)
        total = x.sum(axis=0) if total is None else total
        mean = np.divide(total, count, out=np.zeros(size), where=count > 0)
        x -= mean
        if mask is not None:
            x *= mask
        return cls(count, mean, np.einsum("ij,ij->j", x, x))

    def merge(self, other: "Moments") -> "Moments":
        """The moments of both sets of values together (Chan et al.)."""
        count = self.count + other.count
        delta = other.mean - self.mean
        safe = np.maximum(count, 1).astype(np.float64)
        weight = other.count / safe
        mean = np.where(count > 0, self.mean + delta * weight, 0.0)
        m2 = self.m2 + other.m2 + delta * delta * (self.count * weight)
        return Moments(count, mean, np.where(count > 0, m2, 0.0))

    @property
    def std(self) -> np.ndarray:
        """Sample standard deviation (ddof = 1); NaN where n < 2 (undefined)."""
        denominator = (self.count - 1).astype(np.float64)
        variance = np.divide(self.m2, denominator, out=np.full(self.count.shape, np.nan), where=self.count > 1)
        return np.sqrt(np.maximum(variance, 0.0, where=np.isfinite(variance), out=variance))


# --------------------------------------------------------------------------------------------------- result


@dataclass
class GlobalStats:
    """The global statistics of one run (one row of :attr:`cells` per quantity × feature × concept).

    ``cells`` has the columns of :data:`CELL_COLUMNS`: ``mean``, ``std`` (ddof 1; NaN when n < 2), ``n``,
    ``se`` = std/sqrt(n), ``low``/``high`` (NaN when n < 2), ``baseline``, ``statistic`` (z or t; NaN for the
    bootstrap), ``p_value``, ``p_adjusted``, ``significant`` ("above", "below" or ""), ``bold`` (bool).
    """

    run: Path
    name: str
    task: str
    concepts: tuple[str, ...]
    features: tuple[str, ...]
    baseline: float
    options: StatsOptions
    n_samples: int
    column_n: dict[str, int]
    splits: dict[str, int]
    cells: pd.DataFrame
    warnings: tuple[str, ...] = ()
    nonfinite: int = 0
    meta: dict = field(default_factory=dict, repr=False)

    @property
    def n_concepts(self) -> int:
        """J."""
        return len(self.concepts)

    def columns(self, quantity: str) -> tuple[str, ...]:
        """Column names of a quantity's table: the concepts, or ("all",) for p with group "all"."""
        _check_quantity(quantity)
        if quantity == "p" and self.options.group == "all":
            return (ALL_COLUMN,)
        return self.concepts

    def quantity_cells(self, quantity: str) -> pd.DataFrame:
        """The rows of :attr:`cells` of one quantity, in feature then column order."""
        _check_quantity(quantity)
        return self.cells[self.cells["quantity"] == quantity].reset_index(drop=True)

    def values(self, quantity: str, field: str = "mean") -> pd.DataFrame:
        """One numeric field of a quantity as a (features × columns) frame, rows t, a, v, ta, av, vt, tav."""
        part = self.quantity_cells(quantity)
        frame = part.pivot(index="feature", columns="concept", values=field)
        return frame.reindex(index=list(self.features), columns=list(self.columns(quantity)))

    def table(self, quantity: str, digits: int = 3, marks: bool = False) -> pd.DataFrame:
        """A quantity's table of ``(low, high)`` strings (``n=0``/``n=1`` where there is no interval).

        With ``marks``, bold cells are wrapped in ``**`` and other significant cells get ``⁺``/``⁻``.
        """
        from interp.tables import interval_table

        return interval_table(self, quantity, digits=digits, marks=marks)

    def to_frame(self) -> pd.DataFrame:
        """A copy of :attr:`cells` (long format, one row per cell)."""
        return self.cells.copy()

    def summary(self) -> str:
        """A plain-text summary: the options, n, and the three tables."""
        from interp.tables import summary_text

        return summary_text(self)


def _check_quantity(quantity: str) -> None:
    if quantity not in QUANTITIES:
        raise InterpError(f"unknown quantity {quantity!r}; choose one of {', '.join(QUANTITIES)}")


# -------------------------------------------------------------------------------------------- significance


def significance(low: np.ndarray, high: np.ndarray, baseline: float | np.ndarray) -> np.ndarray:
    """ "above" where the interval lies wholly above the baseline, "below" wholly below, else "" (NaN → "")."""
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    out = np.full(low.shape, "", dtype=object)
    with np.errstate(invalid="ignore"):
        out[low > baseline] = "above"
        out[high < baseline] = "below"
    return out


def mark_bold(cells: pd.DataFrame) -> np.ndarray:
    """The paper's bold rule on one table: in each ``concept`` column, the cell(s) with the largest ``mean``
    are bold if ``significant == "above"``; if the largest mean is not significant above, nothing is bold.

    ``cells`` needs the columns ``concept``, ``mean`` and ``significant``; returns a bool array aligned with it.
    """
    bold = np.zeros(len(cells), dtype=bool)
    means = cells["mean"].to_numpy(dtype=np.float64)
    above = (cells["significant"] == "above").to_numpy()
    for _, index in cells.groupby("concept", sort=False).indices.items():
        column = means[index]
        finite = np.isfinite(column)
        if not finite.any():
            continue
        top = index[finite & (column == column[finite].max())]
        bold[top] = above[top]
    return bold


def _p_values(mean: np.ndarray, se: np.ndarray, n: np.ndarray, baseline: float, interval: str) -> tuple[np.ndarray, np.ndarray]:
    """(statistic, two-sided p-value) of mean == baseline: z (clt) or t (t); se = 0 gives p 0 (or 1 if equal)."""
    testable = n >= 2
    statistic = np.full(mean.shape, np.nan)
    p_value = np.full(mean.shape, np.nan)
    difference = mean - baseline
    positive = testable & (se > 0)
    statistic[positive] = difference[positive] / se[positive]
    if interval == "t":
        p_value[positive] = 2.0 * sps.t.sf(np.abs(statistic[positive]), n[positive] - 1)
    else:
        p_value[positive] = 2.0 * sps.norm.sf(np.abs(statistic[positive]))
    degenerate = testable & (se == 0)
    statistic[degenerate] = np.sign(difference[degenerate]) * np.inf
    p_value[degenerate] = np.where(difference[degenerate] == 0, 1.0, 0.0)
    statistic[degenerate & (difference == 0)] = 0.0
    return statistic, p_value


def _bootstrap(values: np.ndarray, alpha: float, baseline: float, samples: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """(low, high, p-value) of the percentile bootstrap of the mean of ``values`` (sorted first)."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    n = len(values)
    chunk = max(1, min(samples, 2_000_000 // max(n, 1)))
    means = np.empty(samples)
    done = 0
    while done < samples:
        size = min(chunk, samples - done)
        means[done : done + size] = values[rng.integers(0, n, size=(size, n))].mean(axis=1)
        done += size
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    below = (np.count_nonzero(means <= baseline) + 1) / (samples + 1)
    above = (np.count_nonzero(means >= baseline) + 1) / (samples + 1)
    return float(low), float(high), float(min(1.0, 2.0 * min(below, above)))


def describe_cells(
    moments: Moments,
    baseline: float,
    options: StatsOptions,
    values: Sequence[np.ndarray] | None = None,
    rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """Mean, std, n, se, interval, statistic, p-value, adjusted p-value and significance of one table's cells.

    ``values`` (one array per cell) is needed for ``interval="bootstrap"`` only. Rows follow the cell order of
    ``moments``; the bold flag is added by the caller (it needs the concept of each cell).
    """
    options = options.validated()
    n = moments.count
    mean = np.where(n > 0, moments.mean, np.nan)
    std = moments.std
    with np.errstate(invalid="ignore", divide="ignore"):
        se = std / np.sqrt(n.astype(np.float64))
    testable = n >= 2
    family = int(testable.sum())
    alpha = options.alpha
    interval_alpha = alpha / family if options.correction == "bonferroni" and family > 0 else alpha
    low = np.full(n.shape, np.nan)
    high = np.full(n.shape, np.nan)
    if options.interval == "bootstrap":
        if values is None:
            raise ValueError("the bootstrap needs the values of each cell")
        rng = rng if rng is not None else np.random.default_rng(options.seed)
        statistic = np.full(n.shape, np.nan)
        p_value = np.full(n.shape, np.nan)
        for index in np.flatnonzero(testable):
            low[index], high[index], p_value[index] = _bootstrap(
                values[index], interval_alpha, baseline, int(options.bootstrap_samples), rng
            )
    else:
        if options.interval == "t":
            critical = sps.t.ppf(1.0 - interval_alpha / 2.0, np.maximum(n - 1, 1))
        else:
            critical = np.full(n.shape, sps.norm.ppf(1.0 - interval_alpha / 2.0))
        low[testable] = mean[testable] - critical[testable] * se[testable]
        high[testable] = mean[testable] + critical[testable] * se[testable]
        statistic, p_value = _p_values(mean, se, n, baseline, options.interval)
    p_adjusted = p_value.copy()
    reject = np.zeros(n.shape, dtype=bool)
    if family > 0:
        if options.correction == "none":
            reject[testable] = p_value[testable] < alpha
        else:
            reject[testable], p_adjusted[testable], _, _ = multipletests(
                p_value[testable], alpha=alpha, method=options.correction
            )
    if options.correction == "holm":
        significant = np.full(n.shape, "", dtype=object)
        significant[reject & (mean > baseline)] = "above"
        significant[reject & (mean < baseline)] = "below"
    else:
        significant = significance(low, high, baseline)
    return pd.DataFrame(
        {
            "mean": mean,
            "std": std,
            "n": n.astype(np.int64),
            "se": np.where(testable, se, np.nan),
            "low": low,
            "high": high,
            "baseline": np.full(n.shape, float(baseline)),
            "statistic": statistic,
            "p_value": p_value,
            "p_adjusted": p_adjusted,
            "significant": significant,
        }
    )


# ------------------------------------------------------------------------------------------------- reading


class _Misaligned(Exception):
    """Routing rows are not in the order of the samples rows: fall back to a join on sample_id."""


@dataclass
class _Layout:
    task: str
    concepts: tuple[str, ...]
    features: tuple[str, ...]

    @property
    def n_cells(self) -> int:
        return len(self.features) * len(self.concepts)

    @property
    def per_sample(self) -> int:
        return len(self.features) * len(self.concepts)


class _Accumulator:
    """Moments of r, pr and p per cell (and, for the bootstrap, the values themselves)."""

    def __init__(self, layout: _Layout, p_cells: int, keep_values: bool) -> None:
        self.sizes = {"r": layout.n_cells, "pr": layout.n_cells, "p": p_cells}
        self.moments = {q: Moments.zeros(size) for q, size in self.sizes.items()}
        self.kept: dict[str, list[tuple[np.ndarray, np.ndarray]]] | None = (
            {q: [] for q in QUANTITIES} if keep_values else None
        )
        self.nonfinite = 0
        self.column_n = np.zeros(len(layout.concepts), dtype=np.int64)
        self.n_samples = 0

    def add(self, quantity: str, codes: np.ndarray, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(values)
        if not finite.all():
            self.nonfinite += int((~finite).sum())
            codes, values = codes[finite], values[finite]
        if len(values) == 0:
            return
        self.moments[quantity] = self.moments[quantity].merge(Moments.of(codes, values, self.sizes[quantity]))
        if self.kept is not None:
            self.kept[quantity].append((np.asarray(codes, dtype=np.intp), values))

    def add_matrix(self, quantity: str, values: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add a (m, k) matrix whose column k holds values of cell k (``mask``: which entries count); non-finite
        values are left out and counted, as in :meth:`add`."""
        if values.size:
            moments = self._matrix_moments(quantity, values, mask, np.arange(values.shape[1]))
            self.moments[quantity] = self.moments[quantity].merge(moments)

    def add_blocks(self, quantity: str, blocks: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """Add (values (m_b, k_b), cells (k_b,)) blocks over disjoint cells: column c of a block holds values of
        cell ``cells[c]``. One merge for all of them."""
        size = self.sizes[quantity]
        count, mean, m2 = np.zeros(size, dtype=np.int64), np.zeros(size), np.zeros(size)
        for values, cells in blocks:
            if values.size:
                part = self._matrix_moments(quantity, values, None, cells)
                count[cells], mean[cells], m2[cells] = part.count, part.mean, part.m2
        if count.any():
            self.moments[quantity] = self.moments[quantity].merge(Moments(count, mean, m2))

    def _matrix_moments(self, quantity: str, values: np.ndarray, mask: np.ndarray | None, cells: np.ndarray) -> Moments:
        """Moments of the columns of ``values`` (cells ``cells``), leaving out and counting non-finite values,
        and keeping the values for the bootstrap."""
        x = np.array(values, dtype=np.float64)  # a float64 copy, reduced in place
        if mask is not None and mask.all():
            mask = None
        total: np.ndarray | None = x.sum(axis=0)
        # NaN and ±inf propagate into a column sum (float32 values cannot overflow a float64 sum), so the sums
        # tell whether the matrix needs a finiteness mask.
        if not np.isfinite(total).all():  # type: ignore[arg-type]
            finite = np.isfinite(x)
            self.nonfinite += int(np.count_nonzero(~finite if mask is None else mask & ~finite))
            np.copyto(x, 0.0, where=~finite)
            mask = finite if mask is None else mask & finite
        if mask is not None:
            x *= mask  # x is finite here, so this zeroes exactly the left-out entries
            total = None
        if self.kept is not None:
            codes = np.broadcast_to(np.asarray(cells, dtype=np.intp), x.shape)
            kept = (codes.reshape(-1), x.reshape(-1).copy()) if mask is None else (codes[mask], x[mask])
            self.kept[quantity].append(kept)
        return Moments._of_owned_columns(x, mask, total)

    def cell_values(self, quantity: str) -> list[np.ndarray]:
        """The values of each cell (bootstrap only)."""
        size = self.sizes[quantity]
        assert self.kept is not None
        parts = self.kept[quantity]
        if not parts:
            return [np.empty(0) for _ in range(size)]
        codes = np.concatenate([c for c, _ in parts])
        values = np.concatenate([v for _, v in parts])
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(size + 1))
        ordered = values[order]
        return [ordered[bounds[k] : bounds[k + 1]] for k in range(size)]


def _layout(meta: dict, run: Path) -> _Layout:
    try:
        task = str(meta["task"])
        concepts = tuple(str(c) for c in meta["concepts"])
    except KeyError as error:
        raise RunError(f"{run}/meta.json has no {error.args[0]!r}; extract the run again") from None
    features = tuple(str(f) for f in meta.get("features", FEATURES))
    if not concepts or not features:
        raise RunError(f"{run}/meta.json lists no concepts or no features; extract the run again")
    return _Layout(task, concepts, features)


def _lookup(column: pa.Array, names: Sequence[str], what: str, path: Path) -> np.ndarray:
    """Integer codes (position in ``names``, the meta's order) of a dictionary or string column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    if column.null_count:
        raise RunError(f"{path} has missing {what} names; extract the run again")
    position = {name: k for k, name in enumerate(names)}
    dictionary = column.dictionary.to_pylist()
    unknown = [name for name in dictionary if name not in position]
    if unknown:
        raise RunError(f"{path} has {what} {unknown[0]!r}, which meta.json does not list ({', '.join(names)})")
    table = np.array([position[name] for name in dictionary], dtype=np.intp)
    return table[column.indices.to_numpy(zero_copy_only=False).astype(np.intp)] if len(table) else np.empty(0, np.intp)


def _floats(column: pa.Array) -> np.ndarray:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def _iter_batches(
    path: Path, columns: Sequence[str], batch_size: int, read_dictionary: Sequence[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Record batches of some columns, one row group at a time (pyarrow's whole-file reader keeps more memory
    the longer the file; row group by row group, memory stays flat in the number of rows)."""
    parquet = pq.ParquetFile(path, read_dictionary=list(read_dictionary) if read_dictionary else None, pre_buffer=False)
    for group in range(parquet.num_row_groups):
        yield from parquet.iter_batches(batch_size=batch_size, row_groups=[group], columns=list(columns))


def _split_counts(files: Sequence[Path]) -> dict[str, int]:
    """Samples per split (reads only the split column)."""
    counts: Counter[str] = Counter()
    for path in files:
        parquet = pq.ParquetFile(path)
        if "split" not in parquet.schema_arrow.names:
            counts["?"] += parquet.metadata.num_rows
            continue
        for batch in _iter_batches(path, ["split"], DEFAULT_BATCH_SAMPLES * 8):
            for entry in pc.value_counts(batch.column(0)).to_pylist():
                counts[str(entry["values"])] += int(entry["counts"])
    return dict(counts)


def _sample_columns(layout: _Layout, group: str, split: str | None, ids: bool = True) -> list[str]:
    columns = ["sample_id"] if ids else []
    if split is not None:
        columns.append("split")
    if group != "all":
        columns += [_member_column(group, c) for c in layout.concepts]
    columns += [p_column(f) for f in layout.features]
    return columns


def _member_column(group: str, concept: str) -> str:
    return label_column(concept) if group == "label" else f"pred_{concept}"


def _check_columns(path: Path, needed: Iterable[str]) -> None:
    names = set(pq.ParquetFile(path).schema_arrow.names)
    missing = [c for c in needed if c not in names]
    if missing:
        raise RunError(f"{path} lacks the column(s) {', '.join(missing)}; extract the run again")


@dataclass
class _SampleBatch:
    ids: pa.Array
    include: np.ndarray  # (b,) bool
    member: np.ndarray | None  # (b, J) bool, or None for group "all"
    p: np.ndarray  # (b, F) float64


def _sample_batch(batch: pa.RecordBatch, layout: _Layout, group: str, split: str | None) -> _SampleBatch:
    size = batch.num_rows
    if split is not None:
        include = np.asarray(pc.fill_null(pc.equal(batch.column("split"), split), False).to_numpy(zero_copy_only=False))
    else:
        include = np.ones(size, dtype=bool)
    member = None
    if group != "all":
        member = np.column_stack(
            [
                np.asarray(pc.fill_null(batch.column(_member_column(group, c)), False).to_numpy(zero_copy_only=False), bool)
                for c in layout.concepts
            ]
        ).reshape(size, len(layout.concepts))
    p = np.column_stack([_floats(batch.column(p_column(f))) for f in layout.features]).reshape(size, len(layout.features))
    ids = batch.column("sample_id") if "sample_id" in batch.schema.names else pa.array([], pa.string())
    return _SampleBatch(ids, include, member, p)


def _add_samples(acc: _Accumulator, sample: _SampleBatch, layout: _Layout) -> None:
    """p of the included samples; with a group, per (feature, concept) over the concept's members."""
    include = sample.include
    acc.n_samples += int(include.sum())
    if sample.member is None:
        acc.column_n += int(include.sum())
        acc.add_matrix("p", sample.p if include.all() else sample.p[include])
        return
    member = sample.member & include[:, None]
    acc.column_n += member.sum(axis=0)
    acc.add_blocks("p", ((sample.p[member[:, j]], _concept_cells(layout, j)) for j in range(len(layout.concepts))))


def _concept_cells(layout: _Layout, concept: int) -> np.ndarray:
    """The cells (feature i, concept j) = i·J + j of one concept j, in feature order."""
    n_concepts = len(layout.concepts)
    return np.arange(len(layout.features)) * n_concepts + concept


def _routing_codes(batch: pa.RecordBatch, layout: _Layout, path: Path) -> tuple[np.ndarray, np.ndarray]:
    feature = _lookup(batch.column("feature"), layout.features, "feature", path)
    concept = _lookup(batch.column("concept"), layout.concepts, "concept", path)
    return feature * len(layout.concepts) + concept, concept


@dataclass
class _RoutingChunk:
    cell: np.ndarray
    concept: np.ndarray
    r: np.ndarray
    pr: np.ndarray
    ids: pa.Array

    @property
    def size(self) -> int:
        return len(self.cell)

    def slice(self, start: int, stop: int) -> "_RoutingChunk":
        return _RoutingChunk(
            self.cell[start:stop], self.concept[start:stop], self.r[start:stop], self.pr[start:stop],
            self.ids.slice(start, stop - start),
        )

    @staticmethod
    def concat(parts: list["_RoutingChunk"]) -> "_RoutingChunk":
        if len(parts) == 1:
            return parts[0]
        ids = [part.ids for part in parts]
        if pa.types.is_dictionary(ids[0].type):
            ids = [pc.cast(part, pa.string()) for part in ids]
        return _RoutingChunk(
            np.concatenate([p.cell for p in parts]), np.concatenate([p.concept for p in parts]),
            np.concatenate([p.r for p in parts]), np.concatenate([p.pr for p in parts]), pa.concat_arrays(ids),
        )


def _take_front(pending: list[Any], count: int) -> list[Any]:
    """Remove the first ``count`` rows from a queue of pieces (each with ``.size`` and ``.slice(start, stop)``).

    Whole pieces are popped; the last one is split, its remainder staying at the head. Returns the pieces taken.
    """
    parts: list[Any] = []
    need = count
    while need:
        head = pending[0]
        if head.size <= need:
            parts.append(pending.pop(0))
            need -= head.size
        else:
            parts.append(head.slice(0, need))
            pending[0] = head.slice(need, head.size)
            need = 0
    return parts


class _RoutingQueue:
    """Routing rows of one file, handed out in exact counts whatever the file's batch boundaries."""

    def __init__(self, path: Path, layout: _Layout, batch_rows: int) -> None:
        self.path = path
        self.layout = layout
        self._batches = _iter_batches(path, ["sample_id", "feature", "concept", "r", "pr"], batch_rows, ["sample_id"])
        self._pending: list[_RoutingChunk] = []
        self._available = 0

    def _pull(self) -> bool:
        batch = next(self._batches, None)
        if batch is None:
            return False
        if batch.num_rows:
            cell, concept = _routing_codes(batch, self.layout, self.path)
            chunk = _RoutingChunk(cell, concept, _floats(batch.column("r")), _floats(batch.column("pr")), batch.column("sample_id"))
            self._pending.append(chunk)
            self._available += chunk.size
        return True

    def take(self, count: int) -> _RoutingChunk:
        while self._available < count:
            if not self._pull():
                raise _Misaligned
        parts: list[_RoutingChunk] = _take_front(self._pending, count)
        self._available -= count
        if not parts:
            return _RoutingChunk(np.empty(0, np.intp), np.empty(0, np.intp), np.empty(0), np.empty(0), pa.array([], pa.string()))
        return _RoutingChunk.concat(parts)

    def exhausted(self) -> bool:
        while self._available == 0:
            if not self._pull():
                return True
        return False


def _as_strings(array: pa.Array) -> pa.Array:
    return pc.cast(array, pa.string()) if pa.types.is_dictionary(array.type) else array


def _add_routing(acc: _Accumulator, cell: np.ndarray, concept: np.ndarray, r: np.ndarray, pr: np.ndarray, keep: np.ndarray | None) -> None:
    if keep is not None:
        cell, r, pr = cell[keep], r[keep], pr[keep]
    acc.add("r", cell, r)
    acc.add("pr", cell, pr)


def _accumulate_all(acc: _Accumulator, layout: _Layout, s_files: Sequence[Path], r_files: Sequence[Path], batch_samples: int) -> None:
    """Group "all", no split: p from the samples tables, r and pr from the routing tables, independently."""
    columns = _sample_columns(layout, "all", None, ids=False)
    for path in s_files:
        _check_columns(path, columns)
        for batch in _iter_batches(path, columns, batch_samples):
            _add_samples(acc, _sample_batch(batch, layout, "all", None), layout)
    for path in r_files:
        if _is_sample_major(path, layout):
            for piece in _SampleRows(path, layout, batch_samples * layout.per_sample, with_ids=False).pieces():
                acc.add_matrix("r", piece.r)
                acc.add_matrix("pr", piece.pr)
            continue
        for batch in _iter_batches(path, ["feature", "concept", "r", "pr"], batch_samples * layout.per_sample):
            if batch.num_rows:
                cell, concept = _routing_codes(batch, layout, path)
                _add_routing(acc, cell, concept, _floats(batch.column("r")), _floats(batch.column("pr")), None)


def _row_filter(sample: _SampleBatch, sample_of_row: np.ndarray, concept: np.ndarray) -> np.ndarray:
    keep = sample.include[sample_of_row]
    if sample.member is not None:
        keep &= sample.member[sample_of_row, concept]
    return keep


def _check_sample_ids(sample: _SampleBatch, row_ids: pa.Array, per_sample: int) -> None:
    """The routing rows of each sample start and end with its sample_id, else :class:`_Misaligned`."""
    size = len(sample.include)
    ids = _as_strings(sample.ids)
    firsts = _as_strings(row_ids.take(pa.array(np.arange(0, size * per_sample, per_sample))))
    lasts = _as_strings(row_ids.take(pa.array(np.arange(per_sample - 1, size * per_sample, per_sample))))
    if not (firsts.equals(ids) and lasts.equals(ids)):
        raise _Misaligned


def _accumulate_aligned(
    acc: _Accumulator, layout: _Layout, group: str, split: str | None,
    s_files: Sequence[Path], r_files: Sequence[Path], batch_samples: int,
) -> None:
    """Samples and routing shards read in lockstep (routing rows are in sample order, 7·J per sample)."""
    if len(s_files) != len(r_files):
        raise _Misaligned
    per_sample = layout.per_sample
    columns = _sample_columns(layout, group, split)
    for s_path, r_path in zip(s_files, r_files):
        _check_columns(s_path, columns)
        samples = pq.ParquetFile(s_path)
        if pq.ParquetFile(r_path).metadata.num_rows != samples.metadata.num_rows * per_sample:
            raise _Misaligned
        if _is_sample_major(r_path, layout):
            _aligned_by_position(acc, layout, group, split, s_path, r_path, columns, batch_samples)
            continue
        queue = _RoutingQueue(r_path, layout, batch_samples * per_sample)
        for batch in _iter_batches(s_path, columns, batch_samples):
            size = batch.num_rows
            if not size:
                continue
            sample = _sample_batch(batch, layout, group, split)
            chunk = queue.take(size * per_sample)
            _check_sample_ids(sample, chunk.ids, per_sample)
            _add_samples(acc, sample, layout)
            sample_of_row = np.repeat(np.arange(size), per_sample)
            _add_routing(acc, chunk.cell, chunk.concept, chunk.r, chunk.pr, _row_filter(sample, sample_of_row, chunk.concept))
        if not queue.exhausted():
            raise _Misaligned


def _aligned_by_position(
    acc: _Accumulator, layout: _Layout, group: str, split: str | None,
    s_path: Path, r_path: Path, columns: list[str], batch_samples: int,
) -> None:
    """:func:`_accumulate_aligned` for one pair whose routing file is sample-major: (samples, 7·J) matrices of r
    and p·r, restricted to the samples of the split and, per concept column, to the concept's members."""
    per_sample = layout.per_sample
    n_concepts = len(layout.concepts)
    rows = _SampleRows(r_path, layout, batch_samples * per_sample, with_ids=True)
    for batch in _iter_batches(s_path, columns, batch_samples):
        size = batch.num_rows
        if not size:
            continue
        sample = _sample_batch(batch, layout, group, split)
        piece = rows.take(size)
        assert piece.ids is not None
        _check_sample_ids(sample, piece.ids, per_sample)
        _add_samples(acc, sample, layout)
        include = sample.include
        if sample.member is None:
            every = include.all()
            acc.add_matrix("r", piece.r if every else piece.r[include])
            acc.add_matrix("pr", piece.pr if every else piece.pr[include])
        else:
            # Concept j's column: the rows of its members, its cells i·J + j (a strided column slice).
            member = sample.member & include[:, None]
            for quantity, values in (("r", piece.r), ("pr", piece.pr)):
                acc.add_blocks(quantity, ((values[member[:, j]][:, j::n_concepts], _concept_cells(layout, j))
                                          for j in range(n_concepts)))
    if not rows.exhausted():
        raise _Misaligned


# ------------------------------------------------------------------------------------ sample-major routing files

#: Samples at the start of every row group whose feature and concept names :func:`_is_sample_major` checks.
LAYOUT_CHECK_SAMPLES = 16


def _declares_sample_major(path: Path | str, layout: _Layout, parquet: pq.ParquetFile | None = None) -> bool:
    """Whether a routing file's key-value metadata declares the sample-major layout with the run's feature and
    concept names, in the run's order (meta.json). Reads the footer only."""
    metadata = (parquet or pq.ParquetFile(path)).metadata.metadata or {}
    if metadata.get(LAYOUT_KEY) != SAMPLE_MAJOR:
        return False
    try:
        features = tuple(str(f) for f in json.loads(metadata[FEATURES_KEY]))
        concepts = tuple(str(c) for c in json.loads(metadata[CONCEPTS_KEY]))
    except (KeyError, ValueError, TypeError):
        return False
    return features == layout.features and concepts == layout.concepts


def _is_sample_major(path: Path | str, layout: _Layout) -> bool:
    """Whether r and p·r of a routing file may be read by position (row k is cell k mod 7·J).

    True when the file declares the layout (:func:`_declares_sample_major`), its row count is a multiple of
    7·J, and the feature and concept names follow the layout on every row of the first and the last row group
    and on the first :data:`LAYOUT_CHECK_SAMPLES` samples' rows of every other row group. The other rows are
    not checked: a file edited in place after writing, keeping the metadata of a layout it no longer has in
    the middle of a row group, would be misread. Files rewritten with another row order keep the metadata only
    when written from a table that carried it; a reorder that moves whole samples keeps the layout (group "all"
    is then right, and the sample_id check of the group and split paths catches the new sample order).
    """
    path = Path(path)
    parquet = pq.ParquetFile(path)
    if not _declares_sample_major(path, layout, parquet):
        return False
    footer = parquet.metadata
    per_sample = layout.per_sample
    if footer.num_rows % per_sample:
        return False
    last = footer.num_row_groups - 1
    start = 0
    for group in range(footer.num_row_groups):
        rows = footer.row_group(group).num_rows
        if rows:
            columns = ["feature", "concept"]
            if group in (0, last):
                names: pa.Table | pa.RecordBatch = parquet.read_row_group(group, columns=columns)
            else:
                head = min(rows, LAYOUT_CHECK_SAMPLES * per_sample)
                names = next(parquet.iter_batches(batch_size=head, row_groups=[group], columns=columns))
            if not _follows_layout(names, start, layout, path):
                return False
        start += rows
    return True


def _follows_layout(names: pa.Table | pa.RecordBatch, start: int, layout: _Layout, path: Path) -> bool:
    """Whether rows ``start``, ``start + 1``, ... of a file have the feature and concept of the layout."""
    try:
        feature = _lookup(names.column("feature"), layout.features, "feature", path)
        concept = _lookup(names.column("concept"), layout.concepts, "concept", path)
    except RunError:
        return False  # unknown or missing names: the general path reads the file and reports them
    cells = np.roll(np.arange(layout.per_sample), -(start % layout.per_sample))  # the cells of rows start, ...
    n_concepts = len(layout.concepts)
    return bool(
        np.array_equal(feature, np.resize(cells // n_concepts, len(feature)))
        and np.array_equal(concept, np.resize(cells % n_concepts, len(concept)))
    )


@dataclass
class _SamplePiece:
    """r and p·r of some whole samples, (samples, 7·J) each, and the sample_id of each row (or None)."""

    r: np.ndarray
    pr: np.ndarray
    ids: pa.Array | None

    @property
    def size(self) -> int:
        return len(self.r)

    def slice(self, start: int, stop: int) -> "_SamplePiece":
        per_sample = self.r.shape[1]
        ids = None if self.ids is None else self.ids.slice(start * per_sample, (stop - start) * per_sample)
        return _SamplePiece(self.r[start:stop], self.pr[start:stop], ids)

    @staticmethod
    def concat(parts: list["_SamplePiece"]) -> "_SamplePiece":
        if len(parts) == 1:
            return parts[0]
        ids = None if parts[0].ids is None else pa.concat_arrays([_as_strings(p.ids) for p in parts])  # type: ignore[arg-type]
        return _SamplePiece(np.concatenate([p.r for p in parts]), np.concatenate([p.pr for p in parts]), ids)


class _SampleRows:
    """r and p·r of a sample-major routing file, by whole samples, without its feature and concept columns.

    Batches of ``batch_rows`` rows are read row group by row group; a batch that ends inside a sample (row groups
    not cut at sample boundaries) is stitched to the next one, so pieces always hold whole samples.
    """

    def __init__(self, path: Path, layout: _Layout, batch_rows: int, with_ids: bool) -> None:
        self.path = path
        self.per_sample = layout.per_sample
        self.with_ids = with_ids
        columns = ["sample_id", "r", "pr"] if with_ids else ["r", "pr"]
        self._batches = _iter_batches(path, columns, batch_rows, ["sample_id"] if with_ids else None)
        self._carry: tuple[np.ndarray, np.ndarray, pa.Array | None] | None = None
        self._pending: list[_SamplePiece] = []
        self._available = 0

    def _next(self) -> _SamplePiece | None:
        per_sample = self.per_sample
        while True:
            batch = next(self._batches, None)
            if batch is None:
                if self._carry is not None:
                    raise RunError(f"{self.path} ends inside a sample ({len(self._carry[0])} rows left); extract again")
                return None
            r = batch.column("r").to_numpy(zero_copy_only=False)
            pr = batch.column("pr").to_numpy(zero_copy_only=False)
            ids = batch.column("sample_id") if self.with_ids else None
            if self._carry is not None:
                carry_r, carry_pr, carry_ids = self._carry
                r, pr = np.concatenate([carry_r, r]), np.concatenate([carry_pr, pr])
                if ids is not None and carry_ids is not None:
                    ids = pa.concat_arrays([_as_strings(carry_ids), _as_strings(ids)])
                self._carry = None
            whole = len(r) - len(r) % per_sample
            if whole < len(r):
                self._carry = (r[whole:], pr[whole:], None if ids is None else ids.slice(whole))
            if whole:
                return _SamplePiece(
                    r[:whole].reshape(-1, per_sample), pr[:whole].reshape(-1, per_sample),
                    None if ids is None else ids.slice(0, whole),
                )

    def pieces(self) -> Iterator[_SamplePiece]:
        """The pieces in file order."""
        while (piece := self._next()) is not None:
            yield piece

    def take(self, samples: int) -> _SamplePiece:
        """The next ``samples`` samples (:class:`_Misaligned` if the file has fewer)."""
        while self._available < samples:
            piece = self._next()
            if piece is None:
                raise _Misaligned
            self._pending.append(piece)
            self._available += piece.size
        parts: list[_SamplePiece] = _take_front(self._pending, samples)
        self._available -= samples
        return _SamplePiece.concat(parts)

    def exhausted(self) -> bool:
        """True when every row has been taken."""
        if self._available:
            return False
        piece = self._next()
        if piece is None:
            return True
        self._pending.append(piece)
        self._available += piece.size
        return False


def _accumulate_joined(
    acc: _Accumulator, layout: _Layout, group: str, split: str | None,
    s_files: Sequence[Path], r_files: Sequence[Path], batch_samples: int,
) -> None:
    """Fallback when routing rows are not aligned with samples rows: join on sample_id (memory O(n))."""
    columns = _sample_columns(layout, group, split)
    parts: list[_SampleBatch] = []
    for path in s_files:
        _check_columns(path, columns)
        for batch in _iter_batches(path, columns, batch_samples):
            sample = _sample_batch(batch, layout, group, split)
            _add_samples(acc, sample, layout)
            parts.append(sample)
    ids = pa.concat_arrays([_as_strings(part.ids) for part in parts]) if parts else pa.array([], pa.string())
    if len(pc.unique(ids)) != len(ids):
        raise RunError("sample ids repeat in samples.parquet, so routing rows cannot be matched to samples; extract again")
    everyone = _SampleBatch(
        ids,
        np.concatenate([part.include for part in parts]) if parts else np.zeros(0, bool),
        np.concatenate([part.member for part in parts]) if parts and group != "all" else None,  # type: ignore[misc]
        np.zeros((0, len(layout.features))),
    )
    for path in r_files:
        for batch in _iter_batches(path, ["sample_id", "feature", "concept", "r", "pr"], batch_samples * layout.per_sample):
            if not batch.num_rows:
                continue
            index = pc.index_in(_as_strings(batch.column("sample_id")), value_set=ids)
            if index.null_count:
                missing = _as_strings(batch.column("sample_id")).filter(pc.is_null(index))[0].as_py()
                raise RunError(f"{path} has routing rows of sample {missing!r}, which is not in the samples table")
            cell, concept = _routing_codes(batch, layout, path)
            sample_of_row = index.to_numpy(zero_copy_only=False).astype(np.intp)
            _add_routing(acc, cell, concept, _floats(batch.column("r")), _floats(batch.column("pr")),
                         _row_filter(everyone, sample_of_row, concept))


# ------------------------------------------------------------------------------------------------- compute


def compute_global_stats(
    run: Path | str, options: StatsOptions | None = None, *, batch_samples: int = DEFAULT_BATCH_SAMPLES
) -> GlobalStats:
    """The global statistics of a run directory (see the module docstring for every choice).

    Raises :class:`InterpError` on bad options, an unknown or empty split, or a run with no samples; cells with
    fewer than 2 samples get no interval (NaN) and are listed in :attr:`GlobalStats.warnings`.
    """
    options = (options or StatsOptions()).validated()
    path = Path(run)
    meta = read_meta(path)
    layout = _layout(meta, path)
    s_files, r_files = samples_files(path), routing_files(path)
    splits = _split_counts(s_files)
    name = run_name(path)
    if sum(splits.values()) == 0:
        raise RunError(f"run {name} has no samples; extract it again from a non-empty split")
    if options.split is not None and splits.get(options.split, 0) == 0:
        present = ", ".join(f"{s} ({n})" for s, n in sorted(splits.items()))
        raise InterpError(f"run {name} has no samples of split {options.split!r}; splits present: {present}")
    n_concepts = len(layout.concepts)
    p_cells = len(layout.features) * (1 if options.group == "all" else n_concepts)
    keep_values = options.interval == "bootstrap"

    def fresh() -> _Accumulator:
        return _Accumulator(layout, p_cells, keep_values)

    acc = fresh()
    if options.group == "all" and options.split is None:
        _accumulate_all(acc, layout, s_files, r_files, batch_samples)
    else:
        try:
            _accumulate_aligned(acc, layout, options.group, options.split, s_files, r_files, batch_samples)
        except _Misaligned:
            acc = fresh()
            _accumulate_joined(acc, layout, options.group, options.split, s_files, r_files, batch_samples)

    baseline = options.baseline_value(n_concepts)
    frames = []
    rng = np.random.default_rng(options.seed)
    for quantity in QUANTITIES:
        values = acc.cell_values(quantity) if keep_values else None
        described = describe_cells(acc.moments[quantity], baseline, options, values, rng)
        if quantity == "p" and options.group == "all":
            features, concepts = list(layout.features), [ALL_COLUMN] * len(layout.features)
        else:
            features = [f for f in layout.features for _ in layout.concepts]
            concepts = list(layout.concepts) * len(layout.features)
        described.insert(0, "concept", concepts)
        described.insert(0, "feature", features)
        described.insert(0, "quantity", quantity)
        described.insert(0, "task", layout.task)
        described.insert(0, "run", name)
        described["bold"] = mark_bold(described)
        frames.append(described)
    cells = pd.concat(frames, ignore_index=True)[list(CELL_COLUMNS)]
    column_n = {c: int(k) for c, k in zip(layout.concepts, acc.column_n)}
    warnings = _warnings(cells, acc, options, name, column_n)
    return GlobalStats(
        run=path,
        name=name,
        task=layout.task,
        concepts=layout.concepts,
        features=layout.features,
        baseline=baseline,
        options=options,
        n_samples=acc.n_samples,
        column_n=column_n,
        splits=splits,
        cells=cells,
        warnings=tuple(warnings),
        nonfinite=acc.nonfinite,
        meta=meta,
    )


def _warnings(cells: pd.DataFrame, acc: _Accumulator, options: StatsOptions, name: str, column_n: dict[str, int]) -> list[str]:
    out: list[str] = []
    if acc.n_samples == 1:
        out.append(f"run {name}: only 1 sample selected, so no standard deviation or interval can be computed (n=1)")
    elif options.group != "all":
        empty = [c for c, k in column_n.items() if k == 0]
        single = [c for c, k in column_n.items() if k == 1]
        kind = "true" if options.group == "label" else "predicted"
        if empty:
            out.append(f"run {name}: no sample has the {kind} label {', '.join(empty)}: those columns are empty (n=0)")
        if single:
            out.append(f"run {name}: only 1 sample has the {kind} label {', '.join(single)}: no interval there (n=1)")
    if acc.n_samples > 1 and options.group == "all":
        thin = cells[cells["n"] < 2]
        if len(thin):
            out.append(f"run {name}: {len(thin)} cell(s) have fewer than 2 finite values: no interval there")
    if options.interval == "bootstrap":
        family = int(cells.groupby("quantity")["n"].apply(lambda n: int((n >= 2).sum())).max() or 1)
        tail_alpha = options.alpha / family if options.correction == "bonferroni" else options.alpha
        if options.bootstrap_samples * tail_alpha / 2 < 10:
            out.append(f"run {name}: {options.bootstrap_samples} bootstrap resamples leave fewer than 10 in each tail "
                       f"of the {1 - tail_alpha:.4g} interval; raise --bootstrap-samples for stable ends")
    if acc.nonfinite:
        out.append(f"run {name}: {acc.nonfinite} non-finite value(s) (NaN/inf) were left out")
    return out


def replace_options(options: StatsOptions, **changes: object) -> StatsOptions:
    """A copy of ``options`` with some fields changed, validated."""
    return replace(options, **changes).validated()  # type: ignore[arg-type]


__all__ = [
    "ALL_COLUMN",
    "CELL_COLUMNS",
    "CORRECTIONS",
    "GROUPS",
    "INTERVALS",
    "QUANTITIES",
    "GlobalStats",
    "Moments",
    "StatsOptions",
    "compute_global_stats",
    "describe_cells",
    "mark_bold",
    "replace_options",
    "significance",
]
