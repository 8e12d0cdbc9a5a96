"""Tests of interp.synth: determinism, the layout the loader expects, the planted map, and that the signal is real."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from interp.data import load_dataset
from interp.errors import InterpError
from interp.schema import FEATURE_MODALITIES as SCHEMA_MODALITIES
from interp.schema import FEATURE_NAMES, FEATURES, MODALITIES, TASK_CONCEPTS, related_features
from interp.synth import synthesize, write_synthetic
from interp.targets import targets

SMALL = {"n_train": 600, "n_valid": 100, "n_test": 150}
# Modalities (indices into MODALITIES) that each feature combines, written out independently of the code.
FEATURE_MODALITIES = {"t": (0,), "a": (1,), "v": (2,), "ta": (0, 1), "av": (1, 2), "vt": (0, 2), "tav": (0, 1, 2)}


def test_write_is_deterministic(tmp_path: Path) -> None:
    first = write_synthetic(tmp_path / "a" / "one.pkl", seed=3, **SMALL)
    second = write_synthetic(tmp_path / "b" / "one.pkl", seed=3, **SMALL)
    other = write_synthetic(tmp_path / "c" / "one.pkl", seed=4, **SMALL)
    assert first.data_path.read_bytes() == second.data_path.read_bytes()
    assert first.planted_path.read_bytes() == second.planted_path.read_bytes()
    assert load_dataset(first.data_path).sha256 == load_dataset(second.data_path).sha256
    assert load_dataset(other.data_path).sha256 != load_dataset(first.data_path).sha256
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("task", sorted(TASK_CONCEPTS))
def test_loads_with_planted_map(tmp_path: Path, task: str) -> None:
    result = write_synthetic(tmp_path / "synth.pkl", task=task, seq_len=4, seed=1, **SMALL)
    assert result.planted_path == tmp_path / "synth.planted.json"
    info = json.loads(result.planted_path.read_text())
    assert info["task"] == task
    assert info["planted"] == result.planted
    assert set(result.planted) == set(TASK_CONCEPTS[task])
    assert set(result.planted.values()) <= set(FEATURES)
    assert len(set(result.planted.values()) & {"t", "a", "v"}) >= 1  # a modality drives some concept
    assert len(set(result.planted.values()) - {"t", "a", "v"}) >= 1  # and an interaction another

    data = load_dataset(result.data_path)
    assert data.planted == result.planted
    assert {name: s.n for name, s in data.splits.items()} == {"train": 600, "valid": 100, "test": 150}
    assert data.nonfinite["total"] == 0
    every = [i for s in data.splits.values() for i in s.ids]
    assert len(set(every)) == len(every) and not any("/" in i for i in every)
    train = data.splits["train"]
    assert train.text.shape == (600, 4, 16) and train.audio.shape == (600, 4, 12) and train.vision.shape == (600, 4, 10)
    assert train.transcripts is not None and len(train.transcripts) == 600
    y = targets(train.labels, task)
    if task == "sentiment":
        shares = np.bincount(y, minlength=7) / len(y)
        assert shares.min() >= 0.05, shares
    else:
        rates = y.mean(axis=0)
        assert (rates > 0.3).all() and (rates < 0.7).all(), rates


def test_stale_planted_map_is_refused(tmp_path: Path) -> None:
    result = write_synthetic(tmp_path / "s.pkl", seed=0, **SMALL)
    other = write_synthetic(tmp_path / "t.pkl", seed=1, **SMALL)
    result.data_path.write_bytes(other.data_path.read_bytes())
    with pytest.raises(InterpError, match="planted map"):
        load_dataset(result.data_path)


def _latent_estimates(split: dict) -> np.ndarray:
    """Estimate each modality's hidden latent (N, 3), up to sign, as the first principal component of the
    time-averaged features: the planted signal is the strongest direction in each modality."""
    columns = []
    for modality in MODALITIES:
        x = split[modality].mean(axis=1)
        x = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        columns.append(x @ vt[0])
    return np.stack(columns, axis=1)


def _sign_agreement(latents: np.ndarray, feature: str, members: np.ndarray) -> float:
    """|2 P(prod sign z_m = +1) - 1| over the member samples: 1 if the sign product is constant on them."""
    signs = np.prod(np.sign(latents[members][:, list(FEATURE_MODALITIES[feature])]), axis=1)
    return float(abs(signs.mean()))


@pytest.mark.parametrize("task", sorted(TASK_CONCEPTS))
def test_planted_feature_drives_its_concept(task: str) -> None:
    """Samples of a concept share the sign (product) of its planted feature's latents, and no other feature's."""
    data, planted = synthesize(task, n_train=1500, n_valid=1, n_test=1, seed=7)
    train = data["train"]
    latents = _latent_estimates(train)
    y = targets(train["labels"], task)
    for j, concept in enumerate(TASK_CONCEPTS[task]):
        members = (y == j) if task == "sentiment" else (y[:, j] > 0)
        scores = {feature: _sign_agreement(latents, feature, members) for feature in FEATURES}
        # Observation noise flips a few estimated signs (more for interactions), hence not exactly 1.
        assert scores[planted[concept]] > 0.75, (concept, scores)
        others = [s for f, s in scores.items() if f != planted[concept]]
        assert max(others) < 0.5, (concept, scores)


def test_interactions_invisible_to_single_modalities() -> None:
    """An interaction-driven emotion is not predictable linearly from any one modality (least squares)."""
    data, planted = synthesize("emotion", n_train=1500, n_valid=1, n_test=1, seed=2)
    train = data["train"]
    y = targets(train["labels"], "emotion")
    for j, concept in enumerate(TASK_CONCEPTS["emotion"]):
        feature = planted[concept]
        for m, modality in enumerate(MODALITIES):
            x = np.c_[np.ones(len(y)), train[modality].mean(axis=1)]
            coef, *_ = np.linalg.lstsq(x, y[:, j] - 0.5, rcond=None)
            accuracy = float(((x @ coef > 0) == (y[:, j] > 0)).mean())
            if FEATURE_MODALITIES[feature] == (m,):
                assert accuracy > 0.9, (concept, modality, accuracy)
            else:
                assert accuracy < 0.65, (concept, modality, accuracy)


def test_shapes_and_ids_of_synthesize() -> None:
    data, _ = synthesize("iemocap", n_train=5, n_valid=2, n_test=3, seq_len=3, dims=(7, 5, 1), seed=0)
    assert data["valid"]["text"].shape == (2, 3, 7) and data["test"]["vision"].shape == (3, 3, 1)
    assert data["train"]["labels"].shape == (5, 4, 2)
    ids = np.concatenate([data[s]["id"][:, 2] for s in ("train", "valid", "test")])
    assert len(set(ids.tolist())) == 10
    assert all(data[s]["text"].dtype == np.float32 for s in data)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"task": "mood"},
        {"n_train": 0},
        {"n_test": -1},
        {"seq_len": 0},
        {"noise": -0.1},
        {"noise": float("nan")},
        {"seed": -1},
        {"dims": (4, 4)},
        {"planted": {"-3": "a"}},
        {"planted": {c: "x" for c in TASK_CONCEPTS["sentiment"]}},
    ],
)
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(InterpError) as info:
        synthesize(**{"n_train": 5, "n_valid": 2, "n_test": 2, **kwargs})
    assert "\n" not in str(info.value)


def test_feature_modalities_agree_with_the_feature_names() -> None:
    """The one feature→modality map (planting here, the model's cross-modal pairs, the report's related features)
    says what the long names say: ``vt`` is vision+text = (2, 0); features nest when one's modalities hold the other's."""
    assert list(SCHEMA_MODALITIES) == list(FEATURES)
    for feature in FEATURES:
        assert SCHEMA_MODALITIES[feature] == tuple(MODALITIES.index(m) for m in FEATURE_NAMES[feature].split("+"))
        assert set(SCHEMA_MODALITIES[feature]) == set(FEATURE_MODALITIES[feature])  # this file's own map
    nested = {(a, b) for a in FEATURES for b in FEATURES if related_features(a, b)}
    assert ("t", "ta") in nested and ("ta", "tav") in nested and ("vt", "t") in nested
    assert ("t", "av") not in nested and ("ta", "av") not in nested and ("t", "t") not in nested
    assert all((b, a) in nested for a, b in nested)
