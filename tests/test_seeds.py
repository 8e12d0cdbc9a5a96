"""Seed ensembles' raw material: `interp train --seeds`, extraction of several checkpoints, and each sample's video."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from interp.cli import main
from interp.data import load_dataset
from interp import extraction
from interp.errors import InterpError
from interp.extract import extract
from interp.extract_many import expand_checkpoints, extract_many
from interp.runreader import has_column
from interp.runs import check_run
from interp.seeds import format_seeds, parse_seeds, seed_checkpoint, train_seeds

TINY = dict(task="sentiment", epochs=2, batch_size=64, lr=1e-3, device="cpu", d_model=8, n_heads=2, n_layers=1,
            d_feature=8, d_concept=8)


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------------------------ --seeds text


@pytest.mark.parametrize(
    ("text", "seeds"),
    [("0-4", (0, 1, 2, 3, 4)), ("0,3,7", (0, 3, 7)), ("0-2, 9", (0, 1, 2, 9)), ("5", (5,)), ("10-11,2", (10, 11, 2))],
)
def test_parse_seeds(text: str, seeds: tuple[int, ...]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "1-", "-1", "4-0", "1,,2", "1,1", "0-3,2", "1.5", "0-100000"])
def test_parse_seeds_refuses_bad_text(text: str) -> None:
    with pytest.raises(InterpError) as info:
        parse_seeds(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["a", "4-0", "1,1", ""])
def test_cli_bad_seeds_exit_2_with_one_line(tmp_path: Path, synth_data: Path, text: str) -> None:
    code, out, err = _cli(["train", "--data", str(synth_data), "--out", str(tmp_path / "m.pt"), "--seeds", text])
    assert code == 2 and out == ""
    assert err.startswith("interp: error: argument --seeds") and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_cli_seed_and_seeds_together_exit_2(tmp_path: Path, synth_data: Path) -> None:
    code, _, err = _cli(["train", "--data", str(synth_data), "--out", str(tmp_path / "m.pt"), "--seeds", "0-1",
                         "--seed", "3"])
    assert code == 2 and err == "interp: error: pass --seed or --seeds, not both\n"


def test_seed_names() -> None:
    assert seed_checkpoint("models/model.pt", 3) == Path("models/model-seed3.pt")
    assert seed_checkpoint("m", 0) == Path("m-seed0.pt")
    assert format_seeds((0, 1, 2, 3, 7, 9, 10)) == "0-3,7,9-10"
    assert parse_seeds(format_seeds((0, 1, 2, 3, 7, 9, 10))) == (0, 1, 2, 3, 7, 9, 10)


# --------------------------------------------------------------------------------------------- training seeds


SEED_ARGS = ["--seeds", "0,2", "--epochs", "2", "--batch-size", "64", "--lr", "1e-3", "--device", "cpu", "--d-model", "8",
             "--n-heads", "2", "--n-layers", "1", "--d-feature", "8", "--d-concept", "8"]


@pytest.fixture(scope="module")
def seed_models(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`interp train --seeds 0,2` through the CLI on the session's synthetic data (tiny model, 2 epochs)."""
    out = tmp_path_factory.mktemp("seeds") / "model.pt"
    code, stdout, err = _cli(["train", "--data", str(synth_data), "--out", str(out), *SEED_ARGS])
    assert code == 0, err
    return out, stdout


def test_seeds_write_one_checkpoint_each_with_different_weights(seed_models: tuple[Path, str]) -> None:
    out, _ = seed_models
    files = sorted(p.name for p in out.parent.iterdir())
    assert files == ["model-seed0.eval-test.json", "model-seed0.pt", "model-seed2.eval-test.json", "model-seed2.pt"]
    states = []
    for seed in (0, 2):
        checkpoint = torch.load(out.parent / f"model-seed{seed}.pt", map_location="cpu", weights_only=True)
        assert checkpoint["train"]["seed"] == seed
        states.append(checkpoint["state_dict"])
    assert states[0].keys() == states[1].keys()
    differing = [k for k in states[0] if states[0][k].is_floating_point() and not torch.equal(states[0][k], states[1][k])]
    assert len(differing) > len(states[0]) // 2


def test_seeds_summary_table_matches_the_files(seed_models: tuple[Path, str]) -> None:
    out, stdout = seed_models
    lines = stdout.splitlines()
    assert lines[0].startswith("2 sentiment model(s), seeds 0,2")
    header = lines[1].split()
    assert header[:2] == ["seed", "best"] and "test" in header
    rows = {line.split()[0]: line.split() for line in lines[2:6]}
    assert set(rows) == {"0", "2", "mean", "sd"}
    # the last column is the test Pearson r; it must be each seed's eval-test.json value, and mean/sd over seeds
    corr = [json.loads((out.parent / f"model-seed{s}.eval-test.json").read_text())["metrics"]["corr"] for s in (0, 2)]
    assert [float(rows[s][-1]) for s in ("0", "2")] == pytest.approx(corr, abs=6e-5)
    assert float(rows["mean"][-1]) == pytest.approx(np.mean(corr), abs=6e-5)
    assert float(rows["sd"][-1]) == pytest.approx(np.std(corr, ddof=1), abs=6e-5)
    assert f"seed 2: {out.parent / 'model-seed2.pt'}" in stdout


def test_auto_engine_trains_the_seeds_at_once_into_the_models_of_one_by_one(
    seed_models: tuple[Path, str], synth_data: Path, tmp_path: Path
) -> None:
    """`--seeds` picks the vectorised engine by itself (no encoder dropout, no padding) and its models are the
    sequential engine's: same epochs, validation losses, selected epoch and test metrics, concept dropout on."""
    out, stdout = seed_models
    assert "(engine vectorised, chosen by auto: 2 seeds as one vectorised model on cpu" in stdout.splitlines()[0]
    code, one_by_one, err = _cli(["train", "--data", str(synth_data), "--out", str(tmp_path / "model.pt"), *SEED_ARGS,
                                  "--engine", "sequential"])
    assert code == 0, err
    assert "(engine sequential)" in one_by_one.splitlines()[0]
    for seed in (0, 2):
        together = torch.load(out.parent / f"model-seed{seed}.pt", weights_only=True)
        alone = torch.load(tmp_path / f"model-seed{seed}.pt", weights_only=True)
        assert together["config"]["concept_dropout"] == 0.5 and together["train"]["engine"].startswith("vectorised")
        assert together["train"]["best_epoch"] == alone["train"]["best_epoch"]
        for a, b in zip(alone["train"]["history"], together["train"]["history"], strict=True):
            assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
            assert b["valid_loss"] == pytest.approx(a["valid_loss"], abs=1e-5)
        tests = [json.loads((folder / f"model-seed{seed}.eval-test.json").read_text())["metrics"]
                 for folder in (tmp_path, out.parent)]
        assert tests[1] == pytest.approx(tests[0], abs=1e-4)


def test_choose_engine_says_why(synth_data: Path, tmp_path: Path) -> None:
    from interp.seeds import choose_engine

    dataset = load_dataset(synth_data)
    jobs = [(0, tmp_path / "m-seed0.pt"), (1, tmp_path / "m-seed1.pt")]
    assert choose_engine(dataset, jobs, {"device": "cpu"})[0] == "vectorised"
    assert choose_engine(dataset, jobs[:1], {}) == ("sequential", "one seed")
    name, reason = choose_engine(dataset, jobs, {"device": "cpu", "d_model": 200, "n_heads": 20})
    assert name == "sequential" and "d_model 200 on the CPU" in reason
    assert choose_engine(dataset, jobs, {"device": "cpu", "d_model": 64})[0] == "vectorised"  # the measured limit
    assert choose_engine(dataset, jobs, {"device": "cpu", "d_model": 128})[0] == "sequential"
    name, reason = choose_engine(dataset, jobs, {"attn_dropout": 0.1})
    assert name == "sequential" and "encoder dropout" in reason
    assert choose_engine(dataset, jobs, {"resume": True})[0] == "vectorised"  # nothing to resume yet
    jobs[1][1].write_bytes(b"")
    name, reason = choose_engine(dataset, jobs, {"resume": True})
    assert name == "sequential" and "--resume" in reason
    with pytest.raises(InterpError, match="--attn-dropout must be in"):
        choose_engine(dataset, jobs, {"attn_dropout": 1.5})


def test_cli_engine_refusals_are_one_line(seed_models: tuple[Path, str], synth_data: Path, tmp_path: Path) -> None:
    out, _ = seed_models
    before = (out.parent / "model-seed0.pt").read_bytes()
    code, _, err = _cli(["train", "--data", str(synth_data), "--out", str(out), *SEED_ARGS, "--engine", "vectorised",
                         "--resume"])
    assert code == 2 and err.count("\n") == 1 and "the vectorised engine cannot resume" in err
    assert (out.parent / "model-seed0.pt").read_bytes() == before
    code, _, err = _cli(["train", "--data", str(synth_data), "--out", str(tmp_path / "m.pt"), "--engine", "sequential"])
    assert code == 2 and err == "interp: error: --engine chooses how several seeds are trained; pass it with --seeds\n"
    assert not list(tmp_path.iterdir())


def test_train_seeds_library_same_seed_same_weights_and_pluggable_engine(synth_data: Path, tmp_path: Path) -> None:
    calls: list[list[int]] = []

    def recording_engine(dataset, jobs, options, progress):  # a stand-in for e.g. a vectorised engine
        from interp.seeds import sequential_engine

        calls.append([seed for seed, _ in jobs])
        return sequential_engine(dataset, jobs, options, progress)

    result = train_seeds(synth_data, tmp_path / "a" / "m.pt", "1", engine=recording_engine, evaluate_test=False,
                         progress=False, **TINY)
    again = train_seeds(synth_data, tmp_path / "b" / "m.pt", [1], progress=False, **TINY)
    assert calls == [[1]] and result.engine == "recording_engine" and again.engine.startswith("sequential, chosen by auto")
    assert result.runs[0].test_metrics is None and again.runs[0].test_metrics is not None
    first = torch.load(result.checkpoints[0], weights_only=True)["state_dict"]
    second = torch.load(again.checkpoints[0], weights_only=True)["state_dict"]
    assert all(torch.equal(first[k], second[k]) for k in first)
    frame = again.frame()
    assert list(frame["seed"]) == [1] and frame.loc[0, "checkpoint"].endswith("m-seed1.pt")
    with pytest.raises(InterpError, match="unknown training engine"):
        train_seeds(synth_data, tmp_path / "c.pt", [0], engine="parallel", progress=False, **TINY)
    with pytest.raises(InterpError, match="sets seed itself"):
        train_seeds(synth_data, tmp_path / "c.pt", [0], progress=False, seed=3, **TINY)


# ----------------------------------------------------------------------------------------- several checkpoints


def test_extract_several_checkpoints_by_pattern(seed_models: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = seed_models
    pattern = str(out.parent / "model-seed*.pt")
    assert expand_checkpoints([pattern]) == [out.parent / "model-seed0.pt", out.parent / "model-seed2.pt"]
    code, stdout, err = _cli(["extract", "--ckpt", pattern, "--out", str(tmp_path / "runs"), "--device", "cpu",
                              "--quiet"])
    assert code == 0, err
    runs = [tmp_path / "runs" / f"model-seed{s}-test" for s in (0, 2)]
    assert stdout.splitlines() == [f"run written to {run}" for run in runs]
    metas = [check_run(run) for run in runs]
    assert [m["train"]["seed"] for m in metas] == [0, 2]
    assert metas[0]["data_sha256"] == metas[1]["data_sha256"] and metas[0]["split"] == metas[1]["split"] == "test"
    first, second = (pd.read_parquet(run / "samples.parquet") for run in runs)
    assert list(first["sample_id"]) == list(second["sample_id"])
    assert not np.allclose(first["p_t"], second["p_t"])  # different models route differently

    # an existing run stops everything before any work (here: the first target), and names clash clearly
    code, _, err = _cli(["extract", "--ckpt", str(out.parent / "model-seed2.pt"), str(out.parent / "model-seed0.pt"),
                         "--out", str(tmp_path / "runs"), "--device", "cpu", "--quiet"])
    assert code == 2 and "already exists" in err and err.count("\n") == 1
    twin = tmp_path / "twin"
    twin.mkdir()
    shutil.copy(out.parent / "model-seed0.pt", twin / "model-seed0.pt")
    with pytest.raises(InterpError, match="both be extracted"):
        extract_many([out.parent / "model-seed0.pt", twin / "model-seed0.pt"], out=tmp_path / "other", device="cpu",
                     progress=False)
    code, _, err = _cli(["extract", "--ckpt", str(tmp_path / "nothing-*.pt")])
    assert code == 2 and "no checkpoint matches" in err


def test_extract_many_reads_the_data_once_and_writes_what_extract_writes(
        seed_models: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, _ = seed_models
    ckpts = [out.parent / "model-seed0.pt", out.parent / "model-seed2.pt"]
    alone = extract(ckpts[1], out=tmp_path / "alone", device="cpu", progress=False)
    reads: list[Path] = []
    load = extraction.load_dataset
    monkeypatch.setattr(extraction, "load_dataset",
                        lambda path, format=None: reads.append(Path(path)) or load(path, format=format))
    runs = extract_many(ckpts, out=tmp_path / "many", device="cpu", progress=False)
    assert len(reads) == 1  # the second checkpoint takes the data set the first one read
    for name in ("samples.parquet", "routing.parquet"):  # ... after the first extraction used it: nothing changed
        pd.testing.assert_frame_equal(pd.read_parquet(alone / name), pd.read_parquet(runs[1] / name))
    metas = [check_run(run) for run in (alone, *runs)]
    assert len({m["data_sha256"] for m in metas}) == 1 and metas[0]["data"] == metas[2]["data"]


def test_read_data_keeps_the_last_file_only(synth_data: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.pkl"
    shutil.copy(synth_data, copy)
    datasets: extraction.DataSets = {}
    link = tmp_path / "link.pkl"
    link.symlink_to(synth_data)
    first = extraction.read_data(synth_data, None, datasets)
    assert extraction.read_data(link, None, datasets) is first  # the same file by another name
    other = extraction.read_data(copy, None, datasets)
    assert other is not first and other.sha256 == first.sha256 and list(datasets) == [(copy.resolve(), None)]
    assert extraction.read_data(synth_data, "mult", datasets) is not first  # another format is another read
    assert extraction.read_data(synth_data) is not extraction.read_data(synth_data)  # no datasets: always read


def test_extract_repeated_ckpt_and_natural_order(tmp_path: Path) -> None:
    for seed in (10, 2, 1):
        (tmp_path / f"m-seed{seed}.pt").write_bytes(b"")
    found = expand_checkpoints([str(tmp_path / "m-seed*.pt"), tmp_path / "m-seed2.pt"])
    assert [p.name for p in found] == ["m-seed1.pt", "m-seed2.pt", "m-seed10.pt"]


# ---------------------------------------------------------------------------------------------------- videos


def test_mosi_test_split_has_31_videos(mosi_path: Path) -> None:
    dataset = load_dataset(mosi_path)
    counts = {name: len(set(split.videos)) for name, split in dataset.splits.items()}
    assert counts == {"train": 56, "valid": 6, "test": 31}
    assert sum(split.n for split in dataset.splits.values()) == 2199
    test = dataset.splits["test"]
    assert all(sample_id.startswith(video + "_") for sample_id, video in zip(test.ids, test.videos))


def test_synthetic_videos_have_several_segments(synth_data: Path) -> None:
    dataset = load_dataset(synth_data)
    seen: set[str] = set()
    for split in dataset.splits.values():
        videos, counts = np.unique(split.videos, return_counts=True)
        assert len(videos) < split.n / 3
        assert counts.min() >= 4 and np.median(counts) >= 6 and counts.max() <= 12 + 3
        assert not seen.intersection(videos)  # a video never spans two splits
        seen.update(videos)
        # segments of one video share a per-video latent offset: the text latent (estimated, up to sign, as the
        # first principal component of the time-averaged text features) varies between video means far more than
        # the 1/m of a mean of m independent segments
        x = split.text.mean(axis=1)
        x = x - x.mean(axis=0)
        latent = x @ np.linalg.svd(x, full_matrices=False)[2][0]
        frame = pd.DataFrame({"video": split.videos, "z": latent})
        between = frame.groupby("video")["z"].mean().var()
        assert between > 2 * frame["z"].var() / np.mean(counts), (between, frame["z"].var() / np.mean(counts))


def test_video_ids_from_other_layouts(tmp_path: Path) -> None:
    from interp.synth import synthesize

    data, _ = synthesize("sentiment", n_train=20, n_valid=8, n_test=8, seed=0)
    data["train"]["id"] = np.array([f"vid{k // 5}$_${k % 5}" for k in range(20)])  # MMSA style
    data["valid"]["id"] = np.array([f"plain{k}" for k in range(8)])  # one plain id per sample: no videos known
    del data["test"]["id"]
    path = tmp_path / "d.pkl"
    path.write_bytes(pickle.dumps(data))
    dataset = load_dataset(path)
    assert dataset.splits["train"].videos == [f"vid{k // 5}" for k in range(20)]
    assert dataset.splits["valid"].videos == dataset.splits["valid"].ids
    assert dataset.splits["test"].videos == [f"test-{k}" for k in range(8)]


def test_extracted_run_records_videos(extracted_run: Path, synth_data: Path) -> None:
    samples = pd.read_parquet(extracted_run / "samples.parquet")
    test = load_dataset(synth_data).splits["test"]
    assert has_column(extracted_run, "video")
    assert list(samples.columns[:2]) == ["sample_id", "video"]
    assert dict(zip(samples["sample_id"], samples["video"])) == dict(zip(test.ids, test.videos))
    meta = json.loads((extracted_run / "meta.json").read_text())
    assert meta["n_videos"] == len(set(test.videos)) and meta["train"]["seed"] == 0


def test_old_run_without_video_still_opens(extracted_run: Path, tmp_path: Path) -> None:
    from interp.stats import StatsOptions, compute_global_stats

    old = tmp_path / "old"
    shutil.copytree(extracted_run, old)
    table = pq.read_table(old / "samples.parquet")
    pq.write_table(table.drop(["video"]), old / "samples.parquet")
    assert not has_column(old, "video")
    check_run(old)
    new_cells = compute_global_stats(extracted_run, StatsOptions()).cells.drop(columns="run", errors="ignore")
    old_cells = compute_global_stats(old, StatsOptions()).cells.drop(columns="run", errors="ignore")
    pd.testing.assert_frame_equal(old_cells, new_cells)
    # a video column of the wrong type is still caught
    bad = tmp_path / "bad"
    shutil.copytree(extracted_run, bad)
    table = pq.read_table(bad / "samples.parquet")
    index = table.schema.get_field_index("video")
    pq.write_table(table.set_column(index, "video", table.column("row")), bad / "samples.parquet")
    with pytest.raises(InterpError, match="column 'video'"):
        check_run(bad)
