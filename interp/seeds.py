"""Training one model per seed (``interp train --seeds 0-4``): the raw material of seed ensembles.

Models trained with different seeds are equally good but route differently, so a finding about routing is only
worth reporting if it survives retraining (DESIGN.md, "Statistics"). :func:`train_seeds` trains one model per seed
into ``<out stem>-seed<k><suffix>`` (``models/model.pt`` -> ``models/model-seed0.pt``, ...), with one progress
display over all the seeds' epochs, then reads each model's test metrics through :func:`interp.evaluate.evaluate`
(for reading only: selection is on the validation split, as always).

How the models are trained is an *engine*: ``"sequential"`` calls :func:`interp.train.train` once per seed;
``"vectorised"`` trains the K models at once as one vectorised model
(:func:`interp.ensemble_train.train_vectorised`), with the same numbers as the sequential engine when no encoder
dropout is on; ``"auto"`` (the default) picks the vectorised engine where it gives the same models faster
(:func:`choose_engine` says which and why). Another engine is a callable with the signature of
:class:`SeedEngine`, passed as ``engine=``; it must write the same checkpoints.
"""

from __future__ import annotations

import inspect
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import pandas as pd

from interp.data import Dataset, load_dataset
from interp.devices import resolve_device
from interp.ensemble_train import train_vectorised
from interp.errors import InterpError
from interp.evaluate import evaluate
from interp.metrics import HEADLINE
from interp.progress import Bar, progress_bar
from interp.schema import SEED_ENGINES
from interp.train import TrainOptions, TrainResult, train

#: At most this many seeds in one call (a typo such as ``0-4000`` should not start days of training).
MAX_SEEDS = 256
#: Metrics shown in the summary table, per task (all of them are in :meth:`SeedsResult.frame`).
SHOWN_METRICS: dict[str, tuple[str, ...]] = {
    "sentiment": ("acc2", "f1", "acc7", "mae", "corr"),
    "emotion": ("acc_mean", "f1_mean"),
    "iemocap": ("acc_mean", "f1_mean"),
}
#: Options of :func:`interp.train.train` that :func:`train_seeds` sets itself.
_RESERVED = frozenset({"data_path", "out", "seed", "progress", "dataset", "on_epoch", "resume"})

_SEEDS_TEXT = re.compile(r"^\d+(-\d+)?$")


# ---------------------------------------------------------------------------------------------------- seeds


def parse_seeds(text: str) -> tuple[int, ...]:
    """Seeds from text: ``"0-4"`` -> (0, 1, 2, 3, 4); ``"0,3,7"``; ``"0-2,9"``. Whole numbers >= 0, ranges
    inclusive and ascending, no seed twice, at most :data:`MAX_SEEDS`; anything else is a one-line InterpError."""
    cleaned = "".join(str(text).split())
    if not cleaned:
        raise InterpError("--seeds is empty; write e.g. 0-4 or 0,3,7")
    seeds: list[int] = []
    for part in cleaned.split(","):
        if not _SEEDS_TEXT.match(part):
            raise InterpError(f"--seeds {text!r}: {part!r} is not a seed (a whole number >= 0) or a range such as 0-4")
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if last < first:
            raise InterpError(f"--seeds {text!r}: the range {part} runs backwards; write {last}-{first}")
        if len(seeds) + last - first + 1 > MAX_SEEDS:
            raise InterpError(f"--seeds {text!r} asks for more than {MAX_SEEDS} models; train fewer seeds at a time")
        seeds.extend(range(first, last + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise InterpError(f"--seeds {text!r} names seed {', '.join(map(str, repeated))} more than once")
    return tuple(seeds)


def seed_checkpoint(out: Path | str, seed: int) -> Path:
    """The checkpoint of one seed: ``models/model.pt`` -> ``models/model-seed3.pt`` (``.pt`` when ``out`` has no
    suffix)."""
    out = Path(out)
    return out.with_name(f"{out.stem}-seed{int(seed)}{out.suffix or '.pt'}")


# -------------------------------------------------------------------------------------------------- engines


class SeedProgress:
    """What an engine reports while it trains: :meth:`epoch` after each epoch of a seed, :meth:`done` when a seed's
    training ends. Drives one progress bar of ``len(seeds) * epochs`` steps (early stopping skips the rest)."""

    def __init__(self, bar: Bar, epochs: int, headline: str) -> None:
        self._bar = bar
        self._epochs = epochs
        self._headline = headline
        self._counted: dict[int, int] = {}

    def epoch(self, seed: int, row: Mapping[str, float]) -> None:
        """One epoch of ``seed`` is done; ``row`` is its history row (epoch, train_loss, valid_loss, metrics)."""
        if self._counted.get(seed, 0) < self._epochs:
            self._counted[seed] = self._counted.get(seed, 0) + 1
            self._bar.advance()
        metric = row.get(self._headline, float("nan"))
        self._bar.update(f"seed {seed} epoch {int(row.get('epoch', 0))}: train loss {row.get('train_loss', math.nan):.4f}"
                         f"  valid loss {row.get('valid_loss', math.nan):.4f}  {self._headline} {metric:.4f}")

    def stopped(self, seed: int) -> None:
        """``seed`` stopped early: its remaining epochs are counted as done."""
        remaining = self._epochs - self._counted.get(seed, 0)
        if remaining > 0:
            self._bar.advance(remaining)
        self._counted[seed] = self._epochs

    def done(self, seed: int, result: TrainResult) -> None:
        """``seed`` has finished (early stopping included): its remaining epochs are counted as done."""
        self.stopped(seed)
        self._bar.update(f"seed {seed} done: epoch {result.best_epoch} selected of {result.epochs_run}")


class SeedEngine(Protocol):
    """Trains one model per ``(seed, checkpoint path)`` job on ``dataset`` with the :func:`interp.train.train`
    keyword options ``options`` (task, variant, epochs, ...; ``resume`` included), reporting to ``progress``;
    returns one :class:`interp.train.TrainResult` per job, in job order."""

    def __call__(
        self,
        dataset: Dataset,
        jobs: Sequence[tuple[int, Path]],
        options: Mapping[str, Any],
        progress: SeedProgress,
    ) -> list[TrainResult]: ...


def sequential_engine(
    dataset: Dataset, jobs: Sequence[tuple[int, Path]], options: Mapping[str, Any], progress: SeedProgress
) -> list[TrainResult]:
    """One :func:`interp.train.train` per seed, one after the other. With ``resume``, a seed whose checkpoint
    exists continues it (a finished one returns at once) and the others start afresh."""
    settings = dict(options)
    resume = bool(settings.pop("resume", False))
    results = []
    for seed, path in jobs:
        result = train(
            dataset.path, path, seed=seed, dataset=dataset, progress=False, resume=resume and path.is_file(),
            on_epoch=lambda row, seed=seed: progress.epoch(seed, row), **settings,
        )
        progress.done(seed, result)
        results.append(result)
    return results


def vectorised_engine(
    dataset: Dataset, jobs: Sequence[tuple[int, Path]], options: Mapping[str, Any], progress: SeedProgress
) -> list[TrainResult]:
    """All the seeds at once, as one vectorised model (:func:`interp.ensemble_train.train_vectorised`). It starts
    every seed afresh: see :func:`vectorised_refusal`."""
    refusal = vectorised_refusal(dataset, jobs, options)
    if refusal is not None:
        raise InterpError(refusal)
    settings = {k: v for k, v in options.items() if k not in ("resume", "format")}  # the dataset is already loaded
    results = train_vectorised(
        dataset.path, [path for _, path in jobs], [seed for seed, _ in jobs], TrainOptions.from_kwargs(**settings),
        progress=False, dataset=dataset, on_epoch=progress.epoch, on_stop=progress.stopped,
    )
    for (seed, _), result in zip(jobs, results):
        progress.done(seed, result)
    return results


def vectorised_refusal(dataset: Dataset, jobs: Sequence[tuple[int, Path]], options: Mapping[str, Any]) -> str | None:
    """Why the vectorised engine cannot train these jobs (a one-line message), or None when it can: it does not
    resume existing checkpoints."""
    existing = [str(path) for _, path in jobs if path.is_file()]
    if options.get("resume") and existing:
        return (f"the vectorised engine cannot resume ({existing[0]} exists); pass --engine sequential to continue "
                "each seed's checkpoint")
    return None


#: Engines by name; ``train_seeds(engine=...)`` takes one of these names, ``"auto"`` or a :class:`SeedEngine`.
ENGINES: Mapping[str, SeedEngine] = MappingProxyType(
    {"sequential": sequential_engine, "vectorised": vectorised_engine}
)
#: The engine names ``--engine`` takes: ``auto`` and every engine of :data:`ENGINES`.
ENGINE_CHOICES: tuple[str, ...] = SEED_ENGINES


#: On the CPU the vectorised engine pays only for small encoders, where per-operation overhead dominates
#: (``bench/ensemble.py --epochs 1 --n-train 256``, K = 5, one thread, sequential s / vectorised s, one flat stack
#: of :mod:`interp.stacked`): d_model 32 (the default) 1.35, 64: 1.10, 128: 0.92, the paper size (200, 7 layers;
#: K = 3) 0.83: there the K models' arithmetic dominates, which stacking does not reduce. So ``auto`` vectorises on
#: the CPU up to this.
CPU_VECTORISED_MAX_D_MODEL = 64


def choose_engine(dataset: Dataset, jobs: Sequence[tuple[int, Path]], options: Mapping[str, Any]) -> tuple[str, str]:
    """The engine ``"auto"`` picks for these jobs and why: ``(name, reason)``.

    ``vectorised`` when it trains the same models as the sequential engine (no encoder dropout: see
    :mod:`interp.ensemble_train`), can (two seeds or more, no checkpoint to resume) and was
    measured faster: on a CUDA device, or on the CPU for d_model up to :data:`CPU_VECTORISED_MAX_D_MODEL`.
    ``sequential`` otherwise.
    """
    settings = {k: v for k, v in options.items() if k not in ("resume", "format")}
    train_options = TrainOptions.from_kwargs(**settings)
    if len(jobs) < 2:
        return "sequential", "one seed"
    if vectorised_refusal(dataset, jobs, options) is not None:
        return "sequential", "--resume continues existing checkpoints one by one"
    if train_options.encoder_dropout:
        return "sequential", "encoder dropout on: the vectorised engine would draw other masks than separate runs"
    device = resolve_device(train_options.device)
    if device.type == "cpu" and train_options.d_model > CPU_VECTORISED_MAX_D_MODEL:
        return "sequential", (f"d_model {train_options.d_model} on the CPU: one by one is faster above "
                              f"{CPU_VECTORISED_MAX_D_MODEL}")
    return "vectorised", f"{len(jobs)} seeds as one vectorised model on {device.type}, the same models as one by one"


# -------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SeedRun:
    """One seed's model: its training result and its test metrics (None when the data has no test split)."""

    seed: int
    train: TrainResult
    test_metrics: dict[str, float] | None

    @property
    def checkpoint(self) -> Path:
        return self.train.checkpoint


@dataclass(frozen=True)
class SeedsResult:
    """What :func:`train_seeds` produced: one :class:`SeedRun` per seed (in the order asked), the engine's name and
    the wall time in seconds."""

    task: str
    engine: str
    runs: tuple[SeedRun, ...]
    seconds: float

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(run.seed for run in self.runs)

    @property
    def checkpoints(self) -> list[Path]:
        return [run.checkpoint for run in self.runs]

    def frame(self) -> pd.DataFrame:
        """One row per seed: seed, checkpoint, best_epoch, epochs_run, seconds, valid_loss, ``valid_<metric>`` and
        ``test_<metric>`` for every metric of the task."""
        rows = []
        for run in self.runs:
            row: dict[str, Any] = {
                "seed": run.seed,
                "checkpoint": str(run.checkpoint),
                "best_epoch": run.train.best_epoch,
                "epochs_run": run.train.epochs_run,
                "seconds": run.train.seconds,
                "valid_loss": run.train.valid_loss,
            }
            row.update({f"valid_{k}": float(v) for k, v in run.train.valid_metrics.items()})
            row.update({f"test_{k}": float(v) for k, v in (run.test_metrics or {}).items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def render(self) -> str:
        """The summary as an aligned text table: one line per seed, then the mean and the standard deviation
        (ddof = 1) over seeds of every number."""
        frame = self.frame()
        shown = SHOWN_METRICS.get(self.task, ())
        headline = HEADLINE.get(self.task, ("",))[0]
        columns = ["best_epoch", "epochs_run", "valid_loss"]
        columns += [f"valid_{headline}"] if f"valid_{headline}" in frame else []
        columns += [f"test_{m}" for m in shown if f"test_{m}" in frame]
        header = ["seed", *(c.replace("_", " ") for c in columns)]
        body = [[str(s), *(_number(v, c) for c, v in zip(columns, values))]
                for s, values in zip(frame["seed"], frame[columns].to_numpy(dtype=float))]
        if len(frame) >= 2:
            values = frame[columns].to_numpy(dtype=float)
            body.append(["mean", *(f"{v:.4f}" for v in values.mean(axis=0))])
            body.append(["sd", *(f"{v:.4f}" for v in values.std(axis=0, ddof=1))])
        widths = [max(len(row[k]) for row in [header, *body]) for k in range(len(header))]
        lines = [
            f"{len(self.runs)} {self.task} model(s), seeds {format_seeds(self.seeds)}, trained in {self.seconds:.1f} s "
            f"(engine {self.engine}); selected on validation loss; test metrics for reading only; sd is over seeds",
            "  ".join(h.rjust(w) for h, w in zip(header, widths)),
        ]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in body]
        lines += [f"seed {run.seed}: {run.checkpoint}" for run in self.runs]
        return "\n".join(lines)


def _number(value: float, column: str) -> str:
    return str(int(value)) if column in ("best_epoch", "epochs_run") else f"{value:.4f}"


def format_seeds(seeds: Sequence[int]) -> str:
    """Seeds as compact text: (0, 1, 2, 3, 7) -> ``0-3,7``."""
    parts, ordered = [], sorted(seeds)
    start = previous = None
    for seed in ordered + [None]:  # type: ignore[operator]
        if start is not None and (seed is None or seed != previous + 1):
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = None
        if seed is not None and start is None:
            start = seed
        previous = seed
    return ",".join(parts)


# ------------------------------------------------------------------------------------------------- training


def train_seeds(
    data_path: Path | str,
    out: Path | str = Path("models/model.pt"),
    seeds: Sequence[int] | str = (0, 1, 2),
    *,
    engine: str | SeedEngine = "auto",
    evaluate_test: bool = True,
    resume: bool = False,
    progress: bool = True,
    dataset: Dataset | None = None,
    **options: Any,
) -> SeedsResult:
    """Train one model per seed on ``data_path`` into ``<out stem>-seed<k>.pt`` beside ``out``.

    ``seeds``: whole numbers >= 0 (or text for :func:`parse_seeds`, e.g. ``"0-4"``). ``options``: keyword options
    of :func:`interp.train.train` shared by every seed (task, variant, epochs, lr, device, d_model, ...).
    ``resume``: continue each seed whose checkpoint exists (finished ones are kept as they are).
    ``evaluate_test``: read each model's test metrics with :func:`interp.evaluate.evaluate` (which writes
    ``<checkpoint stem>.eval-test.json``); skipped when the data has no test split. One progress bar covers all
    the seeds' epochs.
    """
    started = time.perf_counter()
    seed_list = parse_seeds(seeds) if isinstance(seeds, str) else _check_seeds(seeds)
    options = _check_options(options)
    out = Path(out)
    if out.is_dir():
        raise InterpError(f"--out {out} is a folder; pass a file name such as {out / 'model.pt'} (seeds are added "
                          f"to its name: {seed_checkpoint(out / 'model.pt', seed_list[0]).name}, ...)")
    out.parent.mkdir(parents=True, exist_ok=True)
    dataset = dataset if dataset is not None else load_dataset(data_path)
    jobs = [(seed, seed_checkpoint(out, seed)) for seed in seed_list]
    run_engine, engine_name = _resolve_engine(engine, dataset, jobs, {**options, "resume": resume})
    task = str(options.get("task", "sentiment"))
    epochs = int(options.get("epochs", inspect.signature(train).parameters["epochs"].default))
    headline = HEADLINE[task][0] if task in HEADLINE else ""
    description = f"seeds {format_seeds(seed_list)}"
    with progress_bar(len(jobs) * epochs, description, enabled=progress, unit="epochs") as bar:
        results = run_engine(dataset, jobs, {**options, "resume": resume}, SeedProgress(bar, epochs, headline))
    if len(results) != len(jobs):
        raise InterpError(f"the {engine_name} engine returned {len(results)} models for {len(jobs)} seeds")
    device = str(options.get("device", "auto"))
    runs = []
    for (seed, path), result in zip(jobs, results):
        metrics = None
        if evaluate_test and "test" in dataset.splits:
            metrics = dict(evaluate(path, data=dataset.path, split="test", device=device).metrics)
        runs.append(SeedRun(seed=seed, train=result, test_metrics=metrics))
    return SeedsResult(task=task, engine=engine_name, runs=tuple(runs), seconds=time.perf_counter() - started)


def _check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    values = tuple(seeds)
    if not values:
        raise InterpError("no seeds given; pass at least one, e.g. seeds=(0, 1, 2)")
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in values):
        raise InterpError(f"seeds must be whole numbers >= 0, got {list(values)!r}")
    if len(set(values)) != len(values):
        raise InterpError(f"seeds {list(values)!r} name a seed more than once")
    return tuple(int(s) for s in values)


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    reserved = sorted(set(options) & _RESERVED)
    if reserved:
        raise InterpError(f"train_seeds sets {', '.join(reserved)} itself; do not pass it")
    known = set(inspect.signature(train).parameters)
    unknown = sorted(set(options) - known)
    if unknown:
        raise InterpError(f"unknown training option(s) {', '.join(unknown)}; see interp.train.train")
    TrainOptions.from_kwargs(**{k: v for k, v in options.items() if k != "format"})  # bad values fail before the data loads
    return options


def _resolve_engine(
    engine: str | SeedEngine, dataset: Dataset, jobs: Sequence[tuple[int, Path]], options: Mapping[str, Any]
) -> tuple[SeedEngine, str]:
    """(engine, the name shown): ``auto`` resolves through :func:`choose_engine` (``"vectorised (auto: ...)"``)."""
    if callable(engine):
        return engine, getattr(engine, "__name__", type(engine).__name__)
    if engine == "auto":
        name, reason = choose_engine(dataset, jobs, options)
        return ENGINES[name], f"{name}, chosen by auto: {reason}"
    if engine not in ENGINES:
        raise InterpError(f"unknown training engine {engine!r}; choose one of {', '.join(ENGINE_CHOICES)}")
    refusal = vectorised_refusal(dataset, jobs, options) if engine == "vectorised" else None
    if refusal is not None:  # before the progress display starts
        raise InterpError(refusal)
    return ENGINES[engine], str(engine)


__all__ = [
    "ENGINES",
    "CPU_VECTORISED_MAX_D_MODEL",
    "ENGINE_CHOICES",
    "SeedEngine",
    "SeedProgress",
    "SeedRun",
    "SeedsResult",
    "format_seeds",
    "parse_seeds",
    "seed_checkpoint",
    "choose_engine",
    "sequential_engine",
    "train_seeds",
    "vectorised_engine",
    "vectorised_refusal",
]
