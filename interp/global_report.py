"""`interp global`: the paper's global interpretation tables (Tables 3–7) for one or more runs.

:func:`run_global` resolves the runs (default: the most recent one), computes the statistics
(:mod:`interp.stats`), writes the tables as CSV, JSON, Markdown and LaTeX (:mod:`interp.tables`) and an HTML page
``global.html`` (jinja2 template ``templates/global.html``, autoescaped, self-contained: inline CSS, heatmaps as
inline PNG), and returns a :class:`GlobalReport` whose :meth:`GlobalReport.render_terminal` is what the CLI prints.

Files written into ``out`` (default ``reports/<run>/``; with several runs ``reports/<run1>+<run2>/``):

* ``global.html`` — the r, p·r and p tables (the paper's Tables 3–7 when one sentiment and one emotion run are
  given), heatmaps of the means with the baseline 1/J marked, and a methods paragraph;
* per run (in ``out`` for one run, in ``out/<run>/`` for several): ``global.json`` and ``global_cells.csv``
  (every cell of every quantity), and for each quantity q in r, pr, p ``global_<q>.csv``, ``.json``, ``.md``,
  ``.tex``;
* with the paper's layout, also ``table<k>.md`` / ``table<k>.tex`` for k = 3..7 in ``out``.

Several runs of the same task, data and split trained with different seeds are pooled into an ensemble
(:mod:`interp.ensemble`; with ``ensemble=True`` every run must pool, else :class:`InterpError` before anything is
written); runs that do not pool are shown side by side, with the reason in :attr:`GlobalReport.notes`.

Other pages (the full report) reuse the HTML through :func:`render_global_section`.
"""

from __future__ import annotations

import base64
import io
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from interp import __version__
from interp.html import template_environment
from interp.runs import DEFAULT_REPORTS_ROOT, DEFAULT_RUNS_ROOT, atomic_write_text, resolve_runs
from interp.ensemble import plan_pooling, pool_seeds, require_ensembles
from interp.stats import JUDGED, QUANTITIES, GlobalStats, StatsOptions, compute_global_stats
from interp.stats_outputs import methods_paragraph, render_terminal, summary_text, to_csv, to_json
from interp.tables import LEGEND_PLAIN, QUANTITY_SYMBOLS, IntervalTable, layout_tables, units_text

TEMPLATE = "global.html"


@dataclass
class GlobalReport:
    """What :func:`run_global` produced: the statistics shown (ensembles and unpooled runs), the files written,
    the single runs (every run given, in order) and why some runs were not pooled (``notes``)."""

    results: list[GlobalStats]
    out_dir: Path
    html_path: Path
    files: dict[str, Path] = field(default_factory=dict)
    singles: list[GlobalStats] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render_terminal(self, color: bool | None = None) -> str:
        """The tables as text for the terminal (ANSI styles only when ``color``, default: stdout is a tty)."""
        if color is None:
            color = sys.stdout.isatty()
        text = render_terminal(self.results, color=color)
        return "\n".join([text, *(f"not pooled: {note}" for note in self.notes)])

    def to_frame(self) -> pd.DataFrame:
        """Every cell of every run (long format)."""
        return pd.concat([stats.to_frame() for stats in self.results], ignore_index=True)

    def summary(self) -> str:
        """Plain-text summary of each run."""
        return "\n\n".join(summary_text(stats) for stats in self.results)


def run_global(
    runs: Sequence[Path | str] | Path | str | None = None,
    baseline: str | float = "uniform",
    level: float = 0.95,
    group: str = "all",
    interval: str = "clt",
    correction: str = "none",
    split: str | None = None,
    out: Path | str | None = None,
    bootstrap_samples: int = 2000,
    seed: int = 0,
    *,
    cluster: str = "none",
    ensemble: bool = False,
    runs_root: Path | str = DEFAULT_RUNS_ROOT,
    reports_root: Path | str = DEFAULT_REPORTS_ROOT,
    heatmaps: bool = True,
) -> GlobalReport:
    """Compute the global statistics of ``runs`` (default: the most recent run under ``runs_root``) and write
    the tables and ``global.html`` into ``out`` (default ``reports_root/<run name>/``).

    ``cluster="video"``: video-clustered intervals; ``ensemble``: every run must pool into ensembles of K >= 2
    seeds. Raises :class:`interp.errors.InterpError` (CLI exit 2) on a missing run, bad options, an empty split or
    runs that cannot be pooled when ``ensemble`` is asked for; nothing is written then.
    """
    options = StatsOptions(
        level=level, group=group, interval=interval, correction=correction, split=split, baseline=baseline,
        bootstrap_samples=bootstrap_samples, seed=seed, cluster=cluster,
    ).validated()
    paths = resolve_runs(runs, runs_root)
    singles = [compute_global_stats(path, options) for path in paths]
    results, notes = arrange_results(singles, ensemble)
    out_dir = Path(out) if out is not None else Path(reports_root) / "+".join(stats.name for stats in results)
    files = write_global_outputs(results, out_dir, heatmaps=heatmaps, notes=notes)
    return GlobalReport(results=results, out_dir=out_dir, html_path=files["html"], files=files, singles=singles, notes=notes)


def arrange_results(singles: Sequence[GlobalStats], ensemble: bool = False) -> tuple[list[GlobalStats], list[str]]:
    """The statistics to show: each ensemble of pooled seeds (at its first run's place) and each unpooled run,
    and the reasons runs were not pooled (none for a single run)."""
    if not ensemble and len(singles) < 2:
        return list(singles), []
    plan = require_ensembles(singles) if ensemble else plan_pooling(singles)
    placed: list[tuple[int, GlobalStats]] = [(group[0], pool_seeds([singles[k] for k in group])) for group in plan.groups]
    placed += [(index, singles[index]) for index, _ in plan.alone]
    notes = [reason for _, reason in plan.alone] if plan.groups or len(singles) > 1 else []
    if not plan.groups:
        notes = [] if all("no other seed" in reason for reason in notes) else notes
    return [stats for _, stats in sorted(placed, key=lambda item: item[0])], notes


# ---------------------------------------------------------------------------------------------------- files


def write_global_outputs(results: Sequence[GlobalStats], out_dir: Path | str, heatmaps: bool = True,
                         notes: Sequence[str] = ()) -> dict[str, Path]:
    """Write every table file and ``global.html`` (atomically); returns {label: path}, ``"html"`` included."""
    out_dir = Path(out_dir)
    files: dict[str, Path] = {}
    folders = _run_folders(results, out_dir)
    for stats, folder in zip(results, folders):
        prefix = "" if len(results) == 1 else f"{stats.name}:"
        files[f"{prefix}json"] = _write(folder / "global.json", to_json(stats))
        files[f"{prefix}cells.csv"] = _write(folder / "global_cells.csv", to_csv(stats))
        for quantity in QUANTITIES:
            table = IntervalTable.from_stats(stats, quantity)
            files[f"{prefix}{quantity}.csv"] = _write(folder / f"global_{quantity}.csv", table.as_csv())
            files[f"{prefix}{quantity}.json"] = _write(folder / f"global_{quantity}.json", to_json(stats, quantity))
            files[f"{prefix}{quantity}.md"] = _write(folder / f"global_{quantity}.md", table.as_markdown())
            files[f"{prefix}{quantity}.tex"] = _write(folder / f"global_{quantity}.tex", table.as_latex())
    for spec in layout_tables(results):
        if spec.number is not None:
            table = IntervalTable.from_spec(spec)
            files[f"{spec.key}.md"] = _write(out_dir / f"{spec.key}.md", table.as_markdown())
            files[f"{spec.key}.tex"] = _write(out_dir / f"{spec.key}.tex", table.as_latex())
    files["html"] = _write(out_dir / "global.html", render_global_page(results, heatmaps=heatmaps, notes=notes))
    return files


def _run_folders(results: Sequence[GlobalStats], out_dir: Path) -> list[Path]:
    if len(results) == 1:
        return [out_dir]
    folders: list[Path] = []
    seen: dict[str, int] = {}
    for stats in results:
        count = seen.get(stats.name, 0)
        seen[stats.name] = count + 1
        folders.append(out_dir / (stats.name if count == 0 else f"{stats.name}-{count + 1}"))
    return folders


def _write(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    return path


# ----------------------------------------------------------------------------------------------------- HTML


def _environment() -> Any:
    return template_environment(strict=False)


def heatmap_png(stats: GlobalStats, dpi: int = 110) -> bytes:
    """PNG of the means of r, p·r and p (one panel each), diverging colours centred at the baseline 1/J,
    the baseline marked on the colour bar, bold cells outlined. Uses a bare matplotlib Figure (no pyplot state)."""
    import seaborn as sns
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    frames = {q: stats.values(q, "mean") for q in QUANTITIES}
    bolds = {q: stats.values(q, "bold") for q in QUANTITIES}
    finite = np.concatenate([frames[q].to_numpy(dtype=float).ravel() for q in JUDGED])
    finite = finite[np.isfinite(finite)]
    b = stats.baseline
    low = min(float(finite.min()) if finite.size else b, b) - 1e-9
    high = max(float(finite.max()) if finite.size else b, b) + 1e-9
    norm = TwoSlopeNorm(vcenter=b, vmin=low, vmax=high)
    widths = [max(1, frames[q].shape[1]) for q in QUANTITIES]
    figure = Figure(figsize=(1.6 + 0.62 * sum(widths) + 1.2, 3.8), dpi=dpi, layout="constrained")
    axes = figure.subplots(1, 4, gridspec_kw={"width_ratios": widths + [0.35]})
    mesh = None
    for axis, quantity in zip(axes[:3], QUANTITIES):
        frame = frames[quantity]
        colours = {"cmap": "RdBu_r", "norm": norm} if quantity in JUDGED else {"cmap": "Greys", "vmin": 0.0, "vmax": 1.0}
        sns.heatmap(frame.astype(float), ax=axis, annot=True, fmt=".3f", annot_kws={"fontsize": 7}, cbar=False,
                    linewidths=0.5, linecolor="white", **colours)
        bold = bolds[quantity].to_numpy() == True  # noqa: E712 - NaN (no cell) is not bold
        for i, j in zip(*np.nonzero(bold)):
            axis.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor="black", linewidth=2))
        axis.set_title(QUANTITY_SYMBOLS[quantity] + ("" if quantity in JUDGED else " (grey: 0 to 1)"), fontsize=10)
        axis.set_xlabel("concept" if quantity != "p" or frame.shape[1] > 1 else "")
        axis.set_ylabel("feature" if quantity == "r" else "")
        axis.tick_params(labelsize=8)
        axis.tick_params(axis="y", rotation=0)
        if quantity in JUDGED:
            mesh = axis.collections[0]
    assert mesh is not None
    colorbar = figure.colorbar(mesh, cax=axes[3])
    colorbar.ax.axhline(b, color="black", linewidth=1.5)
    colorbar.set_label(f"mean (baseline 1/J = {b:.3f})", fontsize=8)
    colorbar.ax.tick_params(labelsize=7)
    figure.suptitle(f"Means of {'ensemble' if stats.kind == 'seeds' else 'run'} {stats.name} ({stats.task}); "
                    f"outlined: bold cells", fontsize=9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def section_view(results: Sequence[GlobalStats], heatmaps: bool = True, notes: Sequence[str] = ()) -> dict[str, Any]:
    """The data the template's ``global_section`` macro renders (plain dicts and strings)."""
    figures = []
    if heatmaps:
        for stats in results:
            data = base64.b64encode(heatmap_png(stats)).decode("ascii")
            figures.append({
                "src": f"data:image/png;base64,{data}",
                "alt": f"heatmap of the mean r, p·r and p of run {stats.name}",
                "caption": (f"{'Ensemble' if stats.kind == 'seeds' else 'Run'} {stats.name} ({stats.task}): means of r "
                            f"and p·r, red above, blue below the baseline 1/J = {stats.baseline:.3f} (black line on the "
                            f"colour bar), outlined cells bold; p̄ in grey (an activation: no baseline)."),
            })
    return {
        "tables": [IntervalTable.from_spec(spec).as_html() for spec in layout_tables(results)],
        "heatmaps": figures,
        "methods": [methods_paragraph(stats) for stats in results],
        "warnings": [w for stats in results for w in stats.warnings],
        "notes": list(notes),
        "legend": LEGEND_PLAIN,
        "runs": [{"name": s.name, "task": s.task, "n": s.n_samples, "baseline": f"{s.baseline:.3f}", "kind": s.kind,
                  "units": units_text(s), "ensemble": s.kind == "seeds",
                  "members": ", ".join(m.name for m in s.members)} for s in results],
    }


def render_global_section(results: Sequence[GlobalStats], heatmaps: bool = True, notes: Sequence[str] = ()) -> str:
    """The ``<section id="global">`` HTML fragment (tables, heatmaps, methods), for reuse in other pages."""
    module = _environment().get_template(TEMPLATE).make_module({})
    return str(module.global_section(section_view(results, heatmaps=heatmaps, notes=notes)))


def render_global_page(results: Sequence[GlobalStats], heatmaps: bool = True, notes: Sequence[str] = ()) -> str:
    """The whole self-contained ``global.html`` page."""
    names = ", ".join(stats.name for stats in results)
    page = {
        "title": f"Global interpretation — {names}",
        "runs": names,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
    }
    return _environment().get_template(TEMPLATE).render(page=page, view=section_view(results, heatmaps=heatmaps, notes=notes))


__all__ = [
    "GlobalReport",
    "arrange_results",
    "heatmap_png",
    "render_global_page",
    "render_global_section",
    "run_global",
    "section_view",
    "write_global_outputs",
]
