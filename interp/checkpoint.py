"""Checkpoints: writing, reading, rebuilding the model, compatibility checks and provenance.

A checkpoint is a dict saved with ``torch.save`` and read with ``torch.load(weights_only=True)`` (a pickle that
would run code is refused). It holds the best weights, the model config, the task and concepts, the data it was
trained on (path, sha256, layout), the training settings and history, the package versions, and the state to
resume a training (last weights, optimiser, epoch, early-stopping count, torch RNG). :func:`save_checkpoint`
writes it atomically; :func:`read_checkpoint` and :func:`load_checkpoint` read it; :func:`restore_checkpoint`
puts the resume state back into a model and optimiser.

The resume state is stored as one uint8 tensor (the bytes of its own ``torch.save``) under ``"resume"``, so that
reading a checkpoint for inference does not unpickle its ~1000 optimiser tensors one by one;
:func:`resume_state` decodes it (checkpoints written before hold it as a dict, which is read as it is).
"""

from __future__ import annotations

import io
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas
import pyarrow
import torch

import interp
from interp.data import Dataset, Split, input_dims
from interp.devices import resolve_device
from interp.errors import CheckpointError, DataError, InterpError
from interp.guard import (
    CHECKPOINT_VERSIONS, MAX_CONCEPTS, MAX_INPUT_DIM, MAX_LAYERS, MAX_ROUTING_ITERATIONS, MAX_WIDTH,
    TRAIN_BYTES_PER_PARAMETER, TRAIN_NUMBERS, check_memory, check_names, check_planted, is_int, is_number, one_line,
    printable, short_repr,
)
from interp.model import ModelConfig, RoutingModel
from interp.pickles import BackgroundSha256
from interp.runs import atomic_write_bytes
from interp.schema import FEATURES, TASK_CONCEPTS, concept_names
from interp.targets import targets

CHECKPOINT_FORMAT = "interp-checkpoint"
CHECKPOINT_VERSION = 2  # resume state as one uint8 tensor; version 1 (a dict) is still read


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

def masks_padding(checkpoint: dict[str, Any]) -> bool:
    """True when the checkpoint was trained with padding masked (``data.padding_masked``); older checkpoints
    were trained on full-length sequences and are run that way, so their outputs do not change."""
    return bool(checkpoint.get("data", {}).get("padding_masked", False))

def cpu_state(model: RoutingModel) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's state dict (kept as the best weights, or saved to resume)."""
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}

def save_checkpoint(
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
    """Write the checkpoint atomically: best weights (``best["state_dict"]``), metadata and the state to resume
    (the current weights of ``model``, the optimiser, the epoch and the early-stopping count)."""
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
        "resume": encode_resume({
            "epoch": epoch,
            "stale": stale,
            "state_dict": cpu_state(model),
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }),
    }
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(out, buffer.getbuffer())  # a view: no copy of the ~0.5 GB of a paper-size checkpoint

def restore_checkpoint(
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
    state = resume_state(checkpoint, out)
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

def encode_resume(state: dict[str, Any]) -> torch.Tensor:
    """The resume state as one (n_bytes,) uint8 tensor: the bytes of its ``torch.save`` (see :func:`resume_state`),
    shared with the buffer they were written to, not copied (a paper-size model's state is ~0.37 GB: two copies
    fewer took a checkpoint's write 1.62 -> 1.33 s on 2 CPU cores, medians of 5 interleaved)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return torch.frombuffer(buffer.getbuffer(), dtype=torch.uint8)


def resume_state(checkpoint: Mapping[str, Any], path: Path | str) -> dict[str, Any] | None:
    """The checkpoint's state to resume a training (epoch, stale, state_dict, optimizer, torch_rng), or None.

    Decodes the uint8 tensor :func:`save_checkpoint` writes (``weights_only=True``); a dict (checkpoints written
    before) is returned as it is. A blob that does not decode to that state raises :class:`CheckpointError`."""
    resume = checkpoint.get("resume")
    if isinstance(resume, torch.Tensor):
        try:
            resume = torch.load(io.BytesIO(resume.numpy().tobytes()), map_location="cpu", weights_only=True)
        except Exception:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for damaged bytes
            raise CheckpointError(_damaged_resume(path)) from None
    check_resume(resume, path)
    return resume


def package_versions() -> dict[str, str]:
    """Versions of interp, torch, numpy and Python (recorded in checkpoints and runs)."""
    return {
        "interp": interp.__version__,
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "pandas": str(pandas.__version__),
        "pyarrow": str(pyarrow.__version__),
        "python": platform.python_version(),
    }


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """The checkpoint dict, loaded with ``weights_only=True`` (a pickle that would run code is refused); its
    ``"resume"`` entry is left encoded (:func:`resume_state` decodes it)."""
    return _read_checkpoint(Path(path), mmap=False)


def _read_checkpoint(path: Path, mmap: bool) -> dict[str, Any]:
    """The checkpoint dict; with ``mmap`` its tensors map the file (copy-on-write) instead of being read: a part
    never used (the resume state, 3/4 of a 500 MB paper-size checkpoint) is never read from disk."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found; train one with `interp train --data PATH --out {path}`")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass the model.pt file inside it")
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as error:  # a file of torch's legacy (non-zip) format cannot be mapped: read it
            if not mmap or "mmap" not in str(error):
                raise
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
    check_checkpoint(checkpoint, path)
    return checkpoint


def load_checkpoint(path: Path | str, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model of a checkpoint on ``device``, in eval mode.

    The file is hashed in a background thread while torch maps it (:class:`interp.pickles.BackgroundSha256`);
    the model is built on torch's meta device (no random initialisation to pay for) and takes the checkpoint's
    tensors as its parameters (``assign=True``), then moves to ``device``."""
    path = Path(path)
    hashing = BackgroundSha256(path)
    checkpoint = _read_checkpoint(path, mmap=True)
    # the weights are copied out of the mapping, so that the model does not depend on the file staying as it is
    # (the never-used resume entry stays mapped: it is read only if decoded)
    checkpoint["state_dict"] = {key: value.clone() for key, value in checkpoint["state_dict"].items()}
    config = ModelConfig.from_dict(checkpoint["config"])
    model = check_model_config(config, f"checkpoint {path}")
    try:
        model.load_state_dict(checkpoint["state_dict"], assign=True)
    except (RuntimeError, TypeError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {path} does not match its own model config ({one_line(error)[:300]})"
        ) from None
    unset = [name for name, value in [*model.named_parameters(), *model.named_buffers()] if value.is_meta]
    if unset:  # e.g. a buffer kept out of the state dict: it would have no value to run with
        raise CheckpointError(f"checkpoint {path} does not set {', '.join(unset[:5])} of its model")
    model.to(resolve_device(device)).eval()
    try:
        sha256 = hashing.result()
    except DataError as error:
        raise CheckpointError(str(error).replace("cannot read", "cannot hash checkpoint", 1)) from None
    return LoadedModel(model=model, checkpoint=checkpoint, config=config, path=path, sha256=sha256)


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


# ------------------------------------------------------------------------------------------------- schema


def check_checkpoint(checkpoint: Mapping[str, Any], path: Path | str) -> None:
    """A checkpoint's entries have the types :func:`interp.train.train` writes (its version is one this interp
    reads, the concept names are distinct, the weights are tensors)."""
    hint = "train it again with `interp train`"
    version = checkpoint.get("version")
    if not is_int(version) or version not in CHECKPOINT_VERSIONS:
        raise CheckpointError(
            f"checkpoint {path} has format version {printable(short_repr(version))}, but this interp reads version(s) "
            f"{', '.join(map(str, CHECKPOINT_VERSIONS))}; use the interp that wrote it, or {hint}")
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"checkpoint {path}: state_dict must map parameter names to tensors, got "
                              f"{short_repr(state)}; {hint}")
    if not isinstance(checkpoint.get("config"), dict):
        raise CheckpointError(f"checkpoint {path}: config must be an object, got {short_repr(checkpoint.get('config'))}")
    task = checkpoint.get("task")
    if task not in TASK_CONCEPTS:
        raise CheckpointError(f"checkpoint {path}: unknown task {printable(short_repr(task))}; {hint}")
    concepts = check_names(checkpoint.get("concepts"), f"checkpoint {path}", "concepts", CheckpointError)
    if len(concepts) != checkpoint["config"].get("n_concepts"):
        raise CheckpointError(f"checkpoint {path} names {len(concepts)} concepts but its model has "
                              f"{printable(short_repr(checkpoint['config'].get('n_concepts')))}; {hint}")
    if "features" in checkpoint and checkpoint["features"] != list(FEATURES):
        raise CheckpointError(f"checkpoint {path}: features must be {list(FEATURES)}; {hint}")
    data = checkpoint.get("data")
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path}: data must be an object (path, sha256, planted), got {short_repr(data)}")
    for key in ("path", "abs_path", "sha256"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise CheckpointError(f"checkpoint {path}: data.{key} must be a string, got {short_repr(data[key])}; {hint}")
    if data.get("planted") is not None:
        check_planted(data["planted"], f"checkpoint {path}", CheckpointError, concepts)
    train = checkpoint.get("train")
    if not isinstance(train, dict):
        raise CheckpointError(f"checkpoint {path}: train must be an object, got {short_repr(train)}; {hint}")
    for key in TRAIN_NUMBERS:
        if train.get(key) is not None and not is_number(train[key]):
            raise CheckpointError(f"checkpoint {path}: train.{key} must be a number, got {short_repr(train[key])}; {hint}")
    metrics = train.get("valid_metrics", {})
    if not isinstance(metrics, dict) or not all(isinstance(k, str) and is_number(v) for k, v in metrics.items()):
        raise CheckpointError(f"checkpoint {path}: train.valid_metrics must map names to numbers; {hint}")
    if not isinstance(train.get("history", []), list):
        raise CheckpointError(f"checkpoint {path}: train.history must be a list; {hint}")
    resume = checkpoint.get("resume")
    if isinstance(resume, torch.Tensor):  # encoded (save_checkpoint): its bytes are checked when decoded
        if resume.dtype != torch.uint8 or resume.ndim != 1 or resume.device.type != "cpu":
            raise CheckpointError(_damaged_resume(path))
    else:
        check_resume(resume, path)


def check_resume(resume: Any, path: Path | str) -> None:
    """A decoded resume state is None or a dict with an int epoch and stale, and dicts state_dict and optimizer."""
    if resume is not None and not (isinstance(resume, dict) and is_int(resume.get("epoch"))
                                   and is_int(resume.get("stale")) and isinstance(resume.get("state_dict"), dict)
                                   and isinstance(resume.get("optimizer"), dict)):
        raise CheckpointError(_damaged_resume(path))


def _damaged_resume(path: Path | str) -> str:
    return (f"checkpoint {path}: its training state (resume) is damaged; train it again with `interp train` "
            "without --resume")


def check_model_config(config: Any, where: str, training: bool = False) -> RoutingModel:
    """A :class:`interp.model.ModelConfig` within the declared limits, whose parameters (counted on torch's meta
    device, nothing allocated) fit in memory: 4 bytes each, :data:`TRAIN_BYTES_PER_PARAMETER` when ``training``.
    Returns the model it counted, on the meta device (no storage: give it weights with ``load_state_dict(...,
    assign=True)``)."""
    error = InterpError if training else CheckpointError
    limits = {"d_model": MAX_WIDTH, "d_feature": MAX_WIDTH, "d_concept": MAX_WIDTH, "n_layers": MAX_LAYERS,
              "n_heads": MAX_LAYERS, "n_concepts": MAX_CONCEPTS}
    for name, limit in limits.items():
        if getattr(config, name) > limit:
            raise error(f"{where}: {name} = {getattr(config, name)} is above the limit {limit}")
    if max(config.input_dims) > MAX_INPUT_DIM:
        raise error(f"{where}: input_dims {list(config.input_dims)} exceed the limit {MAX_INPUT_DIM} per modality")
    if config.iterations > MAX_ROUTING_ITERATIONS:
        raise error(f"{where}: routing_iterations = {config.iterations} is above the limit {MAX_ROUTING_ITERATIONS} "
                    "(the paper uses 1 to 3)")
    with torch.device("meta"):
        meta = RoutingModel(config)
    n_parameters = sum(p.numel() for p in meta.parameters())
    per_parameter = TRAIN_BYTES_PER_PARAMETER if training else 4
    check_memory(n_parameters * per_parameter, f"{where}: a model of {n_parameters:,} parameters",
                 "choose smaller --d-model, --n-layers, --d-feature or --d-concept" if training
                 else "it was not written by `interp train` on this kind of machine", error)
    return meta
