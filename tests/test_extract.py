"""interp extract: the run directory round trip, determinism, atomicity and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from interp.cli import main
from interp.data import load_dataset
from interp.extract import extract
from interp.schema import FEATURES
from interp.checkpoint import load_checkpoint


def test_round_trip(extracted_run: Path, trained_checkpoint: Path, synth_data: Path) -> None:
    samples = pd.read_parquet(extracted_run / "samples.parquet")
    routing = pd.read_parquet(extracted_run / "routing.parquet")
    meta = json.loads((extracted_run / "meta.json").read_text())
    J = meta["J"]
    dataset = load_dataset(synth_data)
    test = dataset.splits["test"]
    assert len(samples) == test.n == meta["n"]
    assert len(routing) == test.n * len(FEATURES) * J
    # sample ids match the data's ids, in order
    assert samples["sample_id"].tolist() == list(test.ids)
    assert routing["sample_id"].iloc[:: len(FEATURES) * J].tolist() == list(test.ids)
    # r sums to 1 over concepts for each (sample, feature)
    sums = routing.groupby(["sample_id", "feature"], observed=True)["r"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)
    # pr == p * r (float32 product)
    np.testing.assert_array_equal(routing["pr"].to_numpy(), (routing["p"] * routing["r"]).to_numpy())
    # contributions sum to the stored logit, per (sample, concept)
    contribution = routing.groupby(["sample_id", "concept"], observed=True, sort=False)["contribution"].sum()
    for concept in meta["concepts"]:
        stored = samples.set_index("sample_id")[f"logit_{concept}"]
        summed = contribution.xs(concept, level="concept").reindex(stored.index)
        np.testing.assert_allclose(summed.to_numpy(), stored.to_numpy(), atol=1e-4)
    # p in routing rows equals p_<feature> in samples
    first = routing[routing["concept"] == meta["concepts"][0]]
    for feature in FEATURES:
        np.testing.assert_array_equal(
            first[first["feature"] == feature]["p"].to_numpy(), samples[f"p_{feature}"].to_numpy()
        )
    # the stored logits equal an independent forward pass of the checkpoint
    loaded = load_checkpoint(trained_checkpoint, "cpu")
    with torch.inference_mode():
        logits = loaded.model(torch.from_numpy(test.text), torch.from_numpy(test.audio), torch.from_numpy(test.vision)).logits
    stored = samples[[f"logit_{c}" for c in meta["concepts"]]].to_numpy()
    np.testing.assert_allclose(stored, logits.numpy(), atol=1e-5)
    # schema: feature and concept are dictionary columns; values float32
    schema = pq.read_schema(extracted_run / "routing.parquet")
    assert str(schema.field("feature").type).startswith("dictionary")
    assert str(schema.field("r").type) == "float"
    # metadata
    assert meta["task"] == "sentiment" and meta["split"] == "test" and meta["planted"]
    assert len(meta["checkpoint_sha256"]) == 64 and meta["data_sha256"] == dataset.sha256
    # label column matches the data's labels
    expected_labels = (np.clip(np.round(test.labels.reshape(-1)), -3, 3)).astype(int).astype(str)
    assert samples["label"].tolist() == expected_labels.tolist()


def test_extract_twice_is_identical(trained_checkpoint: Path, tmp_path: Path) -> None:
    first = extract(trained_checkpoint, split="valid", out=tmp_path / "a", batch_size=32, device="cpu", progress=False)
    second = extract(trained_checkpoint, split="valid", out=tmp_path / "b", batch_size=32, device="cpu", progress=False)
    for table in ("samples.parquet", "routing.parquet"):
        a, b = pq.read_table(first / table), pq.read_table(second / table)
        assert a.equals(b), table


def test_crash_leaves_no_run(trained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from interp import runwriter

    calls = {"n": 0}
    original = runwriter.RunWriter.write

    def failing_write(self, batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        original(self, batch)

    monkeypatch.setattr(runwriter.RunWriter, "write", failing_write)
    out = tmp_path / "runs" / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract(trained_checkpoint, split="test", out=out, batch_size=16, device="cpu", progress=False)
    assert not out.exists()
    assert not torch.is_inference_mode_enabled()  # the next model built here must be trainable
    assert list((tmp_path / "runs").iterdir()) == []  # no temp folder left either


def test_refuses_to_overwrite_without_force(trained_checkpoint: Path, tmp_path: Path) -> None:
    out = extract(trained_checkpoint, split="valid", out=tmp_path / "run", device="cpu", progress=False)
    before = (out / "meta.json").read_text()
    assert main(["extract", "--ckpt", str(trained_checkpoint), "--split", "valid", "--out", str(out), "--quiet"]) == 2
    assert (out / "meta.json").read_text() == before
    assert main(["extract", "--ckpt", str(trained_checkpoint), "--split", "test", "--out", str(out), "--force", "--quiet"]) == 0
    assert json.loads((out / "meta.json").read_text())["split"] == "test"


def test_all_splits(trained_checkpoint: Path, synth_data: Path, tmp_path: Path) -> None:
    out = extract(trained_checkpoint, split="all", out=tmp_path / "all", device="cpu", progress=False)
    samples = pd.read_parquet(out / "samples.parquet", columns=["split", "row"])
    dataset = load_dataset(synth_data)
    assert samples["split"].value_counts().to_dict() == {name: s.n for name, s in dataset.splits.items()}
    assert samples[samples["split"] == "valid"]["row"].tolist() == list(range(dataset.splits["valid"].n))


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_input_exit_2(trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], mosi_path: Path) -> None:
    out = str(tmp_path / "x")
    assert main(["extract", "--ckpt", str(tmp_path / "missing.pt"), "--out", out]) == 2
    assert "not found" in _one_line_error(capsys)
    not_ckpt = tmp_path / "notes.pt"
    not_ckpt.write_text("hello")
    assert main(["extract", "--ckpt", str(not_ckpt), "--out", out]) == 2
    assert "cannot be read" in _one_line_error(capsys)
    assert main(["extract", "--ckpt", str(trained_checkpoint), "--data", str(mosi_path), "--out", out]) == 2
    assert "input dims" in _one_line_error(capsys)
    assert main(["extract", "--ckpt", str(trained_checkpoint), "--split", "bogus", "--out", out]) == 2
    assert "unknown split" in _one_line_error(capsys)
    assert not Path(out).exists()
