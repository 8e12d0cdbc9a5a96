"""Extracting several checkpoints at once (``interp extract --ckpt A --ckpt B`` or ``--ckpt 'models/model-seed*.pt'``).

Each checkpoint gets its own run, exactly as :func:`interp.extract.extract` writes it, named
``<checkpoint stem>-<split>``: under ``runs/`` by default, under ``out`` when it is given (with several checkpoints
``out`` is the **parent folder** of the runs; with one it is the run folder itself, as for ``extract``). Every target
is checked before the first extraction starts, so a name clash or an existing run (without ``force``) fails at once
instead of after minutes of work.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Any, Sequence

from interp.errors import CheckpointError, InterpError
from interp.extract import extract
from interp.extraction import DataSets, default_run_dir
from interp.runs import DEFAULT_RUNS_ROOT
from interp.outputs import check_not_input
from interp.runwriter import check_target

_GLOB_CHARACTERS = re.compile(r"[*?\[]")


def _natural_key(path: Path) -> tuple[Any, ...]:
    """Sort key that orders ``model-seed2.pt`` before ``model-seed10.pt``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path)))


def expand_checkpoints(patterns: Sequence[Path | str]) -> list[Path]:
    """The checkpoint files named by ``patterns``, in order, each once.

    A pattern that is an existing path is taken as it is; one with glob characters (``*``, ``?``, ``[``) is
    expanded (matches in natural order: seed2 before seed10); a pattern that matches nothing is a
    :class:`CheckpointError`.
    """
    if isinstance(patterns, (str, Path)):
        patterns = [patterns]
    found: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        if Path(text).exists() or not _GLOB_CHARACTERS.search(text):
            found.append(Path(text))
            continue
        matches = sorted((Path(m) for m in glob.glob(text) if Path(m).is_file()), key=_natural_key)
        if not matches:
            raise CheckpointError(f"no checkpoint matches {text!r}; train some with `interp train --seeds 0-4`")
        found.extend(matches)
    if not found:
        raise CheckpointError("no checkpoint given; pass --ckpt PATH (repeatable, or a pattern such as "
                              "'models/model-seed*.pt')")
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def run_dirs(
    ckpts: Sequence[Path], split: str | None, out: Path | str | None, runs_root: Path | str = DEFAULT_RUNS_ROOT
) -> list[Path]:
    """Where each checkpoint's run goes: ``out`` for a single checkpoint when given, else
    ``<out or runs_root>/<checkpoint stem>-<split>``. Two checkpoints that would share a run are refused."""
    name = split or "test"
    if len(ckpts) == 1:
        return [Path(out) if out is not None else default_run_dir(ckpts[0], name, runs_root)]
    root = Path(out) if out is not None else Path(runs_root)
    if root.exists() and not root.is_dir():
        raise InterpError(f"--out {root} is a file; with several checkpoints --out is the folder that receives "
                          f"one run per checkpoint")
    targets = [default_run_dir(ckpt, name, root) for ckpt in ckpts]
    seen: dict[Path, Path] = {}
    for ckpt, target in zip(ckpts, targets):
        if target in seen:
            raise InterpError(f"checkpoints {seen[target]} and {ckpt} would both be extracted to {target} (the same "
                              f"file name); rename one, or extract them one at a time with --out")
        seen[target] = ckpt
    return targets


def extract_many(
    ckpts: Sequence[Path | str] | Path | str,
    data: Path | str | None = None,
    split: str | None = None,
    out: Path | str | None = None,
    *,
    force: bool = False,
    runs_root: Path | str = DEFAULT_RUNS_ROOT,
    **options: Any,
) -> list[Path]:
    """Extract each checkpoint named by ``ckpts`` (paths or glob patterns) with :func:`interp.extract.extract`;
    returns the run directories in checkpoint order. Checkpoints in a row that use one data file (the seeds of
    one training) share one read of it: unpickled, checked and hashed once (:func:`interp.extraction.read_data`).

    ``out``: with one checkpoint, the run folder (default ``runs/<stem>-<split>``); with several, the parent folder
    of their runs (default ``runs_root``). ``options``: the other keyword options of ``extract`` (batch_size,
    device, amp, num_workers, compile, progress, row_group_rows). All targets are checked before any work.
    """
    paths = expand_checkpoints([ckpts] if isinstance(ckpts, (str, Path)) else list(ckpts))
    targets = run_dirs(paths, split, out, runs_root)
    for ckpt, target in zip(paths, targets):
        check_not_input(target, {"checkpoint": ckpt}, holds=True)  # the more telling message first
        check_target(target, force)
    datasets: DataSets = {}
    return [
        extract(ckpt, data=data, split=split, out=target, force=force, runs_root=runs_root, datasets=datasets,
                **options)
        for ckpt, target in zip(paths, targets)
    ]


__all__ = ["expand_checkpoints", "extract_many", "run_dirs"]
