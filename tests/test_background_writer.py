"""interp.background_writer: order, bounded queue, errors raised in the caller, clean stop; and extract's use of it."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from interp import extract as extract_module, model as model_module, runwriter
from interp.background_writer import BackgroundWriter
from interp.devices import threads, usable_cpus
from interp.extract import extract


class _Batch:
    def __init__(self, label: int, size: int = 3) -> None:
        self.label, self.size = label, size


class _Recorder:
    """A writer that records labels; ``gate`` (when set) holds every write until released."""

    def __init__(self, fail_at: int | None = None, gate: threading.Event | None = None) -> None:
        self.written: list[int] = []
        self.started: list[int] = []
        self.fail_at, self.gate = fail_at, gate
        self.threads: set[str] = set()

    def write(self, batch: _Batch) -> None:
        self.started.append(batch.label)
        self.threads.add(threading.current_thread().name)
        if self.gate is not None:
            self.gate.wait()
        if batch.label == self.fail_at:
            raise OSError(28, "No space left on device")
        self.written.append(batch.label)


def test_writes_every_batch_in_order_in_one_other_thread() -> None:
    recorder = _Recorder()
    with BackgroundWriter(recorder, depth=1) as background:
        for label in range(50):
            background.write(_Batch(label, size=label))
    assert recorder.written == list(range(50))
    assert background.n == sum(range(50))
    assert recorder.threads == {"interp-run-writer"} != {threading.current_thread().name}


def test_at_most_depth_batches_wait() -> None:
    gate = threading.Event()
    recorder = _Recorder(gate=gate)
    background = BackgroundWriter(recorder, depth=2)
    background.write(_Batch(0))  # taken by the worker, which waits at the gate
    while recorder.started != [0]:
        threading.Event().wait(0.001)
    background.write(_Batch(1))
    background.write(_Batch(2))  # the queue is full now
    extra = threading.Thread(target=background.write, args=(_Batch(3),))
    extra.start()
    extra.join(timeout=0.2)
    assert extra.is_alive(), "a fourth batch was accepted while two waited and one was being written"
    gate.set()
    extra.join()
    background.close()
    assert recorder.written == [0, 1, 2, 3]


def test_an_error_is_raised_in_the_caller_and_later_batches_are_dropped() -> None:
    recorder = _Recorder(fail_at=2)
    with pytest.raises(OSError, match="No space") as raised:
        with BackgroundWriter(recorder, depth=1) as background:
            for label in range(20):
                background.write(_Batch(label))
            background.close()
    assert raised.value.errno == 28
    assert recorder.written == [0, 1]
    assert 2 in recorder.started and max(recorder.started) < 20


def test_close_raises_an_error_of_the_last_batch() -> None:
    background = BackgroundWriter(_Recorder(fail_at=0))
    background.write(_Batch(0))
    with pytest.raises(OSError):
        background.close()
    with pytest.raises(RuntimeError, match="after close"):
        background.write(_Batch(1))


def test_leaving_on_an_error_waits_for_the_batch_being_written_and_drops_the_rest() -> None:
    gate = threading.Event()
    recorder = _Recorder(gate=gate)
    with pytest.raises(KeyboardInterrupt):
        with BackgroundWriter(recorder, depth=2) as background:
            for label in range(3):
                background.write(_Batch(label))
            threading.Timer(0.05, gate.set).start()  # the batch being written finishes after the interrupt
            raise KeyboardInterrupt
    assert recorder.written == [0], "the exit returned before the batch being written was done"
    assert recorder.started == [0], "a queued batch was written after the interrupt"
    assert "interp-run-writer" not in {thread.name for thread in threading.enumerate()}


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BackgroundWriter(_Recorder(), depth=0)


def test_a_forward_pass_failing_while_a_batch_is_written_leaves_no_run(
    trained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    original = model_module.RoutingModel.forward

    def failing_forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated failure in the third forward pass")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(model_module.RoutingModel, "forward", failing_forward)
    out = tmp_path / "runs" / "failed"
    with pytest.raises(RuntimeError, match="third forward pass"):
        extract(trained_checkpoint, split="test", out=out, batch_size=8, device="cpu", progress=False,
                row_group_rows=1)
    assert calls["n"] == 3
    assert list((tmp_path / "runs").iterdir()) == []  # neither the run nor its temp folder


def test_row_groups_follow_the_batches_in_order(trained_checkpoint: Path, tmp_path: Path) -> None:
    """Written by the worker thread with one row group per batch: the rows are the samples' order."""
    run = extract(trained_checkpoint, split="test", out=tmp_path / "run", batch_size=8, device="cpu",
                  progress=False, row_group_rows=1)
    samples = pq.ParquetFile(run / "samples.parquet")
    assert samples.metadata.num_row_groups > 2
    rows = samples.read(columns=["row"]).column("row").to_numpy()
    np.testing.assert_array_equal(rows, np.arange(len(rows)))


def test_extract_writes_beside_torch_only_with_a_spare_core(
    trained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One torch thread on a machine of several CPUs: the worker thread writes; torch on every CPU: the caller does."""
    names: list[set[str]] = []
    original = runwriter.RunWriter.write

    def recording_write(self, batch):  # type: ignore[no-untyped-def]
        names[-1].add(threading.current_thread().name)
        original(self, batch)

    monkeypatch.setattr(runwriter.RunWriter, "write", recording_write)
    for count in (1, usable_cpus()):
        names.append(set())
        with threads(count):
            extract(trained_checkpoint, split="test", out=tmp_path / f"run-{count}", batch_size=8, device="cpu",
                    progress=False)
        in_worker = count < usable_cpus()
        assert names[-1] == ({"interp-run-writer"} if in_worker else {threading.current_thread().name}), count


def test_the_files_do_not_depend_on_the_thread_that_writes(
    trained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = []
    for spare in (True, False):
        monkeypatch.setattr(extract_module, "spare_core", lambda device, spare=spare: spare)
        runs.append(extract(trained_checkpoint, split="test", out=tmp_path / f"run-{spare}", batch_size=8,
                            device="cpu", progress=False, row_group_rows=1))
    for table in ("samples.parquet", "routing.parquet"):
        first, second = pq.ParquetFile(runs[0] / table), pq.ParquetFile(runs[1] / table)
        assert first.metadata.num_row_groups == second.metadata.num_row_groups > 2
        assert first.read().equals(second.read()), table


@pytest.mark.parametrize("task", ["sentiment", "emotion"])
def test_label_and_pred_name_every_member_concept(task: str) -> None:
    """samples.parquet's ``label``/``pred``: each sample's member concepts joined by "," (golden: a join per sample
    by hand), also for multi-label rows with none or several members."""
    from interp.schema import concept_names

    concepts = concept_names(task)
    j, n = len(concepts), 40
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((n, j)).astype(np.float32)
    targets = rng.integers(0, j, n) if task == "sentiment" else (rng.random((n, j)) > 0.6).astype(np.float32)
    targets[:1] = 0  # a multi-label row without members
    batch = runwriter.RunBatch(
        sample_ids=[f"s{i}" for i in range(n)], split="test", rows=np.arange(n), targets=targets, logits=logits,
        p=np.full((n, 7), 0.5, np.float32), r=np.full((n, 7, j), 1 / j, np.float32),
        contributions=np.zeros((n, 7, j), np.float32), scores=np.zeros(n, np.float32) if task == "sentiment" else None,
    )
    schema = runwriter.samples_schema(task, concepts, task == "sentiment", False)
    table = runwriter.samples_table(task, concepts, batch, schema).to_pydict()

    def joined(members) -> str:  # type: ignore[no-untyped-def]
        return ",".join(c for c, member in zip(concepts, members) if member)

    if task == "sentiment":
        true = [[k == int(t) for k in range(j)] for t in targets]
        pred = [[k == int(np.argmax(row)) for k in range(j)] for row in logits]
    else:
        true = [[v > 0.5 for v in row] for row in targets]
        pred = [[v > 0 for v in row] for row in logits]
    assert table["label"] == [joined(row) for row in true]
    assert table["pred"] == [joined(row) for row in pred]
    if task == "emotion":
        assert table["label"][0] == "" and any("," in name for name in table["label"])
