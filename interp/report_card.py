"""The report's per-run facts: the model card (from meta.json, through :class:`interp.runs.RunInfo`) and the
performance table (the paper's Table 1/2 metrics computed from the run's stored logits, next to the validation
metrics that selected the model). Pure data: rows of display strings with their numbers; the page renders them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from interp.errors import RunError
from interp.metrics import HEADLINE, task_metrics
from interp.runs import RunInfo, open_run
from interp.schema import DEFAULT_LR as PAPER_LR
from interp.schema import SINGLE_LABEL_TASKS, VARIANTS, label_column, logit_column

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


def _read_samples(run: RunInfo, columns: Sequence[str]) -> pa.Table:
    tables = []
    for path in run.samples_files:
        present = set(pq.ParquetFile(path).schema_arrow.names)
        missing = [c for c in columns if c not in present]
        if missing:
            raise RunError(f"{path} lacks the column(s) {', '.join(missing)}; extract the run again")
        tables.append(pq.read_table(path, columns=list(columns)))
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def run_metrics(run: RunInfo | Path | str) -> dict[str, float]:
    """The task metrics (:func:`interp.metrics.task_metrics`) of a run's stored logits against its labels."""
    run = run if isinstance(run, RunInfo) else open_run(run)
    task, concepts = run.task, list(run.concepts)
    columns = [logit_column(c) for c in concepts] + [label_column(c) for c in concepts]
    with_score = task == "sentiment" and any("score" in pq.ParquetFile(p).schema_arrow.names for p in run.samples_files)
    table = _read_samples(run, columns + (["score"] if with_score else []))
    if table.num_rows == 0:
        raise RunError(f"run {run.name} has no samples")
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


def performance_view(run: RunInfo) -> dict[str, Any]:
    """The performance table of a run: metrics on the run's samples next to the validation metrics. Each cell
    says its ``source``: ``"valid"`` (model selection, from meta.json) or ``"run"`` (this run's logits)."""
    task, concepts = run.task, list(run.concepts)
    metrics = run_metrics(run)
    valid = (run.meta.get("train") or {}).get("valid_metrics") or {}
    split = run.split or "run"
    n = int(metrics.get("n", run.n))
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
