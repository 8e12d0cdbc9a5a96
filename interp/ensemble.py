"""Seed ensembles: do the verdicts survive retraining? (DESIGN.md, "Statistics": intervals over seeds)

Runs of the same task, data (meta.json ``data_sha256``) and split whose models were trained with different seeds
(``train.seed``) are pooled into an **ensemble** (:func:`pool_seeds`). Per cell, with m_k the mean of seed k's run
and K seeds: the ensemble mean m̄ = mean of the m_k; s = their standard deviation (ddof 1); the between-seed
Student t interval m̄ ± t_{1−α/2, K−1}·s/√K (p-value of the t test of m̄ = 1/J; Holm / Bonferroni over the table as
for samples); and the prediction interval for the mean of a new seed, m̄ ± t_{1−α/2, K−1}·s·√(1 + 1/K)
(``pi_low`` / ``pi_high``). Verdicts (above / below 1/J) only where the between-seed interval excludes 1/J; bold by
the paper's rule on the ensemble means; ``bold_seeds`` counts the seeds in which the cell was bold and
``agree_seeds`` those whose single-seed verdict equals the ensemble's. p carries no verdict (it is an activation).

The moments over seeds are :class:`interp.stats.Moments` of the stacked seed means; the result is a
:class:`interp.stats.GlobalStats` with ``kind = "seeds"`` and ``units = K``, so every table format takes it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from interp.errors import InterpError
from interp.stats import JUDGED, QUANTITIES, GlobalStats, Moments, describe_cells, mark_bold

#: Columns an ensemble adds to :data:`interp.stats.CELL_COLUMNS`.
ENSEMBLE_COLUMNS: tuple[str, ...] = ("pi_low", "pi_high", "bold_seeds", "agree_seeds")


def pool_key(stats: GlobalStats) -> tuple[str, str, str]:
    """What runs must share to be pooled: (task, data SHA-256, split analysed)."""
    meta = stats.meta or {}
    split = stats.options.split or str(meta.get("split", "?"))
    return stats.task, str(meta.get("data_sha256", "?")), split


def seed_of(stats: GlobalStats) -> int | None:
    """The training seed recorded in the run's meta.json (``train.seed``), or None."""
    seed = ((stats.meta or {}).get("train") or {}).get("seed")
    return None if seed is None else int(seed)


@dataclass(frozen=True)
class Pooling:
    """How a list of runs is pooled: ``groups`` (indices of runs pooled together, K >= 2 each, in input order)
    and ``alone`` (index, reason it was not pooled), for runs shown side by side as single runs."""

    groups: tuple[tuple[int, ...], ...]
    alone: tuple[tuple[int, str], ...]


def plan_pooling(results: Sequence[GlobalStats]) -> Pooling:
    """Group runs by :func:`pool_key`; a group of runs with K >= 2 distinct seeds is an ensemble."""
    by_key: dict[tuple[str, str, str], list[int]] = {}
    for index, stats in enumerate(results):
        by_key.setdefault(pool_key(stats), []).append(index)
    groups: list[tuple[int, ...]] = []
    alone: list[tuple[int, str]] = []
    for key, indices in by_key.items():
        pooled, seen = [], {}
        for index in indices:
            seed = seed_of(results[index])
            if seed is None:
                alone.append((index, f"run {results[index].name}: no training seed in meta.json, so it is not pooled"))
            elif seed in seen:
                alone.append((index, f"run {results[index].name}: seed {seed} is also run {results[seen[seed]].name}'s; "
                                     f"a seed is pooled once"))
            else:
                seen[seed] = index
                pooled.append(index)
        if len(pooled) >= 2:
            groups.append(tuple(pooled))
        else:
            alone += [(index, _alone_reason(results, index)) for index in pooled]
    return Pooling(tuple(groups), tuple(sorted(alone)))


def _alone_reason(results: Sequence[GlobalStats], index: int) -> str:
    stats = results[index]
    task, data, split = pool_key(stats)
    for other in results:
        if other is stats:
            continue
        other_task, other_data, other_split = pool_key(other)
        if other_task == task and other_data != data:
            return f"run {stats.name} is not pooled with {other.name}: different data (SHA-256 {data[:12]} vs {other_data[:12]})"
        if other_task == task and other_split != split:
            return f"run {stats.name} is not pooled with {other.name}: different split ({split} vs {other_split})"
    return f"run {stats.name} is not pooled: no other seed of task {task} on the same data and split"


def require_ensembles(results: Sequence[GlobalStats]) -> Pooling:
    """:func:`plan_pooling`, or an :class:`InterpError` when the runs do not all pool into ensembles of K >= 2."""
    if len(results) < 2:
        raise InterpError(f"--ensemble needs runs of at least 2 seeds; got {len(results)} run")
    plan = plan_pooling(results)
    if plan.alone:
        if not plan.groups and all("no other seed" in reason for _, reason in plan.alone):
            raise InterpError("--ensemble needs runs of at least 2 seeds of the same task, data and split; "
                              + "; ".join(reason for _, reason in plan.alone))
        raise InterpError("--ensemble cannot pool these runs: " + "; ".join(reason for _, reason in plan.alone))
    return plan


def pool_seeds(members: Sequence[GlobalStats]) -> GlobalStats:
    """The ensemble of runs of K >= 2 seeds (same task, data, split and options); see the module docstring."""
    members = list(members)
    if len(members) < 2:
        raise InterpError(f"an ensemble needs runs of at least 2 seeds; got {len(members)}")
    first = members[0]
    if len({pool_key(m) for m in members}) > 1 or len({(m.concepts, m.features) for m in members}) > 1:
        raise InterpError("an ensemble needs runs of one task, data and split: " + ", ".join(m.name for m in members))
    seeds = [seed_of(m) for m in members]
    if None in seeds or len(set(seeds)) != len(seeds):
        raise InterpError(f"an ensemble needs runs of different, recorded seeds; got {seeds}")
    options = replace(first.options, interval="t", cluster="none")
    level, k = first.options.level, len(members)
    frames = []
    for quantity in QUANTITIES:
        parts = [m.quantity_cells(quantity) for m in members]
        means = np.stack([p["mean"].to_numpy(dtype=np.float64) for p in parts])  # (K, cells)
        frame = describe_cells(Moments.of(means), first.baseline, options, judged=quantity in JUDGED)
        half = sps.t.ppf(1 - (1 - level) / 2, np.maximum(frame["n"] - 1, 1)) * frame["std"] * np.sqrt(1 + 1 / frame["n"])
        frame = pd.concat([parts[0][["run", "task", "quantity", "feature", "concept"]], frame], axis=1)
        frame["run"] = ensemble_name(members)
        frame["bold"] = mark_bold(frame) if quantity in JUDGED else False
        frame["kind"], frame["units"] = "seeds", frame["n"]
        frame["pi_low"], frame["pi_high"] = frame["mean"] - half, frame["mean"] + half
        frame["bold_seeds"] = np.sum([p["bold"].to_numpy(dtype=bool) for p in parts], axis=0)
        frame["agree_seeds"] = np.sum([p["significant"].to_numpy() == frame["significant"].to_numpy() for p in parts], axis=0)
        frames.append(frame)
    cells = pd.concat(frames, ignore_index=True)
    warnings = tuple(w for m in members for w in m.warnings)
    return GlobalStats(run=first.run, name=ensemble_name(members), task=first.task, concepts=first.concepts,
                       features=first.features, baseline=first.baseline, options=first.options,
                       n_samples=first.n_samples, column_n=dict(first.column_n), splits=dict(first.splits), cells=cells,
                       warnings=warnings, nonfinite=sum(m.nonfinite for m in members),
                       meta={**first.meta, "seeds": seeds, "members": [m.name for m in members]},
                       kind="seeds", units=k, members=tuple(members))


def ensemble_name(members: Sequence[GlobalStats]) -> str:
    """e.g. ``sentiment-seeds-0-1-2`` (the task and the seeds, in input order)."""
    return f"{members[0].task}-seeds-" + "-".join(str(seed_of(m)) for m in members)


# ----------------------------------------------------------------------------------------- survival summaries


def verdict_survival(ensemble: GlobalStats) -> pd.DataFrame:
    """One row per (seed, judged cell) with a single-seed verdict: quantity, feature, concept, seed, run, verdict,
    ensemble (the ensemble's verdict there) and kept (the ensemble has the same verdict)."""
    rows: list[dict[str, Any]] = []
    for quantity in JUDGED:
        pooled = ensemble.quantity_cells(quantity)
        for member in ensemble.members:
            single = member.quantity_cells(quantity)
            for a, b in zip(single.itertuples(index=False), pooled.itertuples(index=False)):
                if a.significant:
                    rows.append({"quantity": quantity, "feature": a.feature, "concept": a.concept, "seed": seed_of(member),
                                 "run": member.name, "verdict": a.significant, "ensemble": b.significant,
                                 "kept": a.significant == b.significant})
    return pd.DataFrame(rows, columns=["quantity", "feature", "concept", "seed", "run", "verdict", "ensemble", "kept"])


def seed_spearman(ensemble: GlobalStats, quantity: str = "r") -> pd.DataFrame:
    """The (K × K) Spearman correlation between the seeds' tables of cell means of ``quantity``."""
    means = np.stack([m.quantity_cells(quantity)["mean"].to_numpy(dtype=np.float64) for m in ensemble.members])
    labels = [f"seed {seed_of(m)}" for m in ensemble.members]
    k = len(labels)
    matrix = np.ones((k, k))
    for a in range(k):
        for b in range(a + 1, k):
            matrix[a, b] = matrix[b, a] = sps.spearmanr(means[a], means[b], nan_policy="omit").statistic
    return pd.DataFrame(matrix, index=labels, columns=labels)


def bold_agreement(ensemble: GlobalStats, quantity: str = "r") -> pd.DataFrame:
    """Per concept column: each seed's bold feature ("" when none), the ensemble's, and in how many seeds the
    bold feature is the ensemble's (``agree``, of K)."""
    rows = []
    for concept in ensemble.concepts:
        def bold(stats: GlobalStats) -> str:
            column = stats.quantity_cells(quantity)
            chosen = column[(column["concept"] == concept) & column["bold"].astype(bool)]["feature"].tolist()
            return ",".join(chosen)
        seeds = {f"seed {seed_of(m)}": bold(m) for m in ensemble.members}
        pooled = bold(ensemble)
        rows.append({"concept": concept, **seeds, "ensemble": pooled, "agree": sum(v == pooled for v in seeds.values())})
    return pd.DataFrame(rows)


__all__ = ["ENSEMBLE_COLUMNS", "Pooling", "bold_agreement", "ensemble_name", "plan_pooling", "pool_key", "pool_seeds",
           "require_ensembles", "seed_of", "seed_spearman", "verdict_survival"]
