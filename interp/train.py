"""Training a Multimodal Routing model, and loading checkpoints.

Adam with the paper's defaults, gradient clipping, early stopping and model selection on the **validation**
split (the test split is never looked at). After every epoch the checkpoint is written atomically, holding the
best weights so far *and* the state needed to resume (last weights, optimiser, epoch, history), so Ctrl-C
keeps the best model and ``--resume`` continues. Checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

import interp
from interp.data import PLANTED_SUFFIX, Dataset, Split, get_split, input_dims, load_dataset, targets
from interp.errors import CheckpointError, DataError, InterpError
from interp import guard
from interp.outputs import check_not_input, check_replaceable_checkpoint
from interp.metrics import HEADLINE, task_metrics
from interp.model import ModelConfig, RoutingModel
from interp.progress import progress_bar
from interp.runs import atomic_write_bytes
from interp.schema import FEATURES, SINGLE_LABEL_TASKS, VARIANTS, concept_names

CHECKPOINT_FORMAT = "interp-checkpoint"
CHECKPOINT_VERSION = 1
#: Paper learning rates: 1e-4, except 1e-5 for emotion.
DEFAULT_LR = {"sentiment": 1e-4, "emotion": 1e-5, "iemocap": 1e-4}


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


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint (in eval mode), with the checkpoint's metadata."""

    model: RoutingModel
    checkpoint: dict[str, Any]
    config: ModelConfig
    path: Path
    sha256: str

    @property
    def task(self) -> str:
        return self.checkpoint["task"]

    @property
    def concepts(self) -> list[str]:
        return list(self.checkpoint["concepts"])


# --------------------------------------------------------------------------------------------------- devices


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` → cuda if available, else cpu; a named CUDA device that is absent is a clear error."""
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise InterpError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InterpError(f"device {device!r} asked for but CUDA is not available here; use --device cpu")
    if resolved.type not in ("cpu", "cuda"):
        raise InterpError(f"device {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    return resolved


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


def split_lengths(split: Split) -> torch.Tensor | None:
    """(N, 3) int64 real steps per modality of a padded split, or None (full length); see :mod:`interp.padding`."""
    return None if split.lengths is None else torch.from_numpy(np.ascontiguousarray(split.lengths, dtype=np.int64))


def masks_padding(checkpoint: dict[str, Any]) -> bool:
    """True when the checkpoint was trained with padding masked (``data.padding_masked``); older checkpoints
    were trained on full-length sequences and are run that way, so their outputs do not change."""
    return bool(checkpoint.get("data", {}).get("padding_masked", False))


@torch.inference_mode()
def predict_logits(
    model: RoutingModel, split: Split, device: torch.device, batch_size: int = 256, mask_padding: bool = True
) -> np.ndarray:
    """Logits (N, J) of a split in eval mode (padding masked when ``mask_padding`` and the split is padded)."""
    model.eval()
    outputs = []
    lengths = split_lengths(split) if mask_padding else None
    for start in range(0, split.n, batch_size):
        stop = min(start + batch_size, split.n)
        text = torch.as_tensor(split.text[start:stop], dtype=torch.float32, device=device)
        audio = torch.as_tensor(split.audio[start:stop], dtype=torch.float32, device=device)
        vision = torch.as_tensor(split.vision[start:stop], dtype=torch.float32, device=device)
        batch_lengths = lengths[start:stop].to(device) if lengths is not None else None
        outputs.append(model(text, audio, vision, batch_lengths, split.padding).logits.float().cpu().numpy())
    return np.concatenate(outputs, axis=0)


def split_metrics(model: RoutingModel, split: Split, task: str, device: torch.device) -> tuple[float, dict[str, float]]:
    """(mean loss, task metrics) of a split in eval mode."""
    logits = predict_logits(model, split, device)
    target = targets(split.labels, task)
    with torch.no_grad():
        loss = float(loss_function(task)(torch.from_numpy(logits), torch.from_numpy(target)))
    scores = split.labels.reshape(-1) if task == "sentiment" else None
    return loss, task_metrics(task, logits, target, concept_names(task), scores=scores)


# -------------------------------------------------------------------------------------------------- training


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
    Dropouts (all in [0, 1)): ``concept_dropout`` on the concepts; ``embed_dropout``, ``attn_dropout``,
    ``relu_dropout`` and ``res_dropout`` in the encoders (see :class:`~interp.model.ModelConfig`); the defaults are
    the authors' released run (0.5 on concepts, 0.0 in the encoders).
    ``on_epoch`` is called after each epoch with its history row (epoch, train_loss, valid_loss, metrics), e.g. to
    drive one progress display over several trainings (:func:`interp.seeds.train_seeds`).
    """
    started = time.perf_counter()
    out = Path(out)
    concepts = concept_names(task)
    if variant not in VARIANTS:
        raise InterpError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if not 0.0 <= concept_dropout < 1.0:
        raise InterpError(f"dropout must be in [0, 1), got {concept_dropout}")
    for name, value in (("embed", embed_dropout), ("attn", attn_dropout), ("relu", relu_dropout), ("res", res_dropout)):
        if not 0.0 <= value < 1.0:
            raise InterpError(f"--{name}-dropout must be in [0, 1), got {value}")
    if lr is not None:
        guard.check_lr(lr)
    guard.check_seed(seed)
    source = Path(dataset.path if dataset is not None else data_path)
    check_not_input(out, {"data file": source, "planted map beside the data": _planted_sidecar(source)})
    if not resume:
        check_replaceable_checkpoint(out)
    out.parent.mkdir(parents=True, exist_ok=True)  # fail before training, not after the first epoch
    if out.is_dir():
        raise InterpError(f"--out {out} is a folder; pass a file name such as {out / 'model.pt'}")
    dataset = dataset if dataset is not None else load_dataset(data_path, format=format)
    train_split, valid_split = get_split(dataset, "train"), get_split(dataset, "valid")
    torch_device = resolve_device(device)
    learning_rate = lr if lr is not None else DEFAULT_LR[task]
    config = ModelConfig(
        task=task,
        variant=variant,
        input_dims=input_dims(train_split),
        n_concepts=len(concepts),
        d_model=d_model,
        n_heads=n_heads,
        n_layers=n_layers,
        d_feature=d_feature,
        d_concept=d_concept,
        concept_dropout=concept_dropout,
        embed_dropout=embed_dropout,
        attn_dropout=attn_dropout,
        relu_dropout=relu_dropout,
        res_dropout=res_dropout,
    )
    guard.check_model_config(config, "the model", training=True)
    settings = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": learning_rate,
        "patience": patience,
        "seed": seed,
        "grad_clip": grad_clip,
        "optimizer": "Adam",
        "selection": "validation loss",
    }

    torch.manual_seed(seed)
    model = RoutingModel(config).to(torch_device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    history: list[dict[str, float]] = []
    start_epoch = 1
    best = {"loss": math.inf, "epoch": 0, "metrics": {}, "state_dict": None}
    stale = 0
    if resume:
        start_epoch, best, stale, history = _restore(out, model, optimizer, config, dataset, torch_device)

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
                        lengths[batch].to(torch_device) if lengths is not None else None,
                        train_split.padding,
                    )
                    loss = criterion(output.logits, target[batch].to(torch_device))
                    if not torch.isfinite(loss):
                        raise InterpError(_diverged("training", loss.item(), epoch, learning_rate, best, out))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                    optimizer.step()
                    total += float(loss.detach()) * len(batch)
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
                    "state_dict": _cpu_state(model),
                }
                stale = 0
            else:
                stale += 1
            if best["state_dict"] is not None:  # never replace a file at --out before there is a valid epoch
                _save(out, model, optimizer, config, settings, dataset, best, stale, history, epoch)
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


def _planted_sidecar(data_path: Path) -> Path:
    """``<stem>.planted.json`` beside a data file (see :func:`interp.data.read_planted`)."""
    return data_path.with_name(data_path.stem + PLANTED_SUFFIX)


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


def _cpu_state(model: RoutingModel) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's state dict (kept as the best weights, or saved to resume)."""
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def _save(
    out: Path,
    model: RoutingModel,
    optimizer: torch.optim.Optimizer,
    config: ModelConfig,
    settings: dict[str, Any],
    dataset: Dataset,
    best: dict[str, Any],
    stale: int,
    history: list[dict[str, float]],
    epoch: int,
) -> None:
    """Write the checkpoint atomically: best weights, metadata and the state to resume."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "state_dict": best["state_dict"],
        "config": config.to_dict(),
        "task": config.task,
        "variant": config.variant,
        "concepts": list(concept_names(config.task)),
        "features": list(FEATURES),
        "input_dims": list(config.input_dims),
        "data": {
            "path": str(dataset.path),
            "abs_path": os.path.abspath(dataset.path),
            "sha256": dataset.sha256,
            "planted": dataset.planted,
            "nonfinite": dict(dataset.nonfinite),
            "layout": dataset.layout,
            "padding_masked": True,
        },
        "train": {
            **settings,
            "best_epoch": int(best["epoch"]),
            "valid_loss": float(best["loss"]),
            "valid_metrics": {k: float(v) for k, v in best["metrics"].items()},
            "epochs_run": len(history),
            "history": history,
        },
        "versions": package_versions(),
        "resume": {
            "epoch": epoch,
            "stale": stale,
            "state_dict": _cpu_state(model),
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
        },
    }
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(out, buffer.getvalue())


def _restore(
    out: Path,
    model: RoutingModel,
    optimizer: torch.optim.Optimizer,
    config: ModelConfig,
    dataset: Dataset,
    device: torch.device,
) -> tuple[int, dict[str, Any], int, list[dict[str, float]]]:
    """Load the resume state of ``out`` into ``model`` and ``optimizer``; returns (next epoch, best, stale, history)."""
    checkpoint = read_checkpoint(out)
    if ModelConfig.from_dict(checkpoint["config"]).to_dict() != config.to_dict():
        raise CheckpointError(f"--resume: {out} was trained with other model settings; drop --resume or use --out")
    if checkpoint["data"]["sha256"] != dataset.sha256:
        raise CheckpointError(f"--resume: {out} was trained on other data; drop --resume or use --out")
    state = checkpoint.get("resume")
    if not state:
        raise CheckpointError(f"--resume: {out} holds no training state to resume from")
    model.load_state_dict(state["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    if "torch_rng" in state:  # dropout draws continue as if training had never stopped
        torch.set_rng_state(state["torch_rng"])
    model.to(device)
    train_info = checkpoint["train"]
    best = {
        "loss": train_info["valid_loss"],
        "epoch": train_info["best_epoch"],
        "metrics": train_info["valid_metrics"],
        "state_dict": checkpoint["state_dict"],
    }
    return int(state["epoch"]) + 1, best, int(state["stale"]), list(train_info.get("history", []))


def package_versions() -> dict[str, str]:
    """Versions of interp, torch, numpy and Python (recorded in checkpoints and runs)."""
    import pandas
    import pyarrow

    return {
        "interp": interp.__version__,
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "pandas": str(pandas.__version__),
        "pyarrow": str(pyarrow.__version__),
        "python": platform.python_version(),
    }


# ------------------------------------------------------------------------------------------------ checkpoints


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """The checkpoint dict, loaded with ``weights_only=True`` (a pickle that would run code is refused)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found; train one with `interp train --data PATH --out {path}`")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass the model.pt file inside it")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise CheckpointError(f"checkpoint {path} is not readable (permission denied)") from None
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        text = str(error)
        if "Weights only load failed" in text or "weights_only" in text:
            raise CheckpointError(
                f"checkpoint {path} was refused: loading it would run code (it is a pickle that torch.load "
                f"with weights_only=True does not allow); use a checkpoint written by `interp train`"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} cannot be read (truncated or not a torch file: {text.splitlines()[0][:120] if text else type(error).__name__}); "
            f"train it again with `interp train`"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an interp checkpoint (no 'format: {CHECKPOINT_FORMAT}'); use one written by `interp train`")
    missing = [key for key in ("state_dict", "config", "task", "concepts", "data", "train") if key not in checkpoint]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; train it again with `interp train`")
    guard.check_checkpoint(checkpoint, path)
    return checkpoint


def load_checkpoint(path: Path | str, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model of a checkpoint on ``device``, in eval mode."""
    from interp.data import sha256_file

    checkpoint = read_checkpoint(path)
    config = ModelConfig.from_dict(checkpoint["config"])
    guard.check_model_config(config, f"checkpoint {path}")
    model = RoutingModel(config)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, TypeError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {path} does not match its own model config ({guard.one_line(error)[:300]})"
        ) from None
    model.to(resolve_device(device)).eval()
    return LoadedModel(model=model, checkpoint=checkpoint, config=config, path=Path(path), sha256=sha256_file(path))


def resolve_data_path(checkpoint: dict[str, Any], data: Path | str | None) -> Path:
    """``data`` if given, else the data file recorded in the checkpoint (as written, then its absolute path)."""
    if data is not None:
        return Path(data)
    recorded = checkpoint.get("data", {})
    for key in ("path", "abs_path"):
        candidate = recorded.get(key)
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise DataError(
        f"the data file recorded in the checkpoint ({recorded.get('path')}) is not there; pass --data PATH"
    )


def check_compatible(loaded: LoadedModel, dataset: Dataset, split: Split) -> None:
    """Refuse data whose feature dims differ from the checkpoint's, or whose labels do not fit its task."""
    expected = tuple(loaded.config.input_dims)
    found = input_dims(split)
    if expected != found:
        raise CheckpointError(
            f"checkpoint {loaded.path} expects input dims {expected} (text, audio, vision) but {dataset.path} "
            f"has {found}; pass the data it was trained on with --data"
        )
    targets(split.labels, loaded.task)  # raises DataError when the labels do not fit the task
