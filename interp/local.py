"""Local (per-sample) interpretation, the page half: `interp local` writes, for each chosen sample of a run, a
self-contained HTML page (jinja2, autoescaped) with the figure embedded as a base64 PNG, plus PNG and SVG files
next to it. It only renders: the numbers come from :mod:`interp.local_compute`
(:class:`SampleExplanation`), the figure from :mod:`interp.local_plot`.

Library use (a notebook gets the same picture as the CLI)::

    from interp.local import SampleExplanation, write_local_page
    explanation = SampleExplanation.from_run("runs/model-test", "video_12[3]")
    fig = explanation.plot()
    write_local_page(explanation, "reports/model-test/local")
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from interp.errors import InterpError
from interp.html import template_environment
from interp.local_compute import (
    RANK_BY,
    SampleExplanation,
    all_sample_ids,
    check_sample_ids,
    draw_samples,
    explain_sample,
    explain_samples,
    random_samples,
    top_samples,
    validate_concept,
)
from interp.local_plot import figure_bytes
from interp.runs import DEFAULT_REPORTS_ROOT, atomic_write_bytes, atomic_write_text, open_run, resolve_run, run_name
from interp.schema import FEATURE_NAMES

#: One-sentence reading guide shown with every figure.
READING_GUIDE = (
    "Each cell is p_i·r_ij: how strongly feature i is active (p_i, between 0 and 1) times how much of it is routed "
    "to concept j (r_ij; each row of r sums to 1, so each row of the heatmap sums to p_i). Red cells are above 1/J, "
    "the value of a fully active feature routed uniformly; blue cells are below. The bars are the signed "
    "contributions p_i r_ij <o_j, f_i W_ij> of each feature to the outlined concept's logit; they add up to the logit."
)

_TEMPLATE = "local.html"
_STYLE = "style.css"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_NAME = 100


@dataclass(frozen=True)
class LocalResult:
    """Files written for one sample by :func:`write_local_page`."""

    sample_id: str
    html_path: Path
    png_path: Path
    svg_path: Path
    concept: str = ""


def plot_sample(explanation: SampleExplanation, ax: Any = None, *, compact: bool = False, dpi: int | None = None) -> Any:
    """The figure of one sample: :meth:`SampleExplanation.plot` (kept for notebooks that call it by this name)."""
    return explanation.plot(ax, compact=compact, dpi=dpi)


# ------------------------------------------------------------------------------------------------- HTML pages


def safe_filename(sample_id: str) -> str:
    """A file-name stem for a sample id that cannot leave the output folder.

    Characters other than ``[A-Za-z0-9._-]`` become ``_``, leading dots are removed and long ids are cut; when this
    changed the id, a short hash of the raw id is appended so that different ids keep different names.
    """
    stem = _UNSAFE.sub("_", sample_id).lstrip(".")
    if len(stem) > _MAX_NAME:
        stem = stem[:_MAX_NAME]
    if stem != sample_id or not stem:
        digest = hashlib.sha256(sample_id.encode("utf-8")).hexdigest()[:8]
        stem = f"{stem}-{digest}" if stem else f"sample-{digest}"
    return stem


def _template_text(name: str) -> str | None:
    resource = importlib.resources.files("interp.templates").joinpath(name)
    try:
        return resource.read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return None


def _environment() -> Any:
    return template_environment(strict=True)


def _context(explanation: SampleExplanation, image_src: str) -> dict[str, Any]:
    e = explanation
    probabilities = [
        {
            "concept": c,
            "probability": f"{e.probabilities[c]:.3f}",
            "logit": f"{e.logits[c]:+.3f}",
            "true": c in e.true_concepts,
            "pred": c in e.pred_concepts,
            "chosen": c == e.concept,
        }
        for c in e.concepts
    ]
    matrix = [
        {
            "feature": f,
            "name": FEATURE_NAMES.get(f, f),
            "p": f"{e.p[i]:.3f}",
            "pr": [f"{v:.3f}" for v in e.pr[i]],
            "contribution": f"{e.concept_contributions[i]:+.4f}",
        }
        for i, f in enumerate(e.features)
    ]
    return {
        "e": e,
        "anchor": safe_filename(e.sample_id),
        "image_src": image_src,
        "probabilities": probabilities,
        "matrix": matrix,
        "score": None if e.score is None else f"{e.score:+.3f}",
        "logit": f"{e.concept_logit:+.4f}",
        "contribution_sum": f"{float(e.concept_contributions.sum()):+.4f}",
        "uniform": f"{e.uniform:.3f}",
        "guide": READING_GUIDE,
    }


def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_local_fragment(explanation: SampleExplanation, png: bytes | None = None) -> str:
    """An HTML fragment (a ``<section>``) explaining one sample, with the figure embedded as a base64 PNG.

    Reusable by the full report; ``png`` is the rendered figure (rendered here when omitted). All text is
    autoescaped, so ids and transcripts cannot inject markup.
    """
    return _render(explanation, png, standalone=False)


def render_local_page(explanation: SampleExplanation, png: bytes | None = None) -> str:
    """A complete, self-contained HTML page (works offline as one file) explaining one sample."""
    return _render(explanation, png, standalone=True)


def _render(explanation: SampleExplanation, png: bytes | None, standalone: bool) -> str:
    if png is None:
        png = figure_bytes(explanation.plot(), "png")
    source = _template_text(_TEMPLATE)
    if source is None:
        raise InterpError("the template local.html is missing from interp.templates; reinstall the package")
    template = _environment().from_string(source)
    context = _context(explanation, _png_data_uri(png))
    return template.render(standalone=standalone, base_css=_template_text(_STYLE) or "", **context)


def default_out_dir(run: Path | str) -> Path:
    """reports/<run name>/local/."""
    return DEFAULT_REPORTS_ROOT / run_name(run) / "local"


def write_local_page(explanation: SampleExplanation, out_dir: Path | str) -> LocalResult:
    """Write ``<id>.html`` (figure embedded), ``<id>.png`` and ``<id>.svg`` into ``out_dir`` (atomic writes).

    File names come from :func:`safe_filename`, so no id can write outside ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_filename(explanation.sample_id)
    figure = explanation.plot()
    png = figure_bytes(figure, "png")
    svg = figure_bytes(figure, "svg")
    png_path, svg_path, html_path = out / f"{stem}.png", out / f"{stem}.svg", out / f"{stem}.html"
    atomic_write_bytes(png_path, png)
    atomic_write_bytes(svg_path, svg)
    atomic_write_text(html_path, render_local_page(explanation, png))
    return LocalResult(explanation.sample_id, html_path, png_path, svg_path, explanation.concept)


# ------------------------------------------------------------------------------------------------------ the CLI


def run_local(
    run: Path | str | None = None,
    sample_ids: Sequence[str] = (),
    concept: str = "true",
    out: Path | str | None = None,
    top: int | None = None,
    feature: str | None = None,
    by: str = "pr",
    random: int | None = None,
    seed: int = 0,
) -> list[LocalResult]:
    """`interp local`: write a page and figures for each chosen sample; returns one result per sample.

    Samples are the explicit ``sample_ids``, then the ``top`` samples of cell (``feature``, ``concept``) ranked by
    ``by``, then ``random`` samples drawn with ``seed`` (duplicates once). ``--top`` needs ``feature`` and a concept
    name; the pages of a ``--top`` selection outline that concept. Output defaults to reports/<run>/local/.
    """
    run_path = resolve_run(run)
    concepts = open_run(run_path).concepts
    validate_concept(concept, concepts)
    if by not in RANK_BY:
        raise InterpError(f"unknown --by {by!r}; choose one of {', '.join(RANK_BY)}")
    if top is not None:
        if feature is None or concept in ("true", "pred"):
            raise InterpError(
                "--top needs --feature F and a concept name --concept C, "
                f"e.g. `interp local --top {top} --feature ta --concept {concepts[-1]}`"
            )
    elif feature is not None:
        raise InterpError("--feature only applies with --top K (e.g. `interp local --top 5 --feature ta --concept C`)")
    if not sample_ids and top is None and random is None:
        raise InterpError("choose samples with --sample-id ID (repeatable), --top K --feature F --concept C, or --random K")

    chosen = [str(s) for s in sample_ids]
    known = all_sample_ids(run_path)
    check_sample_ids(run_path, chosen, known)
    if top is not None and feature is not None:
        chosen += [sample_id for sample_id, _ in top_samples(run_path, top, feature, concept, by)]
    if random is not None:
        chosen += draw_samples(known, random, seed)
    chosen = list(dict.fromkeys(chosen))

    out_dir = Path(out) if out is not None else default_out_dir(run_path)
    return [write_local_page(explanation, out_dir) for explanation in explain_samples(run_path, chosen, concept)]


__all__ = [
    "READING_GUIDE",
    "RANK_BY",
    "LocalResult",
    "SampleExplanation",
    "all_sample_ids",
    "check_sample_ids",
    "default_out_dir",
    "explain_sample",
    "explain_samples",
    "plot_sample",
    "random_samples",
    "render_local_fragment",
    "render_local_page",
    "run_local",
    "safe_filename",
    "top_samples",
    "write_local_page",
]
