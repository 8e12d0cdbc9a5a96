"""Training, checkpoints, evaluation and the foundation CLI (data synth / train / eval)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from interp.checkpoint import load_checkpoint, read_checkpoint, resume_state
from interp.cli import main
from interp.data import load_dataset
from interp.evaluate import evaluate
from interp.inference import predict_logits
from interp.metrics import sentiment_classes
from interp.targets import targets
from interp.train import train

TINY = dict(task="sentiment", batch_size=32, lr=1e-3, seed=0, device="cpu", d_model=16, n_heads=2, n_layers=1,
            progress=False)


def test_synthetic_training_beats_chance(trained_checkpoint: Path, synth_data: Path) -> None:
    result = evaluate(trained_checkpoint, split="test", device="cpu")
    labels = load_dataset(synth_data).splits["test"].labels.reshape(-1)
    majority7 = np.bincount(sentiment_classes(labels), minlength=7).max() / len(labels)
    # 7 roughly balanced classes: chance is about 1/7; a few epochs must do clearly better
    assert result.metrics["acc7"] > max(2.0 * majority7, 0.3), result.metrics
    assert result.metrics["acc2"] > result.metrics["acc2_majority"] + 0.1, result.metrics
    saved = json.loads(result.path.read_text())
    assert saved["metrics"]["acc7"] == pytest.approx(result.metrics["acc7"])


def test_checkpoint_loads_with_weights_only_and_rebuilds_the_model(trained_checkpoint: Path, synth_data: Path) -> None:
    raw = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    for key in ("state_dict", "config", "task", "concepts", "features", "input_dims", "data", "train", "versions"):
        assert key in raw, key
    dataset = load_dataset(synth_data)
    assert raw["data"]["sha256"] == dataset.sha256
    assert raw["data"]["planted"] == dataset.planted
    assert tuple(raw["input_dims"]) == (dataset.splits["train"].text.shape[2], dataset.splits["train"].audio.shape[2],
                                        dataset.splits["train"].vision.shape[2])
    assert raw["train"]["selection"] == "validation loss"
    best = raw["train"]["best_epoch"]
    losses = [h["valid_loss"] for h in raw["train"]["history"]]
    # model selection is on the validation split: the kept epoch has the lowest validation loss
    assert losses[best - 1] == min(losses)
    loaded = load_checkpoint(trained_checkpoint)
    assert not loaded.model.training
    # the rebuilt model reproduces the validation loss recorded for the selected epoch
    valid = dataset.splits["valid"]
    logits = predict_logits(loaded.model, valid, torch.device("cpu"))
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets(valid.labels, "sentiment")))
    assert float(loss) == pytest.approx(raw["train"]["valid_loss"], rel=1e-5)


def test_interrupt_keeps_best_and_resume_matches_uninterrupted(tmp_path: Path) -> None:
    from interp.synth import write_synthetic

    synth_data = write_synthetic(tmp_path / "small.pkl", n_train=160, n_valid=40, n_test=40, seed=1).data_path
    straight = train(synth_data, tmp_path / "straight.pt", epochs=3, **TINY)

    def interrupt(row: dict[str, float]) -> None:  # Ctrl-C once epoch 1 is written
        raise KeyboardInterrupt

    out = tmp_path / "resumed.pt"
    with pytest.raises(KeyboardInterrupt):
        train(synth_data, out, epochs=3, on_epoch=interrupt, **TINY)
    kept = read_checkpoint(out)
    assert kept["train"]["epochs_run"] == 1 and resume_state(kept, out)["epoch"] == 1
    resumed = train(synth_data, out, epochs=3, resume=True, **TINY)
    assert resumed.epochs_run == 3
    a = read_checkpoint(tmp_path / "straight.pt")["state_dict"]
    b = read_checkpoint(out)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert resumed.best_epoch == straight.best_epoch


def test_mosi_short_cpu_run_beats_majority(mosi_path: Path, tmp_path: Path) -> None:
    result = train(mosi_path, tmp_path / "mosi.pt", epochs=8, batch_size=32, lr=1e-3, seed=0, device="cpu",
                   progress=False)
    metrics = evaluate(result.checkpoint, split="test", device="cpu").metrics
    assert metrics["acc2"] > metrics["acc2_majority"] + 0.1, metrics


def test_cli_synth_train_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data" / "synth.pkl"
    assert main(["data", "synth", "--out", str(data), "--n-train", "100", "--n-valid", "40", "--n-test", "40"]) == 0
    assert data.is_file() and data.with_name("synth.planted.json").is_file()
    model = tmp_path / "models" / "model.pt"
    assert main(["train", "--data", str(data), "--out", str(model), "--epochs", "1", "--d-model", "8",
                 "--n-heads", "2", "--n-layers", "1", "--device", "cpu", "--quiet"]) == 0
    assert main(["eval", "--ckpt", str(model), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "Acc7" in out and "Acc2" in out
    assert model.with_name("model.eval-test.json").is_file()


@pytest.mark.parametrize("command", [["--help"], ["data", "synth", "--help"], ["train", "--help"], ["eval", "--help"],
                                     ["extract", "--help"], ["global", "--help"], ["local", "--help"],
                                     ["report", "--help"], ["demo", "--help"]])
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 0
    assert "usage: interp" in capsys.readouterr().out


def test_bad_train_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(tmp_path / "missing.pkl"), "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "x.pkl", "--epochs", "0"])
    assert exit_info.value.code == 2


def test_adam_is_fused_and_steps_as_torchs_reference_adam() -> None:
    """interp's Adam (one fused kernel) against torch's per-parameter loop over 20 steps of a small network."""
    from interp.train import adam

    torch.manual_seed(0)
    layers = [torch.nn.Linear(8, 16), torch.nn.Linear(16, 3)]
    reference = [[p.detach().clone().requires_grad_(True) for p in layer.parameters()] for layer in layers]
    ours = [[p.detach().clone().requires_grad_(True) for p in layer.parameters()] for layer in layers]
    flat_reference = [p for group in reference for p in group]
    flat_ours = [p for group in ours for p in group]
    optimizers = [torch.optim.Adam(flat_reference, lr=1e-2, foreach=False), adam(flat_ours, 1e-2, torch.device("cpu"))]
    assert optimizers[1].defaults["fused"] is True
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for _ in range(20):
        for params, optimizer in zip((reference, ours), optimizers):
            hidden = torch.relu(torch.nn.functional.linear(x, *params[0]))
            loss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(hidden, *params[1]), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    initial = [p.detach() for layer in layers for p in layer.parameters()]
    moved = max(float((a.detach() - b).abs().max()) for a, b in zip(flat_ours, initial))
    assert moved > 0.05  # the steps did something
    for a, b in zip(flat_ours, flat_reference):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_a_checkpoint_of_the_earlier_loop_adam_resumes_with_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints written before the fused Adam hold the per-parameter loop's state; ``--resume`` continues with
    that Adam (torch restores the saved group's settings), so the continuation is bit-identical to a run that
    never stopped."""
    import interp.train as train_module
    from interp.synth import write_synthetic

    synth_data = write_synthetic(tmp_path / "small.pkl", n_train=160, n_valid=40, n_test=40, seed=1).data_path
    with monkeypatch.context() as patch:  # interp as it was: torch's default Adam (a Python loop on the CPU)
        patch.setattr(train_module, "adam", lambda parameters, lr, device: torch.optim.Adam(parameters, lr=lr))
        train(synth_data, tmp_path / "straight.pt", epochs=3, **TINY)
        train(synth_data, tmp_path / "resumed.pt", epochs=1, **TINY)
    train(synth_data, tmp_path / "resumed.pt", epochs=3, resume=True, **TINY)  # today's interp
    fused = train(synth_data, tmp_path / "fused.pt", epochs=3, **TINY)
    a, b, c = (resume_state(read_checkpoint(path), path)["state_dict"]  # the weights after epoch 3
               for path in (tmp_path / "straight.pt", tmp_path / "resumed.pt", fused.checkpoint))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)  # the fused Adam rounds differently
    for key in a:
        torch.testing.assert_close(a[key], c[key], rtol=0, atol=1e-3)
