"""What the global statistics become as text and files: the terminal rendering of all tables, the plain
summary, JSON and CSV (machine formats) and the methods paragraph. The tables themselves are
:class:`interp.tables.IntervalTable`; nothing here walks cells or marks them.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any, Sequence

from rich.console import Console
from rich.text import Text
from scipy.stats import norm

from interp.stats import GlobalStats
from interp.tables import (
    KIND_TEXT, LEGEND, QUANTITY_ORDER, IntervalTable, interval_phrase, cells_csv, format_interval, layout_tables,
)


def render_terminal(results: Sequence[GlobalStats], color: bool = False, width: int | None = None) -> str:
    """All tables of ``results`` as text (rich tables), with the legend, methods line and warnings.

    ``color`` adds ANSI styles (bold cells bold, above green, below red); without it the marks carry the meaning.
    A table that spans two runs (Table 3) is printed as one table per run to keep lines short.
    """
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=color, color_system="standard" if color else None,
                      width=width or 200, highlight=False, soft_wrap=False)
    for stats in results:
        console.print(Text(_run_header(stats)))
    for warning in _all_warnings(results):
        console.print(Text(f"warning: {warning}"))
    for spec in layout_tables(results):
        table = IntervalTable.from_spec(spec)
        for part in table.parts():
            suffix = f" — {part.groups[0].stats.task}" if table.grouped else ""
            console.print(Text(spec.title + suffix, style="bold" if color else ""))
            console.print(part.as_rich(color))
    console.print(Text(LEGEND))
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()).strip("\n")


def _run_header(stats: GlobalStats) -> str:
    split = f", split {stats.options.split}" if stats.options.split else ""
    what = "ensemble" if stats.kind == "seeds" else "run"
    per = " per seed" if stats.kind == "seeds" else ""
    return (f"{what} {stats.name} ({stats.task}, J = {stats.n_concepts}{split}): n = {stats.n_samples} samples{per}, "
            f"baseline 1/J = {stats.baseline:.3f}, group {stats.options.group}, {interval_phrase(stats)}")


def _all_warnings(results: Sequence[GlobalStats]) -> list[str]:
    return [w for stats in results for w in stats.warnings]


def summary_text(stats: GlobalStats) -> str:
    """Plain text: the run header, the three tables with marks, the legend and the warnings."""
    lines = [_run_header(stats)]
    lines += [f"warning: {w}" for w in stats.warnings]
    for quantity in QUANTITY_ORDER:
        table = IntervalTable.from_stats(stats, quantity)
        lines += ["", table.spec.title, table.as_frame(marks=True).to_string()]
    lines += ["", LEGEND]
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    """JSON-safe scalars: NaN/inf → None, numpy → Python."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def cell_records(stats: GlobalStats, quantity: str | None = None) -> list[dict[str, Any]]:
    """One JSON-safe dict per cell (all quantities, or one), with the formatted ``interval`` text."""
    frame = stats.cells if quantity is None else stats.quantity_cells(quantity)
    records = []
    for row in frame.to_dict(orient="records"):
        record = {key: _clean(value) for key, value in row.items()}
        record["bold"] = bool(record["bold"])
        record["n"] = int(record["n"])
        record["units"] = int(record["units"])
        record["interval"] = format_interval(row["low"], row["high"], int(row["n"]))
        records.append(record)
    return records


def options_record(stats: GlobalStats) -> dict[str, Any]:
    """The options and context of a run's statistics, JSON-safe."""
    options = stats.options
    return {
        "run": stats.name,
        "run_path": str(stats.run),
        "task": stats.task,
        "concepts": list(stats.concepts),
        "features": list(stats.features),
        "J": stats.n_concepts,
        "baseline": stats.baseline,
        "baseline_kind": options.baseline if isinstance(options.baseline, str) else "value",
        "level": options.level,
        "group": options.group,
        "interval": options.interval,
        "correction": options.correction,
        "split": options.split,
        "cluster": options.cluster,
        "kind": stats.kind,
        "units": stats.units,
        "seeds": (stats.meta or {}).get("seeds") if stats.kind == "seeds" else None,
        "members": [m.name for m in stats.members] if stats.kind == "seeds" else None,
        "bootstrap_samples": options.bootstrap_samples if options.interval == "bootstrap" else None,
        "seed": options.seed if options.interval == "bootstrap" else None,
        "n_samples": stats.n_samples,
        "column_n": dict(stats.column_n),
        "splits": dict(stats.splits),
        "nonfinite_values_left_out": stats.nonfinite,
        "warnings": list(stats.warnings),
    }


def to_json(stats: GlobalStats, quantity: str | None = None) -> str:
    """The options, the context and every cell (mean, std, n, se, low, high, p-values, significance, bold)."""
    document = options_record(stats)
    if quantity is not None:
        document["quantity"] = quantity
    document["methods"] = methods_paragraph(stats)
    document["cells"] = cell_records(stats, quantity)
    return json.dumps(document, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def to_csv(stats: GlobalStats, quantity: str | None = None) -> str:
    """Long format, one row per cell, full precision; the ``interval`` column holds the printed text."""
    return cells_csv(stats, stats.cells if quantity is None else stats.quantity_cells(quantity))


def methods_paragraph(stats: GlobalStats) -> str:
    """A short methods paragraph: n, the formula, the baseline, the level, the group, interval and correction."""
    options = stats.options
    level = f"{100 * options.level:g}%"
    alpha = 1.0 - options.level
    split = f" of split {options.split}" if options.split else ""
    if options.group == "all":
        who = f"n = {stats.n_samples} samples{split} of run {stats.name} ({stats.task}); every sample enters every concept column, as in the paper"
    else:
        kind = "true" if options.group == "label" else "predicted"
        per = ", ".join(f"{c}: {k}" for c, k in stats.column_n.items())
        who = (f"{stats.n_samples} samples{split} of run {stats.name} ({stats.task}); a sample enters concept j's column only "
               f"if its {kind} label is j (n per column: {per}), and p_i is summarised per concept the same way")
    if stats.kind == "seeds":
        seeds = ", ".join(str(seed) for seed in (stats.meta or {}).get("seeds", []))
        formula = (f"the between-seed Student t interval m̄ ± t_{{1−α/2, K−1}}·s/√K over K = {stats.units} models trained "
                   f"with seeds {seeds} (m̄: mean of the seed means, s: their standard deviation), and the prediction "
                   f"interval for a new seed m̄ ± t·s·√(1 + 1/K); each seed's means come from its run's samples")
    elif stats.kind == "videos":
        formula = (f"the video-clustered CLT interval mean ± z·se with z = {norm.ppf(1 - alpha / 2):.3f} and the "
                   f"cluster-robust se of the mean over G = {stats.units} videos (statsmodels' OLS on a constant with "
                   f"cov_type='cluster', small-sample factor G/(G−1)): segments of one video are not independent")
    elif options.interval == "clt":
        formula = (f"the CLT interval mean ± z·s/√n with z = z_{{1−α/2}} = {norm.ppf(1 - alpha / 2):.3f} "
                   f"(the paper's eq. 4)")
    elif options.interval == "t":
        formula = "the Student t interval mean ± t_{1−α/2, n−1}·s/√n"
    else:
        formula = (f"the percentile bootstrap interval of the mean ({options.bootstrap_samples} resamples, "
                   f"seed {options.seed})")
    if options.correction == "none":
        correction = "No multiple-comparison correction."
    elif options.correction == "bonferroni":
        correction = ("Bonferroni correction over the cells of each table: intervals are at level 1 − α/m "
                      "(m = number of cells) and p-values are multiplied by m.")
    else:
        correction = ("Holm correction over the cells of each table: significance comes from the Holm-adjusted "
                      "p-values of the test of mean = 1/J; the intervals shown are not adjusted.")
    baseline = (f"uniform routing 1/J = 1/{stats.n_concepts} = {stats.baseline:.3f}" if options.baseline == "uniform"
                else f"{stats.baseline:.3f}")
    return (
        f"Statistics over {who}. For each feature i and concept j we report the mean, the sample standard deviation "
        f"s (ddof = 1) and {formula}, at level {level}, of the routing coefficient r_ij, of p_i·r_ij, and of the "
        f"activation p_i. Baseline: {baseline}. A cell is significant if its interval lies wholly above or below "
        f"the baseline; a cell is bold if it has the largest mean of its concept column and its interval lies above "
        f"the baseline (the paper's rule). p_i is an activation, not a share of a feature, so its intervals carry no "
        f"verdict. The intervals cover the variance {KIND_TEXT[stats.kind]}. {correction}"
    )
