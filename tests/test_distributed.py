"""Distributed extraction: `torchrun ... interp extract` on CPU (gloo, 2 processes) equals the single-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interp.distributed import ShardSampler, shard_bounds
from interp.runs import routing_files, samples_files
from interp.schema import FEATURES

REPO = Path(__file__).resolve().parents[1]

dist = pytest.importorskip("torch.distributed")
needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with the gloo backend is not available"
)

FAIL_ON_RANK_1 = """
import sys
from interp import runwriter
from interp.cli import main

original = runwriter.RunWriter.write

def write(self, batch):
    if self.routing_path.name == "routing-rank1.parquet":
        raise RuntimeError("simulated failure on rank 1")
    original(self, batch)

runwriter.RunWriter.write = write
sys.exit(main(sys.argv[1:]))
"""


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_shards_partition_the_samples() -> None:
    for n in (0, 1, 2, 5, 300, 301):
        for world in (1, 2, 3, 8):
            chunks = [list(ShardSampler(n, rank, world)) for rank in range(world)]
            assert [i for chunk in chunks for i in chunk] == list(range(n))  # exact partition, in order, no padding
            sizes = [len(ShardSampler(n, rank, world)) for rank in range(world)]
            assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n
    assert shard_bounds(10, 1, 3) == (3, 6)
    with pytest.raises(ValueError):
        shard_bounds(10, 3, 3)


@needs_gloo
def test_torchrun_extract_equals_single_process(trained_checkpoint: Path, extracted_run: Path, tmp_path: Path) -> None:
    from interp.stats import StatsOptions, compute_global_stats

    out = tmp_path / "runs" / "dist"
    done = _torchrun(
        ["-m", "interp.cli", "extract", "--ckpt", str(trained_checkpoint), "--split", "test", "--out", str(out),
         "--device", "cpu", "--batch-size", "32", "--quiet"],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    # one shard per rank, no single-file tables, meta.json lists the shards
    names = sorted(p.name for p in out.iterdir())
    assert names == ["meta.json", "routing-rank0.parquet", "routing-rank1.parquet", "samples-rank0.parquet", "samples-rank1.parquet"]
    assert [p.name for p in routing_files(out)] == ["routing-rank0.parquet", "routing-rank1.parquet"]
    meta = json.loads((out / "meta.json").read_text())
    single_meta = json.loads((extracted_run / "meta.json").read_text())
    assert meta["shards"] == ["routing-rank0.parquet", "routing-rank1.parquet"]
    assert meta["samples"] == ["samples-rank0.parquet", "samples-rank1.parquet"]
    assert meta["world_size"] == 2 and sum(meta["shard_sizes"]) == meta["n"] == single_meta["n"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folder left

    # the union of the shards is the single-process run: same samples (each once), same values
    single_samples = pd.read_parquet(extracted_run / "samples.parquet")
    shard_samples = pd.concat([pd.read_parquet(p) for p in samples_files(out)], ignore_index=True)
    assert shard_samples["sample_id"].tolist() == single_samples["sample_id"].tolist()  # rank order = sample order
    assert shard_samples["sample_id"].is_unique
    numeric = [c for c in single_samples.columns if c.startswith(("logit_", "prob_", "p_"))]
    np.testing.assert_allclose(shard_samples[numeric].to_numpy(), single_samples[numeric].to_numpy(), atol=1e-6)
    for column in ("label", "pred", "split", "row", "correct"):
        assert shard_samples[column].tolist() == single_samples[column].tolist(), column

    keys = ["sample_id", "feature", "concept"]
    single = pd.read_parquet(extracted_run / "routing.parquet").astype({"feature": str, "concept": str})
    union = pd.concat([pd.read_parquet(p) for p in routing_files(out)], ignore_index=True).astype({"feature": str, "concept": str})
    assert len(union) == len(single) == single_meta["n"] * len(FEATURES) * single_meta["J"]
    single = single.sort_values(keys, kind="stable").reset_index(drop=True)
    union = union.sort_values(keys, kind="stable").reset_index(drop=True)
    assert union[keys].equals(single[keys])
    for column in ("p", "r", "pr", "contribution"):
        np.testing.assert_allclose(union[column].to_numpy(), single[column].to_numpy(), atol=1e-6, err_msg=column)

    # the global statistics read the directory of shards and equal the single-process run's
    for options in (StatsOptions(), StatsOptions(group="label")):
        sharded, whole = compute_global_stats(out, options), compute_global_stats(extracted_run, options)
        assert sharded.n_samples == whole.n_samples == single_meta["n"]
        a, b = sharded.cells, whole.cells
        assert a[["quantity", "feature", "concept", "n"]].equals(b[["quantity", "feature", "concept", "n"]])
        for column in ("mean", "std", "low", "high"):
            np.testing.assert_allclose(a[column].to_numpy(), b[column].to_numpy(), atol=1e-6, equal_nan=True, err_msg=column)
        assert (a["significant"] == b["significant"]).all() and (a["bold"] == b["bold"]).all()


@needs_gloo
def test_failure_on_one_rank_leaves_no_run(trained_checkpoint: Path, tmp_path: Path) -> None:
    script = tmp_path / "fail_on_rank1.py"
    script.write_text(FAIL_ON_RANK_1)
    runs = tmp_path / "runs"
    runs.mkdir()
    done = _torchrun(
        [str(script), "extract", "--ckpt", str(trained_checkpoint), "--split", "valid", "--out", str(runs / "x"),
         "--device", "cpu", "--batch-size", "64", "--quiet"],
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "rank 1 failed" in done.stderr or "simulated failure on rank 1" in done.stderr, done.stderr[-2000:]
    assert list(runs.iterdir()) == []  # neither the run nor its temp folder
