"""The report's "Does it survive retraining?" section, on seed runs of tiny trained models and on hand-written runs.

Golden values: single-seed verdicts and the ensemble's t interval by numpy/scipy; clustered verdicts by
statsmodels; the planted recovery from the report's own per-run planted rows.
"""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats as sps

from interp.report import run_report
from interp.schema import FEATURES

from test_clustered import add_videos
from test_ensemble import Z975, seed_run, single_verdicts

F = len(FEATURES)


class Tables(HTMLParser):
    """Rows of the tables of a page, by table class: [{attrs..., "cells": [text, ...]}]."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict]] = {}
        self.attrs: list[dict[str, str]] = []
        self._table: str | None = None
        self._row: dict | None = None
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.attrs.append({"_tag": tag, **a})
        if tag == "table":
            self._table = a.get("class", "")
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self._row = {**a, "cells": []}
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row["cells"].append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell += data


@pytest.fixture(autouse=True)
def no_gallery(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gallery's local pages (tested in test_report.py) take most of a report's time; not needed here."""
    import interp.report

    monkeypatch.setattr(interp.report, "gallery_items", lambda *args, **kwargs: [])


def parse(path: Path) -> Tables:
    parser = Tables()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def trained_seeds(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from interp.extract import extract
    from interp.train import train

    root = tmp_path_factory.mktemp("seeds")
    runs = []
    for seed in (0, 1):
        ckpt = root / f"model-seed{seed}.pt"
        train(synth_data, ckpt, task="sentiment", epochs=2, batch_size=32, lr=1e-3, seed=seed, device="cpu",
              d_model=8, n_heads=2, n_layers=1, progress=False)
        runs.append(extract(ckpt, split="test", out=root / f"synth-seed{seed}", batch_size=128, device="cpu", progress=False))
    return runs


def test_report_of_trained_seeds_has_the_retraining_section(trained_seeds: list[Path], tmp_path: Path) -> None:
    index = run_report(trained_seeds, out=tmp_path / "report", gallery_random=0)
    page = parse(index)
    html = index.read_text(encoding="utf-8")
    assert 'id="retraining"' in html and "Does it survive retraining?" in html
    # at a glance: "k of n single-seed verdicts survive retraining", the same numbers as the section's verdict line
    glance = re.search(r'class="survival">(\d+) of (\d+)<', html)
    line = next(a for a in page.attrs if "survival" in a.get("class", "").split() and a["_tag"] == "p")
    assert glance and glance.groups() == (line["data-kept"], line["data-total"])
    # the ensemble's tables are the global section's (intervals over seeds)
    assert 'data-kind="seeds"' in html and "sentiment-seeds-0-1" in html
    # planted recovery across seeds = the per-run planted rows that agree
    per_run = {}
    for row in page.tables["planted"]:
        if "data-concept" in row:
            per_run.setdefault(row["data-concept"], 0)
            per_run[row["data-concept"]] += row["data-agree"] == "yes"
    recovered = {row["data-concept"]: int(row["data-recovered"]) for row in page.tables["planted-seeds"] if "data-concept" in row}
    assert recovered and recovered == per_run
    assert all(int(row["data-seeds"]) == 2 for row in page.tables["planted-seeds"] if "data-concept" in row)
    # every run has a video column (synthetic videos of several segments): each gets its clustering verdict
    clustering = [a for a in page.attrs if "clustering" in a.get("class", "").split() and a["_tag"] == "p"]
    assert sorted(a["data-run"] for a in clustering) == ["synth-seed0", "synth-seed1"]
    assert all(int(a["data-changes"]) >= 0 for a in clustering)
    assert "no video column" not in html
    # bold agreement per column: one row per concept, the count of seeds agreeing in 0..2
    rows = [r for r in page.tables["bold-agreement"] if "data-concept" in r]
    assert len(rows) == 7 and all(0 <= int(r["data-agree"]) <= 2 for r in rows)


def test_survival_spearman_and_clustering_changes_equal_independent_numbers(tmp_path: Path) -> None:
    made = [seed_run(tmp_path / "runs", seed, n=80) for seed in (0, 1, 2)]
    videos = np.repeat([f"vid{k}" for k in range(8)], 10)
    runs = [add_videos(path, videos) for path, _ in made]
    arrays = [a for _, a in made]
    index = run_report(runs, out=tmp_path / "report", gallery_random=0)
    page = parse(index)
    html = index.read_text(encoding="utf-8")
    # survival by numpy: single-seed CLT verdicts vs the between-seed t interval
    t = sps.t.ppf(0.975, 2)
    total = kept = 0
    for quantity in ("r", "pr"):
        singles = [single_verdicts(a[quantity], 1 / 7) for a in arrays]
        means = np.stack([s[0] for s in singles])
        m, s = means.mean(axis=0), means.std(axis=0, ddof=1)
        pooled = np.where(m - t * s / math.sqrt(3) > 1 / 7, "above", np.where(m + t * s / math.sqrt(3) < 1 / 7, "below", ""))
        for _, verdict, _ in singles:
            total += int((verdict != "").sum())
            kept += int(((verdict != "") & (verdict == pooled)).sum())
    line = next(a for a in page.attrs if "survival" in a.get("class", "").split() and a["_tag"] == "p")
    assert (int(line["data-kept"]), int(line["data-total"])) == (kept, total)
    # Spearman matrix of r̄ by scipy
    spearman = [r for r in page.tables["spearman"] if r["cells"] and r["cells"][0].startswith("seed")]
    for a, row in enumerate(spearman):
        for b, text in enumerate(row["cells"][1:]):
            rho = 1.0 if a == b else sps.spearmanr(arrays[a]["r"].mean(axis=0).ravel(), arrays[b]["r"].mean(axis=0).ravel()).statistic
            assert float(text) == pytest.approx(rho, abs=0.005)
    # where clustering by video changes a verdict, by statsmodels
    codes = np.repeat(np.arange(8), 10)
    for run, a in zip(runs, arrays):
        changes = 0
        for quantity in ("r", "pr"):
            _, plain, _ = single_verdicts(a[quantity], 1 / 7)
            for i in range(F):
                for j in range(7):
                    fit = sm.OLS(a[quantity][:, i, j], np.ones((80, 1))).fit(cov_type="cluster", cov_kwds={"groups": codes})
                    low, high = fit.conf_int(0.05)[0]
                    clustered = "above" if low > 1 / 7 else ("below" if high < 1 / 7 else "")
                    changes += clustered != plain[i, j]
        line = next(x for x in page.attrs if "clustering" in x.get("class", "").split() and x.get("data-run") == run.name)
        assert int(line["data-changes"]) == changes
    assert "videos" in html and Z975 > 0
