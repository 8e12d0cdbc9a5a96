"""The boundary guard: the declared limits, and the checks every value from a file or an argument passes where it
enters interp (data pickles, planted JSON, checkpoints, meta.json, command-line numbers, output paths).

One place declares what is accepted, so the rest of the code can trust what it is given:

* **Limits** (module constants below) follow from the machine and the model: nesting depth of containers, sizes of
  JSON files, seeds that every RNG in use accepts, learning rates Adam can use, bootstrap resamples, routing
  iterations, model widths, and, for everything that allocates in proportion to a number the user gives (synthetic
  data, model parameters), the machine's memory (:func:`machine_memory`).
* **Schemas** of the files interp reads back: :func:`check_meta`, :func:`check_planted` (checkpoints:
  :func:`interp.checkpoint.check_checkpoint`, with torch);
  :func:`read_json` reads a JSON file with a size and nesting limit, strictly as UTF-8.
* **Outputs** are guarded in :mod:`interp.outputs` (an output is never an input; ``--force`` replaces only a run).
* **Text**: :func:`one_line` and :func:`printable` (messages are one line; control characters are shown escaped),
  :func:`clean_text` (lone UTF-16 surrogates in ids and transcripts), :func:`xml_safe` (SVG text).

Every check raises :class:`~interp.errors.InterpError` (or its subclass for the file kind) with a one-line message.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from interp.errors import DataError, InterpError, RunError
from interp.schema import FEATURES, TASK_CONCEPTS

# ----------------------------------------------------------------------------------------------- declared limits

#: Deepest nesting of containers (dict, list, tuple, set, object array) accepted in a data pickle or a JSON file.
#: The MulT layout needs 3 (dict of dicts of arrays; ids as lists of lists need 5); Python's own recursion limit
#: (1000) is what deeper files would hit in any code that walks them.
MAX_NESTING = 32
#: Largest meta.json / planted JSON read (both are a few kB when written by interp).
MAX_JSON_BYTES = 16 << 20
#: Seeds: non-negative and below 2**32, which numpy (default_rng), torch (manual_seed) and every derived seed
#: (``seed * 100_003 + epoch`` for the epoch order) accept.
MAX_SEED = 2**32 - 1
#: Learning rate of Adam: finite, > 0 and at most 1 (Adam's step is about lr per parameter; above 1 every
#: weight jumps by more than its own scale and the loss diverges).
MAX_LR = 1.0
#: Bootstrap resamples: beyond 10^5 the Monte-Carlo error of a 95% interval's bounds is far below the
#: printed precision, and time and memory grow linearly with the number.
MAX_BOOTSTRAP_SAMPLES = 100_000
#: DataLoader worker processes per CPU core (each is a process holding a copy of the batch pipeline).
MAX_WORKERS_PER_CPU = 2
#: Routing iterations (the paper uses 1 to 3; each one is a full pass over B·7·J·d_c votes).
MAX_ROUTING_ITERATIONS = 64
#: Largest feature size of one modality (BERT-large text features are 1024, raw COVAREP 74, Facet 35-47).
MAX_INPUT_DIM = 1 << 16
#: Largest d_model, d_feature, d_concept (the paper's model uses 200, 64, 64).
MAX_WIDTH = 1 << 14
#: Largest number of encoder layers or attention heads, and of concepts.
MAX_LAYERS = 256
MAX_CONCEPTS = 1024
#: Share of the machine's memory one allocation of interp may plan for.
MEMORY_FRACTION = 0.5
#: Bytes per parameter while training: weights, gradients and Adam's two moments, float32 each.
TRAIN_BYTES_PER_PARAMETER = 16
#: Checkpoint versions this interp reads.
CHECKPOINT_VERSIONS: tuple[int, ...] = (1, 2)  # 2: the resume state is one uint8 tensor (1: a dict)


def machine_memory() -> int:
    """Bytes of memory of this machine (physical memory, or the container's cgroup limit when lower)."""
    try:
        total = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        total = 16 << 30
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def check_memory(n_bytes: float, what: str, hint: str, error: type[InterpError] = InterpError) -> None:
    """Refuse a planned allocation of ``n_bytes`` above :data:`MEMORY_FRACTION` of :func:`machine_memory`."""
    budget = MEMORY_FRACTION * machine_memory()
    if n_bytes > budget:
        raise error(f"{what} would need about {_size(n_bytes)} of memory, more than half of this machine's "
                    f"{_size(machine_memory())}; {hint}")


def _size(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n_bytes) < 1024 or unit == "TB":
            return f"{n_bytes:.3g} {unit}" if unit != "B" else f"{int(n_bytes)} B"
        n_bytes /= 1024
    return f"{n_bytes:.3g} PB"


# -------------------------------------------------------------------------------------------- command-line numbers


def _argument(text: str, kind: Callable[[str], Any]) -> Any:
    try:
        value = kind(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected a {'whole number' if kind is int else 'number'}, got {text!r}") from None
    return value


def seed_arg(text: str) -> int:
    """argparse type of every ``--seed``: a whole number in [0, :data:`MAX_SEED`]."""
    value = _argument(text, int)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must lie in [0, {MAX_SEED}] (2**32 - 1), got {value}")
    return value


def lr_arg(text: str) -> float:
    """argparse type of ``--lr``: a finite number in (0, :data:`MAX_LR`]."""
    value = _argument(text, float)
    if not (math.isfinite(value) and 0.0 < value <= MAX_LR):
        raise argparse.ArgumentTypeError(
            f"the learning rate must be a number in (0, {MAX_LR:g}] (the paper uses 1e-4), got {text}")
    return value


def bootstrap_samples_arg(text: str) -> int:
    """argparse type of ``--bootstrap-samples``: a whole number in [100, :data:`MAX_BOOTSTRAP_SAMPLES`]."""
    value = _argument(text, int)
    if not 100 <= value <= MAX_BOOTSTRAP_SAMPLES:
        raise argparse.ArgumentTypeError(
            f"--bootstrap-samples must lie in [100, {MAX_BOOTSTRAP_SAMPLES}] (2000 is plenty for 95% intervals), "
            f"got {value}")
    return value


def workers_arg(text: str) -> int:
    """argparse type of ``--num-workers``: 0 up to :data:`MAX_WORKERS_PER_CPU` processes per CPU core."""
    value = _argument(text, int)
    limit = MAX_WORKERS_PER_CPU * (os.cpu_count() or 1)
    if not 0 <= value <= limit:
        raise argparse.ArgumentTypeError(
            f"--num-workers must lie in [0, {limit}] ({MAX_WORKERS_PER_CPU} per CPU core of this machine), got {value}")
    return value


def check_seed(seed: Any, what: str = "seed") -> int:
    """A seed given to a library function: a whole number in [0, :data:`MAX_SEED`]."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise InterpError(f"{what} must be a whole number in [0, {MAX_SEED}], got {seed!r}")
    return int(seed)


def check_lr(lr: Any) -> float:
    """A learning rate given to a library function: finite, in (0, :data:`MAX_LR`]."""
    numeric = isinstance(lr, (int, float, np.floating)) and not isinstance(lr, bool)
    if not numeric or not math.isfinite(lr) or not 0.0 < lr <= MAX_LR:
        raise InterpError(f"the learning rate must be a number in (0, {MAX_LR:g}] (the paper uses 1e-4), got {lr!r}")
    return float(lr)


# ----------------------------------------------------------------------------------------------------------- text

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: Any) -> str:
    """``text`` with control characters (newlines, ESC, NUL, ...) and lone surrogates shown escaped (``\\x1b``)."""
    return _CONTROL.sub(lambda match: ascii(match.group())[1:-1], str(text))


def one_line(message: Any) -> str:
    """A message on one line: line breaks folded to spaces (e.g. torch's multi-line errors), controls escaped."""
    lines = [line.strip() for line in re.split(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+", str(message))]
    return printable(" ".join(line for line in lines if line))


def clean_text(text: str) -> str:
    """``text`` with lone UTF-16 surrogates (not encodable as UTF-8) written as ``\\udcXX`` escapes."""
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(lambda match: ascii(match.group())[1:-1], text)


def clean_texts(texts: list[str]) -> list[str]:
    """:func:`clean_text` of each text: one search over all of them when none holds a lone surrogate (the rule)."""
    if _SURROGATE.search("\n".join(texts)) is None:
        return texts
    return [clean_text(text) for text in texts]


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 forbids (NUL, ESC and the other C0 controls but tab and newlines),
    which are shown escaped instead; for text drawn into SVG figures."""
    return _XML_INVALID.sub(lambda match: ascii(match.group())[1:-1], text)


def strip_xml_invalid(document: bytes) -> bytes:
    """An XML document's bytes without the C0 control bytes XML forbids (UTF-8 multi-byte sequences never hold
    bytes below 0x80, so this cannot split a character)."""
    return re.sub(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]", b"", document)


# ------------------------------------------------------------------------------------------------------- nesting

_CONTAINERS = (dict, list, tuple, set, frozenset)


def _children(item: Any) -> Iterable[Any] | None:
    if isinstance(item, Mapping):
        return list(item.keys()) + list(item.values())
    if isinstance(item, _CONTAINERS):
        return item
    if isinstance(item, np.ndarray) and item.dtype == object:
        return item.reshape(-1)
    return None


def check_nesting(value: Any, where: str, error: type[InterpError] = DataError, limit: int = MAX_NESTING) -> None:
    """Refuse containers nested deeper than ``limit`` or holding themselves (walked without recursion)."""
    active: set[int] = set()
    done: set[int] = set()
    stack: list[tuple[Any, int, bool]] = [(value, 0, False)]
    while stack:
        item, depth, leaving = stack.pop()
        if leaving:
            active.discard(id(item))
            done.add(id(item))
            continue
        children = _children(item)
        if children is None or id(item) in done:
            continue
        if id(item) in active:
            raise error(f"{where} holds a container that contains itself; it is not a data file interp wrote or reads")
        if depth >= limit:
            raise error(f"{where} nests containers more than {limit} deep; expected the documented layout "
                        "(a dict of splits of numpy arrays, or a flat JSON object)")
        active.add(id(item))
        stack.append((item, depth, True))
        stack.extend((child, depth + 1, False) for child in children if _children(child) is not None)


def read_json(path: Path, error: type[InterpError], hint: str) -> Any:
    """The JSON value of ``path``: at most :data:`MAX_JSON_BYTES`, strict UTF-8, nesting within
    :data:`MAX_NESTING`; every problem is ``error`` with ``hint`` (what to do)."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise error(f"{path} is {_size(size)}, larger than any {path.name} interp writes; {hint}")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path} is missing; {hint}") from None
    except IsADirectoryError:
        raise error(f"{path} is a folder, not a JSON file; {hint}") from None
    except OSError as exc:
        raise error(f"{path} cannot be read ({exc.strerror or exc}); {hint}") from None
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{path} is not UTF-8 text (byte {exc.start}); {hint}") from None
    except RecursionError:
        raise error(f"{path} nests JSON values too deep to read; {hint}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); {hint}") from None
    check_nesting(value, str(path), error)
    return value


# ------------------------------------------------------------------------------------------------------ schemas


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check_names(value: Any, where: str, field: str, error: type[InterpError]) -> list[str]:
    """A non-empty list of distinct non-empty strings."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise error(f"{where}: {field} must be a non-empty list of names, got {printable(short_repr(value))}")
    if len(set(value)) != len(value):
        repeated = sorted({v for v in value if value.count(v) > 1})
        raise error(f"{where}: {field} has {', '.join(map(printable, repeated))} more than once; names must be distinct")
    return value


def short_repr(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else f"a {_kind(value)} of {len(value)}"
    return text if len(text) <= 60 else text[:57] + "..."


def check_planted(value: Any, where: str, error: type[InterpError] = DataError,
                  concepts: Iterable[str] | None = None) -> dict[str, str]:
    """A planted map ``{concept: feature}``: string keys, features of :data:`interp.schema.FEATURES`, and, when
    ``concepts`` is given, only those concepts."""
    if not isinstance(value, dict) or not value:
        raise error(f"{where}: the planted map must be a non-empty {{concept: feature}} object, got {short_repr(value)}")
    for concept, feature in value.items():
        if not isinstance(concept, str) or not isinstance(feature, str) or feature not in FEATURES:
            raise error(f"{where}: planted {printable(short_repr(concept))}: {printable(short_repr(feature))} is not a "
                        f"concept name and one of the features {', '.join(FEATURES)}")
    if concepts is not None:
        unknown = sorted(set(value) - set(concepts))
        if unknown:
            raise error(f"{where}: the planted map names concepts {', '.join(map(printable, unknown))} that are "
                        "not the task's")
    return value


def check_planted_info(info: Any, where: str) -> dict[str, Any]:
    """The planted JSON document beside synthetic data (``<stem>.planted.json``)."""
    hint = "delete it or regenerate the data with `interp data synth`"
    if not isinstance(info, dict):
        raise DataError(f"{where} holds a JSON {_kind(info)}, not an object with a 'planted' map; {hint}")
    task = info.get("task")
    if task is not None and (not isinstance(task, str) or task not in TASK_CONCEPTS):
        raise DataError(f"{where}: unknown task {printable(short_repr(task))}; {hint}")
    if "planted" not in info:
        raise DataError(f"{where} has no {{concept: feature}} map under 'planted'; {hint}")
    check_planted(info["planted"], where, DataError, TASK_CONCEPTS[task] if task is not None else None)
    if "data_sha256" in info and not isinstance(info["data_sha256"], str):
        raise DataError(f"{where}: data_sha256 must be a string, got {short_repr(info['data_sha256'])}; {hint}")
    return info


#: meta.json fields: (required, check). Optional fields may be absent, but when present they have this type.
_META_FIELDS: dict[str, tuple[bool, Callable[[Any], bool], str]] = {
    "task": (True, lambda v: isinstance(v, str) and v != "", "a task name"),
    "concepts": (True, lambda v: isinstance(v, list), "a list of concept names"),
    "features": (True, lambda v: v == list(FEATURES), f"the features {list(FEATURES)}"),
    "J": (True, is_int, "a whole number"),
    "n": (True, lambda v: is_int(v) and v >= 0, "a whole number >= 0"),
    "variant": (False, lambda v: v is None or isinstance(v, str), "a string"),
    "split": (False, lambda v: isinstance(v, str), "a string"),
    "checkpoint": (False, lambda v: v is None or isinstance(v, str), "a string"),
    "checkpoint_sha256": (False, lambda v: v is None or isinstance(v, str), "a string"),
    "data": (False, lambda v: v is None or isinstance(v, str), "a string"),
    "data_sha256": (False, lambda v: v is None or isinstance(v, str), "a string"),
    "created": (False, lambda v: v is None or isinstance(v, str), "a string"),
    "amp": (False, lambda v: v is None or isinstance(v, str), "a string or null"),
    "batch_size": (False, lambda v: v is None or is_int(v), "a whole number"),
    "model_config": (False, lambda v: v is None or isinstance(v, dict), "an object"),
    "train": (False, lambda v: v is None or isinstance(v, dict), "an object"),
    "versions": (False, lambda v: v is None or isinstance(v, dict), "an object"),
    "nonfinite": (False, lambda v: v is None or (isinstance(v, dict) and all(is_number(x) for x in v.values())),
                  "an object of counts"),
    "seq_lens": (False, lambda v: v is None or isinstance(v, dict), "an object"),
    "shards": (False, lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of file names"),
    "samples": (False, lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of file names"),
    "world_size": (False, lambda v: is_int(v) and v >= 1, "a whole number >= 1"),
    "shard_sizes": (False, lambda v: isinstance(v, list) and all(is_int(x) and x >= 0 for x in v),
                    "a list of counts"),
}
#: Fields of meta.json's "train" object that the report formats as numbers.

#: Numbers of a checkpoint's (and a run's) "train" record.
TRAIN_NUMBERS = ("lr", "valid_loss", "best_epoch", "epochs", "epochs_run", "batch_size", "patience", "seed",
                 "grad_clip")


def check_meta(meta: Any, path: Path | str) -> dict[str, Any]:
    """A run's meta.json: an object whose fields have the types interp writes (see DESIGN.md, "Run directory")."""
    hint = "extract the run again with `interp extract`"
    if not isinstance(meta, dict):
        raise RunError(f"{path} holds a JSON {_kind(meta)}, not the object interp writes; {hint}")
    missing = [key for key, (required, _, _) in _META_FIELDS.items() if required and key not in meta]
    if missing:
        raise RunError(f"{path} lacks {', '.join(missing)}; {hint}")
    for key, (_, check, kind) in _META_FIELDS.items():
        if key in meta and not check(meta[key]):
            raise RunError(f"{path}: {key} must be {kind}, got {printable(short_repr(meta[key]))}; {hint}")
    concepts = check_names(meta["concepts"], str(path), "concepts", RunError)
    if meta["J"] != len(concepts) or not 2 <= len(concepts) <= MAX_CONCEPTS:
        raise RunError(f"{path} is inconsistent (J = {meta['J']} but {len(concepts)} concepts); {hint}")
    if meta.get("planted") is not None:
        check_planted(meta["planted"], str(path), RunError, concepts)
    train = meta.get("train") or {}
    for key in TRAIN_NUMBERS:
        if train.get(key) is not None and not is_number(train[key]):
            raise RunError(f"{path}: train.{key} must be a number, got {printable(short_repr(train[key]))}; {hint}")
    metrics = train.get("valid_metrics")
    if metrics is not None and not (isinstance(metrics, dict) and all(is_number(v) for v in metrics.values())):
        raise RunError(f"{path}: train.valid_metrics must be an object of numbers; {hint}")
    for key in ("shards", "samples"):
        for name in meta.get(key) or []:
            if "/" in name or "\\" in name or name in ("", ".", ".."):
                raise RunError(f"{path}: {key} names {printable(short_repr(name))}, not a file of the run folder; {hint}")
    return meta


__all__ = [
    "CHECKPOINT_VERSIONS", "MAX_BOOTSTRAP_SAMPLES", "MAX_CONCEPTS", "MAX_INPUT_DIM", "MAX_JSON_BYTES", "MAX_LAYERS",
    "MAX_LR", "MAX_NESTING", "MAX_ROUTING_ITERATIONS", "MAX_SEED", "MAX_WIDTH", "MAX_WORKERS_PER_CPU",
    "MEMORY_FRACTION", "bootstrap_samples_arg", "check_lr", "check_memory", "check_meta",
    "check_nesting", "check_planted", "check_planted_info", "check_seed", "clean_text", "clean_texts",
    "lr_arg", "machine_memory", "one_line", "printable", "read_json", "seed_arg", "strip_xml_invalid", "workers_arg",
    "xml_safe", "TRAIN_NUMBERS", "is_int", "is_number", "short_repr",
]
