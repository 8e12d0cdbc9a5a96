"""Writing a run's batches in a second thread, so that the forward passes never wait for parquet.

:class:`BackgroundWriter` hands each :class:`interp.runwriter.RunBatch` to one worker thread, which calls the run
writer's ``write`` in the order given. pyarrow builds and compresses the row groups without the GIL, and torch runs
its operators without it, so on a machine with a core to spare the writing overlaps the next batch's forward pass:
on CUDA the host work of one batch overlaps the kernels of the next; on a CPU with a core that torch does not use
(``--threads 1`` on two cores) the writing leaves the critical path (``interp extract`` of 4,096 default-model
samples: 0.96x the time of writing in the caller). Where torch already uses every core, the caller writes itself
(``in_thread=False``).

Contract:

* batches are written in order, by one thread; at most ``depth`` batches wait (memory stays flat in n);
* an error in the worker (a full disk, a bad batch) is raised in the caller, as the same exception object, by the
  next :meth:`BackgroundWriter.write` or by :meth:`BackgroundWriter.close`; batches after it are dropped;
* leaving the ``with`` block, by an error or Ctrl-C as well, stops the worker and waits for the batch it is writing,
  so that the run writer's cleanup (which removes the temp folder) never races a write.
"""

from __future__ import annotations

import queue
import threading
from typing import Protocol

from interp.runwriter import RunBatch


class BatchWriter(Protocol):
    """What the worker writes into: :class:`interp.runwriter.RunWriter`."""

    def write(self, batch: RunBatch) -> None: ...  # pragma: no cover - a protocol


_STOP = object()


class BackgroundWriter:
    """``writer.write(batch)`` for every batch, run in one daemon thread; a context manager.

    ``depth``: batches that may wait for the worker before :meth:`write` blocks (2 keeps the forward pass one batch
    ahead of the writing without holding more). ``in_thread=False`` writes in the caller instead, with the same
    interface: for a CPU without a core to spare (:func:`interp.devices.spare_core`), where a writer thread would
    slow torch's own threads down. ``n`` counts the samples handed over.
    """

    def __init__(self, writer: BatchWriter, depth: int = 2, in_thread: bool = True) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.writer = writer
        self.n = 0
        self.in_thread = in_thread
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="interp-run-writer", daemon=True)
        if in_thread:
            self._thread.start()
        self._closed = False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None or self._abort.is_set():
                continue  # keep draining, so that a caller blocked in put() is released
            try:
                self.writer.write(item)  # type: ignore[arg-type]
            except BaseException as error:  # raised in the caller by write() / close()
                self._error = error

    def write(self, batch: RunBatch) -> None:
        """Queue ``batch`` (blocks while ``depth`` batches wait); raises an earlier batch's error, if any."""
        if self._closed:
            raise RuntimeError("BackgroundWriter.write after close")
        if self._error is not None:
            raise self._error
        if self.in_thread:
            self._queue.put(batch)
        else:
            self.writer.write(batch)
        self.n += batch.size

    def close(self) -> None:
        """Wait until every queued batch is written; raises the worker's error, if any."""
        self._stop()
        self._closed = True
        if self._error is not None:
            raise self._error

    def _stop(self) -> None:
        """Tell the worker to end after what is queued, and wait for it (a second Ctrl-C still waits for the
        batch being written, milliseconds, then is raised)."""
        if not self._thread.is_alive():
            return
        self._queue.put(_STOP)
        interrupted: KeyboardInterrupt | None = None
        while self._thread.is_alive():
            try:
                self._thread.join()
            except KeyboardInterrupt as error:
                self._abort.set()
                interrupted = error
        if interrupted is not None:
            raise interrupted

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        self._abort.set()  # the batches still queued are dropped; the one being written finishes
        self._stop()
        self._closed = True
