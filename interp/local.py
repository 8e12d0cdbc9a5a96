"""Local (per-sample) interpretation: the paper's Fig. 3, done better.

For one sample of a run (the output of `interp extract`) this module builds

* a heatmap of ``p_i·r_ij`` (rows: the seven features t, a, v, ta, av, vt, tav; columns: the concepts), with the
  values written in the cells and one concept column outlined (by default the true label, as in the paper);
* a bar chart of the signed contributions ``p_i r_ij <o_j, f_i W_ij>`` of the features to that concept's logit,
  sorted, which sum to the logit (no bias term in the model);
* a self-contained HTML page (jinja2, autoescaped) with the figure embedded as a base64 PNG, plus PNG and SVG
  files next to it.

Library use (a notebook gets the same picture as the CLI)::

    from interp.local import explain_sample, plot_sample
    fig = plot_sample(explain_sample("runs/model-test", "video_12[3]"))

Reading one sample never loads the whole routing table: rows are read with a ``sample_id`` filter through
``pyarrow.dataset`` (row-group statistics prune what they can), and ``--top`` streams the routing table batch by
batch with a filter on the (feature, concept) cell while keeping a running top-K.

How ``concept="true"`` chooses a column: for single-label tasks (sentiment) it is the true class. For multi-label
tasks the true label may name several concepts or none: with several, the one the model gives the highest
probability is chosen; with none, the concept with the highest probability overall (the model's strongest
prediction). ``concept="pred"`` is always the concept with the highest probability (for sentiment this is the
predicted class; for multi-label tasks it is the strongest of the predicted concepts, or the strongest concept
when none is predicted). Any other value must be a concept name of the run's task.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import heapq
import importlib.resources
import io
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from interp.html import template_environment
from interp.errors import InterpError, RunError
from interp.guard import printable, strip_xml_invalid, xml_safe
from interp.runs import (
    DEFAULT_REPORTS_ROOT,
    atomic_write_bytes,
    atomic_write_text,
    read_meta,
    resolve_run,
    routing_files,
    run_name,
    samples_files,
)
from interp.schema import FEATURE_NAMES, FEATURES, logit_column, p_column, prob_column

#: Values of ``--by`` (the routing column ranked by ``--top``).
RANK_BY: tuple[str, ...] = ("pr", "contribution")

#: One-sentence reading guide shown with every figure.
READING_GUIDE = (
    "Each cell is p_i·r_ij: how strongly feature i is active (p_i, between 0 and 1) times how much of it is routed "
    "to concept j (r_ij; each row of r sums to 1, so each row of the heatmap sums to p_i). Red cells are above 1/J, "
    "the value of a fully active feature routed uniformly; blue cells are below. The bars are the signed "
    "contributions p_i r_ij <o_j, f_i W_ij> of each feature to the outlined concept's logit; they add up to the logit."
)

_TEMPLATE = "local.html"
_STYLE = "style.css"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_NAME = 100
_RED = "#b2182b"
_BLUE = "#2166ac"


# ------------------------------------------------------------------------------------------------ data classes


@dataclass
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


@dataclass
class LocalResult:
    """Files written for one sample by :func:`write_local_page`."""

    sample_id: str
    html_path: Path
    png_path: Path
    svg_path: Path
    concept: str = ""


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


def _run_concepts(meta: dict[str, Any]) -> tuple[str, ...]:
    concepts = meta.get("concepts")
    if not concepts:
        raise RunError("meta.json has no concept names; extract the run again with `interp extract`")
    return tuple(str(c) for c in concepts)


def _run_features(meta: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(f) for f in meta.get("features") or FEATURES)


def all_sample_ids(run: Path | str) -> list[str]:
    """Every sample id of a run, in run order (reads only the ``sample_id`` column of samples.parquet)."""
    ids: list[str] = []
    for path in samples_files(run):
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


def _validate_concept(concept: str, concepts: tuple[str, ...]) -> None:
    if concept not in ("true", "pred") and concept not in concepts:
        raise InterpError(
            f"unknown concept {concept!r}; use true, pred, or one of the run's concepts: {', '.join(concepts)}"
        )


def _read_sample_rows(run: Path, sample_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """samples.parquet rows of the given ids (only those rows are materialised)."""
    dataset = ds.dataset([str(p) for p in samples_files(run)], format="parquet")
    table = dataset.to_table(filter=ds.field("sample_id").isin(list(sample_ids)))
    rows: dict[str, dict[str, Any]] = {}
    for record in table.to_pylist():
        sample_id = str(record["sample_id"])
        if sample_id in rows:
            raise RunError(
                f"sample id {sample_id!r} appears more than once in run {run_name(run)}; local explanations need "
                "unique ids (extract one split at a time)"
            )
        rows[sample_id] = record
    return rows


def _read_routing_cells(
    run: Path, sample_ids: Sequence[str], features: tuple[str, ...], concepts: tuple[str, ...]
) -> dict[str, dict[str, np.ndarray]]:
    """For each id, its (7, J) matrices of r, pr and contribution read from the routing table (filtered scan)."""
    dataset = ds.dataset([str(p) for p in routing_files(run)], format="parquet")
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
    run_path = resolve_run(run)
    meta = read_meta(run_path)
    concepts = _run_concepts(meta)
    features = _run_features(meta)
    task = str(meta.get("task", ""))
    _validate_concept(concept, concepts)
    ids = list(dict.fromkeys(str(s) for s in sample_ids))
    if not ids:
        return []
    rows = _read_sample_rows(run_path, ids)
    missing = [s for s in ids if s not in rows]
    if missing:
        check_sample_ids(run_path, missing)
    cells = _read_routing_cells(run_path, ids, features, concepts)
    name = run_name(run_path)
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
    run_path = resolve_run(run)
    meta = read_meta(run_path)
    concepts = _run_concepts(meta)
    features = _run_features(meta)
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
    dataset = ds.dataset([str(p) for p in routing_files(run_path)], format="parquet")
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
    return _draw(all_sample_ids(resolve_run(run)), k, seed)


def _draw(ids: Sequence[str], k: int, seed: int) -> list[str]:
    if k < 1:
        raise InterpError(f"--random needs a number of at least 1, got {k}")
    order = np.random.default_rng(seed).permutation(len(ids))[:k]
    return [ids[int(i)] for i in order]


# ------------------------------------------------------------------------------------------------- the figure


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _plain(text: str) -> str:
    """Untrusted text (ids, transcripts) as figure text: control characters shown escaped, so the SVG stays
    valid XML (the title is drawn with ``parse_math=False``: ``$`` is literal)."""
    return xml_safe(printable(text))


def _truth_text(explanation: SampleExplanation) -> str:
    label = explanation.label or "(none)"
    if explanation.score is not None:
        label += f" (score {explanation.score:+.2f})"
    return label


def _pred_text(explanation: SampleExplanation) -> str:
    probs = explanation.probabilities
    if explanation.pred_concepts:
        return ", ".join(f"{c} (P={probs[c]:.2f})" for c in explanation.pred_concepts)
    return explanation.pred or "(none)"


def plot_sample(explanation: SampleExplanation, *, dpi: int = 100) -> Any:
    """The local explanation figure of one sample (a ``matplotlib.figure.Figure``; no pyplot state is touched).

    Left: heatmap of p_i·r_ij with the values in the cells and the chosen concept's column outlined; the diverging
    "RdBu_r" map is white at 1/J (a fully active feature routed uniformly), blue below, red above. Right: the
    contributions to the chosen concept's logit as sorted horizontal bars (red raises it, blue lowers it), whose sum
    is the logit. The heatmap axes has label ``"heatmap"`` and the bar axes ``"contributions"``.
    """
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    e = explanation
    n_features, n_concepts = e.pr.shape
    j_chosen = e.concept_index
    heat_width = max(5.5, 0.85 * n_concepts + 2.5)
    fig = Figure(figsize=(heat_width + 6.0, 7.2), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=[heat_width, 5.2])
    ax = fig.add_subplot(grid[0, 0], label="heatmap")
    bars = fig.add_subplot(grid[0, 1], label="contributions")

    # Title: who, truth, prediction, transcript.
    verdict = "correct" if e.correct else "wrong"
    title = (
        f"Sample {_plain(_shorten(e.sample_id, 70))}   ·   split: {_plain(e.split or '?')}   ·   "
        f"run: {_plain(_shorten(e.run, 40))}\n"
        f"true: {_plain(_truth_text(e))}   ·   predicted: {_plain(_pred_text(e))} ({verdict})   ·   "
        f"outlined: {_plain(e.concept)} ({e.concept_reason})"
    )
    if e.transcript:
        quote = textwrap.shorten(" ".join(e.transcript.split()), width=220, placeholder=" …")
        title += "\n" + "\n".join(textwrap.wrap(f"“{_plain(quote)}”", width=130))
    fig.suptitle(title, fontsize=11.5, linespacing=1.5, parse_math=False)  # ids ("<video>$_$<clip>") and words hold $

    # Heatmap.
    # Linear and symmetric about 1/J (equal colour steps for equal distances from the baseline); the colour bar
    # then shows only the possible range [0, top].
    top = max(float(np.nanmax(e.pr)) if e.pr.size else 0.0, 2.0 * e.uniform)
    half = max(top - e.uniform, e.uniform)
    norm = Normalize(vmin=e.uniform - half, vmax=e.uniform + half)
    image = ax.imshow(e.pr, cmap="RdBu_r", norm=norm, aspect="auto", interpolation="nearest")
    cmap = image.get_cmap()
    for i in range(n_features):
        for j in range(n_concepts):
            value = e.pr[i, j]
            red, green, blue, _ = cmap(norm(value))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=10,
                    color="white" if dark else "black", fontweight="bold" if j == j_chosen else "normal")
    ax.add_patch(Rectangle((j_chosen - 0.5, -0.5), 1.0, n_features, fill=False, edgecolor="black",
                           linewidth=3.0, clip_on=False, gid="chosen-concept", zorder=5))
    ax.set_yticks(range(n_features))
    ax.set_yticklabels(
        [f"{f} ({FEATURE_NAMES.get(f, f)})  p={p:.2f}" for f, p in zip(e.features, e.p)], fontsize=10
    )
    ax.set_xticks(range(n_concepts))
    tick_labels = []
    for c in e.concepts:
        marks = [m for m, on in (("true", c in e.true_concepts), ("pred", c in e.pred_concepts)) if on]
        tick_labels.append(f"{c}\nP={e.probabilities[c]:.2f}" + (f"\n{'+'.join(marks)}" if marks else ""))
    ax.set_xticklabels(tick_labels, fontsize=10)
    for label, c in zip(ax.get_xticklabels(), e.concepts):
        if c == e.concept:
            label.set_fontweight("bold")
    ax.tick_params(length=0)
    ax.set_xlabel("concept j  (P = model probability; true / pred marked)", fontsize=10)
    ax.set_ylabel("feature i  (p = activation)", fontsize=10)
    ax.set_title("p·r: feature activation × routing to each concept\n(each row sums to the feature's p)",
                 fontsize=11)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.06, pad=0.02)
    colorbar.set_label(f"p·r   (white = 1/J = {e.uniform:.2f}: uniform routing;\nred = above, blue = below)",
                       fontsize=9.5)
    colorbar.ax.set_ylim(0.0, top)
    colorbar.ax.axhline(e.uniform, color="black", linewidth=1.0)
    colorbar.ax.tick_params(labelsize=9)

    # Contributions to the chosen concept's logit, sorted (largest at the top).
    values = e.concept_contributions
    order = np.argsort(-values, kind="stable")
    ordered = values[order]
    positions = np.arange(len(order))[::-1]
    colours = [_RED if v >= 0 else _BLUE for v in ordered]
    bars.barh(positions, ordered, color=colours, height=0.65)
    bars.set_yticks(positions)
    bars.set_yticklabels([f"{e.features[i]} ({FEATURE_NAMES.get(e.features[i], e.features[i])})" for i in order],
                         fontsize=10)
    bars.axvline(0.0, color="black", linewidth=0.8)
    span = float(np.max(np.abs(values))) if values.size else 1.0
    span = span if span > 0 else 1.0
    low = min(0.0, float(values.min())) - 0.45 * span
    high = max(0.0, float(values.max())) + 0.45 * span
    bars.set_xlim(low, high)
    for y, v in zip(positions, ordered):
        bars.text(v + (0.03 * span if v >= 0 else -0.03 * span), y, f"{v:+.3f}", va="center",
                  ha="left" if v >= 0 else "right", fontsize=9.5)
    total = float(values.sum())
    stored = e.concept_logit
    if abs(total - stored) <= 1e-3 * max(1.0, abs(stored)):
        sum_text = f"sum of bars = logit = {stored:.3f}"
    else:
        sum_text = f"sum of bars = {total:.3f}, stored logit = {stored:.3f}"
    bars.set_title(f"Contributions to the logit of concept {e.concept!r}\n{sum_text}", fontsize=11)
    bars.set_xlabel("p_i r_ij ⟨o_j, f_i W_ij⟩\n(red raises the logit, blue lowers it)", fontsize=10)
    bars.xaxis.set_major_locator(MaxNLocator(nbins=5))
    bars.grid(axis="x", alpha=0.3)
    bars.set_axisbelow(True)
    for side in ("top", "right"):
        bars.spines[side].set_visible(False)
    return fig


def figure_bytes(figure: Any, fmt: str, dpi: int = 150) -> bytes:
    """The figure saved to memory as ``fmt`` ("png" or "svg"), without dates in the metadata (reproducible)."""
    buffer = io.BytesIO()
    metadata: dict[str, Any] = {"Date": None} if fmt == "svg" else {"Software": None}
    figure.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
    return strip_xml_invalid(buffer.getvalue()) if fmt == "svg" else buffer.getvalue()


# ------------------------------------------------------------------------------------------------- HTML pages


def safe_filename(sample_id: str) -> str:
    """A file-name stem for a sample id that cannot leave the output folder.

    Characters other than ``[A-Za-z0-9._-]`` become ``_``, leading dots are removed and long ids are cut; when this
    changed the id, a short hash of the raw id is appended so that different ids keep different names.
    """
    stem = _UNSAFE.sub("_", sample_id).lstrip(".")
    if len(stem) > _MAX_NAME:
        stem = stem[:_MAX_NAME]
    if stem != sample_id or not stem:
        digest = hashlib.sha256(sample_id.encode("utf-8")).hexdigest()[:8]
        stem = f"{stem}-{digest}" if stem else f"sample-{digest}"
    return stem


def _template_text(name: str) -> str | None:
    resource = importlib.resources.files("interp.templates").joinpath(name)
    try:
        return resource.read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return None


def _environment() -> Any:
    return template_environment(strict=True)


def _context(explanation: SampleExplanation, image_src: str) -> dict[str, Any]:
    e = explanation
    probabilities = [
        {
            "concept": c,
            "probability": f"{e.probabilities[c]:.3f}",
            "logit": f"{e.logits[c]:+.3f}",
            "true": c in e.true_concepts,
            "pred": c in e.pred_concepts,
            "chosen": c == e.concept,
        }
        for c in e.concepts
    ]
    matrix = [
        {
            "feature": f,
            "name": FEATURE_NAMES.get(f, f),
            "p": f"{e.p[i]:.3f}",
            "pr": [f"{v:.3f}" for v in e.pr[i]],
            "contribution": f"{e.concept_contributions[i]:+.4f}",
        }
        for i, f in enumerate(e.features)
    ]
    return {
        "e": e,
        "anchor": safe_filename(e.sample_id),
        "image_src": image_src,
        "probabilities": probabilities,
        "matrix": matrix,
        "score": None if e.score is None else f"{e.score:+.3f}",
        "logit": f"{e.concept_logit:+.4f}",
        "contribution_sum": f"{float(e.concept_contributions.sum()):+.4f}",
        "uniform": f"{e.uniform:.3f}",
        "guide": READING_GUIDE,
    }


def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_local_fragment(explanation: SampleExplanation, png: bytes | None = None) -> str:
    """An HTML fragment (a ``<section>``) explaining one sample, with the figure embedded as a base64 PNG.

    Reusable by the full report; ``png`` is the rendered figure (rendered here when omitted). All text is
    autoescaped, so ids and transcripts cannot inject markup.
    """
    return _render(explanation, png, standalone=False)


def render_local_page(explanation: SampleExplanation, png: bytes | None = None) -> str:
    """A complete, self-contained HTML page (works offline as one file) explaining one sample."""
    return _render(explanation, png, standalone=True)


def _render(explanation: SampleExplanation, png: bytes | None, standalone: bool) -> str:
    if png is None:
        png = figure_bytes(plot_sample(explanation), "png")
    source = _template_text(_TEMPLATE)
    if source is None:
        raise InterpError("the template local.html is missing from interp.templates; reinstall the package")
    template = _environment().from_string(source)
    context = _context(explanation, _png_data_uri(png))
    return template.render(standalone=standalone, base_css=_template_text(_STYLE) or "", **context)


def default_out_dir(run: Path | str) -> Path:
    """reports/<run name>/local/."""
    return DEFAULT_REPORTS_ROOT / run_name(run) / "local"


def write_local_page(explanation: SampleExplanation, out_dir: Path | str) -> LocalResult:
    """Write ``<id>.html`` (figure embedded), ``<id>.png`` and ``<id>.svg`` into ``out_dir`` (atomic writes).

    File names come from :func:`safe_filename`, so no id can write outside ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_filename(explanation.sample_id)
    figure = plot_sample(explanation)
    png = figure_bytes(figure, "png")
    svg = figure_bytes(figure, "svg")
    png_path, svg_path, html_path = out / f"{stem}.png", out / f"{stem}.svg", out / f"{stem}.html"
    atomic_write_bytes(png_path, png)
    atomic_write_bytes(svg_path, svg)
    atomic_write_text(html_path, render_local_page(explanation, png))
    return LocalResult(explanation.sample_id, html_path, png_path, svg_path, explanation.concept)


# ------------------------------------------------------------------------------------------------------ the CLI


def run_local(
    run: Path | str | None = None,
    sample_ids: Sequence[str] = (),
    concept: str = "true",
    out: Path | str | None = None,
    top: int | None = None,
    feature: str | None = None,
    by: str = "pr",
    random: int | None = None,
    seed: int = 0,
) -> list[LocalResult]:
    """`interp local`: write a page and figures for each chosen sample; returns one result per sample.

    Samples are the explicit ``sample_ids``, then the ``top`` samples of cell (``feature``, ``concept``) ranked by
    ``by``, then ``random`` samples drawn with ``seed`` (duplicates once). ``--top`` needs ``feature`` and a concept
    name; the pages of a ``--top`` selection outline that concept. Output defaults to reports/<run>/local/.
    """
    run_path = resolve_run(run)
    meta = read_meta(run_path)
    concepts = _run_concepts(meta)
    _validate_concept(concept, concepts)
    if by not in RANK_BY:
        raise InterpError(f"unknown --by {by!r}; choose one of {', '.join(RANK_BY)}")
    if top is not None:
        if feature is None or concept in ("true", "pred"):
            raise InterpError(
                "--top needs --feature F and a concept name --concept C, "
                f"e.g. `interp local --top {top} --feature ta --concept {concepts[-1]}`"
            )
    elif feature is not None:
        raise InterpError("--feature only applies with --top K (e.g. `interp local --top 5 --feature ta --concept C`)")
    if not sample_ids and top is None and random is None:
        raise InterpError("choose samples with --sample-id ID (repeatable), --top K --feature F --concept C, or --random K")

    chosen = [str(s) for s in sample_ids]
    known = all_sample_ids(run_path)
    check_sample_ids(run_path, chosen, known)
    if top is not None and feature is not None:
        chosen += [sample_id for sample_id, _ in top_samples(run_path, top, feature, concept, by)]
    if random is not None:
        chosen += _draw(known, random, seed)
    chosen = list(dict.fromkeys(chosen))

    out_dir = Path(out) if out is not None else default_out_dir(run_path)
    return [write_local_page(explanation, out_dir) for explanation in explain_samples(run_path, chosen, concept)]
