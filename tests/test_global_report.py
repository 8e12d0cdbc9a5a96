"""Tests of `interp global`: the files written, the HTML page (parsed), the paper layout, the CLI and formats.

Golden values come from numpy on the arrays the runs were built from, never from interp.stats.
"""

from __future__ import annotations

import json
import math
import os
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interp.cli import main
from interp.global_report import render_global_section, run_global
from interp.runwriter import RunBatch, write_run
from interp.schema import FEATURES, TASK_CONCEPTS

Z975 = 1.959963984540054
F = len(FEATURES)


# ------------------------------------------------------------------------------------------------- helpers


def make_run(out: Path, task: str, n: int, seed: int = 0, planted: bool = False) -> tuple[Path, dict[str, np.ndarray]]:
    """A run written with write_run; ``planted`` makes (ta, first concept) clearly the bold cell."""
    rng = np.random.default_rng(seed)
    concepts = TASK_CONCEPTS[task]
    J = len(concepts)
    scores = rng.normal(size=(n, F, J))
    if planted:
        scores[:, FEATURES.index("ta"), 0] += 3.0
    e = np.exp(scores)
    r = (e / e.sum(axis=2, keepdims=True)).astype(np.float32)
    p = rng.uniform(size=(n, F)).astype(np.float32)
    targets = rng.integers(0, J, size=n) if task == "sentiment" else (rng.uniform(size=(n, J)) < 0.4).astype(np.float32)
    batch = RunBatch(
        sample_ids=[f"id{k}" for k in range(n)],
        split="test",
        rows=np.arange(n),
        targets=targets,
        logits=rng.normal(size=(n, J)).astype(np.float32),
        p=p,
        r=r,
        contributions=rng.normal(size=(n, F, J)).astype(np.float32),
        scores=rng.normal(size=n).astype(np.float32) if task == "sentiment" else None,
    )
    path = write_run(out, task=task, concepts=concepts, batches=[batch], meta={})
    return path, {"r": r, "p": p, "pr": (p[:, :, None] * r).astype(np.float32), "targets": np.asarray(targets)}


def golden(values: np.ndarray) -> dict[str, np.ndarray]:
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[0]
    mean, std = x.mean(axis=0), x.std(axis=0, ddof=1)
    half = Z975 * std / math.sqrt(n)
    return {"mean": mean, "std": std, "low": mean - half, "high": mean + half, "n": np.full(mean.shape, n)}


class CellParser(HTMLParser):
    """Collects the <td> cells (with their data attributes and text) and <table> ids of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str]] = []
        self.tables: list[dict[str, str]] = []
        self.images: list[str] = []
        self._cell: dict[str, str] | None = None
        self._strong = False
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "td":
            self._cell = {**a, "_text": "", "_strong": ""}
        elif tag == "strong" and self._cell is not None:
            self._cell["_strong"] = "yes"
        elif tag == "table":
            self.tables.append({**a, "_table": str(len(self.tables))})
        elif tag == "img":
            self.images.append(a.get("src", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self._cell["_table"] = self.tables[-1].get("id", "")
            self.cells.append(self._cell)
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell["_text"] += data


def parse(html: str) -> CellParser:
    parser = CellParser()
    parser.feed(html)
    return parser


def grid(cells: list[dict[str, str]], table_id: str, field: str, columns: list[str]) -> np.ndarray:
    lookup = {(c["data-feature"], c["data-concept"]): c for c in cells if c["_table"] == table_id}
    return np.array([[float(lookup[(f, col)][f"data-{field}"]) for col in columns] for f in FEATURES])


# ------------------------------------------------------------------------------------------------- tests


def test_html_page_holds_the_three_tables_with_correct_numbers(tmp_path: Path) -> None:
    run, arrays = make_run(tmp_path / "runs" / "sent", "sentiment", 180, seed=1, planted=True)
    report = run_global([run], out=tmp_path / "out")
    assert report.html_path == tmp_path / "out" / "global.html"
    page = parse(report.html_path.read_text(encoding="utf-8"))
    ids = {t.get("id") for t in page.tables}
    assert {"global-r", "global-pr", "global-p"} <= ids
    concepts = list(TASK_CONCEPTS["sentiment"])
    for quantity, values, columns in (
        ("r", arrays["r"], concepts),
        ("pr", arrays["pr"], concepts),
        ("p", arrays["p"][:, :, None], ["all"]),
    ):
        expected = golden(values)
        for field in ("mean", "std", "low", "high"):
            np.testing.assert_allclose(grid(page.cells, f"global-{quantity}", field, columns), expected[field], rtol=0, atol=1e-12)
        assert (grid(page.cells, f"global-{quantity}", "n", columns) == 180).all()
    # The cell text is the (low, high) pair with 3 decimals; the planted cell is bold and marked.
    ta = next(c for c in page.cells if c["_table"] == "global-r" and c["data-feature"] == "ta" and c["data-concept"] == "-3")
    g = golden(arrays["r"][:, FEATURES.index("ta"), 0])
    assert ta["_text"].strip() == f"({g['low']:.3f}, {g['high']:.3f})"
    assert "bold" in ta["class"].split() and "sig-above" in ta["class"].split() and ta["_strong"] == "yes"
    bold_r = [(c["data-feature"], c["data-concept"]) for c in page.cells if c["_table"] == "global-r" and "bold" in c["class"].split()]
    assert ("ta", "-3") in bold_r
    # Every bold cell has the largest mean of its column and a low end above 1/7 (checked from the page).
    for feature, concept in bold_r:
        column = [c for c in page.cells if c["_table"] == "global-r" and c["data-concept"] == concept]
        top = max(column, key=lambda c: float(c["data-mean"]))
        assert top["data-feature"] == feature and float(top["data-low"]) > 1 / 7
    # A heatmap (inline PNG) and a methods paragraph with n, formula and baseline; no external resources.
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    text = " ".join(page.text)
    assert "n = 180" in text and "1/J = 1/7 = 0.143" in text and "z·s/√n" in text and "95%" in text
    html = report.html_path.read_text(encoding="utf-8")
    assert '<section id="global"' in html and "<style>" in html and "http://" not in html and "https://" not in html


def test_files_are_machine_readable_and_match_numpy(tmp_path: Path) -> None:
    run, arrays = make_run(tmp_path / "sent", "sentiment", 90, seed=2, planted=True)
    report = run_global(run, out=tmp_path / "out", heatmaps=False)
    out = tmp_path / "out"
    for name in ("global.json", "global_cells.csv", "global.html"):
        assert (out / name).is_file()
    for quantity in ("r", "pr", "p"):
        for ext in ("csv", "json", "md", "tex"):
            assert (out / f"global_{quantity}.{ext}").is_file()
    frame = pd.read_csv(out / "global_r.csv", dtype={"concept": str})
    expected = golden(arrays["r"])
    for field in ("mean", "std", "low", "high"):
        got = frame.pivot(index="feature", columns="concept", values=field).reindex(index=list(FEATURES), columns=list(TASK_CONCEPTS["sentiment"]))
        np.testing.assert_allclose(got.to_numpy(), expected[field], rtol=0, atol=1e-12)
    assert {"mean", "std", "n", "low", "high", "significant", "bold", "p_value"} <= set(frame.columns)
    document = json.loads((out / "global_pr.json").read_text())
    assert document["level"] == 0.95 and document["interval"] == "clt" and document["group"] == "all"
    assert document["baseline"] == pytest.approx(1 / 7)
    cell = next(c for c in document["cells"] if c["feature"] == "t" and c["concept"] == "0")
    g = golden(arrays["pr"][:, 0, 3])
    assert cell["mean"] == pytest.approx(g["mean"], abs=1e-12) and cell["n"] == 90
    assert cell["significant"] in ("above", "below", "") and isinstance(cell["bold"], bool)
    assert report.files["html"] == out / "global.html"


def test_markdown_and_latex_mark_the_bold_cell(tmp_path: Path) -> None:
    run, arrays = make_run(tmp_path / "sent", "sentiment", 120, seed=3, planted=True)
    run_global(run, out=tmp_path / "out", heatmaps=False)
    g = golden(arrays["r"][:, FEATURES.index("ta"), 0])
    cell = f"({g['low']:.3f}, {g['high']:.3f})"
    markdown = (tmp_path / "out" / "global_r.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in markdown.splitlines() if line.startswith("| ") and "feature" not in line}
    assert rows["ta"][0] == f"**{cell}**"
    assert list(rows) == list(FEATURES)
    latex = (tmp_path / "out" / "global_r.tex").read_text(encoding="utf-8")
    ta_line = next(line for line in latex.splitlines() if line.startswith("ta &"))
    assert ta_line.split(" & ")[1] == rf"\textbf{{{cell}}}"
    assert r"\begin{tabular}" in latex and r"\toprule" in latex and "%" not in latex.replace(r"\%", "")


def test_two_tasks_are_laid_out_as_tables_3_to_7(tmp_path: Path) -> None:
    sentiment, s_arrays = make_run(tmp_path / "sent", "sentiment", 70, seed=4)
    emotion, e_arrays = make_run(tmp_path / "emo", "emotion", 60, seed=5)
    report = run_global([emotion, sentiment], out=tmp_path / "out", heatmaps=False)
    page = parse(report.html_path.read_text(encoding="utf-8"))
    numbers = [t.get("data-paper-table") for t in page.tables]
    assert numbers == ["3", "4", "5", "6", "7"]
    table3 = [c for c in page.cells if c["_table"] == "global-table3"]
    assert len(table3) == F * (7 + 6)
    emotion_cells = [c for c in table3 if c["data-task"] == "emotion"]
    np.testing.assert_allclose(grid(emotion_cells, "global-table3", "mean", list(TASK_CONCEPTS["emotion"])),
                               golden(e_arrays["r"])["mean"], atol=1e-12)
    table5 = [c for c in page.cells if c["_table"] == "global-table5"]
    assert {c["data-task"] for c in table5} == {"emotion"} and {c["data-quantity"] for c in table5} == {"pr"}
    np.testing.assert_allclose(grid(page.cells, "global-table6", "high", ["all"]), golden(s_arrays["p"][:, :, None])["high"], atol=1e-12)
    for k in range(3, 8):
        assert (tmp_path / "out" / f"table{k}.tex").is_file() and (tmp_path / "out" / f"table{k}.md").is_file()
    assert (tmp_path / "out" / "sent" / "global_r.csv").is_file() and (tmp_path / "out" / "emo" / "global_p.json").is_file()
    terminal = report.render_terminal(color=False)
    assert "Table 3" in terminal and "Table 7" in terminal and "\x1b[" not in terminal


def test_cli_global_writes_files_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, arrays = make_run(tmp_path / "sent", "sentiment", 40, seed=6, planted=True)
    code = main(["global", "--run", str(run), "--out", str(tmp_path / "out"), "--group", "label", "--correction", "holm"])
    assert code == 0
    printed = capsys.readouterr().out
    own = arrays["targets"] == 0  # --group label: column -3 holds the samples labelled -3 (Holm leaves intervals as they are)
    g = golden(arrays["r"][own, FEATURES.index("ta"), 0])
    ta_line = next(line for line in printed.splitlines() if line.strip("│ ").startswith("ta "))
    assert f"({g['low']:.3f}, {g['high']:.3f})" in ta_line
    assert f"global report written to {tmp_path / 'out' / 'global.html'}" in printed and "nan" not in printed.lower()
    assert (tmp_path / "out" / "global.html").is_file() and (tmp_path / "out" / "global_r.tex").is_file()
    assert json.loads((tmp_path / "out" / "global.json").read_text())["correction"] == "holm"


def test_cli_missing_run_or_bad_split_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["global", "--run", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    run, _ = make_run(tmp_path / "sent", "sentiment", 10)
    assert main(["global", "--run", str(run), "--split", "train", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "train" in err and "test" in err and err.count("\n") == 1


def test_cli_defaults_to_the_most_recent_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["global"]) == 2  # no run yet: a clear error
    old, _ = make_run(tmp_path / "runs" / "old", "sentiment", 20, seed=1)
    new, _ = make_run(tmp_path / "runs" / "new", "sentiment", 20, seed=2)
    past = time.time() - 100
    os.utime(old / "meta.json", (past, past))
    assert main(["global"]) == 0
    assert (tmp_path / "reports" / "new" / "global.html").is_file()
    assert not (tmp_path / "reports" / "old").exists()


def test_single_sample_run_prints_a_message_not_a_nan_table(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path / "one", "sentiment", 1)
    report = run_global(run, out=tmp_path / "out", heatmaps=False)
    terminal = report.render_terminal(color=False)
    assert "n=1" in terminal and "warning" in terminal and "nan" not in terminal.lower()
    page = parse(report.html_path.read_text(encoding="utf-8"))
    assert {c["_text"].strip() for c in page.cells} == {"n=1"}
    assert "n=1" in " ".join(page.text) and "Warning" in " ".join(page.text)
    document = json.loads((tmp_path / "out" / "global.json").read_text())
    assert document["cells"][0]["low"] is None and document["cells"][0]["n"] == 1


def test_page_is_autoescaped_and_section_is_reusable(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path / "<b>x&y", "sentiment", 15)
    report = run_global(run, out=tmp_path / "out", heatmaps=False)
    html = report.html_path.read_text(encoding="utf-8")
    assert "<b>x&y" not in html and "&lt;b&gt;x&amp;y" in html
    fragment = render_global_section(report.results, heatmaps=False)
    assert fragment.lstrip().startswith('<section id="global"') and "<html" not in fragment
    assert len(parse(fragment).cells) == len(parse(html).cells)
