"""Routing against per-modality labels (CH-SIMS ``regression_labels_T/A/V``): a real-data check of "which
modality drives the prediction".

CH-SIMS annotators labelled each segment's sentiment from the text alone, the audio alone and the vision alone.
If routing says something true about a modality, the unimodal feature's routing should follow that modality's own
label. For each modality m (feature t, a or v) and each sample, three readings of the routing are correlated
(Pearson, over the run's samples) with the label y_m:

* ``pr_pred``: p·r of the feature toward the *predicted* concept;
* ``contribution_pred``: its contribution p_i r_ij <o_j, f_i W_ij> to the predicted concept's logit;
* ``routing_score`` (sentiment only): where the feature is routed on the sentiment scale, Σ_j r_ij · s_j with
  s_j = -3..3 the concepts' scores (it should rise with y_m if the feature is routed to the concept of its label).

Each correlation comes with its n and a Fisher-z 95% interval; the variance it covers is the samples' (segments of
one video are not independent, so the interval is optimistic), and the baseline is 0 (no relation).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from scipy.stats import norm

from interp.metrics import pearson_r
from interp.runs import RunInfo
from interp.runwriter import MODALITY_LABELS

#: The unimodal feature of each labelled modality.
MODALITY_FEATURE: dict[str, str] = {"T": "t", "A": "a", "V": "v"}
#: Readings of the routing compared with the labels, and their display names.
READINGS: dict[str, str] = {
    "pr_pred": "p·r toward the predicted concept",
    "contribution_pred": "contribution to the predicted concept's logit",
    "routing_score": "routing score Σ_j r_ij·s_j (sentiment scale)",
}


def correlation_interval(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Fisher-z interval of a Pearson r over n samples; (nan, nan) when n <= 3 or r is undefined or ±1."""
    if not math.isfinite(r) or n <= 3 or abs(r) >= 1:
        return float("nan"), float("nan")
    z, half = math.atanh(r), norm.ppf(0.5 + level / 2) / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def modality_label_table(run: RunInfo) -> pd.DataFrame | None:
    """One row per (modality, reading): modality, feature, reading, n, r, low, high; None without ``label_T``...

    Rows follow :data:`MODALITY_FEATURE` then :data:`READINGS` order (``routing_score`` only for sentiment).
    """
    columns = [f"label_{m}" for m in MODALITY_LABELS]
    files = run.samples_files
    if not files or not all(c in pq.ParquetFile(files[0]).schema_arrow.names for c in columns):
        return None
    samples = pd.concat([pq.read_table(f, columns=["sample_id", "pred", *columns]).to_pandas() for f in files])
    routing = pd.concat([
        pq.read_table(f, columns=["sample_id", "feature", "concept", "r", "pr", "contribution"],
                      filters=[("feature", "in", list(MODALITY_FEATURE.values()))]).to_pandas()
        for f in run.routing_files
    ])
    routing["feature"] = routing["feature"].astype(str)
    routing["concept"] = routing["concept"].astype(str)
    at_pred = routing.merge(samples[["sample_id", "pred"]], on="sample_id")
    at_pred = at_pred[at_pred["concept"] == at_pred["pred"]]
    sentiment = run.task == "sentiment"
    if sentiment:
        routing["weighted"] = routing["r"] * routing["concept"].astype(float)
        score = routing.groupby(["sample_id", "feature"], observed=True)["weighted"].sum()
    rows = []
    for modality, feature in MODALITY_FEATURE.items():
        labels = samples.set_index("sample_id")[f"label_{modality}"].astype(float)
        per_feature = at_pred[at_pred["feature"] == feature].set_index("sample_id")
        readings = {"pr_pred": per_feature["pr"], "contribution_pred": per_feature["contribution"]}
        if sentiment:
            readings["routing_score"] = score.xs(feature, level="feature")
        for reading, values in readings.items():
            joined = pd.concat([values.rename("x"), labels.rename("y")], axis=1, join="inner").dropna()
            r = pearson_r(joined["x"].to_numpy(), joined["y"].to_numpy())
            low, high = correlation_interval(r, len(joined))
            rows.append({"modality": modality, "feature": feature, "reading": reading, "n": int(len(joined)),
                         "r": r, "low": low, "high": high})
    return pd.DataFrame(rows)


def modality_label_view(run: RunInfo) -> dict[str, Any] | None:
    """The report's table (rows of display strings), or None when the run has no per-modality labels."""
    table = modality_label_table(run)
    if table is None:
        return None
    rows = []
    for row in table.itertuples(index=False):
        interval = f"({row.low:.3f}, {row.high:.3f})" if math.isfinite(row.low) else "—"
        rows.append({"modality": row.modality, "feature": row.feature, "reading": READINGS[row.reading],
                     "n": row.n, "r": f"{row.r:.3f}" if math.isfinite(row.r) else "—", "interval": interval,
                     "key": row.reading, "value": repr(float(row.r))})
    caption = ("Per-modality labels (CH-SIMS): Pearson r between each unimodal feature's routing and that modality's "
               "own label, over the run's samples, with Fisher-z 95% intervals (variance over samples; segments of one "
               "video are not independent, so the intervals are optimistic). Baseline: r = 0.")
    return {"rows": rows, "caption": caption}
