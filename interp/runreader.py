"""One reader of a run directory: aligned blocks of whole samples, validated while they stream.

:func:`read_blocks` pairs each samples table with its routing table (``samples.parquet`` / ``routing.parquet``,
or the ``-rank<k>`` shards of a distributed extraction, rank by rank) and yields :class:`Block` s of up to
``batch_samples`` samples: the requested samples columns and, for the same samples, r and p·r as arrays of shape
(m, 7, J). Files are read row group by row group, so memory stays flat in n.

Routing files must declare the sample-major layout that :class:`interp.runwriter.RunWriter` writes (key-value
metadata ``interp.layout = sample-major`` with the run's feature and concept names in meta.json's order): row k of
a sample's 7·J rows is cell (k // J, k % J), so r and p·r are read by position, without decoding the feature and
concept columns. A file without it is a :class:`~interp.errors.RunError` that says to extract the run again (there
is no slow fallback). While streaming, the run is validated; each violation is a ``RunError`` naming the file and
the first bad sample id:

* the routing table has n·7·J rows (n = rows of its samples table);
* the routing rows follow the samples' order: each routing row group's smallest and largest sample_id (the
  footer's statistics, so the id column is not decoded) are those of the samples whose rows it holds by position;
* no r is negative, and each (sample, feature) row of r sums to 1 within :data:`ROW_SUM_TOLERANCE`
  (rows holding a non-finite value are left to the statistics, which leave such values out and count them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from interp.errors import RunError
from interp.runs import open_run, routing_files, samples_files
from interp.runwriter import CONCEPTS_KEY, FEATURES_KEY, LAYOUT_KEY, SAMPLE_MAJOR
from interp.schema import FEATURES

#: Samples per block (routing rows per block = this × 7 × J).
DEFAULT_BATCH_SAMPLES = 8192
#: Largest |Σ_j r_ij − 1| accepted for a (sample, feature) row (values are stored as float32).
ROW_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class RunLayout:
    """The task, concept and feature names of a run (meta.json), which fix the cell grid (7, J)."""

    task: str
    concepts: tuple[str, ...]
    features: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int]:
        """(features, concepts) = (7, J)."""
        return len(self.features), len(self.concepts)

    @property
    def per_sample(self) -> int:
        """Routing rows per sample, 7·J."""
        return len(self.features) * len(self.concepts)


def run_layout(run: Path | str, meta: dict | None = None) -> RunLayout:
    """The layout of a run from its meta.json (:class:`RunError` when it lacks the task or the concepts)."""
    meta = open_run(run).meta if meta is None else meta
    try:
        task, concepts = str(meta["task"]), tuple(str(c) for c in meta["concepts"])
    except KeyError as error:
        raise RunError(f"{run}/meta.json has no {error.args[0]!r}; extract the run again") from None
    features = tuple(str(f) for f in meta.get("features", FEATURES))
    if not concepts or not features:
        raise RunError(f"{run}/meta.json lists no concepts or no features; extract the run again")
    return RunLayout(task, concepts, features)


def has_column(run: Path | str, column: str) -> bool:
    """Whether every samples table of a run has ``column`` (footers only), e.g. ``video`` for clustering."""
    return all(column in pq.read_schema(path).names for path in samples_files(run))


@dataclass
class Block:
    """m whole samples: ``samples`` (the requested samples columns, sample_id first, m rows) and, for the same
    samples in the same order, ``r`` and ``pr`` of shape (m, 7, J) float32 (cell (i, j) = feature i, concept j)."""

    samples: pa.RecordBatch
    r: np.ndarray
    pr: np.ndarray

    @property
    def size(self) -> int:
        return self.samples.num_rows

    def floats(self, names: Sequence[str]) -> np.ndarray:
        """Numeric samples columns side by side, (m, len(names)) float64."""
        return np.column_stack([self.samples.column(n).to_numpy(zero_copy_only=False) for n in names]).astype(np.float64)

    def flags(self, names: Sequence[str]) -> np.ndarray:
        """Boolean samples columns side by side (missing values are False), (m, len(names)) bool."""
        return np.column_stack([np.asarray(pc.fill_null(self.samples.column(n), False).to_numpy(zero_copy_only=False), bool)
                                for n in names]).reshape(self.size, len(names))


def read_blocks(
    run: Path | str, layout: RunLayout, columns: Sequence[str] = (), batch_samples: int = DEFAULT_BATCH_SAMPLES
) -> Iterator[Block]:
    """Aligned, validated blocks of the whole run (every shard, in rank order); see the module docstring."""
    s_files, r_files = samples_files(run), routing_files(run)
    if len(s_files) != len(r_files):
        raise RunError(f"run {run} has {len(s_files)} samples table(s) but {len(r_files)} routing table(s); extract again")
    for s_path, r_path in zip(s_files, r_files):
        yield from _pair_blocks(s_path, r_path, layout, ["sample_id", *[c for c in columns if c != "sample_id"]], batch_samples)


def _pair_blocks(s_path: Path, r_path: Path, layout: RunLayout, columns: list[str], batch_samples: int) -> Iterator[Block]:
    samples = pq.ParquetFile(s_path, pre_buffer=False)
    missing = [c for c in columns if c not in samples.schema_arrow.names]
    if missing:
        raise RunError(f"{s_path} lacks the column(s) {', '.join(missing)}; extract the run again")
    routing = pq.ParquetFile(r_path, pre_buffer=False)
    _check_declared_layout(routing, layout, r_path)
    per_sample = layout.per_sample
    if routing.metadata.num_rows != samples.metadata.num_rows * per_sample:
        bad = _first_misaligned(s_path, r_path, per_sample)
        raise RunError(f"{r_path} has {routing.metadata.num_rows} rows, not n·7·J = {samples.metadata.num_rows} × "
                       f"{per_sample}; the first sample whose rows do not line up is {bad!r}; extract the run again")
    rows = _RoutingRows(routing, batch_samples * per_sample)
    order = _OrderCheck(routing, per_sample)
    done = 0
    for batch in _batches(samples, columns, batch_samples):
        m = batch.num_rows
        if not m:
            continue
        r, pr = rows.take(m * per_sample)
        ids = _strings(batch.column("sample_id"))
        if not order.check(done, ids):
            raise RunError(f"{r_path}: the routing rows of sample {_first_misaligned(s_path, r_path, per_sample)!r} are "
                           f"not in the order of {s_path.name}; extract the run again")
        r, pr = r.reshape(m, *layout.shape), pr.reshape(m, *layout.shape)
        _check_r(r, ids, r_path)
        done += m
        yield Block(batch, r, pr)


class _OrderCheck:
    """Whether the routing rows follow the samples' order, from the footer: each row group's min and max
    sample_id must be those of the samples whose rows it holds (a row group without statistics is decoded)."""

    def __init__(self, routing: pq.ParquetFile, per_sample: int) -> None:
        self.routing, self.per_sample = routing, per_sample
        self.groups: list[tuple[int, int, int]] = []  # (group, first sample, end sample)
        start = 0
        for g in range(routing.metadata.num_row_groups):
            rows = routing.metadata.row_group(g).num_rows
            if rows:
                self.groups.append((g, start // per_sample, -(-(start + rows) // per_sample)))
            start += rows
        self.low: str | None = None
        self.high: str | None = None

    def check(self, first: int, ids: pa.Array) -> bool:
        """Samples ``first``, ``first`` + 1, ... have the ids ``ids``; False at the first row group that disagrees."""
        end = first + len(ids)
        while self.groups and self.groups[0][1] < end:
            g, a, b = self.groups[0]
            part = ids.slice(max(a - first, 0), min(b, end) - max(a, first))
            bounds = pc.min_max(part)
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            self.low = low if self.low is None else min(self.low, low)
            self.high = high if self.high is None else max(self.high, high)
            if b > end:
                return True
            if not self._agrees(g, self.low, self.high):
                return False
            self.groups.pop(0)
            self.low = self.high = None
        return True

    def _agrees(self, group: int, low: str, high: str) -> bool:
        statistics = self.routing.metadata.row_group(group).column(0).statistics
        if self.routing.metadata.row_group(group).column(0).path_in_schema == "sample_id" and statistics is not None \
                and statistics.has_min_max:
            return (statistics.min, statistics.max) == (low, high)
        bounds = pc.min_max(self.routing.read_row_group(group, columns=["sample_id"]).column(0))
        return (bounds["min"].as_py(), bounds["max"].as_py()) == (low, high)


def _check_declared_layout(routing: pq.ParquetFile, layout: RunLayout, path: Path) -> None:
    metadata = routing.metadata.metadata or {}
    try:
        declared = (metadata.get(LAYOUT_KEY) == SAMPLE_MAJOR
                    and tuple(json.loads(metadata[FEATURES_KEY])) == layout.features
                    and tuple(json.loads(metadata[CONCEPTS_KEY])) == layout.concepts)
    except (KeyError, ValueError, TypeError):
        declared = False
    if not declared:
        raise RunError(f"{path} does not declare the sample-major row layout with the features and concepts of "
                       f"meta.json (an older or rewritten table); extract the run again with `interp extract`")


def _check_r(r: np.ndarray, ids: pa.Array, path: Path) -> None:
    """No negative r; every (sample, feature) row sums to 1 within the tolerance (NaN rows are not judged)."""
    sums = r.reshape(-1, r.shape[2]) @ np.ones(r.shape[2], r.dtype)  # one BLAS call; NaN rows stay NaN
    smallest = np.fmin.reduce(r, axis=None)  # NaN is skipped
    if smallest >= 0 and np.fmax.reduce(np.abs(sums - 1.0), axis=None) <= ROW_SUM_TOLERANCE:
        return
    with np.errstate(invalid="ignore"):
        negative = (r < 0).any(axis=(1, 2))
        off = (np.abs(r.sum(axis=2, dtype=np.float64) - 1.0) > ROW_SUM_TOLERANCE).any(axis=1)
    if negative.any():
        raise RunError(f"{path} has a negative routing coefficient r for sample {ids[int(np.flatnonzero(negative)[0])].as_py()!r}; "
                       f"r is a softmax over the concepts; extract the run again")
    if off.any():
        k = int(np.flatnonzero(off)[0])
        sums = r[k].sum(axis=1, dtype=np.float64)
        raise RunError(f"{path}: the routing coefficients r of sample {ids[k].as_py()!r} do not sum to 1 over the concepts "
                       f"(row sums {np.round(sums, 4).tolist()}); extract the run again")


def _first_misaligned(s_path: Path, r_path: Path, per_sample: int) -> str:
    """The first sample whose routing rows do not carry its id (error path only: reads both id columns whole)."""
    expected = _strings(pq.read_table(s_path, columns=["sample_id"]).column(0))
    got = _strings(pq.read_table(r_path, columns=["sample_id"]).column(0))
    want = expected.take(pa.array(np.repeat(np.arange(len(expected)), per_sample)))
    size = min(len(want), len(got))
    differ = np.flatnonzero(~np.asarray(pc.equal(want.slice(0, size), got.slice(0, size)).to_numpy(zero_copy_only=False), bool))
    if len(differ):
        return str(want[int(differ[0])].as_py())
    return str(expected[min(size // per_sample, len(expected) - 1)].as_py()) if len(expected) else "(none)"


def _batches(parquet: pq.ParquetFile, columns: Sequence[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches row group by row group (memory flat in the file's length)."""
    for group in range(parquet.num_row_groups):
        yield from parquet.iter_batches(batch_size=batch_rows, row_groups=[group], columns=list(columns))


def _strings(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return pc.cast(array, pa.string()) if pa.types.is_dictionary(array.type) else array


class _RoutingRows:
    """r and p·r of a routing file handed out in exact row counts, whatever its batch boundaries."""

    def __init__(self, parquet: pq.ParquetFile, batch_rows: int) -> None:
        self._batches = _batches(parquet, ["r", "pr"], batch_rows)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []

    def take(self, need: int) -> tuple[np.ndarray, np.ndarray]:
        parts, count = [], 0
        while count < need:
            if not self._pending:
                batch = next(self._batches, None)
                if batch is None:  # cannot happen after the row count check, unless the file changes while read
                    raise RunError("a routing table ended early; extract the run again")
                self._pending.append((batch.column("r").to_numpy(zero_copy_only=False),
                                      batch.column("pr").to_numpy(zero_copy_only=False)))
            r, pr = self._pending[0]
            if count + len(r) <= need:
                parts.append(self._pending.pop(0))
                count += len(r)
            else:
                cut = need - count
                parts.append((r[:cut], pr[:cut]))
                self._pending[0] = (r[cut:], pr[cut:])
                count = need
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


__all__ = ["DEFAULT_BATCH_SAMPLES", "ROW_SUM_TOLERANCE", "Block", "RunLayout", "has_column", "read_blocks", "run_layout"]
