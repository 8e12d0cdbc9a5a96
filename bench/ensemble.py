"""K seeds trained as one vectorised model (interp.ensemble_train) against K sequential ``interp.train`` runs.

Same data, seeds, settings and number of epochs on both sides; early stopping is off (patience above the epochs)
so both sides do the same work. Prints the wall time (median of interleaved repetitions) of each side, the
ratio, and the load average (the machine may be shared). Usage: ``python bench/ensemble.py [--k 5] [--epochs 2]
[--n-train 512] [--model default] [--threads 1] [--device cpu] [--reps 2] [--count-ops]``. Medians of interleaved
repetitions.

``--count-ops`` also counts the torch operations one epoch dispatches (every ATen call below autograd, views
included, through a ``TorchDispatchMode``), for one ``train`` run and for ``train_vectorised`` of K seeds: a
device-independent measure of what bounds a small model's step on a GPU, where each operation costs a launch.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from interp.ensemble_train import train_vectorised  # noqa: E402
from interp.synth import write_synthetic  # noqa: E402
from interp.train import train  # noqa: E402

SIZES = {"tiny": dict(d_model=16, n_heads=2, n_layers=1), "default": dict(d_model=32, n_heads=4, n_layers=2),
         "paper": dict(d_model=200, n_heads=20, n_layers=7)}


class _CountOps(TorchDispatchMode):
    """Counts every ATen operation dispatched while active, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


def count_ops(data: Path, root: Path, seeds: list[int], settings: dict) -> tuple[int, int]:
    """Operations of one epoch: (one ``train`` run, ``train_vectorised`` of ``seeds``)."""
    one_epoch = {**settings, "epochs": 1}
    with _CountOps() as one:
        train(data, root / "ops-one.pt", seed=seeds[0], **one_epoch)
    with _CountOps() as stacked:
        train_vectorised(data, [root / f"ops-{s}.pt" for s in seeds], seeds, **one_epoch)
    return sum(one.counts.values()), sum(stacked.counts.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--seq-len", type=int, default=20)
    parser.add_argument("--model", default="default", choices=list(SIZES))
    parser.add_argument("--d-model", type=int, default=None, help="override the model size's d_model")
    parser.add_argument("--n-layers", type=int, default=None, help="override the model size's n_layers")
    parser.add_argument("--count-ops", action="store_true", help="also count the operations of one epoch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions (median; default %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = list(range(args.k))
    size = dict(SIZES[args.model])
    size.update({k: v for k, v in (("d_model", args.d_model), ("n_layers", args.n_layers)) if v is not None})
    settings = dict(epochs=args.epochs, patience=args.epochs + 1, batch_size=32, device=args.device, progress=False,
                    **size)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, model {args.model}, "
          f"{size}, K {args.k}, epochs {args.epochs}, n_train {args.n_train}, load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_synthetic(root / "d.pkl", n_train=args.n_train, n_valid=args.n_train // 4, n_test=16,
                               seq_len=args.seq_len, dims=(300, 74, 35), seed=0).data_path
        train(data, root / "warm.pt", seed=99, **{**settings, "epochs": 1})  # warm-up (allocations, imports)
        seq_times, vec_times = [], []
        for _ in range(args.reps):  # interleaved: the machine may be shared, so load changes hit both sides
            start = time.perf_counter()
            for s in seeds:
                train(data, root / f"s{s}.pt", seed=s, **settings)
            seq_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            train_vectorised(data, [root / f"v{s}.pt" for s in seeds], seeds, **settings)
            vec_times.append(time.perf_counter() - start)
        sequential, vectorised = statistics.median(seq_times), statistics.median(vec_times)
        if args.count_ops:
            one, stacked = count_ops(data, root, seeds, settings)
            print(f"operations dispatched in one epoch: one model {one:,}, {args.k} seeds stacked {stacked:,} "
                  f"(x{stacked / one:.2f}); {args.k} sequential runs x{args.k}")
    print(f"sequential runs s: {[round(t, 1) for t in seq_times]}, vectorised s: {[round(t, 1) for t in vec_times]}")
    print(f"{'K':>3} {'sequential s':>13} {'vectorised s':>13} {'one model s':>12} {'seq/vec':>8} {'vec/one':>8}")
    print(f"{args.k:>3} {sequential:>13.1f} {vectorised:>13.1f} {sequential / args.k:>12.1f} "
          f"{sequential / vectorised:>8.2f} {vectorised / (sequential / args.k):>8.2f}")
    print(f"load average at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
