"""Seed ensembles at the price of one model: K seeds trained in one process as one vectorised model.

:func:`train_vectorised` trains the same model under K seeds at once. The K models' parameters are one leaf
``(K, P)`` (:class:`interp.stacked.StackedModels`), and one call of the model with views of it and ``(K, B, T, d)``
inputs runs the K forward and backward passes as batched operations: every layer of the model takes a leading K dim
(:mod:`interp.layers`), so a step dispatches about as many operations as one model's, instead of the ~2.6x that
``vmap`` dispatched (what bounds a small model's step on a GPU), and clipping and Adam each touch one tensor.
Every seed keeps what a separate
``interp.train.train(seed=s)`` run would have:

* its initial weights (``torch.manual_seed(s)`` before building the model, as ``train`` does);
* its data order (the same per-epoch permutation as ``train``);
* its own concept-dropout masks, drawn from a generator per seed that continues the stream ``train(seed=s)``
  draws them from (:func:`interp.model.concept_dropout_noise`), so the masks are the same;
* its gradient clipping (the norm over *its* parameters only);
* its Adam state (Adam is element-wise, so one Adam over the stacked tensors is K Adams);
* its early stopping: a seed whose validation loss has not improved for ``patience`` epochs leaves the stack
  (its slice of the weights and of the Adam state is dropped), the others go on;
* its checkpoint, written after every epoch in the format of ``train`` with the seed's own random state
  (``--resume`` and ``interp extract`` read it as if ``train`` had written it).

With the encoder dropouts at 0 (the default, the authors' released run) the K results equal K separate ``train``
runs up to floating-point order (tested with concept dropout on). Encoder dropouts above 0 draw their masks for
all seeds at once (each seed its own), from another stream than a separate run's: the result is then
another draw of the same training, not the same numbers, and :func:`interp.seeds.train_seeds` does not pick this
engine by itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from interp import guard
from interp.checkpoint import cpu_state, save_checkpoint
from interp.data import Dataset, Split, get_split, load_dataset
from interp.devices import resolve_device
from interp.errors import InterpError
from interp.model import RoutingModel, concept_dropout_noise
from interp.progress import progress_bar
from interp.stacked import StackedModels
from interp.schema import SINGLE_LABEL_TASKS, concept_names
from interp.metrics import task_metrics
from interp.targets import targets
from interp.inference import split_lengths
from interp.train import TrainOptions, TrainResult, adam, check_outputs, loss_function, split_tensors

__all__ = ["train_vectorised"]


def train_vectorised(
    data_path: Path | str,
    out_paths: Sequence[Path | str],
    seeds: Sequence[int],
    options: TrainOptions | None = None,
    *,
    progress: bool = True,
    dataset: Dataset | None = None,
    format: str | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_stop: Callable[[int], None] | None = None,
    **kwargs: Any,
) -> list[TrainResult]:
    """Train one model per seed (``seeds[k]`` -> checkpoint ``out_paths[k]``) as one vectorised model.

    ``options``: a :class:`~interp.train.TrainOptions`, or its fields as keyword arguments (the options of
    :func:`interp.train.train` except ``seed``, ``out`` and ``resume``). ``on_epoch(seed, row)`` is called after
    each epoch of each seed with its history row; ``on_stop(seed)`` when a seed stops early. Returns one
    :class:`~interp.train.TrainResult` per seed, in the order given. Padded data is masked as ``train`` masks it
    (each seed's batch with its own lengths).
    """
    started = time.perf_counter()
    if options is None:
        options = TrainOptions.from_kwargs(**kwargs)
    elif kwargs:
        raise InterpError(f"pass the training options either as options= or as keywords, not both ({', '.join(kwargs)})")
    outs = [Path(p) for p in out_paths]
    seeds = [guard.check_seed(s) for s in seeds]
    if not seeds or len(seeds) != len(outs):
        raise InterpError(f"give one output path per seed (got {len(seeds)} seeds and {len(outs)} paths)")
    if len(set(seeds)) != len(seeds) or len({p.resolve() for p in outs}) != len(outs):
        raise InterpError("seeds and output paths must be distinct")
    for out in outs:
        check_outputs(out, Path(dataset.path if dataset is not None else data_path), resume=False)
    dataset = dataset if dataset is not None else load_dataset(data_path, format=format)
    train_split, valid_split = get_split(dataset, "train"), get_split(dataset, "valid")
    task, batch_size, epochs, patience = options.task, options.batch_size, options.epochs, options.patience
    torch_device = resolve_device(options.device)
    learning_rate = options.learning_rate
    config = options.model_config(train_split)

    with torch.device("meta"):  # counted without allocating: per seed its training state, the model it was
        # stacked from and its checkpoint shell (weights and Adam moments)
        n_parameters = RoutingModel(config).n_parameters()
    guard.check_memory(len(seeds) * n_parameters * (guard.TRAIN_BYTES_PER_PARAMETER + 16), f"{len(seeds)} seeds at once",
                       "train fewer seeds at a time or pass --engine sequential")
    models, noise_generators = [], []
    for seed in seeds:
        torch.manual_seed(seed)  # the initial weights of train(seed=seed)
        models.append(RoutingModel(config).to(torch_device))
        noise_generators.append(_continued_generator(seed, torch_device))
    stack = StackedModels(models)  # one leaf (K, P): row k is seed k's parameters
    shells = [_Shell(m.cpu(), learning_rate, torch_device) for m in models]  # per-seed model + Adam, to write checkpoints
    optimizer = adam([stack.flat], learning_rate, torch_device)

    p_concept = config.concept_dropout
    text, audio, vision, target = split_tensors(train_split, task)
    lengths = split_lengths(train_split)  # (N, 3) real steps of padded data, else None
    generator = torch.Generator()
    n_batches = math.ceil(train_split.n / batch_size)
    active = list(range(len(seeds)))  # positions (into seeds) still training, in stack order
    states = [_SeedState() for _ in seeds]
    engine = f"vectorised ({len(seeds)} seeds in one process)"
    settings = [options.settings(seed, engine=engine) for seed in seeds]
    for epoch in range(1, epochs + 1):
        orders = []
        for k in active:
            generator.manual_seed(seeds[k] * 100_003 + epoch)  # the order of train(seed) at this epoch
            orders.append(torch.randperm(train_split.n, generator=generator))
        order = torch.stack(orders)  # (K_active, N)
        stack.module.train()
        totals = torch.zeros(len(active), device=torch_device)  # on the device: no synchronisation per step
        seen = 0
        with progress_bar(n_batches, f"epoch {epoch}/{epochs} ({len(active)} seeds)", enabled=progress,
                          unit="batches") as bar:
            for index in range(n_batches):
                batch = order[:, index * batch_size : (index + 1) * batch_size]  # (K, b)
                noise = None
                if p_concept > 0:  # each seed's masks from its own stream, as train(seed) draws them
                    shape = (batch.shape[1], config.n_concepts, config.d_concept)
                    noise = torch.stack([concept_dropout_noise(shape, p_concept, torch_device, noise_generators[k])
                                         for k in active])
                logits = _logits(  # per seed: its weights, batch (K, b, T, d), padding and dropout masks
                    stack, text[batch].to(torch_device, non_blocking=True),
                    audio[batch].to(torch_device, non_blocking=True), vision[batch].to(torch_device, non_blocking=True),
                    noise,
                    lengths[batch] if lengths is not None else None, train_split.padding,  # on the CPU: no wait
                )  # (K, b, J)
                losses = _per_seed_loss(task, logits, target[batch].to(torch_device, non_blocking=True))  # (K,)
                optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()  # seed k's parameters get exactly d loss_k
                stack.clip_grad_(options.grad_clip)
                optimizer.step()
                totals += losses.detach() * batch.shape[1]
                seen += batch.shape[1]
                bar.advance()
            # A non-finite loss makes its seed's total non-finite: checked once per epoch, before anything of
            # this epoch is written (each seed's checkpoint of its best epoch so far stays as it is).
            totals = totals.cpu()
            if not bool(torch.isfinite(totals).all()):
                bad = [seeds[active[i]] for i in range(len(active)) if not math.isfinite(float(totals[i]))]
                raise InterpError(
                    f"training stopped: the training loss of seed {', '.join(map(str, bad))} became non-finite in "
                    f"epoch {epoch} with learning rate {learning_rate:g}; {_kept(outs, states)}; try a lower --lr "
                    f"(e.g. {learning_rate / 10:g}) or check the data for extreme feature values"
                )
            valid_logits = _predict(stack, valid_split, torch_device)
        scores = [_metrics(task, valid_logits[position], valid_split) for position in range(len(active))]
        for (valid_loss, _), k in zip(scores, active):
            if not math.isfinite(valid_loss):
                raise InterpError(
                    f"training stopped: the validation loss of seed {seeds[k]} became {valid_loss} at epoch {epoch} "
                    f"with learning rate {learning_rate:g}; {_kept(outs, states)}; try a lower --lr "
                    f"(e.g. {learning_rate / 10:g}) or check the data for extreme feature values"
                )
        on_cpu = _StackOnCpu(stack, optimizer)  # one copy of the stack for all seeds, not one per seed
        for position, k in enumerate(active):
            state = states[k]
            valid_loss, valid_metrics = scores[position]
            state.history.append(
                {"epoch": epoch, "train_loss": float(totals[position]) / seen, "valid_loss": valid_loss,
                 **valid_metrics}
            )
            shell = shells[k]
            shell.load(on_cpu, position)
            if valid_loss < state.best["loss"]:
                state.best = {"loss": valid_loss, "epoch": epoch, "metrics": valid_metrics,
                              "state_dict": cpu_state(shell.model)}
                state.stale = 0
            else:
                state.stale += 1
            with torch.random.fork_rng(devices=[]):  # the checkpoint records this seed's random state, as train's
                if noise_generators[k].device.type == "cpu":
                    torch.set_rng_state(noise_generators[k].get_state())
                save_checkpoint(outs[k], shell.model, shell.optimizer, config, settings[k], dataset, state.best,
                                state.stale, state.history, epoch)
            if on_epoch is not None:
                on_epoch(seeds[k], state.history[-1])
        if progress:
            print(f"epoch {epoch}: " + ", ".join(
                f"seed {seeds[k]} valid loss {states[k].history[-1]['valid_loss']:.4f}" for k in active), flush=True)
        keep = [position for position, k in enumerate(active) if states[k].stale < patience]
        if len(keep) < len(active):  # early stopping: the stopped seeds leave the stack
            for position, k in enumerate(active):
                if position not in keep and on_stop is not None:
                    on_stop(seeds[k])
            if not keep:
                break
            optimizer = _select(stack, optimizer, keep, learning_rate)
            active = [active[position] for position in keep]

    seconds = time.perf_counter() - started
    return [
        TrainResult(
            checkpoint=outs[k], task=task, variant=options.variant, best_epoch=int(s.best["epoch"]),
            epochs_run=len(s.history), valid_loss=float(s.best["loss"]), valid_metrics=dict(s.best["metrics"]),
            seconds=seconds, n_parameters=n_parameters, device=str(torch_device), history=s.history,
        )
        for k, s in enumerate(states)
    ]


def _kept(outs: list[Path], states: list["_SeedState"]) -> str:
    """What a stopped training leaves: each seed's checkpoint of its best epoch, or its output untouched."""
    if all(state.best["state_dict"] is None for state in states):
        return "no checkpoint was written or changed"
    return "each seed's checkpoint of its best epoch so far is kept"


def _continued_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator in the state torch's global generator of ``device`` has in ``train(seed=seed)`` when the
    first dropout mask is drawn: just after the model was built (called right after building it)."""
    generator = torch.Generator(device=device)
    if device.type == "cpu":
        generator.set_state(torch.get_rng_state())  # manual_seed(seed), then the model's initialisation
    else:
        generator.manual_seed(seed)  # the model is initialised on the CPU: the device's stream is untouched
    return generator


def _logits(stack: StackedModels, text: Tensor, audio: Tensor, vision: Tensor, noise: Tensor | None,
            lengths: Tensor | None = None, padding: str = "none") -> Tensor:
    """Logits ``(K, B, J)`` of the K stacked models: inputs ``(K, B, T, d)`` (model k on slice k), ``noise
    (K, B, J, d_c)`` or None, ``lengths (K, B, 3)`` of padded data (``padding`` its side) or None."""
    return stack.bind()(text, audio, vision, lengths, padding, concept_noise=noise).logits


class _SeedState:
    """Early-stopping bookkeeping of one seed (as in ``train``)."""

    def __init__(self) -> None:
        self.best: dict[str, Any] = {"loss": math.inf, "epoch": 0, "metrics": {}, "state_dict": None}
        self.stale = 0
        self.epochs_run = 0
        self.history: list[dict[str, float]] = []


class _Shell:
    """One seed's ``RoutingModel`` and ``Adam`` on the CPU, filled from the stack to write its checkpoint."""

    def __init__(self, model: RoutingModel, lr: float, device: torch.device) -> None:
        self.model = model
        self.optimizer = adam(model.parameters(), lr, device)  # records the training device's kind of Adam

    @torch.no_grad()
    def load(self, stack: "_StackOnCpu", k: int) -> None:
        """Copy slice ``k`` of the stacked weights and Adam state into this seed's model and optimiser."""
        for name, p in self.model.named_parameters():
            p.copy_(stack.weights[name][k])
            state = stack.adam.get(name)
            if state:
                self.optimizer.state[p] = {"step": state["step"].clone(), "exp_avg": state["exp_avg"][k].clone(),
                                           "exp_avg_sq": state["exp_avg_sq"][k].clone()}


class _StackOnCpu:
    """The stacked weights ``(K, ...)`` and Adam state of every parameter, copied to the CPU once per epoch (on a
    GPU: one transfer of each flat tensor for all seeds and parameters), as views by parameter name."""

    def __init__(self, stack: StackedModels, optimizer: torch.optim.Optimizer) -> None:
        self.weights = stack.views(stack.flat.detach().cpu())
        self.adam: dict[str, dict[str, Tensor]] = {}
        state = optimizer.state.get(stack.flat)
        if state:
            step = state["step"].detach().cpu()
            moments = {key: stack.views(state[key].detach().cpu()) for key in ("exp_avg", "exp_avg_sq")}
            self.adam = {n: {"step": step, **{key: moments[key][n] for key in moments}} for n in stack.names}


def _per_seed_loss(task: str, logits: Tensor, target: Tensor) -> Tensor:
    """Mean loss of each seed: ``logits (K, b, J)``, ``target (K, b)`` or ``(K, b, J)`` -> ``(K,)``."""
    k, b, j = logits.shape
    if task in SINGLE_LABEL_TASKS:
        loss = nn.functional.cross_entropy(logits.reshape(k * b, j), target.reshape(k * b), reduction="none")
        return loss.view(k, b).mean(1)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return loss.mean(dim=(1, 2))


def _select(stack: StackedModels, optimizer: torch.optim.Optimizer, keep: list[int], lr: float) -> torch.optim.Optimizer:
    """Keep only the seeds at positions ``keep`` in ``stack``; returns a new Adam with their state carried over."""
    state = optimizer.state.get(stack.flat)
    stack.select(keep)
    new_optimizer = adam([stack.flat], lr, stack.flat.device)
    if state:
        index = torch.tensor(keep, device=state["exp_avg"].device)
        new_optimizer.state[stack.flat] = {
            "step": state["step"].clone(),
            "exp_avg": state["exp_avg"][index].clone(),
            "exp_avg_sq": state["exp_avg_sq"][index].clone(),
        }
    return new_optimizer


@torch.no_grad()
def _predict(stack: StackedModels, split: Split, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Logits ``(K, N, J)`` of every seed on a split, in eval mode (as :func:`interp.inference.predict_logits`)."""
    stack.module.eval()
    k = stack.k
    lengths = split_lengths(split)
    outputs = []
    for start in range(0, split.n, batch_size):
        stop = min(start + batch_size, split.n)
        batch = [torch.as_tensor(a[start:stop], dtype=torch.float32, device=device).expand(k, -1, -1, -1)
                 for a in (split.text, split.audio, split.vision)]  # every seed sees the same batch
        steps = lengths[start:stop].expand(k, -1, -1) if lengths is not None else None  # CPU: no wait
        outputs.append(_logits(stack, *batch, None, steps, split.padding).float().cpu().numpy())
    return np.concatenate(outputs, axis=1)


def _metrics(task: str, logits: np.ndarray, split: Split) -> tuple[float, dict[str, float]]:
    """(mean loss, task metrics) from one seed's logits ``(N, J)``, as ``interp.train.split_metrics``."""
    target = targets(split.labels, task)
    loss = float(loss_function(task)(torch.from_numpy(logits), torch.from_numpy(target)))
    scores = split.labels.reshape(-1) if task == "sentiment" else None
    return loss, task_metrics(task, logits, target, concept_names(task), scores=scores)
