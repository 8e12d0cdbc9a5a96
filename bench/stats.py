#!/usr/bin/env python
"""Benchmark of the global statistics (``interp global``) against pandas, by number of samples.

For each size n (default 10^4, 10^5, 10^6; 10^7 is opt-in with ``--sizes``) a synthetic run of the sentiment task
(J = 7 concepts, 7 features: 49 routing rows per sample, each (sample, feature) row of r summing to 1 over the
concepts) is written with :class:`interp.runwriter.RunWriter`, streamed in chunks of ``--chunk`` samples, exactly
as ``interp extract`` writes it. Then, each in a fresh subprocess (so that its peak resident memory is its own):

* interp  -- the statistics module (default ``interp.stats:compute_global_stats``, pluggable with ``--entry``):
  mean, std, n and the 95% CLT interval of r and p·r per cell and of p per feature, streamed row group by row group;
* pandas  -- the obvious way: ``pd.read_parquet(routing.parquet)`` (the whole long table in memory), then
  ``groupby(["feature", "concept"])[["r", "pr"]].agg(["mean", "std", "count"])``;
* duckdb  -- the same GROUP BY in DuckDB over the parquet file, when ``duckdb`` can be imported (optional).

Run ``python bench/stats.py --help``; the README beside this file explains the table.
"""

from __future__ import annotations

from _memory import peak_rss_mb, rss_mb  # bench/ is sys.path[0] when a benchmark runs
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable from a checkout without installing the package
    sys.path.insert(0, str(REPO))

DEFAULT_SIZES = "1e4,1e5,1e6"
QUICK_SIZES = "1e4,1e5"
#: pandas keeps about this many bytes per routing row in memory (measured: arrow-backed sample_id strings, two
#: categoricals, four float32 columns, plus the groupby's temporaries); refined from the measured runs.
PANDAS_BYTES_PER_ROW = 60.0


# --------------------------------------------------------------------------------------------- helpers


def _available_gb() -> float:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 8.0


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(part)) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"--sizes: expected numbers like 1e4,1e5, got {text!r}") from None
    if not sizes or min(sizes) < 2:
        raise SystemExit("--sizes: each size must be at least 2")
    return sizes


# ----------------------------------------------------------------------------------------- synthetic run


def write_run(out: Path, n: int, *, chunk: int, seed: int = 0, row_group_rows: int | None = None) -> float:
    """Write a synthetic sentiment run of ``n`` samples to ``out`` through RunWriter, ``chunk`` samples at a time.

    r is a softmax over the 7 concepts (rows sum to 1), p is uniform in (0, 1), contributions are small normal
    values and the logits are their sums (the model's identity). Returns the seconds spent.
    """
    import numpy as np

    from interp.runwriter import DEFAULT_ROW_GROUP_ROWS, RunBatch, RunWriter
    from interp.schema import FEATURES, ROUTING_FILE, SAMPLES_FILE, TASK_CONCEPTS

    concepts = TASK_CONCEPTS["sentiment"]
    n_features, n_concepts = len(FEATURES), len(concepts)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    writer = RunWriter(
        out,
        task="sentiment",
        concepts=concepts,
        with_score=True,
        with_transcript=False,
        force=True,
        row_group_rows=row_group_rows or DEFAULT_ROW_GROUP_ROWS,
    )
    with writer:
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            scores = rng.standard_normal((size, n_features, n_concepts), dtype=np.float32)
            scores -= scores.max(axis=2, keepdims=True)
            r = np.exp(scores)
            r /= r.sum(axis=2, keepdims=True)
            contributions = (0.1 * rng.standard_normal((size, n_features, n_concepts))).astype(np.float32)
            writer.write(
                RunBatch(
                    sample_ids=[f"s{index:09d}" for index in range(start, start + size)],
                    split="test",
                    rows=np.arange(start, start + size, dtype=np.int64),
                    targets=rng.integers(0, n_concepts, size),
                    logits=contributions.sum(axis=1),
                    p=rng.random((size, n_features), dtype=np.float32),
                    r=r,
                    contributions=contributions,
                    scores=rng.uniform(-3, 3, size).astype(np.float32),
                )
            )
        meta = {
            "task": "sentiment",
            "concepts": list(concepts),
            "features": list(FEATURES),
            "J": n_concepts,
            "n": writer.n,
            "split": "test",
            "synthetic": {"bench": "bench/stats.py", "seed": seed, "chunk": chunk},
            "shards": [ROUTING_FILE],
            "samples": [SAMPLES_FILE],
        }
        writer.finish(meta, force=True)
    return time.perf_counter() - started


def ensure_run(root: Path, n: int, args: argparse.Namespace) -> tuple[Path, float | None]:
    """The run of ``n`` samples under ``root``, written unless a matching one is already there."""
    run = root / f"synth-{n}"
    meta_path = run / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("n") == n and meta.get("synthetic", {}).get("seed") == args.seed and _current_format(run):
            return run, None
    return run, write_run(run, n, chunk=args.chunk, seed=args.seed, row_group_rows=args.row_group_rows)


def _current_format(run: Path) -> bool:
    """Whether a kept run's routing file was written by the current RunWriter (its layout metadata and the
    compression of r), so that a --workdir run from an older writer is written again rather than timed."""
    import pyarrow.parquet as pq

    from interp.runwriter import LAYOUT_KEY, ROUTING_COMPRESSION, SAMPLE_MAJOR

    try:
        footer = pq.ParquetFile(run / "routing.parquet").metadata
    except (OSError, ValueError):
        return False
    if (footer.metadata or {}).get(LAYOUT_KEY) != SAMPLE_MAJOR or footer.num_row_groups == 0:
        return False
    group = footer.row_group(0)
    codecs = {group.column(k).path_in_schema: group.column(k).compression for k in range(group.num_columns)}
    return codecs.get("r", "").lower().startswith(ROUTING_COMPRESSION["r"])


# -------------------------------------------------------------------------------------- prototype (optional)


def prototype_stats(run: Path):  # -> pandas.DataFrame
    """A reference for the streaming path (``--prototype``): mean, std (ddof 1) and n of r and p·r per cell and
    of p per feature, reading whole row groups and reducing each with numpy over a (samples, 7·J) reshape.

    interp writes routing rows sample by sample, then feature, then concept, so a row group of m·7·J rows is an
    (m, 7·J) matrix whose column k is cell k; the feature and concept codes are checked against that layout (one
    int8 comparison per row) and a row group that does not follow it falls back to ``numpy.bincount`` by cell.
    Per-row-group moments are merged with Chan et al.'s update, so memory stays flat in n.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from interp.runs import read_meta, routing_files, samples_files
    from interp.schema import p_column

    meta = read_meta(run)
    features, concepts = [str(f) for f in meta["features"]], [str(c) for c in meta["concepts"]]
    n_features, n_concepts = len(features), len(concepts)
    cells = n_features * n_concepts
    moments = {q: (np.zeros(size, np.int64), np.zeros(size), np.zeros(size)) for q, size in (("r", cells), ("pr", cells), ("p", n_features))}
    pattern_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def merge(q: str, count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        c0, mean0, m20 = moments[q]
        total = c0 + count
        delta = mean - mean0
        weight = np.divide(count, total, out=np.zeros(len(total)), where=total > 0)
        moments[q] = (total, mean0 + delta * weight, m20 + m2 + delta * delta * c0 * weight)

    def add_matrix(q: str, x: np.ndarray) -> None:
        if len(x) == 0:
            return
        mean = x.mean(axis=0, dtype=np.float64)
        deviation = x - mean
        merge(q, np.full(x.shape[1], len(x), np.int64), mean, np.einsum("ij,ij->j", deviation, deviation))

    def add_codes(q: str, codes: np.ndarray, x: np.ndarray, size: int) -> None:
        count = np.bincount(codes, minlength=size)
        mean = np.bincount(codes, weights=x, minlength=size) / np.maximum(count, 1)
        deviation = x - mean[codes]
        merge(q, count, mean, np.bincount(codes, weights=deviation * deviation, minlength=size))

    def codes_of(column: pa.ChunkedArray, names: list[str]) -> np.ndarray:
        """Positions in ``names`` (int8) of a dictionary or string column."""
        array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        if not pa.types.is_dictionary(array.type):
            array = array.dictionary_encode()
        dictionary = [str(v) for v in array.dictionary.to_pylist()]
        indices = array.indices.to_numpy(zero_copy_only=False)
        if dictionary == names[: len(dictionary)]:
            return indices  # already the positions (the writer's dictionary is the meta's order)
        return np.array([names.index(v) for v in dictionary], dtype=np.int8)[indices]

    def layout(rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The feature and concept codes of ``rows // (7·J)`` samples written sample by sample."""
        if rows not in pattern_cache:
            per_sample = np.arange(cells)
            pattern_cache[rows] = (
                np.tile(per_sample // n_concepts, rows // cells).astype(np.int8),
                np.tile(per_sample % n_concepts, rows // cells).astype(np.int8),
            )
        return pattern_cache[rows]

    for path in routing_files(run):
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=["feature", "concept", "r", "pr"])
            rows = table.num_rows
            feature = codes_of(table.column("feature"), features)
            concept = codes_of(table.column("concept"), concepts)
            aligned = rows % cells == 0 and all(map(np.array_equal, (feature, concept), layout(rows)))
            for q in ("r", "pr"):
                x = table.column(q).to_numpy()
                if aligned:
                    add_matrix(q, x.reshape(-1, cells))
                else:
                    add_codes(q, feature.astype(np.intp) * n_concepts + concept, x.astype(np.float64), cells)
    columns = [p_column(f) for f in features]
    for path in samples_files(run):
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=columns)
            add_matrix("p", np.column_stack([table.column(c).to_numpy() for c in columns]))
    frames = []
    for q, (count, mean, m2) in moments.items():
        std = np.sqrt(np.divide(m2, count - 1, out=np.full(len(count), np.nan), where=count > 1))
        if q == "p":
            feature, concept = features, ["all"] * n_features
        else:
            feature, concept = [f for f in features for _ in concepts], concepts * n_features
        frames.append(pd.DataFrame({"quantity": q, "feature": feature, "concept": concept, "mean": mean, "std": std, "n": count}))
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------------ workers


def _worker(args: argparse.Namespace) -> None:
    """Run one measurement in this (fresh) process and print one JSON line."""
    import pandas as pd
    import pyarrow.parquet as pq

    run = Path(args.run)
    base = rss_mb()
    result: dict[str, object] = {"method": args.worker}
    if args.worker in ("interp", "prototype"):
        import importlib

        if args.worker == "prototype":
            function = prototype_stats
        else:
            module_name, _, function_name = args.entry.partition(":")
            function = getattr(importlib.import_module(module_name), function_name or "compute_global_stats")
        base = rss_mb()
        started = time.perf_counter()
        stats = function(run)
        seconds = time.perf_counter() - started
        cells = stats.cells if hasattr(stats, "cells") else stats
        means = cells[cells["quantity"].isin(["r", "pr"])].set_index(["quantity", "feature", "concept"])["mean"]
    elif args.worker == "pandas":
        started = time.perf_counter()
        frame = pd.read_parquet(run / "routing.parquet")
        grouped = frame.groupby(["feature", "concept"], observed=True)[["r", "pr"]].agg(["mean", "std", "count"])
        seconds = time.perf_counter() - started
        means = pd.concat(
            {q: grouped[(q, "mean")] for q in ("r", "pr")}, names=["quantity", "feature", "concept"]
        )
        result["rows"] = len(frame)
    elif args.worker == "duckdb":
        import duckdb

        connection = duckdb.connect()
        base = rss_mb()
        started = time.perf_counter()
        grouped = connection.execute(
            "SELECT feature, concept, avg(r) AS r_mean, stddev_samp(r) AS r_std, count(r) AS r_n, "
            "avg(pr) AS pr_mean, stddev_samp(pr) AS pr_std, count(pr) AS pr_n "
            "FROM read_parquet(?) GROUP BY feature, concept",
            [str(run / "routing.parquet")],
        ).df()
        seconds = time.perf_counter() - started
        result["threads"] = connection.execute("SELECT current_setting('threads')").fetchone()[0]
        grouped = grouped.set_index(["feature", "concept"])
        means = pd.concat(
            {q: grouped[f"{q}_mean"] for q in ("r", "pr")}, names=["quantity", "feature", "concept"]
        )
    else:
        raise SystemExit(f"unknown worker {args.worker}")
    means.index = means.index.set_levels([level.astype(str) for level in means.index.levels])
    result.update(
        seconds=seconds,
        peak_rss_mb=peak_rss_mb(),
        base_rss_mb=base,
        means={"|".join(map(str, key)): float(value) for key, value in means.sort_index().items()},
        rows=int(pq.ParquetFile(run / "routing.parquet").metadata.num_rows),
        row_groups=int(pq.ParquetFile(run / "routing.parquet").metadata.num_row_groups),
    )
    print("RESULT " + json.dumps(result), flush=True)


def measure(method: str, run: Path, args: argparse.Namespace, entry: str | None = None) -> dict[str, object]:
    """One measurement in a subprocess; its JSON result (or {"error": ...})."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--run", str(run), "--entry", entry or args.entry]
    env = dict(os.environ)
    if args.duckdb_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.duckdb_path, env.get("PYTHONPATH", "")]))
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (completed.stderr or completed.stdout).strip().splitlines()
    return {"error": tail[-1] if tail else f"exit {completed.returncode}"}


def _have_duckdb(args: argparse.Namespace) -> bool:
    env = dict(os.environ)
    if args.duckdb_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.duckdb_path, env.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", "import duckdb"], env=env, capture_output=True).returncode == 0


def _max_abs_diff(a: dict[str, float], b: dict[str, float]) -> float:
    keys = set(a) & set(b)
    if not keys or len(keys) != len(a):
        return float("nan")
    return max(abs(a[k] - b[k]) for k in keys)


# --------------------------------------------------------------------------------------------------- main


def _fmt(value: object, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=None, help=f"numbers of samples (default {DEFAULT_SIZES}; add 1e7 to opt in)")
    parser.add_argument("--quick", action="store_true", help=f"small sizes only ({QUICK_SIZES})")
    parser.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) the synthetic runs here")
    parser.add_argument("--chunk", type=int, default=10_000, help="samples per RunWriter.write while writing (default %(default)s)")
    parser.add_argument("--row-group-rows", type=int, default=None, help="routing rows per parquet row group (default: RunWriter's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--entry", default="interp.stats:compute_global_stats", help="statistics function module:name, called as f(run)")
    parser.add_argument("--compare-entry", default=None, help="also time this statistics function (module:name) on the "
                        "same runs, alternating with --entry --repeat times, e.g. an older interp.stats saved outside the repo")
    parser.add_argument("--repeat", type=int, default=1, help="timings of --entry (and --compare-entry) per size; the best is kept")
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas baseline")
    parser.add_argument("--pandas-max-gb", type=float, default=None, help="skip pandas when it would need more (default: 60%% of available memory)")
    parser.add_argument("--duckdb", choices=["auto", "yes", "no"], default="auto", help="also time DuckDB (auto: when importable)")
    parser.add_argument("--duckdb-path", default=None, help="extra sys.path entry holding duckdb (not a project dependency)")
    parser.add_argument("--prototype", action="store_true", help="also time prototype_stats (whole row groups, reshaped)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0

    sizes = _sizes(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES))
    budget_gb = args.pandas_max_gb if args.pandas_max_gb is not None else 0.6 * _available_gb()
    with_duckdb = args.duckdb == "yes" or (args.duckdb == "auto" and _have_duckdb(args))
    root = args.workdir or Path(tempfile.mkdtemp(prefix="interp-bench-stats-"))
    root.mkdir(parents=True, exist_ok=True)
    import platform

    print(f"# bench/stats.py  python {platform.python_version()}  cpus {os.cpu_count()}  available memory {_available_gb():.1f} GB")
    print(f"# runs under {root}; pandas budget {budget_gb:.1f} GB; duckdb {'on' if with_duckdb else 'off'}\n", flush=True)
    bytes_per_row = PANDAS_BYTES_PER_ROW
    rows_out = []
    try:
        for n in sizes:
            run, wrote = ensure_run(root, n, args)
            size_mb = sum(p.stat().st_size for p in run.glob("*.parquet")) / 2**20
            row: dict[str, object] = {"n": n, "rows": n * 49, "parquet_mb": size_mb, "write_s": wrote}
            timings = []
            for _ in range(max(1, args.repeat)):
                timings.append(measure("interp", run, args))
                if args.compare_entry:
                    row.setdefault("compare_all", []).append(measure("interp", run, args, args.compare_entry))  # type: ignore[union-attr]
            row["interp"] = min(timings, key=lambda t: t.get("seconds", float("inf")))  # type: ignore[arg-type,return-value]
            if args.compare_entry:
                row["compare"] = min(row.pop("compare_all"), key=lambda t: t.get("seconds", float("inf")))  # type: ignore[arg-type]
            needed_gb = n * 49 * bytes_per_row / 2**30
            if args.no_pandas:
                row["pandas"] = {"skipped": "--no-pandas"}
            elif needed_gb > budget_gb:
                row["pandas"] = {"skipped": f"would need ~{needed_gb:.0f} GB"}
            else:
                row["pandas"] = measure("pandas", run, args)
                if "peak_rss_mb" in row["pandas"]:
                    used = (row["pandas"]["peak_rss_mb"] - row["pandas"]["base_rss_mb"]) * 2**20  # type: ignore[operator]
                    bytes_per_row = max(bytes_per_row, used / (n * 49)) if n >= 100_000 else bytes_per_row
            row["duckdb"] = measure("duckdb", run, args) if with_duckdb else {"skipped": "not installed"}
            row["prototype"] = measure("prototype", run, args) if args.prototype else {"skipped": "--prototype not given"}
            interp_means = row["interp"].get("means", {})  # type: ignore[union-attr]
            for other in ("pandas", "duckdb", "prototype", "compare"):
                if "means" in row[other]:  # type: ignore[operator]
                    row[f"{other}_max_diff"] = _max_abs_diff(interp_means, row[other]["means"])  # type: ignore[index]
            row["repeat"] = max(1, args.repeat)
            rows_out.append(row)
            _print_row(row, header=len(rows_out) == 1)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    print()
    _print_notes(rows_out)
    if args.json:
        slim = [{k: ({kk: vv for kk, vv in v.items() if kk != "means"} if isinstance(v, dict) else v) for k, v in r.items()} for r in rows_out]
        args.json.write_text(json.dumps(slim, indent=2))
    return 0


COLUMNS = (
    ("n", 11), ("routing rows", 12), ("parquet MB", 10), ("row groups", 10), ("interp s", 8), ("interp MB", 12),
    ("pandas s", 8), ("pandas MB", 9), ("ratio", 6), ("duckdb s", 8), ("duckdb MB", 9), ("proto s", 7), ("proto MB", 10),
)


def _print_row(row: dict[str, object], header: bool) -> None:
    if header:
        print(" | ".join(name.rjust(width) for name, width in COLUMNS))
        print("-|-".join("-" * width for _, width in COLUMNS))
    interp, pandas, duck, proto = row["interp"], row["pandas"], row["duckdb"], row["prototype"]

    def seconds(result: dict) -> str:  # type: ignore[type-arg]
        if "seconds" in result:
            return f"{result['seconds']:.3f}"
        return "skipped" if "skipped" in result else "error"

    def peak(result: dict, delta: bool = False) -> str:  # type: ignore[type-arg]
        if "peak_rss_mb" not in result:
            return "-"
        text = f"{result['peak_rss_mb']:,.0f}"
        return text + f" (+{max(result['peak_rss_mb'] - result['base_rss_mb'], 0):,.0f})" if delta else text

    ratio = (
        f"{pandas['seconds'] / interp['seconds']:.1f}x"  # type: ignore[index,operator]
        if "seconds" in pandas and "seconds" in interp  # type: ignore[operator]
        else "-"
    )
    groups = interp.get("row_groups", "-")  # type: ignore[union-attr]
    cells = [
        f"{row['n']:,}", f"{row['rows']:,}", f"{row['parquet_mb']:.1f}", str(groups), seconds(interp), peak(interp, True),  # type: ignore[arg-type]
        seconds(pandas), peak(pandas), ratio, seconds(duck), peak(duck), seconds(proto), peak(proto, True),  # type: ignore[arg-type]
    ]
    print(" | ".join(cell.rjust(width) for cell, (_, width) in zip(cells, COLUMNS)), flush=True)
    for name in ("interp", "pandas", "duckdb", "prototype"):
        result = row[name]
        if "error" in result:  # type: ignore[operator]
            print(f"    {name} failed: {result['error']}")  # type: ignore[index]
        if "skipped" in result and name == "pandas":  # type: ignore[operator]
            print(f"    pandas skipped: {result['skipped']}")  # type: ignore[index]


def _print_notes(rows: list[dict[str, object]]) -> None:
    writes = [f"{r['n']:,}: {r['write_s']:.1f} s" for r in rows if r.get("write_s")]
    if writes:
        print("synthetic runs written (RunWriter, streamed): " + ", ".join(writes))
    diffs = [f"{r['n']:,}: {r['pandas_max_diff']:.1e}" for r in rows if "pandas_max_diff" in r]
    if diffs:
        print("max |mean(interp) - mean(pandas)| over the 98 r and p·r cells: " + ", ".join(diffs))
    for r in rows:
        if "compare" in r and "seconds" in r["compare"] and "seconds" in r["interp"]:  # type: ignore[operator]
            a, b = r["interp"]["seconds"], r["compare"]["seconds"]  # type: ignore[index]
            print(f"n = {r['n']:,}: --entry {a:.3f} s, --compare-entry {b:.3f} s, ratio {a / b:.2f} "
                  f"(best of {r.get('repeat', 1)}); max |mean difference| {r.get('compare_max_diff', float('nan')):.1e}")
    for other in ("duckdb", "prototype"):
        diffs = [f"{r['n']:,}: {r[other + '_max_diff']:.1e}" for r in rows if other + "_max_diff" in r]
        if diffs:
            print(f"max |mean(interp) - mean({other})|: " + ", ".join(diffs))
    for r in rows:
        threads = r["duckdb"].get("threads") if isinstance(r["duckdb"], dict) else None  # type: ignore[union-attr]
        if threads:
            print(f"duckdb ran with {threads} threads; interp and pandas with one")
            break


if __name__ == "__main__":
    sys.exit(main())
