#!/usr/bin/env python
"""Benchmark of ``interp extract`` against a naive extraction written the obvious way, on CPU and CUDA.

For the default model (d_model 32, 4 heads, 2 layers) and the paper-size model (d_model 200, 20 heads, 7 layers),
at several batch sizes, each measurement runs in a fresh subprocess (so that its peak resident memory is its own),
after a warm-up on a small data set in the same process:

* interp -- :func:`interp.extract.extract` end to end: checkpoint and data loading, batched forward passes under
  ``torch.inference_mode`` (DataLoader, pinned memory and non-blocking copies on CUDA), and the run directory
  written as parquet row groups (samples.parquet, routing.parquet, meta.json);
* naive  -- the same checkpoint and data, a forward pass per batch under ``torch.no_grad``, then for every sample,
  every feature and every concept a Python dict built with ``.item()`` calls, and at the end
  ``pd.DataFrame(rows).to_parquet(...)`` for the samples and the routing tables.

Data: synthetic (:mod:`interp.synth`) at the dims of CMU-MOSI's unaligned features (text 300, audio 74,
vision 35) and ``--seq-len`` time steps (default 20) per modality; with ``--mosi`` (on by default when
../shared/data/cmu-mosi-utterance/ is present) also the real CMU-MOSI utterance data with the test split tiled
10 times (7,520 samples: the paper's "10x the test set"). Weights: one epoch of training on 64 samples (the
throughput does not depend on the weights), written by :func:`interp.train.train` in the real checkpoint format.

Run ``python bench/extract.py --help``; the README beside this file explains the table.
"""

from __future__ import annotations

from _memory import peak_rss_mb, rss_mb  # bench/ is sys.path[0] when a benchmark runs
import argparse
import json
import os
import pickle
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable from a checkout without installing the package
    sys.path.insert(0, str(REPO))

MOSI = REPO.parent / "shared" / "data" / "cmu-mosi-utterance" / "mosi_utterance.pkl"
MODELS: dict[str, dict[str, int]] = {
    "default": {"d_model": 32, "n_heads": 4, "n_layers": 2},
    "paper": {"d_model": 200, "n_heads": 20, "n_layers": 7},
}
#: CMU-MOSI's unaligned feature dims (GloVe text, COVAREP audio, Facet vision), as in MulT's data.
DIMS = (300, 74, 35)


# ------------------------------------------------------------------------------------------------- helpers


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(float(part)) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"{flag}: expected numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise SystemExit(f"{flag}: each value must be at least 1")
    return values


# -------------------------------------------------------------------------------------------- naive way


def naive_extract(ckpt: Path, data: Path, out: Path, batch_size: int, device: str, amp: str | None = None) -> int:
    """Extraction the obvious way: per-sample, per-feature, per-concept Python dicts, then one DataFrame each.

    Returns the number of samples. Same checkpoint loader, data loader and forward pass as interp.
    """
    import pandas as pd
    import torch

    from interp.data import load_dataset
    from interp.schema import FEATURES
    from interp.targets import targets
    from interp.checkpoint import load_checkpoint

    loaded = load_checkpoint(ckpt, device)
    model = loaded.model.eval()
    concepts = loaded.concepts
    split = load_dataset(data).splits["test"]
    labels = targets(split.labels, loaded.task)
    scores = split.labels.reshape(split.n, -1)[:, 0]
    sample_rows: list[dict] = []
    routing_rows: list[dict] = []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp == "bf16")
    with torch.no_grad():
        for start in range(0, split.n, batch_size):
            stop = min(start + batch_size, split.n)
            text = torch.tensor(split.text[start:stop]).to(device)
            audio = torch.tensor(split.audio[start:stop]).to(device)
            vision = torch.tensor(split.vision[start:stop]).to(device)
            with autocast:
                output = model(text, audio, vision)
            probs = torch.softmax(output.logits, dim=-1)
            for b in range(stop - start):
                sample_id = split.ids[start + b]
                pred = int(output.logits[b].argmax().item())
                row = {
                    "sample_id": sample_id,
                    "split": "test",
                    "row": start + b,
                    "score": float(scores[start + b]),
                    "label": concepts[int(labels[start + b])],
                    "pred": concepts[pred],
                    "correct": pred == int(labels[start + b]),
                }
                for j, concept in enumerate(concepts):
                    row[f"logit_{concept}"] = output.logits[b, j].item()
                    row[f"prob_{concept}"] = probs[b, j].item()
                for i, feature in enumerate(FEATURES):
                    row[f"p_{feature}"] = output.p[b, i].item()
                sample_rows.append(row)
                for i, feature in enumerate(FEATURES):
                    for j, concept in enumerate(concepts):
                        p = output.p[b, i].item()
                        r = output.r[b, i, j].item()
                        routing_rows.append(
                            {
                                "sample_id": sample_id,
                                "feature": feature,
                                "concept": concept,
                                "p": p,
                                "r": r,
                                "pr": p * r,
                                "contribution": output.contributions[b, i, j].item(),
                            }
                        )
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(sample_rows).to_parquet(out / "samples.parquet")
    pd.DataFrame(routing_rows).to_parquet(out / "routing.parquet")
    return len(sample_rows)


# ------------------------------------------------------------------------------------------------ worker


def _worker(args: argparse.Namespace) -> None:
    """One measurement in this fresh process: warm up on --warm-data, then time --data; print one JSON line."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from interp.extract import extract

    device = args.device
    cuda = device.startswith("cuda")
    if cuda:
        torch.zeros(1, device=device)  # CUDA context before any timing
    scratch = Path(args.out)

    def once(data: Path, out: Path) -> int:
        if args.worker == "naive":
            return naive_extract(Path(args.ckpt), data, out, args.batch, device, args.worker_amp)
        extract(
            args.ckpt, data=data, split="test", out=out, batch_size=args.batch, device=device, force=True,
            amp=args.worker_amp, num_workers=args.num_workers, compile=args.worker_compile, progress=False,
        )
        return int(json.loads((out / "meta.json").read_text())["n"])

    warm_started = time.perf_counter()
    once(Path(args.warm_data), scratch / "warm")
    warm_seconds = time.perf_counter() - warm_started
    shutil.rmtree(scratch / "warm", ignore_errors=True)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = rss_mb()
    started = time.perf_counter()
    n = once(Path(args.data), scratch / "run")
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    result = {
        "method": args.worker,
        "n": n,
        "seconds": seconds,
        "samples_per_s": n / seconds,
        "warmup_s": warm_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "children_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,  # DataLoader workers
        "base_rss_mb": base,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "run_mb": sum(p.stat().st_size for p in (scratch / "run").glob("*.parquet")) / 2**20,
        "threads": torch.get_num_threads(),
    }
    shutil.rmtree(scratch / "run", ignore_errors=True)
    print("RESULT " + json.dumps(result), flush=True)


def measure(method: str, ckpt: Path, data: Path, warm: Path, device: str, batch: int, args: argparse.Namespace,
            amp: str | None = None, compile: bool = False) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix=f"{method}-", dir=args.root))
    command = [
        sys.executable, str(Path(__file__).resolve()), "--worker", method, "--ckpt", str(ckpt), "--data", str(data),
        "--warm-data", str(warm), "--device", device, "--batch", str(batch), "--out", str(scratch),
        "--threads", str(args.threads or 0), "--num-workers", str(args.num_workers),
    ]
    if amp:
        command += ["--worker-amp", amp]
    if compile:
        command += ["--worker-compile"]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (completed.stderr or completed.stdout).strip().splitlines()
    return {"error": tail[-1] if tail else f"exit {completed.returncode}"}


# ---------------------------------------------------------------------------------------------- fixtures


def make_data(root: Path, n: int, seq_len: int, tag: str = "") -> Path:
    from interp.synth import write_synthetic

    path = root / f"data-{tag or n}.pkl"
    if not path.exists():
        write_synthetic(path, task="sentiment", n_train=64, n_valid=32, n_test=n, seq_len=seq_len, dims=DIMS, seed=0)
    return path


def make_checkpoint(root: Path, name: str, data: Path, size: dict[str, int]) -> tuple[Path, int]:
    """A checkpoint of the given size, in the real format (one epoch of training on ``data``'s 64 samples)."""
    from interp.train import train

    path = root / f"{name}.pt"
    result = train(data, path, task="sentiment", epochs=1, batch_size=32, device="cpu", progress=False, seed=0, **size)
    return path, result.n_parameters


def make_mosi_tiled(root: Path, source: Path = MOSI, times: int = 10) -> tuple[Path, Path]:
    """CMU-MOSI with its test split tiled ``times`` times (ids made unique), and a small warm-up copy."""
    import numpy as np

    from interp.pickles import safe_load_pickle

    raw = safe_load_pickle(source)
    tiled = {name: dict(split) for name, split in raw.items()}
    test = raw["test"]
    big = {}
    for key, value in test.items():
        array = np.asarray(value)
        big[key] = np.concatenate([array] * times, axis=0)
    ids = np.asarray(test["id"]).astype(str)
    big["id"] = np.concatenate([np.char.add(ids, f"#{k}") for k in range(times)], axis=0)
    tiled["test"] = big
    path = root / "mosi-x10.pkl"
    with open(path, "wb") as handle:
        pickle.dump(tiled, handle, protocol=4)
    warm = {name: dict(split) for name, split in raw.items()}
    warm["test"] = {key: np.asarray(value)[:300] for key, value in test.items()}
    warm_path = root / "mosi-warm.pkl"
    with open(warm_path, "wb") as handle:
        pickle.dump(warm, handle, protocol=4)
    return path, warm_path


# -------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cpu, and cuda when present")
    parser.add_argument("--models", default="default,paper", help="default, paper (comma separated)")
    parser.add_argument("--batch-sizes", default=None, help="default 32,256 (quick: 32,128)")
    parser.add_argument("--n", type=int, default=None, help="samples for the default model (CPU 2048, CUDA 4096; quick 256)")
    parser.add_argument("--n-paper", type=int, default=None, help="samples for the paper-size model (CPU 256, CUDA 4096; quick 32)")
    parser.add_argument("--seq-len", type=int, default=20, help="time steps per modality of the synthetic data")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per measurement (default: torch's choice)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers of the interp path")
    parser.add_argument("--amp", action="store_true", help="also measure bf16 autocast (CUDA rows only)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (compile time included)")
    parser.add_argument("--mosi", choices=["auto", "yes", "no"], default="auto", help="10x CMU-MOSI test rows (auto: when present, not with --quick)")
    parser.add_argument("--mosi-path", type=Path, default=MOSI, help="the CMU-MOSI utterance pickle (default: ../shared/data/...)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in about a minute")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per measurement")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and checkpoints here")
    for hidden in ("--worker", "--ckpt", "--data", "--warm-data", "--out"):
        parser.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-amp", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-compile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.threads == 0:
            args.threads = None
        _worker(args)
        return 0

    import torch

    devices = ["cpu", "cuda"] if args.device == "auto" else [args.device]
    if not torch.cuda.is_available():
        if args.device == "cuda":
            raise SystemExit("--device cuda: CUDA is not available here")
        devices = [d for d in devices if d != "cuda"]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    batches = _ints(args.batch_sizes or ("32,128" if args.quick else "32,256"), "--batch-sizes")
    with_mosi = args.mosi == "yes" or (args.mosi == "auto" and args.mosi_path.is_file() and not args.quick)
    if with_mosi and not args.mosi_path.is_file():
        raise SystemExit(f"--mosi yes: {args.mosi_path} not found")

    def n_for(model: str, device: str) -> int:
        if model == "paper":
            return args.n_paper or (32 if args.quick else 4096 if device == "cuda" else 256)
        return args.n or (256 if args.quick else 4096 if device == "cuda" else 2048)

    root = args.workdir or Path(tempfile.mkdtemp(prefix="interp-bench-extract-"))
    root.mkdir(parents=True, exist_ok=True)
    args.root = str(root)
    gpu = torch.cuda.get_device_name(0) if "cuda" in devices else None
    print(f"# bench/extract.py  torch {torch.__version__}  python {platform.python_version()}  cpus {os.cpu_count()}"
          f"  torch threads {args.threads or torch.get_num_threads()}" + (f"  gpu {gpu}" if gpu else ""))
    print(f"# synthetic data: dims text/audio/vision {DIMS}, T = {args.seq_len}; work dir {root}\n", flush=True)
    results = []
    try:
        warm = make_data(root, min(2 * max(batches), 512), args.seq_len, tag="warm")
        checkpoints = {}
        for model in models:
            checkpoints[model] = make_checkpoint(root, model, warm, MODELS[model])
        header_done = False
        for device in devices:
            modes: list[tuple[str | None, bool]] = [(None, False)]
            if args.amp and device == "cuda":
                modes.append(("bf16", False))
            if args.compile:
                modes.append((None, True))
            for model in models:
                ckpt, params = checkpoints[model]
                n = n_for(model, device)
                data = make_data(root, n, args.seq_len)
                for amp, compile in modes:
                    for batch in batches:
                        row = {"device": device, "model": model, "params": params, "T": args.seq_len, "batch": batch, "n": n,
                               "mode": "bf16" if amp else "compile" if compile else "fp32"}
                        row["interp"] = measure("interp", ckpt, data, warm, device, batch, args, amp, compile)
                        row["naive"] = measure("naive", ckpt, data, warm, device, batch, args, amp, False)
                        results.append(row)
                        _print_row(row, not header_done)
                        header_done = True
            if with_mosi:
                mosi, mosi_warm = make_mosi_tiled(root, args.mosi_path)
                ckpt, params = make_checkpoint(root, "mosi-default", mosi_warm, MODELS["default"])
                row = {"device": device, "model": "default/MOSI x10", "params": params, "T": 1, "batch": 256, "n": 7520, "mode": "fp32"}
                row["interp"] = measure("interp", ckpt, mosi, mosi_warm, device, 256, args)
                row["naive"] = measure("naive", ckpt, mosi, mosi_warm, device, 256, args)
                results.append(row)
                _print_row(row, not header_done)
                header_done = True
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    print("\nsamples/s: end to end (checkpoint and data loading, forward passes, parquet written); ratio = interp / naive;"
          "\nRSS: peak resident memory of the measuring process, and in brackets its growth during the timed run.")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


COLUMNS = (
    ("device", 6), ("model", 16), ("params", 10), ("T", 3), ("batch", 5), ("n", 6), ("mode", 7),
    ("interp/s", 9), ("naive/s", 8), ("ratio", 6), ("interp RSS MB", 15), ("naive RSS MB", 15), ("CUDA MB i/n", 13),
)


def _print_row(row: dict, header: bool) -> None:
    if header:
        print(" | ".join(name.rjust(width) for name, width in COLUMNS))
        print("-|-".join("-" * width for _, width in COLUMNS))
    interp, naive = row["interp"], row["naive"]

    def rate(result: dict) -> str:
        return f"{result['samples_per_s']:,.0f}" if "samples_per_s" in result else "error"

    def rss(result: dict) -> str:
        if "peak_rss_mb" not in result:
            return "-"
        return f"{result['peak_rss_mb']:,.0f} (+{max(result['peak_rss_mb'] - result['base_rss_mb'], 0):,.0f})"

    ratio = f"{interp['samples_per_s'] / naive['samples_per_s']:.1f}x" if "samples_per_s" in interp and "samples_per_s" in naive else "-"
    cuda = (
        f"{interp['cuda_peak_mb']:,.0f}/{naive['cuda_peak_mb']:,.0f}"
        if interp.get("cuda_peak_mb") is not None and naive.get("cuda_peak_mb") is not None
        else "-"
    )
    cells = [row["device"], row["model"], f"{row['params']:,}", str(row["T"]), str(row["batch"]), f"{row['n']:,}", row["mode"],
             rate(interp), rate(naive), ratio, rss(interp), rss(naive), cuda]
    print(" | ".join(cell.rjust(width) for cell, (_, width) in zip(cells, COLUMNS)), flush=True)
    for name, result in (("interp", interp), ("naive", naive)):
        if "error" in result:
            print(f"    {name} failed: {result['error']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
