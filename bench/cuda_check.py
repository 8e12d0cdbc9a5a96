"""CUDA check (not a test): train, resume, evaluate and extract on a GPU, and compare with the CPU.

    python bench/cuda_check.py [--out DIR]

Prints a table: each step's wall time on CUDA, and the largest difference between the CUDA (fp32 and bf16
autocast, with the features kept on the device as ``interp extract`` does there, and fp32 streamed batch by batch)
and CPU extractions of the same checkpoint, whether the two fp32 CUDA runs are the same bit for bit, plus the
contribution identity on the CUDA run.
Needs a CUDA device; exits 0 with a message when there is none.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temp folder)")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to check")
        return 0

    from interp.ensemble_train import train_vectorised
    from interp.evaluate import evaluate
    from interp.extract import extract
    from interp.synth import write_synthetic
    from interp.train import train

    work = args.out or Path(tempfile.mkdtemp(prefix="interp-cuda-"))
    rows: list[tuple[str, str]] = [("device", torch.cuda.get_device_name(0)), ("torch", torch.__version__)]

    def timed(label: str, fn):  # type: ignore[no-untyped-def]
        torch.cuda.synchronize()
        start = time.perf_counter()
        value = fn()
        torch.cuda.synchronize()
        rows.append((f"{label} (s)", f"{time.perf_counter() - start:.2f}"))
        return value

    data = write_synthetic(work / "synth.pkl", n_train=2000, n_valid=400, n_test=600, seed=0).data_path
    ckpt = work / "model.pt"
    result = timed(f"train {args.epochs - 1} epochs on cuda", lambda: train(
        data, ckpt, epochs=args.epochs - 1, lr=1e-3, device="cuda", progress=False))
    result = timed("resume 1 more epoch on cuda", lambda: train(
        data, ckpt, epochs=args.epochs, lr=1e-3, device="cuda", resume=True, progress=False))
    rows.append(("epochs run after resume", str(result.epochs_run)))
    metrics = timed("eval on cuda", lambda: evaluate(ckpt, device="cuda").metrics)
    rows.append(("test acc7 / acc2", f"{metrics['acc7']:.3f} / {metrics['acc2']:.3f}"))
    runs = {}
    for name, device, amp, resident in (("cuda-fp32", "cuda", None, None), ("cuda-bf16", "cuda", "bf16", None),
                                        ("cuda-fp32-streamed", "cuda", None, False), ("cpu", "cpu", None, None)):
        runs[name] = timed(f"extract test on {name}", lambda: extract(
            ckpt, out=work / "runs" / name, device=device, amp=amp, force=True, progress=False, resident=resident))
    tables = {name: pd.read_parquet(run / "routing.parquet") for name, run in runs.items()}
    samples = {name: pd.read_parquet(run / "samples.parquet") for name, run in runs.items()}
    for name in ("cuda-fp32", "cuda-bf16", "cuda-fp32-streamed"):
        for column in ("p", "r", "contribution"):
            diff = np.abs(tables[name][column].to_numpy() - tables["cpu"][column].to_numpy()).max()
            rows.append((f"max |{name} - cpu| of {column}", f"{diff:.2e}"))
    same = all(pd.read_parquet(runs["cuda-fp32"] / f).equals(pd.read_parquet(runs["cuda-fp32-streamed"] / f))
               for f in ("samples.parquet", "routing.parquet"))
    rows.append(("cuda fp32: features on the device (default) == streamed, bit for bit", str(same)))
    routing = tables["cuda-fp32"]
    summed = routing.groupby(["sample_id", "concept"], observed=True, sort=False)["contribution"].sum().unstack()
    stored = samples["cuda-fp32"].set_index("sample_id")[[f"logit_{c}" for c in summed.columns]]
    identity = np.abs(summed.reindex(stored.index).to_numpy() - stored.to_numpy()).max()
    rows.append(("cuda fp32: max |sum of contributions - logit|", f"{identity:.2e}"))
    r_sum = np.abs(routing.groupby(["sample_id", "feature"], observed=True)["r"].sum().to_numpy() - 1).max()
    rows.append(("cuda fp32: max |sum_j r_ij - 1|", f"{r_sum:.2e}"))
    rows += _padded_heads_rows()
    seeds = [0, 1, 2]  # K seeds at once on the GPU against one by one: same models (concept dropout 0.5 on)
    one_by_one = timed(f"train seeds {seeds} one by one, 2 epochs", lambda: [train(
        data, work / f"s{s}.pt", seed=s, epochs=2, lr=1e-3, device="cuda", progress=False) for s in seeds])
    together = timed(f"train seeds {seeds} vectorised, 2 epochs", lambda: train_vectorised(
        data, [work / f"v{s}.pt" for s in seeds], seeds, epochs=2, lr=1e-3, device="cuda", progress=False))
    gap = max(abs(a["valid_loss"] - b["valid_loss"]) for x, y in zip(one_by_one, together)
              for a, b in zip(x.history, y.history, strict=True))
    rows.append(("vectorised vs one by one: max |valid loss diff|", f"{gap:.2e}"))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return 0


def _padded_heads_rows() -> list[tuple[str, str]]:
    """Heads of width 10 (the paper size's 200 / 20), zero-padded to 16 on CUDA for its fused SDPA kernels
    (:class:`interp.encoders.Attention`), against the CPU (not padded): eval logits and training gradients."""
    from interp.model import ModelConfig, RoutingModel

    config = ModelConfig(task="sentiment", variant="routing", input_dims=(30, 7, 5), n_concepts=7, d_model=20,
                         n_heads=2, n_layers=2, concept_dropout=0.0)
    torch.manual_seed(0)
    model = RoutingModel(config)
    gen = torch.Generator().manual_seed(1)
    x = [torch.randn(8, t, d, generator=gen) for t, d in ((9, 30), (6, 7), (4, 5))]
    lengths = torch.tensor([[9, 6, 4], [3, 6, 1], [9, 2, 4], [1, 1, 1]] * 2)
    target = torch.randint(0, 7, (8,), generator=gen)
    logits, grads = {}, {}
    for device in ("cpu", "cuda"):
        on = model.to(device)
        with torch.no_grad():
            logits[device] = on.eval()(*(t.to(device) for t in x), lengths, "start").logits.cpu()
        on.zero_grad(set_to_none=True)
        out = on.train()(*(t.to(device) for t in x), lengths, "start").logits
        torch.nn.functional.cross_entropy(out, target.to(device)).backward()
        grads[device] = torch.cat([p.grad.reshape(-1).cpu() for p in on.parameters()])
    return [("heads of width 10 (padded on cuda): max |cuda - cpu| of eval logits",
             f"{(logits['cuda'] - logits['cpu']).abs().max():.2e}"),
            ("heads of width 10 (padded on cuda): max |cuda - cpu| of gradients",
             f"{(grads['cuda'] - grads['cpu']).abs().max():.2e}")]


if __name__ == "__main__":
    raise SystemExit(main())
