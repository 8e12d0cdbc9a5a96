"""interp.feed and extraction's use of it: resident and streamed batches are the same samples; an extraction in
small batches (each batch's outputs copied to the host while the next batch runs) holds exactly the model's outputs
of one forward pass over the whole split."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import SequentialSampler

from interp.checkpoint import load_checkpoint
from interp.data import load_dataset
from interp.errors import InterpError
from interp.extract import extract
from interp.extraction import iterate_batches, select_source
from interp.feed import device_batches, feature_bytes, resident_by_default, resident_refusal
from interp.schema import FEATURES, logit_column, p_column
from interp.synth import write_synthetic
from interp.train import train

CPU = torch.device("cpu")


@pytest.mark.parametrize("split", ["test", "all"])
@pytest.mark.parametrize("batch_size", [7, 128])
@pytest.mark.parametrize("resident", [False, True])
def test_batches_are_the_split_in_order(synth_data: Path, split: str, batch_size: int, resident: bool) -> None:
    """Golden: the parts' arrays concatenated by numpy and cut every ``batch_size`` rows; lengths likewise."""
    dataset = load_dataset(synth_data)
    parts = list(dataset.splits.values()) if split == "all" else [dataset.splits["test"]]
    n = sum(part.n for part in parts)
    lengths = np.random.default_rng(0).integers(1, 5, (n, 3))
    whole = {name: np.concatenate([getattr(part, name) for part in parts]) for name in ("text", "audio", "vision")}
    batches = list(device_batches(parts, CPU, batch_size, lengths=lengths, resident=resident))
    assert [len(b.index) for b in batches] == [min(batch_size, n - s) for s in range(0, n, batch_size)]
    for k, batch in enumerate(batches):
        rows = slice(k * batch_size, min(n, (k + 1) * batch_size))
        np.testing.assert_array_equal(batch.index, np.arange(n)[rows])
        for name in ("text", "audio", "vision"):
            got = getattr(batch, name)
            assert got.dtype == torch.float32
            np.testing.assert_array_equal(got.numpy(), whole[name][rows])
        assert batch.lengths is not None
        np.testing.assert_array_equal(batch.lengths.numpy(), lengths[rows])


def test_what_cannot_be_resident_is_refused(synth_data: Path) -> None:
    dataset = load_dataset(synth_data)
    test = dataset.splits["test"]
    shorter = dataclasses.replace(dataset.splits["valid"], text=dataset.splits["valid"].text[:, :-1])
    assert resident_refusal([test], CPU) is None
    assert "sampler" in resident_refusal([test], CPU, sampler=SequentialSampler(range(test.n)))
    assert "workers" in resident_refusal([test], CPU, num_workers=2)
    assert "differ in steps" in resident_refusal([test, shorter], CPU)
    with pytest.raises(InterpError, match="cannot stay on cpu: the splits differ"):
        next(device_batches([test, shorter], CPU, 8, resident=True))
    assert not resident_by_default([test], CPU)  # on the CPU a batch is a view already: nothing to save
    t, a, v = test.text.shape[1:], test.audio.shape[1:], test.vision.shape[1:]
    assert feature_bytes([test]) == 4 * test.n * (t[0] * t[1] + a[0] * a[1] + v[0] * v[1])


def test_resident_and_streamed_runs_are_identical(trained_checkpoint: Path, tmp_path: Path) -> None:
    runs = [extract(trained_checkpoint, split="all", out=tmp_path / f"run-{resident}", batch_size=37, device="cpu",
                    progress=False, resident=resident) for resident in (False, True)]
    for table in ("samples.parquet", "routing.parquet"):
        assert pq.read_table(runs[0] / table).equals(pq.read_table(runs[1] / table)), table


@pytest.fixture(scope="module")
def emotion_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data, checkpoint) of a tiny emotion model: J = 6 concepts, unlike the 7 features."""
    folder = tmp_path_factory.mktemp("emotion")
    data = write_synthetic(folder / "emotion.pkl", task="emotion", n_train=64, n_valid=16, n_test=40, seed=1).data_path
    train(data, folder / "model.pt", task="emotion", epochs=1, batch_size=16, device="cpu", d_model=8, n_heads=2,
          n_layers=1, d_feature=8, d_concept=8, progress=False)
    return data, folder / "model.pt"


@pytest.mark.parametrize("task", ["sentiment", "emotion"])
@pytest.mark.parametrize("resident", [False, True])
def test_extracted_values_are_one_forward_pass_over_the_split(
    trained_checkpoint: Path, synth_data: Path, emotion_model: tuple[Path, Path], tmp_path: Path, resident: bool,
    task: str,
) -> None:
    """Golden: the model run once on the whole test split; the run was extracted in batches of 13 samples."""
    data, checkpoint = (synth_data, trained_checkpoint) if task == "sentiment" else emotion_model
    loaded = load_checkpoint(checkpoint)
    assert len(loaded.concepts) == {"sentiment": 7, "emotion": 6}[task]
    test = load_dataset(data).splits["test"]
    with torch.inference_mode():
        output = loaded.model(*(torch.from_numpy(getattr(test, m)) for m in ("text", "audio", "vision")))
    run = extract(checkpoint, split="test", out=tmp_path / "run", batch_size=13, device="cpu",
                  progress=False, resident=resident)
    samples = pq.read_table(run / "samples.parquet").to_pandas()
    routing = pq.read_table(run / "routing.parquet").to_pandas()
    j = len(loaded.concepts)
    np.testing.assert_allclose(samples[[logit_column(c) for c in loaded.concepts]].to_numpy(),
                               output.logits.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(samples[[p_column(f) for f in FEATURES]].to_numpy(), output.p.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(routing["r"].to_numpy().reshape(test.n, len(FEATURES), j), output.r.numpy(),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(routing["contribution"].to_numpy().reshape(test.n, len(FEATURES), j),
                               output.contributions.numpy(), rtol=0, atol=1e-5)


def test_the_caller_of_iterate_batches_never_runs_in_inference_mode(trained_checkpoint: Path, synth_data: Path) -> None:
    """The forward passes run under inference_mode, but a batch is handed over outside it (the mode is per thread:
    a generator suspended inside it would leave it on for its caller)."""
    loaded = load_checkpoint(trained_checkpoint)
    batches = iterate_batches(loaded, select_source(load_dataset(synth_data), "test"), CPU, 16, resident=True)
    first = next(batches)
    assert first.size == 16 and not torch.is_inference_mode_enabled()
    assert torch.zeros(2).add_(1).sum() == 2  # a plain in-place update works
    batches.close()
