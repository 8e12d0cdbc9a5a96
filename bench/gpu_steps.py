"""Steady train steps on CUDA: one model, K stacked seeds, and one model's step replayed as a CUDA graph.

    python bench/gpu_steps.py [--k 5] [--models default,paper] [--batch-sizes 32,256] [--reps 7]

Per model size and batch size, ms per step (median of ``--reps`` interleaved rounds of 5 steps, after a warm-up;
synchronised before and after each round), random MOSEI-shaped inputs (dims 300/74/35, T = 20), fp32, TF32 off:

* ``one model``: the step of ``interp.train``'s loop (forward, cross-entropy, backward, clip 1.0, fused Adam;
  ``count_ops.one_model``);
* ``K stacked``: the step of ``interp.ensemble_train``'s loop for K seeds (``count_ops.stacked``: one flat leaf
  of parameters, one concept-dropout mask per seed, per-seed loss and clipping, fused Adam). No checkpoints and no
  validation: ``bench/ensemble.py`` times whole runs, where K checkpoints are written each epoch;
* ``graph``: the same one-model step captured once in a CUDA graph (``torch.cuda.graph``, Adam with
  ``capturable=True``) and replayed. interp does not train this way; the row says what the host's launches cost,
  since a small model's step on a GPU waits on them (issue 15).

Needs a CUDA device; exits 0 with a message when there is none.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from count_ops import DIMS, SIZES, one_model, stacked  # noqa: E402  (the steps it counts, timed here)
from interp.model import ModelConfig, RoutingModel  # noqa: E402
from interp.train import adam  # noqa: E402


def graph_step(config: ModelConfig, x, y):  # type: ignore[no-untyped-def]
    """The one-model step captured in a CUDA graph; returns its replay."""
    model = RoutingModel(config).to(x[0].device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True, capturable=True)
    step = one_model(model, optimizer, x, y)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as torch.cuda.graph asks
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)  # the gradients are then allocated in the graph's pool
    with torch.cuda.graph(graph):
        loss = nn.functional.cross_entropy(model(*x).logits, y)
        loss.backward()
        nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
        optimizer.step()
    return graph.replay


def timed(steps: dict, reps: int) -> dict[str, float]:  # type: ignore[type-arg]
    times: dict[str, list[float]] = {name: [] for name in steps}
    for rep in range(reps + 1):
        for name, step in steps.items():
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(5):
                step()
            torch.cuda.synchronize()
            if rep:
                times[name].append((time.perf_counter() - start) / 5 * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--models", default="default,paper")
    parser.add_argument("--batch-sizes", default="32,256")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to time")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, fp32, ms per step")
    print(f"{'model':<8} {'B':>4} {'one model':>10} {f'{args.k} stacked':>10} {'ratio':>6} {'graph':>8} {'ratio':>6}")
    for size in args.models.split(","):
        config = ModelConfig(task="sentiment", variant="routing", input_dims=DIMS, n_concepts=7, **SIZES[size])
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            g = torch.Generator().manual_seed(0)
            x = tuple(torch.randn(batch, 20, d, generator=g).to(device) for d in DIMS)
            y = torch.randint(0, 7, (batch,), generator=g).to(device)
            torch.manual_seed(0)
            model = RoutingModel(config).to(device).train()
            steps = {"one": one_model(model, adam(model.parameters(), 1e-4, device), x, y),
                     "stacked": stacked(config, args.k, x, y, device)}
            try:
                steps["graph"] = graph_step(config, x, y)
            except Exception:  # a capture that fails is reported, the other rows stay
                traceback.print_exc(limit=3)
            ms = timed(steps, args.reps)
            graph = f"{ms['graph']:>8.2f} {ms['one'] / ms['graph']:>5.1f}x" if "graph" in ms else f"{'failed':>8}"
            print(f"{size:<8} {batch:>4} {ms['one']:>10.1f} {ms['stacked']:>10.1f} {ms['stacked'] / ms['one']:>5.2f}x "
                  f"{graph}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
