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

    from interp.report import run_report
    path = run_report(["runs/model-test"], out="reports/model-test")
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from interp import __version__
from interp.html import template_environment
from interp.errors import InterpError, RunError
from interp.faithfulness_report import HOW_TO_READ as FAITHFULNESS_HOW_TO_READ, faithfulness_views
from interp.metrics import HEADLINE, task_metrics
from interp.modality_labels import modality_label_view
from interp.runs import (
    DEFAULT_REPORTS_ROOT,
    DEFAULT_RUNS_ROOT,
    atomic_write_text,
    open_run,
    resolve_runs,
    run_name,
    samples_files,
)
from interp.schema import FEATURE_NAMES, FEATURES, SINGLE_LABEL_TASKS, VARIANTS, label_column, logit_column

TEMPLATE = "report.html"
INDEX_FILE = "index.html"
#: Random samples shown in the gallery per run (besides one top sample per concept).
DEFAULT_GALLERY_RANDOM = 3

#: The paper's learning rates (mirrors :data:`interp.train.DEFAULT_LR`, kept here so that reports need no torch).
PAPER_LR: dict[str, float] = {"sentiment": 1e-4, "emotion": 1e-5, "iemocap": 1e-4}

#: The modalities each feature combines (a feature is "related" to another when one's set contains the other's).
FEATURE_MODALITIES: dict[str, frozenset[str]] = {
    "t": frozenset("t"), "a": frozenset("a"), "v": frozenset("v"), "ta": frozenset("ta"), "av": frozenset("av"),
    "vt": frozenset("vt"), "tav": frozenset("tav"),
}


def related_features(first: str, second: str) -> bool:
    """True when two different features nest (one's modalities contain the other's), e.g. t and ta, ta and tav."""
    a, b = FEATURE_MODALITIES.get(first), FEATURE_MODALITIES.get(second)
    return first != second and a is not None and b is not None and (a <= b or b <= a)


#: Display names of the sentiment metrics, in table order, and whether larger is better.
SENTIMENT_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("acc7", "Acc7 (7-class accuracy)", True),
    ("acc2", "Acc2 non-zero (negative vs positive, labels ≠ 0)", True),
    ("f1", "F1 weighted non-zero (negative vs positive, labels ≠ 0)", True),
    ("acc2_has0", "Acc2 has-0 (negative vs non-negative, all labels; MMSA's Has0_acc_2)", True),
    ("f1_has0", "F1 weighted has-0 (negative vs non-negative, all labels)", True),
    ("mae", "MAE of the expected score", False),
    ("corr", "Pearson r of the expected score", True),
    ("acc2_majority", "Acc2 non-zero of the majority class (chance level)", True),
    ("acc2_has0_majority", "Acc2 has-0 of the majority class (chance level)", True),
)

HOW_TO_READ: dict[str, str] = {
    "model": (
        "What was trained, on which data, and how: everything needed to reproduce the run. Data and checkpoint are "
        "identified by their SHA-256; the model was selected on the validation split, never on test."
    ),
    "performance": (
        "The paper's Table 1/2 metrics. The run column is computed from the logits stored in the run, i.e. on exactly "
        "the samples whose routing coefficients are analysed below; the validation column is what model selection "
        "saw. Compare accuracies with the chance level."
    ),
    "planted": (
        "The synthetic data plants one driving feature per concept. A concept counts as recovered when its planted "
        "feature is the bold cell of its column in the r̄ table (largest mean r, interval above 1/J: the paper's "
        "rule). The feature with the largest mean p·r is a second reading that also weighs how active the feature is. "
        "An interaction carries the information of its modalities (ta sees t and a; tav sees all three), so a model can "
        "route a concept through a related feature instead: such near misses are marked \"related\"."
    ),
    "global": (
        "Each cell is the interval of a mean over all samples of the run: r̄ says where a feature is routed, mean p·r "
        "also weighs how active it is, p̄ is the activation alone. Compare with the uniform baseline 1/J: green "
        "cells lie above it, red below; the bold cell of a column is its most important feature. Hover a cell for "
        "its mean, standard deviation and n."
    ),
    "retraining": (
        "The intervals above describe the sample noise of the runs shown. A model retrained with another seed is "
        "an equally good model whose r̄ table can differ: an ensemble of seeds pools the runs of one task, data and "
        "split (mean of the seed means, a t interval over seeds with K−1 degrees of freedom, and a prediction "
        "interval for a new seed). A single-seed verdict survives when the ensemble gives the same verdict. "
        "Segments of one video are not independent either: the video-clustered intervals show which verdicts rest "
        "on treating them as independent."
    ),
    "gallery": (
        "Local explanations of single samples (the paper's Fig. 3). Each thumbnail shows p·r of every feature for "
        "every concept (one concept outlined) and the contributions of the features to the outlined concept's logit. "
        "'Top' cards show, per concept, the sample with the highest p·r of that concept's most important feature; "
        "'random' cards are a seeded random draw. Open a card for the full-size figure and its numbers."
    ),
}

PAPER_REFERENCE = (
    "Yao-Hung Hubert Tsai, Martin Q. Ma, Muqiao Yang, Ruslan Salakhutdinov, Louis-Philippe Morency. "
    "Multimodal Routing: Improving Local and Global Interpretability of Multimodal Language Analysis. EMNLP 2020."
)


# ------------------------------------------------------------------------------------------------ data classes


@dataclass
class GalleryItem:
    """One card of the gallery: a sample, the concept outlined in its figure, why it was chosen, its page."""

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


@dataclass
class PlantedRow:
    """Planted vs recovered for one concept of one run."""

    concept: str
    planted: str
    recovered: list[str]
    top_pr: str
    top_r: str
    planted_r_text: str
    planted_r_mean: float
    agree: bool
    agree_pr: bool
    related: str = ""  # when not agreeing: a recovered feature that nests with the planted one (e.g. ta for t)


@dataclass
class RunSection:
    """Everything the report shows about one run."""

    name: str
    path: Path
    meta: dict[str, Any]
    task: str
    card: list[tuple[str, str, str]]  # (field, value, title)
    performance: dict[str, Any]
    planted: list[PlantedRow] = field(default_factory=list)
    gallery: list[GalleryItem] = field(default_factory=list)
    modality_labels: dict[str, Any] | None = None  # routing vs CH-SIMS per-modality labels (interp.modality_labels)

    @property
    def agreement(self) -> int:
        return sum(row.agree for row in self.planted)

    @property
    def agreement_pr(self) -> int:
        return sum(row.agree_pr for row in self.planted)

    @property
    def related(self) -> int:
        return sum(bool(row.related) for row in self.planted)


# ------------------------------------------------------------------------------------------------ entry point


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

    ``out`` defaults to ``reports_root/<first run's name>/``. ``results`` are the runs' global statistics if
    already computed (:func:`interp.stats.compute_global_stats`, same order as ``runs``); by default they are
    computed with the paper's settings (95% CLT intervals, all samples, baseline 1/J). With ``write_tables`` the
    global tables (CSV, JSON, Markdown, LaTeX and ``global.html``) are written next to the report, as
    `interp global` does. Local pages of the gallery go to ``out/local/`` (``out/local/<run>/`` for several runs).
    """
    from interp.global_report import arrange_results, render_global_section, write_global_outputs
    from interp.retraining import retraining_view
    from interp.stats import compute_global_stats

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
    out_dir = Path(out) if out is not None else Path(reports_root) / names[0]
    out_dir.mkdir(parents=True, exist_ok=True)

    if write_tables:
        write_global_outputs(shown, out_dir, notes=notes)

    several = len(paths) > 1
    sections = []
    for path, stats in zip(paths, results):
        info = open_run(path)
        meta = dict(info.meta)
        task = info.task
        local_dir = out_dir / "local" / (_safe(stats.name) if several else "")
        sections.append(
            RunSection(
                name=stats.name,
                path=path,
                meta=meta,
                task=task,
                card=model_card(meta, stats.name),
                performance=performance_view(path, meta),
                planted=planted_rows(stats, meta.get("planted")),
                gallery=gallery_items(path, stats, local_dir, out_dir, gallery_random, seed),
                modality_labels=modality_label_view(info),
            )
        )

    global_html = render_global_section(shown, notes=notes)
    global_html = global_html.replace("</h2>", f'</h2>\n  <p class="howto">{_escape(HOW_TO_READ["global"])}</p>', 1)
    html = render_report_html(sections, global_html, _links(out_dir), retraining=retraining_view(shown, results),
                              faithfulness=faithfulness_views(paths, names))
    index = out_dir / INDEX_FILE
    atomic_write_text(index, html)
    return index


def _safe(name: str) -> str:
    from interp.local import safe_filename

    return safe_filename(name)


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


# ------------------------------------------------------------------------------------------------ model card


def _short_hash(value: Any) -> str:
    text = str(value or "")
    return text[:12] if text else "—"


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "—"
    return str(value)


def _lr_text(lr: Any, task: str) -> str:
    if lr is None:
        return "—"
    text = _fmt(float(lr))
    paper = PAPER_LR.get(task)
    if paper is not None and not math.isclose(float(lr), paper):
        text += f" (paper default: {_fmt(paper)}; changed for this run)"
    elif paper is not None:
        text += " (the paper's)"
    return text


def model_card(meta: dict[str, Any], name: str) -> list[tuple[str, str, str]]:
    """The model card of a run as (field, value, tooltip) rows, from its meta.json."""
    task = str(meta.get("task", "?"))
    config = meta.get("model_config") or {}
    train = meta.get("train") or {}
    versions = meta.get("versions") or {}
    variant = str(meta.get("variant") or config.get("variant") or "?")
    iterations = VARIANTS.get(variant)
    variant_text = variant + {
        2: " (uniform start + 2 routing updates, as the paper's text describes; the authors' released "
           "configuration is routing1)",
        1: " (uniform start + 1 routing update: the authors' released configuration, --num-routing 1, and the "
           "paper's Routing*)",
        0: " (no routing: r fixed at 1/J)",
    }.get(iterations, "")
    if iterations:
        variant_text += "; concept dropout on the final concepts only in training (the authors': on every update)"
    concepts = [str(c) for c in meta.get("concepts") or []]
    dims = config.get("input_dims")
    dims_text = (
        "text {}, audio {}, vision {}".format(*dims) if isinstance(dims, (list, tuple)) and len(dims) == 3 else _fmt(dims)
    )
    model_text = (
        f"d_model {_fmt(config.get('d_model'))}, {_fmt(config.get('n_layers'))} layer(s), "
        f"{_fmt(config.get('n_heads'))} heads, d_f {_fmt(config.get('d_feature'))}, d_c {_fmt(config.get('d_concept'))}, "
        f"concept dropout {_fmt(config.get('concept_dropout'))}"
    )
    valid = train.get("valid_metrics") or {}
    headline, _ = HEADLINE.get(task, ("", True))
    valid_text = ", ".join(
        f"{key} {float(value):.3f}"
        for key, value in valid.items()
        if key in (headline, "acc7", "acc2", "f1", "mae", "corr", "acc_mean", "f1_mean")
    )
    if train.get("valid_loss") is not None:
        valid_text = f"loss {float(train['valid_loss']):.4f}" + (f", {valid_text}" if valid_text else "")
    epochs_text = (
        f"{_fmt(train.get('epochs_run'))} run of at most {_fmt(train.get('epochs'))}; selected epoch "
        f"{_fmt(train.get('best_epoch'))} by {train.get('selection', 'validation loss')} "
        f"(early stopping patience {_fmt(train.get('patience'))})"
    )
    optimiser_text = (
        f"{train.get('optimizer', 'Adam')}, learning rate {_lr_text(train.get('lr'), task)}, batch size "
        f"{_fmt(train.get('batch_size'))}, gradient clip {_fmt(train.get('grad_clip'))}, seed {_fmt(train.get('seed'))}"
    )
    nonfinite = meta.get("nonfinite") or {}
    nonfinite_total = nonfinite.get("total", sum(v for v in nonfinite.values() if isinstance(v, (int, float))))
    planted = meta.get("planted")
    rows = [
        ("Run", name, str(meta.get("created", ""))),
        ("Task", f"{task}: {len(concepts)} concepts ({', '.join(concepts)})", ""),
        ("Variant", variant_text, "concept dropout: the authors apply it to every concept update in training, we "
         "only to the final concepts; the evaluation-time computation is the same"),
        ("Data", str(meta.get("data", "—")), f"sha256 {meta.get('data_sha256', '')}"),
        ("Data SHA-256", _short_hash(meta.get("data_sha256")), str(meta.get("data_sha256", ""))),
        ("Synthetic (planted truth)", "yes: " + ", ".join(f"{c}←{f}" for c, f in planted.items()) if planted else "no", ""),
        ("Split / n", f"{meta.get('split', '?')} / {_fmt(meta.get('n'))} samples", ""),
        ("Checkpoint", str(meta.get("checkpoint", "—")), f"sha256 {meta.get('checkpoint_sha256', '')}"),
        ("Checkpoint SHA-256", _short_hash(meta.get("checkpoint_sha256")), str(meta.get("checkpoint_sha256", ""))),
        ("Model", model_text, ""),
        ("Input dims", dims_text, ""),
        ("Optimiser", optimiser_text, ""),
        ("Epochs", epochs_text, ""),
        ("Validation metrics", valid_text or "—", "metrics of the selected epoch on the validation split"),
        ("Non-finite values cleaned", _fmt(nonfinite_total), "NaN / ±inf in the data replaced by 0"),
        ("Versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "—", ""),
        ("Extracted", str(meta.get("created", "—")), ""),
    ]
    return rows


# ----------------------------------------------------------------------------------------------- performance


def _read_samples(run: Path, columns: Sequence[str]) -> pa.Table:
    tables = []
    for path in samples_files(run):
        present = set(pq.ParquetFile(path).schema_arrow.names)
        missing = [c for c in columns if c not in present]
        if missing:
            raise RunError(f"{path} lacks the column(s) {', '.join(missing)}; extract the run again")
        tables.append(pq.read_table(path, columns=list(columns)))
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def run_metrics(run: Path | str, meta: dict[str, Any] | None = None) -> dict[str, float]:
    """The task metrics (:func:`interp.metrics.task_metrics`) of a run's stored logits against its labels."""
    run = Path(run)
    meta = meta if meta is not None else dict(open_run(run).meta)
    task = str(meta["task"])
    concepts = [str(c) for c in meta["concepts"]]
    columns = [logit_column(c) for c in concepts] + [label_column(c) for c in concepts]
    with_score = task == "sentiment" and any("score" in pq.ParquetFile(p).schema_arrow.names for p in samples_files(run))
    table = _read_samples(run, columns + (["score"] if with_score else []))
    if table.num_rows == 0:
        raise RunError(f"run {run_name(run)} has no samples")
    logits = np.column_stack([table.column(logit_column(c)).to_numpy().astype(np.float64) for c in concepts])
    labels = np.column_stack(
        [np.asarray(table.column(label_column(c)).to_numpy(zero_copy_only=False), dtype=np.float64) for c in concepts]
    )
    if task in SINGLE_LABEL_TASKS:
        target = labels.argmax(axis=1)
        scores = table.column("score").to_numpy().astype(np.float64) if with_score else None
        return task_metrics(task, logits, target, concepts, scores=scores)
    return task_metrics(task, logits, labels, concepts)


def _metric_cell(key: str, value: Any, source: str) -> dict[str, Any]:
    """One metric cell; ``source`` is ``"valid"`` (model selection, meta.json) or ``"run"`` (the run's logits)."""
    if value is None:
        return {"key": key, "text": "—", "value": "nan", "source": source}
    value = float(value)
    text = f"{value:.3f}" if math.isfinite(value) else "—"
    return {"key": key, "text": text, "value": repr(value) if math.isfinite(value) else "nan", "source": source}


def performance_view(run: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The performance table of a run: metrics on the run's samples next to the validation metrics."""
    task = str(meta.get("task"))
    concepts = [str(c) for c in meta.get("concepts") or []]
    metrics = run_metrics(run, meta)
    valid = (meta.get("train") or {}).get("valid_metrics") or {}
    split = str(meta.get("split", "run"))
    n = int(metrics.get("n", meta.get("n", 0)))
    if task in SINGLE_LABEL_TASKS:
        columns = ["validation (model selection)", f"{split} (this run, n = {n})"]
        rows = [
            {"label": label, "cells": [_metric_cell(key, valid.get(key), "valid"), _metric_cell(key, metrics.get(key), "run")],
             "note": "" if higher else "lower is better", "reference": key in ("acc2_majority", "acc2_has0_majority")}
            for key, label, higher in SENTIMENT_METRICS
        ]
        caption = (f"Sentiment metrics (the paper's Table 1). Non-zero Acc2 and F1 use the {metrics.get('n_nonzero', '?')} "
                   f"samples with a non-zero label; has-0 Acc2 and F1 use all {n}; Acc7 is the argmax class; "
                   "MAE and r use the expected score Σ_j P(j)·j.")
    else:
        columns = ["validation Acc", "validation F1", f"{split} Acc", f"{split} F1"]
        rows = []
        for concept in concepts + ["mean"]:
            keys = (f"acc_{concept}", f"f1_{concept}")
            rows.append({
                "label": concept,
                "cells": [_metric_cell(keys[0], valid.get(keys[0]), "valid"), _metric_cell(keys[1], valid.get(keys[1]), "valid"),
                          _metric_cell(keys[0], metrics.get(keys[0]), "run"), _metric_cell(keys[1], metrics.get(keys[1]), "run")],
                "note": "",
                "reference": False,
            })
        caption = (f"{task.capitalize()} metrics (the paper's Table 2): binary accuracy and weighted F1 per concept "
                   f"(present if logit > 0), on the {split} split (n = {n}) and on validation.")
    headline, _ = HEADLINE.get(task, ("", True))
    return {
        "columns": columns,
        "rows": rows,
        "caption": caption,
        "metrics": metrics,
        "headline": headline,
        "headline_value": metrics.get(headline),
        "split": split,
        "n": n,
    }


# ------------------------------------------------------------------------------------------ planted vs recovered


def planted_rows(stats: Any, planted: dict[str, str] | None) -> list[PlantedRow]:
    """For each concept: the planted feature, the bold feature(s) of the r̄ table, the top mean p·r, agreement."""
    if not planted:
        return []
    from interp.tables import format_interval

    r_cells = stats.quantity_cells("r")
    pr_cells = stats.quantity_cells("pr")
    rows = []
    for concept in stats.concepts:
        if concept not in planted:
            continue
        truth = str(planted[concept])
        column = r_cells[r_cells["concept"] == concept]
        recovered = [str(f) for f in column.loc[column["bold"].astype(bool), "feature"]]
        top_r = _argmax_feature(column)
        top_pr = _argmax_feature(pr_cells[pr_cells["concept"] == concept])
        planted_cell = column[column["feature"] == truth]
        if len(planted_cell):
            cell = planted_cell.iloc[0]
            planted_r_text = format_interval(cell["low"], cell["high"], int(cell["n"]))
            planted_r_mean = float(cell["mean"])
        else:
            planted_r_text, planted_r_mean = "—", float("nan")
        agree = truth in recovered
        near = [f for f in (recovered or [top_r]) if related_features(f, truth)]
        rows.append(PlantedRow(
            related="" if agree or not near else near[0],
            concept=concept,
            planted=truth,
            recovered=recovered,
            top_pr=top_pr,
            top_r=top_r,
            planted_r_text=planted_r_text,
            planted_r_mean=planted_r_mean,
            agree=agree,
            agree_pr=truth == top_pr,
        ))
    return rows


def _argmax_feature(cells: Any) -> str:
    means = cells["mean"].to_numpy(dtype=np.float64)
    if not np.isfinite(means).any():
        return "—"
    return str(cells["feature"].iloc[int(np.nanargmax(means))])


# ---------------------------------------------------------------------------------------------------- gallery


def most_important_features(stats: Any) -> dict[str, tuple[str, float]]:
    """For each concept, the feature with the largest mean p·r and that mean."""
    pr_cells = stats.quantity_cells("pr")
    out: dict[str, tuple[str, float]] = {}
    for concept in stats.concepts:
        column = pr_cells[pr_cells["concept"] == concept]
        feature = _argmax_feature(column)
        if feature == "—":
            continue
        out[concept] = (feature, float(column.loc[column["feature"] == feature, "mean"].iloc[0]))
    return out


def gallery_items(
    run: Path, stats: Any, local_dir: Path, out_dir: Path, random_count: int = DEFAULT_GALLERY_RANDOM, seed: int = 0
) -> list[GalleryItem]:
    """Choose the gallery's samples, write their local pages into ``local_dir`` and return the cards.

    Per concept: the sample with the highest p·r in the cell (most important feature, concept), its figure
    outlining that concept; then ``random_count`` random samples (seeded), outlining their true label.
    """
    from interp.local import explain_samples, random_samples, safe_filename, top_samples, write_local_page

    chosen: list[tuple[str, str, str, str, str | None, float | None]] = []  # (id, concept arg, kind, reason, f, v)
    for concept, (feature, mean) in most_important_features(stats).items():
        top = top_samples(run, 1, feature, concept, by="pr")
        if not top:
            continue
        sample_id, value = top[0]
        reason = (f"highest p·r of {feature} → {concept} ({value:.3f}); {feature} ({FEATURE_NAMES.get(feature, feature)}) "
                  f"has the largest mean p·r for {concept} ({mean:.3f})")
        chosen.append((sample_id, concept, "top", reason, feature, value))
    if random_count > 0:
        for sample_id in random_samples(run, random_count, seed):
            chosen.append((sample_id, "true", "random", f"random draw (seed {seed}); outlined: its true label", None, None))

    # One filtered read per outlined concept.
    explanations: dict[tuple[str, str], Any] = {}
    for concept_arg in dict.fromkeys(c for _, c, *_ in chosen):
        ids = [s for s, c, *_ in chosen if c == concept_arg]
        for explanation in explain_samples(run, ids, concept_arg):
            explanations[(explanation.sample_id, concept_arg)] = explanation

    items: list[GalleryItem] = []
    written: dict[str, str] = {}  # file stem -> outlined concept of the page written there
    seen: set[tuple[str, str]] = set()
    for sample_id, concept_arg, kind, reason, feature, value in chosen:
        explanation = explanations[(sample_id, concept_arg)]
        key = (sample_id, explanation.concept)
        if key in seen:
            continue
        seen.add(key)
        stem = safe_filename(sample_id)
        folder = local_dir
        if stem in written and written[stem] != explanation.concept:
            folder = local_dir / f"concept-{safe_filename(explanation.concept)}"
        else:
            written[stem] = explanation.concept
        result = write_local_page(explanation, folder)
        items.append(GalleryItem(
            run=stats.name,
            sample_id=sample_id,
            concept=explanation.concept,
            kind=kind,
            reason=reason,
            href=result.html_path.relative_to(out_dir).as_posix(),
            thumbnail=_data_uri(thumbnail_png(explanation)),
            label=explanation.label or "(none)",
            pred=explanation.pred or "(none)",
            correct=explanation.correct,
            transcript=explanation.transcript,
            feature=feature,
            value=value,
        ))
    return items


def thumbnail_png(explanation: Any, dpi: int = 150) -> bytes:
    """A compact figure of one sample for the gallery: the p·r heatmap (values in the cells, the chosen concept
    outlined, white at 1/J) and the sorted contributions to the chosen concept's logit. The full-size figure with
    every label is on the sample's own page (:func:`interp.local.plot_sample`)."""
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator

    e = explanation
    n_features, n_concepts = e.pr.shape
    chosen = e.concept_index
    heat_width = 0.36 * n_concepts + 0.85
    figure = Figure(figsize=(heat_width + 2.3, 2.5), dpi=dpi, layout="constrained")
    grid = figure.add_gridspec(1, 2, width_ratios=[heat_width, 2.1])
    heat = figure.add_subplot(grid[0, 0])
    bars = figure.add_subplot(grid[0, 1])
    uniform = e.uniform
    top = max(float(np.nanmax(e.pr)) if e.pr.size else 0.0, 2.0 * uniform)
    half = max(top - uniform, uniform)
    norm = Normalize(vmin=uniform - half, vmax=uniform + half)
    image = heat.imshow(e.pr, cmap="RdBu_r", norm=norm, aspect="auto", interpolation="nearest")
    cmap = image.get_cmap()
    for i in range(n_features):
        for j in range(n_concepts):
            red, green, blue, _ = cmap(norm(e.pr[i, j]))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            heat.text(j, i, f"{e.pr[i, j]:.2f}", ha="center", va="center", fontsize=6, color="white" if dark else "black",
                      fontweight="bold" if j == chosen else "normal")
    heat.add_patch(Rectangle((chosen - 0.5, -0.5), 1.0, n_features, fill=False, edgecolor="black", linewidth=1.8,
                             clip_on=False))
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
    bars.barh(positions, values[order], color=["#b2182b" if v >= 0 else "#2166ac" for v in values[order]], height=0.6)
    bars.set_yticks(positions, [e.features[i] for i in order], fontsize=7)
    bars.axvline(0.0, color="black", linewidth=0.6)
    bars.tick_params(axis="x", labelsize=6, length=2, pad=1)
    bars.xaxis.set_major_locator(MaxNLocator(nbins=4))
    bars.tick_params(axis="y", length=0, pad=2)
    bars.set_title(f"contributions to logit {e.concept}\n(sum = {e.concept_logit:.2f})", fontsize=7.5)
    for side in ("top", "right"):
        bars.spines[side].set_visible(False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return _compress_png(buffer.getvalue())


def _compress_png(data: bytes) -> bytes:
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


def _glance(section: RunSection) -> dict[str, Any]:
    perf = section.performance
    value = perf.get("headline_value")
    headline_text = f"{perf['headline']} {float(value):.3f}" if value is not None and math.isfinite(float(value)) else "—"
    return {
        "name": section.name,
        "task": section.task,
        "split": perf["split"],
        "n": perf["n"],
        "headline": headline_text,
        "planted": bool(section.planted),
        "agreement": section.agreement,
        "related": section.related,
        "agreement_pr": section.agreement_pr,
        "J": len(section.planted),
    }


def render_report_html(sections: Sequence[RunSection], global_html: str, links: Sequence[dict[str, str]],
                       retraining: dict[str, Any] | None = None,
                       faithfulness: Sequence[dict[str, Any]] = ()) -> str:
    """The whole report page (autoescaped; ``global_html`` is the already-rendered global section).

    ``retraining``: :func:`interp.retraining.retraining_view`; ``faithfulness``: views of
    :func:`interp.faithfulness_report.faithfulness_views` (section shown when non-empty).
    """
    from markupsafe import Markup

    from interp.retraining import glance_lines

    retraining = retraining or {"ensembles": [], "clustering": [], "present": False}

    names = ", ".join(s.name for s in sections)
    page = {
        "title": f"Multimodal Routing report — {names}",
        "names": names,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "reference": PAPER_REFERENCE,
        "synthetic": any(s.planted for s in sections),
    }
    return _environment().get_template(TEMPLATE).render(
        page=page,
        runs=sections,
        glance=[_glance(s) for s in sections],
        global_html=Markup(global_html),
        links=list(links),
        howto=HOW_TO_READ,
        feature_names=FEATURE_NAMES,
        features=FEATURES,
        retraining=retraining,
        retraining_glance=glance_lines(retraining),
        faithfulness=list(faithfulness),
        faithfulness_howto=FAITHFULNESS_HOW_TO_READ,
    )


__all__ = [
    "GalleryItem",
    "PlantedRow",
    "RunSection",
    "gallery_items",
    "model_card",
    "most_important_features",
    "performance_view",
    "planted_rows",
    "render_report_html",
    "run_metrics",
    "run_report",
]
