"""Local (per-sample) interpretation, the drawing half: the paper's Fig. 3, done better.

:func:`plot_explanation` (also :meth:`interp.local_compute.SampleExplanation.plot`) draws one
:class:`~interp.local_compute.SampleExplanation`:

* a heatmap of ``p_i·r_ij`` (rows: the seven features t, a, v, ta, av, vt, tav; columns: the concepts), with the
  values written in the cells and one concept column outlined (by default the true label, as in the paper);
* a bar chart of the signed contributions ``p_i r_ij <o_j, f_i W_ij>`` of the features to that concept's logit,
  sorted, which sum to the logit (no bias term in the model).

``compact=True`` is the report's gallery thumbnail: the same two panels, small, without the title and the colour
bar. Nothing here reads files or touches pyplot state. matplotlib is imported where a figure is drawn (heavy).
"""

from __future__ import annotations

import io
import textwrap
from typing import TYPE_CHECKING, Any

import numpy as np

from interp.guard import printable, strip_xml_invalid, xml_safe
from interp.schema import FEATURE_NAMES

if TYPE_CHECKING:
    from interp.local_compute import SampleExplanation

_RED = "#b2182b"
_BLUE = "#2166ac"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _plain(text: str) -> str:
    """Untrusted text (ids, transcripts) as figure text: control characters shown escaped, so the SVG stays
    valid XML (the title is drawn with ``parse_math=False``: ``$`` is literal)."""
    return xml_safe(printable(text))


def _truth_text(explanation: SampleExplanation) -> str:
    label = explanation.label or "(none)"
    if explanation.score is not None:
        label += f" (score {explanation.score:+.2f})"
    return label


def _pred_text(explanation: SampleExplanation) -> str:
    probs = explanation.probabilities
    if explanation.pred_concepts:
        return ", ".join(f"{c} (P={probs[c]:.2f})" for c in explanation.pred_concepts)
    return explanation.pred or "(none)"



def plot_explanation(explanation: SampleExplanation, ax: Any = None, *, compact: bool = False,
                     dpi: int | None = None) -> Any:
    """The local explanation figure of one sample (a ``matplotlib.figure.Figure``; no pyplot state is touched).

    Left: heatmap of p_i·r_ij with the values in the cells and the chosen concept's column outlined; the diverging
    "RdBu_r" map is white at 1/J (a fully active feature routed uniformly), blue below, red above. Right: the
    contributions to the chosen concept's logit as sorted horizontal bars (red raises it, blue lowers it), whose sum
    is the logit. ``ax``: None (a new figure; its heatmap axes has label ``"heatmap"``, the bar axes
    ``"contributions"``) or a pair of Axes (heatmap, bars) to draw into. ``compact``: the gallery thumbnail.
    ``dpi`` of a new figure: 100, or 150 when compact.
    """
    from matplotlib.figure import Figure

    n_concepts = explanation.pr.shape[1]
    if ax is None:
        if compact:
            heat_width = 0.36 * n_concepts + 0.85
            size, ratios = (heat_width + 2.3, 2.5), [heat_width, 2.1]
        else:
            heat_width = max(5.5, 0.85 * n_concepts + 2.5)
            size, ratios = (heat_width + 6.0, 7.2), [heat_width, 5.2]
        figure = Figure(figsize=size, dpi=dpi or (150 if compact else 100), layout="constrained")
        grid = figure.add_gridspec(1, 2, width_ratios=ratios)
        heat = figure.add_subplot(grid[0, 0], label="heatmap")
        bars = figure.add_subplot(grid[0, 1], label="contributions")
    else:
        heat, bars = ax
        figure = heat.figure
    (_draw_compact if compact else _draw_full)(figure, heat, bars, explanation)
    return figure


def _norm(e: SampleExplanation) -> tuple[Any, float]:
    """Linear colour scale symmetric about 1/J (equal colour steps for equal distances from the baseline), and the
    top of the possible range [0, top]."""
    from matplotlib.colors import Normalize

    top = max(float(np.nanmax(e.pr)) if e.pr.size else 0.0, 2.0 * e.uniform)
    half = max(top - e.uniform, e.uniform)
    return Normalize(vmin=e.uniform - half, vmax=e.uniform + half), top


def _heatmap(heat: Any, e: SampleExplanation, fontsize: float, linewidth: float, **outline: Any) -> tuple[Any, float]:
    """The p·r heatmap with the values in the cells and the chosen column outlined; returns (image, top)."""
    from matplotlib.patches import Rectangle

    n_features, n_concepts = e.pr.shape
    chosen = e.concept_index
    norm, top = _norm(e)
    image = heat.imshow(e.pr, cmap="RdBu_r", norm=norm, aspect="auto", interpolation="nearest")
    cmap = image.get_cmap()
    for i in range(n_features):
        for j in range(n_concepts):
            red, green, blue, _ = cmap(norm(e.pr[i, j]))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            heat.text(j, i, f"{e.pr[i, j]:.2f}", ha="center", va="center", fontsize=fontsize,
                      color="white" if dark else "black", fontweight="bold" if j == chosen else "normal")
    heat.add_patch(Rectangle((chosen - 0.5, -0.5), 1.0, n_features, fill=False, edgecolor="black",
                             linewidth=linewidth, clip_on=False, **outline))
    return image, top


def _draw_full(fig: Any, ax: Any, bars: Any, e: SampleExplanation) -> None:
    from matplotlib.ticker import MaxNLocator

    n_features, n_concepts = e.pr.shape
    # Title: who, truth, prediction, transcript.
    verdict = "correct" if e.correct else "wrong"
    title = (
        f"Sample {_plain(_shorten(e.sample_id, 70))}   ·   split: {_plain(e.split or '?')}   ·   "
        f"run: {_plain(_shorten(e.run, 40))}\n"
        f"true: {_plain(_truth_text(e))}   ·   predicted: {_plain(_pred_text(e))} ({verdict})   ·   "
        f"outlined: {_plain(e.concept)} ({e.concept_reason})"
    )
    if e.transcript:
        quote = textwrap.shorten(" ".join(e.transcript.split()), width=220, placeholder=" …")
        title += "\n" + "\n".join(textwrap.wrap(f"“{_plain(quote)}”", width=130))
    fig.suptitle(title, fontsize=11.5, linespacing=1.5, parse_math=False)  # ids ("<video>$_$<clip>") and words hold $

    # Heatmap (the colour bar shows only the possible range [0, top]).
    image, top = _heatmap(ax, e, 10, 3.0, gid="chosen-concept", zorder=5)
    ax.set_yticks(range(n_features))
    ax.set_yticklabels(
        [f"{f} ({FEATURE_NAMES.get(f, f)})  p={p:.2f}" for f, p in zip(e.features, e.p)], fontsize=10
    )
    ax.set_xticks(range(n_concepts))
    tick_labels = []
    for c in e.concepts:
        marks = [m for m, on in (("true", c in e.true_concepts), ("pred", c in e.pred_concepts)) if on]
        tick_labels.append(f"{c}\nP={e.probabilities[c]:.2f}" + (f"\n{'+'.join(marks)}" if marks else ""))
    ax.set_xticklabels(tick_labels, fontsize=10)
    for label, c in zip(ax.get_xticklabels(), e.concepts):
        if c == e.concept:
            label.set_fontweight("bold")
    ax.tick_params(length=0)
    ax.set_xlabel("concept j  (P = model probability; true / pred marked)", fontsize=10)
    ax.set_ylabel("feature i  (p = activation)", fontsize=10)
    ax.set_title("p·r: feature activation × routing to each concept\n(each row sums to the feature's p)",
                 fontsize=11)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.06, pad=0.02)
    colorbar.set_label(f"p·r   (white = 1/J = {e.uniform:.2f}: uniform routing;\nred = above, blue = below)",
                       fontsize=9.5)
    colorbar.ax.set_ylim(0.0, top)
    colorbar.ax.axhline(e.uniform, color="black", linewidth=1.0)
    colorbar.ax.tick_params(labelsize=9)

    # Contributions to the chosen concept's logit, sorted (largest at the top).
    values = e.concept_contributions
    order = np.argsort(-values, kind="stable")
    ordered = values[order]
    positions = np.arange(len(order))[::-1]
    colours = [_RED if v >= 0 else _BLUE for v in ordered]
    bars.barh(positions, ordered, color=colours, height=0.65)
    bars.set_yticks(positions)
    bars.set_yticklabels([f"{e.features[i]} ({FEATURE_NAMES.get(e.features[i], e.features[i])})" for i in order],
                         fontsize=10)
    bars.axvline(0.0, color="black", linewidth=0.8)
    span = float(np.max(np.abs(values))) if values.size else 1.0
    span = span if span > 0 else 1.0
    low = min(0.0, float(values.min())) - 0.45 * span
    high = max(0.0, float(values.max())) + 0.45 * span
    bars.set_xlim(low, high)
    for y, v in zip(positions, ordered):
        bars.text(v + (0.03 * span if v >= 0 else -0.03 * span), y, f"{v:+.3f}", va="center",
                  ha="left" if v >= 0 else "right", fontsize=9.5)
    total = float(values.sum())
    stored = e.concept_logit
    if abs(total - stored) <= 1e-3 * max(1.0, abs(stored)):
        sum_text = f"sum of bars = logit = {stored:.3f}"
    else:
        sum_text = f"sum of bars = {total:.3f}, stored logit = {stored:.3f}"
    bars.set_title(f"Contributions to the logit of concept {e.concept!r}\n{sum_text}", fontsize=11)
    bars.set_xlabel("p_i r_ij ⟨o_j, f_i W_ij⟩\n(red raises the logit, blue lowers it)", fontsize=10)
    bars.xaxis.set_major_locator(MaxNLocator(nbins=5))
    bars.grid(axis="x", alpha=0.3)
    bars.set_axisbelow(True)
    for side in ("top", "right"):
        bars.spines[side].set_visible(False)


def _draw_compact(fig: Any, heat: Any, bars: Any, e: SampleExplanation) -> None:
    """The gallery thumbnail: p·r heatmap (values in the cells, the chosen concept outlined, white at 1/J) and the
    sorted contributions to the chosen concept's logit; every label is on the sample's own page."""
    from matplotlib.ticker import MaxNLocator

    n_features, n_concepts = e.pr.shape
    _heatmap(heat, e, 6, 1.8)
    heat.set_yticks(range(n_features), [f"{f}  p={p:.2f}" for f, p in zip(e.features, e.p)], fontsize=7)
    heat.set_xticks(range(n_concepts), list(e.concepts), fontsize=7)
    for label, concept in zip(heat.get_xticklabels(), e.concepts):
        if concept == e.concept:
            label.set_fontweight("bold")
        if concept in e.true_concepts:
            label.set_color("#0b6b2b")
    heat.tick_params(length=0, pad=2)
    heat.set_title(f"p·r (white = 1/J); outlined: {e.concept}", fontsize=7.5)

    values = e.concept_contributions
    order = np.argsort(-values, kind="stable")
    positions = np.arange(len(order))[::-1]
    bars.barh(positions, values[order], color=[_RED if v >= 0 else _BLUE for v in values[order]], height=0.6)
    bars.set_yticks(positions, [e.features[i] for i in order], fontsize=7)
    bars.axvline(0.0, color="black", linewidth=0.6)
    bars.tick_params(axis="x", labelsize=6, length=2, pad=1)
    bars.xaxis.set_major_locator(MaxNLocator(nbins=4))
    bars.tick_params(axis="y", length=0, pad=2)
    bars.set_title(f"contributions to logit {e.concept}\n(sum = {e.concept_logit:.2f})", fontsize=7.5)
    for side in ("top", "right"):
        bars.spines[side].set_visible(False)


def figure_bytes(figure: Any, fmt: str, dpi: int = 150) -> bytes:
    """The figure saved to memory as ``fmt`` ("png" or "svg"), without dates in the metadata (reproducible)."""
    buffer = io.BytesIO()
    metadata: dict[str, Any] = {"Date": None} if fmt == "svg" else {"Software": None}
    figure.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
    return strip_xml_invalid(buffer.getvalue()) if fmt == "svg" else buffer.getvalue()


def compress_png(data: bytes) -> bytes:
    """The PNG palette-quantised (much smaller, same look for these flat-colour figures); unchanged without pillow."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow comes with matplotlib
        return data
    with Image.open(io.BytesIO(data)) as image:
        quantised = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        buffer = io.BytesIO()
        quantised.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
