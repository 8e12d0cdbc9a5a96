"""`interp faithfulness`: removal semantics, exact Shapley values, deletion curves, randomisation, CLI and report."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from interp.cli import main
from interp.data import load_dataset
from interp.faithfulness import (
    coalition_logits,
    coalition_masks,
    compute_faithfulness,
    randomised_models,
    routing_head,
    shapley_values,
)
from interp.model import ModelConfig, RoutingModel, route
from interp.checkpoint import load_checkpoint

#: Margin of the planted-data test: (a) − (d) AOPC of logit j* measured 0.41–0.66 (lower interval ends 0.38–0.60)
#: over training seeds 0–3 × random-order seeds 0–2 of the suite's model settings; 0.25 leaves room below the lowest.
AOPC_MARGIN = 0.25


def _features(checkpoint: Path, data: Path, n: int | None = None):
    loaded = load_checkpoint(checkpoint)
    split = load_dataset(data).splits["test"]
    rows = slice(0, n)
    inputs = [torch.as_tensor(np.asarray(getattr(split, m)[rows]), dtype=torch.float32) for m in ("text", "audio", "vision")]
    with torch.inference_mode():
        f, p = loaded.model.features(*inputs)
    return loaded, split, inputs, f, p


@pytest.fixture(scope="module")
def features(trained_checkpoint: Path, synth_data: Path):
    return _features(trained_checkpoint, synth_data)


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


# ----------------------------------------------------------------------------------------------- removal


def test_removing_none_equals_the_stored_run_logits(features, extracted_run: Path) -> None:
    loaded, split, _, f, p = features
    model = loaded.model
    with torch.inference_mode():
        kept = routing_head(f, p, model.W, model.o, model.config.iterations, torch.ones_like(p)).logits.numpy()
        all_coalitions = coalition_logits(f, p, model.W, model.o, model.config.iterations).numpy()
    stored = pd.read_parquet(extracted_run / "samples.parquet").set_index("sample_id").loc[split.ids]
    stored = stored[[f"logit_{c}" for c in loaded.concepts]].to_numpy()
    np.testing.assert_allclose(kept, stored, atol=1e-5, rtol=0)
    np.testing.assert_allclose(all_coalitions[:, -1], stored, atol=1e-5, rtol=0)  # coalition 127 keeps all 7


def test_removing_all_gives_the_empty_routing(features) -> None:
    """Empty routing, by definition: starting concepts and every sum are empty, so concepts = 0, logits = 0, r = 1/J."""
    loaded, _, _, f, p = features
    model = loaded.model
    with torch.inference_mode():
        concepts, r, _ = route(f, p, model.W, model.config.iterations, torch.zeros_like(p))
        head = routing_head(f, p, model.W, model.o, model.config.iterations, torch.zeros_like(p))
        coalitions = coalition_logits(f, p, model.W, model.o, model.config.iterations)
    assert torch.count_nonzero(concepts) == 0 and torch.count_nonzero(head.logits) == 0
    assert torch.count_nonzero(coalitions[:, 0]) == 0 and torch.count_nonzero(head.contributions) == 0
    torch.testing.assert_close(r, torch.full_like(r, 1.0 / len(loaded.concepts)))


@pytest.mark.parametrize("iterations", [0, 1, 2])
def test_removal_equals_routing_without_those_features(features, iterations: int) -> None:
    """Independent computation: a keep-mask gives exactly the routing run on the kept features' rows alone."""
    loaded, _, _, f, p = features
    W = loaded.model.W.detach()
    rng = np.random.default_rng(1)
    for _ in range(5):
        keep = rng.random(7) < 0.5
        keep[rng.integers(7)] = True
        index = torch.as_tensor(np.flatnonzero(keep))
        mask = torch.as_tensor(keep, dtype=torch.float32).expand(f.shape[0], -1)
        with torch.inference_mode():
            masked, r_masked, _ = route(f, p, W, iterations, mask)
            alone, r_alone, _ = route(f[:, index], p[:, index], W[index], iterations)
        torch.testing.assert_close(masked, alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(r_masked[:, index], r_alone, atol=1e-6, rtol=1e-5)


def test_coalition_batches_equal_single_masks(features) -> None:
    loaded, _, _, f, p = features
    model, it = loaded.model, loaded.model.config.iterations
    f, p = f[:8], p[:8]
    masks = coalition_masks()
    with torch.inference_mode():
        batched = coalition_logits(f, p, model.W, model.o, it)
        for s in (0, 1, 37, 64, 127):
            one = routing_head(f, p, model.W, model.o, it, masks[s].expand(8, -1)).logits
            torch.testing.assert_close(batched[:, s], one, atol=1e-6, rtol=1e-5)


def test_bad_keep_mask_is_refused(features) -> None:
    from interp.errors import InterpError

    loaded, _, _, f, p = features
    with pytest.raises(InterpError, match="keep mask"):
        route(f, p, loaded.model.W, 2, torch.ones(f.shape[0], 6))


# ----------------------------------------------------------------------------------------------- Shapley


def test_shapley_efficiency_and_captum(features) -> None:
    """Efficiency, a by-hand enumeration of all 7! orders (float64), and Captum's ShapleyValues to 1e-5.

    Captum accumulates its 5040 permutations in float32 (``dtype=torch.float`` in ShapleyValueSampling), ~2e-5 of
    rounding at logits of size ~5; Shapley values are linear in o (r never reads o), so Captum is compared on
    o / 10, where its rounding stays below 1e-5, and the result scaled back.
    """
    import itertools

    captum_attr = pytest.importorskip("captum.attr")
    loaded, _, _, f, p = features
    it = loaded.model.config.iterations
    f, p = f[:3].clone().double(), p[:3].clone().double()
    W, o = loaded.model.W.detach().double(), loaded.model.o.detach().double()
    with torch.inference_mode():
        logits = routing_head(f, p, W, o, it).logits
        target = logits.argmax(1)
        phi = shapley_values(f, p, W, o, it, target)
        game = coalition_logits(f, p, W, o, it)[torch.arange(3), :, target].numpy()  # (3, 128)
    # efficiency: sum = logit(all) - logit(none), and logit(none) = 0
    torch.testing.assert_close(phi.sum(1), logits.gather(1, target[:, None])[:, 0], atol=1e-9, rtol=0)

    by_hand = np.zeros((3, 7))
    for order in itertools.permutations(range(7)):
        coalition = 0
        for i in order:
            by_hand[:, i] += game[:, coalition | (1 << i)] - game[:, coalition]
            coalition |= 1 << i
    np.testing.assert_allclose(phi.numpy(), by_hand / math.factorial(7), atol=1e-9, rtol=0)

    def forward(keep: torch.Tensor) -> torch.Tensor:
        rows = keep.shape[0] // f.shape[0]
        return routing_head(f.repeat(rows, 1, 1), p.repeat(rows, 1), W, o / 10, it, keep).logits

    with torch.no_grad():
        reference = captum_attr.ShapleyValues(forward).attribute(
            torch.ones(3, 7, dtype=torch.float64), baselines=torch.zeros(3, 7, dtype=torch.float64), target=target,
            perturbations_per_eval=50)
    torch.testing.assert_close(phi / 10, reference.to(phi.dtype), atol=1e-5, rtol=0)


def test_shapley_equals_contributions_without_routing() -> None:
    """For the gam head (r = 1/J) logits are linear in the kept features, so Shapley values are the contributions."""
    torch.manual_seed(0)
    model = RoutingModel(ModelConfig(task="sentiment", variant="gam", input_dims=(3, 2, 2), n_concepts=7, d_model=8,
                                     n_heads=2, n_layers=1, d_feature=6, d_concept=5)).eval()
    with torch.inference_mode():
        f, p = model.features(torch.randn(4, 3, 3), torch.randn(4, 3, 2), torch.randn(4, 3, 2))
        head = routing_head(f, p, model.W, model.o, 0)
        target = head.logits.argmax(1)
        phi = shapley_values(f, p, model.W, model.o, 0, target)
    torch.testing.assert_close(phi, head.contributions[torch.arange(4), :, target], atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------------------------- the four checks


@pytest.fixture(scope="module")
def result(trained_checkpoint: Path, synth_data: Path):
    loaded = load_checkpoint(trained_checkpoint)
    return compute_faithfulness(loaded, [load_dataset(synth_data).splits["test"]], resamples=100, seed=0)


def test_routing_order_beats_random_on_planted_data(result) -> None:
    deletion = result.summary["checks"]["deletion"]
    diff = next(d for d in deletion["differences"]
                if (d["first"], d["second"], d["quantity"]) == ("routing", "random", "logit_drop"))
    assert diff["estimate"] > AOPC_MARGIN and diff["low"] > 0
    assert diff["kind"] == "samples" and diff["n"] == result.summary["n"] and diff["baseline"] == 0.0
    aopc = {(a["order"], a["quantity"]): a["estimate"] for a in deletion["aopc"]}
    assert aopc[("reverse", "logit_drop")] < aopc[("random", "logit_drop")] < aopc[("routing", "logit_drop")]
    curves = result.tables["deletion"]
    ends = curves[(curves.quantity == "logit_drop") & (curves.k.isin([0, 7]))]
    # every order starts at no change and ends at the same point (all removed: logits 0)
    assert np.allclose(ends[ends.k == 0]["estimate"], 0) and np.ptp(ends[ends.k == 7]["estimate"]) < 1e-9


def test_randomising_o_changes_contributions_but_not_r(result) -> None:
    stages = {s["stage"]: s for s in result.summary["checks"]["randomisation"]}
    assert stages["o"]["contribution_spearman"]["high"] < 0.5  # clearly below 1
    assert stages["o"]["r_spearman"]["estimate"] == pytest.approx(1.0)  # r never reads o
    assert stages["encoders"]["rbar_spearman"]["estimate"] < 0.9


def test_randomised_models_leave_the_model_and_global_rng_alone(trained_checkpoint: Path) -> None:
    loaded = load_checkpoint(trained_checkpoint)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    state = torch.get_rng_state()
    stages = randomised_models(loaded.model, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(stages["o"].o, loaded.model.o) and torch.equal(stages["o"].W, loaded.model.W)
    assert not torch.equal(stages["W"].W, loaded.model.W) and torch.equal(stages["W"].head_weight, loaded.model.head_weight)
    assert not torch.equal(stages["encoders"].head_weight, loaded.model.head_weight)


def test_uniform_routing_metrics_match_an_independent_gam_head(result, features) -> None:
    from interp.metrics import task_metrics
    from interp.targets import targets

    loaded, split, _, f, p = features
    with torch.inference_mode():
        concepts = (p[:, :, None, None] * torch.einsum("bif,ifjc->bijc", f, loaded.model.W)).sum(1) / 7
        logits = torch.einsum("bjc,jc->bj", concepts, loaded.model.o).numpy()
    expected = task_metrics("sentiment", logits, targets(split.labels, "sentiment"), loaded.concepts,
                            scores=split.labels.reshape(-1))
    metrics = {m["metric"]: m for m in result.summary["checks"]["uniform"]["metrics"]}
    assert metrics["acc7"]["uniform"] == pytest.approx(expected["acc7"])
    assert metrics["mae"]["uniform"] == pytest.approx(expected["mae"], abs=1e-6)


# ----------------------------------------------------------------------------------------------- CLI and report


def test_cli_writes_json_tables_and_report_section(trained_checkpoint: Path, extracted_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(extracted_run, run)
    code, out, err = _cli("faithfulness", "--ckpt", str(trained_checkpoint), "--run", str(run), "--quiet",
                          "--bootstrap-samples", "100", "--device", "cpu")
    assert code == 0, err
    summary = json.loads((run / "faithfulness.json").read_text())
    assert summary["checks"]["identity"]["max_abs_logit_vs_run"] < 1e-5
    assert summary["checks"]["shapley"]["efficiency_max_abs_error"] < 1e-4
    assert set(summary["verdicts"]) == {"deletion", "uniform", "shapley", "randomisation"}
    for name in ("deletion", "summary", "samples"):
        parquet = pd.read_parquet(run / f"faithfulness_{name}.parquet")
        assert len(parquet) == len(pd.read_csv(run / f"faithfulness_{name}.csv")) > 0
    samples = pd.read_parquet(run / "faithfulness_samples.parquet")
    assert len(samples) == 7 * summary["n"]
    assert np.allclose(samples.groupby("sample_id", sort=False)["shapley"].sum(),
                       samples.groupby("sample_id", sort=False)["contribution"].sum(), atol=1e-4)
    code, _, err = _cli("report", "--run", str(run), "--out", str(tmp_path / "report"))
    assert code == 0, err
    html = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert 'id="faithfulness"' in html and "Can you trust these explanations?" in html
    assert html.count('data-check="') == 4 and "How to read this" in html


def test_cli_bad_input_is_one_line(trained_checkpoint: Path, extracted_run: Path, tmp_path: Path) -> None:
    from interp.synth import write_synthetic

    code, _, err = _cli("faithfulness", "--ckpt", str(trained_checkpoint), "--split", "nope", "--out", str(tmp_path))
    assert code == 2 and err.startswith("interp: error:") and "split" in err and err.count("\n") == 1

    other = write_synthetic(tmp_path / "other.pkl", n_train=20, n_valid=10, n_test=10, dims=(5, 4, 3)).data_path
    code, _, err = _cli("faithfulness", "--ckpt", str(trained_checkpoint), "--data", str(other), "--out", str(tmp_path))
    assert code == 2 and "input dims" in err and err.count("\n") == 1

    checkpoint = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    checkpoint["train"]["note"] = "another checkpoint"
    torch.save(checkpoint, tmp_path / "other.pt")
    code, _, err = _cli("faithfulness", "--ckpt", str(tmp_path / "other.pt"), "--run", str(extracted_run))
    assert code == 2 and "another checkpoint" in err and err.count("\n") == 1
    assert not (extracted_run / "faithfulness.json").exists()
