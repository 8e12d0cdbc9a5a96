"""Output guards: no command replaces a file or folder it did not write, nor one of its own inputs.

* :func:`check_not_input`: an output is never one of the command's inputs (``eval --out`` = ``--ckpt``,
  ``train --out`` = ``--data``, a run written over its checkpoint's folder, a report written into a run).
* :func:`check_replaceable_run`: ``extract --force`` replaces only a run folder (a meta.json and run tables,
  nothing else), never the current folder.
* :func:`check_replaceable_checkpoint` (train), :func:`check_replaceable_file` (eval's metrics JSON),
  :func:`looks_like_synthetic` (data synth) and :func:`check_demo_folder` (the demo writes only into a new, empty or
  demo-made folder, marked by :data:`DEMO_MARKER`).

Messages are one line (:func:`interp.guard.printable` escapes control characters in the paths they name).
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

from interp.data import planted_path_for
from interp.errors import InterpError, RunError
from interp.guard import printable, read_json
from interp.schema import META_FILE

#: File that marks a folder written by `interp demo` (the demo writes only into an empty folder or one with it).
DEMO_MARKER = ".interp-demo"
#: Names of the files interp writes into a run directory (what `--force` may replace): the tables and meta.json of
#: `interp extract`, and what `interp faithfulness` adds there by default (faithfulness.json and its tables).
_RUN_FILE = re.compile(
    r"^(meta\.json|samples\.parquet|routing\.parquet|samples-rank\d+\.parquet|routing-rank\d+\.parquet"
    r"|faithfulness\.json|faithfulness_[a-z]+\.(parquet|csv))$"
)


def _absolute(path: Path | str) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def same_file(a: Path | str, b: Path | str) -> bool:
    """True when ``a`` and ``b`` name the same file or folder (through links, or lexically when absent)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_not_input(out: Path | str, inputs: Mapping[str, Path | str | None], option: str = "--out", *,
                    holds: bool = False, inside: bool = False) -> None:
    """Refuse an output that is one of the inputs (``{label: path}``, through links too); with ``holds`` also an
    output folder that holds an input (it would be replaced as a whole), with ``inside`` one that lies inside an
    input folder (a report written into a run)."""
    target = _absolute(out).resolve()
    for label, path in inputs.items():
        if path is None:
            continue
        source = _absolute(path).resolve()
        if same_file(out, path) or target == source:
            raise InterpError(f"{option} {printable(out)} is the {label}; writing there would replace it: "
                              f"choose another {option}")
        if inside and source in target.parents and Path(path).is_dir():
            raise InterpError(f"{option} {printable(out)} lies inside the {label}; choose a folder outside it")
        if holds and target in source.parents:
            raise InterpError(f"{option} {printable(out)} holds the {label} {printable(path)}; writing there could "
                              f"replace it: choose another {option}")


def check_report_out(out: Path | str | None, runs: "list[Path | str] | None") -> None:
    """`interp global`, `local` and `report`: the output folder is none of the runs and lies inside none (the
    reports would mix with the run files, and ``extract --force`` would then refuse that run)."""
    if out is None:
        return
    check_not_input(out, {f"run {printable(run)}": run for run in runs or []}, inside=True)


def _listing(folder: Path, names: list[str]) -> str:
    shown = ", ".join(printable(n) for n in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def check_replaceable_run(out: Path | str) -> None:
    """``--force`` replaces an existing ``out`` only when it is a run folder: a meta.json and run tables, nothing
    else; never the current folder or one that holds it."""
    out = Path(out)
    here = Path.cwd().resolve()
    target = out.resolve()
    if target == here or target in here.parents:
        raise RunError(f"--out {printable(out)} is the current folder (or holds it), which cannot be replaced while "
                       f"interp runs in it; run `interp extract` from its parent folder with --out {target.name}")
    if not out.is_dir():
        raise RunError(f"{printable(out)} exists and is not a folder; choose another --out")
    names = sorted(p.name for p in out.iterdir())
    others = [n for n in names if not _RUN_FILE.match(n)]
    if META_FILE not in names or others or not any(n.startswith("routing") for n in names):
        held = _listing(out, others or names) if names else "nothing"
        raise RunError(f"--force replaces only a run folder (meta.json, samples.parquet, routing.parquet), but "
                       f"{printable(out)} holds {held}; choose another --out, or move those files away first")


def looks_like_checkpoint(path: Path | str) -> bool:
    """True for a torch zip file whose pickle names the interp checkpoint format (cheap: no tensor is read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            return member is not None and b"interp-checkpoint" in archive.read(member)
    except (OSError, zipfile.BadZipFile, ValueError, RuntimeError):
        return False


def looks_like_synthetic(data: Path | str, tag: str) -> bool:
    """True when ``data`` (if it exists) and its ``<stem>.planted.json`` were written together by
    `interp data synth`: the JSON carries the format ``tag`` and the data file's SHA-256."""
    data = Path(data)
    sidecar = planted_path_for(data)
    try:
        info = read_json(sidecar, InterpError, "")
    except InterpError:
        return False
    if not isinstance(info, dict) or info.get("format") != tag:
        return False
    if not data.exists():
        return True
    if not data.is_file():
        return False
    digest = hashlib.sha256()
    with data.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return info.get("data_sha256") == digest.hexdigest()


def check_replaceable_checkpoint(out: Path | str) -> None:
    """`interp train` replaces an existing file at ``--out`` only when it is an interp checkpoint."""
    out = Path(out)
    if out.exists() and (out.is_dir() or not looks_like_checkpoint(out)):
        kind = "a folder" if out.is_dir() else "a file that is not an interp checkpoint"
        raise InterpError(f"--out {printable(out)} is {kind}; training would replace it: choose another --out "
                          f"(e.g. {printable(out.with_suffix('.pt') if not out.is_dir() else out / 'model.pt')})")


def check_replaceable_file(out: Path | str, recognise: Callable[[Any], bool], kind: str) -> None:
    """Replace an existing JSON file at ``out`` only when ``recognise`` accepts its JSON value (one of ``kind``)."""
    out = Path(out)
    if not out.exists():
        return
    try:
        value = read_json(out, InterpError, "")
        recognised = recognise(value)
    except InterpError:
        recognised = False
    if out.is_dir() or not recognised:
        raise InterpError(f"--out {printable(out)} exists and is not {kind}; writing would replace it: "
                          f"choose another --out")


def check_demo_folder(out: Path | str, force: bool = False) -> None:
    """`interp demo` writes only into a new or empty folder, or one an earlier demo made (it holds
    :data:`DEMO_MARKER`), unless ``force``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InterpError(f"--out {printable(out)} is a file, not a folder; choose another --out")
    if force or not out.is_dir():
        return
    names = sorted(p.name for p in out.iterdir())
    if names and DEMO_MARKER not in names:
        raise InterpError(f"--out {printable(out)} holds {_listing(out, names)} and was not made by `interp demo`; "
                          "the demo would replace files there: choose a new folder, or pass --force")


__all__ = [
    "DEMO_MARKER", "check_demo_folder", "check_not_input", "check_replaceable_checkpoint", "check_replaceable_file",
    "check_replaceable_run", "check_report_out", "looks_like_checkpoint", "looks_like_synthetic", "same_file",
]
