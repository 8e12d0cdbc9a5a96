"""Training time against `--threads`: a short `interp train` on real CMU-MOSI for each thread count.

Each training runs in a fresh subprocess (`python -m interp.cli train ... --threads N --quiet`); the table gives the
wall time, the seconds per epoch and the 1-minute load average (`/proc/loadavg`) before and after, because on a
shared machine the other processes decide how much extra threads can help or hurt. Not a test.

    python bench/threads.py                                  # --threads 1 and 2, 2 epochs each, 2 rounds
    python bench/threads.py --threads 1,2,4 --epochs 3 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MOSI = REPO.parent / "shared" / "data" / "cmu-mosi-utterance" / "mosi_utterance.pkl"


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def one_training(data: Path, threads: int, epochs: int, workdir: Path) -> dict[str, float]:
    out = workdir / f"threads{threads}.pt"
    command = [sys.executable, "-m", "interp.cli", "train", "--data", str(data), "--out", str(out), "--epochs",
               str(epochs), "--patience", str(epochs), "--threads", str(threads), "--device", "cpu", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    before = load_average()
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    return {"threads": threads, "seconds": seconds, "per_epoch": seconds / epochs, "load_before": before,
            "load_after": load_average()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=MOSI)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds over the thread counts")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"no data at {args.data}; pass --data PATH")
    counts = [int(t) for t in args.threads.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for round_index in range(args.rounds):
            for threads in counts:
                row = one_training(args.data, threads, args.epochs, Path(folder))
                row["round"] = round_index + 1
                rows.append(row)
    print(f"interp train on {args.data.name}, {args.epochs} epochs, CPU, cores seen: {os.cpu_count()}")
    print(f"{'round':>5} {'threads':>7} {'seconds':>8} {'s/epoch':>8} {'load 1-min before':>18} {'after':>6}")
    for row in rows:
        print(f"{row['round']:>5} {row['threads']:>7} {row['seconds']:>8.1f} {row['per_epoch']:>8.1f} "
              f"{row['load_before']:>18.2f} {row['load_after']:>6.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
