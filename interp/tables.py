"""Formatting of the global statistics: terminal (rich), CSV, JSON, Markdown and LaTeX.

Cells are printed as ``(low, high)`` with 3 decimals (DESIGN.md, "Statistics"); a cell without an interval
shows ``n=0`` or ``n=1``. Marks, the same in every format:

* **bold** — the paper's rule (largest mean of its concept column, interval above 1/J): ``**…**`` in the
  terminal and Markdown, ``\\textbf{…}`` in LaTeX;
* ``⁺`` / ``⁻`` (LaTeX ``$^{+}$`` / ``$^{-}$``) — significant above / below the baseline but not bold.

With the runs of both paper tasks (one sentiment and one emotion run), :func:`layout_tables` arranges the tables
as the paper's Tables 3–7: 3 = r̄ (sentiment and emotion), 4 / 5 = p̄r (sentiment / emotion),
6 / 7 = p̄ (sentiment / emotion). Otherwise each run has its r, p·r and p tables.

Nothing here computes statistics (see :mod:`interp.stats`) or prints; every function returns a string.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from interp.stats import GlobalStats

QUANTITY_ORDER: tuple[str, ...] = ("r", "pr", "p")

#: Short symbols of the quantities (Unicode; LaTeX in :data:`QUANTITY_LATEX`).
QUANTITY_SYMBOLS: dict[str, str] = {"r": "r̄ᵢⱼ", "pr": "mean pᵢ·rᵢⱼ", "p": "p̄ᵢ"}
QUANTITY_LATEX: dict[str, str] = {"r": r"$\bar r_{ij}$", "pr": r"$\overline{p_i r_{ij}}$", "p": r"$\bar p_i$"}
QUANTITY_NAMES: dict[str, str] = {
    "r": "routing coefficient r",
    "pr": "activation × routing coefficient p·r",
    "p": "activation p",
}
#: The paper's table number of each (quantity, task).
PAPER_TABLES: dict[tuple[str, str], int] = {
    ("r", "sentiment"): 3,
    ("r", "emotion"): 3,
    ("pr", "sentiment"): 4,
    ("pr", "emotion"): 5,
    ("p", "sentiment"): 6,
    ("p", "emotion"): 7,
}
_BOLD_RULE = "largest mean of its column with the interval above the baseline (the paper's rule)"
_P_NOTE = "p̄ is an activation, not a share of a feature: its intervals are listed without a 1/J verdict"
LEGEND = f"**bold**: {_BOLD_RULE}; ⁺ / ⁻: interval wholly above / below the baseline; {_P_NOTE}"
#: The legend without Markdown marks (HTML pages, where bold cells are bold).
LEGEND_PLAIN = f"Bold: {_BOLD_RULE}; + / −: interval wholly above / below the baseline; {_P_NOTE}"
#: What variance the intervals of each kind cover, for captions.
KIND_TEXT: dict[str, str] = {
    "samples": "over samples (one trained model)",
    "videos": "over videos (cluster-robust: segments of one video are not independent)",
    "seeds": "over seeds (between retrained models)",
}

_INTERVAL_NAMES = {"clt": "CLT", "t": "Student t", "bootstrap": "percentile bootstrap"}


# ----------------------------------------------------------------------------------------------- cell text


def format_interval(low: float, high: float, n: int, digits: int = 3) -> str:
    """``(low, high)`` with ``digits`` decimals; ``n=0`` / ``n=1`` when there is no interval."""
    if n < 2 or not (math.isfinite(low) and math.isfinite(high)):
        return f"n={int(n)}" if n < 2 else "n/a"
    return f"({low:.{digits}f}, {high:.{digits}f})"


def mark(text: str, significant: str, bold: bool, style: str = "plain") -> str:
    """``text`` with the bold / significance marks of ``style`` ("plain", "markdown" or "latex")."""
    if style == "latex":
        if bold:
            return rf"\textbf{{{text}}}"
        return text + {"above": "$^{+}$", "below": "$^{-}$"}.get(significant, "")
    if bold:
        return f"**{text}**"
    return text + {"above": "⁺", "below": "⁻"}.get(significant, "")


def interval_table(stats: "GlobalStats", quantity: str, digits: int = 3, marks: bool = False, style: str = "plain") -> pd.DataFrame:
    """A quantity's (features × columns) table of ``(low, high)`` strings, rows t, a, v, ta, av, vt, tav."""
    part = stats.quantity_cells(quantity)
    text = {}
    for row in part.itertuples(index=False):
        cell = format_interval(row.low, row.high, row.n, digits)
        if marks:
            cell = mark(cell, row.significant, bool(row.bold), style)
        text[(row.feature, row.concept)] = cell
    columns = stats.columns(quantity)
    frame = pd.DataFrame(
        [[text.get((f, c), "") for c in columns] for f in stats.features], index=list(stats.features), columns=list(columns)
    )
    frame.index.name = "feature"
    return frame


# -------------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class TableSpec:
    """One printed table: a quantity over one or more runs side by side (column groups)."""

    key: str
    quantity: str
    title: str
    parts: tuple["GlobalStats", ...]
    number: int | None = None


def units_text(stats: "GlobalStats") -> str:
    """n, G or K with its unit: "n = 752 samples", "G = 31 videos (n = 752)", "K = 5 seeds"."""
    if stats.kind == "seeds":
        return f"K = {stats.units} seeds"
    if stats.kind == "videos":
        return f"G = {stats.units} videos (n = {stats.n_samples} samples)"
    return f"n = {stats.n_samples} samples"


def _interval_phrase(stats: "GlobalStats") -> str:
    options = stats.options
    level = f"{100 * options.level:g}%"
    correction = "" if options.correction == "none" else f", {options.correction} correction"
    name = {"seeds": "between-seed Student t", "videos": "video-clustered CLT"}.get(stats.kind, _INTERVAL_NAMES[options.interval])
    return f"{level} {name} intervals {KIND_TEXT[stats.kind]}, {units_text(stats)}{correction}"


def header_label(stats: "GlobalStats") -> str:
    """The first header cell of a table: the interval kind and its n (or K)."""
    units = {"seeds": f"K={stats.units}", "videos": f"G={stats.units}"}.get(stats.kind, f"n={stats.n_samples}")
    return f"feature (interval over {stats.kind}, {units})"


def layout_tables(results: Sequence["GlobalStats"]) -> list[TableSpec]:
    """The tables to show: the paper's Tables 3–7 for one sentiment and one emotion run, else r, p·r, p per run."""
    tasks = [s.task for s in results]
    if len(results) == 2 and sorted(tasks) == ["emotion", "sentiment"]:
        sentiment, emotion = sorted(results, key=lambda s: s.task != "sentiment")
        phrase = _interval_phrase(sentiment)
        specs = [TableSpec("table3", "r", f"Table 3. {QUANTITY_SYMBOLS['r']}: {phrase} (sentiment and emotion)",
                           (sentiment, emotion), 3)]
        for quantity in ("pr", "p"):
            for stats in (sentiment, emotion):
                number = PAPER_TABLES[(quantity, stats.task)]
                specs.append(TableSpec(f"table{number}", quantity,
                                       f"Table {number}. {QUANTITY_SYMBOLS[quantity]}: {phrase} ({stats.task})", (stats,), number))
        return specs
    specs = []
    multiple = len(results) > 1
    for index, stats in enumerate(results):
        for quantity in QUANTITY_ORDER:
            paper = PAPER_TABLES.get((quantity, stats.task))
            reference = f" (cf. the paper's Table {paper})" if paper else ""
            prefix = f"{stats.name} — " if multiple else ""
            key = f"{index}-{quantity}" if multiple else quantity
            specs.append(TableSpec(key, quantity, f"{prefix}{QUANTITY_SYMBOLS[quantity]} ({stats.task}): "
                                   f"{_interval_phrase(stats)}{reference}", (stats,)))
    return specs


def single_spec(stats: "GlobalStats", quantity: str) -> TableSpec:
    """A table of one quantity of one run."""
    paper = PAPER_TABLES.get((quantity, stats.task))
    reference = f" (cf. the paper's Table {paper})" if paper else ""
    return TableSpec(quantity, quantity, f"{QUANTITY_SYMBOLS[quantity]} ({stats.task}, run {stats.name}): "
                     f"{_interval_phrase(stats)}{reference}", (stats,))


# -------------------------------------------------------------------------------------------------- terminal


def render_terminal(results: Sequence["GlobalStats"], color: bool = False, width: int | None = None) -> str:
    """All tables of ``results`` as text (rich tables), with the legend, methods line and warnings.

    ``color`` adds ANSI styles (bold cells bold, above green, below red); without it the marks carry the meaning.
    A table that spans two runs (Table 3) is printed as one table per run to keep lines short.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=color, color_system="standard" if color else None,
                      width=width or 200, highlight=False, soft_wrap=False)
    for stats in results:
        console.print(Text(_run_header(stats)))
    for warning in _all_warnings(results):
        console.print(Text(f"warning: {warning}"))
    for spec in layout_tables(results):
        for stats in spec.parts:
            suffix = f" — {stats.task}" if len(spec.parts) > 1 else ""
            console.print(Text(spec.title + suffix, style="bold" if color else ""))
            table = Table(show_lines=False)
            table.add_column(header_label(stats), justify="left")
            for column in stats.columns(spec.quantity):
                table.add_column(column, justify="center")
            frame = stats.quantity_cells(spec.quantity)
            by_cell = {(r.feature, r.concept): r for r in frame.itertuples(index=False)}
            for feature in stats.features:
                row: list[Any] = [feature]
                for column in stats.columns(spec.quantity):
                    cell = by_cell[(feature, column)]
                    text = mark(format_interval(cell.low, cell.high, cell.n), cell.significant, bool(cell.bold))
                    style = "bold" if cell.bold else {"above": "green", "below": "red"}.get(cell.significant, "")
                    row.append(Text(text, style=style))
                table.add_row(*row)
            console.print(table)
    console.print(Text(LEGEND))
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()).strip("\n")


def _run_header(stats: "GlobalStats") -> str:
    split = f", split {stats.options.split}" if stats.options.split else ""
    what = "ensemble" if stats.kind == "seeds" else "run"
    per = " per seed" if stats.kind == "seeds" else ""
    return (f"{what} {stats.name} ({stats.task}, J = {stats.n_concepts}{split}): n = {stats.n_samples} samples{per}, "
            f"baseline 1/J = {stats.baseline:.3f}, group {stats.options.group}, {_interval_phrase(stats)}")


def _all_warnings(results: Sequence["GlobalStats"]) -> list[str]:
    return [w for stats in results for w in stats.warnings]


def summary_text(stats: "GlobalStats") -> str:
    """Plain text: the run header, the three tables with marks, the legend and the warnings."""
    lines = [_run_header(stats)]
    lines += [f"warning: {w}" for w in stats.warnings]
    for quantity in QUANTITY_ORDER:
        lines += ["", single_spec(stats, quantity).title, interval_table(stats, quantity, marks=True).to_string()]
    lines += ["", LEGEND]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- machine formats


def _clean(value: Any) -> Any:
    """JSON-safe scalars: NaN/inf → None, numpy → Python."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def cell_records(stats: "GlobalStats", quantity: str | None = None) -> list[dict[str, Any]]:
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


def options_record(stats: "GlobalStats") -> dict[str, Any]:
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


def to_json(stats: "GlobalStats", quantity: str | None = None) -> str:
    """The options, the context and every cell (mean, std, n, se, low, high, p-values, significance, bold)."""
    document = options_record(stats)
    if quantity is not None:
        document["quantity"] = quantity
    document["methods"] = methods_paragraph(stats)
    document["cells"] = cell_records(stats, quantity)
    return json.dumps(document, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def to_csv(stats: "GlobalStats", quantity: str | None = None) -> str:
    """Long format, one row per cell, full precision; the ``interval`` column holds the printed text."""
    frame = (stats.cells if quantity is None else stats.quantity_cells(quantity)).copy()
    frame["interval"] = [format_interval(lo, hi, n) for lo, hi, n in zip(frame["low"], frame["high"], frame["n"])]
    interval = "t" if stats.kind == "seeds" else stats.options.interval
    for key, value in (("level", stats.options.level), ("group", stats.options.group), ("interval_kind", interval),
                       ("correction", stats.options.correction)):
        frame[key] = value
    return frame.to_csv(index=False, lineterminator="\n")


# -------------------------------------------------------------------------------------------- paper formats


def _column_groups(spec: TableSpec) -> list[tuple["GlobalStats", tuple[str, ...]]]:
    return [(stats, stats.columns(spec.quantity)) for stats in spec.parts]


def _rows(spec: TableSpec, style: str) -> list[tuple[str, list[str]]]:
    features = spec.parts[0].features
    tables = [interval_table(stats, spec.quantity, marks=True, style=style) for stats in spec.parts]
    return [(feature, [cell for table in tables for cell in table.loc[feature].tolist()]) for feature in features]


def to_markdown(spec: TableSpec) -> str:
    """A Markdown (GitHub) pipe table with the title as a caption line, bold cells in ``**``."""
    groups = _column_groups(spec)
    several = len(groups) > 1
    header = [header_label(spec.parts[0])] + [f"{stats.task} {c}" if several else c for stats, columns in groups for c in columns]
    lines = [f"**{spec.title}**", "", "| " + " | ".join(header) + " |", "|" + "|".join([":---"] + [":---:"] * (len(header) - 1)) + "|"]
    for feature, cells in _rows(spec, "markdown"):
        lines.append("| " + " | ".join([feature] + [c.replace("|", "\\|") for c in cells]) + " |")
    first = spec.parts[0]
    verdict = (f"Baseline 1/J = {first.baseline:.3f}. {LEGEND}." if spec.quantity != "p"
               else f"No baseline: {_P_NOTE}.")
    lines += ["", verdict]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "—": "---", "–": "--", "·": r"$\cdot$", "×": r"$\times$", "±": r"$\pm$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(spec: TableSpec) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``); bold cells in ``\\textbf``."""
    groups = _column_groups(spec)
    n_columns = sum(len(columns) for _, columns in groups)
    first = spec.parts[0]
    title = spec.title
    for symbol, latex in ((QUANTITY_SYMBOLS[spec.quantity], QUANTITY_LATEX[spec.quantity]),):
        title = latex_escape(title.replace(symbol, "\x00")).replace("\x00", latex)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        (rf"\caption{{{title}. Bold: largest mean of its column with the interval above the baseline "
         rf"$1/J = {first.baseline:.3f}$; $^{{+}}$/$^{{-}}$: interval wholly above/below the baseline.}}"
         if spec.quantity != "p" else rf"\caption{{{title}. $\bar p_i$ is an activation: no 1/J verdict.}}"),
        rf"\label{{tab:{latex_escape(spec.key)}}}",
        r"\begin{tabular}{l" + "c" * n_columns + "}",
        r"\toprule",
    ]
    if len(groups) > 1:
        lines.append(" & " + " & ".join(rf"\multicolumn{{{len(columns)}}}{{c}}{{{latex_escape(stats.task)}}}"
                                         for stats, columns in groups) + r" \\")
        start = 2
        rules = []
        for _, columns in groups:
            rules.append(rf"\cmidrule(lr){{{start}-{start + len(columns) - 1}}}")
            start += len(columns)
        lines.append(" ".join(rules))
    lines.append(" & ".join([latex_escape(header_label(first))] + [latex_escape(c) for _, columns in groups for c in columns]) + r" \\")
    lines.append(r"\midrule")
    for feature, cells in _rows(spec, "latex"):
        lines.append(" & ".join([latex_escape(feature)] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------- methods


def methods_paragraph(stats: "GlobalStats") -> str:
    """A short methods paragraph: n, the formula, the baseline, the level, the group, interval and correction."""
    options = stats.options
    level = f"{100 * options.level:g}%"
    alpha = 1.0 - options.level
    from scipy.stats import norm

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

