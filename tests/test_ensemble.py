"""Seed ensembles (`interp global --run A --run B ...`): pooled statistics against numpy/scipy by hand.

Runs are written by hand with write_run, each with its own training seed in meta.json; golden values are the
seed means computed with numpy from the arrays the runs were built from, and scipy's t quantile.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from interp.cli import main
from interp.ensemble import bold_agreement, pool_seeds, seed_spearman, verdict_survival
from interp.global_report import run_global
from interp.runwriter import RunBatch, write_run
from interp.schema import FEATURES, TASK_CONCEPTS
from interp.stats import StatsOptions, compute_global_stats

F = len(FEATURES)
Z975 = 1.959963984540054


def seed_run(root: Path, seed: int, task: str = "sentiment", n: int = 80, data: str = "d" * 64,
             split: str = "test", strength: float = 1.0) -> tuple[Path, dict[str, np.ndarray]]:
    """A run of a model 'trained with seed ``seed``': ta routes to the first concept with a seed-dependent strength."""
    rng = np.random.default_rng(100 + seed)
    concepts = TASK_CONCEPTS[task]
    J = len(concepts)
    scores = rng.normal(size=(n, F, J))
    scores[:, FEATURES.index("ta"), 0] += strength * (1.5 + 0.1 * seed)
    scores[:, FEATURES.index("v"), 1] += 0.3 * (seed - 1)  # flips between seeds
    r = (np.exp(scores) / np.exp(scores).sum(axis=2, keepdims=True)).astype(np.float32)
    p = rng.uniform(size=(n, F)).astype(np.float32)
    targets = rng.integers(0, J, size=n) if task == "sentiment" else (rng.uniform(size=(n, J)) < 0.4).astype(np.float32)
    batch = RunBatch(sample_ids=[f"v{k // 4}_{k % 4}" for k in range(n)], split=split, rows=np.arange(n), targets=targets,
                     logits=rng.normal(size=(n, J)).astype(np.float32), p=p, r=r,
                     contributions=rng.normal(size=(n, F, J)).astype(np.float32),
                     scores=rng.normal(size=n).astype(np.float32) if task == "sentiment" else None)
    meta = {"data_sha256": data, "split": split, "train": {"seed": seed}, "checkpoint_sha256": f"{seed:064d}"}
    path = write_run(root / f"{task}-seed{seed}-{data[:4]}", task=task, concepts=concepts, batches=[batch], meta=meta)
    return path, {"r": r.astype(np.float64), "pr": (p[:, :, None] * r).astype(np.float32).astype(np.float64), "p": p.astype(np.float64)}


def single_verdicts(values: np.ndarray, baseline: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(means, verdicts, bold) of one run's (n, 7, J) values by numpy: 95% CLT, the paper's bold rule."""
    mean, std = values.mean(axis=0), values.std(axis=0, ddof=1)
    half = Z975 * std / math.sqrt(len(values))
    verdict = np.where(mean - half > baseline, "above", np.where(mean + half < baseline, "below", ""))
    bold = (mean == mean.max(axis=0, keepdims=True)) & (verdict == "above")
    return mean, verdict, bold


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[dict[str, np.ndarray]]]:
    root = tmp_path_factory.mktemp("seeds")
    made = [seed_run(root, seed) for seed in (0, 1, 2)]
    return [m[0] for m in made], [m[1] for m in made]


def grid(stats, quantity: str, field: str) -> np.ndarray:
    return stats.values(quantity, field).to_numpy(dtype=np.float64)


def test_ensemble_mean_t_interval_and_prediction_interval_equal_numpy(three_seeds, tmp_path: Path) -> None:
    runs, arrays = three_seeds
    report = run_global(runs, out=tmp_path / "out", heatmaps=False)
    assert len(report.results) == 1 and report.notes == []
    ensemble = report.results[0]
    assert ensemble.kind == "seeds" and ensemble.units == 3 and ensemble.name == "sentiment-seeds-0-1-2"
    K, t = 3, sps.t.ppf(0.975, 2)
    for quantity in ("r", "pr"):
        singles = [single_verdicts(a[quantity], 1 / 7) for a in arrays]
        means = np.stack([s[0] for s in singles])
        m, s = means.mean(axis=0), means.std(axis=0, ddof=1)
        np.testing.assert_allclose(grid(ensemble, quantity, "mean"), m, rtol=0, atol=1e-12)
        np.testing.assert_allclose(grid(ensemble, quantity, "std"), s, rtol=0, atol=1e-12)
        np.testing.assert_allclose(grid(ensemble, quantity, "low"), m - t * s / math.sqrt(K), rtol=0, atol=1e-12)
        np.testing.assert_allclose(grid(ensemble, quantity, "high"), m + t * s / math.sqrt(K), rtol=0, atol=1e-12)
        np.testing.assert_allclose(grid(ensemble, quantity, "pi_low"), m - t * s * math.sqrt(1 + 1 / K), rtol=0, atol=1e-12)
        np.testing.assert_allclose(grid(ensemble, quantity, "pi_high"), m + t * s * math.sqrt(1 + 1 / K), rtol=0, atol=1e-12)
        assert (grid(ensemble, quantity, "n") == 3).all()
        # p-value of the between-seed t test, as scipy computes it
        _, p_value = sps.ttest_1samp(means, 1 / 7, axis=0)
        np.testing.assert_allclose(grid(ensemble, quantity, "p_value"), p_value, rtol=1e-9)
        # verdicts only where the ensemble interval excludes 1/J
        low, high = m - t * s / math.sqrt(K), m + t * s / math.sqrt(K)
        expected = np.where(low > 1 / 7, "above", np.where(high < 1 / 7, "below", ""))
        np.testing.assert_array_equal(ensemble.values(quantity, "significant").to_numpy(), expected)
        # bold by the paper's rule on the ensemble means; the per-seed counts
        bold = (m == m.max(axis=0, keepdims=True)) & (expected == "above")
        np.testing.assert_array_equal(ensemble.values(quantity, "bold").to_numpy(dtype=bool), bold)
        np.testing.assert_array_equal(grid(ensemble, quantity, "bold_seeds"), sum(s_[2].astype(int) for s_ in singles))
        np.testing.assert_array_equal(grid(ensemble, quantity, "agree_seeds"), sum((s_[1] == expected).astype(int) for s_ in singles))
    # p: intervals over seeds, no verdict
    p_cells = ensemble.quantity_cells("p")
    assert (p_cells["significant"] == "").all() and not p_cells["bold"].any() and p_cells["p_value"].isna().all()
    seed_means = np.stack([a["p"].mean(axis=0) for a in arrays])
    np.testing.assert_allclose(p_cells["mean"], seed_means.mean(axis=0), rtol=0, atol=1e-12)


def test_survival_spearman_and_bold_agreement_by_hand(three_seeds) -> None:
    runs, arrays = three_seeds
    ensemble = pool_seeds([compute_global_stats(run) for run in runs])
    survival = verdict_survival(ensemble)
    expected_total, expected_kept = 0, 0
    pooled = {q: ensemble.values(q, "significant").to_numpy() for q in ("r", "pr")}
    for a in arrays:
        for q in ("r", "pr"):
            _, verdict, _ = single_verdicts(a[q], 1 / 7)
            expected_total += int((verdict != "").sum())
            expected_kept += int(((verdict != "") & (verdict == pooled[q])).sum())
    assert len(survival) == expected_total and int(survival["kept"].sum()) == expected_kept
    matrix = seed_spearman(ensemble)
    for a in range(3):
        for b in range(3):
            rho = sps.spearmanr(arrays[a]["r"].mean(axis=0).ravel(), arrays[b]["r"].mean(axis=0).ravel()).statistic
            assert matrix.iloc[a, b] == pytest.approx(rho if a != b else 1.0, abs=1e-12)
    agreement = bold_agreement(ensemble)
    assert list(agreement["concept"]) == list(TASK_CONCEPTS["sentiment"])
    first = agreement.iloc[0]
    assert first["ensemble"] == "ta" and first["agree"] == 3  # the planted cell is bold in every seed


def test_runs_that_do_not_match_are_shown_side_by_side_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = seed_run(tmp_path, 0)
    b, _ = seed_run(tmp_path, 1, data="e" * 64)
    report = run_global([a, b], out=tmp_path / "out", heatmaps=False)
    assert [s.kind for s in report.results] == ["samples", "samples"]
    assert report.notes and "different data" in report.notes[0]
    assert "different data" in (tmp_path / "out" / "global.html").read_text(encoding="utf-8")
    assert "not pooled" in report.render_terminal(color=False)


@pytest.mark.parametrize("other", [dict(data="e" * 64), dict(task="emotion"), dict(split="valid")])
def test_ensemble_refuses_runs_of_other_data_task_or_split(tmp_path: Path, other: dict, capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = seed_run(tmp_path, 0)
    b, _ = seed_run(tmp_path, 1)
    c, _ = seed_run(tmp_path, 2, **other)
    out = tmp_path / "out"
    assert main(["global", "--run", str(a), "--run", str(b), "--run", str(c), "--ensemble", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("interp: error: ") and err.count("\n") == 1 and "pool" in err
    assert not out.exists()


def test_ensemble_of_one_seed_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = seed_run(tmp_path, 0)
    assert main(["global", "--run", str(a), "--ensemble", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "needs runs of at least 2 seeds" in err and err.count("\n") == 1 and not (tmp_path / "out").exists()
    b, _ = seed_run(tmp_path, 0, data="e" * 64)  # a second run, but of other data: still one seed per pool
    assert main(["global", "--run", str(a), "--run", str(b), "--ensemble", "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_ensemble_files_name_the_interval_kind_and_k(three_seeds, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs, _ = three_seeds
    out = tmp_path / "out"
    assert main(["global", *sum((["--run", str(r)] for r in runs), []), "--ensemble", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "over seeds" in printed and "K = 3" in printed
    frame = pd.read_csv(out / "global_r.csv", dtype={"concept": str})
    assert {"pi_low", "pi_high", "bold_seeds", "agree_seeds"} <= set(frame.columns)
    assert set(frame["kind"]) == {"seeds"} and set(frame["units"]) == {3} and set(frame["interval_kind"]) == {"t"}
    document = json.loads((out / "global.json").read_text())
    assert document["kind"] == "seeds" and document["seeds"] == [0, 1, 2] and len(document["members"]) == 3
    markdown = (out / "global_r.md").read_text(encoding="utf-8")
    assert "interval over seeds, K=3" in markdown and "between-seed Student t" in markdown
    latex = (out / "global_r.tex").read_text(encoding="utf-8")
    assert "interval over seeds, K=3" in latex
    html = (out / "global.html").read_text(encoding="utf-8")
    assert 'data-kind="seeds"' in html and "data-pi-low" in html and "bold 3/3" in html


def test_two_tasks_of_two_seeds_give_ensemble_tables_3_to_7(tmp_path: Path) -> None:
    runs = [seed_run(tmp_path, seed, task=task, n=40)[0] for task in ("sentiment", "emotion") for seed in (3, 4)]
    report = run_global(runs, out=tmp_path / "out", heatmaps=False, ensemble=True)
    assert [(s.task, s.kind, s.units) for s in report.results] == [("sentiment", "seeds", 2), ("emotion", "seeds", 2)]
    for k in range(3, 8):
        assert (tmp_path / "out" / f"table{k}.md").is_file()
    assert "over seeds" in (tmp_path / "out" / "table3.md").read_text(encoding="utf-8")
