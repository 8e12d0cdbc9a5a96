"""Operations one train step dispatches: what bounds a small model's step on a GPU, counted on any machine.

A small model's step on a GPU costs about the same at B = 32 and B = 256 (issue 15, H100): each operation costs
a launch, whatever its size. This script counts every ATen operation below autograd of one step (forward,
cross-entropy, backward, clip 1.0, Adam) with a ``TorchDispatchMode``, on the CPU. Two counts: all of them (each
costs host time in the dispatcher), and those that would launch a kernel on a GPU (not views such as ``view``,
``t``, ``detach``, which only make a new tensor header, and not ``_local_scalar_dense``, the multi-tensor Adam's
reads of its step counters, which stay on the CPU):

* ``old path``: the encoders before issue 15 (``bench/_old_encoders.py``), with the multi-tensor Adam that CUDA
  uses by default;
* ``new path, multi-tensor Adam`` and ``new path, fused Adam`` (``interp.train.adam``, what ``interp train`` uses);
* ``K stacked``: one step of K seeds as ``interp.ensemble_train`` runs it (one flat leaf of weights, per-seed concept
  dropout, loss, clipping and fused Adam).

Usage: ``python bench/count_ops.py [--models default,paper] [--batch 32] [--seq-len 20] [--k 5] [--time REPS]``.
``--time`` also times each step on this CPU; at ``--batch 1 --seq-len 2`` the arithmetic is negligible and the time
is the host's work per step, what a launch-bound GPU step waits on. The counts do not depend on
the machine or the load; only the shapes and torch's version change them.
"""

from __future__ import annotations

import argparse
import collections
import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from _old_encoders import old_model  # noqa: E402
from interp import ensemble_train  # noqa: E402
from interp.model import ModelConfig, RoutingModel, concept_dropout_noise  # noqa: E402
from interp.stacked import StackedModels  # noqa: E402
from interp.train import adam  # noqa: E402

DIMS = (300, 74, 35)
SIZES = {"default": dict(d_model=32, n_heads=4, n_layers=2), "paper": dict(d_model=200, n_heads=20, n_layers=7)}


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0
        self.computing = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.n += 1
        # a view's output aliases its input (the schema says so); a scalar read of a CPU tensor launches nothing
        self.computing += not (func.is_view or func is torch.ops.aten._local_scalar_dense.default)
        return func(*args, **(kwargs or {}))


def _counted(step) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(all operations, those that would launch a kernel) of the second call of ``step``."""
    step()  # the first step creates Adam's state; count the second
    with _Count() as count:
        step()
    return count.n, count.computing


def _timed(steps: dict, reps: int, calls: int) -> dict[str, float]:  # type: ignore[type-arg]
    """Median ms per call of each step: ``reps`` rounds, each calling every step ``calls`` times in turn."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(calls):
                step()
            times[name].append((time.perf_counter() - start) / calls * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def one_model(model: nn.Module, optimizer: torch.optim.Optimizer, x, y, listed: bool = True):  # type: ignore[no-untyped-def]
    """One train step of ``interp.train.train``'s loop (training mode is set once, as per epoch there); it clips
    over the parameters listed once, or with ``listed=False`` over ``model.parameters()`` walked each step (the
    loop as it was until the parameters were listed once; no operation more, host time only)."""
    model.train()
    parameters = list(model.parameters())

    def step() -> None:
        loss = nn.functional.cross_entropy(model(*x).logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(parameters if listed else model.parameters(), 1.0)
        optimizer.step()

    return step


def stacked(config: ModelConfig, k: int, x, y, device: torch.device = torch.device("cpu")):  # type: ignore[no-untyped-def]
    """One step of ``interp.ensemble_train.train_vectorised``'s loop (its private helpers, as it calls them), with
    the parameters on ``device`` (``x`` and ``y`` there too)."""
    stack = StackedModels([RoutingModel(config) for _ in range(k)], device=device)
    optimizer = adam([stack.flat], 1e-4, device)
    xs = [t.expand(k, *t.shape) for t in x]
    ys = y.expand(k, *y.shape)
    batch = y.shape[0]
    stack.module.train()

    def step() -> None:
        noise = torch.stack([concept_dropout_noise((batch, config.n_concepts, config.d_concept), 0.5, device)
                             for _ in range(k)])
        logits = ensemble_train._logits(stack, *xs, noise)
        losses = ensemble_train._per_seed_loss("sentiment", logits, ys)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        stack.clip_grad_(1.0)
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="default,paper")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=20)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--time", type=int, default=0, metavar="REPS",
                        help="also time each step (median of REPS interleaved rounds of 10 calls, one thread)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}; operations of one train step, B = {args.batch}, T = {args.seq_len}, "
          f"dims {DIMS}" + (f"; time: median of {args.time} interleaved rounds" if args.time else ""))
    print(f"{'model':<8} {'path':<32} {'operations':>11} {'ratio':>22} {'kernels':>10} {'ratio':>22}"
          + (f" {'ms/step':>9} {'ratio':>22}" if args.time else ""))
    for size in args.models.split(","):
        config = ModelConfig(task="sentiment", variant="routing", input_dims=DIMS, n_concepts=7, **SIZES[size])
        g = torch.Generator().manual_seed(0)
        x = tuple(torch.randn(args.batch, args.seq_len, d, generator=g) for d in DIMS)
        y = torch.randint(0, 7, (args.batch,), generator=g)
        torch.manual_seed(0)
        new = RoutingModel(config)
        old = old_model(new, dropout=0.0)
        fused = copy.deepcopy(new)
        steps = {
            "old path, multi-tensor Adam": one_model(old, torch.optim.Adam(old.parameters(), lr=1e-4, foreach=True), x, y,
                                                     listed=False),
            "new path, multi-tensor Adam": one_model(new, torch.optim.Adam(new.parameters(), lr=1e-4, foreach=True), x, y),
            "new path, fused Adam": one_model(fused, adam(fused.parameters(), 1e-4, torch.device("cpu")), x, y),
        }
        if size == "default" or args.k <= 3:
            steps[f"{args.k} stacked, fused Adam"] = stacked(config, args.k, x, y)
        counts = {path: _counted(step) for path, step in steps.items()}
        if args.time:
            times = _timed(steps, args.time, calls=10)
            counts = {path: (*pair, times[path]) for path, pair in counts.items()}
        for path, values in counts.items():
            cells = []
            for i, n in enumerate(values):
                if path.startswith("old"):
                    ratio = ""
                elif "stacked" in path:
                    ratio = f"x{n / counts['new path, fused Adam'][i]:.2f} one model"
                else:
                    ratio = f"old / this x{counts['old path, multi-tensor Adam'][i] / n:.2f}"
                width = 11 if i == 0 else 10 if i == 1 else 9
                cells.append(f"{n:>{width},.0f} {ratio:>22}" if i < 2 else f"{n:>{width}.2f} {ratio:>22}")
            print(f"{size:<8} {path:<32} " + " ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
