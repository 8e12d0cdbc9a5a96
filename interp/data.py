"""Loading data sets in the MulT pickle layout, safely.

Layout (DESIGN.md, "Data")::

    {split: {"text": (N, T_t, d_t), "audio": (N, T_a, d_a), "vision": (N, T_v, d_v),
             "labels": (N, ...), "id": (N,) or (N, k), ["transcript": (N,)]}}   for split in train / valid / test

The pickle is read with a restricted unpickler (:mod:`interp.pickles`) that admits numpy's array reconstruction
and plain containers only; anything else (``os.system``, ``builtins.eval``, any class) is refused before it can run. Non-finite values
(-inf, +inf, NaN) in the modality arrays are replaced by 0 and counted per ``"split/modality"``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from interp.errors import DataError, DataWarning
from interp.mmsa import SplitExtras, detect_layout, mmsa_to_mult
from interp.padding import stack_lengths
from interp.pickles import BackgroundSha256, check_file, safe_load_pickle
from interp.guard import check_nesting, check_planted_info, clean_texts, read_json
from interp.schema import LAYOUTS, MODALITIES, SPLITS
from interp.targets import squeeze_sample_axes

#: Other names some pickles use for the validation split.
_VALID_ALIASES: tuple[str, ...] = ("dev", "val", "validation")
#: Suffix of the planted-truth map written beside synthetic data: ``<stem>.planted.json``.
PLANTED_SUFFIX = ".planted.json"

@dataclass
class Split:
    """One split of a data set.

    ``text``, ``audio``, ``vision``: float32 arrays of shape (N, T_m, d_m), non-finite values already replaced by 0.
    ``labels``: float32 raw labels with singleton axes after the first removed: (N,) for sentiment, (N, 6) for
    emotion, (N, 4) or (N, 4, 2) for IEMOCAP; turn them into training targets with :func:`targets`.
    ``ids``: N sample ids, unique within the whole data set. ``transcripts``: N strings, or None.
    ``lengths``: (N, 3) int64 real steps per modality (text, audio, vision) or None (all full length);
    ``padding``: the side padded (``end`` MMSA, ``start`` MulT, ``none``), see :mod:`interp.padding`.
    ``modality_labels``: CH-SIMS per-modality labels ``{"T", "A", "V": (N,) float32}`` or None.
    ``videos``: N video ids (segments of one video share it; see :func:`video_ids`); when the data names no videos,
    each sample is its own video (filled in from ``ids`` when left empty).
    """

    name: str
    text: np.ndarray
    audio: np.ndarray
    vision: np.ndarray
    labels: np.ndarray
    ids: list[str]
    transcripts: list[str] | None = None
    lengths: np.ndarray | None = None
    padding: str = "none"
    modality_labels: dict[str, np.ndarray] | None = None
    videos: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.videos:
            self.videos = list(self.ids)
        if len(self.videos) != len(self.ids):
            raise DataError(f"split {self.name!r} has {len(self.videos)} video ids for {len(self.ids)} samples")

    @property
    def n(self) -> int:
        """Number of samples N."""
        return int(self.labels.shape[0])

    def modality(self, name: str) -> np.ndarray:
        """The (N, T, d) array of a modality named as in :data:`interp.schema.MODALITIES`."""
        if name not in MODALITIES:
            raise DataError(f"unknown modality {name!r}; choose one of {', '.join(MODALITIES)}")
        return getattr(self, name)


@dataclass
class Dataset:
    """A loaded data set.

    ``path``: the resolved file; ``sha256``: hex digest of its bytes; ``splits``: name -> :class:`Split` in the
    order train, valid, test; ``nonfinite``: count of replaced non-finite values per ``"split/modality"`` and in
    ``"total"``; ``planted``: the planted ``{concept: feature}`` map read from ``<stem>.planted.json`` beside the
    data (synthetic data), else None; ``planted_info``: that whole JSON document, else None; ``layout``: ``mult``
    or ``mmsa`` (:data:`interp.schema.LAYOUTS`).
    """

    path: Path
    sha256: str
    splits: dict[str, Split]
    nonfinite: dict[str, int]
    planted: dict[str, str] | None = None
    planted_info: dict[str, Any] | None = field(default=None, repr=False)
    layout: str = "mult"


# ---------------------------------------------------------------------------------------------------- loading


def load_dataset(path: Path | str, format: str | None = None) -> Dataset:
    """Load and validate a data pickle; raises :class:`DataError` on bad input.

    ``format``: ``mult`` (see the module docstring) or ``mmsa`` (:mod:`interp.mmsa`); None detects it from the keys.
    """
    path = Path(path).expanduser()
    check_file(path)
    path = path.resolve()
    if format is not None and format not in LAYOUTS:
        raise DataError(f"unknown data format {format!r}; choose {' or '.join(LAYOUTS)} (or leave it out to detect it)")
    hashing = BackgroundSha256(path)  # hashed while the file is unpickled and checked below
    raw = safe_load_pickle(path)
    check_nesting(raw, str(path))
    layout = format or detect_layout(raw)
    extras: dict[str, SplitExtras] = {}
    if layout == "mmsa":
        split_dicts, extras = mmsa_to_mult(raw, path)
    else:
        split_dicts = _split_dicts(raw, path)
    nonfinite: dict[str, int] = {}
    splits = {name: _load_split(name, value, nonfinite) for name, value in split_dicts.items()}
    for name, split in splits.items():
        _set_padding(split, extras.get(name), layout)
    nonfinite["total"] = int(sum(nonfinite.values()))
    if nonfinite["total"]:
        where = ", ".join(f"{key}: {count}" for key, count in nonfinite.items() if key != "total" and count)
        warnings.warn(
            f"{path.name}: replaced {nonfinite['total']} non-finite feature values (-inf/+inf/NaN) by 0 ({where}); "
            f"the counts are recorded in the checkpoint and in the run's meta.json",
            DataWarning,
            stacklevel=2,
        )
    _check_dims_agree(splits)
    _make_ids_unique(splits)
    digest = hashing.result()
    info = read_planted(path, digest)
    planted = dict(info["planted"]) if info is not None else None
    return Dataset(path=path, sha256=digest, splits=splits, nonfinite=nonfinite, planted=planted, planted_info=info,
                   layout=layout)


def _set_padding(split: Split, extras: SplitExtras | None, layout: str) -> None:
    """Fill a split's lengths, padding side, videos and per-modality labels, in place (after cleaning).

    MMSA: end padding, stored lengths where the file has them, else trailing all-zero steps. MulT: start
    padding, detected as leading all-zero steps (MulT files store no lengths).
    """
    arrays = {m: split.modality(m) for m in MODALITIES}
    side = "end" if layout == "mmsa" else "start"
    split.lengths = stack_lengths(arrays, extras.lengths if extras is not None else {}, side)
    split.padding = side if split.lengths is not None else "none"
    if extras is not None:
        if extras.videos:
            split.videos = list(extras.videos)
        split.modality_labels = extras.modality_labels


def _split_dicts(raw: Any, path: Path) -> dict[str, Mapping[str, Any]]:
    """The split dicts of the top-level object, keyed by canonical split name in the order train, valid, test."""
    if not isinstance(raw, Mapping):
        raise DataError(
            f"{path} holds a {type(raw).__name__}, not a dict of splits; "
            "expected the MulT layout {train|valid|test: {text, audio, vision, labels, id}}"
        )
    found: dict[str, Any] = {}
    for name in SPLITS:
        keys = (name,) + (_VALID_ALIASES if name == "valid" else ())
        key = next((k for k in keys if k in raw), None)
        if key is not None:
            found[name] = raw[key]
    if not found:
        keys = ", ".join(repr(k) for k in list(raw)[:10]) or "none"
        raise DataError(f"{path} has no train, valid or test split (top-level keys: {keys}); expected the MulT layout")
    for name, value in found.items():
        if not isinstance(value, Mapping):
            raise DataError(f"split {name!r} of {path} is a {type(value).__name__}, not a dict of arrays")
    return found


def _load_split(name: str, raw: Mapping[str, Any], nonfinite: dict[str, int]) -> Split:
    """Validate one split dict and build its :class:`Split`; records non-finite counts in ``nonfinite``."""
    missing = [key for key in (*MODALITIES, "labels") if key not in raw]
    if missing:
        hint = "; this looks like the MMSA layout: pass --format mmsa" if "regression_labels" in raw else ""
        raise DataError(
            f"split {name!r} lacks {', '.join(missing)}; each split needs text, audio, vision and labels arrays{hint}"
        )
    arrays: dict[str, np.ndarray] = {}
    for modality in MODALITIES:
        array, count = _modality_array(name, modality, raw[modality])
        arrays[modality] = array
        nonfinite[f"{name}/{modality}"] = count
    labels = _label_array(name, raw["labels"])
    sizes = {**{m: a.shape[0] for m, a in arrays.items()}, "labels": labels.shape[0]}
    if len(set(sizes.values())) != 1:
        listing = ", ".join(f"{k} {v}" for k, v in sizes.items())
        raise DataError(f"split {name!r} has different numbers of samples per array ({listing}); they must agree")
    n = labels.shape[0]
    if n < 1:
        raise DataError(f"split {name!r} is empty (0 samples); remove it or fill it")
    ids = _raw_ids(name, raw.get("id"), n)
    transcripts = _transcripts(name, raw.get("transcript"), n)
    videos = video_ids(raw.get("id"), ids)
    return Split(name, arrays["text"], arrays["audio"], arrays["vision"], labels, ids, transcripts, videos=videos)


def _modality_array(split: str, modality: str, value: Any) -> tuple[np.ndarray, int]:
    """(N, T, d) float32 array of one modality with non-finite values set to 0, and how many there were.

    A 2-D (N, d) array gets T = 1. Values beyond float32's range become inf on conversion and are counted too.
    """
    where = f"{split}/{modality}"
    _refuse_complex(where, value)
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise DataError(f"{where} is not a numeric array ({' '.join(str(error).split())[:120]})") from None
    if array.ndim == 2:
        array = array[:, None, :]
    if array.ndim != 3:
        raise DataError(f"{where} has shape {tuple(array.shape)}; expected (N, T, d) or (N, d)")
    if array.shape[1] < 1 or array.shape[2] < 1:
        raise DataError(f"{where} has shape {tuple(array.shape)}; sequence length and feature size must be >= 1")
    if np.isfinite(array.sum()):  # a NaN or inf makes the sum non-finite: one pass, no mask, in the common case
        return np.ascontiguousarray(array), 0
    mask = ~np.isfinite(array)  # (overflow of a finite sum lands here too, and counts 0)
    count = int(mask.sum())
    if count:
        if not array.flags.writeable:
            array = array.copy()
        array[mask] = 0.0
    return np.ascontiguousarray(array), count


def _label_array(split: str, value: Any) -> np.ndarray:
    """Float32 labels with singleton axes after the first dropped: (N,1,1) -> (N,), (N,1,6) -> (N,6)."""
    _refuse_complex(f"{split}/labels", value)
    try:
        labels = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise DataError(f"{split}/labels is not a numeric array ({' '.join(str(error).split())[:120]})") from None
    if labels.ndim == 0:
        raise DataError(f"{split}/labels is a single number; expected one label per sample, shape (N, ...)")
    labels = squeeze_sample_axes(labels)
    bad = int((~np.isfinite(labels)).sum())
    if bad:
        raise DataError(f"{split}/labels has {bad} non-finite values (NaN or inf); fix or drop those samples")
    return labels


def _refuse_complex(where: str, value: Any) -> None:
    """Complex numbers would lose their imaginary part silently on the conversion to float32."""
    try:
        complex_values = np.iscomplexobj(value) or (
            isinstance(value, np.ndarray) and value.dtype == object and any(isinstance(v, complex) for v in value.flat))
    except (TypeError, ValueError):
        return  # not array-like: the conversion below says so
    if complex_values:
        raise DataError(f"{where} holds complex numbers; features and labels must be real numbers")


def _to_texts(values: Any) -> list[str]:
    """A str from each str / numpy str / bytes / number element (bytes decoded as UTF-8; lone UTF-16 surrogates,
    which no file format can encode, written as ``\\udcXX`` escapes)."""
    return clean_texts([bytes(v).decode("utf-8", errors="replace") if isinstance(v, (bytes, bytearray, np.bytes_))
                        else str(v) for v in values])


def _raw_ids(split: str, value: Any, n: int) -> list[str]:
    """Sample ids of one split before de-duplication.

    ``id`` of shape (N,) -> str of each; (N, k) -> the last column if its values are unique, else the columns
    joined with "_"; absent -> ``"<split>-<row>"``.
    """
    if value is None:
        return [f"{split}-{row}" for row in range(n)]
    array = np.asarray(value, dtype=object)
    if array.ndim == 0 or array.shape[0] != n:
        shape = tuple(array.shape)
        raise DataError(f"{split}/id has shape {shape} but the split has {n} samples; expected (N,) or (N, k)")
    table = array.reshape(n, -1)
    if table.shape[1] == 0:
        return [f"{split}-{row}" for row in range(n)]
    columns = [[text.strip() for text in _to_texts(table[:, k])] for k in range(table.shape[1])]
    last = columns[-1]
    if len(columns) == 1 or len(set(last)) == n:
        return last
    return ["_".join(parts) for parts in zip(*columns)]


#: Separator of video and clip in MMSA-style ids (``<video>$_$<clip>``).
MMSA_ID_SEPARATOR = "$_$"


def video_ids(value: Any, ids: list[str]) -> list[str]:
    """The video of each sample, from the raw ``id`` array (checked by :func:`_raw_ids`) and the split's ``ids``.

    ``id`` of shape (N, k) with k >= 2 (MulT: ``[video, segment, ...]``) -> its first column; (N,) ids of the form
    ``<video>$_$<clip>`` (MMSA) -> the part before ``$_$``; otherwise (no ``id``, or one plain id per sample) the
    data names no videos and each sample is its own video (its id).
    """
    if value is None:
        return list(ids)
    table = np.asarray(value, dtype=object).reshape(len(ids), -1)
    if table.shape[1] >= 2:
        return [text.strip() for text in _to_texts(table[:, 0])]
    if table.shape[1] == 1:
        raw = [text.strip() for text in _to_texts(table[:, 0])]
        if raw and all(MMSA_ID_SEPARATOR in text for text in raw):
            return [text.split(MMSA_ID_SEPARATOR, 1)[0] for text in raw]
    return list(ids)


def _transcripts(split: str, value: Any, n: int) -> list[str] | None:
    """The split's transcripts as N strings, or None when the data has none."""
    if value is None:
        return None
    array = np.asarray(value, dtype=object).reshape(-1)
    if array.shape[0] != n:
        raise DataError(f"{split}/transcript has {array.shape[0]} entries but the split has {n} samples")
    return _to_texts(array)


def _make_ids_unique(splits: dict[str, Split]) -> None:
    """Make ids unique across the data set, in place.

    Repeats within a split get a ``#k`` suffix (k = 2, 3, ... in row order); if any id then occurs in more than
    one split, every id of every split is prefixed with ``"<split>/"``.
    """
    for split in splits.values():
        split.ids = _dedupe(split.ids)
    seen: set[str] = set()
    clash = False
    for split in splits.values():
        if seen.intersection(split.ids):
            clash = True
            break
        seen.update(split.ids)
    if clash:
        for name, split in splits.items():
            split.ids = [f"{name}/{sample_id}" for sample_id in split.ids]


def _dedupe(ids: list[str]) -> list[str]:
    """``ids`` with repeats renamed ``<id>#2``, ``<id>#3``, ... in row order, skipping names already in use."""
    taken = set(ids)
    if len(taken) == len(ids):
        return list(ids)
    seen: set[str] = set()
    out: list[str] = []
    for sample_id in ids:
        name = sample_id
        if name in seen:
            k = 2
            while f"{sample_id}#{k}" in seen or f"{sample_id}#{k}" in taken:
                k += 1
            name = f"{sample_id}#{k}"
        seen.add(name)
        out.append(name)
    return out


def _check_dims_agree(splits: dict[str, Split]) -> None:
    """Raise DataError if feature sizes d_m differ between splits."""
    first_name, first = next(iter(splits.items()))
    reference = input_dims(first)
    for name, split in splits.items():
        dims = input_dims(split)
        if dims != reference:
            diffs = ", ".join(
                f"{m} {first_name} d={a} vs {name} d={b}" for m, a, b in zip(MODALITIES, reference, dims) if a != b
            )
            raise DataError(f"feature sizes differ between splits ({diffs}); all splits must share them")


def planted_path_for(data_path: Path | str) -> Path:
    """Where the planted JSON of a data file lives: ``<stem>.planted.json`` beside it."""
    path = Path(data_path)
    return path.with_name(path.stem + PLANTED_SUFFIX)


def read_planted(path: Path | str, sha256: str | None = None) -> dict[str, Any] | None:
    """The planted-truth JSON beside a data file (``<stem>.planted.json``), or None if there is none.

    If the JSON records ``data_sha256`` and ``sha256`` is given, they must match (a stale map would mislead
    every report that compares planted with recovered links).
    """
    path = Path(path)
    sidecar = planted_path_for(path)
    if not sidecar.is_file():
        return None
    info = check_planted_info(read_json(sidecar, DataError, "delete it or regenerate the data"), str(sidecar))
    recorded = info.get("data_sha256")
    if sha256 is not None and recorded is not None and recorded != sha256:
        raise DataError(
            f"the planted map {sidecar} was written for another version of {path.name}; "
            "regenerate both with `interp data synth` or delete the map"
        )
    return info


# ------------------------------------------------------------------------------------------------ accessors


def get_split(dataset: Dataset, name: str) -> Split:
    """The split called ``name``; raises DataError listing the available splits."""
    try:
        return dataset.splits[name]
    except KeyError:
        available = ", ".join(dataset.splits) or "none"
        raise DataError(f"{dataset.path.name} has no split {name!r}; available: {available}") from None


def input_dims(split: Split) -> tuple[int, int, int]:
    """Feature sizes (d_text, d_audio, d_vision) of a split."""
    return (int(split.text.shape[2]), int(split.audio.shape[2]), int(split.vision.shape[2]))


def seq_lens(split: Split) -> tuple[int, int, int]:
    """Sequence lengths (T_text, T_audio, T_vision) of a split."""
    return (int(split.text.shape[1]), int(split.audio.shape[1]), int(split.vision.shape[1]))
