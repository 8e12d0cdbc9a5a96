"""The MMSA layout, padded sequences and `interp data inspect`, through the public functions and the CLI.

The MMSA files are written here (aligned and unaligned, end-padded, ``<video>$_$<clip>`` ids, CH-SIMS
per-modality labels); padding invariance is checked on the model and through the whole data -> extract path for
both paddings (MMSA at the end, MulT at the start).
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from interp.cli import main
from interp.data import load_dataset
from interp.data_inspect import inspect_data
from interp.encoders import padding_masks
from interp.errors import DataError, InterpError
from interp.extract import extract
from interp.global_report import run_global
from interp.model import ModelConfig, RoutingModel
from interp.report import run_report
from interp.schema import FEATURES, TASK_CONCEPTS
from interp.train import train

DIMS = (6, 5, 4)  # text, audio, vision feature sizes of every file written here
SIZES = {"train": 48, "valid": 16, "test": 24}
TINY = dict(task="sentiment", epochs=1, batch_size=16, lr=1e-3, device="cpu", d_model=8, n_heads=2, n_layers=1,
            d_feature=8, d_concept=8, progress=False)


def _mmsa_split(rng: np.random.Generator, name: str, n: int, aligned: bool) -> dict:
    t_text = 8
    t_audio, t_vision = (8, 8) if aligned else (12, 10)
    text_len = rng.integers(2, t_text + 1, n)
    text_len[0] = t_text  # one sample without padding
    audio_len = text_len if aligned else rng.integers(1, t_audio + 1, n)
    vision_len = text_len if aligned else rng.integers(1, t_vision + 1, n)
    arrays = {}
    for key, steps, lengths, d in (("text", t_text, text_len, DIMS[0]), ("audio", t_audio, audio_len, DIMS[1]),
                                   ("vision", t_vision, vision_len, DIMS[2])):
        values = rng.normal(size=(n, steps, d)).astype(np.float32)
        values[np.arange(steps)[None, :] >= lengths[:, None]] = 0.0  # end padding
        arrays[key] = values
    arrays["audio"][1, 0, 0] = -np.inf  # MMSA audio holds -inf; cleaned to 0 and counted
    bert = np.zeros((n, 3, t_text), dtype=np.int64)
    bert[:, 1, :] = np.arange(t_text)[None, :] < text_len[:, None]
    labels = rng.uniform(-3, 3, n).round(1).astype(np.float32)
    labels[:3] = 0.0
    split = {
        **arrays,
        "text_bert": bert,
        "regression_labels": labels,
        "regression_labels_T": np.clip(labels + rng.normal(0, 0.5, n), -3, 3).astype(np.float32),
        "regression_labels_A": rng.uniform(-3, 3, n).astype(np.float32),
        "regression_labels_V": rng.uniform(-3, 3, n).astype(np.float32),
        "id": np.array([f"{name}vid{k // 4}$_${k % 4}" for k in range(n)]),
        "raw_text": np.array([f"words of {name} sample {k}" for k in range(n)]),
        "classification_labels": (labels > 0).astype(np.float32),
    }
    if not aligned:
        split["audio_lengths"] = audio_len
        split["vision_lengths"] = vision_len
    return split


def write_mmsa(path: Path, aligned: bool, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    data = {name: _mmsa_split(rng, name, n, aligned) for name, n in SIZES.items()}
    path.write_bytes(pickle.dumps(data, protocol=4))
    return path


@pytest.fixture(scope="module")
def mmsa_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mmsa")
    return {"unaligned": write_mmsa(folder / "unaligned_50.pkl", aligned=False),
            "aligned": write_mmsa(folder / "aligned_50.pkl", aligned=True, seed=1)}


@pytest.fixture(scope="module")
def mmsa_checkpoint(mmsa_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mmsa-model") / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(mmsa_files["unaligned"], out, seed=0, **TINY)
    return out


def load_quietly(path: Path, **kwargs) -> "object":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(path, **kwargs)


# ---------------------------------------------------------------------------------------------- reading MMSA


def test_mmsa_layout_is_detected_and_read(mmsa_files: dict[str, Path]) -> None:
    raw = pickle.loads(mmsa_files["unaligned"].read_bytes())
    dataset = load_quietly(mmsa_files["unaligned"])
    assert dataset.layout == "mmsa"
    assert list(dataset.splits) == ["train", "valid", "test"]
    test = dataset.splits["test"]
    assert test.ids == [str(i) for i in raw["test"]["id"]]
    assert test.videos == [str(i).split("$_$")[0] for i in raw["test"]["id"]]
    assert test.videos[:5] == ["testvid0"] * 4 + ["testvid1"]
    assert test.transcripts == [str(t) for t in raw["test"]["raw_text"]]
    np.testing.assert_array_equal(test.labels, raw["test"]["regression_labels"])
    np.testing.assert_array_equal(test.modality_labels["T"], raw["test"]["regression_labels_T"])
    assert test.padding == "end"
    np.testing.assert_array_equal(test.lengths[:, 0], raw["test"]["text_bert"][:, 1].sum(1))  # from the BERT mask
    np.testing.assert_array_equal(test.lengths[:, 1], raw["test"]["audio_lengths"])
    np.testing.assert_array_equal(test.lengths[:, 2], raw["test"]["vision_lengths"])
    # the same non-finite cleaning as the MulT layout: -inf -> 0, counted per split/modality
    assert dataset.nonfinite["test/audio"] == 1 and dataset.nonfinite["total"] == 3
    assert test.audio[1, 0, 0] == 0.0


def test_aligned_mmsa_lengths_are_detected_from_trailing_zeros(mmsa_files: dict[str, Path]) -> None:
    raw = pickle.loads(mmsa_files["aligned"].read_bytes())
    train_split = load_quietly(mmsa_files["aligned"]).splits["train"]
    text_len = raw["train"]["text_bert"][:, 1].sum(1)
    # no audio_lengths / vision_lengths in aligned files: the trailing all-zero steps give them (here = text's)
    np.testing.assert_array_equal(train_split.lengths, np.stack([text_len] * 3, axis=1))


def test_text_bert_only_is_refused(tmp_path: Path) -> None:
    data = {name: _mmsa_split(np.random.default_rng(2), name, 8, aligned=False) for name in SIZES}
    for split in data.values():
        del split["text"]
    path = tmp_path / "bert_only.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(DataError, match="text_bert.*token ids.*not as feature vectors"):
        load_dataset(path)
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "m.pt")]) == 2
    report = inspect_data(path)
    assert not report.loaded and "text_bert" in report.refusals[0]
    assert "text_bert" in " ".join(report.splits["train"]["keys"])


def test_format_overrides_detection(mmsa_files: dict[str, Path], synth_data: Path) -> None:
    with pytest.raises(DataError, match="--format mmsa"):
        load_dataset(mmsa_files["unaligned"], format="mult")
    with pytest.raises(DataError, match="MulT layout.*--format mult"):
        load_dataset(synth_data, format="mmsa")
    assert load_dataset(synth_data, format="mult").layout == "mult"
    with pytest.raises(DataError, match="unknown data format"):
        load_dataset(synth_data, format="csv")


# --------------------------------------------------------------------------------------------- round trip


def test_mmsa_round_trip_train_extract_global_report(
    mmsa_files: dict[str, Path], mmsa_checkpoint: Path, tmp_path: Path
) -> None:
    for kind, path in mmsa_files.items():
        raw = pickle.loads(path.read_bytes())
        run = extract(mmsa_checkpoint, data=path, split="test", out=tmp_path / f"run-{kind}", device="cpu",
                      progress=False)
        samples = pd.read_parquet(run / "samples.parquet")
        assert samples["sample_id"].tolist() == [str(i) for i in raw["test"]["id"]]
        if "video" in samples.columns:  # the video column is written by runwriter (branch `seeds`)
            assert samples["video"].tolist() == [str(i).split("$_$")[0] for i in raw["test"]["id"]]
        for letter in "TAV":
            np.testing.assert_allclose(samples[f"label_{letter}"], raw["test"][f"regression_labels_{letter}"])
        np.testing.assert_allclose(samples["score"], raw["test"]["regression_labels"])
        assert samples["transcript"].tolist()[:2] == ["words of test sample 0", "words of test sample 1"]
        routing = pd.read_parquet(run / "routing.parquet")
        assert set(routing["sample_id"]) == set(samples["sample_id"])
        assert np.isfinite(routing[["p", "r", "pr", "contribution"]].to_numpy()).all()
    report = run_global([tmp_path / "run-unaligned"], out=tmp_path / "global", heatmaps=False)
    assert report.html_path.is_file()
    index = run_report([tmp_path / "run-unaligned"], out=tmp_path / "report", gallery_random=0)
    html = index.read_text(encoding="utf-8")
    assert 'class="modality-labels"' in html and "Has0_acc_2" in html
    # the report's routing-vs-label correlations are the ones computed by hand from the run's tables
    samples = pd.read_parquet(tmp_path / "run-unaligned" / "samples.parquet").set_index("sample_id")
    routing = pd.read_parquet(tmp_path / "run-unaligned" / "routing.parquet")
    routing = routing[routing["feature"].astype(str) == "t"].copy()
    routing["concept"] = routing["concept"].astype(str)
    at_pred = routing[routing["concept"].to_numpy() == samples.loc[routing["sample_id"], "pred"].to_numpy()]
    at_pred = at_pred.set_index("sample_id").loc[samples.index]
    by_hand = np.corrcoef(at_pred["pr"], samples["label_T"])[0, 1]
    cell = f'data-modality="T" data-reading="pr_pred" data-value="{float(by_hand)!r}"'
    value = float(html.split('data-modality="T" data-reading="pr_pred" data-value="')[1].split('"')[0])
    assert value == pytest.approx(by_hand, abs=1e-9), cell


def test_padded_features_kept_on_the_device_give_the_same_run(
    mmsa_files: dict[str, Path], mmsa_checkpoint: Path, tmp_path: Path
) -> None:
    """Resident features (interp.feed) and their lengths give the streamed run, bit for bit, on padded splits."""
    runs = [extract(mmsa_checkpoint, data=mmsa_files["unaligned"], split="all", out=tmp_path / f"run-{resident}",
                    batch_size=9, device="cpu", progress=False, resident=resident) for resident in (False, True)]
    for table in ("samples.parquet", "routing.parquet"):
        assert pq.read_table(runs[0] / table).equals(pq.read_table(runs[1] / table)), table


# --------------------------------------------------------------------------------------- padding invariance


@pytest.mark.parametrize("side", ["end", "start"])
def test_masks_are_made_on_the_inputs_device_from_lengths_on_the_cpu(side: str) -> None:
    """Golden by hand: True at padded steps. Lengths on the CPU and masks for another device (meta here, a GPU in
    use): the all-full check reads the CPU lengths, the masks are made on the device asked for."""
    lengths = torch.tensor([[3, 2, 4], [1, 2, 4]])
    masks = padding_masks(lengths, (3, 2, 4), side, torch.device("meta"))
    assert masks[1] is None and masks[2] is None  # audio and vision are full length
    assert masks[0] is not None and masks[0].device.type == "meta" and masks[0].shape == (2, 3)
    on_cpu, _, _ = padding_masks(lengths, (3, 2, 4), side)
    padded = [[False, False, False], [False, True, True]]
    assert on_cpu.tolist() == (padded if side == "end" else [row[::-1] for row in padded])


def _tiny_model(seed: int = 0) -> RoutingModel:
    torch.manual_seed(seed)
    config = ModelConfig(task="sentiment", variant="routing", input_dims=DIMS, n_concepts=7, d_model=8, n_heads=2,
                         n_layers=2, d_feature=8, d_concept=8)
    return RoutingModel(config).eval()


@pytest.mark.parametrize("side", ["end", "start"])
def test_padding_never_changes_a_samples_outputs(side: str) -> None:
    model = _tiny_model()
    generator = torch.Generator().manual_seed(3)
    steps = (7, 5, 6)
    x = [torch.randn(4, t, d, generator=generator) for t, d in zip(steps, DIMS)]
    padded = []
    for xm in x:
        zeros = torch.zeros(4, 10, xm.shape[2])
        padded.append(torch.cat([xm, zeros], 1) if side == "end" else torch.cat([zeros, xm], 1))
    lengths = torch.tensor([steps] * 4)
    with torch.inference_mode():
        plain = model(*x)
        masked = model(*padded, lengths, side)
        unmasked = model(*padded)
    for name in ("logits", "p", "r", "contributions"):
        torch.testing.assert_close(getattr(masked, name), getattr(plain, name), atol=1e-5, rtol=0)
    assert (unmasked.logits - plain.logits).abs().max() > 1e-3  # without the mask, padding would change them


def _mult_file(path: Path, x: list[np.ndarray], labels: np.ndarray, pad: int) -> Path:
    """A MulT-layout file whose test split is ``x`` start-padded with ``pad`` zero steps (train/valid: the same)."""
    split = {name: np.concatenate([np.zeros((len(a), pad, a.shape[2]), np.float32), a], axis=1)
             for name, a in zip(("text", "audio", "vision"), x)}
    split.update(labels=labels.reshape(-1, 1, 1), id=np.array([[f"v{k // 3}", str(k)] for k in range(len(labels))]))
    path.write_bytes(pickle.dumps({"train": split, "valid": split, "test": split}))
    return path


@pytest.mark.parametrize("layout", ["mmsa", "mult"])
def test_padding_invariance_through_the_data_and_extract(
    layout: str, mmsa_files: dict[str, Path], mmsa_checkpoint: Path, tmp_path: Path
) -> None:
    """The same samples in a file without padding and in one with 10 more padding steps: same p, r and logits."""
    rng = np.random.default_rng(5)
    n, steps = 12, (6, 5, 4)
    x = [rng.normal(size=(n, t, d)).astype(np.float32) for t, d in zip(steps, DIMS)]
    labels = rng.uniform(-3, 3, n).astype(np.float32)
    runs = []
    for pad in (0, 10):
        if layout == "mult":
            path = _mult_file(tmp_path / f"mult-{pad}.pkl", x, labels, pad)
        else:
            raw = pickle.loads(mmsa_files["unaligned"].read_bytes())
            for key, a in zip(("text", "audio", "vision"), x):
                raw["test"][key] = np.concatenate([a, np.zeros((n, pad, a.shape[2]), np.float32)], axis=1)
            raw["test"]["audio_lengths"] = np.full(n, steps[1])
            raw["test"]["vision_lengths"] = np.full(n, steps[2])
            raw["test"]["text_bert"] = np.ones((n, 3, steps[0] + pad), np.int64) * (np.arange(steps[0] + pad) < steps[0])
            for key in ("regression_labels", "regression_labels_T", "regression_labels_A", "regression_labels_V"):
                raw["test"][key] = labels
            raw["test"]["id"] = np.array([f"v$_${k}" for k in range(n)])
            raw["test"]["raw_text"] = np.array(["w"] * n)
            path = tmp_path / f"mmsa-{pad}.pkl"
            path.write_bytes(pickle.dumps(raw))
        dataset = load_quietly(path)
        assert dataset.splits["test"].padding == ({"mult": "start", "mmsa": "end"}[layout] if pad else "none")
        runs.append(extract(mmsa_checkpoint, data=path, split="test", out=tmp_path / f"run-{layout}-{pad}",
                            device="cpu", progress=False))
    first, second = (pd.read_parquet(run / "samples.parquet") for run in runs)
    logits = [f"logit_{c}" for c in TASK_CONCEPTS["sentiment"]] + [f"p_{f}" for f in FEATURES]
    np.testing.assert_allclose(first[logits].to_numpy(), second[logits].to_numpy(), atol=1e-5, rtol=0)
    first_r, second_r = (pd.read_parquet(run / "routing.parquet") for run in runs)
    np.testing.assert_allclose(first_r[["r", "pr", "contribution"]].to_numpy(),
                               second_r[["r", "pr", "contribution"]].to_numpy(), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------- inspect


def test_inspect_mmsa_file(mmsa_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    raw = pickle.loads(mmsa_files["unaligned"].read_bytes())
    assert main(["data", "inspect", str(mmsa_files["unaligned"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout"] == "mmsa" and info["loaded"] and info["refusals"] == []
    test = info["splits"]["test"]
    assert test["n"] == SIZES["test"] and test["padding_side"] == "end"
    audio = test["modalities"]["audio"]
    assert (audio["T"], audio["d"], audio["nonfinite"]) == (12, DIMS[1], 1)
    assert audio["lengths"]["min"] == raw["test"]["audio_lengths"].min()
    assert audio["lengths"]["padded_fraction"] == pytest.approx(np.mean(raw["test"]["audio_lengths"] < 12))
    classes = np.clip(np.round(raw["test"]["regression_labels"]), -3, 3).astype(int)
    assert test["labels"]["classes"] == {str(s): int((classes == s).sum()) for s in range(-3, 4)}
    assert test["labels"]["signs"]["zero"] == int((raw["test"]["regression_labels"] == 0).sum())
    assert test["videos"] == {"count": 6, "segments_min": 4, "segments_median": 4.0, "segments_max": 4}
    assert test["transcripts"] and test["modality_labels"] == ["A", "T", "V"]
    assert info["tasks"]["sentiment"] == "ok" and info["tasks"]["emotion"].startswith("refused")
    assert main(["data", "inspect", str(mmsa_files["unaligned"])]) == 0
    table = capsys.readouterr().out
    assert "layout mmsa (detected)" in table and "refused: nothing" in table


def test_inspect_mult_file(synth_data: Path, tmp_path: Path) -> None:
    info = inspect_data(synth_data).to_dict()
    assert info["layout"] == "mult" and info["planted"] is not None
    assert info["splits"]["train"]["modalities"]["text"]["padding"] == "none"
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(9, 4, d)).astype(np.float32) for d in DIMS]
    padded = inspect_data(_mult_file(tmp_path / "padded.pkl", x, rng.uniform(-3, 3, 9), pad=3)).to_dict()
    text = padded["splits"]["test"]["modalities"]["text"]
    assert text["padding"] == "start" and text["T"] == 7 and text["lengths"]["max"] == 4
    assert padded["splits"]["test"]["videos"]["count"] == 3


def test_inspect_real_mosi(mosi_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "inspect", str(mosi_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout"] == "mult" and info["loaded"]
    assert {k: v["n"] for k, v in info["splits"].items()} == {"train": 1285, "valid": 162, "test": 752}
    assert info["splits"]["train"]["modalities"]["audio"]["d"] == 73
    assert [info["splits"][s]["videos"]["count"] for s in ("train", "valid", "test")] == [56, 6, 31]
    assert sum(info["splits"]["test"]["labels"]["classes"].values()) == 752


# ------------------------------------------------------------------------------------------- CLI conventions


def test_eval_threads_and_both_acc2_conventions(
    mmsa_files: dict[str, Path], mmsa_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        code = main(["eval", "--ckpt", str(mmsa_checkpoint), "--data", str(mmsa_files["unaligned"]), "--device", "cpu",
                     "--threads", "1", "--format", "mmsa", "--out", str(tmp_path / "eval.json")])
        assert code == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
    table = capsys.readouterr().out
    assert "Acc2 non-zero (neg vs pos, y != 0)" in table and "Acc2 has-0 (neg vs non-neg, all; MMSA Has0)" in table
    metrics = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    assert {"acc2", "f1", "acc2_has0", "f1_has0"} <= set(metrics)


def test_help_says_which_variant_is_the_authors_release(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "routing1: one update, which is the authors' released configuration (--num-routing 1" in text
    assert "--threads" in text and "shared with other jobs use 1" in text


@pytest.mark.parametrize("kind", ["unaligned", "aligned"])
def test_padded_seeds_at_once_equal_seeds_one_by_one(mmsa_files: dict[str, Path], tmp_path: Path, kind: str) -> None:
    """On padded data (each seed's batches masked with their own lengths) the vectorised engine, which `auto`
    picks, trains the models the sequential engine trains: the same histories and weights."""
    from interp.checkpoint import read_checkpoint
    from interp.seeds import choose_engine, train_seeds

    dataset = load_quietly(mmsa_files[kind])
    assert dataset.splits["train"].lengths is not None
    assert choose_engine(dataset, [(0, tmp_path / "a.pt"), (1, tmp_path / "b.pt")], {})[0] == "vectorised"
    options = {**TINY, "epochs": 3, "patience": 10}
    runs = {engine: train_seeds(mmsa_files[kind], tmp_path / engine / "m.pt", [0, 1, 2], engine=engine,
                                dataset=dataset, evaluate_test=False, **options)
            for engine in ("sequential", "vectorised")}
    assert runs["vectorised"].engine.startswith("vectorised")
    one_by_one, together = ([run.train for run in runs[engine].runs] for engine in ("sequential", "vectorised"))
    for a, b in zip(one_by_one, together, strict=True):
        for row_a, row_b in zip(a.history, b.history, strict=True):
            for key in row_a:
                assert row_b[key] == pytest.approx(row_a[key], abs=1e-5), key
        weights_a, weights_b = read_checkpoint(a.checkpoint)["state_dict"], read_checkpoint(b.checkpoint)["state_dict"]
        for name in weights_a:
            if not name.endswith("in_proj_bias"):  # its key slice gets rounding-noise steps (test_ensemble_train)
                torch.testing.assert_close(weights_b[name], weights_a[name], atol=1e-4, rtol=1e-4, msg=name)
    # masking matters here: the same seeds on the data without its lengths train other models
    unmasked = load_quietly(mmsa_files[kind])
    for split in unmasked.splits.values():
        split.lengths, split.padding = None, "none"
    plain = train_seeds(mmsa_files[kind], tmp_path / "plain" / "m.pt", [0, 1, 2], engine="vectorised",
                        dataset=unmasked, evaluate_test=False, **options).runs
    plain = [run.train for run in plain]
    assert max(abs(x.history[-1]["valid_loss"] - y.history[-1]["valid_loss"]) for x, y in zip(plain, together)) > 1e-3


@pytest.mark.parametrize("side", ["start", "end"])
def test_valid_lengths_count_the_zero_steps_at_the_padded_side(side: str) -> None:
    """Against a per-sample loop: the real steps are T minus the all-zero steps at the padded side (at least 1)."""
    from interp.padding import valid_lengths

    rng = np.random.default_rng(7)
    for _ in range(50):
        n, steps, d = (int(v) for v in rng.integers(1, 12, size=3))
        array = rng.normal(size=(n, steps, d)).astype(np.float32)
        array[rng.random((n, steps)) < 0.5] = 0.0  # whole steps zero, anywhere
        array[rng.random((n, steps, d)) < 0.2] = 0.0  # single zero features do not make a step padding
        expected = []
        for sample in array:
            order = range(steps) if side == "start" else range(steps - 1, -1, -1)
            run = 0
            for step in order:
                if np.any(sample[step] != 0):
                    break
                run += 1
            expected.append(max(steps - run, 1))
        assert valid_lengths(array, side).tolist() == expected
