"""Issue 15 item 4: K seeds trained as one vectorised model equal K separate ``train`` runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from interp.checkpoint import load_checkpoint, read_checkpoint, resume_state
from interp.ensemble_train import train_vectorised
from interp.errors import InterpError
from interp.train import train

SEEDS = [0, 1, 2]
# lr 3e-3 with patience 1 makes the three seeds stop early at different epochs (2, 4 and 3 here).
# Concept dropout 0.5 (the default): each seed must draw the masks its own train(seed) run draws.
SETTINGS = dict(epochs=6, batch_size=32, lr=3e-3, patience=1, device="cpu", d_model=8, n_heads=2, n_layers=1,
                concept_dropout=0.5, progress=False)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from interp.synth import write_synthetic

    out = tmp_path_factory.mktemp("ens") / "d.pkl"
    return write_synthetic(out, task="sentiment", n_train=96, n_valid=48, n_test=16, seed=0).data_path


def _without_key_bias(state: dict[str, torch.Tensor], d_model: int) -> dict[str, torch.Tensor]:
    """The key slice of ``in_proj_bias`` has zero gradient in exact arithmetic (softmax ignores a constant
    shift), so Adam turns rounding noise into steps of size ~lr there; it does not change any output."""
    out = dict(state)
    for name, value in state.items():
        if name.endswith("in_proj_bias"):
            out[name] = torch.cat([value[:d_model], value[2 * d_model :]])
    return out


def test_vectorised_seeds_equal_separate_runs(tiny_data: Path, tmp_path: Path) -> None:
    separate = [train(tiny_data, tmp_path / f"s{s}.pt", seed=s, **SETTINGS) for s in SEEDS]
    together = train_vectorised(tiny_data, [tmp_path / f"v{s}.pt" for s in SEEDS], SEEDS, **SETTINGS)
    assert len({r.epochs_run for r in separate}) > 1  # early stopping differs between seeds: it is exercised
    for a, b in zip(separate, together):
        assert (a.epochs_run, a.best_epoch) == (b.epochs_run, b.best_epoch)
        for ha, hb in zip(a.history, b.history, strict=True):
            assert ha.keys() == hb.keys()
            for key in ha:
                assert hb[key] == pytest.approx(ha[key], abs=1e-5), key
        ca, cb = read_checkpoint(a.checkpoint), read_checkpoint(b.checkpoint)
        assert ca["config"] == cb["config"] and ca["train"]["seed"] == cb["train"]["seed"]
        ca["resume"], cb["resume"] = resume_state(ca, a.checkpoint), resume_state(cb, b.checkpoint)  # decoded
        for part in (ca["state_dict"], ca["resume"]["state_dict"]), (cb["state_dict"], cb["resume"]["state_dict"]):
            assert part[0].keys() == part[1].keys()
        for sa, sb in ((ca["state_dict"], cb["state_dict"]), (ca["resume"]["state_dict"], cb["resume"]["state_dict"])):
            sa, sb = _without_key_bias(sa, 8), _without_key_bias(sb, 8)
            for name in sa:
                torch.testing.assert_close(sb[name], sa[name], atol=1e-4, rtol=1e-4, msg=name)  # Adam: ~lr-sized steps
        assert cb["resume"]["epoch"] == ca["resume"]["epoch"] and cb["resume"]["stale"] == ca["resume"]["stale"]
        steps = {int(s["step"]) for s in cb["resume"]["optimizer"]["state"].values()}
        assert steps == {int(s["step"]) for s in ca["resume"]["optimizer"]["state"].values()}
        load_checkpoint(b.checkpoint)  # a checkpoint like any other


def test_vectorised_resumes_with_train(tiny_data: Path, tmp_path: Path) -> None:
    """A seed's checkpoint holds the state ``train --resume`` needs (weights, Adam, epoch)."""
    settings = {**SETTINGS, "patience": 8, "epochs": 1}
    (first,) = train_vectorised(tiny_data, [tmp_path / "v.pt"], [5], **settings)
    resumed = train(tiny_data, tmp_path / "v.pt", seed=5, resume=True, **{**settings, "epochs": 2})
    reference = train(tiny_data, tmp_path / "s.pt", seed=5, **{**settings, "epochs": 2})
    assert first.epochs_run == 1 and resumed.epochs_run == reference.epochs_run == 2
    assert resumed.history[-1]["valid_loss"] == pytest.approx(reference.history[-1]["valid_loss"], abs=1e-5)


def test_vectorised_refuses_bad_arguments(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(InterpError, match="one output path per seed"):
        train_vectorised(tiny_data, [tmp_path / "a.pt"], [0, 1], **SETTINGS)
    with pytest.raises(InterpError, match="distinct"):
        train_vectorised(tiny_data, [tmp_path / "a.pt", tmp_path / "b.pt"], [0, 0], **SETTINGS)
    with pytest.raises(InterpError, match="dropout"):
        train_vectorised(tiny_data, [tmp_path / "a.pt"], [0], **{**SETTINGS, "res_dropout": 1.0})


def test_vectorised_refuses_seeds_that_do_not_fit_in_memory(tiny_data: Path, tmp_path: Path) -> None:
    """One model of ~57 M parameters fits (about 1 GB to train); 256 of them at once (~470 GB) fit nowhere."""
    seeds = list(range(256))
    with pytest.raises(InterpError, match="256 seeds at once would need about .* of memory") as info:
        train_vectorised(tiny_data, [tmp_path / f"m{s}.pt" for s in seeds], seeds,
                         **{**SETTINGS, "d_model": 512, "n_heads": 8, "n_layers": 2})
    assert "--engine sequential" in str(info.value) and not list(tmp_path.iterdir())
