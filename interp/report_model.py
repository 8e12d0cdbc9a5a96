"""The report as data: :class:`ReportModel` holds everything ``index.html`` shows (model cards, metrics, planted
rows, gallery choices, grades, table of contents, the global and retraining views); the template only renders it.
Built by :func:`interp.report.build_report`, written by :func:`interp.report.write_report`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp.gallery import GalleryChoice, argmax_feature
from interp.schema import related_features
from interp.tables import format_interval



HOW_TO_READ: dict[str, str] = {
    "model": (
        "What was trained, on which data, and how: everything needed to reproduce the run. Data and checkpoint are "
        "identified by their SHA-256; the model was selected on the validation split, never on test."
    ),
    "performance": (
        "The paper's Table 1/2 metrics. The run column is computed from the logits stored in the run, i.e. on exactly "
        "the samples whose routing coefficients are analysed below; the validation column is what model selection "
        "saw. Compare accuracies with the chance level."
    ),
    "planted": (
        "The synthetic data plants one driving feature per concept. A concept counts as recovered when its planted "
        "feature is the bold cell of its column in the r̄ table (largest mean r, interval above 1/J: the paper's "
        "rule). The feature with the largest mean p·r is a second reading that also weighs how active the feature is. "
        "An interaction carries the information of its modalities (ta sees t and a; tav sees all three), so a model can "
        "route a concept through a related feature instead: such near misses are marked \"related\"."
    ),
    "global": (
        "Each cell is the interval of a mean over all samples of the run: r̄ says where a feature is routed, mean p·r "
        "also weighs how active it is, p̄ is the activation alone. Compare with the uniform baseline 1/J: green "
        "cells lie above it, red below; the bold cell of a column is its most important feature. Hover a cell for "
        "its mean, standard deviation and n."
    ),
    "retraining": (
        "The intervals above describe the sample noise of the runs shown. A model retrained with another seed is "
        "an equally good model whose r̄ table can differ: an ensemble of seeds pools the runs of one task, data and "
        "split (mean of the seed means, a t interval over seeds with K−1 degrees of freedom, and a prediction "
        "interval for a new seed). A single-seed verdict survives when the ensemble gives the same verdict. "
        "Segments of one video are not independent either: the video-clustered intervals show which verdicts rest "
        "on treating them as independent."
    ),
    "gallery": (
        "Local explanations of single samples (the paper's Fig. 3). Each thumbnail shows p·r of every feature for "
        "every concept (one concept outlined) and the contributions of the features to the outlined concept's logit. "
        "'Top' cards show, per concept, the sample with the highest p·r of that concept's most important feature; "
        "'random' cards are a seeded random draw. Open a card for the full-size figure and its numbers."
    ),
}

PAPER_REFERENCE = (
    "Yao-Hung Hubert Tsai, Martin Q. Ma, Muqiao Yang, Ruslan Salakhutdinov, Louis-Philippe Morency. "
    "Multimodal Routing: Improving Local and Global Interpretability of Multimodal Language Analysis. EMNLP 2020."
)


@dataclass
class PlantedRow:
    """Planted vs recovered for one concept of one run."""

    concept: str
    planted: str
    recovered: list[str]
    top_pr: str
    top_r: str
    planted_r_text: str
    planted_r_mean: float
    agree: bool
    agree_pr: bool
    related: str = ""  # when not agreeing: a recovered feature that nests with the planted one (e.g. ta for t)


@dataclass
class RunSection:
    """Everything the report shows about one run."""

    name: str
    path: Path
    meta: dict[str, Any]
    task: str
    card: list[tuple[str, str, str]]  # (field, value, title)
    performance: dict[str, Any]
    planted: list[PlantedRow] = field(default_factory=list)
    gallery: list[GalleryChoice] = field(default_factory=list)
    modality_labels: dict[str, Any] | None = None  # routing vs CH-SIMS per-modality labels (interp.modality_labels)

    @property
    def agreement(self) -> int:
        return sum(row.agree for row in self.planted)

    @property
    def agreement_pr(self) -> int:
        return sum(row.agree_pr for row in self.planted)

    @property
    def related(self) -> int:
        return sum(bool(row.related) for row in self.planted)


def planted_rows(stats: Any, planted: dict[str, str] | None) -> list[PlantedRow]:
    """For each concept: the planted feature, the bold feature(s) of the r̄ table, the top mean p·r, agreement."""
    if not planted:
        return []
    r_cells = stats.quantity_cells("r")
    pr_cells = stats.quantity_cells("pr")
    rows = []
    for concept in stats.concepts:
        if concept not in planted:
            continue
        truth = str(planted[concept])
        column = r_cells[r_cells["concept"] == concept]
        recovered = [str(f) for f in column.loc[column["bold"].astype(bool), "feature"]]
        top_r = argmax_feature(column)
        top_pr = argmax_feature(pr_cells[pr_cells["concept"] == concept])
        planted_cell = column[column["feature"] == truth]
        if len(planted_cell):
            cell = planted_cell.iloc[0]
            planted_r_text = format_interval(cell["low"], cell["high"], int(cell["n"]))
            planted_r_mean = float(cell["mean"])
        else:
            planted_r_text, planted_r_mean = "—", float("nan")
        agree = truth in recovered
        near = [f for f in (recovered or [top_r]) if related_features(f, truth)]
        rows.append(PlantedRow(
            related="" if agree or not near else near[0],
            concept=concept,
            planted=truth,
            recovered=recovered,
            top_pr=top_pr,
            top_r=top_r,
            planted_r_text=planted_r_text,
            planted_r_mean=planted_r_mean,
            agree=agree,
            agree_pr=truth == top_pr,
        ))
    return rows



#: Sections of the report in page order: (anchor, title).
SECTIONS: tuple[tuple[str, str], ...] = (
    ("model-card", "Model card"), ("performance", "Performance"), ("planted", "Planted vs recovered"),
    ("global", "Global interpretation"), ("retraining", "Does it survive retraining?"),
    ("faithfulness", "Can you trust these explanations?"), ("gallery", "Local explanations"), ("files", "Files"),
)


@dataclass(frozen=True)
class ReportModel:
    """Everything the report shows (pure data; no file is read or written to render it).

    ``runs``: one section per run; ``shown``: the global statistics shown (seed ensembles pooled) with ``notes`` on
    what was not pooled; ``global_view`` (:func:`interp.global_report.section_view`), ``retraining``
    (:func:`interp.retraining.retraining_view`) and ``faithfulness`` (:func:`interp.faithfulness_report.faithfulness_views`)
    are the views of those sections; ``glance`` the cards at the top; ``toc`` the (anchor, title) of each section shown.
    """

    runs: tuple[RunSection, ...]
    shown: tuple[Any, ...]
    notes: tuple[str, ...]
    global_view: dict[str, Any]
    retraining: dict[str, Any]
    retraining_glance: tuple[dict[str, str], ...]
    faithfulness: tuple[dict[str, Any], ...]
    glance: tuple[dict[str, Any], ...]
    toc: tuple[tuple[str, str], ...]
    title: str
    names: str
    synthetic: bool


def grade(recovered: int, total: int) -> str:
    """How a count "k of J" of recovered planted links reads: all (good), at least half (fair), fewer (poor)."""
    return "good" if recovered == total else ("fair" if recovered * 2 >= total else "poor")


def table_of_contents(synthetic: bool, retraining: bool, faithfulness: bool) -> tuple[tuple[str, str], ...]:
    """The (anchor, title) of each section the report shows, in page order."""
    skipped = {"planted": not synthetic, "retraining": not retraining, "faithfulness": not faithfulness}
    return tuple((anchor, title) for anchor, title in SECTIONS if not skipped.get(anchor, False))


def glance(section: RunSection) -> dict[str, Any]:
    """The at-a-glance card of one run: task, samples, headline metric, planted links recovered (with a grade)."""
    perf = section.performance
    value = perf.get("headline_value")
    headline_text = f"{perf['headline']} {float(value):.3f}" if value is not None and math.isfinite(float(value)) else "—"
    return {
        "name": section.name,
        "task": section.task,
        "split": perf["split"],
        "n": perf["n"],
        "headline": headline_text,
        "planted": bool(section.planted),
        "agreement": section.agreement,
        "grade": grade(section.agreement, len(section.planted)),
        "related": section.related,
        "agreement_pr": section.agreement_pr,
        "J": len(section.planted),
    }
