"""The report section "Can you trust these explanations?" (templates/faithfulness.html), from faithfulness.json.

:func:`faithfulness_views` reads ``faithfulness.json`` of each run folder that holds one and returns what the
template needs: the four one-line verdicts, tables of the numbers with their intervals, and two figures embedded as
PNG data URIs (deletion curves with AOPC; uniform routing and model randomisation). `interp report` includes the
section when at least one run has such a file (`interp faithfulness --run RUN` writes it there).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from interp.errors import RunError
from interp.faithfulness_stats import FAITHFULNESS_FILE, ORDER_LABELS, ORDERS, STAGE_LABELS, STAGES, ci_text

TEMPLATE = "faithfulness.html"
_COLOURS = {"routing": "#1b6ca8", "contribution": "#2a9d5c", "reverse": "#c0392b", "random": "#7f7f7f"}

HOW_TO_READ: tuple[str, ...] = (
    "Each check follows the concept j* the model predicts for a sample (its largest logit). A feature is removed by "
    "dropping it from every sum of the routing, the uniform starting concepts included; only the routing head runs "
    "again. With all 7 removed the concepts are 0, so every logit is 0.",
    "Deletion: features are removed one at a time (k = 0..7) in the order of the routing's importance p·r (a), of "
    "|contribution| (b), of the reverse of (a) (c) and in random orders (d, mean of R seeded draws per sample). AOPC "
    "is the mean drop over k = 0..7 (Samek et al., 2017). A faithful importance order removes more than random, and "
    "its reverse less. The difference (a) − (d) is paired over samples.",
    "Uniform routing: the same trained weights with r fixed at 1/J (the gam head). If the metrics do not change, "
    "the deviations of r from 1/J that the global tables test do not drive the decisions. Metric changes carry "
    "a paired percentile bootstrap over samples; per-concept accuracy (sentiment: recall of each true class) a CLT.",
    "Shapley: exact Shapley values of the 7 features for logit j* over all 128 coalitions (removal as above); they "
    "sum to logit j* (the empty coalition gives 0). Per sample, the Spearman correlation with the routing's signed "
    "contributions (and with p·r); baseline 0 = no agreement, chance of the same top feature 1/7.",
    "Model randomisation (Adebayo et al., 2018): o re-initialised, then also W, then the whole model (seeded). "
    "Spearman between the trained and the randomised model's r̄ table (49 cells; percentile bootstrap over samples) "
    "and mean per-sample Spearman of the 7×J contribution maps (CLT). Explanations that stay the same when the model "
    "is randomised explain nothing; ρ near 1 is a failure. The verdict reads \"change\" when the upper end of the "
    "whole-model interval is below 0.5, \"change only partly\" below 0.9. r does not depend on o, so the r̄ table "
    "cannot change in the first stage: r alone cannot show what the read-out does with a feature.",
    "Every interval is over samples of one model (not over videos nor retrained models) at the stated level; "
    "n and the baseline are given with each number. All numbers are in faithfulness.json and the tidy "
    "faithfulness_*.csv / .parquet tables.",
)


def read_faithfulness(run: Path | str) -> dict[str, Any] | None:
    """The run's faithfulness.json as a dict, or None when the run has none; RunError when it is unreadable."""
    path = Path(run) / FAITHFULNESS_FILE
    if not path.is_file():
        return None
    try:
        return _nan_for_null(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError) as error:
        raise RunError(f"{path} cannot be read ({error}); run `interp faithfulness --run {run}` again") from None


_NUMBER_KEYS = frozenset({"estimate", "low", "high", "std", "trained", "uniform", "baseline"})


def _nan_for_null(value: Any) -> Any:
    """faithfulness.json stores non-finite numbers as null; numeric fields come back as NaN."""
    if isinstance(value, dict):
        return {k: (float("nan") if v is None and k in _NUMBER_KEYS else _nan_for_null(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_for_null(v) for v in value]
    return value


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def deletion_figure(summary: dict[str, Any]) -> str:
    """Deletion curves of logit j* and P(j*) with their intervals, and AOPC per order: a PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deletion = summary["checks"]["deletion"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, quantity, title in ((axes[0], "logit_drop", "drop of logit j*"), (axes[1], "prob_drop", "drop of P(j*)")):
        for order in ORDERS:
            points = sorted((p for p in deletion["curves"] if p["order"] == order and p["quantity"] == quantity),
                            key=lambda p: p["k"])
            k = [p["k"] for p in points]
            ax.plot(k, [p["estimate"] for p in points], marker="o", ms=3, color=_COLOURS[order], label=ORDER_LABELS[order])
            ax.fill_between(k, [p["low"] for p in points], [p["high"] for p in points], color=_COLOURS[order], alpha=0.2)
        ax.set_xlabel("features removed (k)")
        ax.set_title(title)
        ax.axhline(0, color="black", lw=0.5)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.08))
    areas = [a for a in deletion["aopc"] if a["quantity"] == "logit_drop"]
    x = np.arange(len(areas))
    est = np.array([a["estimate"] for a in areas])
    err = np.array([[a["estimate"] - a["low"] for a in areas], [a["high"] - a["estimate"] for a in areas]])
    axes[2].bar(x, est, yerr=err, color=[_COLOURS[a["order"]] for a in areas], capsize=4)
    axes[2].set_xticks(x, ["(a) p·r", "(b) |contrib|", "(c) reverse", "(d) random"], fontsize=8)
    axes[2].set_title("AOPC of logit j*")
    level = round(100 * summary["settings"]["level"])
    fig.suptitle(f"Deletion curves, mean and {level}% CLT interval over {summary['n']} samples", fontsize=10)
    return _png(fig)


def cascade_figure(summary: dict[str, Any]) -> str:
    """Per-concept accuracy change under uniform routing, and Spearman per randomisation stage: a PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checks = summary["checks"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    rows = checks["uniform"]["per_concept"]
    x = np.arange(len(rows))
    est = np.array([r["estimate"] for r in rows])
    err = np.nan_to_num(np.array([[r["estimate"] - r["low"] for r in rows], [r["high"] - r["estimate"] for r in rows]]))
    axes[0].bar(x, np.nan_to_num(est), yerr=err, color="#1b6ca8", capsize=3)
    axes[0].set_xticks(x, [r["concept"] for r in rows])
    axes[0].axhline(0, color="black", lw=0.5)
    axes[0].set_title("uniform r = 1/J: change of per-concept accuracy")
    stages = checks["randomisation"]
    width = 0.38
    for offset, key, colour, label in ((-width / 2, "contribution_spearman", "#2a9d5c", "per-sample contribution maps"),
                                       (width / 2, "rbar_spearman", "#7f7f7f", "r̄ table")):
        est = np.array([s[key]["estimate"] for s in stages])
        err = np.array([[s[key]["estimate"] - s[key]["low"] for s in stages], [s[key]["high"] - s[key]["estimate"] for s in stages]])
        axes[1].bar(np.arange(len(stages)) + offset, est, width, yerr=np.nan_to_num(err), color=colour, label=label, capsize=3)
    axes[1].set_xticks(np.arange(len(stages)), ["o", "o + W", "whole model"])
    axes[1].set_ylim(-1, 1.05)
    axes[1].axhline(0, color="black", lw=0.5)
    axes[1].set_title("Spearman ρ, trained vs randomised")
    axes[1].legend(fontsize=8, loc="lower left")
    return _png(fig)


def faithfulness_view(name: str, summary: dict[str, Any]) -> dict[str, Any]:
    """What the template shows for one run: verdicts, rows of numbers (as text) and figures."""
    checks = summary["checks"]
    deletion = checks["deletion"]
    aopc = [{"order": ORDER_LABELS[a["order"]], "quantity": a["quantity"], "text": ci_text(a, 3), "n": a["n"]}
            for a in deletion["aopc"]]
    differences = [{"label": f"{d['first']} − {d['second']}", "quantity": d["quantity"], "text": ci_text(d, 3),
                    "n": d["n"]} for d in deletion["differences"]]
    uniform = [{"metric": m["metric"], "trained": f"{m['trained']:.3f}", "uniform": f"{m['uniform']:.3f}",
                "text": ci_text(m, 3), "n": m["n"]} for m in checks["uniform"]["metrics"]]
    per_concept = [{"concept": c["concept"], "trained": f"{c['trained']:.3f}", "uniform": f"{c['uniform']:.3f}",
                    "text": ci_text(c, 3), "n": c["n"]} for c in checks["uniform"]["per_concept"]]
    shapley = checks["shapley"]
    shapley_rows = [
        {"label": "Spearman ρ, Shapley vs contributions", "text": ci_text(shapley["spearman_contribution"]),
         "n": shapley["spearman_contribution"]["n"], "baseline": "0"},
        {"label": "Spearman ρ, Shapley vs p·r", "text": ci_text(shapley["spearman_pr"]),
         "n": shapley["spearman_pr"]["n"], "baseline": "0"},
        {"label": "same top feature (Shapley, contributions)", "text": ci_text(shapley["top_agree_contribution"], 2),
         "n": shapley["top_agree_contribution"]["n"], "baseline": "1/7"},
        {"label": "same top feature (Shapley, p·r)", "text": ci_text(shapley["top_agree_pr"], 2),
         "n": shapley["top_agree_pr"]["n"], "baseline": "1/7"},
    ]
    randomisation = [{"stage": STAGE_LABELS[s["stage"]], "rbar": ci_text(s["rbar_spearman"]),
                      "contribution": ci_text(s["contribution_spearman"]), "r": ci_text(s["r_spearman"]),
                      "kept": ci_text(s["prediction_kept"], 2), "n": s["contribution_spearman"]["n"]}
                     for s in sorted(checks["randomisation"], key=lambda s: STAGES.index(s["stage"]))]
    return {
        "name": name, "n": summary["n"], "split": summary.get("split", "?"), "level": round(100 * summary["settings"]["level"]),
        "repeats": summary["settings"]["repeats"], "seed": summary["settings"]["seed"],
        "verdicts": [{"check": k, "text": v} for k, v in summary["verdicts"].items()],
        "aopc": aopc, "differences": differences, "ratio": ci_text(deletion["ratio_k1"], 2),
        "uniform": uniform, "per_concept": per_concept,
        "per_concept_accuracy": checks["uniform"]["per_concept_accuracy"],
        "changed": ci_text(checks["uniform"]["prediction_changed"], 3),
        "shapley": shapley_rows, "efficiency": f"{shapley['efficiency_max_abs_error']:.1e}",
        "randomisation": randomisation,
        "figures": [
            {"src": deletion_figure(summary), "alt": "deletion curves and AOPC per order",
             "caption": "Removing features in each order: drop of logit j* and of P(j*) (mean, interval over samples), and AOPC."},
            {"src": cascade_figure(summary), "alt": "uniform routing and model randomisation",
             "caption": "Left: change of per-concept accuracy when r is fixed at 1/J. Right: Spearman ρ between the "
                        "trained and the randomised model's explanations (1 = unchanged)."},
        ],
    }


def faithfulness_views(runs: Sequence[Path | str], names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One view per run folder that holds a faithfulness.json (the others are skipped)."""
    views = []
    for index, run in enumerate(runs):
        summary = read_faithfulness(run)
        if summary is not None:
            views.append(faithfulness_view(names[index] if names else Path(run).name, summary))
    return views


__all__ = ["HOW_TO_READ", "cascade_figure", "deletion_figure", "faithfulness_view", "faithfulness_views",
           "read_faithfulness"]
