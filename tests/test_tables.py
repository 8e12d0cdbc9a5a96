"""The one table model (interp.tables.IntervalTable): every format shows the same cells with the same marks.

Golden intervals and verdicts come from numpy on the arrays the runs were built from (mean ± z·s/√n, the paper's
eq. 4; above/below when the interval lies wholly above/below 1/J; bold = largest mean of the column and above).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interp.runwriter import RunBatch, write_run
from interp.schema import FEATURES, TASK_CONCEPTS
from interp.stats import compute_global_stats
from interp.stats_outputs import to_csv
from interp.tables import IntervalTable, layout_tables

Z975 = 1.959963984540054


def make_run(out: Path, task: str, n: int, seed: int) -> tuple[Path, np.ndarray]:
    """A run whose r has (ta, first concept) clearly above 1/J and bold, (tav, first concept) above but not bold,
    and (t, first concept) clearly below."""
    rng = np.random.default_rng(seed)
    concepts = TASK_CONCEPTS[task]
    J, F = len(concepts), len(FEATURES)
    scores = rng.normal(size=(n, F, J))
    scores[:, FEATURES.index("ta"), 0] += 3.0
    scores[:, FEATURES.index("tav"), 0] += 2.0  # above, but not the column's largest mean: not bold
    scores[:, FEATURES.index("t"), 0] -= 3.0
    e = np.exp(scores)
    r = (e / e.sum(axis=2, keepdims=True)).astype(np.float32)
    targets = rng.integers(0, J, size=n) if task == "sentiment" else (rng.uniform(size=(n, J)) < 0.4).astype(np.float32)
    batch = RunBatch(sample_ids=[f"id{k}" for k in range(n)], split="test", rows=np.arange(n), targets=targets,
                     logits=rng.normal(size=(n, J)).astype(np.float32), p=rng.uniform(size=(n, F)).astype(np.float32),
                     r=r, contributions=rng.normal(size=(n, F, J)).astype(np.float32),
                     scores=rng.normal(size=n).astype(np.float32) if task == "sentiment" else None)
    return write_run(out, task=task, concepts=concepts, batches=[batch], meta={}), r


def expected_cells(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(text (F, J), verdict (F, J) "above"/"below"/"", bold (F, J)) by numpy."""
    x = r.astype(np.float64)
    n, J = x.shape[0], x.shape[2]
    mean, half = x.mean(axis=0), Z975 * x.std(axis=0, ddof=1) / np.sqrt(n)
    low, high = mean - half, mean + half
    text = np.vectorize(lambda lo, hi: f"({lo:.3f}, {hi:.3f})")(low, high)
    verdict = np.where(low > 1 / J, "above", np.where(high < 1 / J, "below", ""))
    bold = (mean == mean.max(axis=0, keepdims=True)) & (verdict == "above")
    return text, verdict, bold


def test_every_format_marks_the_same_cells(tmp_path: Path) -> None:
    run, r = make_run(tmp_path / "sent", "sentiment", 150, seed=1)
    table = IntervalTable.from_stats(compute_global_stats(run), "r")
    text, verdict, bold = expected_cells(r)
    assert bold[FEATURES.index("ta"), 0] and verdict[FEATURES.index("t"), 0] == "below"
    assert verdict[FEATURES.index("tav"), 0] == "above" and not bold[FEATURES.index("tav"), 0]  # carries ⁺

    plain = table.as_frame()
    np.testing.assert_array_equal(plain.to_numpy(), text)
    assert list(plain.index) == list(FEATURES) and list(plain.columns) == list(TASK_CONCEPTS["sentiment"])

    suffix = {"above": "⁺", "below": "⁻", "": ""}
    want_md = np.where(bold, "**" + text + "**", text + np.vectorize(suffix.get)(verdict))
    markdown = table.as_markdown()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in markdown.splitlines() if line.startswith("| ") and "feature" not in line}
    np.testing.assert_array_equal(np.array([rows[f] for f in FEATURES]), want_md)
    np.testing.assert_array_equal(table.as_frame(marks=True, style="markdown").to_numpy(), want_md)

    latex_suffix = {"above": "$^{+}$", "below": "$^{-}$", "": ""}
    want_tex = np.where(bold, "\\textbf{" + text + "}", text + np.vectorize(latex_suffix.get)(verdict))
    lines = {line.split(" & ")[0]: line.removesuffix(r" \\").split(" & ")[1:]
             for line in table.as_latex().splitlines() if " & " in line and not line.startswith("feature")}
    np.testing.assert_array_equal(np.array([lines[f] for f in FEATURES]), want_tex)

    view = table.as_html()
    html_suffix = {"above": "+", "below": "−", "": ""}
    for i, row in enumerate(view["rows"]):
        assert row["feature"] == FEATURES[i]
        for j, cell in enumerate(row["cells"]):
            assert cell["text"] == text[i, j] and cell["bold"] == bold[i, j]
            assert cell["mark"] == ("" if bold[i, j] else html_suffix[verdict[i, j]])
            assert ("bold" in cell["classes"].split()) == bold[i, j]
            assert float(cell["mean"]) == pytest.approx(r[:, i, j].astype(np.float64).mean(), abs=1e-12)

    terminal = table.as_text()
    ta_line = next(line for line in terminal.splitlines() if line.strip("│ ").startswith("ta "))
    assert f"**{text[FEATURES.index('ta'), 0]}**" in ta_line
    t_line = next(line for line in terminal.splitlines() if line.strip("│ ").startswith("t "))
    assert f"{text[0, 0]}⁻" in t_line


def test_table_3_puts_two_runs_side_by_side(tmp_path: Path) -> None:
    sentiment, r_s = make_run(tmp_path / "sent", "sentiment", 80, seed=2)
    emotion, r_e = make_run(tmp_path / "emo", "emotion", 60, seed=3)
    results = [compute_global_stats(emotion), compute_global_stats(sentiment)]
    spec = next(s for s in layout_tables(results) if s.number == 3)
    table = IntervalTable.from_spec(spec)
    frame = table.as_frame()
    want_columns = [f"sentiment {c}" for c in TASK_CONCEPTS["sentiment"]] + [f"emotion {c}" for c in TASK_CONCEPTS["emotion"]]
    assert list(frame.columns) == want_columns
    np.testing.assert_array_equal(frame.to_numpy(), np.concatenate([expected_cells(r_s)[0], expected_cells(r_e)[0]], axis=1))
    assert [len(part.as_frame().columns) for part in table.parts()] == [7, 6]
    stacked = pd.read_csv(io.StringIO(table.as_csv()), dtype={"concept": str})
    by_run = [pd.read_csv(io.StringIO(to_csv(stats, "r")), dtype={"concept": str}) for stats in (results[1], results[0])]
    pd.testing.assert_frame_equal(stacked, pd.concat(by_run, ignore_index=True))
    assert len(stacked) == len(FEATURES) * 13
    view = table.as_html()
    assert view["grouped"] and [g["span"] for g in view["groups"]] == [7, 6]
    assert [g["label"] for g in view["groups"]] == ["sentiment", "emotion"]
