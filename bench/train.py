"""Training-step and inference speed of the encoders: the new path (interp.model) against the old path.

The old path is the encoder code of interp/model.py before issue 15, vendored in ``bench/_old_encoders.py``
(``nn.TransformerEncoderLayer`` / ``nn.MultiheadAttention(batch_first=True)``), run with the *same weights*.
Both run in one process, interleaved repetition by repetition, on random MOSEI-shaped inputs
(dims 300/74/35, T = 20). Rows per model size and batch size:

* ``train``: one optimiser step (forward, cross-entropy, backward, clip 1.0, Adam) in training mode;
  old path with encoder dropout 0.1 (what ``interp train`` always did before) and 0.0 (the authors' released
  run), new path at the authors' configuration (encoder dropouts 0.0, concept dropout 0.5) with
  ``interp.train.adam`` (fused), and the new path with the old Adam (``new, loop Adam``: torch's default, a Python
  loop over the parameters on the CPU). The old paths clip over ``model.parameters()`` walked each step, as
  ``interp train``'s loop did; the new paths over the parameters listed once, as it does now.
* ``forward``: the forward-only pass in eval mode under ``torch.inference_mode`` (the limit of extraction).

Then ``interp extract`` end to end on a synthetic test split of the same shape, against a forward-only pass over
the same samples with the same checkpoint (interleaved): the extraction overhead, split into the fixed start-up
seconds (``interp.extraction.prepare``: checkpoint and data read and checked) and the steady-state ratio (forward
samples/s over the samples/s of the rest of ``extract``: batches, routing outputs, parquet). Times are the median over
``--reps``; the load average is printed (the machine may be shared). ``--extract-k K`` adds K seeds' checkpoints of
each model: one ``extract_many`` call (the data file read once) against K ``extract`` calls and K forward-only passes.
Usage: ``python bench/train.py [--threads 1] [--models default,paper] [--batch-sizes 32,256] [--reps 3]
[--device cpu|cuda|auto] [--extract-k K] [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import cProfile
import copy
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from _old_encoders import old_model  # noqa: E402
from interp.model import ModelConfig, RoutingModel  # noqa: E402
from interp.train import adam  # noqa: E402

DIMS = (300, 74, 35)
SIZES = {
    "default": dict(d_model=32, n_heads=4, n_layers=2),
    "paper": dict(d_model=200, n_heads=20, n_layers=7),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inputs(batch: int, seq_len: int, device: torch.device) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = tuple(torch.randn(batch, seq_len, d, generator=g).to(device) for d in DIMS)
    return x, torch.randint(0, 7, (batch,), generator=g).to(device)


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, x, y, amp: torch.dtype | None,
                listed: bool) -> None:
    """One step of interp's train loop; ``listed``: clip over the parameters listed once (interp.train now), not
    over ``model.parameters()`` walked again each step (interp.train before)."""
    model.train()
    with torch.autocast(device_type=y.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        out = model(*x)
    loss = nn.functional.cross_entropy(out.logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(opt.param_groups[0]["params"] if listed else model.parameters(), 1.0)
    opt.step()


def _forward(model: nn.Module, x, amp: torch.dtype | None) -> None:
    model.eval()
    with torch.inference_mode(), torch.autocast(device_type=x[0].device.type, dtype=amp or torch.float32,
                                                enabled=amp is not None):
        model(*x)


def time_paths(paths: dict[str, tuple], x, y, reps: int, device: torch.device, amp: torch.dtype | None) -> dict:
    """Median ms of each path, interleaved: rep 1 of every path, then rep 2, ... (one warm-up each)."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for rep in range(reps + 1):
        for name, (kind, model, opt) in paths.items():
            _sync(device)
            start = time.perf_counter()
            if kind == "train":
                _train_step(model, opt, x, y, amp, listed=not name.startswith("old"))
            else:
                _forward(model, x, amp)
            _sync(device)
            if rep:
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(v) for name, v in times.items()}


def _test_split_data(workdir: Path, n: int, seq_len: int) -> Path:
    """A synthetic sentiment data file in ``workdir`` with a test split of ``n`` samples (written once)."""
    from interp.synth import write_synthetic

    data = workdir / f"data-{n}-{seq_len}.pkl"
    if not data.exists():
        write_synthetic(data, task="sentiment", n_train=64, n_valid=32, n_test=n, seq_len=seq_len, dims=DIMS, seed=0)
    return data


def extraction_overhead(config_size: dict, n: int, seq_len: int, batch: int, device: str, workdir: Path,
                        reps: int, profile: bool = False) -> dict[str, float]:
    """``extract`` and ``forward`` samples/s, ``startup`` s and ``steady`` samples/s on a synthetic test split of
    ``n`` samples.

    Interleaved: each repetition runs the forward-only pass over the same ``n`` samples (the checkpoint's model,
    eval, ``inference_mode``, batches of ``batch``), then ``interp.extraction.prepare`` alone (the fixed start-up:
    checkpoint and data read and checked), then ``interp extract``; one warm-up of each; medians. ``steady`` is
    ``n`` over (extract seconds - start-up seconds) of the same repetition. On CUDA, ``streamed`` is the samples/s
    of one more ``interp extract`` per repetition with ``resident=False`` (each batch copied to the device, as
    before :mod:`interp.feed`). ``profile``: then one more ``extract``
    under cProfile, its calls in ``interp`` and torch's copies printed by cumulative time (the main thread: on a
    GPU the waits for the device show in the copies of the outputs to the CPU).
    """
    from interp.extract import extract
    from interp.extraction import prepare
    from interp.checkpoint import load_checkpoint
    from interp.train import train

    data = _test_split_data(workdir, n, seq_len)
    ckpt = workdir / f"model-{config_size['d_model']}-{config_size['n_layers']}.pt"
    if not ckpt.exists():
        train(data, ckpt, epochs=1, device="cpu", progress=False, **config_size)
    model = load_checkpoint(ckpt, device).model
    x = [torch.randn(n, seq_len, d, device=device) for d in DIMS]
    fwd, ext, startup, steady, streamed = [], [], [], [], []
    for i in range(reps + 1):
        _sync(torch.device(device))
        start = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, n, batch):
                model(*(t[s : s + batch] for t in x))
        _sync(torch.device(device))
        mid = time.perf_counter()
        prepare(ckpt, data, "test", workdir / f"run-{i}", batch, torch.device(device), None, workdir)
        ready = time.perf_counter()
        extract(ckpt, data, split="test", out=workdir / f"run-{i}", batch_size=batch, device=device, force=True,
                progress=False)
        end = time.perf_counter()
        if device == "cuda":  # the same extraction with the features streamed batch by batch (interp.feed)
            extract(ckpt, data, split="test", out=workdir / f"run-{i}", batch_size=batch, device=device, force=True,
                    progress=False, resident=False)
            if i:
                streamed.append(n / (time.perf_counter() - end))
        if i:
            fwd.append(n / (mid - start))
            ext.append(n / (end - ready))
            startup.append(ready - mid)
            steady.append(n / (end - ready - startup[-1]))
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(extract, ckpt, data, split="test", out=workdir / "run-profiled", batch_size=batch,
                         device=device, force=True, progress=False)
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(
            r"interp/(extract|extraction|runwriter|background_writer|checkpoint|data|pickles)\.py|model\.py:\d+\(forward"
            r"|method 'cpu'|method 'to'|method 'numpy'|pin_memory|write_table|acquire", 25)
    return dict(extract=statistics.median(ext), forward=statistics.median(fwd), startup=statistics.median(startup),
                steady=statistics.median(steady), streamed=statistics.median(streamed) if streamed else float("nan"))


def seeds_extraction_overhead(config_size: dict, n: int, seq_len: int, batch: int, device: str, workdir: Path,
                              reps: int, k: int) -> dict[str, float]:
    """Seconds to extract ``k`` checkpoints (seeds 0..k-1, one data file) of ``n`` test samples: ``many``, one
    ``interp.extract_many.extract_many`` call (the data read once); ``separate``, ``k`` calls of
    ``interp.extract.extract`` (the data read ``k`` times, as ``extract_many`` did before); ``forward``, the ``k``
    models' forward-only passes over the same samples. Interleaved, one warm-up round, medians of wall seconds;
    ``*_cpu``: CPU seconds of the process (all threads; the data file's hash runs in a second thread), which a
    machine shared with other work disturbs less."""
    from interp.checkpoint import load_checkpoint
    from interp.extract import extract
    from interp.extract_many import extract_many
    from interp.train import train

    data = _test_split_data(workdir, n, seq_len)
    ckpts = [workdir / f"seeds-{config_size['d_model']}" / f"model-seed{seed}.pt" for seed in range(k)]
    for seed, ckpt in enumerate(ckpts):
        if not ckpt.exists():
            train(data, ckpt, epochs=1, device="cpu", progress=False, seed=seed, **config_size)
    models = [load_checkpoint(ckpt, device).model for ckpt in ckpts]
    x = [torch.randn(n, seq_len, d, device=device) for d in DIMS]
    times: dict[str, list[float]] = {}
    for i in range(reps + 1):
        marks = [(time.perf_counter(), time.process_time())]
        _sync(torch.device(device))
        with torch.inference_mode():
            for model in models:
                for s in range(0, n, batch):
                    model(*(t[s : s + batch] for t in x))
        _sync(torch.device(device))
        marks.append((time.perf_counter(), time.process_time()))
        extract_many(ckpts, data, split="test", out=workdir / "many", batch_size=batch, device=device, force=True,
                     progress=False)
        marks.append((time.perf_counter(), time.process_time()))
        for ckpt in ckpts:
            extract(ckpt, data, split="test", out=workdir / "separate" / ckpt.stem, batch_size=batch, device=device,
                    force=True, progress=False)
        marks.append((time.perf_counter(), time.process_time()))
        for name, before, after in zip(("forward", "many", "separate"), marks, marks[1:]):
            if i:
                times.setdefault(name, []).append(after[0] - before[0])
                times.setdefault(f"{name}_cpu", []).append(after[1] - before[1])
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (pinned; default %(default)s)")
    parser.add_argument("--models", default="default,paper")
    parser.add_argument("--batch-sizes", default="32,256")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=20)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (cpu, plus cuda when present)")
    parser.add_argument("--phases", default="train,forward", help="rows to time (default: %(default)s)")
    parser.add_argument("--no-extract", action="store_true", help="skip the extraction-overhead rows")
    parser.add_argument("--extract-n", default="default=4096,paper=512",
                        help="test-split samples of the extraction rows per model (default: %(default)s)")
    parser.add_argument("--extract-k", type=int, default=0, metavar="K",
                        help="also extract K seeds' checkpoints of each model: extract_many against K separate "
                             "extract calls and K forward-only passes")
    parser.add_argument("--profile-extract", action="store_true",
                        help="after each extraction row, profile one more interp extract (cProfile, main thread)")
    parser.add_argument("--quick", action="store_true", help="default model, B = 32, 1 rep")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = ["default"] if args.quick else args.models.split(",")
    batches = [32] if args.quick else [int(b) for b in args.batch_sizes.split(",")]
    reps = 1 if args.quick else args.reps
    devices = ["cpu"] if args.device == "cpu" else (["cuda"] if args.device == "cuda" else
                                                    ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    rows = []
    header = f"{'device':<12} {'model':<8} {'B':>4} {'phase':<8} {'path':<16} {'ms/batch':>10} {'samples/s':>10} {'old/new':>8}"
    print(header)
    for device_name in devices:
        device = torch.device(device_name)
        modes = [("fp32", None)]
        if device.type == "cuda":
            modes += [("tf32", None), ("bf16", torch.bfloat16)]
        for mode, amp in modes:
            if device.type == "cuda":
                torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
                torch.backends.cudnn.allow_tf32 = mode == "tf32"
            for size_name in models:
                config = ModelConfig(task="sentiment", variant="routing", input_dims=DIMS, n_concepts=7,
                                     **SIZES[size_name])
                torch.manual_seed(0)
                new = RoutingModel(config).to(device)
                olds = {"old drop 0.1": old_model(new, dropout=0.1), "old drop 0.0": old_model(new, dropout=0.0)}
                for batch in batches:
                    x, y = _inputs(batch, args.seq_len, device)
                    # the old paths with the Adam interp used then (torch's default: a Python loop on the CPU),
                    # the new path with interp.train.adam (fused), and once more with the old Adam
                    train_paths = {name: ("train", m, torch.optim.Adam(m.parameters(), lr=1e-4))
                                   for name, m in {**olds, "new, loop Adam": copy.deepcopy(new)}.items()}
                    train_paths["new"] = ("train", new, adam(new.parameters(), 1e-4, device))
                    fwd_paths = {"old": ("forward", olds["old drop 0.0"], None), "new": ("forward", new, None)}
                    for phase, paths in (("train", train_paths), ("forward", fwd_paths)):
                        if phase not in args.phases.split(","):
                            continue
                        ms = time_paths(paths, x, y, reps, device, amp)
                        for name, value in ms.items():
                            ratio = ms["old drop 0.0" if phase == "train" else "old"] / ms["new"]
                            row = dict(device=f"{device_name}/{mode}", model=size_name, batch=batch, phase=phase,
                                       path=name, ms=value, samples_s=batch * 1000 / value,
                                       old_over_new=ratio if name == "new" else None)
                            rows.append(row)
                            r = f"{ratio:8.2f}" if name == "new" else f"{'':8}"
                            print(f"{row['device']:<12} {size_name:<8} {batch:>4} {phase:<8} {name:<16} "
                                  f"{value:>10.1f} {row['samples_s']:>10.1f} {r}", flush=True)
    if not args.no_extract:
        print("\nextraction overhead: forward-only samples/s / interp extract samples/s (interleaved, B = 256); "
              "start-up = interp.extraction.prepare (checkpoint + data read), steady = forward samples/s / "
              "samples/s of the rest of extract")
        with tempfile.TemporaryDirectory() as tmp:
            for device_name in devices:
                if device_name == "cuda":  # fp32 extraction, TF32 off (what interp extract does by default)
                    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
                for size_name in models:
                    n = int(dict(item.split("=") for item in args.extract_n.split(",")).get(size_name, "512"))
                    got = extraction_overhead(SIZES[size_name], n, args.seq_len, 256, device_name, Path(tmp), reps,
                                              profile=args.profile_extract)
                    rate, limit = got["extract"], got["forward"]
                    rows.append(dict(device=f"{device_name}/fp32", model=size_name, batch=256, n=n, phase="extract",
                                     extract_samples_s=rate, forward_samples_s=limit, overhead=limit / rate,
                                     startup_s=got["startup"], steady_overhead=limit / got["steady"],
                                     streamed_overhead=limit / got["streamed"]))
                    print(f"{device_name}/fp32 {size_name:<8} n={n} B=256: extract {rate:.1f} samples/s, forward-only "
                          f"{limit:.1f} samples/s, overhead x{limit / rate:.2f} (forward {n / limit:.2f} s, extract "
                          f"{n / rate:.2f} s = start-up {got['startup']:.3f} s + steady x{limit / got['steady']:.2f})"
                          + (f"; streamed x{limit / got['streamed']:.2f}" if device_name == "cuda" else ""), flush=True)
                    if args.extract_k > 1:
                        k = args.extract_k
                        got = seeds_extraction_overhead(SIZES[size_name], n, args.seq_len, 256, device_name, Path(tmp),
                                                        reps, k)
                        rows.append(dict(device=f"{device_name}/fp32", model=size_name, batch=256, n=n, k=k,
                                         phase="extract seeds", **{f"{key}_s": v for key, v in got.items()}))
                        print(f"{device_name}/fp32 {size_name:<8} n={n} B=256, {k} seeds (wall s / CPU s): forward-only "
                              f"{got['forward']:.2f} / {got['forward_cpu']:.2f}; extract_many {got['many']:.2f} / "
                              f"{got['many_cpu']:.2f} (x{got['many'] / got['forward']:.2f} / "
                              f"x{got['many_cpu'] / got['forward_cpu']:.2f}); {k} extract calls {got['separate']:.2f} / "
                              f"{got['separate_cpu']:.2f} (x{got['separate'] / got['forward']:.2f} / "
                              f"x{got['separate_cpu'] / got['forward_cpu']:.2f})", flush=True)
    print(f"load average at the end {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
