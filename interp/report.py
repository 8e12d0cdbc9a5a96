"""`interp report`: one self-contained HTML report per run set, ``reports/<name>/index.html``.

The report gathers, for one or more runs (the output of `interp extract`):

* a **model card** per run — task, variant, data and checkpoint (with their SHA-256), split, n, model size,
  training settings and the validation metrics that selected the model;
* the **performance** table — the paper's Table 1/2 metrics, computed from the run's stored logits and labels
  (so they describe exactly the samples whose coefficients are analysed), next to the validation metrics;
* on synthetic data, **planted vs recovered** — for each concept the planted feature, the feature recovered as
  the bold cell of the r̄ table (the paper's rule), the feature with the largest mean p·r, and whether they
  agree, with the count "k of J";
* the **global section** — Tables 3–7 with heatmaps and the methods paragraph
  (:func:`interp.global_report.render_global_section`);
* a **gallery** of local explanations — for each concept, the sample with the highest p·r of the concept's most
  important feature (largest mean p·r), plus a few random samples; each card embeds a thumbnail and links to
  the sample's full local page, written under ``local/``.

Everything is offline: CSS inline, figures embedded as base64 PNG, no JavaScript, no external URL. The global
tables are also written as CSV / JSON / Markdown / LaTeX next to ``index.html`` (as `interp global` does) and
linked from the report.

Library use::
Compute apart from drawing: :func:`build_report` gathers everything into a :class:`~interp.report_model.ReportModel`
(pure data), :func:`write_report` writes the files (global tables, local pages, thumbnails, ``index.html``) and
:func:`run_report` does both.

Library use::

    from interp.report import build_report, run_report, write_report
    path = run_report(["runs/model-test"], out="reports/model-test")
    model = build_report(["runs/model-test"])      # or: inspect the data first, then
    path = write_report(model, "reports/model-test")
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from interp import __version__
from interp.errors import InterpError
from interp.faithfulness_report import HOW_TO_READ as FAITHFULNESS_HOW_TO_READ, faithfulness_views
from interp.gallery import DEFAULT_GALLERY_RANDOM, GalleryChoice, gallery_items, most_important_features
from interp.global_report import arrange_results, section_view, write_global_outputs
from interp.html import template_environment
from interp.local import safe_filename, write_local_page
from interp.local_compute import SampleExplanation
from interp.local_plot import compress_png, figure_bytes
from interp.modality_labels import modality_label_view
from interp.report_card import PAPER_LR, SENTIMENT_METRICS, model_card, performance_view, run_metrics
from interp.report_model import (
    HOW_TO_READ,
    PAPER_REFERENCE,
    PlantedRow,
    ReportModel,
    RunSection,
    glance,
    planted_rows,
    table_of_contents,
)
from interp.retraining import glance_lines, retraining_view
from interp.runs import DEFAULT_REPORTS_ROOT, DEFAULT_RUNS_ROOT, atomic_write_text, open_run, resolve_runs, run_name
from interp.schema import FEATURE_NAMES, FEATURES, related_features
from interp.stats import compute_global_stats

TEMPLATE = "report.html"
INDEX_FILE = "index.html"


@dataclass(frozen=True)
class GalleryItem:
    """One card of the gallery as the page shows it: the choice, its page's link and its thumbnail (data URI)."""

    run: str
    sample_id: str
    concept: str
    kind: str  # "top" or "random"
    reason: str
    href: str
    thumbnail: str
    label: str
    pred: str
    correct: bool
    transcript: str | None = None
    feature: str | None = None
    value: float | None = None


# ------------------------------------------------------------------------------------------------ entry points


def run_report(
    runs: Sequence[Path | str] | Path | str | None = None,
    out: Path | str | None = None,
    *,
    results: Sequence[Any] | None = None,
    gallery_random: int = DEFAULT_GALLERY_RANDOM,
    seed: int = 0,
    write_tables: bool = True,
    runs_root: Path | str = DEFAULT_RUNS_ROOT,
    reports_root: Path | str = DEFAULT_REPORTS_ROOT,
) -> Path:
    """Write the report of ``runs`` (default: the most recent run under ``runs_root``); returns ``index.html``.

    ``out`` defaults to ``reports_root/<first run's name>/``. The other arguments are those of
    :func:`build_report` and :func:`write_report`.
    """
    model = build_report(runs, results=results, gallery_random=gallery_random, seed=seed, runs_root=runs_root)
    out_dir = Path(out) if out is not None else Path(reports_root) / model.runs[0].name
    return write_report(model, out_dir, write_tables=write_tables)


def build_report(
    runs: Sequence[Path | str] | Path | str | None = None,
    *,
    results: Sequence[Any] | None = None,
    gallery_random: int = DEFAULT_GALLERY_RANDOM,
    seed: int = 0,
    runs_root: Path | str = DEFAULT_RUNS_ROOT,
) -> ReportModel:
    """Everything the report of ``runs`` shows, as data (reads the runs; writes nothing).

    ``results`` are the runs' global statistics if already computed (:func:`interp.stats.compute_global_stats`, same
    order as ``runs``); by default they are computed with the paper's settings (95% CLT intervals, all samples,
    baseline 1/J). The gallery shows the top sample of each concept and ``gallery_random`` random samples drawn with
    ``seed``; their local pages go to ``local/`` (``local/<run>/`` for several runs).
    """
    paths = resolve_runs(runs, runs_root)
    names = [run_name(p) for p in paths]
    if len(set(names)) != len(names):
        raise InterpError(f"the runs must have different folder names to be reported together; got {', '.join(names)}")
    if gallery_random < 0:
        raise InterpError(f"the number of random gallery samples must be at least 0, got {gallery_random}")
    if results is None:
        results = [compute_global_stats(path) for path in paths]
    else:  # single runs, or what `interp global` showed (seed ensembles stand for their member runs)
        by_path = {Path(m.run).resolve(): m for s in results for m in (s.members or (s,))}
        if len(results) != len(paths) and set(by_path) >= {p.resolve() for p in paths}:
            results = [by_path[p.resolve()] for p in paths]
        if len(results) != len(paths):
            raise InterpError(f"got statistics of {len(results)} runs for {len(paths)} runs")
    shown, notes = arrange_results(results)  # seed ensembles pooled (interp.ensemble), other runs side by side

    several = len(paths) > 1
    sections = []
    for path, stats in zip(paths, results):
        info = open_run(path)
        folder = f"local/{safe_filename(stats.name)}" if several else "local"
        sections.append(
            RunSection(
                name=stats.name,
                path=path,
                meta=dict(info.meta),
                task=info.task,
                card=model_card(dict(info.meta), stats.name),
                performance=performance_view(info),
                planted=planted_rows(stats, info.planted),
                gallery=gallery_items(info, stats, gallery_random, seed, folder),
                modality_labels=modality_label_view(info),
            )
        )
    retraining = retraining_view(shown, results)
    faithfulness = tuple(faithfulness_views(paths, names))
    synthetic = any(s.planted for s in sections)
    joined = ", ".join(s.name for s in sections)
    return ReportModel(
        runs=tuple(sections),
        shown=tuple(shown),
        notes=tuple(notes),
        global_view=section_view(shown, notes=notes),
        retraining=retraining,
        retraining_glance=tuple(glance_lines(retraining)),
        faithfulness=faithfulness,
        glance=tuple(glance(s) for s in sections),
        toc=table_of_contents(synthetic, bool(retraining.get("present")), bool(faithfulness)),
        title=f"Multimodal Routing report — {joined}",
        names=joined,
        synthetic=synthetic,
    )


def write_report(model: ReportModel, out: Path | str, *, write_tables: bool = True) -> Path:
    """Write the report of ``model`` into ``out``; returns ``index.html``.

    With ``write_tables`` the global tables (CSV, JSON, Markdown, LaTeX and ``global.html``) are written next to
    the report, as `interp global` does. The gallery's local pages go to ``out/<choice.folder>/`` and the cards
    embed thumbnails (:meth:`SampleExplanation.plot` with ``compact=True``).
    """
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if write_tables:
        write_global_outputs(model.shown, out_dir, notes=model.notes)
    gallery = {section.name: [_write_card(choice, out_dir) for choice in section.gallery] for section in model.runs}
    index = out_dir / INDEX_FILE
    atomic_write_text(index, render_report_html(model, gallery, _links(out_dir)))
    return index


def _write_card(choice: GalleryChoice, out_dir: Path) -> GalleryItem:
    """Write the local page of one gallery choice; its card (link and thumbnail)."""
    e = choice.explanation
    result = write_local_page(e, out_dir / choice.folder)
    return GalleryItem(
        run=choice.run,
        sample_id=e.sample_id,
        concept=e.concept,
        kind=choice.kind,
        reason=choice.reason,
        href=result.html_path.relative_to(out_dir).as_posix(),
        thumbnail=_data_uri(thumbnail_png(e)),
        label=e.label or "(none)",
        pred=e.pred or "(none)",
        correct=e.correct,
        transcript=e.transcript,
        feature=choice.feature,
        value=choice.value,
    )


def thumbnail_png(explanation: SampleExplanation, dpi: int = 150) -> bytes:
    """The gallery card's figure of one sample (:meth:`SampleExplanation.plot` with ``compact=True``), as a
    palette-quantised PNG; the full-size figure with every label is on the sample's own page."""
    return compress_png(figure_bytes(explanation.plot(compact=True, dpi=dpi), "png", dpi=dpi))


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# ------------------------------------------------------------------------------------------------------- HTML


#: Files of `interp global` linked from the report (relative to its folder, also one level down for several runs).
_TABLE_PATTERNS: tuple[str, ...] = ("global.html", "table*.md", "table*.tex", "global*.csv", "global*.json", "global*.md",
                                    "global*.tex")


def _links(out_dir: Path) -> list[dict[str, str]]:
    """Relative links to the global page and the table files found next to the report (sorted, global.html first)."""
    found: dict[str, Path] = {}
    for folder in [out_dir] + sorted(p for p in out_dir.iterdir() if p.is_dir() and p.name != "local"):
        for pattern in _TABLE_PATTERNS:
            for path in folder.glob(pattern):
                if path.is_file():
                    found[path.relative_to(out_dir).as_posix()] = path
    return [{"label": href, "href": href} for href in sorted(found, key=lambda h: (h != "global.html", h.count("/"), h))]


def _environment() -> Any:
    return template_environment(strict=True)


def render_report_html(model: ReportModel, gallery: dict[str, Sequence[GalleryItem]],
                       links: Sequence[dict[str, str]]) -> str:
    """The whole report page (autoescaped): ``model`` rendered, with the gallery cards of each run (by run name)
    and the links to the table files."""
    page = {
        "title": model.title,
        "names": model.names,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "reference": PAPER_REFERENCE,
        "synthetic": model.synthetic,
    }
    return _environment().get_template(TEMPLATE).render(
        page=page,
        runs=model.runs,
        gallery=gallery,
        glance=model.glance,
        toc=model.toc,
        global_view=model.global_view,
        links=list(links),
        howto=HOW_TO_READ,
        feature_names=FEATURE_NAMES,
        features=FEATURES,
        retraining=model.retraining,
        retraining_glance=model.retraining_glance,
        faithfulness=list(model.faithfulness),
        faithfulness_howto=FAITHFULNESS_HOW_TO_READ,
    )


__all__ = [
    "GalleryChoice",
    "GalleryItem",
    "PAPER_LR",
    "PlantedRow",
    "ReportModel",
    "RunSection",
    "SENTIMENT_METRICS",
    "build_report",
    "gallery_items",
    "model_card",
    "most_important_features",
    "performance_view",
    "planted_rows",
    "related_features",
    "render_report_html",
    "run_metrics",
    "run_report",
    "write_report",
]
