"""The report's gallery: which samples to show, and why (pure choice; the pages are written by
:func:`interp.report.write_report`).

Per concept: the sample with the highest p·r in the cell (most important feature, concept), its figure outlining
that concept; then a seeded random draw of samples, outlining their true label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from interp.local import safe_filename
from interp.local_compute import SampleExplanation, explain_samples, random_samples, top_samples
from interp.runs import RunInfo
from interp.schema import FEATURE_NAMES

#: Random samples shown in the gallery per run (besides one top sample per concept).
DEFAULT_GALLERY_RANDOM = 3


@dataclass(frozen=True)
class GalleryChoice:
    """One card of the gallery: a sample's explanation (its outlined concept), why it was chosen, and the folder
    (relative to the report, posix) its local page goes to."""

    run: str
    explanation: SampleExplanation
    kind: str  # "top" or "random"
    reason: str
    folder: str
    feature: str | None = None
    value: float | None = None


def argmax_feature(cells: Any) -> str:
    """The feature with the largest finite mean among ``cells`` (rows of one concept column), or "—"."""
    means = cells["mean"].to_numpy(dtype=np.float64)
    if not np.isfinite(means).any():
        return "—"
    return str(cells["feature"].iloc[int(np.nanargmax(means))])


def most_important_features(stats: Any) -> dict[str, tuple[str, float]]:
    """For each concept, the feature with the largest mean p·r and that mean."""
    pr_cells = stats.quantity_cells("pr")
    out: dict[str, tuple[str, float]] = {}
    for concept in stats.concepts:
        column = pr_cells[pr_cells["concept"] == concept]
        feature = argmax_feature(column)
        if feature == "—":
            continue
        out[concept] = (feature, float(column.loc[column["feature"] == feature, "mean"].iloc[0]))
    return out


def gallery_items(run: RunInfo, stats: Any, random_count: int = DEFAULT_GALLERY_RANDOM, seed: int = 0,
                  folder: str = "local") -> list[GalleryChoice]:
    """The gallery of one run: the top sample of each concept, then ``random_count`` random samples (seeded).

    A sample shown twice with the same outlined concept is shown once; with another concept its page goes to
    ``folder/concept-<concept>/`` so that the two pages do not overwrite each other.
    """
    chosen: list[tuple[str, str, str, str, str | None, float | None]] = []  # (id, concept arg, kind, reason, f, v)
    for concept, (feature, mean) in most_important_features(stats).items():
        top = top_samples(run.path, 1, feature, concept, by="pr")
        if not top:
            continue
        sample_id, value = top[0]
        reason = (f"highest p·r of {feature} → {concept} ({value:.3f}); {feature} ({FEATURE_NAMES.get(feature, feature)}) "
                  f"has the largest mean p·r for {concept} ({mean:.3f})")
        chosen.append((sample_id, concept, "top", reason, feature, value))
    if random_count > 0:
        for sample_id in random_samples(run.path, random_count, seed):
            chosen.append((sample_id, "true", "random", f"random draw (seed {seed}); outlined: its true label", None, None))

    # One filtered read per outlined concept.
    explanations: dict[tuple[str, str], SampleExplanation] = {}
    for concept_arg in dict.fromkeys(c for _, c, *_ in chosen):
        ids = [s for s, c, *_ in chosen if c == concept_arg]
        for explanation in explain_samples(run.path, ids, concept_arg):
            explanations[(explanation.sample_id, concept_arg)] = explanation

    items: list[GalleryChoice] = []
    placed: dict[str, str] = {}  # file stem -> outlined concept of the page placed there
    seen: set[tuple[str, str]] = set()
    for sample_id, concept_arg, kind, reason, feature, value in chosen:
        explanation = explanations[(sample_id, concept_arg)]
        key = (sample_id, explanation.concept)
        if key in seen:
            continue
        seen.add(key)
        stem = safe_filename(sample_id)
        page_folder = folder
        if stem in placed and placed[stem] != explanation.concept:
            page_folder = f"{folder}/concept-{safe_filename(explanation.concept)}"
        else:
            placed[stem] = explanation.concept
        items.append(GalleryChoice(run=stats.name, explanation=explanation, kind=kind, reason=reason,
                                   folder=page_folder, feature=feature, value=value))
    return items
