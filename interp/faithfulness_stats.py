"""Statistics of `interp faithfulness`: per-sample values in, intervals and one-line verdicts out (numpy only).

Every interval is a dict made by :func:`interval` (or :func:`bootstrap_interval`) that names its kind (the variance
it covers: ``samples``), its method, its level, n and the baseline it is read against, so no number is printed
without them. Shapes: ``N`` samples, ``F = 7`` features, ``J`` concepts, ``O`` deletion orders, ``K = F + 1`` steps.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import stats as sps

from interp.metrics import task_metrics

#: The file `interp faithfulness` writes (into the run folder with ``--run``); `interp report` looks for it.
FAITHFULNESS_FILE = "faithfulness.json"
#: Deletion orders: (a) routing importance p·r, (b) |contribution|, (c) reverse of (a), (d) random (mean of R draws).
ORDERS: tuple[str, ...] = ("routing", "contribution", "reverse", "random")
ORDER_LABELS: dict[str, str] = {
    "routing": "(a) routing importance p·r, largest first",
    "contribution": "(b) |contribution| to logit j*, largest first",
    "reverse": "(c) reverse of (a): smallest p·r first",
    "random": "(d) random orders (mean of R seeded draws)",
}
#: Stages of the cascading model randomisation (Adebayo et al., 2018), each re-initialising one more part.
STAGES: tuple[str, ...] = ("o", "W", "encoders")
STAGE_LABELS: dict[str, str] = {
    "o": "concept read-outs o re-initialised",
    "W": "o and routing weights W re-initialised",
    "encoders": "o, W, encoders and feature heads re-initialised (whole model)",
}


def interval(values: np.ndarray, level: float, baseline: float, baseline_name: str) -> dict[str, Any]:
    """CLT interval ``mean ± z·s/√n`` over the finite entries of ``values`` (N,) — variance over samples."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    n = int(x.size)
    mean = float(x.mean()) if n else float("nan")
    std = float(x.std(ddof=1)) if n > 1 else float("nan")
    half = float(sps.norm.ppf(0.5 + level / 2.0) * std / np.sqrt(n)) if n > 1 else float("nan")
    return {"estimate": mean, "low": mean - half, "high": mean + half, "std": std, "n": n, "kind": "samples",
            "method": "CLT", "level": level, "baseline": float(baseline), "baseline_name": baseline_name}


def bootstrap_interval(estimate: float, replicates: np.ndarray, n: int, level: float, baseline: float,
                       baseline_name: str) -> dict[str, Any]:
    """Percentile interval of bootstrap ``replicates`` (B,) over samples, around the full-sample ``estimate``."""
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    low, high = (np.quantile(reps, [0.5 - level / 2, 0.5 + level / 2]) if reps.size else (np.nan, np.nan))
    return {"estimate": float(estimate), "low": float(low), "high": float(high),
            "std": float(reps.std(ddof=1)) if reps.size > 1 else float("nan"), "n": int(n), "kind": "samples",
            "method": f"percentile bootstrap ({reps.size} resamples)", "level": level, "baseline": float(baseline),
            "baseline_name": baseline_name}


def rowwise_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of ``a`` with the same row of ``b`` (N, M) -> (N,); NaN for a constant row."""
    ra = sps.rankdata(np.asarray(a, dtype=np.float64), axis=1)
    rb = sps.rankdata(np.asarray(b, dtype=np.float64), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(axis=1) / denominator, np.nan)


def _bootstrap_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) weights of resampled means: counts of each sample in a resample, divided by n."""
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)])
    return counts / n


# ------------------------------------------------------------------------------------------------- deletion


def deletion_curves(coalition_logits: np.ndarray, target: np.ndarray, orders: np.ndarray, single_label: bool) -> dict[str, np.ndarray]:
    """Per-sample deletion curves from the logits of all 128 coalitions.

    Args:
        coalition_logits: ``(N, 128, J)``; coalition ``s`` keeps feature ``i`` iff bit ``i`` of ``s`` is set.
        target: ``(N,)`` the concept j* followed (the model's prediction with every feature).
        orders: ``(N, O, F)`` feature indices in removal order; the first 3 orders are (a)-(c), the rest random draws.
        single_label: softmax probabilities and argmax predictions (sentiment) or sigmoid and sign (multi-label).

    Returns ``logit_drop``, ``prob_drop``, ``pred_changed``: each ``(N, 4, K)`` for the orders of :data:`ORDERS`
    (random draws averaged per sample), step k = number of features removed.
    """
    n, n_orders, n_features = orders.shape
    bits = np.concatenate([np.zeros((n, n_orders, 1), dtype=np.int64), np.cumsum(1 << orders, axis=-1)], axis=-1)
    index = (1 << n_features) - 1 - bits  # (N, O, K): the coalition left after removing the first k
    logits = coalition_logits[np.arange(n)[:, None, None], index]  # (N, O, K, J)
    own = np.take_along_axis(logits, target[:, None, None, None], axis=-1)[..., 0]  # (N, O, K)
    if single_label:
        shifted = logits - logits.max(axis=-1, keepdims=True)
        prob = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
        prob = np.take_along_axis(prob, target[:, None, None, None], axis=-1)[..., 0]
        others = np.where(np.arange(logits.shape[-1]) == target[:, None, None, None], -np.inf, logits).max(axis=-1)
        changed = own <= others  # j* is no longer the strict argmax (all-equal logits at k = F count as changed)
    else:
        prob = 1.0 / (1.0 + np.exp(-own))
        changed = (own > 0) != (own[..., :1] > 0)
    values = {"logit_drop": own[..., :1] - own, "prob_drop": prob[..., :1] - prob, "pred_changed": changed.astype(float)}
    return {name: np.concatenate([v[:, :3], v[:, 3:].mean(axis=1, keepdims=True)], axis=1) for name, v in values.items()}


def aopc(curve: np.ndarray) -> np.ndarray:
    """Area over the perturbation curve (Samek et al., 2017): ``mean_{k=0..F}`` of the drop; ``(N, O, K) -> (N, O)``."""
    return curve.mean(axis=-1)


def _ratio_interval(a: np.ndarray, d: np.ndarray, level: float) -> dict[str, Any]:
    """mean(a)/mean(d) with a delta-method CLT interval over paired samples (N,); NaN when mean(d) is not > 0."""
    n = a.size
    ma, md = float(a.mean()), float(d.mean())
    result = {"estimate": float("nan"), "low": float("nan"), "high": float("nan"), "std": float("nan"), "n": n,
              "kind": "samples", "method": "CLT (delta method), paired", "level": level, "baseline": 1.0,
              "baseline_name": "as much as random"}
    if n < 2 or not md > 0:
        return result
    ratio = ma / md
    cov = np.cov(a, d, ddof=1)
    var = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (md**2 * n)
    half = float(sps.norm.ppf(0.5 + level / 2) * np.sqrt(max(var, 0.0)))
    result.update(estimate=ratio, low=ratio - half, high=ratio + half, std=float(np.sqrt(max(var, 0.0) * n)))
    return result


def summarise_deletion(curves: dict[str, np.ndarray], level: float) -> dict[str, Any]:
    """Curve points, AOPC per order, paired differences against random and the k = 1 ratio, all with intervals."""
    points = []
    for quantity, values in curves.items():
        for o, order in enumerate(ORDERS):
            for k in range(values.shape[-1]):
                points.append({"order": order, "k": k, "quantity": quantity,
                               **interval(values[:, o, k], level, 0.0, "no change")})
    areas, differences = [], []
    for quantity in ("logit_drop", "prob_drop"):
        area = aopc(curves[quantity])
        for o, order in enumerate(ORDERS):
            areas.append({"order": order, "quantity": quantity, **interval(area[:, o], level, 0.0, "no change")})
        for first, second in (("routing", "random"), ("contribution", "random"), ("routing", "reverse")):
            diff = area[:, ORDERS.index(first)] - area[:, ORDERS.index(second)]
            differences.append({"first": first, "second": second, "quantity": quantity,
                                **interval(diff, level, 0.0, "no difference (paired over samples)")})
    logit = curves["logit_drop"]
    ratio = _ratio_interval(logit[:, 0, 1], logit[:, 3, 1], level)
    return {"curves": points, "aopc": areas, "differences": differences, "ratio_k1": ratio}


# ------------------------------------------------------------------------------------------------- Shapley


def summarise_shapley(phi: np.ndarray, contribution: np.ndarray, pr: np.ndarray, efficiency_error: float,
                      level: float) -> dict[str, Any]:
    """Agreement of Shapley values ``phi (N, F)`` with the routing's contributions and p·r for j* (each (N, F))."""
    n_features = phi.shape[1]
    result: dict[str, Any] = {"efficiency_max_abs_error": float(efficiency_error)}
    for name, other in (("contribution", contribution), ("pr", pr)):
        result[f"spearman_{name}"] = interval(rowwise_spearman(phi, other), level, 0.0, "no rank agreement")
        agree = (phi.argmax(axis=1) == other.argmax(axis=1)).astype(float)
        result[f"top_agree_{name}"] = interval(agree, level, 1.0 / n_features, "chance 1/7")
    return result


# ------------------------------------------------------------------------------------------------- uniform


def summarise_uniform(task: str, concepts: Sequence[str], logits: np.ndarray, uniform_logits: np.ndarray,
                      target: np.ndarray, scores: np.ndarray | None, level: float, resamples: int,
                      rng: np.random.Generator) -> dict[str, Any]:
    """Every test metric with trained r and with r fixed at 1/J, the change with a paired bootstrap interval over
    samples, per-concept accuracy with CLT intervals, and the share of predictions that change."""
    n = logits.shape[0]
    trained = task_metrics(task, logits, target, concepts, scores=scores)
    uniform = task_metrics(task, uniform_logits, target, concepts, scores=scores)
    keys = [k for k, v in trained.items() if isinstance(v, float) and k not in ("acc2_majority",)]
    reps = np.empty((resamples, len(keys)))
    for b in range(resamples):
        idx = rng.integers(0, n, n)
        sub_scores = scores[idx] if scores is not None else None
        first = task_metrics(task, logits[idx], target[idx], concepts, scores=sub_scores)
        second = task_metrics(task, uniform_logits[idx], target[idx], concepts, scores=sub_scores)
        reps[b] = [second[k] - first[k] for k in keys]
    metrics = [{"metric": key, "trained": trained[key], "uniform": uniform[key],
                **bootstrap_interval(uniform[key] - trained[key], reps[:, i], n, level, 0.0, "no change")}
               for i, key in enumerate(keys)]
    per_concept = []
    single = task == "sentiment"
    pred_t, pred_u = (logits.argmax(1), uniform_logits.argmax(1)) if single else (logits > 0, uniform_logits > 0)
    for j, concept in enumerate(concepts):
        if single:
            rows = target == j
            ok_t, ok_u = pred_t[rows] == j, pred_u[rows] == j
        else:
            rows = np.ones(n, dtype=bool)
            ok_t, ok_u = pred_t[:, j] == (target[:, j] > 0.5), pred_u[:, j] == (target[:, j] > 0.5)
        per_concept.append({"concept": concept, "trained": float(ok_t.mean()) if rows.any() else float("nan"),
                            "uniform": float(ok_u.mean()) if rows.any() else float("nan"),
                            **interval(ok_u.astype(float) - ok_t.astype(float), level, 0.0, "no change")})
    changed = (pred_t != pred_u) if single else (pred_t != pred_u).mean(axis=1)
    return {"metrics": metrics, "per_concept": per_concept,
            "per_concept_accuracy": "recall of each true class" if single else "binary accuracy of each concept",
            "prediction_changed": interval(np.asarray(changed, dtype=float), level, 0.0, "no change"),
            "mean_abs_logit_change": interval(np.abs(uniform_logits - logits).mean(axis=1), level, 0.0, "no change")}


# ------------------------------------------------------------------------------------------------- randomisation


def summarise_randomisation(r: np.ndarray, contribution: np.ndarray, stages: dict[str, dict[str, np.ndarray]],
                            level: float, resamples: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Per stage: Spearman of the r̄ tables (bootstrap over samples, paired) and mean per-sample Spearman of the
    contribution maps and r maps (CLT), trained vs randomised. ``r``/``contribution`` are ``(N, F, J)``."""
    n = r.shape[0]
    flat_r = r.reshape(n, -1)
    weights = _bootstrap_weights(n, resamples, rng)
    results = []
    for stage in STAGES:
        other_r = stages[stage]["r"].reshape(n, -1)
        estimate = rowwise_spearman(flat_r.mean(0)[None], other_r.mean(0)[None])[0]
        reps = rowwise_spearman(weights @ flat_r, weights @ other_r)
        results.append({
            "stage": stage, "description": STAGE_LABELS[stage],
            "rbar_spearman": bootstrap_interval(estimate, reps, n, level, 1.0, "unchanged explanation"),
            "contribution_spearman": interval(
                rowwise_spearman(contribution.reshape(n, -1), stages[stage]["contribution"].reshape(n, -1)),
                level, 1.0, "unchanged explanation"),
            "r_spearman": interval(rowwise_spearman(flat_r, other_r), level, 1.0, "unchanged explanation"),
            "prediction_kept": interval(stages[stage]["same_pred"].astype(float), level, 1.0, "unchanged model"),
        })
    return results


# ------------------------------------------------------------------------------------------------- verdicts


def ci_text(d: dict[str, Any], digits: int = 2, scale: float = 1.0, suffix: str = "") -> str:
    """``estimate (low–high)`` of an interval dict, e.g. ``0.41 (0.37–0.45)``."""
    if not np.isfinite(d["estimate"]):
        return "n/a"
    e, lo, hi = (d[key] * scale for key in ("estimate", "low", "high"))
    dash = "–" if lo >= 0 else " to "
    return f"{e:.{digits}f}{suffix} ({lo:.{digits}f}{dash}{hi:.{digits}f}{suffix})"


def _side(d: dict[str, Any]) -> int:
    """+1 if the interval lies wholly above its baseline, -1 wholly below, 0 if it contains it."""
    return 1 if d["low"] > d["baseline"] else (-1 if d["high"] < d["baseline"] else 0)


def verdicts(summary: dict[str, Any], headline: str) -> dict[str, str]:
    """One carefully worded line per check, from the summary of :func:`interp.faithfulness.compute_faithfulness`."""
    checks = summary["checks"]
    level = f"{round(100 * summary['settings']['level'])}% CLT over {summary['n']} samples"
    deletion = checks["deletion"]
    diff = next(d for d in deletion["differences"]
                if (d["first"], d["second"], d["quantity"]) == ("routing", "random", "logit_drop"))
    ratio = deletion["ratio_k1"]
    ratio_text = (f"; at k = 1 it removes {ci_text(ratio, 1, suffix='×')} the logit a random feature removes"
                  if np.isfinite(ratio["estimate"]) else "")
    side = _side(diff)
    lead = {1: "Removing features in the routing's order (p·r) lowers logit j* more than random orders",
            -1: "Removing features in the routing's order (p·r) lowers logit j* less than random orders",
            0: "The routing's order (p·r) is not distinguishable from random orders"}[side]
    deletion_text = f"{lead}: AOPC difference {ci_text(diff, 3)} ({level}){ratio_text}."

    uniform = checks["uniform"]
    metric = next((m for m in uniform["metrics"] if m["metric"] == headline), uniform["metrics"][0])
    changed = uniform["prediction_changed"]
    if _side(metric) != 0:
        drives = (f"the learned routing {'helps' if metric['estimate'] < 0 else 'hurts'} {metric['metric']} "
                  f"(the deviations of r from 1/J matter)")
    elif changed["low"] > 0.05:
        drives = f"the deviations of r from 1/J change decisions, but not measurably {metric['metric']}"
    else:
        drives = "the deviations of r from 1/J do not measurably drive the decisions"
    uniform_text = (f"Fixing r at 1/J (same weights) changes {metric['metric']} by {ci_text(metric, 3)} (paired bootstrap "
                    f"over samples) and the prediction of {ci_text(changed, 1, 100, '%')} of samples: {drives}.")

    shapley = checks["shapley"]
    rho, top = shapley["spearman_contribution"], shapley["top_agree_contribution"]
    shapley_text = (f"Exact Shapley values and the routing contributions rank the 7 features with mean Spearman "
                    f"ρ = {ci_text(rho)} (baseline 0); they name the same top feature for {ci_text(top, 0, 100, '%')} "
                    f"of samples (chance 14%; {level}); p·r alone: ρ = {ci_text(shapley['spearman_pr'])}.")

    stages = {s["stage"]: s for s in checks["randomisation"]}
    maps = ", ".join(f"{ci_text(stages[s]['contribution_spearman'])} after {name}"
                     for s, name in (("o", "re-initialising o"), ("W", "also W"), ("encoders", "the whole model")))
    last = stages["encoders"]["contribution_spearman"]
    word = ("they change, as explanations of a model should" if last["high"] < 0.5 else
            "they change only partly" if last["high"] < 0.9 else "they barely change: they do not depend on what was learned")
    o_rbar = stages["o"]["rbar_spearman"]
    randomisation_text = (f"Per-sample contribution maps keep Spearman ρ = {maps} ({level}): {word}; the r̄ table keeps "
                          f"ρ = {ci_text(o_rbar)} when only o is re-initialised (r never reads o).")
    return {"deletion": deletion_text, "uniform": uniform_text, "shapley": shapley_text,
            "randomisation": randomisation_text}
