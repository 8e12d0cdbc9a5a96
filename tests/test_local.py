"""Tests of interp.local: per-sample heatmap of p·r, contributions, pages, sample choice (issue 5).

Golden values come from the numpy arrays the runs are built from, or from the parquet rows read directly,
never from the code under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from interp.cli import main
from interp.errors import InterpError
from interp.local import (
    SampleExplanation,
    explain_sample,
    explain_samples,
    plot_sample,
    random_samples,
    render_local_fragment,
    run_local,
    safe_filename,
    top_samples,
    write_local_page,
)
from interp.runwriter import RunBatch, write_run
from interp.schema import FEATURES

SENTIMENT = tuple(str(c) for c in range(-3, 4))
EMOTIONS = ("happy", "sad", "angry", "fear", "disgust", "surprise")
SCRIPT_ID = "<script>alert(1)</script>"
EVIL_ID = "../../evil"


def _arrays(n: int, n_concepts: int, seed: int) -> dict[str, np.ndarray]:
    """p, r, contributions and logits = contributions summed over features (the model's identity)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 1.0, size=(n, len(FEATURES))).astype(np.float32)
    r = rng.dirichlet(np.full(n_concepts, 0.7), size=(n, len(FEATURES))).astype(np.float32)
    contributions = rng.normal(0.0, 0.6, size=(n, len(FEATURES), n_concepts)).astype(np.float32)
    logits = contributions.astype(np.float64).sum(axis=1).astype(np.float32)
    return {"p": p, "r": r, "contributions": contributions, "logits": logits}


def _ids(n: int) -> list[str]:
    ids = [f"video_{i:02d}[1]" for i in range(n - 2)]
    return ids + [SCRIPT_ID, EVIL_ID]


def _sentiment_run(path: Path, n: int = 12, seed: int = 0, ids: list[str] | None = None,
                   batch: int = 4) -> tuple[Path, dict[str, np.ndarray], list[str]]:
    """A sentiment run of n samples written in batches of ``batch`` (one row group each)."""
    arrays = _arrays(n, len(SENTIMENT), seed)
    ids = ids if ids is not None else _ids(n)
    rng = np.random.default_rng(seed + 1)
    targets = rng.integers(0, len(SENTIMENT), size=n)
    scores = (targets - 3 + rng.uniform(-0.4, 0.4, size=n)).astype(np.float32)
    batches = [
        RunBatch(
            sample_ids=ids[s : s + batch],
            split="test",
            rows=np.arange(s, min(s + batch, n)),
            targets=targets[s : s + batch],
            logits=arrays["logits"][s : s + batch],
            p=arrays["p"][s : s + batch],
            r=arrays["r"][s : s + batch],
            contributions=arrays["contributions"][s : s + batch],
            scores=scores[s : s + batch],
            transcripts=[f"utterance number {i} was rather good" for i in range(s, min(s + batch, n))],
        )
        for s in range(0, n, batch)
    ]
    run = write_run(path, task="sentiment", concepts=SENTIMENT, batches=batches, meta={}, row_group_rows=1)
    arrays["targets"] = targets
    arrays["scores"] = scores
    return run, arrays, ids


@pytest.fixture()
def run(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray], list[str]]:
    return _sentiment_run(tmp_path / "runs" / "mosi-test")


def _routing_rows(run_path: Path, sample_id: str) -> pd.DataFrame:
    table = pq.read_table(run_path / "routing.parquet").to_pandas()
    rows = table[table["sample_id"] == sample_id].copy()
    rows["feature"] = rows["feature"].astype(str)
    rows["concept"] = rows["concept"].astype(str)
    return rows


def _pivot(rows: pd.DataFrame, column: str, concepts: tuple[str, ...]) -> np.ndarray:
    return rows.pivot(index="feature", columns="concept", values=column).loc[list(FEATURES), list(concepts)].to_numpy()


def _samples(run_path: Path) -> pd.DataFrame:
    return pq.read_table(run_path / "samples.parquet").to_pandas().set_index("sample_id")


def _axes(fig: object, label: str) -> object:
    matches = [ax for ax in fig.axes if ax.get_label() == label]  # type: ignore[attr-defined]
    assert len(matches) == 1, [ax.get_label() for ax in fig.axes]  # type: ignore[attr-defined]
    return matches[0]


# ----------------------------------------------------------------------------------------- values of one sample


def test_matrices_are_the_parquet_rows(run: tuple[Path, dict[str, np.ndarray], list[str]]) -> None:
    run_path, arrays, ids = run
    sample_id = ids[5]  # in the second row group
    e = explain_sample(run_path, sample_id)
    rows = _routing_rows(run_path, sample_id)
    assert len(rows) == len(FEATURES) * len(SENTIMENT)
    np.testing.assert_array_equal(e.pr, _pivot(rows, "pr", SENTIMENT))
    np.testing.assert_array_equal(e.r, _pivot(rows, "r", SENTIMENT))
    np.testing.assert_array_equal(e.contributions, _pivot(rows, "contribution", SENTIMENT))
    # And against the arrays the run was built from.
    np.testing.assert_allclose(e.pr, arrays["p"][5][:, None] * arrays["r"][5], rtol=1e-6)
    np.testing.assert_allclose(e.p, arrays["p"][5], rtol=1e-7)
    samples = _samples(run_path)
    assert e.label == samples.loc[sample_id, "label"] == SENTIMENT[arrays["targets"][5]]
    assert e.pred == SENTIMENT[int(np.argmax(arrays["logits"][5]))]
    assert e.concept == e.label  # default: the true label, as in the paper
    assert e.score == pytest.approx(float(arrays["scores"][5]))
    assert e.transcript == "utterance number 5 was rather good"
    assert e.probabilities["0"] == pytest.approx(float(samples.loc[sample_id, "prob_0"]))
    assert e.split == "test" and e.row == 5


def test_heatmap_draws_the_runs_values(run: tuple[Path, dict[str, np.ndarray], list[str]]) -> None:
    run_path, arrays, ids = run
    sample_id = ids[2]
    fig = plot_sample(explain_sample(run_path, sample_id))
    heatmap = _axes(fig, "heatmap")
    drawn = np.asarray(heatmap.images[0].get_array())
    np.testing.assert_array_equal(drawn, _pivot(_routing_rows(run_path, sample_id), "pr", SENTIMENT))
    # Every cell carries its value as text.
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in heatmap.texts}
    golden = arrays["p"][2][:, None] * arrays["r"][2]
    for i in range(len(FEATURES)):
        for j in range(len(SENTIMENT)):
            assert texts[(i, j)] == f"{golden[i, j]:.2f}"
    # The outlined column is the true label's.
    true_j = int(arrays["targets"][2])
    outline = [patch for patch in heatmap.patches if patch.get_gid() == "chosen-concept"]
    assert len(outline) == 1
    assert outline[0].get_x() == pytest.approx(true_j - 0.5)
    assert outline[0].get_height() == pytest.approx(len(FEATURES))
    # Diverging blue-to-red map with a colour bar labelled p·r.
    assert heatmap.images[0].get_cmap().name == "RdBu_r"
    assert any("p·r" in ax.get_ylabel() for ax in fig.axes)
    assert sample_id in fig._suptitle.get_text()  # type: ignore[attr-defined]


@pytest.mark.parametrize("concept", ["true", "pred", "2"])
def test_contribution_bars_sum_to_the_stored_logit(
    run: tuple[Path, dict[str, np.ndarray], list[str]], concept: str
) -> None:
    run_path, arrays, ids = run
    samples = _samples(run_path)
    for index in (0, 7, 11):
        sample_id = ids[index]
        e = explain_sample(run_path, sample_id, concept=concept)
        golden_concept = {
            "true": SENTIMENT[arrays["targets"][index]],
            "pred": SENTIMENT[int(np.argmax(arrays["logits"][index]))],
            "2": "2",
        }[concept]
        assert e.concept == golden_concept
        bars = _axes(plot_sample(e), "contributions")
        widths = np.array([patch.get_width() for patch in bars.containers[0]])
        assert len(widths) == len(FEATURES)
        stored_logit = float(samples.loc[sample_id, f"logit_{golden_concept}"])
        assert widths.sum() == pytest.approx(stored_logit, abs=1e-4)
        # The bars are the parquet contributions of that column, sorted largest first (top to bottom).
        j = SENTIMENT.index(golden_concept)
        golden = np.sort(arrays["contributions"][index][:, j])[::-1]
        ys = np.array([patch.get_y() for patch in bars.containers[0]])
        np.testing.assert_allclose(widths[np.argsort(-ys)], golden, rtol=1e-6)


def test_concept_choice_for_multi_label_tasks(tmp_path: Path) -> None:
    n = 4
    arrays = _arrays(n, len(EMOTIONS), seed=3)
    targets = np.zeros((n, len(EMOTIONS)), dtype=np.float32)
    targets[0, [1, 4]] = 1  # two true labels
    targets[1, 2] = 1  # one true label
    # sample 2 has no true label
    targets[3, [0, 1, 2, 3, 4, 5]] = 1
    batch = RunBatch(sample_ids=[f"s{i}" for i in range(n)], split="test", rows=np.arange(n), targets=targets,
                     logits=arrays["logits"], p=arrays["p"], r=arrays["r"], contributions=arrays["contributions"])
    run_path = write_run(tmp_path / "emo", task="emotion", concepts=EMOTIONS, batches=[batch], meta={})
    logits = arrays["logits"].astype(np.float64)
    masked = np.where(targets > 0, logits, -np.inf)
    explanations = explain_samples(run_path, ["s0", "s1", "s2"], concept="true")
    assert explanations[0].concept == EMOTIONS[int(np.argmax(masked[0]))]
    assert explanations[0].concept in ("sad", "disgust")
    assert explanations[1].concept == "angry"
    assert explanations[2].concept == EMOTIONS[int(np.argmax(logits[2]))]  # none true: the strongest concept
    assert explain_sample(run_path, "s3", concept="pred").concept == EMOTIONS[int(np.argmax(logits[3]))]
    assert explain_sample(run_path, "s3", concept="fear").concept == "fear"
    with pytest.raises(InterpError, match="happy, sad, angry"):
        explain_sample(run_path, "s3", concept="joy")
    fig = plot_sample(explanations[0])
    assert len(_axes(fig, "heatmap").images[0].get_array()[0]) == len(EMOTIONS)


# ---------------------------------------------------------------------------------------------- pages and CLI


def test_cli_local_writes_page_and_figures(run: tuple[Path, dict[str, np.ndarray], list[str]], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    run_path, _, ids = run
    out = tmp_path / "pages"
    code = main(["local", "--run", str(run_path), "--sample-id", ids[0], "--sample-id", ids[3], "--out", str(out)])
    assert code == 0
    for sample_id in (ids[0], ids[3]):
        stem = safe_filename(sample_id)
        html = (out / f"{stem}.html").read_text(encoding="utf-8")
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (out / f"{stem}.svg").read_bytes()[:2000]
        assert 'src="data:image/png;base64,' in html  # the page works offline as one file
        assert html.lstrip().startswith("<!DOCTYPE html>")
        assert f"utterance number {ids.index(sample_id)} was rather good" in html
    assert str(out / f"{safe_filename(ids[0])}.html") in capsys.readouterr().out


def test_default_output_folder(run: tuple[Path, dict[str, np.ndarray], list[str]], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    run_path, _, ids = run
    monkeypatch.chdir(tmp_path)
    [result] = run_local(run=run_path, sample_ids=[ids[1]])
    assert result.html_path.resolve().parent == (tmp_path / "reports" / "mosi-test" / "local").resolve()
    assert result.html_path.is_file() and result.png_path.is_file() and result.svg_path.is_file()


def test_default_run_is_the_latest(run: tuple[Path, dict[str, np.ndarray], list[str]], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, ids = run
    monkeypatch.chdir(tmp_path)
    assert main(["local", "--sample-id", ids[1]]) == 0
    assert (tmp_path / "reports" / "mosi-test" / "local" / f"{safe_filename(ids[1])}.html").is_file()


def test_unknown_id_exits_2_with_close_matches(run: tuple[Path, dict[str, np.ndarray], list[str]],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    run_path, _, _ = run
    code = main(["local", "--run", str(run_path), "--sample-id", "video_03[2]"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "video_03[2]" in err and "closest ids" in err
    assert "video_03[1]" in err
    with pytest.raises(InterpError, match="video_04"):
        explain_sample(run_path, "video_04")


def test_script_id_is_escaped(run: tuple[Path, dict[str, np.ndarray], list[str]], tmp_path: Path) -> None:
    run_path, _, _ = run
    [result] = run_local(run=run_path, sample_ids=[SCRIPT_ID], out=tmp_path / "out")
    html = result.html_path.read_text(encoding="utf-8")
    assert SCRIPT_ID not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html
    fragment = render_local_fragment(explain_sample(run_path, SCRIPT_ID))
    assert SCRIPT_ID not in fragment and "&lt;script&gt;" in fragment
    assert fragment.lstrip().startswith("<section") and "<html" not in fragment


def test_path_traversal_id_stays_in_the_out_folder(run: tuple[Path, dict[str, np.ndarray], list[str]],
                                                   tmp_path: Path) -> None:
    run_path, _, _ = run
    out = tmp_path / "a" / "b" / "out"
    [result] = run_local(run=run_path, sample_ids=[EVIL_ID], out=out)
    for path in (result.html_path, result.png_path, result.svg_path):
        assert path.resolve().parent == out.resolve()
        assert path.is_file()
    assert result.sample_id == EVIL_ID
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*evil*")}
    assert all(p.parts[:3] == ("a", "b", "out") for p in written), written


def test_safe_filename() -> None:
    assert safe_filename("video_01") == "video_01"
    assert "/" not in safe_filename(EVIL_ID) and not safe_filename(EVIL_ID).startswith(".")
    assert safe_filename("a/b") != safe_filename("a_b")
    assert safe_filename("a/b") != safe_filename("a?b")
    assert safe_filename("") and safe_filename("...")
    assert len(safe_filename("x" * 1000)) < 120


# ------------------------------------------------------------------------------------------- choosing samples


def _golden_top(arrays: dict[str, np.ndarray], ids: list[str], k: int, feature: str, concept: str,
                by: str) -> list[str]:
    i, j = FEATURES.index(feature), SENTIMENT.index(concept)
    pr = arrays["p"][:, i] * arrays["r"][:, i, j]
    values = pr if by == "pr" else arrays["contributions"][:, i, j]
    return [ids[s] for s in np.argsort(-values, kind="stable")[:k]]


@pytest.mark.parametrize("by", ["pr", "contribution"])
def test_top_returns_the_largest_cells(tmp_path: Path, by: str) -> None:
    run_path, arrays, ids = _sentiment_run(tmp_path / "big", n=30, seed=5, batch=4)
    assert pq.ParquetFile(run_path / "routing.parquet").metadata.num_row_groups > 1
    golden = _golden_top(arrays, ids, 5, "ta", "2", by)
    ranked = top_samples(run_path, 5, "ta", "2", by=by)
    assert [sample_id for sample_id, _ in ranked] == golden
    if by == "pr":  # the CLI path once (pages are the slow part)
        results = run_local(run=run_path, top=2, feature="ta", concept="2", by=by, out=tmp_path / "out")
        assert [r.sample_id for r in results] == golden[:2]
        assert all(r.concept == "2" for r in results)
    # K larger than the run: every sample, still ranked.
    assert [s for s, _ in top_samples(run_path, 100, "ta", "2", by=by)] == _golden_top(arrays, ids, 30, "ta", "2", by)


def test_top_on_a_planted_cell(tmp_path: Path) -> None:
    """Samples 3, 8 and 1 have by far the largest p·r in cell (av, -3)."""
    run_path, _, ids = _sentiment_run(tmp_path / "plain", n=10, seed=2)
    # Rewrite the run with planted values.
    arrays = _arrays(10, len(SENTIMENT), seed=2)
    arrays["r"][:, FEATURES.index("av"), 0] = 0.01
    arrays["p"][:, FEATURES.index("av")] = 0.5
    for rank, sample in enumerate((3, 8, 1)):
        arrays["p"][sample, FEATURES.index("av")] = 1.0
        arrays["r"][sample, FEATURES.index("av"), 0] = 0.9 - 0.1 * rank
    batch = RunBatch(sample_ids=ids, split="test", rows=np.arange(10), targets=np.zeros(10, dtype=int),
                     logits=arrays["logits"], p=arrays["p"], r=arrays["r"], contributions=arrays["contributions"])
    planted = write_run(tmp_path / "planted", task="sentiment", concepts=SENTIMENT, batches=[batch], meta={})
    assert [s for s, _ in top_samples(planted, 3, "av", "-3")] == [ids[3], ids[8], ids[1]]


def test_top_needs_feature_and_named_concept(run: tuple[Path, dict[str, np.ndarray], list[str]],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run_path, _, _ = run
    assert main(["local", "--run", str(run_path), "--top", "3", "--concept", "2"]) == 2
    assert "--feature" in capsys.readouterr().err
    assert main(["local", "--run", str(run_path), "--top", "3", "--feature", "ta"]) == 2  # concept defaults to true
    assert "concept" in capsys.readouterr().err
    assert main(["local", "--run", str(run_path), "--top", "3", "--feature", "xy", "--concept", "2"]) == 2
    assert "unknown feature" in capsys.readouterr().err
    assert main(["local", "--run", str(run_path)]) == 2
    assert "--sample-id" in capsys.readouterr().err


def test_random_is_reproducible(run: tuple[Path, dict[str, np.ndarray], list[str]], tmp_path: Path) -> None:
    run_path, _, ids = run
    first = random_samples(run_path, 4, seed=7)
    assert first == random_samples(run_path, 4, seed=7)
    assert len(set(first)) == 4 and set(first) <= set(ids)
    golden = [ids[i] for i in np.random.default_rng(7).permutation(len(ids))[:4]]
    assert first == golden
    assert random_samples(run_path, 5, seed=7)[:4] == first
    assert sorted(random_samples(run_path, 100, seed=1)) == sorted(ids)
    results = run_local(run=run_path, random=2, seed=7, out=tmp_path / "out")
    assert [r.sample_id for r in results] == first[:2]


# ------------------------------------------------------------------------------------------------ sharded runs


def test_sharded_run(tmp_path: Path) -> None:
    """A distributed extraction's shards are read like one table (explain and --top)."""
    ids = [f"clip{i}" for i in range(16)]
    first, arrays_a, _ = _sentiment_run(tmp_path / "a", n=8, seed=11, ids=ids[:8])
    second, arrays_b, _ = _sentiment_run(tmp_path / "b", n=8, seed=12, ids=ids[8:])
    sharded = tmp_path / "runs" / "sharded"
    sharded.mkdir(parents=True)
    for rank, source in enumerate((first, second)):
        shutil.copy(source / "routing.parquet", sharded / f"routing-rank{rank}.parquet")
        shutil.copy(source / "samples.parquet", sharded / f"samples-rank{rank}.parquet")
    meta = json.loads((first / "meta.json").read_text())
    (sharded / "meta.json").write_text(json.dumps(meta))
    e = explain_sample(sharded, "clip12")
    np.testing.assert_allclose(e.pr, arrays_b["p"][4][:, None] * arrays_b["r"][4], rtol=1e-6)
    merged = {key: np.concatenate([arrays_a[key], arrays_b[key]]) for key in ("p", "r", "contributions")}
    assert [s for s, _ in top_samples(sharded, 4, "tav", "-1")] == _golden_top(merged, ids, 4, "tav", "-1", "pr")


def test_write_local_page_writes_the_figure_and_the_page(run: tuple[Path, dict[str, np.ndarray], list[str]],
                                                          tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    from PIL import Image

    run_path, _, ids = run
    result = write_local_page(explain_sample(run_path, SCRIPT_ID), tmp_path / "o")
    assert result.sample_id == SCRIPT_ID
    assert {p.name for p in (tmp_path / "o").iterdir()} == {
        f"{safe_filename(SCRIPT_ID)}.{ext}" for ext in ("html", "png", "svg")}
    assert (result.html_path, result.png_path, result.svg_path) == tuple(
        tmp_path / "o" / f"{safe_filename(SCRIPT_ID)}.{ext}" for ext in ("html", "png", "svg"))
    with Image.open(result.png_path) as image:
        assert image.size[0] > 500 and image.size[1] > 300
    ET.parse(result.svg_path)  # well-formed XML although the id holds markup
    html = result.html_path.read_text(encoding="utf-8")
    assert "&lt;script&gt;" in html and SCRIPT_ID not in html


# ---------------------------------------------------------------------------- display pattern: compute, then draw


def test_from_run_computes_and_plot_draws_into_given_axes(run: tuple[Path, dict[str, np.ndarray], list[str]]) -> None:
    """SampleExplanation.from_run computes; .plot(ax=(heatmap, bars)) draws into a notebook's own figure."""
    from matplotlib.figure import Figure

    run_path, arrays, ids = run
    e = SampleExplanation.from_run(run_path, ids[3], concept="2")
    np.testing.assert_allclose(e.pr, arrays["p"][3][:, None] * arrays["r"][3], rtol=1e-6)
    figure = Figure()
    heat, bars, spare = figure.subplots(1, 3)
    assert e.plot(ax=(heat, bars)) is figure
    np.testing.assert_array_equal(np.asarray(heat.images[0].get_array()), e.pr)
    widths = np.array([patch.get_width() for patch in bars.containers[0]])
    assert widths.sum() == pytest.approx(float(arrays["logits"][3][SENTIMENT.index("2")]), abs=1e-4)
    assert not spare.images and not spare.patches  # nothing drawn outside the axes given


def test_compact_plot_is_the_thumbnail(run: tuple[Path, dict[str, np.ndarray], list[str]]) -> None:
    """compact=True: the same numbers, small (the report's gallery card), without title or colour bar."""
    run_path, arrays, ids = run
    e = explain_sample(run_path, ids[6])
    full, compact = e.plot(), e.plot(compact=True)
    assert len(compact.axes) == 2 and len(full.axes) == 3  # heatmap, bars (+ the colour bar of the full figure)
    assert compact._suptitle is None  # type: ignore[attr-defined]
    width, height = compact.get_size_inches()
    assert width < full.get_size_inches()[0] / 2 and height < full.get_size_inches()[1] / 2
    heatmap = _axes(compact, "heatmap")
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in heatmap.texts}
    golden = arrays["p"][6][:, None] * arrays["r"][6]
    assert texts == {(i, j): f"{golden[i, j]:.2f}" for i in range(len(FEATURES)) for j in range(len(SENTIMENT))}
    outline = heatmap.patches[0]
    assert outline.get_x() == pytest.approx(SENTIMENT.index(e.concept) - 0.5)
    widths = np.array([patch.get_width() for patch in _axes(compact, "contributions").containers[0]])
    assert widths.sum() == pytest.approx(e.concept_logit, abs=1e-4)
