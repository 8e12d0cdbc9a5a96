"""End to end on planted-truth data: the global statistics point at the planted features.

A small model trained for a few epochs on the synthetic data (tests/conftest.py) reliably routes each
unimodal planted feature (t, a, v) to its concept: the mean r of that cell is significant above 1/J.
Interactions (ta, av, vt, tav) are recovered less reliably, because the cross-modal features also carry
their query modality; the demo's report states the exact counts.
"""

from __future__ import annotations

from pathlib import Path

from interp.runs import read_meta
from interp.stats import StatsOptions, compute_global_stats


def test_unimodal_planted_links_are_significant_above_uniform(extracted_run: Path) -> None:
    meta = read_meta(extracted_run)
    planted = meta["planted"]
    stats = compute_global_stats(extracted_run, StatsOptions())
    cells = stats.cells[stats.cells["quantity"] == "r"].set_index(["feature", "concept"])
    unimodal = {concept: feature for concept, feature in planted.items() if feature in ("t", "a", "v")}
    assert len(unimodal) == 3
    for concept, feature in unimodal.items():
        cell = cells.loc[(feature, concept)]
        assert cell["significant"] == "above", (concept, feature, cell["low"], cell["high"])
        # and the planted feature is the one routed most strongly to that concept among the unimodal ones
        others = [f for f in ("t", "a", "v") if f != feature]
        assert all(cell["mean"] > cells.loc[(other, concept)]["mean"] for other in others), concept
