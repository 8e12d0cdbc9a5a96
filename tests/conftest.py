"""Shared fixtures: a small synthetic data set and a model trained on it (once per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MOSI = REPO.parent / "shared" / "data" / "cmu-mosi-utterance" / "mosi_utterance.pkl"


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> None:
    """One torch thread: the models are tiny, and on a shared 2-core machine more threads only contend."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mosi_path() -> Path:
    """The real CMU-MOSI utterance data (skips when ../shared/data is absent)."""
    if not MOSI.is_file():
        pytest.skip(f"real CMU-MOSI data not found at ../shared/data/cmu-mosi-utterance/ ({MOSI})")
    return MOSI


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic sentiment data set with planted links."""
    from interp.synth import write_synthetic

    out = tmp_path_factory.mktemp("synth") / "synth.pkl"
    return write_synthetic(out, task="sentiment", n_train=800, n_valid=200, n_test=300, seed=0).data_path


@pytest.fixture(scope="session")
def trained_checkpoint(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained briefly on ``synth_data`` (CPU)."""
    from interp.train import train

    out = tmp_path_factory.mktemp("model") / "model.pt"
    train(synth_data, out, task="sentiment", epochs=6, batch_size=32, lr=1e-3, seed=0, device="cpu",
          d_model=16, n_heads=2, n_layers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def extracted_run(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test split of ``synth_data`` extracted with ``trained_checkpoint``."""
    from interp.extract import extract

    out = tmp_path_factory.mktemp("runs") / "synth-test"
    return extract(trained_checkpoint, split="test", out=out, batch_size=64, device="cpu", progress=False)
