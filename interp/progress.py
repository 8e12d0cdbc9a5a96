"""Progress bars for long work (training epochs, extraction batches), built on rich.

A bar is shown only when ``enabled``; it writes to stderr so that tables printed on stdout stay clean.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Bar:
    """A handle on one progress bar: ``advance(n)`` and ``update(**fields)`` (shown after the bar)."""

    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: float = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)

    def update(self, status: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, status=status)


@contextmanager
def progress_bar(total: float | None, description: str, enabled: bool = True, unit: str = "") -> Iterator[Bar]:
    """A progress bar on stderr; a no-op when ``enabled`` is false (library use, tests)."""
    if not enabled:
        yield Bar(None, None)
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    ]
    console = Console(stderr=True)
    if not console.is_terminal:  # logs and CI: rich would assume 80 columns and truncate the status
        console = Console(stderr=True, width=140)
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, status="")
        yield Bar(progress, task)
