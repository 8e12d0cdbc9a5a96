"""Synthetic data with planted truth: which feature (modality or interaction) drives which concept.

Generation (from ``numpy.random.default_rng(seed)``; the grouping into videos from a second generator seeded with
``(seed, 1)``):

0. Samples are segments of *videos*, as in real data: each split is cut into videos of 4-12 consecutive segments
   (:data:`SEGMENTS_PER_VIDEO`), and a video never spans two splits (speaker independent, as MOSI's splits).

1. Each modality m in (text, audio, vision) has a fixed random unit *signal* direction u_m and an orthogonal
   unit *distractor* direction q_m in its d_m-dimensional feature space.
2. Each sample has hidden latents z_m ~ N(0, 1) (one per modality) and distractors w_m ~ N(0, 1). The segments
   of one video share a per-video offset o_m ~ N(0, 1): ``z_m = sqrt(1 - s) * e_m + sqrt(s) * o_m`` with e_m ~ N(0, 1)
   per segment and s = :data:`VIDEO_SHARE`, so z_m is still N(0, 1) (every statement below holds unchanged) but
   segments of one video are not independent. Every time step
   of modality m is ``SIGNAL * z_m * u_m + DISTRACTOR * w_m * q_m + noise * N(0, I)``, so any step (the last one
   included) carries the latent and attention can average the noise away.
3. A feature F (a set of modalities: t, a, v, ta, av, vt, tav) gives the evidence
   ``e_F = prod_m sign(z_m) * G_k(min_m |z_m|)`` with k = |F| and ``G_k(y) = 1 - (2 Phi(-y))^k``. Every e_F is
   exactly Uniform(-1, 1), so no concept is favoured: for k = 1 this is ``2 Phi(z) - 1`` (monotone in the
   modality), for k >= 2 its sign is the *interaction* (the product of the modalities' signs), which no single
   modality, nor any sum of unimodal terms, can predict.
4. Concept j's evidence is the evidence of its planted feature. ``sentiment``: the class is the concept with the
   largest evidence, written as the score ``class - 3 + Uniform(-0.3, 0.3)`` clipped to [-3, 3] (so
   ``clip(round(y), -3, 3)`` recovers it). ``emotion``: score ``3 * max(e_j, 0)`` (MOSEI-like, 0 = absent), positive
   when ``> 0``. ``iemocap``: MulT's (N, 4, 2) one-hot, positive (index 1) when ``e_j > 0``.

The planted map is saved as ``<stem>.planted.json`` beside the pickle; :func:`interp.data.load_dataset` reads it.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.special import ndtr

from interp.runs import atomic_write_bytes
from interp.data import planted_path_for
from interp.errors import InterpError
from interp.guard import check_memory, check_seed
from interp.outputs import looks_like_synthetic
from interp.schema import FEATURE_MODALITIES, FEATURES, MODALITIES, SPLITS, TASK_CONCEPTS, concept_names

#: Norm of the signal direction in every time step (the latent's amplitude).
SIGNAL = 2.0
#: Norm of the distractor direction (weaker than the signal, irrelevant to every label).
DISTRACTOR = 1.0
#: Half-width of the uniform jitter added to sentiment classes (below 0.5 so rounding recovers the class).
SENTIMENT_JITTER = 0.3
#: Default feature sizes (d_text, d_audio, d_vision).
DEFAULT_DIMS: tuple[int, int, int] = (16, 12, 10)
#: Memory while generating, per feature value (float32 kept, float64 temporaries, the pickled copy) and per sample
#: (its id, transcript and labels as Python objects); :func:`interp.guard.check_memory` refuses more than half
#: the machine's memory.
BYTES_PER_VALUE = 24
BYTES_PER_SAMPLE = 600

#: Segments per synthetic video, drawn uniformly from this inclusive range (the last video of a split may differ).
SEGMENTS_PER_VIDEO: tuple[int, int] = (4, 12)
#: Share of each latent's variance that the segments of one video have in common (their per-video offset).
VIDEO_SHARE = 0.3
#: Format tag of the planted JSON.
PLANTED_FORMAT = "interp-synthetic"

#: Default planted maps: every concept driven by a different feature, unimodal and interactions mixed.
DEFAULT_PLANTED: dict[str, dict[str, str]] = {
    "sentiment": {"-3": "a", "-2": "vt", "-1": "v", "0": "tav", "1": "av", "2": "t", "3": "ta"},
    "emotion": {"happy": "t", "sad": "a", "angry": "ta", "fear": "v", "disgust": "av", "surprise": "tav"},
    "iemocap": {"neutral": "v", "happy": "t", "sad": "a", "angry": "ta"},
}



@dataclass
class SynthResult:
    """What :func:`write_synthetic` wrote: the pickle, the planted JSON, and the planted {concept: feature} map."""

    data_path: Path
    planted_path: Path
    planted: dict[str, str]
    sha256: str = ""


# ------------------------------------------------------------------------------------------------- generation


def synthesize(
    task: str = "sentiment",
    n_train: int = 2000,
    n_valid: int = 400,
    n_test: int = 600,
    seq_len: int = 8,
    noise: float = 0.5,
    seed: int = 0,
    dims: Sequence[int] = DEFAULT_DIMS,
    planted: Mapping[str, str] | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """A synthetic data set in the MulT pickle layout and its planted ``{concept: feature}`` map.

    Each split holds text / audio / vision float32 arrays (N, seq_len, d_m) with d = ``dims``, labels
    ((N, 1, 1) sentiment scores, (N, 6) emotion scores, or (N, 4, 2) IEMOCAP one-hot), ``id`` (N, 3) str
    ``[video, segment, "<video>_<segment>"]`` (videos of 4-12 segments whose latents share a per-video offset)
    and ``transcript`` (N,) str. ``planted`` overrides the task's
    default map (every concept must be given a feature). Deterministic given the arguments.
    """
    concepts, mapping, dims3 = _validate(task, n_train, n_valid, n_test, seq_len, noise, seed, dims, planted)
    rng = np.random.default_rng(seed)
    video_rng = np.random.default_rng((seed, 1))
    directions = [_directions(rng, d) for d in dims3]
    sizes = dict(zip(SPLITS, (n_train, n_valid, n_test)))
    data: dict[str, dict[str, np.ndarray]] = {}
    offset, first_video = 0, 0
    for split, n in sizes.items():
        videos = _video_index(video_rng, n)
        data[split] = _split(rng, video_rng, task, concepts, mapping, directions, n, seq_len, noise, offset,
                             videos, first_video)
        offset += n
        first_video += int(videos[-1]) + 1
    return data, mapping


def _validate(
    task: str,
    n_train: int,
    n_valid: int,
    n_test: int,
    seq_len: int,
    noise: float,
    seed: int,
    dims: Sequence[int],
    planted: Mapping[str, str] | None,
) -> tuple[tuple[str, ...], dict[str, str], tuple[int, int, int]]:
    """Check the arguments (one-line InterpError otherwise); returns concepts, planted map and dims."""
    concepts = concept_names(task)
    for name, value in (("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InterpError(f"{name} must be a whole number of at least 1, got {value!r}")
    numeric = isinstance(noise, (int, float, np.floating)) and not isinstance(noise, bool)
    if not numeric or not math.isfinite(noise) or noise < 0:
        raise InterpError(f"noise must be a finite number >= 0, got {noise!r}")
    check_seed(seed)
    dims3 = tuple(dims)
    if len(dims3) != 3 or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in dims3):
        raise InterpError(f"dims must be three feature sizes (text, audio, vision) >= 1, got {dims!r}")
    n_total = int(n_train) + int(n_valid) + int(n_test)
    check_memory(
        n_total * (BYTES_PER_VALUE * int(seq_len) * sum(int(d) for d in dims3) + BYTES_PER_SAMPLE),
        f"synthetic data of {n_total:,} samples x {seq_len:,} steps x {sum(int(d) for d in dims3)} features",
        "choose fewer samples (--n-train, --n-valid, --n-test) or a shorter --seq-len",
    )
    mapping = dict(DEFAULT_PLANTED[task] if planted is None else planted)
    if set(mapping) != set(concepts):
        raise InterpError(
            f"the planted map must give a feature to each of {', '.join(concepts)}; got {sorted(mapping)}"
        )
    unknown = sorted({f for f in mapping.values() if f not in FEATURES})
    if unknown:
        raise InterpError(f"unknown planted feature(s) {', '.join(unknown)}; choose from {', '.join(FEATURES)}")
    mapping = {c: mapping[c] for c in concepts}
    return concepts, mapping, (int(dims3[0]), int(dims3[1]), int(dims3[2]))


def _directions(rng: np.random.Generator, d: int) -> tuple[np.ndarray, np.ndarray]:
    """A random unit signal direction (d,) and a unit distractor direction orthogonal to it (zeros if d = 1)."""
    signal = rng.standard_normal(d)
    signal /= np.linalg.norm(signal)
    distractor = rng.standard_normal(d)
    distractor -= distractor.dot(signal) * signal
    norm = np.linalg.norm(distractor)
    distractor = distractor / norm if d > 1 and norm > 1e-8 else np.zeros(d)
    return signal, distractor


def _video_index(rng: np.random.Generator, n: int) -> np.ndarray:
    """The video (0, 1, ...) of each of ``n`` consecutive segments, shape (n,): videos of
    :data:`SEGMENTS_PER_VIDEO` segments; a short remainder joins the previous video."""
    low, high = SEGMENTS_PER_VIDEO
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(low, high + 1)))
    sizes[-1] -= sum(sizes) - n
    if sizes[-1] < low and len(sizes) > 1:
        last = sizes.pop()
        sizes[-1] += last
    return np.repeat(np.arange(len(sizes)), sizes)


def evidence(latents: np.ndarray, feature: str) -> np.ndarray:
    """Evidence e_F in (-1, 1) of a feature from latents (N, 3) (columns text, audio, vision); shape (N,).

    ``e_F = prod_m sign(z_m) * (1 - (2 Phi(-min_m |z_m|))^k)``: Uniform(-1, 1) for every feature.
    """
    columns = latents[:, list(FEATURE_MODALITIES[feature])]
    sign = np.prod(np.sign(columns), axis=1)
    smallest = np.abs(columns).min(axis=1)
    return sign * (1.0 - (2.0 * ndtr(-smallest)) ** columns.shape[1])


def _split(
    rng: np.random.Generator,
    video_rng: np.random.Generator,
    task: str,
    concepts: tuple[str, ...],
    planted: dict[str, str],
    directions: list[tuple[np.ndarray, np.ndarray]],
    n: int,
    seq_len: int,
    noise: float,
    offset: int,
    videos: np.ndarray,
    first_video: int,
) -> dict[str, np.ndarray]:
    """One split dict: modality sequences (n, seq_len, d_m), labels, ids (global numbering from ``offset``;
    ``videos`` (n,) the video of each segment, numbered from ``first_video`` in the ids)."""
    shared = video_rng.standard_normal((int(videos[-1]) + 1, len(MODALITIES)))  # per-video offsets o_m
    own = rng.standard_normal((n, len(MODALITIES)))
    latents = math.sqrt(1.0 - VIDEO_SHARE) * own + math.sqrt(VIDEO_SHARE) * shared[videos]
    distractors = rng.standard_normal((n, len(MODALITIES)))
    out: dict[str, np.ndarray] = {}
    for m, modality in enumerate(MODALITIES):
        signal, distractor = directions[m]
        clean = SIGNAL * latents[:, m, None] * signal + DISTRACTOR * distractors[:, m, None] * distractor  # (n, d)
        steps = clean[:, None, :] + noise * rng.standard_normal((n, seq_len, signal.shape[0]))
        out[modality] = steps.astype(np.float32)
    scores = np.stack([evidence(latents, planted[c]) for c in concepts], axis=1)  # (n, J)
    labels, names = _labels(rng, task, concepts, scores)
    out["labels"] = labels
    out["id"], out["transcript"] = _ids_and_transcripts(offset, names, planted, task == "sentiment",
                                                        videos + first_video)
    return out


def _labels(
    rng: np.random.Generator, task: str, concepts: tuple[str, ...], scores: np.ndarray
) -> tuple[np.ndarray, list[list[str]]]:
    """Labels in the MulT layout from concept evidence (n, J), and each sample's positive concept names."""
    if task == "sentiment":
        classes = scores.argmax(axis=1)
        jitter = rng.uniform(-SENTIMENT_JITTER, SENTIMENT_JITTER, size=classes.shape[0])
        y = np.clip(classes - 3 + jitter, -3.0, 3.0)
        return y.astype(np.float32).reshape(-1, 1, 1), [[concepts[k]] for k in classes]
    positive = scores > 0
    names = [[c for c, on in zip(concepts, row) if on] for row in positive]
    if task == "iemocap":
        return np.stack([~positive, positive], axis=-1).astype(np.float32), names
    return (3.0 * np.maximum(scores, 0.0)).astype(np.float32), names


def _ids_and_transcripts(
    offset: int, names: list[list[str]], planted: dict[str, str], sentiment: bool, videos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """MOSI-like ids (n, 3) ``[video, segment, video_segment]`` (``videos`` (n,) global video numbers, consecutive
    segments of a video numbered from 1) and made-up transcripts."""
    rows, transcripts = [], []
    starts = np.r_[0, np.flatnonzero(np.diff(videos)) + 1]
    segment_numbers = np.arange(len(videos)) - np.repeat(starts, np.diff(np.r_[starts, len(videos)])) + 1
    for k, positive in enumerate(names, start=offset):
        video, segment = f"synth{int(videos[k - offset]):05d}", str(int(segment_numbers[k - offset]))
        rows.append((video, segment, f"{video}_{segment}"))
        drivers = ", ".join(f"{c} (driven by {planted[c]})" for c in positive) or "no emotion"
        transcripts.append(f"synthetic segment {k}: {'sentiment ' if sentiment else ''}{drivers}")
    return np.array(rows, dtype=str).reshape(-1, 3), np.array(transcripts, dtype=str)


# ---------------------------------------------------------------------------------------------------- writing


def write_synthetic(
    out: Path | str,
    task: str = "sentiment",
    n_train: int = 2000,
    n_valid: int = 400,
    n_test: int = 600,
    seq_len: int = 8,
    noise: float = 0.5,
    seed: int = 0,
    dims: Sequence[int] = DEFAULT_DIMS,
    planted: Mapping[str, str] | None = None,
) -> SynthResult:
    """Write :func:`synthesize`'s data to ``out`` (pickle protocol 4) and its planted map beside it.

    Both files are written atomically (temp file, then rename) and byte-for-byte deterministic given the arguments.
    """
    out = Path(out)
    for existing, what in ((out, f"--out {out}"), (planted_path_for(out), f"{planted_path_for(out)} (the planted map)")):
        if existing.exists() and not looks_like_synthetic(out, PLANTED_FORMAT):
            raise InterpError(
                f"{what} exists and is not synthetic data written by `interp data synth`; "
                "writing would replace it: choose another --out"
            )
    data, mapping = synthesize(task, n_train, n_valid, n_test, seq_len, noise, seed, dims, planted)
    payload = pickle.dumps(data, protocol=4)
    digest = hashlib.sha256(payload).hexdigest()
    info = _planted_info(task, mapping, seed, noise, seq_len, dims, data, digest)
    planted_file = planted_path_for(out)
    atomic_write_bytes(out, payload)
    atomic_write_bytes(planted_file, (json.dumps(info, indent=2) + "\n").encode("utf-8"))
    return SynthResult(data_path=out, planted_path=planted_file, planted=mapping, sha256=digest)


def _planted_info(
    task: str,
    mapping: dict[str, str],
    seed: int,
    noise: float,
    seq_len: int,
    dims: Sequence[int],
    data: dict[str, dict[str, np.ndarray]],
    digest: str,
) -> dict[str, Any]:
    """The planted JSON document."""
    return {
        "format": PLANTED_FORMAT,
        "version": 1,
        "task": task,
        "planted": mapping,
        "concepts": list(TASK_CONCEPTS[task]),
        "features": list(FEATURES),
        "seed": int(seed),
        "noise": float(noise),
        "seq_len": int(seq_len),
        "dims": dict(zip(MODALITIES, (int(d) for d in dims))),
        "n": {split: int(values["labels"].shape[0]) for split, values in data.items()},
        "videos": {split: len(set(values["id"][:, 0].tolist())) for split, values in data.items()},
        "segments_per_video": list(SEGMENTS_PER_VIDEO),
        "video_share": VIDEO_SHARE,
        "data_sha256": digest,
        "description": (
            "Each modality carries a hidden latent z ~ N(0,1) along a fixed direction in every time step, plus a "
            "weaker distractor and Gaussian noise. A concept's evidence comes only from its planted feature: for a "
            "single modality it grows with z; for an interaction its sign is the product of the modalities' signs. "
            f"Segments come in videos of {SEGMENTS_PER_VIDEO[0]}-{SEGMENTS_PER_VIDEO[1]} whose latents share a "
            f"per-video offset ({VIDEO_SHARE:.0%} of their variance), so they are not independent. "
            + _task_rule(task)
        ),
    }


def _task_rule(task: str) -> str:
    """How labels follow from the evidence, for the JSON description."""
    if task == "sentiment":
        return "The class is the concept with the largest evidence; the score is class + Uniform(-0.3, 0.3)."
    if task == "emotion":
        return "An emotion is present (score > 0) when its evidence is positive; score = 3 * max(evidence, 0)."
    return "An emotion is present (one-hot index 1) when its evidence is positive."
