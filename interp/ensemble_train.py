"""Seed ensembles at the price of one model: K seeds trained in one process as one vectorised model.

:func:`train_vectorised` trains the same model under K seeds at once. The K models' parameters are stacked
(``torch.func.stack_module_state``) and one ``vmap`` of ``functional_call`` runs the K forward and backward
passes as batched operations. Every seed keeps what a separate ``interp.train.train(seed=s)`` run would have:

* its initial weights (``torch.manual_seed(s)`` before building the model, as ``train`` does);
* its data order (the same per-epoch permutation as ``train``);
* its own dropout masks (``vmap(randomness="different")``);
* its gradient clipping (the norm over *its* parameters only);
* its Adam state (Adam is element-wise, so one Adam over the stacked tensors is K Adams);
* its early stopping: a seed whose validation loss has not improved for ``patience`` epochs leaves the stack
  (its slice of the weights and of the Adam state is dropped), the others go on;
* its checkpoint, written after every epoch in the format of ``train`` (``--resume`` and ``interp extract``
  read it as if ``train`` had written it).

With every dropout at 0 the K results equal K separate ``train`` runs up to floating-point order (tested).
With dropout the masks are drawn from a different random stream than a separate run's, so the result is
another draw of the same training, not the same numbers.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from interp.checkpoint import cpu_state, save_checkpoint
from interp.data import Dataset, Split, get_split, input_dims, load_dataset
from interp.devices import resolve_device
from interp.errors import InterpError
from interp.metrics import HEADLINE, task_metrics
from interp.model import ModelConfig, RoutingModel
from interp.progress import progress_bar
from interp.schema import DEFAULT_LR, SINGLE_LABEL_TASKS, VARIANTS, concept_names
from interp.targets import targets
from interp.train import TrainResult, loss_function, split_tensors

__all__ = ["train_vectorised"]


def train_vectorised(
    data_path: Path | str,
    out_paths: Sequence[Path | str],
    seeds: Sequence[int],
    *,
    task: str = "sentiment",
    variant: str = "routing",
    epochs: int = 30,
    batch_size: int = 32,
    lr: float | None = None,
    patience: int = 8,
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
    progress: bool = True,
    dataset: Dataset | None = None,
) -> list[TrainResult]:
    """Train one model per seed (``seeds[k]`` -> checkpoint ``out_paths[k]``) as one vectorised model.

    Takes the keyword arguments of :func:`interp.train.train` (except ``seed``, ``out`` and ``resume``) with the
    same meaning and defaults; returns one :class:`~interp.train.TrainResult` per seed, in the order given.
    """
    started = time.perf_counter()
    outs = [Path(p) for p in out_paths]
    seeds = [int(s) for s in seeds]
    if not seeds or len(seeds) != len(outs):
        raise InterpError(f"give one output path per seed (got {len(seeds)} seeds and {len(outs)} paths)")
    if len(set(seeds)) != len(seeds) or len({p.resolve() for p in outs}) != len(outs):
        raise InterpError("seeds and output paths must be distinct")
    if variant not in VARIANTS:
        raise InterpError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    for out in outs:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.is_dir():
            raise InterpError(f"output {out} is a folder; pass a file name such as {out / 'model.pt'}")
    dataset = dataset if dataset is not None else load_dataset(data_path)
    train_split, valid_split = get_split(dataset, "train"), get_split(dataset, "valid")
    if any(getattr(s, "lengths", None) is not None for s in (train_split, valid_split)):
        raise InterpError("padded sequences are not supported by the vectorised engine yet; train the seeds one by one")
    torch_device = resolve_device(device)
    learning_rate = lr if lr is not None else DEFAULT_LR[task]
    config = ModelConfig(  # validates every value, dropouts included
        task=task, variant=variant, input_dims=input_dims(train_split), n_concepts=len(concept_names(task)),
        d_model=d_model, n_heads=n_heads, n_layers=n_layers, d_feature=d_feature, d_concept=d_concept,
        concept_dropout=concept_dropout, embed_dropout=embed_dropout, attn_dropout=attn_dropout,
        relu_dropout=relu_dropout, res_dropout=res_dropout,
    )

    models = []
    for seed in seeds:
        torch.manual_seed(seed)  # the initial weights of train(seed=seed)
        models.append(RoutingModel(config).to(torch_device))
    names = [name for name, _ in models[0].named_parameters()]
    params, buffers = stack_module_state(models)  # name -> (K, ...) leaves
    base = copy.deepcopy(models[0]).to("meta")
    shells = [_Shell(m.cpu(), learning_rate) for m in models]  # per-seed model + Adam, only to write checkpoints
    optimizer = torch.optim.Adam([params[n] for n in names], lr=learning_rate)

    def logits_of(p: dict[str, Tensor], b: dict[str, Tensor], text: Tensor, audio: Tensor, vision: Tensor) -> Tensor:
        return functional_call(base, (p, b), (text, audio, vision)).logits

    # per seed: its weights, batch and dropout masks; for validation every seed sees the same batch
    train_logits = _quiet(vmap(logits_of, randomness="different"))
    eval_logits = _quiet(vmap(logits_of, in_dims=(0, 0, None, None, None)))

    text, audio, vision, target = split_tensors(train_split, task)
    generator = torch.Generator()
    n_batches = math.ceil(train_split.n / batch_size)
    headline, _ = HEADLINE[task]
    active = list(range(len(seeds)))  # positions (into seeds) still training, in stack order
    states = [_SeedState() for _ in seeds]
    settings = [
        {"epochs": epochs, "batch_size": batch_size, "lr": learning_rate, "patience": patience, "seed": seed,
         "grad_clip": grad_clip, "optimizer": "Adam", "selection": "validation loss",
         "engine": f"vectorised ({len(seeds)} seeds in one process)"}
        for seed in seeds
    ]
    torch.manual_seed(seeds[0])  # the dropout stream of the ensemble
    for epoch in range(1, epochs + 1):
        orders = []
        for k in active:
            generator.manual_seed(seeds[k] * 100_003 + epoch)  # the order of train(seed) at this epoch
            orders.append(torch.randperm(train_split.n, generator=generator))
        order = torch.stack(orders)  # (K_active, N)
        base.train()
        totals = torch.zeros(len(active))
        seen = 0
        with progress_bar(n_batches, f"epoch {epoch}/{epochs} ({len(active)} seeds)", enabled=progress,
                          unit="batches") as bar:
            for index in range(n_batches):
                batch = order[:, index * batch_size : (index + 1) * batch_size]  # (K, b)
                logits = train_logits(
                    params, buffers, text[batch].to(torch_device), audio[batch].to(torch_device),
                    vision[batch].to(torch_device),
                )  # (K, b, J)
                losses = _per_seed_loss(task, logits, target[batch].to(torch_device))  # (K,)
                if not torch.isfinite(losses).all():
                    raise InterpError(
                        f"the training loss became non-finite at epoch {epoch}; lower --lr or check the data"
                    )
                optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()  # seed k's parameters get exactly d loss_k
                _clip_per_seed([params[n] for n in names], grad_clip)
                optimizer.step()
                totals += losses.detach().cpu() * batch.shape[1]
                seen += batch.shape[1]
                bar.advance()
            valid_logits = _predict(eval_logits, base, params, buffers, valid_split, torch_device)
        for position, k in enumerate(active):
            state = states[k]
            valid_loss, valid_metrics = _metrics(task, valid_logits[position], valid_split)
            state.history.append(
                {"epoch": epoch, "train_loss": float(totals[position]) / seen, "valid_loss": valid_loss,
                 **valid_metrics}
            )
            shell = shells[k]
            shell.load(params, optimizer, names, position)
            if valid_loss < state.best["loss"]:
                state.best = {"loss": valid_loss, "epoch": epoch, "metrics": valid_metrics,
                              "state_dict": cpu_state(shell.model)}
                state.stale = 0
            else:
                state.stale += 1
            state.epochs_run = epoch
            save_checkpoint(outs[k], shell.model, shell.optimizer, config, settings[k], dataset, state.best, state.stale,
                  state.history, epoch)
        if progress:
            print(f"epoch {epoch}: " + ", ".join(
                f"seed {seeds[k]} valid loss {states[k].history[-1]['valid_loss']:.4f}" for k in active), flush=True)
        keep = [position for position, k in enumerate(active) if states[k].stale < patience]
        if len(keep) < len(active):  # early stopping: the stopped seeds leave the stack
            if not keep:
                break
            params, optimizer = _select(params, optimizer, names, keep, learning_rate)
            buffers = {n: b[keep] for n, b in buffers.items()}
            active = [active[position] for position in keep]

    seconds = time.perf_counter() - started
    n_parameters = models[0].n_parameters()
    return [
        TrainResult(
            checkpoint=outs[k], task=task, variant=variant, best_epoch=int(s.best["epoch"]), epochs_run=len(s.history),
            valid_loss=float(s.best["loss"]), valid_metrics=dict(s.best["metrics"]), seconds=seconds,
            n_parameters=n_parameters, device=str(torch_device), history=s.history,
        )
        for k, s in enumerate(states)
    ]


def _quiet(fn: Any) -> Any:
    """``fn`` with SDPA on its math backend, which vmap batches; the fused CPU kernel has no batching rule and
    would run once per seed (measured: the math backend makes a vectorised step ~20% faster on CPU, while for one
    model the fused kernel is faster). torch's warning about the missing rule is silenced."""

    def call(*args: Any) -> Any:
        with warnings.catch_warnings(), sdpa_kernel([SDPBackend.MATH]):
            warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet")
            return fn(*args)

    return call


class _SeedState:
    """Early-stopping bookkeeping of one seed (as in ``train``)."""

    def __init__(self) -> None:
        self.best: dict[str, Any] = {"loss": math.inf, "epoch": 0, "metrics": {}, "state_dict": None}
        self.stale = 0
        self.epochs_run = 0
        self.history: list[dict[str, float]] = []


class _Shell:
    """One seed's ``RoutingModel`` and ``Adam`` on the CPU, filled from the stack to write its checkpoint."""

    def __init__(self, model: RoutingModel, lr: float) -> None:
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    @torch.no_grad()
    def load(self, params: dict[str, Tensor], optimizer: torch.optim.Optimizer, names: list[str], k: int) -> None:
        """Copy slice ``k`` of the stacked weights and Adam state into this seed's model and optimiser."""
        for name, p in self.model.named_parameters():
            stacked = params[name]
            p.copy_(stacked[k])
            state = optimizer.state.get(stacked)
            if state:
                self.optimizer.state[p] = {
                    "step": state["step"].detach().cpu().clone(),
                    "exp_avg": state["exp_avg"][k].detach().cpu().clone(),
                    "exp_avg_sq": state["exp_avg_sq"][k].detach().cpu().clone(),
                }


def _per_seed_loss(task: str, logits: Tensor, target: Tensor) -> Tensor:
    """Mean loss of each seed: ``logits (K, b, J)``, ``target (K, b)`` or ``(K, b, J)`` -> ``(K,)``."""
    k, b, j = logits.shape
    if task in SINGLE_LABEL_TASKS:
        loss = nn.functional.cross_entropy(logits.reshape(k * b, j), target.reshape(k * b), reduction="none")
        return loss.view(k, b).mean(1)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return loss.mean(dim=(1, 2))


@torch.no_grad()
def _clip_per_seed(stacked: list[Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` for each seed: the norm over seed k's slices of every gradient (``(K, ...)`` each)."""
    grads = [p.grad for p in stacked if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([g.reshape(g.shape[0], -1).norm(dim=1) for g in grads]).norm(dim=0)  # (K,)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))


def _select(
    params: dict[str, Tensor], optimizer: torch.optim.Optimizer, names: list[str], keep: list[int], lr: float
) -> tuple[dict[str, Tensor], torch.optim.Optimizer]:
    """New stacked leaves and Adam holding only the seeds at positions ``keep`` (their Adam state carried over)."""
    index = torch.tensor(keep)
    new = {n: params[n].detach()[index.to(params[n].device)].clone().requires_grad_(True) for n in names}
    new_optimizer = torch.optim.Adam([new[n] for n in names], lr=lr)
    for n in names:
        state = optimizer.state.get(params[n])
        if state:
            i = index.to(state["exp_avg"].device)
            new_optimizer.state[new[n]] = {
                "step": state["step"].clone(),
                "exp_avg": state["exp_avg"][i].clone(),
                "exp_avg_sq": state["exp_avg_sq"][i].clone(),
            }
    return new, new_optimizer


@torch.no_grad()
def _predict(
    eval_logits: Any, base: RoutingModel, params: dict[str, Tensor], buffers: dict[str, Tensor], split: Split,
    device: torch.device, batch_size: int = 256,
) -> np.ndarray:
    """Logits ``(K, N, J)`` of every seed on a split, in eval mode (as :func:`interp.inference.predict_logits`)."""
    base.eval()
    detached = {n: p.detach() for n, p in params.items()}
    outputs = []
    for start in range(0, split.n, batch_size):
        stop = min(start + batch_size, split.n)
        batch = [torch.as_tensor(a[start:stop], dtype=torch.float32, device=device)
                 for a in (split.text, split.audio, split.vision)]
        outputs.append(eval_logits(detached, buffers, *batch).float().cpu().numpy())
    return np.concatenate(outputs, axis=1)


def _metrics(task: str, logits: np.ndarray, split: Split) -> tuple[float, dict[str, float]]:
    """(mean loss, task metrics) from one seed's logits ``(N, J)``, as ``interp.train.split_metrics``."""
    target = targets(split.labels, task)
    loss = float(loss_function(task)(torch.from_numpy(logits), torch.from_numpy(target)))
    scores = split.labels.reshape(-1) if task == "sentiment" else None
    return loss, task_metrics(task, logits, target, concept_names(task), scores=scores)
