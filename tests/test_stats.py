"""Tests of interp.stats: intervals against independent numpy, streaming over shards and row groups, groups,
splits, the bold rule, multiple-comparison corrections and edge cases.

Golden values are computed here with numpy (and scipy/statsmodels used directly), never with interp.stats.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import norm
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import DescrStatsW

from interp.errors import InterpError
from interp.runwriter import RunBatch, write_run
from interp.schema import FEATURES, TASK_CONCEPTS
from interp.stats import (
    CELL_COLUMNS,
    Moments,
    StatsOptions,
    compute_global_stats,
    mark_bold,
    significance,
)
from interp.stats_outputs import summary_text
from interp.tables import IntervalTable

#: z_{0.975} to full double precision. (The issue's 1.959964 is this rounded to 7 digits; it differs by 1.5e-8,
#: i.e. by 1.5e-8·s/√n in an interval end, so it is checked separately at that tolerance.)
Z975 = 1.959963984540054
F = len(FEATURES)


# ------------------------------------------------------------------------------------------------- helpers


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def make_arrays(task: str, n: int, seed: int = 0, splits: tuple[str, ...] = ("test",)) -> dict[str, np.ndarray]:
    """Random but realistic run contents (float32, as stored), with a few planted effects."""
    rng = np.random.default_rng(seed)
    concepts = TASK_CONCEPTS[task]
    J = len(concepts)
    scores = rng.normal(size=(n, F, J))
    scores[:, FEATURES.index("ta"), 0] += 1.5  # planted: ta routes to the first concept
    scores[:, FEATURES.index("v"), 1] += 1.0
    r = _softmax(scores).astype(np.float32)
    p = rng.uniform(size=(n, F)).astype(np.float32)
    logits = rng.normal(size=(n, J)).astype(np.float32)
    if task == "sentiment":
        targets = rng.integers(0, J, size=n)
        scores_y = (targets - 3 + rng.uniform(-0.4, 0.4, size=n)).astype(np.float32)
    else:
        targets = (rng.uniform(size=(n, J)) < 0.4).astype(np.float32)
        scores_y = None
    split = np.array([splits[k % len(splits)] for k in range(n)])
    return {
        "ids": np.array([f"s{k:05d}" for k in range(n)]),
        "split": split,
        "r": r,
        "p": p,
        "logits": logits,
        "targets": targets,
        "scores": scores_y,  # type: ignore[dict-item]
        "contributions": rng.normal(size=(n, F, J)).astype(np.float32),
    }


def write_arrays(out: Path, task: str, arrays: dict[str, np.ndarray], batch: int = 10_000, row_group_rows: int = 1 << 17) -> Path:
    """Write a run with write_run, ``batch`` samples per RunBatch."""
    n = len(arrays["ids"])
    batches = []
    for start in range(0, n, batch):
        sl = slice(start, min(n, start + batch))
        batches.append(
            RunBatch(
                sample_ids=list(arrays["ids"][sl]),
                split=list(arrays["split"][sl]),
                rows=np.arange(sl.start, sl.stop),
                targets=arrays["targets"][sl],
                logits=arrays["logits"][sl],
                p=arrays["p"][sl],
                r=arrays["r"][sl],
                contributions=arrays["contributions"][sl],
                scores=None if arrays["scores"] is None else arrays["scores"][sl],
            )
        )
    return write_run(out, task=task, concepts=TASK_CONCEPTS[task], batches=batches, meta={}, row_group_rows=row_group_rows)


def subset(arrays: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: (None if v is None else v[index]) for k, v in arrays.items()}


def shard_run(out: Path, task: str, arrays: dict[str, np.ndarray], cuts: list[int], tmp: Path) -> Path:
    """A run directory with samples-rank<k>/routing-rank<k> shards (rows split at ``cuts``)."""
    bounds = [0, *cuts, len(arrays["ids"])]
    out.mkdir(parents=True)
    for rank, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        part = write_arrays(tmp / f"part{rank}", task, subset(arrays, np.arange(a, b)), batch=7, row_group_rows=50)
        shutil.copy(part / "samples.parquet", out / f"samples-rank{rank}.parquet")
        shutil.copy(part / "routing.parquet", out / f"routing-rank{rank}.parquet")
    meta = json.loads((tmp / "part0" / "meta.json").read_text())
    meta["n"] = len(arrays["ids"])
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def golden(values: np.ndarray, z: float = Z975) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
    """mean, std (ddof 1), n, low, high over axis 0, in float64 from the stored float32 values."""
    x = np.asarray(values, dtype=np.float32).astype(np.float64)
    n = x.shape[0]
    mean = x.mean(axis=0)
    std = x.std(axis=0, ddof=1)
    half = z * std / math.sqrt(n)
    return mean, std, n, mean - half, mean + half


def cell_grid(stats, quantity: str, field: str) -> np.ndarray:
    return stats.values(quantity, field).to_numpy(dtype=np.float64)


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    arrays = make_arrays("sentiment", 257, seed=1, splits=("test", "valid", "test"))
    path = write_arrays(tmp_path_factory.mktemp("runs") / "sent", "sentiment", arrays, batch=40, row_group_rows=3000)
    return path, arrays


# ------------------------------------------------------------------------------------------------- intervals


def test_clt_intervals_equal_numpy(sentiment: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, arrays = sentiment
    stats = compute_global_stats(path)
    r = arrays["r"].astype(np.float64)
    pr = (arrays["p"][:, :, None] * arrays["r"]).astype(np.float32)  # stored as float32 by the writer
    for quantity, values in (("r", r), ("pr", pr), ("p", arrays["p"][:, :, None])):
        mean, std, n, low, high = golden(values)
        assert np.allclose(cell_grid(stats, quantity, "mean"), mean, rtol=0, atol=1e-12)
        assert np.allclose(cell_grid(stats, quantity, "std"), std, rtol=0, atol=1e-12)
        assert np.allclose(cell_grid(stats, quantity, "low"), low, rtol=0, atol=1e-12)
        assert np.allclose(cell_grid(stats, quantity, "high"), high, rtol=0, atol=1e-12)
        assert (cell_grid(stats, quantity, "n") == n).all()
        # The rounded constant, to the precision it carries.
        _, _, _, low7, high7 = golden(values, z=1.959964)
        assert np.allclose(cell_grid(stats, quantity, "low"), low7, rtol=0, atol=1e-8)
        assert np.allclose(cell_grid(stats, quantity, "high"), high7, rtol=0, atol=1e-8)
    assert list(stats.cells.columns) == list(CELL_COLUMNS)
    assert stats.values("r", "mean").index.tolist() == list(FEATURES)
    assert stats.values("r", "mean").columns.tolist() == list(TASK_CONCEPTS["sentiment"])
    assert stats.values("p", "mean").columns.tolist() == ["all"]
    assert stats.n_samples == 257


def test_clt_matches_statsmodels_descrstats(sentiment: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, arrays = sentiment
    stats = compute_global_stats(path, StatsOptions(level=0.9))
    x = arrays["r"][:, FEATURES.index("ta"), 0].astype(np.float64)
    low, high = DescrStatsW(x).zconfint_mean(alpha=0.1)
    cell = stats.cells.query("quantity == 'r' and feature == 'ta' and concept == '-3'").iloc[0]
    assert cell["low"] == pytest.approx(low, abs=1e-12)
    assert cell["high"] == pytest.approx(high, abs=1e-12)


def test_t_interval_matches_statsmodels(sentiment: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, arrays = sentiment
    stats = compute_global_stats(path, StatsOptions(interval="t"))
    for feature, j in (("t", 3), ("av", 6)):
        x = arrays["r"][:, FEATURES.index(feature), j].astype(np.float64)
        low, high = DescrStatsW(x).tconfint_mean(alpha=0.05)
        concept = TASK_CONCEPTS["sentiment"][j]
        cell = stats.cells.query("quantity == 'r' and feature == @feature and concept == @concept").iloc[0]
        assert cell["low"] == pytest.approx(low, abs=1e-12)
        assert cell["high"] == pytest.approx(high, abs=1e-12)
        assert cell["p_value"] == pytest.approx(DescrStatsW(x).ttest_mean(1 / 7)[1], abs=1e-12)


def test_bootstrap_is_seeded_near_clt_and_independent_of_sharding(tmp_path: Path, sentiment: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, arrays = sentiment
    options = StatsOptions(interval="bootstrap", bootstrap_samples=400, seed=3)
    first = compute_global_stats(path, options)
    again = compute_global_stats(path, options)
    pd.testing.assert_frame_equal(first.cells, again.cells)
    sharded = compute_global_stats(shard_run(tmp_path / "sharded", "sentiment", arrays, [100, 180], tmp_path), options)
    np.testing.assert_array_equal(cell_grid(first, "r", "low"), cell_grid(sharded, "r", "low"))
    clt = compute_global_stats(path)
    # Percentile bootstrap of a mean is close to the CLT interval for n = 257 (half widths ~0.02).
    assert np.allclose(cell_grid(first, "r", "low"), cell_grid(clt, "r", "low"), atol=0.01)
    assert np.allclose(cell_grid(first, "pr", "high"), cell_grid(clt, "pr", "high"), atol=0.01)
    other = compute_global_stats(path, StatsOptions(interval="bootstrap", bootstrap_samples=400, seed=4))
    assert not np.array_equal(cell_grid(first, "r", "low"), cell_grid(other, "r", "low"))


# ------------------------------------------------------------------------------------------------- streaming


def test_moments_merge_equals_numpy_whatever_the_partition() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(size=(5000, 2, 3)) * 1e-3 + 0.7  # small variance, large offset: the hard case
    mask = rng.uniform(size=(5000, 1, 3)) < 0.7
    merged = Moments.zeros((2, 3))
    for part in np.array_split(np.arange(5000), [1, 2, 17, 1000, 4999]):
        merged = merged.merge(Moments.of(values[part], mask[part]))
    for i in range(2):
        for j in range(3):
            x = values[mask[:, 0, j], i, j]
            assert merged.count[i, j] == len(x)
            assert merged.mean[i, j] == pytest.approx(x.mean(), abs=1e-14)
            assert merged.std[i, j] == pytest.approx(x.std(ddof=1), rel=1e-9)


def test_grouped_moments_pool_to_the_plain_ones() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(400, 5))
    groups = rng.integers(0, 9, size=400)
    grouped, plain = Moments.of(values, groups=groups, n_groups=9), Moments.of(values)
    for k in range(9):
        np.testing.assert_allclose(grouped.mean[k], values[groups == k].mean(axis=0), rtol=0, atol=1e-13)
    pooled = grouped.pooled()
    np.testing.assert_array_equal(pooled.count, plain.count)
    np.testing.assert_allclose(pooled.mean, plain.mean, rtol=0, atol=1e-13)
    np.testing.assert_allclose(pooled.m2, plain.m2, rtol=1e-12)


@pytest.mark.parametrize("options", [StatsOptions(), StatsOptions(group="label", split="test"), StatsOptions(group="pred")])
def test_same_numbers_from_one_file_and_from_shards_and_row_groups(tmp_path: Path, options: StatsOptions) -> None:
    arrays = make_arrays("sentiment", 203, seed=5, splits=("test", "valid"))
    one = write_arrays(tmp_path / "one", "sentiment", arrays, batch=10_000)
    groups = write_arrays(tmp_path / "groups", "sentiment", arrays, batch=9, row_group_rows=100)
    sharded = shard_run(tmp_path / "sharded", "sentiment", arrays, [1, 64, 150], tmp_path)
    assert pq.ParquetFile(one / "routing.parquet").num_row_groups == 1
    assert pq.ParquetFile(groups / "routing.parquet").num_row_groups > 10
    reference = compute_global_stats(one, options)
    for run, batch_samples in ((groups, 8192), (sharded, 8192), (one, 5), (groups, 13), (sharded, 1)):
        other = compute_global_stats(run, options, batch_samples=batch_samples)
        assert (other.cells["n"] == reference.cells["n"]).all()
        for field in ("mean", "std", "low", "high", "p_value"):
            np.testing.assert_allclose(other.cells[field], reference.cells[field], rtol=0, atol=1e-12)
        assert (other.cells["significant"] == reference.cells["significant"]).all()
        assert (other.cells["bold"] == reference.cells["bold"]).all()


def _rewrite_routing(path: Path, table: pa.Table, *, keep_metadata: bool, row_group_size: int) -> None:
    if not keep_metadata:
        table = table.replace_schema_metadata(None)
    pq.write_table(table, path, row_group_size=row_group_size)


def test_writer_records_the_sample_major_layout_and_compresses_floats_with_lz4(tmp_path: Path) -> None:
    from interp.runs import check_run
    from interp.runwriter import routing_schema

    run = write_arrays(tmp_path / "run", "emotion", make_arrays("emotion", 12, seed=3))
    parquet = pq.ParquetFile(run / "routing.parquet")
    metadata = parquet.metadata.metadata
    assert metadata[b"interp.layout"] == b"sample-major"
    assert json.loads(metadata[b"interp.features"]) == list(FEATURES)
    assert json.loads(metadata[b"interp.concepts"]) == list(TASK_CONCEPTS["emotion"])
    # Column names and types are unchanged; only the file's key-value metadata is new.
    assert parquet.schema_arrow.equals(routing_schema(), check_metadata=False)
    group = parquet.metadata.row_group(0)
    columns = {group.column(k).path_in_schema: group.column(k) for k in range(group.num_columns)}
    assert {name: columns[name].compression for name in ("p", "r", "pr", "contribution")} == dict.fromkeys(("p", "r", "pr", "contribution"), "LZ4")
    for name in ("sample_id", "feature", "concept"):
        assert columns[name].compression == "ZSTD" and "RLE_DICTIONARY" in columns[name].encodings
    check_run(run)
    # The rows really are in that layout: row k is cell k mod 7·J.
    table = pq.read_table(run / "routing.parquet")
    J = len(TASK_CONCEPTS["emotion"])
    cell = np.arange(table.num_rows) % (F * J)
    assert table.column("feature").to_pylist() == [FEATURES[k] for k in cell // J]
    assert table.column("concept").to_pylist() == [TASK_CONCEPTS["emotion"][k] for k in cell % J]


def test_row_groups_that_cut_samples_give_the_numpy_answer(tmp_path: Path) -> None:
    arrays = make_arrays("sentiment", 90, seed=11)
    run = write_arrays(tmp_path / "run", "sentiment", arrays, batch=10, row_group_rows=F * 7 * 20)
    path = run / "routing.parquet"
    table = pq.read_table(path)
    assert table.schema.metadata[b"interp.layout"] == b"sample-major"  # a rewrite from the table keeps it
    _rewrite_routing(path, table, keep_metadata=True, row_group_size=500)  # 500 is not a multiple of 49
    mean, _, _, low, _ = golden(arrays["r"])
    for options in (StatsOptions(), StatsOptions(group="label")):
        stats = compute_global_stats(run, options, batch_samples=7)
        if options.group == "all":
            assert np.allclose(cell_grid(stats, "r", "mean"), mean, rtol=0, atol=1e-12)
            assert np.allclose(cell_grid(stats, "r", "low"), low, rtol=0, atol=1e-12)
            assert (cell_grid(stats, "r", "n") == 90).all()


def _stale(run: Path, kind: str) -> None:
    """Make the routing table of ``run`` stale in one of several ways (all keep the column names and types)."""
    path = run / "routing.parquet"
    table = pq.read_table(path)
    per = F * 7
    if kind == "no-metadata":
        _rewrite_routing(path, table, keep_metadata=False, row_group_size=700)
    elif kind == "other-concepts":
        relabelled = table.replace_schema_metadata({**table.schema.metadata, b"interp.concepts": json.dumps(list(TASK_CONCEPTS["sentiment"][::-1])).encode()})
        _rewrite_routing(path, relabelled, keep_metadata=True, row_group_size=700)
    elif kind == "sample-order":
        order = np.concatenate([np.arange(s * per, (s + 1) * per) for s in np.random.default_rng(0).permutation(table.num_rows // per)])
        _rewrite_routing(path, table.take(pa.array(order)), keep_metadata=True, row_group_size=700)
    elif kind == "rows-dropped":
        keep = np.delete(np.arange(table.num_rows), [per * 4 + 3, per * 4 + 5, per * 9])
        _rewrite_routing(path, table.take(pa.array(keep)), keep_metadata=True, row_group_size=700)
    elif kind == "no-rows":
        _rewrite_routing(path, table.slice(0, 0), keep_metadata=True, row_group_size=700)
    else:
        r = table.column("r").to_numpy().copy()
        if kind == "doubled":
            r *= 2
        else:  # negative
            r[per * 6 + 2] = -0.25
        _rewrite_routing(path, table.set_column(table.schema.get_field_index("r"), table.schema.field("r"), pa.array(r, pa.float32())),
                         keep_metadata=True, row_group_size=700)


@pytest.mark.parametrize("kind, words", [
    ("no-metadata", ["sample-major", "extract the run again"]),
    ("other-concepts", ["sample-major", "extract the run again"]),
    ("sample-order", ["not in the order", "s00"]),
    ("rows-dropped", ["2937", "s00004"]),
    ("no-rows", ["has 0 rows", "s00000"]),
    ("doubled", ["do not sum to 1", "s00000"]),
    ("negative", ["negative", "s00006"]),
])
def test_a_stale_or_invalid_routing_table_is_a_run_error(tmp_path: Path, kind: str, words: list[str]) -> None:
    from interp.errors import RunError

    arrays = make_arrays("sentiment", 60, seed=7)
    run = write_arrays(tmp_path / "run", "sentiment", arrays, batch=10, row_group_rows=F * 7 * 8)
    _stale(run, kind)
    for options in (StatsOptions(), StatsOptions(group="label", split="test")):
        with pytest.raises(RunError) as error:
            compute_global_stats(run, options)
        message = str(error.value)
        assert "routing.parquet" in message and "\n" not in message
        for word in words:
            assert word in message, message


@pytest.mark.parametrize("kind", ["doubled", "negative", "rows-dropped", "no-rows", "no-metadata"])
def test_cli_global_on_an_invalid_run_exits_2_with_one_line(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    from interp.cli import main

    run = write_arrays(tmp_path / "run", "sentiment", make_arrays("sentiment", 30, seed=2))
    _stale(run, kind)
    assert main(["global", "--run", str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("interp: error: ") and err.count("\n") == 1 and "routing.parquet" in err
    assert not (tmp_path / "out").exists()


def test_moments_of_columns_equal_numpy() -> None:
    rng = np.random.default_rng(4)
    values = (rng.uniform(size=(300, 5)) * 1e-3 + 0.7).astype(np.float32)
    mask = rng.uniform(size=values.shape) < 0.6
    values[~mask & (rng.uniform(size=values.shape) < 0.3)] = np.nan  # left out by the mask
    whole, masked = Moments.of(values), Moments.of(values, mask)
    for k in range(5):
        x, kept = values[:, k].astype(np.float64), values[mask[:, k], k].astype(np.float64)
        assert masked.count[k] == len(kept)
        assert masked.mean[k] == pytest.approx(kept.mean(), abs=1e-14)
        assert masked.std[k] == pytest.approx(kept.std(ddof=1), rel=1e-9)
        if np.isfinite(x).all():
            assert whole.mean[k] == pytest.approx(x.mean(), abs=1e-14) and whole.std[k] == pytest.approx(x.std(ddof=1), rel=1e-9)


# ------------------------------------------------------------------------------------------------- groups and splits


def test_group_label_uses_only_samples_of_that_label(sentiment: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, arrays = sentiment
    stats = compute_global_stats(path, StatsOptions(group="label"))
    pr = (arrays["p"][:, :, None] * arrays["r"]).astype(np.float32)
    for j, concept in enumerate(TASK_CONCEPTS["sentiment"]):
        members = arrays["targets"] == j
        assert stats.column_n[concept] == members.sum()
        for quantity, values in (("r", arrays["r"][members, :, j]), ("pr", pr[members, :, j]), ("p", arrays["p"][members])):
            mean, std, n, low, high = golden(values)
            assert np.allclose(cell_grid(stats, quantity, "mean")[:, j], mean, atol=1e-12)
            assert np.allclose(cell_grid(stats, quantity, "std")[:, j], std, atol=1e-12)
            assert np.allclose(cell_grid(stats, quantity, "low")[:, j], low, atol=1e-12)
            assert np.allclose(cell_grid(stats, quantity, "high")[:, j], high, atol=1e-12)
            assert (cell_grid(stats, quantity, "n")[:, j] == n).all()
    assert stats.values("p", "mean").columns.tolist() == list(TASK_CONCEPTS["sentiment"])


def test_group_pred_and_split_and_multilabel(tmp_path: Path) -> None:
    arrays = make_arrays("emotion", 150, seed=2, splits=("test", "valid"))
    run = write_arrays(tmp_path / "emo", "emotion", arrays, batch=16, row_group_rows=700)
    stats = compute_global_stats(run, StatsOptions(group="pred", split="valid"))
    valid = arrays["split"] == "valid"
    predicted = arrays["logits"] > 0  # multi-label: pred_<c> is logit > 0
    for j in range(6):
        members = valid & predicted[:, j]
        mean, std, n, low, high = golden(arrays["r"][members, :, j])
        assert np.allclose(cell_grid(stats, "r", "mean")[:, j], mean, atol=1e-12)
        assert np.allclose(cell_grid(stats, "r", "high")[:, j], high, atol=1e-12)
        assert (cell_grid(stats, "r", "n")[:, j] == n).all()
    assert stats.n_samples == valid.sum()
    only_test = compute_global_stats(run, StatsOptions(split="test"))
    mean, _, n, low, _ = golden(arrays["r"][~valid])
    assert np.allclose(cell_grid(only_test, "r", "low"), low, atol=1e-12)
    assert (cell_grid(only_test, "r", "n") == n).all()


def test_unknown_or_empty_split_is_a_clear_error(sentiment: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = sentiment
    with pytest.raises(InterpError) as error:
        compute_global_stats(path, StatsOptions(split="train"))
    message = str(error.value)
    assert "train" in message and "test" in message and "valid" in message and "\n" not in message


@pytest.mark.parametrize("bad", [dict(level=1.0), dict(group="both"), dict(interval="wald"), dict(correction="fdr")])
def test_bad_options_raise_interp_error(sentiment: tuple[Path, dict[str, np.ndarray]], bad: dict) -> None:
    path, _ = sentiment
    with pytest.raises(InterpError):
        compute_global_stats(path, StatsOptions(**bad))


# ------------------------------------------------------------------------------------------------- bold rule


def test_bold_rule_on_a_constructed_table() -> None:
    baseline = 0.2
    cells = pd.DataFrame(
        {
            "concept": ["A"] * 3 + ["B"] * 3 + ["C"] * 3,
            #            A: largest is significant     B: largest not significant   C: all below
            "mean": [0.50, 0.30, 0.10, 0.40, 0.25, 0.20, 0.10, 0.12, 0.05],
            "low": [0.45, 0.22, 0.05, 0.10, 0.21, 0.15, 0.05, 0.10, 0.01],
            "high": [0.55, 0.38, 0.15, 0.70, 0.29, 0.25, 0.15, 0.14, 0.09],
        }
    )
    cells["significant"] = significance(cells["low"], cells["high"], baseline)
    assert cells["significant"].tolist() == ["above", "above", "below", "", "above", "", "below", "below", "below"]
    assert mark_bold(cells).tolist() == [True, False, False, False, False, False, False, False, False]


def _planted_run(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """n = 12, J = 7 (baseline 1/7 ≈ 0.1429), r built cell by cell so the answer is known:
    column -3: ta = 0.5 ± 0.01 (bold); column -2: v alternates 0 / 0.6 (largest mean 0.3 but interval
    (0.12, 0.48) straddles 1/7: not significant) and a = 0.2 ± 0.001 (significant above, not largest): nothing
    bold; column -1: every feature 0.05 ± 0.01 (all below); other cells of columns -3 and -2 1/7 ± 0.01 (not
    significant). Columns 0..3 share the rest of each row equally, so that every row of r sums to 1."""
    n, J = 12, 7
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    r = np.full((n, F, J), 1 / 7) + 0.01 * sign[:, None, None]
    r[:, FEATURES.index("ta"), 0] = 0.5 + 0.01 * sign
    r[:, FEATURES.index("v"), 1] = np.where(sign > 0, 0.0, 0.6)
    r[:, FEATURES.index("a"), 1] = 0.2 + 0.001 * sign
    r[:, :, 2] = 0.05 + 0.01 * sign[:, None]
    r[:, :, 3:] = ((1.0 - r[:, :, :3].sum(axis=2)) / 4)[:, :, None]
    assert np.allclose(r.sum(axis=2), 1.0) and (r >= 0).all()
    arrays = make_arrays("sentiment", n, seed=0)
    arrays["r"] = r.astype(np.float32)
    arrays["p"] = np.full((n, F), 0.9, np.float32) + 0.05 * sign[:, None].astype(np.float32)
    return write_arrays(tmp_path / "planted", "sentiment", arrays), arrays["r"]


def test_bold_and_significance_on_a_planted_run(tmp_path: Path) -> None:
    run, r = _planted_run(tmp_path)
    stats = compute_global_stats(run)
    bold = stats.values("r", "bold").to_numpy(dtype=bool)
    significant = stats.values("r", "significant")
    expected_bold = np.zeros((F, 7), dtype=bool)
    expected_bold[FEATURES.index("ta"), 0] = True
    np.testing.assert_array_equal(bold[:, :3], expected_bold[:, :3])
    assert significant.loc["v", "-2"] == ""  # largest mean of its column, not significant
    assert significant.loc["a", "-2"] == "above"  # significant, not the largest: not bold
    assert (significant["-1"] == "below").all()
    assert not bold[:, 1].any() and not bold[:, 2].any()
    # Golden check of the interval that decides column -2.
    _, _, _, low, high = golden(r[:, FEATURES.index("v"), 1])
    assert low < 1 / 7 < high


# ------------------------------------------------------------------------------------------------- corrections


def test_holm_matches_statsmodels(sentiment: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, arrays = sentiment
    stats = compute_global_stats(path, StatsOptions(correction="holm"))
    plain = compute_global_stats(path)
    for quantity, values in (("r", arrays["r"]), ("pr", (arrays["p"][:, :, None] * arrays["r"]).astype(np.float32))):
        mean, std, n, _, _ = golden(values)
        p = 2 * norm.sf(np.abs((mean - 1 / 7) / (std / math.sqrt(n))))
        reject, adjusted, _, _ = multipletests(p.ravel(), alpha=0.05, method="holm")
        np.testing.assert_allclose(cell_grid(stats, quantity, "p_value").ravel(), p.ravel(), rtol=1e-9, atol=1e-300)
        np.testing.assert_allclose(cell_grid(stats, quantity, "p_adjusted").ravel(), adjusted, rtol=1e-9, atol=1e-300)
        flags = stats.values(quantity, "significant").to_numpy().ravel()
        np.testing.assert_array_equal(flags != "", reject)
        np.testing.assert_array_equal(flags[reject], np.where(mean.ravel() > 1 / 7, "above", "below")[reject])
        # Holm keeps the unadjusted intervals.
        np.testing.assert_array_equal(cell_grid(stats, quantity, "low"), cell_grid(plain, quantity, "low"))
    assert (stats.cells["significant"] != "").sum() < (plain.cells["significant"] != "").sum()


def test_bonferroni_widens_intervals_to_level_one_minus_alpha_over_m(sentiment: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, arrays = sentiment
    stats = compute_global_stats(path, StatsOptions(correction="bonferroni"))
    m = F * 7
    mean, std, n, low, high = golden(arrays["r"], z=norm.ppf(1 - 0.05 / (2 * m)))
    assert np.allclose(cell_grid(stats, "r", "low"), low, atol=1e-12)
    assert np.allclose(cell_grid(stats, "r", "high"), high, atol=1e-12)
    p = 2 * norm.sf(np.abs((mean - 1 / 7) / (std / math.sqrt(n))))
    reject, adjusted, _, _ = multipletests(p.ravel(), alpha=0.05, method="bonferroni")
    np.testing.assert_allclose(cell_grid(stats, "r", "p_adjusted").ravel(), adjusted, rtol=1e-9)
    np.testing.assert_array_equal(stats.values("r", "significant").to_numpy().ravel() != "", reject)


# ------------------------------------------------------------------------------------------------- edge cases


def test_single_sample_gives_no_interval_and_a_warning(tmp_path: Path) -> None:
    run = write_arrays(tmp_path / "one", "sentiment", make_arrays("sentiment", 1))
    stats = compute_global_stats(run)
    assert (stats.cells["n"] == 1).all()
    assert stats.cells["std"].isna().all() and stats.cells["low"].isna().all()
    assert (stats.cells["significant"] == "").all() and not stats.cells["bold"].any()
    assert any("n=1" in w for w in stats.warnings)
    table = IntervalTable.from_stats(stats, "r").as_frame()
    assert (table == "n=1").all().all()
    assert "nan" not in summary_text(stats).lower()


def test_constant_column_has_zero_width(tmp_path: Path) -> None:
    arrays = make_arrays("sentiment", 30, seed=4)
    arrays["r"][:, 0, :] = np.array([0.3] + [0.7 / 6] * 6, np.float32)  # constant rows that sum to 1
    arrays["r"][:, 1, :] = np.float32(1 / 7)
    stats = compute_global_stats(write_arrays(tmp_path / "const", "sentiment", arrays))
    cell = stats.cells.query("quantity == 'r' and feature == 't' and concept == '-3'").iloc[0]
    assert cell["std"] == 0 and cell["low"] == cell["high"] == pytest.approx(np.float32(0.3), abs=0)
    assert cell["significant"] == "above" and cell["p_value"] == 0.0
    flat = stats.cells.query("quantity == 'r' and feature == 'a' and concept == '-2'").iloc[0]
    assert flat["std"] == 0 and flat["p_value"] == (1.0 if float(np.float32(1 / 7)) == 1 / 7 else 0.0)
    assert IntervalTable.from_stats(stats, "r").as_frame().loc["t", "-3"] == "(0.300, 0.300)"
    assert not stats.cells[["mean", "low", "high"]].isna().any().any()


def test_empty_group_column_shows_n0(tmp_path: Path) -> None:
    arrays = make_arrays("sentiment", 40, seed=6)
    arrays["targets"] = np.where(arrays["targets"] == 0, 1, arrays["targets"])  # nobody has label -3
    stats = compute_global_stats(write_arrays(tmp_path / "gap", "sentiment", arrays), StatsOptions(group="label"))
    assert (IntervalTable.from_stats(stats, "r").as_frame()["-3"] == "n=0").all()
    assert stats.column_n["-3"] == 0
    assert any("-3" in w and "n=0" in w for w in stats.warnings)
    assert not stats.values("r", "bold")["-3"].any()


def test_nonfinite_values_are_left_out_with_a_warning(tmp_path: Path) -> None:
    arrays = make_arrays("sentiment", 25, seed=8)
    arrays["r"][3, 0, 0] = np.nan
    stats = compute_global_stats(write_arrays(tmp_path / "nan", "sentiment", arrays))
    mean, _, _, low, _ = golden(np.delete(arrays["r"][:, 0, 0], 3))
    cell = stats.cells.query("quantity == 'r' and feature == 't' and concept == '-3'").iloc[0]
    assert cell["n"] == 24 and cell["mean"] == pytest.approx(mean, abs=1e-12) and cell["low"] == pytest.approx(low, abs=1e-12)
    assert stats.nonfinite >= 1 and any("non-finite" in w for w in stats.warnings)
