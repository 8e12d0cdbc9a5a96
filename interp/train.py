"""Training a Multimodal Routing model (checkpoints are read and written by :mod:`interp.checkpoint`).

Adam with the paper's defaults, gradient clipping, early stopping and model selection on the **validation**
split (the test split is never looked at). After every epoch the checkpoint is written atomically, holding the
best weights so far *and* the state needed to resume (last weights, optimiser, epoch, history), so Ctrl-C
keeps the best model and ``--resume`` continues. Checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from interp import guard
from interp.checkpoint import check_model_config, cpu_state, restore_checkpoint, save_checkpoint
from interp.data import Dataset, Split, get_split, input_dims, load_dataset, planted_path_for
from interp.devices import resolve_device
from interp.errors import InterpError
from interp.inference import predict_logits, split_lengths
from interp.metrics import HEADLINE, task_metrics
from interp.model import ModelConfig, RoutingModel
from interp.outputs import check_not_input, check_replaceable_checkpoint
from interp.progress import progress_bar
from interp.schema import DEFAULT_LR, SINGLE_LABEL_TASKS, VARIANTS, concept_names
from interp.targets import targets


@dataclass
class TrainResult:
    """What a training produced: the checkpoint path, the selected epoch and its validation metrics."""

    checkpoint: Path
    task: str
    variant: str
    best_epoch: int
    epochs_run: int
    valid_loss: float
    valid_metrics: dict[str, float]
    seconds: float
    n_parameters: int
    device: str
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> str:
        """A short human-readable summary."""
        headline, _ = HEADLINE[self.task]
        metric = self.valid_metrics.get(headline, float("nan"))
        return (
            f"trained {self.variant} ({self.n_parameters:,} parameters) on {self.device} for {self.epochs_run} "
            f"epochs in {self.seconds:.1f} s; selected epoch {self.best_epoch} on validation "
            f"(loss {self.valid_loss:.4f}, {headline} {metric:.4f}); checkpoint: {self.checkpoint}"
        )


# ------------------------------------------------------------------------------------------------------ data


def split_tensors(split: Split, task: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(text (N,T_t,d_t), audio, vision, target) tensors of a split; target (N,) int64 or (N, J) float32."""
    target = torch.from_numpy(np.ascontiguousarray(targets(split.labels, task)))
    return (
        torch.from_numpy(np.ascontiguousarray(split.text, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(split.audio, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(split.vision, dtype=np.float32)),
        target,
    )


def loss_function(task: str) -> nn.Module:
    """Cross-entropy over the 7 sentiment classes; binary cross-entropy per concept for multi-label tasks."""
    return nn.CrossEntropyLoss() if task in SINGLE_LABEL_TASKS else nn.BCEWithLogitsLoss()


def adam(parameters: Any, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam with torch's fused kernel on the CPU and CUDA: one operation for all parameters instead of about ten per
    parameter in a Python loop (the CPU's default) or ten multi-tensor operations (CUDA's default). The same
    element-wise update; results agree with the loop to float rounding (1e-5 after 12 steps of the default model).

    Measured (2 cores, one torch thread, ``python bench/train.py --optimizer``): a train step of the default model
    at B = 32 36.3 -> 30.6 ms, of the paper-size model 940 -> 868 ms (its optimizer step 75 -> 24 ms).
    """
    return torch.optim.Adam(parameters, lr=lr, fused=device.type in ("cpu", "cuda"))


def split_metrics(model: RoutingModel, split: Split, task: str, device: torch.device) -> tuple[float, dict[str, float]]:
    """(mean loss, task metrics) of a split in eval mode."""
    logits = predict_logits(model, split, device)
    target = targets(split.labels, task)
    with torch.no_grad():
        loss = float(loss_function(task)(torch.from_numpy(logits), torch.from_numpy(target)))
    scores = split.labels.reshape(-1) if task == "sentiment" else None
    return loss, task_metrics(task, logits, target, concept_names(task), scores=scores)


# -------------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainOptions:
    """The training options shared by :func:`train` and :func:`interp.ensemble_train.train_vectorised` (everything
    but the seed, the output and how to report), validated when built: a bad value is a one-line InterpError.

    ``lr`` None is the paper's learning rate of the task (:attr:`learning_rate`). Dropouts are in [0, 1); the
    defaults are the authors' released run (0.5 on concepts, 0.0 in the encoders).
    """

    task: str = "sentiment"
    variant: str = "routing"
    epochs: int = 30
    batch_size: int = 32
    lr: float | None = None
    patience: int = 8
    device: str = "auto"
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2
    d_feature: int = 64
    d_concept: int = 64
    concept_dropout: float = 0.5
    embed_dropout: float = 0.0
    attn_dropout: float = 0.0
    relu_dropout: float = 0.0
    res_dropout: float = 0.0
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        concept_names(self.task)  # an unknown task is a one-line InterpError
        if self.variant not in VARIANTS:
            raise InterpError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if not 0.0 <= self.concept_dropout < 1.0:
            raise InterpError(f"dropout must be in [0, 1), got {self.concept_dropout}")
        for name in ENCODER_DROPOUTS:
            if not 0.0 <= getattr(self, f"{name}_dropout") < 1.0:
                raise InterpError(f"--{name}-dropout must be in [0, 1), got {getattr(self, f'{name}_dropout')}")
        for name in ("epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InterpError(f"{name} must be a whole number >= 1, got {value!r}")
        if not self.grad_clip > 0:
            raise InterpError(f"grad_clip must be > 0, got {self.grad_clip}")
        if self.lr is not None:
            guard.check_lr(self.lr)

    @classmethod
    def from_kwargs(cls, **options: Any) -> "TrainOptions":
        """Options from keyword arguments; an unknown name is a one-line InterpError naming it."""
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise InterpError(f"unknown training option(s) {', '.join(unknown)}; see interp.train.TrainOptions")
        return cls(**options)

    @property
    def learning_rate(self) -> float:
        """``lr``, or the paper's learning rate of the task when ``lr`` is None."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.task]

    @property
    def encoder_dropout(self) -> bool:
        """True when any encoder dropout is above 0 (the authors' released run has none)."""
        return any(getattr(self, f"{name}_dropout") > 0 for name in ENCODER_DROPOUTS)

    def model_config(self, split: Split) -> ModelConfig:
        """The model these options train on data shaped like ``split``, checked against the limits and memory."""
        config = ModelConfig(
            task=self.task, variant=self.variant, input_dims=input_dims(split), n_concepts=len(concept_names(self.task)),
            d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers, d_feature=self.d_feature,
            d_concept=self.d_concept, concept_dropout=self.concept_dropout, embed_dropout=self.embed_dropout,
            attn_dropout=self.attn_dropout, relu_dropout=self.relu_dropout, res_dropout=self.res_dropout,
        )
        check_model_config(config, "the model", training=True)
        return config

    def settings(self, seed: int, **extra: Any) -> dict[str, Any]:
        """The training settings recorded in a checkpoint's ``train`` entry."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.learning_rate,
                "patience": self.patience, "seed": seed, "grad_clip": self.grad_clip, "optimizer": "Adam",
                "selection": "validation loss", **extra}


#: Encoder dropouts (``<name>_dropout`` options and ``--<name>-dropout`` flags).
ENCODER_DROPOUTS = ("embed", "attn", "relu", "res")


def check_outputs(out: Path, data_path: Path, resume: bool) -> None:
    """Refuse an ``out`` that is one of the inputs or (without ``resume``) a file that is not a checkpoint;
    create its folder, so that a bad path fails before training, not after the first epoch."""
    check_not_input(out, {"data file": data_path, "planted map beside the data": planted_path_for(data_path)})
    if not resume:
        check_replaceable_checkpoint(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_dir():
        raise InterpError(f"--out {out} is a folder; pass a file name such as {out / 'model.pt'}")


def train(
    data_path: Path | str,
    out: Path | str = Path("models/model.pt"),
    *,
    task: str = "sentiment",
    variant: str = "routing",
    epochs: int = 30,
    batch_size: int = 32,
    lr: float | None = None,
    patience: int = 8,
    seed: int = 0,
    device: str = "auto",
    d_model: int = 32,
    n_heads: int = 4,
    n_layers: int = 2,
    d_feature: int = 64,
    d_concept: int = 64,
    concept_dropout: float = 0.5,
    embed_dropout: float = 0.0,
    attn_dropout: float = 0.0,
    relu_dropout: float = 0.0,
    res_dropout: float = 0.0,
    grad_clip: float = 1.0,
    resume: bool = False,
    progress: bool = True,
    dataset: Dataset | None = None,
    format: str | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a model on ``data_path`` and write the checkpoint to ``out``.

    The model is selected on the validation loss; early stopping after ``patience`` epochs without improvement.
    ``resume`` continues a training whose checkpoint is at ``out`` (same data and settings). ``format``: the data
    layout (``mult`` / ``mmsa``; None detects it). Padded sequences are masked (:mod:`interp.padding`).
    The training options (task ... grad_clip) are those of :class:`TrainOptions`. Dropouts (all in [0, 1)):
    ``concept_dropout`` on the concepts; ``embed_dropout``, ``attn_dropout``, ``relu_dropout`` and
    ``res_dropout`` in the encoders (see :class:`~interp.model.ModelConfig`); the defaults are the authors'
    released run (0.5 on concepts, 0.0 in the encoders).
    ``on_epoch`` is called after each epoch with its history row (epoch, train_loss, valid_loss, metrics), e.g. to
    drive one progress display over several trainings (:func:`interp.seeds.train_seeds`).
    """
    started = time.perf_counter()
    out = Path(out)
    options = TrainOptions(
        task=task, variant=variant, epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, device=device,
        d_model=d_model, n_heads=n_heads, n_layers=n_layers, d_feature=d_feature, d_concept=d_concept,
        concept_dropout=concept_dropout, embed_dropout=embed_dropout, attn_dropout=attn_dropout,
        relu_dropout=relu_dropout, res_dropout=res_dropout, grad_clip=grad_clip,
    )
    guard.check_seed(seed)
    check_outputs(out, Path(dataset.path if dataset is not None else data_path), resume)
    dataset = dataset if dataset is not None else load_dataset(data_path, format=format)
    train_split, valid_split = get_split(dataset, "train"), get_split(dataset, "valid")
    torch_device = resolve_device(device)
    learning_rate = options.learning_rate
    config = options.model_config(train_split)
    settings = options.settings(seed)

    torch.manual_seed(seed)
    model = RoutingModel(config).to(torch_device)
    # listed once: walking the modules again for the clipping took 0.5-0.8 ms a step, 3-5% of a host-bound step
    # (default size, B = 2, T = 2, one CPU thread, interleaved), the regime of a small model's step on a GPU
    parameters = list(model.parameters())
    optimizer = adam(parameters, learning_rate, torch_device)
    history: list[dict[str, float]] = []
    start_epoch = 1
    best = {"loss": math.inf, "epoch": 0, "metrics": {}, "state_dict": None}
    stale = 0
    if resume:
        start_epoch, best, stale, history = restore_checkpoint(out, model, optimizer, config, dataset, torch_device)

    text, audio, vision, target = split_tensors(train_split, task)
    lengths = split_lengths(train_split)
    generator = torch.Generator().manual_seed(seed)
    criterion = loss_function(task)
    n_batches = math.ceil(train_split.n / batch_size)
    headline, _ = HEADLINE[task]
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, epochs + 1):
            if stale >= patience:
                epoch -= 1
                break
            generator.manual_seed(seed * 100_003 + epoch)  # reproducible order per epoch, also after --resume
            order = torch.randperm(train_split.n, generator=generator)
            model.train()
            total, seen = 0.0, 0
            with progress_bar(n_batches, f"epoch {epoch}/{epochs}", enabled=progress, unit="batches") as bar:
                for index in range(n_batches):
                    batch = order[index * batch_size : (index + 1) * batch_size]
                    output = model(
                        text[batch].to(torch_device, non_blocking=True),
                        audio[batch].to(torch_device, non_blocking=True),
                        vision[batch].to(torch_device, non_blocking=True),
                        lengths[batch] if lengths is not None else None,  # on the CPU: masks without a wait
                        train_split.padding,
                    )
                    loss = criterion(output.logits, target[batch].to(torch_device, non_blocking=True))
                    value = float(loss.detach())  # the step's one wait for the device: the check and the bar
                    if not math.isfinite(value):
                        raise InterpError(_diverged("training", value, epoch, learning_rate, best, out))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(parameters, grad_clip)
                    optimizer.step()
                    total += value * len(batch)
                    seen += len(batch)
                    bar.advance()
                    bar.update(f"loss {total / seen:.4f}")
                valid_loss, valid_metrics = split_metrics(model, valid_split, task, torch_device)
                if not math.isfinite(valid_loss):
                    raise InterpError(_diverged("validation", valid_loss, epoch, learning_rate, best, out))
                bar.update(f"loss {total / seen:.4f}  valid loss {valid_loss:.4f}  {headline} {valid_metrics[headline]:.4f}")
            history.append({"epoch": epoch, "train_loss": total / seen, "valid_loss": valid_loss, **valid_metrics})
            if valid_loss < best["loss"]:
                best = {
                    "loss": valid_loss,
                    "epoch": epoch,
                    "metrics": valid_metrics,
                    "state_dict": cpu_state(model),
                }
                stale = 0
            else:
                stale += 1
            if best["state_dict"] is not None:  # never replace a file at --out before there is a valid epoch
                save_checkpoint(out, model, optimizer, config, settings, dataset, best, stale, history, epoch)
            if on_epoch is not None:
                on_epoch(history[-1])
    except KeyboardInterrupt:
        if best["state_dict"] is not None:
            print(
                f"interrupted: the best checkpoint so far (epoch {best['epoch']}) is kept at {out}; "
                f"`interp train ... --resume` continues",
                flush=True,
            )
        raise
    if best["state_dict"] is None:
        raise InterpError(
            f"no epoch was trained: the resumed checkpoint {out} has already run {start_epoch - 1} epoch(s) and "
            f"--epochs is {epochs}; raise --epochs to continue"
        )
    return TrainResult(
        checkpoint=out,
        task=task,
        variant=variant,
        best_epoch=int(best["epoch"]),
        epochs_run=len(history),
        valid_loss=float(best["loss"]),
        valid_metrics=dict(best["metrics"]),
        seconds=time.perf_counter() - started,
        n_parameters=model.n_parameters(),
        device=str(torch_device),
        history=history,
    )


def _diverged(which: str, value: float, epoch: int, lr: float, best: dict[str, Any], out: Path) -> str:
    """The message of a training stopped by a non-finite loss: which loss, epoch and value, what was kept, what to try."""
    kept = (
        f"the checkpoint of epoch {best['epoch']} (the best before) is kept at {out}"
        if best["state_dict"] is not None
        else (f"{out} is left as it was" if out.exists() else f"nothing was written to {out}")
    )
    return (
        f"training stopped: the {which} loss became {value} at epoch {epoch} with learning rate {lr:g}; {kept}; "
        f"try a lower --lr (e.g. {lr / 10:g}) or check the data for extreme feature values"
    )


