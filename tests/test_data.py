"""Tests of interp.data: the restricted unpickler, validation, non-finite cleaning, ids and targets."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from interp.data import get_split, input_dims, load_dataset, seq_lens
from interp.pickles import sha256_file
from interp.errors import DataError
from interp.targets import targets

MOSI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cmu-mosi-utterance" / "mosi_utterance.pkl"


def _split(
    n: int, rng: np.random.Generator, dims: tuple[int, int, int] = (4, 3, 2), t: int = 5, start: int = 0
) -> dict:
    """A valid split dict with n samples (ids numbered from ``start``), sequence length t and feature sizes dims."""
    return {
        "text": rng.standard_normal((n, t, dims[0])).astype(np.float32),
        "audio": rng.standard_normal((n, t, dims[1])).astype(np.float32),
        "vision": rng.standard_normal((n, t, dims[2])).astype(np.float32),
        "labels": rng.uniform(-3, 3, size=(n, 1, 1)).astype(np.float32),
        "id": np.array([[f"vid{k}", str(k), f"vid{k}_{k}"] for k in range(start, start + n)], dtype=str),
    }


def _write(path: Path, obj: object) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


class _Evil:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_refuses_os_system_and_runs_nothing(tmp_path: Path, rng: np.random.Generator) -> None:
    marker = tmp_path / "pwned"
    path = _write(tmp_path / "evil.pkl", {"train": {**_split(3, rng), "labels": _Evil(marker)}})
    with pytest.raises(DataError) as info:
        load_dataset(path)
    message = str(info.value)
    assert "os.system" in message
    assert "refuses to load" in message
    assert "\n" not in message
    assert not marker.exists()


def test_refuses_builtins_eval(tmp_path: Path) -> None:
    class Eval:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (eval, ("1 + 1",))

    path = _write(tmp_path / "eval.pkl", {"train": Eval()})
    with pytest.raises(DataError, match=r"refuses to load .* names builtins\.eval"):
        load_dataset(path)


def test_plain_arrays_load_and_nonfinite_counted(tmp_path: Path, rng: np.random.Generator) -> None:
    train, test = _split(6, rng), _split(4, rng, start=6)
    train["audio"][0, 0, 0] = -np.inf
    train["audio"][1, 2, 1] = np.nan
    train["audio"][5, 4, 2] = np.inf
    test["vision"][3, :, 1] = np.nan  # 5 values
    path = _write(tmp_path / "d.pkl", {"train": train, "test": test})
    data = load_dataset(path)
    assert list(data.splits) == ["train", "test"]
    assert data.nonfinite["train/audio"] == 3
    assert data.nonfinite["test/vision"] == 5
    assert data.nonfinite["train/text"] == 0
    assert data.nonfinite["total"] == 8
    audio = data.splits["train"].audio
    assert audio.dtype == np.float32 and np.isfinite(audio).all()
    assert audio[0, 0, 0] == 0 and audio[1, 2, 1] == 0 and audio[5, 4, 2] == 0
    assert audio[2, 0, 0] == pytest.approx(float(train["audio"][2, 0, 0]))
    assert data.sha256 == sha256_file(path)
    assert data.planted is None
    split = get_split(data, "train")
    assert split.n == 6 and split.labels.shape == (6,)
    assert input_dims(split) == (4, 3, 2) and seq_lens(split) == (5, 5, 5)
    assert split.ids == [f"vid{k}_{k}" for k in range(6)]


def test_two_dimensional_modalities_get_length_one(tmp_path: Path, rng: np.random.Generator) -> None:
    split = _split(3, rng)
    split["text"] = split["text"][:, 0, :]
    data = load_dataset(_write(tmp_path / "d.pkl", {"valid": split}))
    assert data.splits["valid"].text.shape == (3, 1, 4)


def test_ids_made_unique(tmp_path: Path, rng: np.random.Generator) -> None:
    train, test = _split(3, rng), _split(2, rng)
    train["id"] = np.array([b"x", b"y", b"x"])  # bytes, a repeat within the split
    test["id"] = np.array(["y", "z"])  # "y" also in train
    del_ids = _split(2, rng)
    del del_ids["id"]
    data = load_dataset(_write(tmp_path / "d.pkl", {"train": train, "test": test, "valid": del_ids}))
    assert data.splits["train"].ids == ["train/x", "train/y", "train/x#2"]
    assert data.splits["test"].ids == ["test/y", "test/z"]
    assert data.splits["valid"].ids == ["valid/valid-0", "valid/valid-1"]
    every = [i for s in data.splits.values() for i in s.ids]
    assert len(set(every)) == len(every)


def test_id_columns_joined_when_last_not_unique(tmp_path: Path, rng: np.random.Generator) -> None:
    split = _split(3, rng)
    split["id"] = np.array([["a", "0"], ["a", "1"], ["b", "0"]])
    data = load_dataset(_write(tmp_path / "d.pkl", {"train": split}))
    assert data.splits["train"].ids == ["a_0", "a_1", "b_0"]


def test_mosi_real_data() -> None:
    if not MOSI.is_file():
        pytest.skip(f"real CMU-MOSI data not found at {MOSI}")
    data = load_dataset(MOSI)
    expected = {"train": 1285, "valid": 162, "test": 752}
    assert {name: s.n for name, s in data.splits.items()} == expected
    for name, n in expected.items():
        split = data.splits[name]
        assert split.text.shape == (n, 1, 100)
        assert split.audio.shape == (n, 1, 73)
        assert split.vision.shape == (n, 1, 100)
        assert split.transcripts is not None and len(split.transcripts) == n
        assert all(isinstance(i, str) and i for i in split.ids)
        classes = targets(split.labels, "sentiment")
        assert classes.dtype == np.int64 and classes.min() >= 0 and classes.max() <= 6
    every = [i for s in data.splits.values() for i in s.ids]
    assert len(set(every)) == len(every)
    assert all("_" in i and "/" not in i for i in every)  # the segment-id column "<video>_<segment>", unprefixed


def test_sentiment_targets_round_and_clip() -> None:
    y = np.array([-3.0, -3.0, -2.6, -0.6, 0.4, 0.5, 1.5, 2.5, 2.6, 3.0], dtype=np.float32)
    expected = np.array([0, 0, 0, 2, 3, 3, 5, 5, 6, 6])  # halves round to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2
    for shape in [(10,), (10, 1), (10, 1, 1)]:
        got = targets(y.reshape(shape), "sentiment")
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected)


def test_sentiment_clip_within_tolerance() -> None:
    np.testing.assert_array_equal(targets(np.array([-3.00001, 3.00001]), "sentiment"), [0, 6])


def test_emotion_and_iemocap_targets() -> None:
    scores = np.array([[0.0, 0.3, 0, 2, 0, -1e-6], [1, 0, 0, 0, 0.01, 0]], dtype=np.float32)
    expected = np.array([[0, 1, 0, 1, 0, 0], [1, 0, 0, 0, 1, 0]], dtype=np.float32)
    for labels in (scores, scores[:, None, :]):
        got = targets(labels, "emotion")
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
    positive = np.array([[1, 0, 0, 1], [0, 0, 1, 0]])
    one_hot = np.stack([1 - positive, positive], axis=-1)  # (N, 4, 2), index 1 = present
    np.testing.assert_array_equal(targets(one_hot, "iemocap"), positive)
    np.testing.assert_array_equal(targets(positive, "iemocap"), positive)
    with pytest.raises(DataError, match="intensities >= 0"):  # MOSEI scores are 0..3: a negative one is wrong data
        targets(scores - 0.5, "emotion")


@pytest.mark.parametrize(
    ("labels", "task", "pattern"),
    [
        (np.zeros((4, 6)), "sentiment", r"pass --task emotion"),
        (np.zeros((4, 1, 1)), "emotion", r"task emotion needs 6 emotion scores"),
        (np.zeros((4, 4, 2)), "emotion", r"pass --task iemocap"),
        (np.zeros((4, 6)), "iemocap", r"needs 4 emotion scores"),
        (np.array([0.0, 3.5]), "sentiment", r"\[-3, 3\]"),
    ],
)
def test_targets_reject_wrong_shape_or_range(labels: np.ndarray, task: str, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        targets(labels, task)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope.pkl")


def test_truncated_and_garbage_files(tmp_path: Path, rng: np.random.Generator) -> None:
    whole = pickle.dumps({"train": _split(5, rng)}, protocol=4)
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="may be truncated"):
        load_dataset(cut)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"this is not a pickle at all")
    with pytest.raises(DataError, match="not a complete data pickle"):
        load_dataset(junk)


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda d: d["train"].pop("vision"), r"split 'train' lacks vision"),
        (lambda d: d.update(train={k: v[:0] for k, v in d["train"].items()}), r"split 'train' is empty"),
        (lambda d: d["train"].update(labels=np.full((5,), 7.0)), None),  # loads; targets refuses
        (lambda d: d["train"].update(labels=np.array([0, 1, np.nan, 0, 0.0])), r"non-finite"),
        (lambda d: d["train"].update(audio=d["train"]["audio"][:4]), r"different numbers of samples"),
        (lambda d: d["test"].update(text=np.zeros((2, 5, 9), np.float32)), r"feature sizes differ"),
        (lambda d: d["train"].update(text=np.zeros(5)), r"expected \(N, T, d\)"),
        (lambda d: d.clear() or d.update(other={}), r"no train, valid or test split"),
    ],
)
def test_layout_errors(
    tmp_path: Path, rng: np.random.Generator, mutate: Callable[[dict], object], pattern: str | None
) -> None:
    data = {"train": _split(5, rng), "test": _split(2, rng)}
    mutate(data)
    path = _write(tmp_path / "bad.pkl", data)
    if pattern is None:
        loaded = load_dataset(path)
        with pytest.raises(DataError, match=r"\[-3, 3\]"):
            targets(loaded.splits["train"].labels, "sentiment")
        return
    with pytest.raises(DataError, match=pattern):
        load_dataset(path)


def test_not_a_dict(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a dict of splits"):
        load_dataset(_write(tmp_path / "list.pkl", [1, 2, 3]))


def test_get_split_lists_available(tmp_path: Path, rng: np.random.Generator) -> None:
    data = load_dataset(_write(tmp_path / "d.pkl", {"train": _split(2, rng)}))
    with pytest.raises(DataError, match="available: train"):
        get_split(data, "test")


def test_finite_values_whose_sum_overflows_are_kept_and_inf_plus_minus_inf_is_counted(tmp_path: Path) -> None:
    """The non-finite count skips its mask when the float32 sum is finite; a sum that overflows (all values
    finite) and +inf next to -inf (sum NaN) must still come out right."""
    rng = np.random.default_rng(0)
    big = np.finfo(np.float32).max / 2

    def split(n: int) -> dict:
        return {"text": np.full((n, 3, 4), big, dtype=np.float32),
                "audio": rng.standard_normal((n, 3, 2)).astype(np.float32),
                "vision": rng.standard_normal((n, 3, 2)).astype(np.float32),
                "labels": rng.uniform(-3, 3, size=(n, 1, 1)).astype(np.float32)}

    train, test = split(6), split(4)
    train["audio"][0, 0, 0], train["audio"][1, 1, 1] = np.inf, -np.inf
    path = _write(tmp_path / "d.pkl", {"train": train, "test": test})
    data = load_dataset(path)
    assert data.nonfinite["train/text"] == 0 and (data.splits["train"].text == big).all()
    assert data.nonfinite["train/audio"] == 2 and data.nonfinite["total"] == 2
    assert data.splits["train"].audio[0, 0, 0] == 0 and data.splits["train"].audio[1, 1, 1] == 0
