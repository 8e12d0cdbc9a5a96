"""interp.runbatch and RunWriter's row groups: a row group built from several batches at once holds exactly the rows
each batch's own tables hold (golden: ``samples_table`` / ``routing_table`` of every batch alone, concatenated)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from interp import runwriter
from interp.errors import RunError
from interp.runbatch import RunBatch, concat_batches
from interp.schema import concept_names


def _batch(start: int, n: int, task: str, split: str | list[str], *, transcripts: bool = True,
           seed: int = 0) -> RunBatch:
    concepts = concept_names(task)
    j = len(concepts)
    rng = np.random.default_rng(seed + start)
    r = rng.random((n, 7, j)).astype(np.float32)
    r /= r.sum(axis=2, keepdims=True)
    targets = rng.integers(0, j, n) if task == "sentiment" else (rng.random((n, j)) > 0.5).astype(np.float32)
    return RunBatch(
        sample_ids=[f"v{(start + i) // 3}_{start + i}" for i in range(n)], split=split,
        rows=np.arange(start, start + n), targets=targets, logits=rng.standard_normal((n, j)).astype(np.float32),
        p=rng.random((n, 7)).astype(np.float32), r=r, contributions=rng.standard_normal((n, 7, j)).astype(np.float32),
        scores=rng.uniform(-3, 3, n).astype(np.float32) if task == "sentiment" else None,
        transcripts=[f"words {start + i}" for i in range(n)] if transcripts else None,
        videos=[f"v{(start + i) // 3}" for i in range(n)],
    )


def _expected(task: str, batches: list[RunBatch], with_transcript: bool) -> tuple[pa.Table, pa.Table]:
    concepts = concept_names(task)
    schema = runwriter.samples_schema(task, concepts, task == "sentiment", with_transcript, with_video=True)
    samples = pa.concat_tables([runwriter.samples_table(task, concepts, b, schema) for b in batches])
    routing = pa.concat_tables([runwriter.routing_table(concepts, b) for b in batches])
    return samples, routing


@pytest.mark.parametrize("task", ["sentiment", "emotion"])
def test_row_groups_of_many_batches_hold_each_batchs_rows(tmp_path: Path, task: str) -> None:
    """Batches of unequal size and split (one name, or one per sample) land in few row groups, built at once; the
    files read back equal each batch's own tables, and every row group boundary falls where the rows ran out."""
    batches = [
        _batch(0, 5, task, "train"),
        _batch(5, 7, task, "train"),
        _batch(12, 4, task, ["valid", "test", "test", "valid"]),
        _batch(16, 9, task, "test"),
        _batch(25, 1, task, "test"),
    ]
    j = len(concept_names(task))
    run = runwriter.write_run(tmp_path / "run", task=task, concepts=concept_names(task), batches=batches,
                              meta={}, row_group_rows=14 * 7 * j)  # 14 samples buffered before a row group
    samples, routing = _expected(task, batches, with_transcript=True)
    assert pq.read_table(run / "samples.parquet").equals(samples)
    assert pq.read_table(run / "routing.parquet").equals(routing)
    groups = pq.ParquetFile(run / "samples.parquet").metadata
    assert [groups.row_group(k).num_rows for k in range(groups.num_row_groups)] == [16, 10]


def test_a_batch_without_an_optional_field_is_written_on_its_own(tmp_path: Path) -> None:
    """Transcripts in some batches and not in others: those cannot be merged; the batch without them still gets
    empty transcripts, as when it is written alone."""
    batches = [_batch(0, 4, "sentiment", "test"), _batch(4, 3, "sentiment", "test", transcripts=False),
               _batch(7, 2, "sentiment", "test")]
    assert concat_batches(batches) is None
    run = runwriter.write_run(tmp_path / "run", task="sentiment", concepts=concept_names("sentiment"),
                              batches=batches, meta={})
    samples = pq.read_table(run / "samples.parquet")
    assert samples.equals(_expected("sentiment", batches, with_transcript=True)[0])
    assert samples.column("transcript").to_pylist()[4:7] == ["", "", ""]
    assert pq.ParquetFile(run / "samples.parquet").metadata.num_row_groups == 1


def test_concat_keeps_one_split_name_and_spells_out_mixed_ones() -> None:
    same = concat_batches([_batch(0, 2, "emotion", "test"), _batch(2, 3, "emotion", "test")])
    mixed = concat_batches([_batch(0, 2, "emotion", "train"), _batch(2, 2, "emotion", ["valid", "test"])])
    assert same is not None and same.split == "test" and same.size == 5
    assert mixed is not None and list(mixed.split) == ["train", "train", "valid", "test"]
    assert mixed.targets.shape == (4, len(concept_names("emotion")))


def test_a_batch_of_wrong_shape_is_refused_when_written(tmp_path: Path) -> None:
    """The shapes are checked at ``write``, not only when the row group is built later."""
    bad = _batch(0, 4, "sentiment", "test")
    bad.r = bad.r[:, :, :3]
    writer = runwriter.RunWriter(tmp_path / "run", task="sentiment", concepts=concept_names("sentiment"),
                                 with_score=True, with_transcript=True, with_video=True)
    with writer:
        writer.write(_batch(4, 2, "sentiment", "test"))
        with pytest.raises(RunError, match="batch shapes do not match"):
            writer.write(bad)
        assert writer.n == 2
