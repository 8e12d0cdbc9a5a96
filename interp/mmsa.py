"""Reading the MMSA layout (the ``mmsa`` framework's ``aligned_50.pkl`` / ``unaligned_50.pkl`` files).

Layout, per split ``train`` / ``valid`` / ``test``::

    text (N, T, d)            feature arrays (GloVe / BERT hidden states); padded at the end
    text_bert (N, 3, T)       BERT token ids, attention mask and segment ids: NOT features (its mask row gives
                              the text lengths when it is present beside ``text``)
    audio, vision (N, T, d)   padded at the end; unaligned files add audio_lengths / vision_lengths (N,)
    regression_labels (N,)    sentiment in [-3, 3]; CH-SIMS adds regression_labels_T / _A / _V per modality
    id (N,)                   "<video>$_$<clip>"
    raw_text (N,)             transcripts

:func:`detect_layout` tells MMSA from MulT by the keys; :func:`mmsa_to_mult` translates an MMSA dict into the
MulT split dicts that :func:`interp.data.load_dataset` validates (so the same restricted unpickler and the same
non-finite cleaning apply) plus, per split, :class:`SplitExtras`: stored lengths, videos and per-modality labels.
Lengths missing from the file (text without ``text_bert``, aligned audio / vision) are detected after cleaning as
the trailing all-zero steps (:mod:`interp.padding`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from interp.errors import DataError
from interp.padding import checked_lengths

#: Separator of video and clip in MMSA sample ids.
ID_SEPARATOR = "$_$"
#: CH-SIMS per-modality label keys, by the modality letter used in samples.parquet (``label_T`` ...).
MODALITY_LABEL_KEYS: dict[str, str] = {"T": "regression_labels_T", "A": "regression_labels_A", "V": "regression_labels_V"}
#: Keys only the MMSA layout has (any one of them, without ``labels``, means MMSA).
_MMSA_KEYS: frozenset[str] = frozenset({"regression_labels", "raw_text", "audio_lengths", "vision_lengths", "text_bert"})
_SPLIT_KEYS: dict[str, tuple[str, ...]] = {"train": ("train",), "valid": ("valid", "dev", "val", "validation"),
                                           "test": ("test",)}


@dataclass(frozen=True)
class SplitExtras:
    """What an MMSA split holds beyond the MulT layout.

    ``lengths``: stored real lengths per modality name, (N,) int64 in [1, T] (None where the file stores none:
    detected later); ``videos``: N video names (the part of each id before ``$_$``); ``modality_labels``:
    CH-SIMS labels ``{"T": (N,), "A": (N,), "V": (N,)}`` float32, or None.
    """

    lengths: dict[str, np.ndarray | None] = field(default_factory=dict)
    videos: list[str] | None = None
    modality_labels: dict[str, np.ndarray] | None = None


def _split_dicts(raw: Mapping[str, Any]) -> dict[str, Any]:
    found = {}
    for name, keys in _SPLIT_KEYS.items():
        key = next((k for k in keys if k in raw), None)
        if key is not None:
            found[name] = raw[key]
    return found


def detect_layout(raw: Any) -> str:
    """``"mmsa"`` when the splits carry MMSA keys (``regression_labels``, ``raw_text``, ``*_lengths``,
    ``text_bert``) and no MulT ``labels``; ``"mult"`` otherwise (the MulT loader then explains what is wrong)."""
    if not isinstance(raw, Mapping):
        return "mult"
    for value in _split_dicts(raw).values():
        if isinstance(value, Mapping):
            keys = set(value)
            if "labels" not in keys and keys & _MMSA_KEYS:
                return "mmsa"
    return "mult"


def split_id(sample_id: str) -> tuple[str, str]:
    """(video, clip) of an MMSA id ``"<video>$_$<clip>"``; an id without the separator is its own video, clip ""."""
    video, sep, clip = sample_id.partition(ID_SEPARATOR)
    return (video, clip) if sep else (sample_id, "")


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def mmsa_to_mult(raw: Any, source: object) -> tuple[dict[str, dict[str, Any]], dict[str, SplitExtras]]:
    """Translate an MMSA dict into MulT split dicts and each split's :class:`SplitExtras`.

    Raises DataError (one line, naming ``source``) on a non-MMSA object, a split without ``regression_labels``,
    or a split whose only text is ``text_bert`` (token ids, not features).
    """
    if not isinstance(raw, Mapping):
        raise DataError(f"{source} holds a {type(raw).__name__}, not a dict of splits; expected the MMSA layout")
    splits = _split_dicts(raw)
    if not splits:
        keys = ", ".join(repr(k) for k in list(raw)[:10]) or "none"
        raise DataError(f"{source} has no train, valid or test split (top-level keys: {keys}); expected the MMSA layout")
    out: dict[str, dict[str, Any]] = {}
    extras: dict[str, SplitExtras] = {}
    for name, value in splits.items():
        if not isinstance(value, Mapping):
            raise DataError(f"split {name!r} of {source} is a {type(value).__name__}, not a dict of arrays")
        out[name], extras[name] = _translate_split(name, value, source)
    return out, extras


def _translate_split(name: str, raw: Mapping[str, Any], source: object) -> tuple[dict[str, Any], SplitExtras]:
    if "text" not in raw and "text_bert" in raw:
        raise DataError(
            f"split {name!r} of {source} holds text only as 'text_bert' (BERT token ids, attention mask and segment "
            "ids), not as feature vectors; interp needs (N, T, d) text features under 'text': extract them (e.g. BERT "
            "hidden states, as MMSA's feature files do) and store them as 'text'"
        )
    if "regression_labels" not in raw:
        if "labels" in raw:
            raise DataError(f"{source} looks like the MulT layout ('labels', no 'regression_labels'); "
                            "drop --format mmsa or pass --format mult")
        raise DataError(f"split {name!r} of {source} lacks 'regression_labels'; each MMSA split needs "
                        "text, audio, vision and regression_labels")
    split: dict[str, Any] = {key: raw[key] for key in ("text", "audio", "vision") if key in raw}
    split["labels"] = raw["regression_labels"]
    n = int(np.asarray(raw["regression_labels"]).reshape(-1).shape[0])
    ids = None
    if "id" in raw:
        ids = [_text(v).strip() for v in np.asarray(raw["id"], dtype=object).reshape(-1)]
        if len(ids) != n:
            raise DataError(f"{name}/id has {len(ids)} entries but the split has {n} samples")
        split["id"] = np.asarray(ids, dtype=object)
    if "raw_text" in raw:
        split["transcript"] = raw["raw_text"]
    lengths: dict[str, np.ndarray | None] = {}
    for modality in ("audio", "vision"):
        key = f"{modality}_lengths"
        if key in raw and modality in raw:
            steps = int(np.shape(raw[modality])[1]) if np.ndim(raw[modality]) == 3 else 1
            lengths[modality] = checked_lengths(f"{name}/{key}", raw[key], n, steps)
    lengths["text"] = _bert_lengths(name, raw, n)
    modality_labels = None
    if all(key in raw for key in MODALITY_LABEL_KEYS.values()):
        modality_labels = {}
        for letter, key in MODALITY_LABEL_KEYS.items():
            values = np.asarray(raw[key], dtype=np.float32).reshape(-1)
            if values.shape[0] != n or not np.isfinite(values).all():
                raise DataError(f"{name}/{key} must hold {n} finite labels, one per sample")
            modality_labels[letter] = values
    videos = [split_id(i)[0] for i in ids] if ids is not None else None
    return split, SplitExtras(lengths=lengths, videos=videos, modality_labels=modality_labels)


def _bert_lengths(name: str, raw: Mapping[str, Any], n: int) -> np.ndarray | None:
    """Text lengths from ``text_bert``'s attention-mask row when it matches ``text``'s time axis, else None."""
    if "text_bert" not in raw or np.ndim(raw.get("text")) != 3:
        return None
    bert = np.asarray(raw["text_bert"])
    steps = int(np.shape(raw["text"])[1])
    if bert.ndim != 3 or bert.shape[0] != n or bert.shape[1] != 3 or bert.shape[2] != steps:
        return None
    return checked_lengths(f"{name}/text_bert mask", bert[:, 1, :].sum(axis=1), n, steps)
