"""Local (per-sample) interpretation, the computing half: one sample's matrices read from a run, and the choice
of samples (top of a cell, random draw). Drawing is :mod:`interp.local_plot`, pages :mod:`interp.local`.

Display pattern (scikit-learn's ``inspection/_plot``): :meth:`SampleExplanation.from_run` computes,
:meth:`SampleExplanation.plot` draws (``compact=True``: the report's thumbnail), :func:`interp.local.write_local_page`
only renders::

    from interp.local_compute import SampleExplanation
    explanation = SampleExplanation.from_run("runs/model-test", "video_12[3]")
    fig = explanation.plot()            # or explanation.plot(ax=(heat_ax, bar_ax)) into a notebook's figure

Reading one sample never loads the whole routing table: rows are read with a ``sample_id`` filter through
``pyarrow.dataset`` (row-group statistics prune what they can), and ``top_samples`` streams the routing table batch by
batch with a filter on the (feature, concept) cell while keeping a running top-K.

How ``concept="true"`` chooses a column: for single-label tasks (sentiment) it is the true class. For multi-label
tasks the true label may name several concepts or none: with several, the one the model gives the highest
probability is chosen; with none, the concept with the highest probability overall (the model's strongest
prediction). ``concept="pred"`` is always the concept with the highest probability (for sentiment this is the
predicted class; for multi-label tasks it is the strongest of the predicted concepts, or the strongest concept
when none is predicted). Any other value must be a concept name of the run's task.
"""

from __future__ import annotations

import difflib
import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from interp.errors import InterpError, RunError
from interp.guard import printable
from interp.local_plot import plot_explanation
from interp.runs import RunInfo, open_run, resolve_run, run_name
from interp.schema import RANK_BY, logit_column, p_column, prob_column


# ------------------------------------------------------------------------------------------------ data classes


@dataclass(frozen=True)
class SampleExplanation:
    """Everything the local figure and page show about one sample of a run.

    Matrices have one row per feature (``features`` order: t, a, v, ta, av, vt, tav) and one column per concept
    (``concepts`` order): ``pr`` and ``r`` (7, J), ``p`` (7,), ``contributions`` (7, J) with
    ``contributions[:, j].sum() == logits[concepts[j]]`` up to float error.
    """

    sample_id: str
    run: str
    task: str
    split: str
    row: int
    label: str
    pred: str
    correct: bool
    concepts: tuple[str, ...]
    features: tuple[str, ...]
    true_concepts: tuple[str, ...]
    pred_concepts: tuple[str, ...]
    probabilities: dict[str, float]
    logits: dict[str, float]
    p: np.ndarray
    r: np.ndarray
    pr: np.ndarray
    contributions: np.ndarray
    concept: str
    concept_reason: str
    score: float | None = None
    transcript: str | None = None

    @property
    def concept_index(self) -> int:
        """Column of the chosen concept."""
        return self.concepts.index(self.concept)

    @property
    def concept_contributions(self) -> np.ndarray:
        """(7,) contributions of the features to the chosen concept's logit."""
        return self.contributions[:, self.concept_index]

    @property
    def concept_logit(self) -> float:
        """The stored logit of the chosen concept (samples.parquet)."""
        return self.logits[self.concept]

    @property
    def uniform(self) -> float:
        """1/J: p·r of a fully active feature routed uniformly (the colour map's white)."""
        return 1.0 / len(self.concepts)


    @classmethod
    def from_run(cls, run: Path | str | None, sample_id: str, concept: str = "true") -> "SampleExplanation":
        """The explanation of one sample of a run (``run=None``: the most recent run under runs/); see
        :func:`explain_samples`."""
        return explain_samples(run, [sample_id], concept)[0]

    def plot(self, ax: Any = None, *, compact: bool = False, dpi: int | None = None) -> Any:
        """Draw this explanation (:func:`interp.local_plot.plot_explanation`); returns the matplotlib Figure.

        ``ax``: None (a new figure) or a pair of Axes (heatmap, contributions) of an existing figure.
        ``compact``: the report's thumbnail (small fonts, no title and no colour bar).
        """
        return plot_explanation(self, ax=ax, compact=compact, dpi=dpi)



@dataclass
class _TopCandidates:
    """Running top-K of (value, order, sample id); ``order`` breaks ties by position in the run (earlier first)."""

    k: int
    heap: list[tuple[float, int, str]] = field(default_factory=list)

    def push_many(self, values: np.ndarray, ids: Sequence[str], start: int) -> None:
        if len(values) == 0:
            return
        # Only the K largest of a batch can enter the running top-K.
        if len(values) > self.k:
            keep = np.argpartition(-values, self.k - 1)[: self.k]
        else:
            keep = np.arange(len(values))
        for index in keep:
            item = (float(values[index]), -(start + int(index)), ids[int(index)])
            if len(self.heap) < self.k:
                heapq.heappush(self.heap, item)
            elif item > self.heap[0]:
                heapq.heapreplace(self.heap, item)

    def ranked(self) -> list[tuple[str, float]]:
        return [(sid, value) for value, _, sid in sorted(self.heap, reverse=True)]


# ------------------------------------------------------------------------------------------------ reading a run


def all_sample_ids(run: Path | str) -> list[str]:
    """Every sample id of a run, in run order (reads only the ``sample_id`` column of samples.parquet)."""
    ids: list[str] = []
    for path in open_run(run).samples_files:
        ids.extend(str(s) for s in pq.read_table(path, columns=["sample_id"]).column("sample_id").to_pylist())
    return ids


def check_sample_ids(run: Path | str, sample_ids: Sequence[str], known: Sequence[str] | None = None) -> None:
    """Raise :class:`InterpError` naming the closest existing ids if any of ``sample_ids`` is not in the run."""
    known = list(known) if known is not None else all_sample_ids(run)
    present = set(known)
    for sample_id in sample_ids:
        if sample_id in present:
            continue
        close = difflib.get_close_matches(sample_id, known, n=3, cutoff=0.5)
        if close:
            hint = f"closest ids: {', '.join(map(printable, close))}"
        elif known:
            hint = f"ids look like: {', '.join(map(printable, known[:3]))}"
        else:
            hint = "the run has no samples"
        raise InterpError(f"no sample {printable(repr(sample_id))} in run {printable(run_name(run))}; {hint}")


def _choose_concept(
    concept: str,
    concepts: tuple[str, ...],
    true_concepts: tuple[str, ...],
    probabilities: dict[str, float],
) -> tuple[str, str]:
    """The concept whose column is outlined, and why (see the module docstring)."""
    strongest = max(concepts, key=lambda c: probabilities[c])
    if concept == "true":
        if len(true_concepts) == 1:
            return true_concepts[0], "true label"
        if true_concepts:
            return max(true_concepts, key=lambda c: probabilities[c]), "true label with the highest probability"
        return strongest, "no true label: highest probability"
    if concept == "pred":
        return strongest, "prediction (highest probability)"
    if concept in concepts:
        return concept, "chosen"
    raise InterpError(
        f"unknown concept {concept!r}; use true, pred, or one of the run's concepts: {', '.join(concepts)}"
    )


def validate_concept(concept: str, concepts: tuple[str, ...]) -> None:
    if concept not in ("true", "pred") and concept not in concepts:
        raise InterpError(
            f"unknown concept {concept!r}; use true, pred, or one of the run's concepts: {', '.join(concepts)}"
        )


def _read_sample_rows(run: RunInfo, sample_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """samples.parquet rows of the given ids (only those rows are materialised)."""
    dataset = ds.dataset([str(p) for p in run.samples_files], format="parquet")
    table = dataset.to_table(filter=ds.field("sample_id").isin(list(sample_ids)))
    rows: dict[str, dict[str, Any]] = {}
    for record in table.to_pylist():
        sample_id = str(record["sample_id"])
        if sample_id in rows:
            raise RunError(
                f"sample id {sample_id!r} appears more than once in run {run.name}; local explanations need "
                "unique ids (extract one split at a time)"
            )
        rows[sample_id] = record
    return rows


def _read_routing_cells(run: RunInfo, sample_ids: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """For each id, its (7, J) matrices of r, pr and contribution read from the routing table (filtered scan)."""
    features, concepts = run.features, run.concepts
    dataset = ds.dataset([str(p) for p in run.routing_files], format="parquet")
    table = dataset.to_table(
        columns=["sample_id", "feature", "concept", "r", "pr", "contribution"],
        filter=ds.field("sample_id").isin(list(sample_ids)),
    )
    feature_index = {name: i for i, name in enumerate(features)}
    concept_index = {name: j for j, name in enumerate(concepts)}
    ids = np.asarray(table.column("sample_id").to_pylist(), dtype=object)
    feats = np.asarray(pc.cast(table.column("feature"), pa.string()).to_pylist(), dtype=object)
    conc = np.asarray(pc.cast(table.column("concept"), pa.string()).to_pylist(), dtype=object)
    unknown = (set(feats) - set(feature_index)) | (set(conc) - set(concept_index))
    if unknown:
        raise RunError(f"routing table names features/concepts not in meta.json: {', '.join(sorted(unknown))}")
    rows_i = np.fromiter((feature_index[f] for f in feats), dtype=np.int64, count=len(feats))
    cols_j = np.fromiter((concept_index[c] for c in conc), dtype=np.int64, count=len(conc))
    values = {name: table.column(name).to_numpy().astype(np.float64) for name in ("r", "pr", "contribution")}
    shape = (len(features), len(concepts))
    out: dict[str, dict[str, np.ndarray]] = {}
    for sample_id in sample_ids:
        mask = ids == sample_id
        count = int(mask.sum())
        if count != shape[0] * shape[1]:
            raise RunError(
                f"routing table has {count} rows for sample {sample_id!r}, expected {shape[0] * shape[1]} "
                f"({shape[0]} features × {shape[1]} concepts); extract the run again"
            )
        matrices: dict[str, np.ndarray] = {}
        for name, column in values.items():
            matrix = np.full(shape, np.nan)
            matrix[rows_i[mask], cols_j[mask]] = column[mask]
            matrices[name] = matrix
        if np.isnan(matrices["pr"]).any():
            raise RunError(f"routing rows of sample {sample_id!r} repeat some (feature, concept) cells")
        out[sample_id] = matrices
    return out


def explain_samples(
    run: Path | str | None, sample_ids: Sequence[str], concept: str = "true"
) -> list[SampleExplanation]:
    """Explanations of several samples of a run (one filtered read of each table), in the order given.

    ``concept`` is ``"true"``, ``"pred"`` or a concept name (see the module docstring). Unknown ids raise
    :class:`InterpError` naming the closest existing ids.
    """
    info = open_run(resolve_run(run))
    run_path, concepts, features, task = info.path, info.concepts, info.features, info.task
    validate_concept(concept, concepts)
    ids = list(dict.fromkeys(str(s) for s in sample_ids))
    if not ids:
        return []
    rows = _read_sample_rows(info, ids)
    missing = [s for s in ids if s not in rows]
    if missing:
        check_sample_ids(run_path, missing)
    cells = _read_routing_cells(info, ids)
    name = info.name
    explanations = []
    for sample_id in ids:
        record = rows[sample_id]
        probabilities = {c: float(record[prob_column(c)]) for c in concepts}
        logits = {c: float(record[logit_column(c)]) for c in concepts}
        true_concepts = tuple(c for c in concepts if record.get(f"label_{c}"))
        pred_concepts = tuple(c for c in concepts if record.get(f"pred_{c}"))
        chosen, reason = _choose_concept(concept, concepts, true_concepts, probabilities)
        p = np.array([float(record[p_column(f)]) for f in features])
        score = record.get("score")
        transcript = record.get("transcript")
        explanations.append(
            SampleExplanation(
                sample_id=sample_id,
                run=name,
                task=task,
                split=str(record.get("split", "")),
                row=int(record.get("row", -1)),
                label=str(record.get("label", "")),
                pred=str(record.get("pred", "")),
                correct=bool(record.get("correct", False)),
                concepts=concepts,
                features=features,
                true_concepts=true_concepts,
                pred_concepts=pred_concepts,
                probabilities=probabilities,
                logits=logits,
                p=p,
                r=cells[sample_id]["r"],
                pr=cells[sample_id]["pr"],
                contributions=cells[sample_id]["contribution"],
                concept=chosen,
                concept_reason=reason,
                score=None if score is None else float(score),
                transcript=str(transcript) if transcript else None,
            )
        )
    return explanations


def explain_sample(run: Path | str | None, sample_id: str, concept: str = "true") -> SampleExplanation:
    """The explanation of one sample of a run (``run=None``: the most recent run under runs/)."""
    return explain_samples(run, [sample_id], concept)[0]


# ------------------------------------------------------------------------------------------ choosing samples


def top_samples(
    run: Path | str | None, k: int, feature: str, concept: str, by: str = "pr"
) -> list[tuple[str, float]]:
    """The ``k`` samples with the largest ``by`` value (``pr`` or ``contribution``) in cell (feature, concept).

    Streams the routing table batch by batch with a filter on the cell and keeps a running top-K, so memory stays
    bounded whatever the run's size. Returns (sample id, value) pairs, largest first; ties keep run order.
    """
    info = open_run(resolve_run(run))
    run_path, concepts, features = info.path, info.concepts, info.features
    if k < 1:
        raise InterpError(f"--top needs a number of at least 1, got {k}")
    if by not in RANK_BY:
        raise InterpError(f"unknown --by {by!r}; choose one of {', '.join(RANK_BY)}")
    if feature not in features:
        raise InterpError(f"unknown feature {feature!r}; choose one of {', '.join(features)}")
    if concept not in concepts:
        raise InterpError(
            f"--top needs a concept name, got {concept!r}; choose one of {', '.join(concepts)} "
            f"(e.g. `interp local --top {k} --feature {feature} --concept {concepts[-1]}`)"
        )
    dataset = ds.dataset([str(p) for p in info.routing_files], format="parquet")
    scanner = dataset.scanner(
        columns=["sample_id", by],
        filter=(ds.field("feature") == feature) & (ds.field("concept") == concept),
    )
    best = _TopCandidates(k)
    seen = 0
    for batch in scanner.to_batches():
        if batch.num_rows == 0:
            continue
        values = batch.column(by).to_numpy(zero_copy_only=False).astype(np.float64)
        ids = [str(s) for s in batch.column("sample_id").to_pylist()]
        best.push_many(values, ids, seen)
        seen += batch.num_rows
    return best.ranked()


def random_samples(run: Path | str | None, k: int, seed: int = 0) -> list[str]:
    """``k`` sample ids drawn without replacement, reproducibly (``np.random.default_rng(seed)``).

    The draw is a prefix of a seeded permutation, so ``k`` samples are a subset of ``k + 1`` with the same seed.
    Asking for more samples than the run holds returns them all.
    """
    return draw_samples(all_sample_ids(resolve_run(run)), k, seed)


def draw_samples(ids: Sequence[str], k: int, seed: int) -> list[str]:
    """``k`` of ``ids`` drawn without replacement: a prefix of a permutation seeded with ``seed``."""
    if k < 1:
        raise InterpError(f"--random needs a number of at least 1, got {k}")
    order = np.random.default_rng(seed).permutation(len(ids))[:k]
    return [ids[int(i)] for i in order]
