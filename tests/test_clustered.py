"""Video-clustered intervals (`interp global --cluster video`) against statsmodels' cluster-robust OLS.

Runs are written with write_run and given a string ``video`` column by rewriting samples.parquet (the column
extraction writes); golden values come from statsmodels ``OLS(y, ones).fit(cov_type="cluster")``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import statsmodels.api as sm

from interp.schema import FEATURES, TASK_CONCEPTS
from interp.stats import StatsOptions, compute_global_stats

from test_stats import cell_grid, make_arrays, shard_run, write_arrays

F = len(FEATURES)


def add_videos(run: Path, videos: np.ndarray) -> Path:
    """Add a string ``video`` column to each samples table of ``run`` (rows in order, shards included)."""
    start = 0
    for path in sorted(run.glob("samples*.parquet")):
        table = pq.read_table(path)
        part = videos[start : start + table.num_rows]
        start += table.num_rows
        pq.write_table(table.append_column("video", pa.array([str(v) for v in part], pa.string())), path)
    return run


def random_videos(n: int, seed: int) -> np.ndarray:
    """Videos of 1 to 12 consecutive segments, as in MOSI (segments of one video are neighbours)."""
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(1, 13)))
    return np.repeat([f"video{k:03d}" for k in range(len(sizes))], sizes)[:n]


def statsmodels_interval(y: np.ndarray, groups: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float]:
    codes = pd.factorize(groups)[0]
    fit = sm.OLS(np.asarray(y, np.float64), np.ones((len(y), 1))).fit(cov_type="cluster", cov_kwds={"groups": codes})
    low, high = fit.conf_int(alpha=alpha)[0]
    return float(fit.params[0]), float(low), float(high)


@pytest.fixture(scope="module")
def clustered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray], np.ndarray]:
    arrays = make_arrays("sentiment", 230, seed=3)
    videos = random_videos(230, seed=1)
    run = add_videos(write_arrays(tmp_path_factory.mktemp("runs") / "clustered", "sentiment", arrays, batch=30, row_group_rows=2000), videos)
    return run, arrays, videos


def test_clustered_intervals_equal_statsmodels(clustered: tuple[Path, dict[str, np.ndarray], np.ndarray]) -> None:
    run, arrays, videos = clustered
    stats = compute_global_stats(run, StatsOptions(cluster="video", level=0.9))
    pr = (arrays["p"][:, :, None] * arrays["r"]).astype(np.float32)
    assert stats.kind == "videos" and stats.units == len(set(videos))
    for quantity, values in (("r", arrays["r"]), ("pr", pr), ("p", arrays["p"][:, :, None])):
        low, high = cell_grid(stats, quantity, "low"), cell_grid(stats, quantity, "high")
        for i in range(F):
            for j in range(values.shape[2]):
                mean, expected_low, expected_high = statsmodels_interval(values[:, i, j].astype(np.float64), videos, alpha=0.1)
                assert cell_grid(stats, quantity, "mean")[i, j] == pytest.approx(mean, abs=1e-12)
                assert low[i, j] == pytest.approx(expected_low, abs=1e-10)
                assert high[i, j] == pytest.approx(expected_high, abs=1e-10)
        assert (stats.quantity_cells(quantity)["kind"] == "videos").all()
        assert (stats.quantity_cells(quantity)["units"] == len(set(videos))).all()


def test_clustered_label_groups_use_the_members_videos(clustered: tuple[Path, dict[str, np.ndarray], np.ndarray]) -> None:
    run, arrays, videos = clustered
    stats = compute_global_stats(run, StatsOptions(cluster="video", group="label"))
    for j in (0, 3, 6):
        members = arrays["targets"] == j
        _, low, high = statsmodels_interval(arrays["r"][members, FEATURES.index("ta"), j], videos[members])
        concept = TASK_CONCEPTS["sentiment"][j]
        cell = stats.cells.query("quantity == 'r' and feature == 'ta' and concept == @concept").iloc[0]
        assert cell["low"] == pytest.approx(low, abs=1e-10) and cell["high"] == pytest.approx(high, abs=1e-10)
        assert cell["units"] == len(set(videos[members]))


def test_one_video_per_sample_gives_the_plain_clt_interval(tmp_path: Path) -> None:
    arrays = make_arrays("sentiment", 120, seed=4)
    run = add_videos(write_arrays(tmp_path / "run", "sentiment", arrays), np.array([f"v{k}" for k in range(120)]))
    clustered, plain = compute_global_stats(run, StatsOptions(cluster="video")), compute_global_stats(run)
    # statsmodels' small-sample factor G/(G-1) = n/(n-1) turns Σe²/n² into s²/n exactly.
    for field in ("mean", "se", "low", "high", "p_value"):
        np.testing.assert_allclose(clustered.cells[field], plain.cells[field], rtol=0, atol=1e-12)
    assert (clustered.cells["significant"] == plain.cells["significant"]).all()
    # Without the factor the clustered se would be sqrt((n-1)/n) times the plain one.
    y = arrays["r"][:, 0, 0].astype(np.float64)
    uncorrected = np.sqrt(((y - y.mean()) ** 2).sum()) / len(y)
    assert uncorrected == pytest.approx(plain.cells["se"].iloc[0] * np.sqrt(119 / 120), rel=1e-10)


def test_clustered_numbers_do_not_depend_on_shards_or_batches(tmp_path: Path) -> None:
    arrays = make_arrays("sentiment", 150, seed=6, splits=("test", "valid"))
    videos = random_videos(150, seed=2)
    one = add_videos(write_arrays(tmp_path / "one", "sentiment", arrays), videos)
    sharded = add_videos(shard_run(tmp_path / "sharded", "sentiment", arrays, [40, 41, 97], tmp_path), videos)
    for options in (StatsOptions(cluster="video"), StatsOptions(cluster="video", group="pred", split="test")):
        reference = compute_global_stats(one, options)
        for run, batch in ((sharded, 8192), (one, 7), (sharded, 3)):
            other = compute_global_stats(run, options, batch_samples=batch)
            for field in ("mean", "se", "low", "high"):
                np.testing.assert_allclose(other.cells[field], reference.cells[field], rtol=0, atol=1e-12)
            assert (other.cells["units"] == reference.cells["units"]).all()


def test_a_run_without_videos_still_works_and_says_why_not_clustered(tmp_path: Path) -> None:
    run = write_arrays(tmp_path / "old", "sentiment", make_arrays("sentiment", 40, seed=1))
    stats = compute_global_stats(run, StatsOptions(cluster="video"))
    assert stats.kind == "samples"
    assert any("no video column: clustering not possible, extract again" in w for w in stats.warnings)
    np.testing.assert_allclose(stats.cells["low"], compute_global_stats(run).cells["low"], rtol=0, atol=0)


def test_cli_global_cluster_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from interp.cli import main

    arrays = make_arrays("sentiment", 60, seed=8)
    run = add_videos(write_arrays(tmp_path / "run", "sentiment", arrays), random_videos(60, seed=3))
    assert main(["global", "--run", str(run), "--cluster", "video", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "videos" in printed
    document = json.loads((tmp_path / "out" / "global.json").read_text())
    assert document["cluster"] == "video" and document["kind"] == "videos"
    assert {c["kind"] for c in document["cells"]} == {"videos"}
    assert main(["global", "--run", str(run), "--cluster", "video", "--interval", "t", "--out", str(tmp_path / "o2")]) == 2
    assert "cluster" in capsys.readouterr().err
