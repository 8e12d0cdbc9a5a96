"""Writing a run directory: samples.parquet, routing.parquet and meta.json (DESIGN.md, "Run directory").

Batches are streamed as parquet row groups, so memory stays flat whatever the number of samples. Everything
is written into a hidden temp folder beside the target and renamed into place at the end: an interrupted
extraction leaves no folder that looks like a run, and an existing run is replaced only with ``force``.

routing.parquet (and each ``routing-rank<k>.parquet``)
    Compression is per column, chosen by measurement on 10^6 samples (bench/stats.py, J = 7): the float columns
    (p, r, pr, contribution) are LZ4, because routing values are close to random floats, which zstd shrinks by
    only ~13% while decoding them ~3× slower (r and pr of 10^6 samples: 0.18 s with LZ4, 0.61 s with zstd; the
    file is 14% larger). sample_id, feature and concept stay dictionary-encoded with zstd (they are tiny).
    The file's key-value metadata records the row layout (:func:`routing_file_metadata`): ``interp.layout`` =
    ``sample-major`` (rows in sample order, then feature, then concept order, 7·J rows per sample) and the
    feature and concept names in that order, so that :mod:`interp.stats` can read r and p·r by position without
    decoding the feature and concept columns. The column names and types are unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from interp.errors import RunError
from interp.memberships import member_names, memberships, predictions, probabilities
from interp.outputs import check_replaceable_run
from interp.runbatch import RunBatch, check_shapes, concat_batches
from interp.schema import (
    FEATURES,
    META_FILE,
    ROUTING_FILE,
    SAMPLES_FILE,
    label_column,
    logit_column,
    p_column,
    prob_column,
)

#: Routing rows buffered before a row group is written (about 5 MB of values).
DEFAULT_ROW_GROUP_ROWS = 1 << 17

_DICTIONARY = pa.dictionary(pa.int8(), pa.string())

#: Key-value metadata of a routing file: its row layout, and the feature and concept names (JSON lists) in the
#: order of that layout. Only :data:`SAMPLE_MAJOR` is written.
LAYOUT_KEY = b"interp.layout"
FEATURES_KEY = b"interp.features"
CONCEPTS_KEY = b"interp.concepts"
SAMPLE_MAJOR = b"sample-major"

#: Per-column compression of routing files (see the module docstring for the measurement).
ROUTING_COMPRESSION: dict[str, str] = {
    "sample_id": "zstd",
    "feature": "zstd",
    "concept": "zstd",
    "p": "lz4",
    "r": "lz4",
    "pr": "lz4",
    "contribution": "lz4",
}


#: Modality letters of CH-SIMS per-modality labels, stored as float columns ``label_T``, ``label_A``, ``label_V``.
MODALITY_LABELS: tuple[str, ...] = ("T", "A", "V")


def samples_schema(
    task: str, concepts: Sequence[str], with_score: bool, with_transcript: bool, with_modality_labels: bool = False,
    with_video: bool = False,
) -> pa.Schema:
    """The schema of samples.parquet for a task (``video`` after ``sample_id`` when ``with_video``)."""
    fields = [
        pa.field("sample_id", pa.string()),
        *([pa.field("video", pa.string())] if with_video else []),
        pa.field("split", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("label", pa.string()),
        pa.field("pred", pa.string()),
        pa.field("correct", pa.bool_()),
    ]
    if with_score:
        fields.append(pa.field("score", pa.float32()))
    fields += [pa.field(label_column(c), pa.bool_()) for c in concepts]
    fields += [pa.field(f"pred_{c}", pa.bool_()) for c in concepts]
    fields += [pa.field(logit_column(c), pa.float32()) for c in concepts]
    fields += [pa.field(prob_column(c), pa.float32()) for c in concepts]
    fields += [pa.field(p_column(f), pa.float32()) for f in FEATURES]
    if with_transcript:
        fields.append(pa.field("transcript", pa.string()))
    if with_modality_labels:
        fields += [pa.field(f"label_{m}", pa.float32()) for m in MODALITY_LABELS]
    return pa.schema(fields, metadata={"interp.task": task})


def routing_schema() -> pa.Schema:
    """The schema of routing.parquet: one row per (sample, feature, concept)."""
    return pa.schema(
        [
            pa.field("sample_id", pa.string()),
            pa.field("feature", _DICTIONARY),
            pa.field("concept", _DICTIONARY),
            pa.field("p", pa.float32()),
            pa.field("r", pa.float32()),
            pa.field("pr", pa.float32()),
            pa.field("contribution", pa.float32()),
        ]
    )


def samples_compression(schema: pa.Schema) -> dict[str, str]:
    """Per-column compression of samples.parquet: LZ4 for the float columns (read by the statistics; 10^6
    samples' p columns decode in 0.06 s instead of 0.09 s with zstd, for an 8% larger file), zstd for the rest."""
    return {field.name: "lz4" if pa.types.is_floating(field.type) else "zstd" for field in schema}


def routing_file_metadata(concepts: Sequence[str], features: Sequence[str] = FEATURES) -> dict[bytes, bytes]:
    """The key-value metadata of a routing file written by :class:`RunWriter`: the sample-major layout (rows in
    sample order, then ``features`` order, then ``concepts`` order; 7·J rows per sample) and those names."""
    return {
        LAYOUT_KEY: SAMPLE_MAJOR,
        FEATURES_KEY: json.dumps([str(f) for f in features]).encode(),
        CONCEPTS_KEY: json.dumps([str(c) for c in concepts]).encode(),
    }


def samples_table(task: str, concepts: Sequence[str], batch: RunBatch, schema: pa.Schema) -> pa.Table:
    """samples.parquet rows of one batch."""
    n = batch.size
    logits = np.asarray(batch.logits, dtype=np.float32)
    true = memberships(task, batch.targets, len(concepts))
    pred = predictions(task, logits)
    probs = probabilities(task, logits)
    split = [batch.split] * n if isinstance(batch.split, str) else list(batch.split)
    columns: dict[str, Any] = {
        "sample_id": [str(s) for s in batch.sample_ids],
        **({"video": [str(v) for v in batch.videos]} if "video" in schema.names else {}),
        "split": split,
        "row": np.asarray(batch.rows, dtype=np.int64),
        "label": member_names(true, concepts),
        "pred": member_names(pred, concepts),
        "correct": (true == pred).all(axis=1),
    }
    if "score" in schema.names:
        columns["score"] = np.asarray(batch.scores, dtype=np.float32)
    for j, concept in enumerate(concepts):
        columns[label_column(concept)] = true[:, j]
    for j, concept in enumerate(concepts):
        columns[f"pred_{concept}"] = pred[:, j]
    for j, concept in enumerate(concepts):
        columns[logit_column(concept)] = logits[:, j]
    for j, concept in enumerate(concepts):
        columns[prob_column(concept)] = probs[:, j]
    p = np.asarray(batch.p, dtype=np.float32)
    for i, feature in enumerate(FEATURES):
        columns[p_column(feature)] = p[:, i]
    if "transcript" in schema.names:
        columns["transcript"] = [str(t) for t in batch.transcripts] if batch.transcripts is not None else [""] * n
    for m in MODALITY_LABELS:
        if f"label_{m}" in schema.names:
            values = batch.modality_labels[m] if batch.modality_labels is not None else np.full(n, np.nan)
            columns[f"label_{m}"] = np.asarray(values, dtype=np.float32)
    return pa.Table.from_pydict(columns, schema=schema)


def routing_table(concepts: Sequence[str], batch: RunBatch) -> pa.Table:
    """routing.parquet rows of one batch, in sample, then feature, then concept order (B·7·J rows)."""
    n, n_features, n_concepts = batch.size, len(FEATURES), len(concepts)
    p, r, contributions = check_shapes(batch, n_concepts)
    p_cells = np.broadcast_to(p[:, :, None], r.shape)
    per_sample = n_features * n_concepts
    sample_index = pa.array(np.repeat(np.arange(n, dtype=np.int64), per_sample))
    ids = pa.array([str(s) for s in batch.sample_ids], type=pa.string())
    feature_index = np.tile(np.repeat(np.arange(n_features, dtype=np.int8), n_concepts), n)
    concept_index = np.tile(np.arange(n_concepts, dtype=np.int8), n * n_features)
    return pa.Table.from_arrays(
        [
            ids.take(sample_index),
            pa.DictionaryArray.from_arrays(pa.array(feature_index), pa.array(list(FEATURES), pa.string())),
            pa.DictionaryArray.from_arrays(pa.array(concept_index), pa.array(list(concepts), pa.string())),
            pa.array(p_cells.reshape(-1)),
            pa.array(r.reshape(-1)),
            pa.array((p_cells * r).reshape(-1)),
            pa.array(contributions.reshape(-1)),
        ],
        schema=routing_schema(),
    )


class RunWriter:
    """Streams batches into a run directory, atomically.

    Use as a context manager: on an exception the temp folder is removed and nothing appears at ``out``.
    ``rank`` writes shard files (``samples-rank<k>.parquet``, ``routing-rank<k>.parquet``) into ``temp_dir``
    for a distributed extraction, where rank 0 later calls :func:`finalize_run`.
    """

    def __init__(
        self,
        out: Path | str,
        *,
        task: str,
        concepts: Sequence[str],
        with_score: bool,
        with_transcript: bool,
        with_video: bool = False,
        force: bool = False,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
        temp_dir: Path | None = None,
        rank: int | None = None,
        with_modality_labels: bool = False,
    ) -> None:
        self.out = Path(out)
        self.task = task
        self.concepts = list(concepts)
        check_target(self.out, force)
        self.temp_dir = temp_dir if temp_dir is not None else make_temp_dir(self.out)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        suffix = f"-rank{rank}" if rank is not None else ""
        self.samples_path = self.temp_dir / f"samples{suffix}.parquet"
        self.routing_path = self.temp_dir / f"routing{suffix}.parquet"
        self._samples_schema = samples_schema(
            task, self.concepts, with_score, with_transcript, with_modality_labels, with_video
        )
        self._samples_writer = pq.ParquetWriter(
            self.samples_path, self._samples_schema, compression=samples_compression(self._samples_schema)
        )
        self._routing_writer = pq.ParquetWriter(
            self.routing_path,
            routing_schema().with_metadata(routing_file_metadata(self.concepts)),
            compression=ROUTING_COMPRESSION,
            use_dictionary=["sample_id", "feature", "concept"],
        )
        self._row_group_rows = row_group_rows
        self._pending: list[RunBatch] = []
        self._pending_rows = 0
        self.n = 0
        self._closed = False

    def write(self, batch: RunBatch) -> None:
        """Add a batch (its shapes are checked now); a row group is written whenever enough rows are buffered.

        The batches are kept as they are until then, and the row group's tables are built once from all of them
        (:func:`interp.runbatch.concat_batches`): for batches of 256 samples at J = 7, 1.1 to 1.7 ms a batch when
        built batch by batch, 0.45 to 0.6 ms a batch when built per row group (11 batches). That work holds the
        GIL, which the forward pass needs where the writer runs in a thread. The arrays of a batch must not change
        after it is written."""
        check_shapes(batch, len(self.concepts))
        self._pending.append(batch)
        self._pending_rows += batch.size * len(FEATURES) * len(self.concepts)
        self.n += batch.size
        if self._pending_rows >= self._row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        merged = concat_batches(self._pending)
        groups = [merged] if merged is not None else self._pending
        samples = [samples_table(self.task, self.concepts, batch, self._samples_schema) for batch in groups]
        routing = [routing_table(self.concepts, batch) for batch in groups]
        self._samples_writer.write_table(pa.concat_tables(samples))
        self._routing_writer.write_table(pa.concat_tables(routing), row_group_size=self._pending_rows)
        self._pending, self._pending_rows = [], 0

    def close_tables(self) -> None:
        """Flush and close the parquet files (the run is not complete until :func:`finalize_run`)."""
        if self._closed:
            return
        self._flush()
        self._samples_writer.close()
        self._routing_writer.close()
        self._closed = True

    def finish(self, meta: dict[str, Any], force: bool = False) -> Path:
        """Close the tables, write meta.json last and move the run into place; returns the run path."""
        self.close_tables()
        return finalize_run(self.temp_dir, self.out, meta, force=force)

    def abort(self) -> None:
        """Close what is open and remove the temp folder."""
        try:
            if not self._closed:
                self._samples_writer.close()
                self._routing_writer.close()
                self._closed = True
        finally:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()


def check_target(out: Path, force: bool) -> None:
    """Refuse to replace an existing path unless ``force``; with ``force`` only a run folder is replaced
    (:func:`interp.outputs.check_replaceable_run`)."""
    if out.exists() and not force:
        raise RunError(f"{out} already exists; pass --force to replace it, or --out to write elsewhere")
    if out.exists():
        check_replaceable_run(out)


def make_temp_dir(out: Path, token: str | None = None) -> Path:
    """A hidden temp folder beside ``out`` (same file system, so the final rename is atomic)."""
    out = Path(os.path.abspath(out))  # "." or "a/..": a real name and parent
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.parent / f".{out.name}.tmp-{token or uuid.uuid4().hex[:12]}"


def finalize_run(temp_dir: Path, out: Path, meta: dict[str, Any], force: bool = False) -> Path:
    """Write meta.json into ``temp_dir`` and rename it to ``out`` (replacing an old run only with ``force``)."""
    meta_path = temp_dir / META_FILE
    with open(meta_path, "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=2, sort_keys=False, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    old: Path | None = None
    if out.exists():
        if not force:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise RunError(f"{out} already exists; pass --force to replace it, or --out to write elsewhere")
        try:
            check_replaceable_run(out)  # again: something may have been put there while extracting
        except RunError:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        absolute = Path(os.path.abspath(out))
        old = absolute.parent / f".{absolute.name}.old-{uuid.uuid4().hex[:12]}"
        os.replace(out, old)
    os.replace(temp_dir, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def write_run(
    out: Path | str,
    *,
    task: str,
    concepts: Sequence[str],
    batches: Sequence[RunBatch],
    meta: dict[str, Any],
    force: bool = False,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
) -> Path:
    """Write a whole run from in-memory batches (tests, notebooks); returns the run path.

    ``meta`` is completed with the keys every reader expects (task, concepts, features, J, n) when absent.
    """
    with_score = batches[0].scores is not None if batches else False
    with_transcript = batches[0].transcripts is not None if batches else False
    with_modality_labels = batches[0].modality_labels is not None if batches else False
    with_video = batches[0].videos is not None if batches else False
    writer = RunWriter(
        out,
        task=task,
        concepts=concepts,
        with_score=with_score,
        with_transcript=with_transcript,
        with_video=with_video,
        force=force,
        row_group_rows=row_group_rows,
        with_modality_labels=with_modality_labels,
    )
    with writer:
        for batch in batches:
            writer.write(batch)
        full_meta = {
            "task": task,
            "concepts": list(concepts),
            "features": list(FEATURES),
            "J": len(concepts),
            "n": writer.n,
            "shards": [ROUTING_FILE],
            "samples": [SAMPLES_FILE],
            **meta,
        }
        return writer.finish(full_meta, force=force)
