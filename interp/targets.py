"""Training targets of a task from a data set's raw labels (sentiment classes, emotion / IEMOCAP 0/1 per concept).

Labels that do not fit the task are a one-line :class:`~interp.errors.DataError` that says which ``--task``
would fit.
"""

from __future__ import annotations

import numpy as np

from interp.errors import DataError
from interp.schema import TASK_CONCEPTS, concept_names

#: Sentiment labels may exceed [-3, 3] by this much (float rounding) before they are refused.
SENTIMENT_TOLERANCE = 1e-4


def targets(labels: np.ndarray, task: str) -> np.ndarray:
    """Training targets from raw labels.

    - ``sentiment``: labels (N,), (N, 1) or (N, 1, 1) in [-3, 3] -> int64 class index (N,) in 0..6,
      ``clip(round(y), -3, 3) + 3``. ``np.round`` rounds halves to even (0.5 -> 0, 1.5 -> 2, -2.5 -> -2),
      exactly as MulT does, so our classes match its Acc7.
    - ``emotion``: scores (N, 6) or (N, 1, 6) -> float32 (N, 6) 0/1, ``score > 0``.
    - ``iemocap``: (N, 4) 0/1 scores -> float32 (N, 4), ``score > 0``; or MulT's (N, 4, 2) one-hot per emotion
      -> positive where the argmax over the last axis is 1.
    """
    concepts = concept_names(task)
    array = np.asarray(labels, dtype=np.float64)
    if array.ndim == 0:
        raise DataError("labels are a single number; expected one label per sample")
    array = squeeze_sample_axes(array)
    if not np.isfinite(array).all():
        raise DataError("labels contain NaN or inf; fix or drop those samples")
    if task == "sentiment":
        return _sentiment_targets(array)
    if task == "iemocap" and array.ndim == 3 and array.shape[1:] == (len(concepts), 2):
        return (np.argmax(array, axis=-1) == 1).astype(np.float32)
    if array.ndim != 2 or array.shape[1] != len(concepts):
        raise DataError(
            f"data labels have shape {_shape(labels)} but task {task} needs {len(concepts)} emotion scores "
            f"({', '.join(concepts)}) per sample; {_task_hint(array)}"
        )
    if task == "emotion" and array.size and array.min() < -SENTIMENT_TOLERANCE:
        raise DataError(
            f"emotion scores are intensities >= 0 (0 = absent) but reach {array.min():g}; "
            "check that the data file is the one you meant"
        )
    return (array > 0).astype(np.float32)


def _sentiment_targets(array: np.ndarray) -> np.ndarray:
    """int64 (N,) classes 0..6 from squeezed float64 scores; see :func:`targets`."""
    if array.ndim != 1:
        raise DataError(
            f"data labels have shape {_shape(array)} but task sentiment needs one score in [-3, 3] per sample; "
            f"{_task_hint(array)}"
        )
    worst = float(np.abs(array).max())
    if worst > 3.0 + SENTIMENT_TOLERANCE:
        raise DataError(
            f"sentiment labels must lie in [-3, 3] but reach {worst:g}; rescale them or pass the right --task"
        )
    return (np.clip(np.round(array), -3, 3) + 3).astype(np.int64)


def _shape(array: np.ndarray) -> str:
    """Shape as text, e.g. ``(N=5, 6)``."""
    shape = np.shape(array)
    return "(" + ", ".join([f"N={shape[0]}", *map(str, shape[1:])]) + ")" if shape else "()"


def _task_hint(array: np.ndarray) -> str:
    """Which --task fits labels of this (squeezed) shape."""
    tail = array.shape[1:]
    for task, concepts in TASK_CONCEPTS.items():
        if task == "sentiment" and tail == ():
            return "pass --task sentiment"
        if task != "sentiment" and tail in ((len(concepts),), (len(concepts), 2)):
            if task == "emotion" and tail == (len(concepts), 2):
                continue
            return f"pass --task {task}"
    return "check that the data file is the one you meant"


def squeeze_sample_axes(array: np.ndarray) -> np.ndarray:
    """Drop singleton axes except the first (the sample axis), so N = 1 keeps its axis."""
    return array.reshape((array.shape[0],) + tuple(size for size in array.shape[1:] if size != 1))
