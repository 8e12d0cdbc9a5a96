"""The checkpoint's resume state as one encoded tensor: old checkpoints (resume as a dict) still resume and
extract to the same numbers, resuming stays bit-identical, a damaged blob is one line, and the hashes that
loading computes from bytes already read equal the file hashes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from interp.checkpoint import load_checkpoint, read_checkpoint, resume_state
from interp.data import load_dataset
from interp.errors import CheckpointError
from interp.extract import extract
from interp.pickles import sha256_file
from interp.train import train

TINY = dict(task="sentiment", batch_size=32, lr=1e-3, seed=0, device="cpu", d_model=16, n_heads=2, n_layers=1,
            progress=False)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from interp.synth import write_synthetic

    folder = tmp_path_factory.mktemp("layout")
    return write_synthetic(folder / "small.pkl", n_train=160, n_valid=40, n_test=40, seed=1).data_path


@pytest.fixture(scope="module")
def one_epoch(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(new-layout checkpoint after 1 of 3 epochs, the same checkpoint in the old layout: resume as a dict)."""
    folder = tmp_path_factory.mktemp("one-epoch")

    def interrupt(row: dict[str, float]) -> None:  # Ctrl-C once epoch 1 is written
        raise KeyboardInterrupt

    new = folder / "new.pt"
    with pytest.raises(KeyboardInterrupt):
        train(small_data, new, epochs=3, on_epoch=interrupt, **TINY)
    raw = torch.load(new, map_location="cpu", weights_only=True)
    raw["resume"] = resume_state(raw, new)
    raw["version"] = 1  # what interp wrote before the resume state became one tensor
    old = folder / "old.pt"
    torch.save(raw, old)
    return new, old


def _copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target


def _edit(source: Path, target: Path, resume: object) -> Path:
    raw = torch.load(source, map_location="cpu", weights_only=True)
    raw["resume"] = resume
    torch.save(raw, target)
    return target


def test_resume_is_one_uint8_tensor_that_decodes_to_the_training_state(one_epoch: tuple[Path, Path]) -> None:
    new, old = one_epoch
    raw = torch.load(new, map_location="cpu", weights_only=True)
    stored = raw["resume"]
    assert raw["version"] == 2  # an interp that reads version 1 only refuses it as a newer format, not as damaged
    assert isinstance(stored, torch.Tensor) and stored.dtype == torch.uint8 and stored.ndim == 1
    state = resume_state(read_checkpoint(new), new)
    assert state is not None and state["epoch"] == 1 and state["stale"] == 0
    assert set(state) == {"epoch", "stale", "state_dict", "optimizer", "torch_rng"}
    old_checkpoint = read_checkpoint(old)
    legacy = old_checkpoint["resume"]
    assert isinstance(legacy, dict) and resume_state(old_checkpoint, old) is legacy  # read as it is
    for key, value in legacy["state_dict"].items():
        assert torch.equal(state["state_dict"][key], value), key
    # Adam's moments of every parameter, and the RNG, are the same bytes in both layouts
    for index, moments in legacy["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(state["optimizer"]["state"][index][name], value), (index, name)
    assert torch.equal(state["torch_rng"], legacy["torch_rng"])


def test_new_layout_resume_is_bit_identical_to_an_uninterrupted_run(small_data: Path, one_epoch: tuple[Path, Path],
                                                                     tmp_path: Path) -> None:
    straight = train(small_data, tmp_path / "straight.pt", epochs=3, **TINY)
    out = _copy(one_epoch[0], tmp_path / "resumed.pt")
    resumed = train(small_data, out, epochs=3, resume=True, **TINY)
    assert resumed.epochs_run == 3 and resumed.best_epoch == straight.best_epoch
    assert resumed.history == straight.history
    a, b = read_checkpoint(tmp_path / "straight.pt"), read_checkpoint(out)
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    sa, sb = resume_state(a, "straight"), resume_state(b, "resumed")
    for key in sa["state_dict"]:
        assert torch.equal(sa["state_dict"][key], sb["state_dict"][key]), key


def test_old_layout_resumes_and_extracts_to_the_same_numbers(small_data: Path, one_epoch: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    new, old = one_epoch
    runs = {}
    for name, ckpt in (("new", new), ("old", old)):
        loaded = load_checkpoint(ckpt)
        assert loaded.sha256 == sha256_file(ckpt)  # hashed from the bytes already read: the same digest
        runs[name] = extract(ckpt, small_data, split="test", out=tmp_path / f"run-{name}", device="cpu",
                             progress=False)
    for file in ("routing.parquet", "samples.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(runs["old"] / file), pd.read_parquet(runs["new"] / file))

    resumed = {name: train(small_data, _copy(ckpt, tmp_path / f"{name}.pt"), epochs=2, resume=True, **TINY)
               for name, ckpt in (("new", new), ("old", old))}
    assert resumed["old"].history == resumed["new"].history and resumed["old"].epochs_run == 2
    a, b = read_checkpoint(tmp_path / "old.pt"), read_checkpoint(tmp_path / "new.pt")
    assert isinstance(a["resume"], torch.Tensor) and a["version"] == 2  # a resumed old checkpoint: the new layout
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


def test_load_dataset_hash_is_the_file_hash(small_data: Path) -> None:
    assert load_dataset(small_data).sha256 == sha256_file(small_data)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_resume_blob_is_one_line_on_resume_and_harmless_to_extraction(
        small_data: Path, one_epoch: tuple[Path, Path], tmp_path: Path, damage: str) -> None:
    blob = torch.load(one_epoch[0], map_location="cpu", weights_only=True)["resume"]
    bad_blob = blob[: len(blob) // 2].clone() if damage == "truncated" else torch.randint(0, 256, (4096,),
                                                                                         dtype=torch.uint8)
    bad = _edit(one_epoch[0], tmp_path / "bad.pt", bad_blob)
    with pytest.raises(CheckpointError, match="resume"):
        resume_state(read_checkpoint(bad), bad)
    result = subprocess.run(
        [sys.executable, "-m", "interp.cli", "train", "--data", str(small_data), "--out", str(bad), "--epochs", "2",
         "--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--device", "cpu", "--quiet", "--resume"],
        capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("interp: warning:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("interp: error:") and "damaged" in lines[0], lines
    # extraction never needs the training state: it reads the weights as before
    run = extract(bad, small_data, split="test", out=tmp_path / "run", device="cpu", progress=False)
    assert len(pd.read_parquet(run / "samples.parquet")) == 40


def test_resume_of_the_wrong_kind_is_refused_on_read(one_epoch: tuple[Path, Path], tmp_path: Path) -> None:
    for index, value in enumerate([torch.zeros(3, 4, dtype=torch.uint8), torch.zeros(10), {"epoch": "one"}]):
        bad = _edit(one_epoch[0], tmp_path / f"bad{index}.pt", value)
        with pytest.raises(CheckpointError, match="resume"):
            read_checkpoint(bad)



def test_legacy_torch_format_loads_and_a_loaded_model_outlives_its_file(one_epoch: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    """load_checkpoint maps the file: a legacy (non-zip) torch file cannot be mapped and is read instead, and the
    model's weights are copies, so truncating the file afterwards (no atomic write) cannot crash the model."""
    new = one_epoch[0]
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.load(new, map_location="cpu", weights_only=True), legacy, _use_new_zipfile_serialization=False)
    a, b = load_checkpoint(new), load_checkpoint(legacy)
    assert b.sha256 == sha256_file(legacy) != a.sha256
    for (name, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name
    script = (
        "import sys, torch; from interp.checkpoint import load_checkpoint; from pathlib import Path\n"
        "path = Path(sys.argv[1]); loaded = load_checkpoint(path); path.write_bytes(b'')\n"
        "x = [torch.randn(2, 3, d) for d in loaded.config.input_dims]\n"
        "print(float(loaded.model(*x).logits.abs().sum()) > 0)\n"
    )
    target = _copy(new, tmp_path / "overwritten.pt")
    result = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr[-2000:]
