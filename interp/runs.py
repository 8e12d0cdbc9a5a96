"""Finding and opening run directories (the output of `interp extract`).

A run directory holds ``samples.parquet``, ``routing.parquet`` and ``meta.json`` (DESIGN.md, "Run directory"),
or, after a distributed extraction, one ``samples-rank<k>.parquet`` / ``routing-rank<k>.parquet`` per rank.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from interp.errors import RunError
from interp.guard import check_meta, read_json
from interp.schema import META_FILE, ROUTING_FILE, ROUTING_SHARD_GLOB, SAMPLES_FILE, SAMPLES_SHARD_GLOB

DEFAULT_RUNS_ROOT = Path("runs")
DEFAULT_REPORTS_ROOT = Path("reports")
#: Mode of files written atomically (mkstemp creates 0600; reports and checkpoints are meant to be shared).
_FILE_MODE = 0o644


def is_run(path: Path) -> bool:
    """True if ``path`` is a complete run directory (meta.json is written last, so it marks completion)."""
    return (Path(path) / META_FILE).is_file()


def latest_run(runs_root: Path | str = DEFAULT_RUNS_ROOT) -> Path:
    """The most recently completed run under ``runs_root`` (by the time its meta.json was written)."""
    root = Path(runs_root)
    candidates = (
        [p for p in root.iterdir() if not p.name.startswith(".") and p.is_dir() and is_run(p)]
        if root.is_dir()
        else []
    )
    if not candidates:
        raise RunError(f"no run found under {root}/; run `interp extract --ckpt models/model.pt` first")
    return max(candidates, key=lambda p: (p / META_FILE).stat().st_mtime_ns)


def resolve_run(run: Path | str | None, runs_root: Path | str = DEFAULT_RUNS_ROOT) -> Path:
    """``run`` if given, else the most recent run under ``runs_root``; checked with :func:`check_run`."""
    if run is None:
        path = latest_run(runs_root)
    else:
        path = Path(run)
        if not path.is_dir():
            raise RunError(f"run directory {path} does not exist; pass a folder written by `interp extract`")
        if not is_run(path):
            raise RunError(f"{path} is not a complete run (no {META_FILE}); extract it again with `interp extract`")
    check_run(path)
    return path


def resolve_runs(runs: "Sequence[Path | str] | Path | str | None", runs_root: Path | str = DEFAULT_RUNS_ROOT) -> list[Path]:
    """Each of ``runs`` checked with :func:`resolve_run`; the most recent run when none is given."""
    if runs is None or (not isinstance(runs, (str, Path)) and len(runs) == 0):
        return [resolve_run(None, runs_root)]
    if isinstance(runs, (str, Path)):
        runs = [runs]
    return [resolve_run(run, runs_root) for run in runs]


def check_run(run: Path | str) -> dict[str, Any]:
    """Check a run's meta.json (:func:`interp.guard.check_meta`) and the schema of its tables (parquet footers
    only, cheap); returns the meta.

    Raises :class:`RunError` naming the first missing table, missing column or column of the wrong type.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    info = open_run(run)
    meta = dict(info.meta)
    concepts, features = list(info.concepts), list(info.features)

    def is_text(t: pa.DataType) -> bool:
        if pa.types.is_dictionary(t):
            t = t.value_type
        return pa.types.is_string(t) or pa.types.is_large_string(t)

    def is_number(t: pa.DataType) -> bool:
        return pa.types.is_floating(t)

    def is_flag(t: pa.DataType) -> bool:
        return pa.types.is_boolean(t)

    routing_expected = {"sample_id": is_text, "feature": is_text, "concept": is_text}
    routing_expected.update({name: is_number for name in ("p", "r", "pr", "contribution")})
    samples_expected: dict[str, Any] = {"sample_id": is_text, "split": is_text, "label": is_text, "pred": is_text}
    samples_expected.update({f"p_{f}": is_number for f in features})
    samples_expected.update({f"logit_{c}": is_number for c in concepts})
    samples_expected.update({f"label_{c}": is_flag for c in concepts})
    kinds = {is_text: "text", is_number: "floating point", is_flag: "boolean"}
    optional = {"video": is_text}  # absent in runs extracted before videos were recorded
    for files, expected in ((info.samples_files, samples_expected), (info.routing_files, routing_expected)):
        for path in files:
            try:
                schema = pq.read_schema(path)
            except (OSError, pa.ArrowException) as error:
                raise RunError(f"{path} is not a readable parquet file ({str(error)[:100]}); extract the run again") from None
            for column, check in expected.items():
                index = schema.get_field_index(column)
                if index < 0:
                    raise RunError(f"{path} has no column {column!r}; extract the run again with `interp extract`")
                if not check(schema.field(index).type):
                    raise RunError(
                        f"{path} column {column!r} is {schema.field(index).type}, expected {kinds[check]}; "
                        f"extract the run again"
                    )
            for column, check in optional.items() if expected is samples_expected else ():
                index = schema.get_field_index(column)
                if index >= 0 and not check(schema.field(index).type):
                    raise RunError(
                        f"{path} column {column!r} is {schema.field(index).type}, expected {kinds[check]}; "
                        f"extract the run again"
                    )
    return meta


@dataclass(frozen=True)
class RunInfo:
    """What a run directory holds, from its meta.json (read once, checked by :func:`interp.guard.check_meta`).

    ``concepts`` (J,) and ``features`` (7,) are in the order of the run's matrices; ``n`` is the number of samples;
    ``meta`` is the whole checked meta.json (model card, training settings, planted truth); ``samples_files`` and
    ``routing_files`` are the run's tables (one file, or the shards of a distributed extraction, by rank).
    """

    path: Path
    name: str
    task: str
    concepts: tuple[str, ...]
    features: tuple[str, ...]
    split: str
    n: int
    meta: Mapping[str, Any]
    samples_files: tuple[Path, ...]
    routing_files: tuple[Path, ...]

    @property
    def planted(self) -> dict[str, str] | None:
        """The planted feature of each concept (synthetic data), or None."""
        planted = self.meta.get("planted")
        return {str(c): str(f) for c, f in planted.items()} if planted else None


def open_run(run: Path | str) -> RunInfo:
    """The run at ``run``: the only parser of meta.json (:class:`RunError` when it is missing, malformed or lacks
    its tables)."""
    path = Path(run)
    meta_path = path / META_FILE
    meta = check_meta(read_json(meta_path, RunError, "extract the run again with `interp extract`"), meta_path)
    return RunInfo(
        path=path,
        name=run_name(path),
        task=str(meta["task"]),
        concepts=tuple(str(c) for c in meta["concepts"]),
        features=tuple(str(f) for f in meta["features"]),
        split=str(meta.get("split") or ""),
        n=int(meta["n"]),
        meta=meta,
        samples_files=tuple(samples_files(path)),
        routing_files=tuple(routing_files(path)),
    )


def read_meta(run: Path | str) -> dict[str, Any]:
    """The run's meta.json as a dict, checked against its schema (:func:`open_run`)."""
    return dict(open_run(run).meta)


def routing_files(run: Path | str) -> list[Path]:
    """The routing table(s) of a run: routing.parquet, or the shards of a distributed extraction, sorted by rank."""
    return _table_files(Path(run), ROUTING_FILE, ROUTING_SHARD_GLOB)


def samples_files(run: Path | str) -> list[Path]:
    """The samples table(s) of a run: samples.parquet, or the shards of a distributed extraction, sorted by rank."""
    return _table_files(Path(run), SAMPLES_FILE, SAMPLES_SHARD_GLOB)


def _table_files(run: Path, single: str, shard_glob: str) -> list[Path]:
    if (run / single).is_file():
        return [run / single]
    shards = sorted(run.glob(shard_glob), key=_rank_of)
    if not shards:
        raise RunError(f"{run} has no {single} (nor shards {shard_glob}); extract the run again")
    return shards


def _rank_of(path: Path) -> int:
    digits = "".join(ch for ch in path.stem.rsplit("rank", 1)[-1] if ch.isdigit())
    return int(digits) if digits else 0


def run_name(run: Path | str) -> str:
    """The name of a run: its folder name."""
    return Path(run).resolve().name


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temp, _FILE_MODE)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temp, _FILE_MODE)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
