"""Global statistics of a run: the paper's confidence intervals of r, p·r and p (§3.2.2, eq. 4).

For every cell (feature i, concept j) and quantity q in {r, pr}, and for every feature and p, this module computes
the mean, the sample standard deviation (ddof = 1), n, and an interval of the mean, and compares r and p·r with the
uniform baseline 1/J (DESIGN.md, "Statistics"). p is a sigmoid activation, not a share, so its intervals carry no
1/J verdict (no p-value, never significant, never bold).

Streaming: :func:`interp.runreader.read_blocks` yields aligned, validated blocks (r, p·r (m, 7, J); p (m, 7)); each
block is reduced to :class:`Moments` (count, mean, M2 in float64, over any cell shape, with a mask for the group
and split) and merged by Chan et al.'s update, so the numbers are the same (to ~1e-15) for one file or many
shards, any row groups and any batch size. Only ``interval="bootstrap"`` keeps the values (it resamples them).

Which variance an interval covers (``kind`` column):
    samples (``cluster="none"``, the paper): clt ``mean ± z_{1-α/2}·s/√n`` (statsmodels' ``zconfint_mean``),
    t ``mean ± t_{1-α/2,n-1}·s/√n``, or the percentile bootstrap of the mean (each cell's values sorted first,
    ``numpy.random.default_rng(seed)``; a warning says when fewer than 10 resamples fall in a tail).
    videos (``cluster="video"``): the cluster-robust CLT interval of the mean over the samples' ``video`` column,
    as ``statsmodels OLS(y, ones).fit(cov_type="cluster", cov_kwds={"groups": video})`` computes it:
    se² = G/(G−1) · Σ_g (Σ_{i∈g} (y_i − ȳ))² / n² (G videos with a value in the cell), z quantile. With one video
    per sample it equals the plain CLT interval. Runs without a video column fall back to samples, with a warning.
    seeds: see :mod:`interp.ensemble`.

Tests against the baseline b = 1/J (r and p·r only): p-value of the two-sided z (clt, videos) or t test, or the
bootstrap's ``2·min(P*(mean* <= b), P*(mean* >= b))`` (+1 corrected). A cell is significant "above" ("below") if
its interval lies wholly above (below) b; the largest mean of a concept column is **bold** if significant above.
Multiple comparisons, one family per table (cells of r, or of p·r, with n >= 2), via statsmodels' multipletests:
none; bonferroni (intervals widened to level 1 − α/m, significance from them); holm (intervals unadjusted,
significance from the Holm-adjusted p-values in the direction of mean − b).

Groups: all (every sample in every column, the paper); label / pred (a sample enters concept j's column only if its
true / predicted label is j); p has one column "all" with group all, else one column per concept.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from interp.errors import InterpError, RunError
from interp.intervals import describe_cells, mark_bold, significance
from interp.runreader import DEFAULT_BATCH_SAMPLES, Block, RunLayout, has_column, read_blocks, run_layout
from interp.runs import open_run, run_name
from interp.schema import BASELINES, CLUSTERS, CORRECTIONS, GROUPS, INTERVALS, label_column, p_column

QUANTITIES: tuple[str, ...] = ("r", "pr", "p")
#: Quantities compared with the baseline 1/J (p is an activation: listed, never judged).
JUDGED: tuple[str, ...] = ("r", "pr")
ALL_COLUMN = "all"
#: What variance an interval covers, by option: samples of one model, videos (clustered), retrained models.
KINDS: tuple[str, ...] = ("samples", "videos", "seeds")

CELL_COLUMNS: tuple[str, ...] = (
    "run", "task", "quantity", "feature", "concept", "mean", "std", "n", "se", "low", "high", "baseline", "statistic",
    "p_value", "p_adjusted", "significant", "bold", "kind", "units",
)


@dataclass(frozen=True)
class StatsOptions:
    """How the statistics are computed; the defaults reproduce the paper (95% CLT over samples, all samples, no
    correction). ``baseline``: "uniform" (1/J) or a number in (0, 1); ``split``: only that split's samples;
    ``cluster``: "video" for video-clustered intervals (clt only)."""

    level: float = 0.95
    group: str = GROUPS[0]
    interval: str = INTERVALS[0]
    correction: str = CORRECTIONS[0]
    split: str | None = None
    baseline: str | float = BASELINES[0]
    bootstrap_samples: int = 2000
    seed: int = 0
    cluster: str = CLUSTERS[0]

    @property
    def alpha(self) -> float:
        return 1.0 - self.level

    def validated(self) -> "StatsOptions":
        """The options themselves, or an :class:`InterpError` naming the bad one."""
        if not 0.0 < float(self.level) < 1.0:
            raise InterpError(f"level must lie strictly between 0 and 1, got {self.level}")
        for name, value, choices in (("group", self.group, GROUPS), ("interval", self.interval, INTERVALS),
                                     ("correction", self.correction, CORRECTIONS), ("cluster", self.cluster, CLUSTERS)):
            if value not in choices:
                raise InterpError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        if isinstance(self.baseline, str):
            if self.baseline not in BASELINES:
                raise InterpError(f"unknown baseline {self.baseline!r}; choose one of {', '.join(BASELINES)}")
        elif not 0.0 < float(self.baseline) < 1.0:
            raise InterpError(f"a numeric baseline must lie strictly between 0 and 1, got {self.baseline}")
        if int(self.bootstrap_samples) < 1:
            raise InterpError(f"bootstrap samples must be at least 1, got {self.bootstrap_samples}")
        if self.cluster == "video" and self.interval != "clt":
            raise InterpError(f"--cluster video gives the cluster-robust CLT interval; it cannot be combined with "
                              f"--interval {self.interval}")
        return self

    def baseline_value(self, n_concepts: int) -> float:
        return 1.0 / n_concepts if isinstance(self.baseline, str) else float(self.baseline)


# ------------------------------------------------------------------------------------------------- moments


@dataclass
class Moments:
    """Sufficient statistics of each cell of any shape: count (int64), mean and M2 (sum of squared deviations
    from the mean), float64. :meth:`merge` is Chan, Golub and LeVeque's pairwise update (stable; the same result to
    rounding however the values were split)."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def zeros(cls, shape: int | tuple[int, ...]) -> "Moments":
        return cls(np.zeros(shape, dtype=np.int64), np.zeros(shape), np.zeros(shape))

    @classmethod
    def of(cls, values: np.ndarray, mask: np.ndarray | None = None, groups: np.ndarray | None = None,
           n_groups: int = 0) -> "Moments":
        """Moments over axis 0 of ``values`` (m, *shape); ``mask`` (broadcastable to it): which entries count;
        non-finite entries never count. With ``groups`` (m,) codes < ``n_groups``: shape (n_groups, *shape)."""
        return cls.counted(values, mask, groups, n_groups)[0]

    @classmethod
    def counted(cls, values: np.ndarray, mask: np.ndarray | None = None, groups: np.ndarray | None = None,
                n_groups: int = 0) -> tuple["Moments", int]:
        """:meth:`of` and the number of non-finite entries left out (among those the mask keeps)."""
        x = np.array(values, dtype=np.float64)
        m, shape = x.shape[0], x.shape[1:]
        x = x.reshape(m, -1)
        keep = None if mask is None else np.broadcast_to(mask, (m, *shape)).reshape(m, -1)
        total = x.sum(axis=0)
        nonfinite = 0
        if not np.isfinite(total).all():  # NaN or inf somewhere (float32 values cannot overflow a float64 sum)
            finite = np.isfinite(x)
            nonfinite = int(np.count_nonzero(~finite if keep is None else keep & ~finite))
            np.copyto(x, 0.0, where=~finite)
            keep = finite if keep is None else keep & finite
        if keep is not None:
            x *= keep
        if groups is None:
            count = np.full(x.shape[1], m, np.int64) if keep is None else np.count_nonzero(keep, axis=0).astype(np.int64)
            total = x.sum(axis=0) if keep is not None else total
            mean = np.divide(total, count, out=np.zeros(x.shape[1]), where=count > 0)
            x -= mean
            if keep is not None:
                x *= keep
            result = cls(count, mean, np.einsum("ij,ij->j", x, x))
            return cls(*(a.reshape(shape) for a in (result.count, result.mean, result.m2))), nonfinite
        onehot = np.zeros((n_groups, m))
        onehot[np.asarray(groups, np.intp), np.arange(m)] = 1.0
        count = onehot @ (np.ones_like(x) if keep is None else keep.astype(np.float64))
        mean = np.divide(onehot @ x, count, out=np.zeros_like(count), where=count > 0)
        x -= mean[groups]
        if keep is not None:
            x *= keep
        m2 = onehot @ (x * x)
        return cls(np.rint(count).astype(np.int64).reshape(n_groups, *shape), mean.reshape(n_groups, *shape),
                   m2.reshape(n_groups, *shape)), nonfinite

    def merge(self, other: "Moments") -> "Moments":
        """The moments of both sets of values together (Chan et al.)."""
        count = self.count + other.count
        delta = other.mean - self.mean
        weight = other.count / np.maximum(count, 1).astype(np.float64)
        mean = np.where(count > 0, self.mean + delta * weight, 0.0)
        m2 = np.where(count > 0, self.m2 + other.m2 + delta * delta * (self.count * weight), 0.0)
        return Moments(count, mean, m2)

    def padded(self, groups: int) -> "Moments":
        """Grouped moments (axis 0 = groups) with empty groups appended up to ``groups``."""
        extra = groups - self.count.shape[0]
        if extra <= 0:
            return self
        pad = [(0, extra)] + [(0, 0)] * (self.count.ndim - 1)
        return Moments(*(np.pad(a, pad) for a in (self.count, self.mean, self.m2)))

    def pooled(self) -> "Moments":
        """Grouped moments merged over their groups (axis 0)."""
        count = self.count.sum(axis=0)
        mean = np.divide((self.count * self.mean).sum(axis=0), count, out=np.zeros(count.shape), where=count > 0)
        m2 = self.m2.sum(axis=0) + (self.count * (self.mean - mean) ** 2).sum(axis=0)
        return Moments(count, mean, m2)

    @property
    def std(self) -> np.ndarray:
        """Sample standard deviation (ddof = 1); NaN where n < 2."""
        variance = np.divide(self.m2, self.count - 1.0, out=np.full(self.count.shape, np.nan), where=self.count > 1)
        return np.sqrt(np.maximum(variance, 0.0, where=np.isfinite(variance), out=variance))

    def cluster_se(self) -> tuple[np.ndarray, np.ndarray]:
        """For grouped moments (axis 0 = clusters): the cluster-robust standard error of each cell's mean with
        statsmodels' small-sample factor G/(G−1), and G (clusters with a value); NaN where G < 2."""
        total = self.pooled()
        sums = self.count * (self.mean - total.mean)  # Σ_{i∈g} (y_i − ȳ)
        clusters = np.count_nonzero(self.count, axis=0)
        n = total.count.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            variance = clusters / (clusters - 1.0) * (sums * sums).sum(axis=0) / (n * n)
        return np.where(clusters > 1, np.sqrt(np.maximum(variance, 0.0)), np.nan), clusters


# --------------------------------------------------------------------------------------------------- result


@dataclass
class GlobalStats:
    """The global statistics of one run, or of a seed ensemble (:mod:`interp.ensemble`), one row of :attr:`cells`
    per quantity × feature × column, with the columns of :data:`CELL_COLUMNS` (plus, for an ensemble, the
    prediction interval and the seed counts). ``kind`` is what variance the intervals cover (samples / videos /
    seeds) and ``units`` how many independent units they rest on (n, videos G, or seeds K)."""

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
    kind: str = "samples"
    units: int = 0
    members: tuple["GlobalStats", ...] = field(default=(), repr=False)

    @property
    def n_concepts(self) -> int:
        return len(self.concepts)

    def columns(self, quantity: str) -> tuple[str, ...]:
        """The concepts, or ("all",) for p with group "all"."""
        _check_quantity(quantity)
        return (ALL_COLUMN,) if quantity == "p" and self.options.group == "all" else self.concepts

    def quantity_cells(self, quantity: str) -> pd.DataFrame:
        _check_quantity(quantity)
        return self.cells[self.cells["quantity"] == quantity].reset_index(drop=True)

    def values(self, quantity: str, field: str = "mean") -> pd.DataFrame:
        """One field of a quantity as a (features × columns) frame, rows t, a, v, ta, av, vt, tav."""
        frame = self.quantity_cells(quantity).pivot(index="feature", columns="concept", values=field)
        return frame.reindex(index=list(self.features), columns=list(self.columns(quantity)))

    def to_frame(self) -> pd.DataFrame:
        return self.cells.copy()


def _check_quantity(quantity: str) -> None:
    if quantity not in QUANTITIES:
        raise InterpError(f"unknown quantity {quantity!r}; choose one of {', '.join(QUANTITIES)}")


# ------------------------------------------------------------------------------------------------- compute


class _Accumulator:
    """Moments of r, p·r (cells (7, J)) and p (cells (7,) or (7, J)), plain or per video, merged block by block."""

    def __init__(self, layout: RunLayout, options: StatsOptions, clustered: bool) -> None:
        self.layout, self.options, self.clustered = layout, options, clustered
        self.moments: dict[str, Moments] = {}
        self.kept: dict[str, list[tuple[np.ndarray, np.ndarray]]] | None = {q: [] for q in QUANTITIES} if options.interval == "bootstrap" else None
        self.videos: dict[str, int] = {}
        self.splits: Counter[str] = Counter()
        self.nonfinite = 0
        self.n_samples = 0
        self.column_n = np.zeros(len(layout.concepts), dtype=np.int64)

    def add(self, block: Block) -> None:
        options, layout = self.options, self.layout
        split = block.samples.column("split") if "split" in block.samples.schema.names else None
        if split is not None:
            self.splits.update({str(e["values"]): int(e["counts"]) for e in pc.value_counts(split).to_pylist()})
        else:
            self.splits["?"] += block.size
        include = None
        if options.split is not None:
            include = np.asarray(pc.fill_null(pc.equal(split, options.split), False).to_numpy(zero_copy_only=False), bool) \
                if split is not None else np.zeros(block.size, bool)
        member = None if options.group == "all" else block.flags([_member_column(options.group, c) for c in layout.concepts])
        if member is not None and include is not None:
            member &= include[:, None]
        self.n_samples += block.size if include is None else int(include.sum())
        self.column_n += (member.sum(axis=0) if member is not None
                          else (block.size if include is None else int(include.sum())))
        p = block.floats([p_column(f) for f in layout.features])
        if member is not None:
            routing_mask, p, p_mask = member[:, None, :], p[:, :, None], member[:, None, :]
            p = np.broadcast_to(p, (block.size, *layout.shape))
        else:
            routing_mask = p_mask = None if include is None else include[:, None, None]
            if p_mask is not None:
                p_mask = include[:, None]
        groups = self._video_codes(block) if self.clustered else None
        for quantity, values, mask in (("r", block.r, routing_mask), ("pr", block.pr, routing_mask), ("p", p, p_mask)):
            moments, nonfinite = Moments.counted(values, mask, groups, len(self.videos))
            self.nonfinite += nonfinite
            if quantity in self.moments:
                previous = self.moments[quantity].padded(len(self.videos)) if groups is not None else self.moments[quantity]
                moments = previous.merge(moments)
            self.moments[quantity] = moments
            if self.kept is not None:
                x = np.broadcast_to(values, values.shape).reshape(block.size, -1).astype(np.float64)
                keep = np.isfinite(x) & (True if mask is None else np.broadcast_to(mask, values.shape).reshape(block.size, -1))
                self.kept[quantity].append((x, keep))

    def _video_codes(self, block: Block) -> np.ndarray:
        names = block.samples.column("video").to_pylist()
        return np.array([self.videos.setdefault(str(v), len(self.videos)) for v in names], dtype=np.intp)

    def cell_values(self, quantity: str) -> list[np.ndarray]:
        """Each cell's values (bootstrap only), in cell order."""
        assert self.kept is not None
        parts = self.kept[quantity]
        cells = parts[0][0].shape[1] if parts else 0
        return [np.concatenate([x[keep[:, k], k] for x, keep in parts]) for k in range(cells)]


def compute_global_stats(
    run: Path | str, options: StatsOptions | None = None, *, batch_samples: int = DEFAULT_BATCH_SAMPLES
) -> GlobalStats:
    """The global statistics of a run directory (see the module docstring for every choice).

    Raises :class:`InterpError` on bad options, an unknown or empty split, or a run with no samples, and
    :class:`RunError` on a run that fails validation (:mod:`interp.runreader`); cells with fewer than 2 values get
    no interval (NaN) and are listed in :attr:`GlobalStats.warnings`.
    """
    options = (options or StatsOptions()).validated()
    path = Path(run)
    meta = dict(open_run(path).meta)
    layout = run_layout(path, meta)
    name = run_name(path)
    warnings: list[str] = []
    columns = ["split", *[p_column(f) for f in layout.features]]
    if options.group != "all":
        columns += [_member_column(options.group, c) for c in layout.concepts]
    clustered = options.cluster == "video" and has_column(path, "video")
    if clustered:
        columns.append("video")
    elif options.cluster == "video":
        warnings.append(f"run {name}: no video column: clustering not possible, extract again; the intervals cover samples")
    columns = [c for c in columns if c != "split" or has_column(path, "split")]
    acc = _Accumulator(layout, options, clustered)
    for block in read_blocks(path, layout, columns, batch_samples):
        acc.add(block)
    splits = dict(acc.splits)
    if sum(splits.values()) == 0:
        raise RunError(f"run {name} has no samples; extract it again from a non-empty split")
    if options.split is not None and splits.get(options.split, 0) == 0:
        present = ", ".join(f"{s} ({k})" for s, k in sorted(splits.items()))
        raise InterpError(f"run {name} has no samples of split {options.split!r}; splits present: {present}")
    baseline = options.baseline_value(len(layout.concepts))
    rng = np.random.default_rng(options.seed)
    kind = "videos" if clustered else "samples"
    frames = []
    for quantity in QUANTITIES:
        moments = acc.moments[quantity]
        se = clusters = None
        if clustered:
            se, clusters = moments.cluster_se()
            moments = moments.pooled()
        values = acc.cell_values(quantity) if acc.kept is not None else None
        frame = describe_cells(moments, baseline, options, values, rng, se=se, units=clusters, judged=quantity in JUDGED)
        if quantity == "p" and options.group == "all":
            features, concepts = list(layout.features), [ALL_COLUMN] * len(layout.features)
        else:
            features = [f for f in layout.features for _ in layout.concepts]
            concepts = list(layout.concepts) * len(layout.features)
        frame = pd.concat([pd.DataFrame({"run": name, "task": layout.task, "quantity": quantity, "feature": features,
                                         "concept": concepts}), frame], axis=1)
        frame["bold"] = mark_bold(frame) if quantity in JUDGED else False
        frame["kind"] = kind
        frame["units"] = (frame["n"] if clusters is None else clusters.ravel()).astype(np.int64)
        frames.append(frame)
    cells = pd.concat(frames, ignore_index=True)[list(CELL_COLUMNS)]
    column_n = {c: int(k) for c, k in zip(layout.concepts, acc.column_n)}
    warnings += _warnings(cells, acc, options, name, column_n)
    return GlobalStats(run=path, name=name, task=layout.task, concepts=layout.concepts, features=layout.features,
                       baseline=baseline, options=options, n_samples=acc.n_samples, column_n=column_n, splits=splits,
                       cells=cells, warnings=tuple(warnings), nonfinite=acc.nonfinite, meta=meta, kind=kind,
                       units=len(acc.videos) if clustered else acc.n_samples)


def _member_column(group: str, concept: str) -> str:
    return label_column(concept) if group == "label" else f"pred_{concept}"


def _warnings(cells: pd.DataFrame, acc: _Accumulator, options: StatsOptions, name: str, column_n: dict[str, int]) -> list[str]:
    out: list[str] = []
    if acc.n_samples == 1:
        out.append(f"run {name}: only 1 sample selected, so no standard deviation or interval can be computed (n=1)")
    elif options.group != "all":
        kind = "true" if options.group == "label" else "predicted"
        for count, what in ((0, "those columns are empty (n=0)"), (1, "no interval there (n=1)")):
            concepts = [c for c, k in column_n.items() if k == count]
            if concepts:
                who = "no sample has" if count == 0 else "only 1 sample has"
                out.append(f"run {name}: {who} the {kind} label {', '.join(concepts)}: {what}")
    if acc.n_samples > 1 and options.group == "all" and (cells["units"] < 2).any():
        out.append(f"run {name}: {int((cells['units'] < 2).sum())} cell(s) have fewer than 2 finite values "
                   f"{'or videos ' if acc.clustered else ''}: no interval there")
    if options.interval == "bootstrap":
        family = int(cells[cells["quantity"].isin(JUDGED)].groupby("quantity")["n"].apply(lambda n: int((n >= 2).sum())).max() or 1)
        tail_alpha = options.alpha / family if options.correction == "bonferroni" else options.alpha
        if options.bootstrap_samples * tail_alpha / 2 < 10:
            out.append(f"run {name}: {options.bootstrap_samples} bootstrap resamples leave fewer than 10 in each tail "
                       f"of the {1 - tail_alpha:.4g} interval; raise --bootstrap-samples for stable ends")
    if acc.nonfinite:
        out.append(f"run {name}: {acc.nonfinite} non-finite value(s) (NaN/inf) were left out")
    return out


def replace_options(options: StatsOptions, **changes: Any) -> StatsOptions:
    """A copy of ``options`` with some fields changed, validated."""
    return replace(options, **changes).validated()


__all__ = ["ALL_COLUMN", "CELL_COLUMNS", "CLUSTERS", "CORRECTIONS", "GROUPS", "INTERVALS", "JUDGED", "KINDS",
           "QUANTITIES", "GlobalStats", "Moments", "StatsOptions", "compute_global_stats", "describe_cells",
           "mark_bold", "replace_options", "significance"]
