"""K seeds trained as one vectorised model (interp.ensemble_train) against K sequential ``interp.train`` runs.

Same data, seeds, settings and number of epochs on both sides; early stopping is off (patience above the epochs)
so both sides do the same work. Prints the wall time (median of interleaved repetitions) of each side, the
ratio, and the load average (the machine may be shared). Usage: ``python bench/ensemble.py [--k 5] [--epochs 2] [--n-train 512] [--model default]
[--threads 1] [--device cpu] [--reps 2]``. Medians of interleaved repetitions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from interp.ensemble_train import train_vectorised  # noqa: E402
from interp.synth import write_synthetic  # noqa: E402
from interp.train import train  # noqa: E402

SIZES = {"tiny": dict(d_model=16, n_heads=2, n_layers=1), "default": dict(d_model=32, n_heads=4, n_layers=2),
         "paper": dict(d_model=200, n_heads=20, n_layers=7)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--seq-len", type=int, default=20)
    parser.add_argument("--model", default="default", choices=list(SIZES))
    parser.add_argument("--d-model", type=int, default=None, help="override the model size's d_model")
    parser.add_argument("--n-layers", type=int, default=None, help="override the model size's n_layers")
    parser.add_argument("--sdpa", choices=("auto", "math", "default"), default="auto",
                        help="SDPA backend under vmap: interp's choice (auto), the math one, or torch's default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions (median; default %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.sdpa != "auto":  # a measurement of the other choice, not a setting of interp
        from torch.nn.attention import SDPBackend

        import interp.ensemble_train as ensemble_train
        ensemble_train.VMAP_SDPA_BACKENDS[args.device.split(":")[0]] = (
            [SDPBackend.MATH] if args.sdpa == "math" else None)
    seeds = list(range(args.k))
    size = dict(SIZES[args.model])
    size.update({k: v for k, v in (("d_model", args.d_model), ("n_layers", args.n_layers)) if v is not None})
    settings = dict(epochs=args.epochs, patience=args.epochs + 1, batch_size=32, device=args.device, progress=False,
                    **size)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, model {args.model}, "
          f"{size}, sdpa under vmap {args.sdpa}, K {args.k}, epochs {args.epochs}, n_train {args.n_train}, load average {os.getloadavg()}")
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
    print(f"sequential runs s: {[round(t, 1) for t in seq_times]}, vectorised s: {[round(t, 1) for t in vec_times]}")
    print(f"{'K':>3} {'sequential s':>13} {'vectorised s':>13} {'one model s':>12} {'seq/vec':>8} {'vec/one':>8}")
    print(f"{args.k:>3} {sequential:>13.1f} {vectorised:>13.1f} {sequential / args.k:>12.1f} "
          f"{sequential / vectorised:>8.2f} {vectorised / (sequential / args.k):>8.2f}")
    print(f"load average at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
