"""Encoder dropout 0.0 (the authors' released run) vs 0.1 (interp before issue 15) on real CMU-MOSI.

Trains the same seeds under both settings with :func:`interp.ensemble_train.train_vectorised` (the seeds of one
setting in one process) at the CLI defaults (default model size, 30 epochs, patience 8, concept dropout 0.5) and
prints each seed's selected validation loss, the mean, and the paired difference over seeds (variance: retrained
models). Usage: ``python bench/dropout_mosi.py [--data PATH] [--seeds 0,1,2] [--epochs 30]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from interp.data import load_dataset  # noqa: E402
from interp.ensemble_train import train_vectorised  # noqa: E402

MOSI = ROOT.parent / "shared" / "data" / "cmu-mosi-utterance" / "mosi_utterance.pkl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=MOSI)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    dataset = load_dataset(args.data)
    losses: dict[float, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for p in (0.0, 0.1):
            start = time.perf_counter()
            results = train_vectorised(args.data, [Path(tmp) / f"{p}-{s}.pt" for s in seeds], seeds, dataset=dataset,
                                       epochs=args.epochs, progress=False, embed_dropout=p, attn_dropout=p,
                                       relu_dropout=p, res_dropout=p)
            losses[p] = [r.valid_loss for r in results]
            print(f"encoder dropout {p}: valid loss per seed {[round(v, 4) for v in losses[p]]}, "
                  f"mean {statistics.mean(losses[p]):.4f}, best epochs {[r.best_epoch for r in results]}, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    diff = [b - a for a, b in zip(losses[0.0], losses[0.1])]
    sd = statistics.stdev(diff) if len(diff) > 1 else float("nan")
    t = statistics.mean(diff) / (sd / math.sqrt(len(diff))) if len(diff) > 1 and sd > 0 else float("nan")
    print(f"paired difference 0.1 - 0.0 over {len(diff)} seeds (variance: retrained models): mean "
          f"{statistics.mean(diff):+.4f}, sd {sd:.4f}, t {t:.2f} with {len(diff) - 1} df")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
