"""The one table model of the global statistics: :class:`IntervalTable`, and the layout of the paper's tables.

``IntervalTable.from_stats(stats, quantity)`` (one run) or ``IntervalTable.from_spec(spec)`` (a :class:`TableSpec`
of :func:`layout_tables`: one or more runs side by side) walks the cells once into rows of :class:`Cell`
(text, marks, numbers); the renderers only lay them out: :meth:`IntervalTable.as_frame`, :meth:`~IntervalTable.as_text`
(rich, for the terminal), :meth:`~IntervalTable.as_markdown`, :meth:`~IntervalTable.as_latex`,
:meth:`~IntervalTable.as_csv` and :meth:`~IntervalTable.as_html` (the data the HTML template renders).

Cells are printed as ``(low, high)`` with 3 decimals (DESIGN.md, "Statistics"); a cell without an interval
shows ``n=0`` or ``n=1``. Marks, the same in every format (the rules live in :data:`MARKS` and :meth:`Cell.marked`):

* **bold** — the paper's rule (largest mean of its concept column, interval above 1/J): ``**…**`` in the
  terminal and Markdown, ``\\textbf{…}`` in LaTeX, a ``bold`` class in HTML;
* ``⁺`` / ``⁻`` (LaTeX ``$^{+}$`` / ``$^{-}$``, HTML ``+`` / ``−``) — significant above / below the baseline but
  not bold.

With the runs of both paper tasks (one sentiment and one emotion run), :func:`layout_tables` arranges the tables
as the paper's Tables 3–7: 3 = r̄ (sentiment and emotion), 4 / 5 = p̄r (sentiment / emotion),
6 / 7 = p̄ (sentiment / emotion). Otherwise each run has its r, p·r and p tables.

Nothing here computes statistics (see :mod:`interp.stats`) or prints; every renderer returns a value.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from interp.stats import JUDGED, GlobalStats

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


def format_interval(low: float, high: float, n: int, digits: int = 3) -> str:
    """``(low, high)`` with ``digits`` decimals; ``n=0`` / ``n=1`` when there is no interval."""
    if n < 2 or not (math.isfinite(low) and math.isfinite(high)):
        return f"n={int(n)}" if n < 2 else "n/a"
    return f"({low:.{digits}f}, {high:.{digits}f})"


#: Bold and significance marks per style: (bold template, suffix above, suffix below). HTML marks bold cells with
#: a class (the template), so its bold template leaves the text as it is.
MARKS: dict[str, tuple[str, str, str]] = {
    "plain": ("**{}**", "⁺", "⁻"),
    "markdown": ("**{}**", "⁺", "⁻"),
    "latex": (r"\textbf{{{}}}", "$^{+}$", "$^{-}$"),
    "html": ("{}", "+", "−"),
}
#: Terminal styles of marked cells (with colour).
_RICH_STYLES = {"above": "green", "below": "red"}


def mark(text: str, significant: str, bold: bool, style: str = "plain") -> str:
    """``text`` with the bold / significance marks of ``style`` (a key of :data:`MARKS`)."""
    bold_template, above, below = MARKS[style]
    if bold:
        return bold_template.format(text)
    return text + {"above": above, "below": below}.get(significant, "")


def _number(value: Any) -> str:
    """Full-precision text of a number for data attributes (``nan`` when missing)."""
    value = float(value)
    return repr(value) if np.isfinite(value) else "nan"


@dataclass(frozen=True)
class Cell:
    """One (feature, column) cell: its interval text, its verdict and every number of its row in
    :attr:`interp.stats.GlobalStats.cells` (``values``: mean, std, n, se, low, high, p_value, ...)."""

    feature: str
    column: str
    text: str
    significant: str
    bold: bool
    values: Mapping[str, Any]

    def marked(self, style: str = "plain") -> str:
        """The text with its marks in ``style`` ("plain", "markdown", "latex" or "html")."""
        return mark(self.text, self.significant, self.bold, style)

    def suffix(self, style: str = "html") -> str:
        """The significance mark alone ("" for bold or non-significant cells)."""
        return "" if self.bold else mark("", self.significant, False, style)

    def html(self, stats: GlobalStats, quantity: str) -> dict[str, Any]:
        """The data the HTML template renders for this cell (text, mark, classes, data attributes, tooltip)."""
        row = self.values
        classes = ["cell"]
        if self.bold:
            classes.append("bold")
        if self.significant:
            classes.append(f"sig-{self.significant}")
        if int(row["n"]) < 2:
            classes.append("no-interval")
        p_text = "" if not np.isfinite(row["p_adjusted"]) else f", p = {row['p_adjusted']:.3g}"
        seeds = stats.kind == "seeds"
        if seeds:
            p_text += (f"; prediction interval for a new seed ({row['pi_low']:.3f}, {row['pi_high']:.3f}); bold in "
                       f"{int(row['bold_seeds'])} of {stats.units} seeds; single-seed verdict agrees in "
                       f"{int(row['agree_seeds'])}")
        std_text = "undefined" if not np.isfinite(row["std"]) else f"{row['std']:.4f}"
        mean_text = "—" if not np.isfinite(row["mean"]) else f"{row['mean']:.4f}"
        return {
            "text": self.text,
            "bold": self.bold,
            "mark": self.suffix("html"),
            "classes": " ".join(classes),
            "run": stats.name,
            "task": stats.task,
            "quantity": quantity,
            "feature": self.feature,
            "concept": self.column,
            **{key: _number(row[key]) for key in ("mean", "std")},
            "n": int(row["n"]),
            **{key: _number(row[key]) for key in ("low", "high", "p_value", "p_adjusted")},
            "significant": self.significant,
            "kind": row["kind"],
            "units": int(row["units"]),
            "seeds": (f"bold {int(row['bold_seeds'])}/{stats.units} · agree {int(row['agree_seeds'])}/{stats.units}"
                      if seeds and quantity in JUDGED else ""),
            "pi_low": _number(row["pi_low"]) if seeds else "",
            "pi_high": _number(row["pi_high"]) if seeds else "",
            "title": f"{self.feature} → {self.column}: mean {mean_text}, sd {std_text}, {row['kind']} "
                     f"{int(row['units'])}{p_text}",
        }


@dataclass(frozen=True)
class ColumnGroup:
    """The columns one run contributes to a table (one group, or one per run side by side in Table 3)."""

    stats: GlobalStats
    columns: tuple[str, ...]


@dataclass(frozen=True)
class IntervalTable:
    """A quantity's (features × columns) table of interval cells over one or more runs; ``rows[i]`` holds the cells
    of ``features[i]``, group after group."""

    spec: TableSpec
    groups: tuple[ColumnGroup, ...]
    features: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]

    @classmethod
    def from_spec(cls, spec: TableSpec, digits: int = 3) -> "IntervalTable":
        """Walk the cells of every run of ``spec`` once."""
        groups = tuple(ColumnGroup(stats, tuple(stats.columns(spec.quantity))) for stats in spec.parts)
        by_cell = {}
        for index, stats in enumerate(spec.parts):
            for row in stats.quantity_cells(spec.quantity).to_dict(orient="records"):
                by_cell[(index, row["feature"], row["concept"])] = Cell(
                    feature=row["feature"], column=row["concept"],
                    text=format_interval(row["low"], row["high"], int(row["n"]), digits),
                    significant=row["significant"], bold=bool(row["bold"]), values=row,
                )
        features = tuple(spec.parts[0].features)
        rows = tuple(
            tuple(by_cell[(index, feature, column)] for index, group in enumerate(groups) for column in group.columns)
            for feature in features
        )
        return cls(spec, groups, features, rows)

    @classmethod
    def from_stats(cls, stats: GlobalStats, quantity: str, digits: int = 3) -> "IntervalTable":
        """The table of one quantity of one run."""
        return cls.from_spec(single_spec(stats, quantity), digits)

    @property
    def quantity(self) -> str:
        return self.spec.quantity

    @property
    def grouped(self) -> bool:
        """True when several runs stand side by side (their columns are labelled with the task)."""
        return len(self.groups) > 1

    def parts(self) -> list["IntervalTable"]:
        """One table per run (the terminal prints a side-by-side table as one table per run)."""
        if not self.grouped:
            return [self]
        return [IntervalTable.from_spec(TableSpec(self.spec.key, self.quantity, self.spec.title, (g.stats,),
                                                  self.spec.number)) for g in self.groups]

    def column_labels(self) -> list[str]:
        return [f"{g.stats.task} {c}" if self.grouped else c for g in self.groups for c in g.columns]

    def as_frame(self, marks: bool = False, style: str = "plain") -> pd.DataFrame:
        """The cell texts as a DataFrame (rows t, a, v, ta, av, vt, tav; marks in ``style`` when ``marks``)."""
        frame = pd.DataFrame([[c.marked(style) if marks else c.text for c in row] for row in self.rows],
                             index=list(self.features), columns=self.column_labels())
        frame.index.name = "feature"
        return frame

    def as_rich(self, color: bool = False) -> Table:
        """A rich Table (bold cells bold, above green, below red when ``color``; the marks carry the meaning)."""
        table = Table(show_lines=False)
        table.add_column(header_label(self.groups[0].stats), justify="left")
        for label in self.column_labels():
            table.add_column(label, justify="center")
        for feature, row in zip(self.features, self.rows):
            table.add_row(feature, *(Text(c.marked(), style="bold" if c.bold else _RICH_STYLES.get(c.significant, ""))
                                     for c in row))
        return table

    def as_text(self, color: bool = False, width: int | None = None) -> str:
        """The title and the table as terminal text."""
        buffer = io.StringIO()
        console = Console(file=buffer, force_terminal=color, color_system="standard" if color else None,
                          width=width or 200, highlight=False, soft_wrap=False)
        console.print(Text(self.spec.title, style="bold" if color else ""))
        console.print(self.as_rich(color))
        return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()).strip("\n")

    def as_markdown(self) -> str:
        """A Markdown (GitHub) pipe table with the title as a caption line, bold cells in ``**``."""
        header = [header_label(self.groups[0].stats)] + self.column_labels()
        lines = [f"**{self.spec.title}**", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join([":---"] + [":---:"] * (len(header) - 1)) + "|"]
        for feature, row in zip(self.features, self.rows):
            lines.append("| " + " | ".join([feature] + [c.marked("markdown").replace("|", "\\|") for c in row]) + " |")
        first = self.groups[0].stats
        verdict = (f"Baseline 1/J = {first.baseline:.3f}. {LEGEND}." if self.quantity != "p"
                   else f"No baseline: {_P_NOTE}.")
        lines += ["", verdict]
        return "\n".join(lines) + "\n"

    def as_latex(self) -> str:
        """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``); bold cells in ``\\textbf``."""
        first = self.groups[0].stats
        symbol, latex = QUANTITY_SYMBOLS[self.quantity], QUANTITY_LATEX[self.quantity]
        title = latex_escape(self.spec.title.replace(symbol, "\x00")).replace("\x00", latex)
        lines = [
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            (rf"\caption{{{title}. Bold: largest mean of its column with the interval above the baseline "
             rf"$1/J = {first.baseline:.3f}$; $^{{+}}$/$^{{-}}$: interval wholly above/below the baseline.}}"
             if self.quantity != "p" else rf"\caption{{{title}. $\bar p_i$ is an activation: no 1/J verdict.}}"),
            rf"\label{{tab:{latex_escape(self.spec.key)}}}",
            r"\begin{tabular}{l" + "c" * sum(len(g.columns) for g in self.groups) + "}",
            r"\toprule",
        ]
        if self.grouped:
            lines.append(" & " + " & ".join(rf"\multicolumn{{{len(g.columns)}}}{{c}}{{{latex_escape(g.stats.task)}}}"
                                             for g in self.groups) + r" \\")
            start, rules = 2, []
            for group in self.groups:
                rules.append(rf"\cmidrule(lr){{{start}-{start + len(group.columns) - 1}}}")
                start += len(group.columns)
            lines.append(" ".join(rules))
        lines.append(" & ".join([latex_escape(header_label(first))]
                                + [latex_escape(c) for g in self.groups for c in g.columns]) + r" \\")
        lines.append(r"\midrule")
        for feature, row in zip(self.features, self.rows):
            lines.append(" & ".join([latex_escape(feature)] + [c.marked("latex") for c in row]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    def as_csv(self) -> str:
        """Long format, one row per cell of every run, full precision; ``interval`` holds the printed text."""
        return "".join(cells_csv(g.stats, g.stats.quantity_cells(self.quantity), header=i == 0)
                       for i, g in enumerate(self.groups))

    def as_html(self) -> dict[str, Any]:
        """The data the ``global.html`` template renders for this table (plain dicts and strings)."""
        return {
            "id": f"global-{self.spec.key}",
            "number": self.spec.number,
            "quantity": self.quantity,
            "name": QUANTITY_NAMES[self.quantity],
            "title": self.spec.title,
            "groups": [{"label": g.stats.task if self.grouped else "", "columns": list(g.columns),
                        "span": len(g.columns)} for g in self.groups],
            "grouped": self.grouped,
            "header": header_label(self.groups[0].stats),
            "rows": [{"feature": feature, "cells": [c.html(g.stats, self.quantity) for g, c in
                                                    zip(self._cell_groups(), row)]}
                     for feature, row in zip(self.features, self.rows)],
        }

    def _cell_groups(self) -> list[ColumnGroup]:
        """The group of each position in a row."""
        return [g for g in self.groups for _ in g.columns]


def cells_csv(stats: GlobalStats, frame: pd.DataFrame, header: bool = True) -> str:
    """Cells of ``stats`` (rows of its ``cells`` frame) as long-format CSV with the printed ``interval`` and the options."""
    frame = frame.copy()
    frame["interval"] = [format_interval(lo, hi, n) for lo, hi, n in zip(frame["low"], frame["high"], frame["n"])]
    interval = "t" if stats.kind == "seeds" else stats.options.interval
    for key, value in (("level", stats.options.level), ("group", stats.options.group), ("interval_kind", interval),
                       ("correction", stats.options.correction)):
        frame[key] = value
    return frame.to_csv(index=False, header=header, lineterminator="\n")


@dataclass(frozen=True)
class TableSpec:
    """One printed table: a quantity over one or more runs side by side (column groups)."""

    key: str
    quantity: str
    title: str
    parts: tuple[GlobalStats, ...]
    number: int | None = None


def units_text(stats: GlobalStats) -> str:
    """n, G or K with its unit: "n = 752 samples", "G = 31 videos (n = 752)", "K = 5 seeds"."""
    if stats.kind == "seeds":
        return f"K = {stats.units} seeds"
    if stats.kind == "videos":
        return f"G = {stats.units} videos (n = {stats.n_samples} samples)"
    return f"n = {stats.n_samples} samples"


def interval_phrase(stats: GlobalStats) -> str:
    options = stats.options
    level = f"{100 * options.level:g}%"
    correction = "" if options.correction == "none" else f", {options.correction} correction"
    name = {"seeds": "between-seed Student t", "videos": "video-clustered CLT"}.get(stats.kind, _INTERVAL_NAMES[options.interval])
    return f"{level} {name} intervals {KIND_TEXT[stats.kind]}, {units_text(stats)}{correction}"


def header_label(stats: GlobalStats) -> str:
    """The first header cell of a table: the interval kind and its n (or K)."""
    units = {"seeds": f"K={stats.units}", "videos": f"G={stats.units}"}.get(stats.kind, f"n={stats.n_samples}")
    return f"feature (interval over {stats.kind}, {units})"


def layout_tables(results: Sequence[GlobalStats]) -> list[TableSpec]:
    """The tables to show: the paper's Tables 3–7 for one sentiment and one emotion run, else r, p·r, p per run."""
    tasks = [s.task for s in results]
    if len(results) == 2 and sorted(tasks) == ["emotion", "sentiment"]:
        sentiment, emotion = sorted(results, key=lambda s: s.task != "sentiment")
        phrase = interval_phrase(sentiment)
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
                                   f"{interval_phrase(stats)}{reference}", (stats,)))
    return specs


def single_spec(stats: GlobalStats, quantity: str) -> TableSpec:
    """A table of one quantity of one run."""
    paper = PAPER_TABLES.get((quantity, stats.task))
    reference = f" (cf. the paper's Table {paper})" if paper else ""
    return TableSpec(quantity, quantity, f"{QUANTITY_SYMBOLS[quantity]} ({stats.task}, run {stats.name}): "
                     f"{interval_phrase(stats)}{reference}", (stats,))


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "—": "---", "–": "--", "·": r"$\cdot$", "×": r"$\times$", "±": r"$\pm$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


__all__ = [
    "Cell", "ColumnGroup", "IntervalTable", "KIND_TEXT", "LEGEND", "LEGEND_PLAIN", "MARKS", "PAPER_TABLES",
    "QUANTITY_LATEX", "QUANTITY_NAMES", "QUANTITY_ORDER", "QUANTITY_SYMBOLS", "TableSpec", "cells_csv",
    "format_interval", "header_label", "interval_phrase", "latex_escape", "layout_tables", "mark", "single_spec", "units_text",
]
