"""`interp faithfulness`: does the routing explain what the model does?

Four checks for the concept ``j*`` each sample is predicted as (the largest logit with every feature present):

1. **Deletion curves** — remove features one by one (k = 0..7) in the order of (a) the routing's importance
   ``p_i r_ij*``, (b) ``|contribution to logit j*|``, (c) the reverse of (a), (d) random orders (R seeded draws);
   record the drop of logit j* and of P(j*) and whether the prediction changes; AOPC per order.
2. **Uniform routing** — the trained weights with r fixed at 1/J (the gam head): the change of every test metric.
3. **Exact Shapley values** of the 7 features for logit j* over all 128 coalitions, against the contributions.
4. **Model randomisation** (Adebayo et al., 2018) — re-initialise, in cascade, o, then W, then the encoders.

A feature is *removed* by dropping it from every sum of the routing, the uniform starting concepts included
(:func:`interp.model.route` with a keep-mask); removing all 7 gives concepts = 0, so logits = 0. The encoders run
once per batch (:meth:`RoutingModel.features`); only the routing head runs again, for all 128 coalitions at once,
and the deletion curves are read off those 128 coalition logits. Statistics: :mod:`interp.faithfulness_stats`.

Library use::

    from interp.faithfulness import run_faithfulness
    result = run_faithfulness("models/model.pt", out="reports/faith")
    print(result.verdicts["deletion"])
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch import Tensor

from interp.data import load_dataset
from interp.errors import InterpError, RunError
from interp.extraction import select_source
from interp.faithfulness_stats import (
    FAITHFULNESS_FILE,
    ORDERS,
    STAGES,
    deletion_curves,
    summarise_deletion,
    summarise_randomisation,
    summarise_shapley,
    summarise_uniform,
    verdicts,
)
from interp.metrics import HEADLINE
from interp.model import RoutingModel, route
from interp.progress import progress_bar
from interp.runs import atomic_write_bytes, atomic_write_text, open_run, resolve_run, samples_files
from interp.schema import FEATURES, SINGLE_LABEL_TASKS, logit_column
from interp.checkpoint import LoadedModel, check_compatible, load_checkpoint, masks_padding, resolve_data_path
from interp.devices import resolve_device
from interp.inference import split_lengths
from interp.targets import targets

FORMAT = "interp-faithfulness"
N_FEATURES = len(FEATURES)
N_COALITIONS = 1 << N_FEATURES
#: Most (sample, coalition) pairs routed in one call (bounds the (pairs, 7, J, d_c) intermediate).
_PAIRS_PER_CALL = 4096


@dataclass(frozen=True)
class HeadOutput:
    """The routing head's output: ``logits (B, [S,] J)``, ``r (B, [S,] 7, J)``, ``contributions`` like r."""

    logits: Tensor
    r: Tensor
    contributions: Tensor


def routing_head(f: Tensor, p: Tensor, W: Tensor, o: Tensor, iterations: int, keep: Tensor | None = None) -> HeadOutput:
    """Routing and read-out on given features (eval mode, no dropout): ``f (B, 7, d_f)``, ``p (B, 7)``.

    ``keep`` is a 0/1 mask ``(B, 7)`` or ``(B, S, 7)`` of the features kept (see :func:`interp.model.route`);
    a removed feature's contribution is 0. ``iterations=0`` fixes r at 1/J.
    """
    concepts, r, votes = route(f, p, W, iterations, keep)
    logits = torch.einsum("...jc,jc->...j", concepts, o)
    read = (votes * o).sum(-1)  # <o_j, u_ij> (B, 7, J)
    weight = p if keep is None else p.unsqueeze(1) * keep if keep.dim() == 3 else p * keep
    if keep is not None and keep.dim() == 3:
        read = read.unsqueeze(1)
    return HeadOutput(logits=logits, r=r, contributions=weight.unsqueeze(-1) * r * read)


def coalition_masks(device: torch.device | str = "cpu") -> Tensor:
    """All 128 keep-masks ``(128, 7)`` float: coalition ``s`` keeps feature ``i`` iff bit ``i`` of ``s`` is set."""
    s = torch.arange(N_COALITIONS, device=device).unsqueeze(1)
    return ((s >> torch.arange(N_FEATURES, device=device)) & 1).float()


def shapley_weights() -> np.ndarray:
    """``M (128, 7)`` with ``phi = v @ M`` the exact Shapley values of a game ``v (…, 128)`` over the 7 features.

    ``M[s, i] = w(|s| - 1)`` if ``i`` is in ``s``, else ``-w(|s|)``, with ``w(m) = m! (F - m - 1)! / F!``.
    """
    masks = coalition_masks().numpy().astype(bool)
    size = masks.sum(axis=1)

    def w(m: np.ndarray) -> np.ndarray:
        m = np.clip(m, 0, N_FEATURES - 1)
        return np.array([math.factorial(k) * math.factorial(N_FEATURES - k - 1) for k in m]) / math.factorial(N_FEATURES)

    return np.where(masks, w(size - 1)[:, None], -w(size)[:, None])


def coalition_logits(f: Tensor, p: Tensor, W: Tensor, o: Tensor, iterations: int) -> Tensor:
    """Logits of all 128 coalitions of every sample, ``(B, 128, J)``, in chunks of samples."""
    masks = coalition_masks(f.device)
    step = max(1, _PAIRS_PER_CALL // N_COALITIONS)
    parts = []
    for start in range(0, f.shape[0], step):
        fb, pb = f[start:start + step], p[start:start + step]
        parts.append(routing_head(fb, pb, W, o, iterations, masks.expand(fb.shape[0], -1, -1)).logits)
    return torch.cat(parts)


def shapley_values(f: Tensor, p: Tensor, W: Tensor, o: Tensor, iterations: int, target: Tensor) -> Tensor:
    """Exact Shapley values ``(B, 7)`` of the features for ``logit[target]`` (``target (B,)``), removal as in route."""
    logits = coalition_logits(f, p, W, o, iterations)
    game = logits.gather(2, target.view(-1, 1, 1).expand(-1, N_COALITIONS, 1))[..., 0]
    return game @ torch.as_tensor(shapley_weights(), dtype=game.dtype, device=game.device)


def randomised_models(model: RoutingModel, seed: int) -> dict[str, RoutingModel]:
    """The cascade of :data:`STAGES`: o re-initialised, then also W, then the whole model (encoders and heads).

    Fresh values are drawn as the constructor draws them, without touching the global RNG, from a seed derived
    from ``seed`` by hashing: ``torch.manual_seed(seed)`` itself would redraw the very initial weights of a model
    trained with that seed (o barely moves in training, so "randomising" o would change nothing).
    """
    derived = int.from_bytes(hashlib.sha256(f"interp-faithfulness-randomisation-{seed}".encode()).digest()[:8], "little")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived >> 1)
        fresh = RoutingModel(model.config)
    device = next(model.parameters()).device
    fresh.to(device).eval()
    stage_o = copy.deepcopy(model).eval()
    stage_o.o.data.copy_(fresh.o.data)
    stage_w = copy.deepcopy(stage_o).eval()
    stage_w.W.data.copy_(fresh.W.data)
    return {"o": stage_o, "W": stage_w, "encoders": fresh}


@dataclass
class FaithfulnessResult:
    """What `interp faithfulness` computed and wrote: the summary (also in faithfulness.json) and the tidy tables."""

    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    ids: list[str]
    kept_logits: np.ndarray  # (N, J) logits with the keep-mask of all ones (removing none), for checks
    out_dir: Path | None = None

    @property
    def verdicts(self) -> dict[str, str]:
        return self.summary["verdicts"]

    @property
    def json_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / FAITHFULNESS_FILE


def _batch_inputs(part: Any, rows: slice, device: torch.device, mask_padding: bool) -> list[Any]:
    """The encoder inputs of rows of a split: ``[text (B,T_t,d_t), audio, vision, lengths (B,3) | None, padding]``
    on ``device`` (lengths only when the checkpoint was trained with padding masked, as :func:`interp.inference.predict_logits`).

    Every encoder call of this module takes ``model.features(*inputs)``.
    """
    inputs: list[Any] = [torch.as_tensor(np.asarray(getattr(part, m)[rows]), dtype=torch.float32, device=device)
                         for m in ("text", "audio", "vision")]
    lengths = split_lengths(part) if mask_padding else None
    inputs.append(lengths[rows].to(device) if lengths is not None else None)
    inputs.append(part.padding)
    return inputs


def _per_sample(loaded: LoadedModel, parts: list, device: torch.device, batch_size: int, seed: int,
                progress: bool) -> dict[str, Any]:
    """One pass over the samples: every per-sample array the four checks need (numpy, float64)."""
    model = loaded.model.eval()
    mask_padding = masks_padding(loaded.checkpoint)
    stages = randomised_models(model, seed)
    it = model.config.iterations
    keys = ("logits", "p", "r", "contribution", "coalitions", "uniform")
    out: dict[str, list] = {k: [] for k in keys}
    staged: dict[str, dict[str, list]] = {s: {"r": [], "contribution": [], "logits": []} for s in STAGES}
    total = sum(part.n for part in parts)
    with torch.inference_mode(), progress_bar(total, "faithfulness", enabled=progress, unit="samples") as bar:
        for part in parts:
            for start in range(0, part.n, batch_size):
                rows = slice(start, min(start + batch_size, part.n))
                inputs = _batch_inputs(part, rows, device, mask_padding)
                f, p = model.features(*inputs)
                full = routing_head(f, p, model.W, model.o, it)
                values = {"logits": full.logits, "p": p, "r": full.r, "contribution": full.contributions,
                          "coalitions": coalition_logits(f, p, model.W, model.o, it),
                          "uniform": routing_head(f, p, model.W, model.o, 0).logits}
                for k in keys:
                    out[k].append(values[k].double().cpu().numpy())
                for name, net in stages.items():
                    fs, ps = (f, p) if name != "encoders" else net.features(*inputs)
                    head = routing_head(fs, ps, net.W, net.o, it)
                    for k, v in (("r", head.r), ("contribution", head.contributions), ("logits", head.logits)):
                        staged[name][k].append(v.double().cpu().numpy())
                bar.advance(rows.stop - rows.start)
    result: dict[str, Any] = {k: np.concatenate(v) for k, v in out.items()}
    result["stages"] = {s: {k: np.concatenate(v) for k, v in d.items()} for s, d in staged.items()}
    return result


def compute_faithfulness(loaded: LoadedModel, parts: list, *, device: torch.device | str = "cpu",
                         batch_size: int = 64, repeats: int = 20, seed: int = 0, level: float = 0.95,
                         resamples: int = 1000, progress: bool = False) -> FaithfulnessResult:
    """The four checks on the samples of ``parts`` (data splits); nothing is written. See the module docstring."""
    if repeats < 1 or batch_size < 1 or resamples < 10:
        raise InterpError("faithfulness needs --repeats >= 1, --batch-size >= 1 and at least 10 bootstrap resamples")
    if not 0.0 < level < 1.0:
        raise InterpError(f"the interval level must lie strictly between 0 and 1, got {level}")
    task, concepts = loaded.task, loaded.concepts
    values = _per_sample(loaded, parts, resolve_device(device), batch_size, seed, progress)
    n = values["logits"].shape[0]
    if n == 0:
        raise InterpError("the split holds no samples")
    logits, rows = values["logits"], np.arange(n)
    target = logits.argmax(axis=1)
    pr = (values["p"][:, :, None] * values["r"])[rows, :, target]  # (N, 7) p_i r_ij*
    contribution = values["contribution"][rows, :, target]
    rng = np.random.default_rng(seed)
    random_orders = rng.permuted(np.tile(np.arange(N_FEATURES), (n, repeats, 1)), axis=-1)
    first = np.argsort(-pr, axis=1, kind="stable")
    orders = np.concatenate([np.stack([first, np.argsort(-np.abs(contribution), axis=1, kind="stable"),
                                       first[:, ::-1]], axis=1), random_orders], axis=1)
    single = task in SINGLE_LABEL_TASKS
    curves = deletion_curves(values["coalitions"], target, orders, single)
    game = values["coalitions"][rows, :, target]  # (N, 128) logit j* of each coalition
    phi = game @ shapley_weights()
    efficiency = float(np.abs(phi.sum(axis=1) - (game[:, -1] - game[:, 0])).max())
    labels = np.concatenate([part.labels.reshape(part.n, -1)[:, 0] for part in parts]) if task == "sentiment" else None
    truth = np.concatenate([targets(part.labels, task) for part in parts])
    same = {s: (d["logits"].argmax(1) == target) if single else ((d["logits"] > 0) == (logits > 0)).all(1)
            for s, d in values["stages"].items()}
    stage_values = {s: {**d, "same_pred": same[s]} for s, d in values["stages"].items()}
    checks = {
        "identity": {"max_abs_logit_minus_contributions": float(np.abs(values["contribution"].sum(1) - logits).max()),
                     "max_abs_keep_all_minus_forward": float(np.abs(values["coalitions"][:, -1] - logits).max()),
                     "max_abs_empty_logit": float(np.abs(values["coalitions"][:, 0]).max())},
        "deletion": summarise_deletion(curves, level),
        "uniform": summarise_uniform(task, concepts, logits, values["uniform"], truth, labels, level, resamples, rng),
        "shapley": summarise_shapley(phi, contribution, pr, efficiency, level),
        "randomisation": summarise_randomisation(values["r"], values["contribution"], stage_values, level, resamples, rng),
    }
    ids = [sample_id for part in parts for sample_id in part.ids]
    summary = {
        "format": FORMAT, "version": 1, "task": task, "variant": loaded.config.variant,
        "iterations": loaded.config.iterations, "concepts": concepts, "features": list(FEATURES), "n": n,
        "checkpoint": str(loaded.path), "checkpoint_sha256": loaded.sha256,
        "target": "j* = the concept with the largest logit when every feature is present (the prediction)",
        "removal": "a removed feature is dropped from every sum of the routing (uniform starting concepts included); "
                   "removing all 7 gives concepts = 0, so logits = 0",
        "aopc": "mean over k = 0..7 of the drop after removing the first k features (Samek et al., 2017)",
        "settings": {"repeats": repeats, "seed": seed, "level": level, "bootstrap_resamples": resamples,
                     "batch_size": batch_size, "device": str(device)},
        "checks": checks,
    }
    summary["verdicts"] = verdicts(summary, "acc7" if task == "sentiment" else HEADLINE[task][0])
    tables = _tables(summary, ids, phi, contribution, pr, [concepts[j] for j in target],
                     aopc_per_sample=curves["logit_drop"].mean(-1))
    return FaithfulnessResult(summary=summary, tables=tables, ids=ids, kept_logits=values["coalitions"][:, -1])


def _tables(summary: dict[str, Any], ids: list[str], phi: np.ndarray, contribution: np.ndarray, pr: np.ndarray,
            target: list[str], aopc_per_sample: np.ndarray) -> dict[str, pd.DataFrame]:
    """Tidy tables: deletion curve points, every interval of the summary, and per-(sample, feature) values."""
    checks = summary["checks"]
    rows = []
    for check, items in (("aopc", checks["deletion"]["aopc"]), ("aopc_difference", checks["deletion"]["differences"]),
                         ("uniform_metric", checks["uniform"]["metrics"]),
                         ("uniform_per_concept", checks["uniform"]["per_concept"]),
                         ("randomisation", [{**s[q], "stage": s["stage"], "quantity": q} for s in checks["randomisation"]
                                            for q in ("rbar_spearman", "contribution_spearman", "r_spearman",
                                                      "prediction_kept")])):
        for item in items:
            name = "/".join(str(item[k]) for k in ("order", "first", "second", "metric", "concept", "stage", "quantity")
                            if k in item)
            rows.append({"check": check, "quantity": name, **{k: item[k] for k in _INTERVAL_KEYS}})
    singles = [("ratio_k1", checks["deletion"]["ratio_k1"]), ("uniform_prediction_changed",
               checks["uniform"]["prediction_changed"]), ("uniform_mean_abs_logit_change",
               checks["uniform"]["mean_abs_logit_change"])]
    singles += [(f"shapley_{k}", v) for k, v in checks["shapley"].items() if isinstance(v, dict)]
    rows += [{"check": name, "quantity": name, **{k: item[k] for k in _INTERVAL_KEYS}} for name, item in singles]
    n = len(ids)
    samples = pd.DataFrame({
        "sample_id": np.repeat(np.asarray(ids, dtype=object), N_FEATURES), "target": np.repeat(target, N_FEATURES),
        "feature": np.tile(FEATURES, n), "shapley": phi.reshape(-1), "contribution": contribution.reshape(-1),
        "pr": pr.reshape(-1), **{f"aopc_{o}": np.repeat(aopc_per_sample[:, i], N_FEATURES) for i, o in enumerate(ORDERS)},
    })
    curves = pd.DataFrame([{k: v for k, v in point.items() if k not in ("kind", "method", "level", "baseline_name")}
                           for point in checks["deletion"]["curves"]])
    return {"deletion": curves, "summary": pd.DataFrame(rows), "samples": samples}


_INTERVAL_KEYS = ("estimate", "low", "high", "std", "n", "kind", "method", "level", "baseline", "baseline_name")


def write_outputs(result: FaithfulnessResult, out_dir: Path | str) -> Path:
    """Write faithfulness.json and ``faithfulness_<table>.parquet`` / ``.csv`` atomically; returns the JSON path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in result.tables.items():
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        atomic_write_bytes(out_dir / f"faithfulness_{name}.parquet", buffer.getvalue())
        atomic_write_text(out_dir / f"faithfulness_{name}.csv", frame.to_csv(index=False))
    result.out_dir = out_dir
    atomic_write_text(out_dir / FAITHFULNESS_FILE, json.dumps(_strict(result.summary), indent=2, allow_nan=False) + "\n")
    return out_dir / FAITHFULNESS_FILE


def _strict(value: Any) -> Any:
    """A copy with every non-finite float replaced by None (strict JSON; read back as NaN by the report)."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _check_run_logits(run: Path, ids: list[str], logits: np.ndarray, concepts: list[str]) -> float:
    """Largest |stored logit − recomputed logit| over the run's samples; RunError when the run holds other samples."""
    columns = ["sample_id"] + [logit_column(c) for c in concepts]
    frame = pd.concat([pq.read_table(p, columns=columns).to_pandas() for p in samples_files(run)])
    stored = frame.set_index("sample_id").reindex(ids)
    if stored.isna().any().any() or len(frame) != len(ids):
        raise RunError(f"run {run} holds other samples than this split of the data; pass the matching --data/--split")
    return float(np.abs(stored.to_numpy(dtype=np.float64) - logits).max())


def run_faithfulness(ckpt: Path | str, data: Path | str | None = None, split: str | None = None,
                     run: Path | str | None = None, out: Path | str | None = None, *, device: str = "auto",
                     batch_size: int = 64, repeats: int = 20, seed: int = 0, level: float = 0.95,
                     resamples: int = 1000, progress: bool = True) -> FaithfulnessResult:
    """Load, check, compute and write (see :func:`compute_faithfulness`); returns the result with ``out_dir`` set.

    With ``run`` (a run of this checkpoint), data and split default to the run's and the outputs go into the run
    folder (so `interp report` shows them); its stored logits must equal the recomputed ones. Without ``out`` or
    ``run`` the outputs go to ``reports/<checkpoint stem>-<split>-faithfulness/``.
    """
    started = time.perf_counter()
    torch_device = resolve_device(device)
    loaded = load_checkpoint(ckpt, torch_device)
    if run is not None:
        run = resolve_run(run)
        meta = open_run(run).meta
        if meta.get("checkpoint_sha256") != loaded.sha256:
            raise RunError(f"run {run} was extracted with another checkpoint than {ckpt} (SHA-256 differs); "
                           f"pass the run of this checkpoint or drop --run")
        if split is not None and meta.get("split") and split != meta["split"]:
            raise RunError(f"run {run} holds the {meta['split']} split, not {split}; drop --split or --run")
        split = split or meta.get("split")
        if data is None and meta.get("data") and Path(meta["data"]).is_file():
            data = meta["data"]
    split = split or "test"
    dataset = load_dataset(resolve_data_path(loaded.checkpoint, data))
    if split not in dataset.splits and split != "all":
        raise InterpError(f"unknown split {split!r}; {dataset.path.name} has {', '.join(dataset.splits)}")
    source = select_source(dataset, split)
    for part in source.parts:
        check_compatible(loaded, dataset, part)
    result = compute_faithfulness(loaded, source.parts, device=torch_device, batch_size=batch_size, repeats=repeats,
                                  seed=seed, level=level, resamples=resamples, progress=progress)
    result.summary.update(data=str(dataset.path), data_sha256=dataset.sha256, split=source.name)
    if run is not None:
        diff = _check_run_logits(run, result.ids, result.kept_logits, loaded.concepts)
        tolerance = 5e-2 if meta.get("amp") else 1e-4  # a bf16 extraction rounds the encoders
        if not diff <= tolerance:
            raise RunError(f"run {run} stores logits that differ from this checkpoint's on {data or 'its data'} by "
                           f"{diff:.2g}; pass the data the run was extracted from with --data")
        result.summary["checks"]["identity"]["max_abs_logit_vs_run"] = diff
        result.summary["run"] = str(run)
    result.summary["seconds"] = time.perf_counter() - started
    target = Path(out) if out is not None else Path(run) if run is not None else (
        Path("reports") / f"{Path(ckpt).stem}-{source.name}-faithfulness")
    write_outputs(result, target)
    return result


__all__ = ["FAITHFULNESS_FILE", "FaithfulnessResult", "HeadOutput", "coalition_logits", "coalition_masks",
           "compute_faithfulness", "randomised_models", "routing_head", "run_faithfulness", "shapley_values",
           "shapley_weights", "write_outputs"]
