"""The report's "Does it survive retraining?" section: what of one model's verdicts holds across seeds and videos.

:func:`retraining_view` builds plain dicts for ``templates/report.html`` from the statistics already computed:

* per seed ensemble (:mod:`interp.ensemble`): the seeds' Spearman matrix of r̄ (a small heatmap and its numbers),
  the bold cell of each concept column per seed and the ensemble's, which single-seed verdicts the ensemble keeps
  ("k of n single-seed verdicts survive retraining", also in the at-a-glance box), and on synthetic data each
  concept's recovery rate across seeds (in how many seeds the planted feature is the bold r̄ cell);
* per single run with a ``video`` column: where the video-clustered interval changes a verdict of the plain one.

Nothing here is written to disk; figures are inline PNG data URIs.
"""

from __future__ import annotations

import base64
import io
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from interp.ensemble import bold_agreement, seed_of, seed_spearman, verdict_survival
from interp.runreader import has_column
from interp.stats import JUDGED, GlobalStats, compute_global_stats
from interp.tables import QUANTITY_SYMBOLS, format_interval

_VERDICT = {"above": "above", "below": "below", "": "—"}


def retraining_view(results: Sequence[GlobalStats], singles: Sequence[GlobalStats], heatmaps: bool = True) -> dict[str, Any]:
    """The section's data: ``ensembles`` (one dict per ensemble in ``results``), ``clustering`` (one per single
    run) and ``present`` (whether there is anything to show)."""
    ensembles = [ensemble_view(stats, heatmaps) for stats in results if stats.kind == "seeds"]
    clustering = [clustering_view(stats) for stats in singles if stats.kind == "samples"]
    return {"ensembles": ensembles, "clustering": clustering, "present": bool(ensembles or clustering)}


def ensemble_view(ensemble: GlobalStats, heatmaps: bool = True) -> dict[str, Any]:
    survival = verdict_survival(ensemble)
    spearman = seed_spearman(ensemble)
    agreement = bold_agreement(ensemble)
    labels = list(spearman.columns)
    off = spearman.to_numpy()[~np.eye(len(labels), dtype=bool)]
    verdicts = []
    for quantity in JUDGED:
        pooled = ensemble.quantity_cells(quantity)
        singles = [m.quantity_cells(quantity) for m in ensemble.members]
        for k, cell in enumerate(pooled.itertuples(index=False)):
            seeds = [str(s.iloc[k]["significant"]) for s in singles]
            if not any(seeds):
                continue
            verdicts.append({
                "quantity": QUANTITY_SYMBOLS[quantity], "feature": cell.feature, "concept": cell.concept,
                "seeds": [_VERDICT[v] for v in seeds], "ensemble": _VERDICT[cell.significant],
                "kept": sum(v == cell.significant for v in seeds if v), "of": sum(bool(v) for v in seeds),
                "interval": format_interval(cell.low, cell.high, int(cell.n)),
                "prediction": format_interval(cell.pi_low, cell.pi_high, int(cell.n)),
            })
    return {
        "name": ensemble.name, "task": ensemble.task, "K": ensemble.units,
        "seeds": [seed_of(m) for m in ensemble.members], "members": [m.name for m in ensemble.members],
        "kept": int(survival["kept"].sum()), "total": len(survival),
        "spearman_labels": labels,
        "spearman_rows": [{"label": label, "cells": [f"{v:.2f}" for v in row]} for label, row in zip(labels, spearman.to_numpy())],
        "spearman_range": f"{off.min():.2f} to {off.max():.2f}" if off.size else "—",
        "spearman_png": _spearman_png(spearman, ensemble.name) if heatmaps else "",
        "agreement_labels": labels,
        "agreement_rows": [{"concept": row["concept"], "cells": [row[label] or "—" for label in labels],
                            "ensemble": row["ensemble"] or "—", "agree": int(row["agree"])}
                           for row in agreement.to_dict(orient="records")],
        "verdicts": verdicts,
        "planted": planted_recovery(ensemble),
    }


def planted_recovery(ensemble: GlobalStats) -> list[dict[str, Any]]:
    """Per concept of a synthetic ensemble: the planted feature, in how many seeds it is the bold r̄ cell, and
    whether it is the ensemble's bold cell."""
    planted = (ensemble.meta or {}).get("planted") or {}
    rows = []
    for concept in ensemble.concepts:
        if concept not in planted:
            continue
        truth = str(planted[concept])

        def recovered(stats: GlobalStats) -> bool:
            cells = stats.quantity_cells("r")
            return bool(cells[(cells["concept"] == concept) & (cells["feature"] == truth)]["bold"].any())

        hits = sum(recovered(m) for m in ensemble.members)
        rows.append({"concept": concept, "planted": truth, "recovered": hits, "K": ensemble.units,
                     "rate": f"{hits / ensemble.units:.0%}", "ensemble": recovered(ensemble)})
    return rows


def clustering_view(stats: GlobalStats) -> dict[str, Any]:
    """Where clustering by video changes a verdict of one run (its plain statistics ``stats``)."""
    view: dict[str, Any] = {"name": stats.name, "clustered": has_column(stats.run, "video"), "changes": [], "judged": 0,
                            "note": "no video column: clustering not possible, extract again"}
    if not view["clustered"]:
        return view
    clustered = compute_global_stats(Path(stats.run), replace(stats.options, cluster="video", interval="clt"))
    ratios = []
    for quantity in JUDGED:
        plain, video = stats.quantity_cells(quantity), clustered.quantity_cells(quantity)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios.append(video["se"].to_numpy() / plain["se"].to_numpy())
        for a, b in zip(plain.itertuples(index=False), video.itertuples(index=False)):
            view["judged"] += int(bool(a.significant or b.significant))
            if a.significant != b.significant:
                view["changes"].append({"quantity": QUANTITY_SYMBOLS[quantity], "feature": a.feature, "concept": a.concept,
                                        "samples": _VERDICT[a.significant], "videos": _VERDICT[b.significant],
                                        "samples_interval": format_interval(a.low, a.high, int(a.n)),
                                        "videos_interval": format_interval(b.low, b.high, int(b.units))})
    ratio = np.concatenate(ratios)
    ratio = ratio[np.isfinite(ratio)]
    view.update(videos=clustered.units, n=clustered.n_samples,
                ratio=f"{np.median(ratio):.2f}× (max {ratio.max():.2f}×)" if ratio.size else "—")
    return view


def glance_lines(view: dict[str, Any]) -> list[dict[str, str]]:
    """The at-a-glance lines: "k of n single-seed verdicts survive retraining" per ensemble."""
    return [{"name": e["name"], "text": f"{e['kept']} of {e['total']}", "K": str(e["K"])} for e in view["ensembles"]]


def _spearman_png(matrix: Any, name: str, dpi: int = 110) -> str:
    """A small heatmap of the seeds' Spearman matrix (bare matplotlib Figure, no pyplot state), as a data URI."""
    from matplotlib.figure import Figure

    k = len(matrix)
    figure = Figure(figsize=(1.2 + 0.55 * k, 1.0 + 0.5 * k), dpi=dpi, layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(matrix.to_numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
    for a in range(k):
        for b in range(k):
            axis.text(b, a, f"{matrix.iloc[a, b]:.2f}", ha="center", va="center", fontsize=7,
                      color="black" if matrix.iloc[a, b] > 0.6 else "white")
    axis.set_xticks(range(k), list(matrix.columns), fontsize=7, rotation=45)
    axis.set_yticks(range(k), list(matrix.index), fontsize=7)
    axis.set_title(f"Spearman of r̄ between seeds\n{name}", fontsize=7.5)
    figure.colorbar(image, ax=axis, shrink=0.8).ax.tick_params(labelsize=6)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


__all__ = ["clustering_view", "ensemble_view", "glance_lines", "planted_recovery", "retraining_view"]
