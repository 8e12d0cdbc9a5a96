"""`interp data inspect FILE`: what a data file holds, and what interp would refuse, before any training.

:func:`inspect_data` reads the file with the same restricted unpickler and loader as training
(:func:`interp.data.load_dataset`), so what it reports is what `interp train` would see: the layout (MulT or
MMSA), per split N, per modality T and d, the padding side and the real lengths, the non-finite values that would
be replaced by 0, the label distribution (the 7 sentiment classes ``clip(round(y), -3, 3)`` and the signs), the
videos and segments per video, whether transcripts, CH-SIMS per-modality labels and a planted-truth map are
present, and every refusal (the loader's, and which tasks the labels fit). A file the loader refuses is still
described from its raw keys and shapes. :meth:`DataInspection.render` is the terminal table; ``to_dict`` the JSON.
"""

from __future__ import annotations

import io
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from interp.data import Dataset, Split, load_dataset, read_planted
from interp.pickles import safe_load_pickle
from interp.errors import DataError
from interp.metrics import sentiment_classes
from interp.mmsa import detect_layout, split_id
from interp.padding import length_summary, zero_run
from interp.schema import MODALITIES, TASK_CONCEPTS
from interp.targets import targets

#: Sentiment scores of the 7 classes, in order.
CLASS_SCORES: tuple[int, ...] = (-3, -2, -1, 0, 1, 2, 3)


@dataclass(frozen=True)
class DataInspection:
    """What :func:`inspect_data` found; ``splits`` holds one plain dict per split (see :meth:`to_dict`)."""

    path: Path
    size_bytes: int
    layout: str | None
    layout_forced: bool
    loaded: bool
    splits: dict[str, dict[str, Any]]
    planted: dict[str, str] | None
    refusals: list[str] = field(default_factory=list)
    tasks: dict[str, str] = field(default_factory=dict)  # task -> "ok" or the refusal

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN as None)."""
        return _jsonable({
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "layout": self.layout,
            "layout_forced": self.layout_forced,
            "loaded": self.loaded,
            "splits": self.splits,
            "planted": self.planted,
            "tasks": self.tasks,
            "refusals": self.refusals,
        })

    def render(self, width: int = 120) -> str:
        """The inspection as text: a modality table, a label table, then videos, extras and refusals."""
        buffer = io.StringIO()
        console = Console(file=buffer, width=width, color_system=None, highlight=False, soft_wrap=False)
        layout = f"{self.layout} ({'forced by --format' if self.layout_forced else 'detected'})" if self.layout else "?"
        console.print(Text(f"{self.path} ({self.size_bytes:,} bytes): layout {layout}, "
                           f"{'loads' if self.loaded else 'REFUSED by the loader'}"))
        modalities = Table(title="modalities", title_justify="left")
        for name, justify in (("split", "left"), ("N", "right"), ("modality", "left"), ("T", "right"), ("d", "right"),
                              ("padding", "left"), ("length min/median/max", "right"), ("padded", "right"),
                              ("non-finite", "right")):
            modalities.add_column(name, justify=justify)  # type: ignore[arg-type]
        for split_name, info in self.splits.items():
            for modality, m in (info.get("modalities") or {}).items():
                lengths = m.get("lengths") or {}
                modalities.add_row(
                    split_name, _num(info.get("n")), modality, _num(m.get("T")), _num(m.get("d")),
                    str(m.get("padding", "—")),
                    "/".join(_num(lengths.get(k)) for k in ("min", "median", "max")) if lengths else "—",
                    f"{100 * lengths['padded_fraction']:.0f}%" if lengths.get("padded_fraction") is not None else "—",
                    _num(m.get("nonfinite")),
                )
        console.print(modalities)
        labels = Table(title="labels (sentiment classes clip(round(y), -3, 3); signs)", title_justify="left")
        labels.add_column("split")
        labels.add_column("shape")
        for score in CLASS_SCORES:
            labels.add_column(f"{score:+d}" if score else "0", justify="right")
        for name in ("neg", "zero", "pos", "range"):
            labels.add_column(name, justify="right")
        for split_name, info in self.splits.items():
            lab = info.get("labels") or {}
            classes = lab.get("classes") or {}
            signs = lab.get("signs") or {}
            low, high = lab.get("min"), lab.get("max")
            shape = lab.get("shape")
            labels.add_row(split_name, "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
                           if shape else "—",
                           *[_num(classes.get(str(s))) if classes else "—" for s in CLASS_SCORES],
                           *[_num(signs.get(k)) if signs else "—" for k in ("neg", "zero", "pos")],
                           f"[{low:.3g}, {high:.3g}]" if low is not None and high is not None else "—")
        console.print(labels)
        for split_name, info in self.splits.items():
            videos = info.get("videos")
            video_text = (f"{videos['count']} videos, segments per video min/median/max "
                          f"{videos['segments_min']}/{_num(videos['segments_median'])}/{videos['segments_max']}"
                          if videos else "videos unknown")
            console.print(Text(
                f"{split_name}: {video_text}; transcripts {'yes' if info.get('transcripts') else 'no'}; "
                f"per-modality labels {'yes (' + ', '.join(info['modality_labels']) + ')' if info.get('modality_labels') else 'no'}"
                + (f"; keys: {', '.join(info['keys'])}" if not self.loaded and info.get("keys") else "")
            ))
        planted = ", ".join(f"{c}<-{f}" for c, f in self.planted.items()) if self.planted else "no"
        console.print(Text(f"planted truth: {planted}"))
        short = {t: v.split(";")[0] + (")" if v.count("(") > v.split(";")[0].count(")") else "") for t, v in self.tasks.items()}
        console.print(Text("tasks: " + "; ".join(f"{t}: {v}" for t, v in short.items()) if short else "tasks: —"))
        if self.refusals:
            for refusal in self.refusals:
                console.print(Text(f"refused: {refusal}"))
        else:
            console.print(Text("refused: nothing"))
        return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()).strip("\n")


def inspect_data(path: Path | str, format: str | None = None) -> DataInspection:
    """Inspect a data pickle (see the module docstring). A missing file raises DataError; a refused one is reported."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist or is not a file; pass the path of a data pickle")
    size = path.stat().st_size
    refusals: list[str] = []
    try:
        raw = safe_load_pickle(path)
    except DataError as error:
        return DataInspection(path, size, None, format is not None, False, {}, None, [str(error)])
    layout = format or detect_layout(raw)
    dataset: Dataset | None = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-finite replacements are counted in the table instead
            dataset = load_dataset(path, format=format)
    except DataError as error:
        refusals.append(str(error))
    if dataset is None:
        return DataInspection(path, size, layout, format is not None, False, _raw_splits(raw), _planted(path), refusals)
    splits = {name: _split_info(name, split, dataset, raw) for name, split in dataset.splits.items()}
    tasks = {task: _task_fit(dataset, task) for task in TASK_CONCEPTS}
    for task, verdict in tasks.items():
        if verdict != "ok" and not any(v == "ok" for v in tasks.values()):
            refusals.append(f"task {task}: {verdict}")
    missing = [name for name in ("train", "valid") if name not in dataset.splits]
    if missing:
        refusals.append(f"`interp train` needs train and valid splits; this file lacks {', '.join(missing)}")
    if "test" not in dataset.splits:
        refusals.append("`interp eval` / `interp extract` default to the test split, which this file lacks")
    return DataInspection(path, size, dataset.layout, format is not None, True, splits, dataset.planted, refusals, tasks)


def _split_info(name: str, split: Split, dataset: Dataset, raw: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"n": split.n, "padding_side": split.padding}
    info["modalities"] = {m: _modality_info(name, m, split, dataset) for m in MODALITIES}
    info["labels"] = _label_info(split.labels)
    info["transcripts"] = split.transcripts is not None
    info["modality_labels"] = sorted(split.modality_labels) if split.modality_labels else None
    info["videos"] = _video_info(_videos(split, raw, name))
    renamed = _renamed_ids(raw, name, dataset.layout, split)
    if renamed:
        info["ids_renamed"] = renamed
    return info


def _modality_info(split_name: str, modality: str, split: Split, dataset: Dataset) -> dict[str, Any]:
    array = split.modality(modality)
    steps = int(array.shape[1])
    info: dict[str, Any] = {"T": steps, "d": int(array.shape[2]),
                            "nonfinite": int(dataset.nonfinite.get(f"{split_name}/{modality}", 0))}
    index = MODALITIES.index(modality)
    if split.lengths is not None:
        lengths = split.lengths[:, index]
        info["padding"] = split.padding if bool((lengths < steps).any()) else "none"
    else:
        lengths = np.full(split.n, steps)
        info["padding"] = "none"
        if dataset.layout == "mult" and steps > 1:
            trailing = zero_run(array, "end")
            if bool((trailing > 0).any()):
                info["trailing_zero_steps"] = int((trailing > 0).sum())  # MulT pads at the start: a hint only
    info["lengths"] = length_summary(lengths, steps)
    return info


def _label_info(labels: np.ndarray) -> dict[str, Any]:
    info: dict[str, Any] = {"shape": ["N", *map(int, labels.shape[1:])], "min": float(labels.min()),
                            "max": float(labels.max())}
    if labels.ndim == 1:
        classes = Counter(int(c) - 3 for c in sentiment_classes(labels))
        info["classes"] = {str(s): int(classes.get(s, 0)) for s in CLASS_SCORES}
        info["signs"] = {"neg": int((labels < 0).sum()), "zero": int((labels == 0).sum()), "pos": int((labels > 0).sum())}
    return info


def _videos(split: Split, raw: Any, name: str) -> list[str] | None:
    """Video of each sample: the loader's (MMSA ids), else the first column of a MulT (N, k) id array."""
    videos = getattr(split, "videos", None)
    if videos is not None:
        return list(videos)
    value = _raw_split(raw, name).get("id") if isinstance(_raw_split(raw, name), Mapping) else None
    if value is None:
        return None
    array = np.asarray(value, dtype=object).reshape(split.n, -1)
    if array.shape[1] >= 2:
        return [str(v.decode() if isinstance(v, bytes) else v) for v in array[:, 0]]
    ids = [str(v.decode() if isinstance(v, bytes) else v) for v in array[:, 0]]
    return [split_id(i)[0] for i in ids] if any("$_$" in i for i in ids) else None


def _video_info(videos: list[str] | None) -> dict[str, Any] | None:
    if not videos:
        return None
    counts = np.array(list(Counter(videos).values()))
    return {"count": int(len(counts)), "segments_min": int(counts.min()), "segments_median": float(np.median(counts)),
            "segments_max": int(counts.max())}


def _renamed_ids(raw: Any, name: str, layout: str, split: Split) -> int:
    """How many ids the loader changed (duplicates renamed ``#k``, or a ``<split>/`` prefix)."""
    value = _raw_split(raw, name).get("id") if isinstance(_raw_split(raw, name), Mapping) else None
    if value is None:
        return 0
    array = np.asarray(value, dtype=object).reshape(split.n, -1)
    if layout == "mult" and array.shape[1] > 1:
        return 0  # joined or last column: not comparable one to one
    original = [str(v.decode() if isinstance(v, bytes) else v).strip() for v in array[:, -1]]
    return int(sum(a != b for a, b in zip(original, split.ids)))


def _raw_split(raw: Any, name: str) -> Any:
    if not isinstance(raw, Mapping):
        return {}
    keys = (name,) + (("dev", "val", "validation") if name == "valid" else ())
    return next((raw[k] for k in keys if k in raw), {})


def _raw_splits(raw: Any) -> dict[str, dict[str, Any]]:
    """Keys and shapes of each split of a file the loader refused."""
    out: dict[str, dict[str, Any]] = {}
    for name in ("train", "valid", "test"):
        value = _raw_split(raw, name)
        if isinstance(value, Mapping) and value:
            out[name] = {"keys": [f"{k} {tuple(np.shape(v))}" for k, v in value.items()]}
    return out


def _task_fit(dataset: Dataset, task: str) -> str:
    for split in dataset.splits.values():
        try:
            targets(split.labels, task)
        except DataError as error:
            return f"refused ({error})"
    return "ok"


def _planted(path: Path) -> dict[str, str] | None:
    try:
        info = read_planted(path)
    except DataError:
        return None
    return dict(info["planted"]) if info is not None else None


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value
