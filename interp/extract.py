"""`interp extract`: run a checkpoint over a data split and write the run directory.

One forward pass per batch under ``torch.inference_mode()`` in eval mode gives the logits and, from the same
pass, each sample's p_i (7,), r_ij (7, J) and contributions p_i r_ij <o_j, f_i W_ij> (7, J) (see
:mod:`interp.extraction`). Batches stream into parquet row groups (memory stays flat in the number of samples),
written by a second thread while the next batch runs where a core is spare (:mod:`interp.background_writer`),
inside a temp folder that is renamed into place at the end (see :mod:`interp.runwriter`); under ``torchrun`` each
rank writes its own shard.
"""

from __future__ import annotations

import shutil
import time
import uuid
from contextlib import closing
from pathlib import Path

import torch

from interp import distributed
from interp.background_writer import BackgroundWriter
from interp.devices import resolve_device, spare_core
from interp.errors import InterpError
from interp.extraction import DataSets, iterate_batches, open_writer, prepare, run_meta
from interp.progress import progress_bar
from interp.runs import DEFAULT_RUNS_ROOT
from interp.runwriter import DEFAULT_ROW_GROUP_ROWS, check_target, finalize_run, make_temp_dir
from interp.schema import ROUTING_FILE, SAMPLES_FILE


def extract(
    ckpt: Path | str,
    data: Path | str | None = None,
    split: str | None = None,
    out: Path | str | None = None,
    batch_size: int = 256,
    device: str = "auto",
    force: bool = False,
    amp: str | None = None,
    num_workers: int = 0,
    compile: bool = False,
    progress: bool = True,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    runs_root: Path | str = DEFAULT_RUNS_ROOT,
    format: str | None = None,
    resident: bool | None = None,
    datasets: DataSets | None = None,
) -> Path:
    """Extract every sample's interpretation values of ``split`` into a run directory; returns its path.

    ``data`` and ``split`` default to what the checkpoint recorded (its data file; the test split).
    ``amp="bf16"`` autocasts the encoders on CUDA; p, r and contributions are always computed in fp32.
    ``resident``: the split's features stay on the device for the whole run (:mod:`interp.feed`); None: on CUDA
    where they take at most a quarter of its free memory (one process only: under ``torchrun`` each rank streams
    its chunk).
    ``format``: the data layout (``mult`` / ``mmsa``; None detects it). Padding is masked for checkpoints trained
    with it (:func:`interp.checkpoint.masks_padding`). ``datasets``: data sets already read, reused and filled
    (:func:`interp.extraction.read_data`; ``extract_many`` passes one to all its checkpoints).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank extracts its own contiguous chunk of the samples into
    ``routing-rank<k>.parquet`` / ``samples-rank<k>.parquet`` and rank 0 writes meta.json last
    (see :func:`_extract_distributed`); the result is the same run directory, sharded.
    """
    world = distributed.world_from_env()
    if world is not None:
        return _extract_distributed(
            world, ckpt, data=data, split=split, out=out, batch_size=batch_size, device=device, force=force,
            amp=amp, num_workers=num_workers, compile=compile, progress=progress, row_group_rows=row_group_rows,
            runs_root=runs_root, format=format, datasets=datasets,
        )
    torch_device = resolve_device(device)
    loaded, dataset, source, out_dir = prepare(
        ckpt, data, split, out, batch_size, torch_device, amp, runs_root, format, datasets
    )
    model = torch.compile(loaded.model) if compile else loaded.model
    writer = open_writer(loaded, source, out_dir, force, row_group_rows)
    started = time.perf_counter()
    bar_context = progress_bar(source.n, f"extract {source.name}", enabled=progress, unit="samples")
    # closing(): on an error the batch generator ends at once, freeing the features it keeps on the device
    feed = iterate_batches(loaded, source, torch_device, batch_size, num_workers, amp, model=model, resident=resident)
    with writer, BackgroundWriter(writer, in_thread=spare_core(torch_device)) as background, bar_context as bar, \
            closing(feed) as batches:
        for batch in batches:
            background.write(batch)
            bar.advance(batch.size)
            bar.update(f"{background.n / max(time.perf_counter() - started, 1e-9):,.0f} samples/s")
        background.close()
        meta = run_meta(loaded, dataset, source, writer.n, amp, batch_size)
        return writer.finish(meta, force=force)


def shard_names(world_size: int) -> tuple[list[str], list[str]]:
    """File names of a distributed run's shards: (routing-rank<k>.parquet..., samples-rank<k>.parquet...)."""
    routing = [f"{Path(ROUTING_FILE).stem}-rank{k}{Path(ROUTING_FILE).suffix}" for k in range(world_size)]
    samples = [f"{Path(SAMPLES_FILE).stem}-rank{k}{Path(SAMPLES_FILE).suffix}" for k in range(world_size)]
    return routing, samples


def _extract_distributed(
    world: distributed.World,
    ckpt: Path | str,
    *,
    data: Path | str | None,
    split: str | None,
    out: Path | str | None,
    batch_size: int,
    device: str,
    force: bool,
    amp: str | None,
    num_workers: int,
    compile: bool,
    progress: bool,
    row_group_rows: int,
    runs_root: Path | str,
    format: str | None = None,
    datasets: DataSets | None = None,
) -> Path:
    """One rank of ``torchrun ... interp extract``: extract this rank's shard; rank 0 completes the run.

    1. Every rank checks the options and loads the checkpoint and the data on its device (gloo on CPU; NCCL on
       ``cuda:LOCAL_RANK``); all ranks agree that this worked before any file is written.
    2. Rank 0 draws a token and broadcasts it, so all ranks use the same hidden temp folder beside the target.
    3. Rank k extracts the samples of :class:`interp.distributed.ShardSampler` (a contiguous chunk; the chunks
       partition the samples exactly, no padding) into ``samples-rank<k>.parquet`` and ``routing-rank<k>.parquet``.
    4. The ranks gather their counts and errors; after a barrier rank 0 writes meta.json (``shards``, ``samples``,
       ``world_size``, ``shard_sizes``) and renames the folder into place. If any rank failed, rank 0 removes the
       temp folder and every rank raises: no run directory appears.
    """
    torch_device = distributed.resolve_rank_device(device, world)
    with distributed.process_group(world, torch_device):
        loaded = dataset = source = out_dir = None
        error: BaseException | None = None
        try:
            loaded, dataset, source, out_dir = prepare(
                ckpt, data, split, out, batch_size, torch_device, amp, runs_root, format, datasets
            )
            check_target(out_dir, force)
        except Exception as exc:  # every rank must reach the exchange below, or the others would wait forever
            error = exc
        distributed.raise_if_any_failed(error, "loading the checkpoint and the data")
        assert loaded is not None and dataset is not None and source is not None and out_dir is not None

        token = distributed.broadcast_object(uuid.uuid4().hex[:12] if world.is_main else None)
        temp_dir = make_temp_dir(out_dir, token=f"dist-{token}")
        sampler = distributed.ShardSampler(source.n, world.rank, world.size)
        model = torch.compile(loaded.model) if compile else loaded.model
        count = 0
        try:
            writer = open_writer(loaded, source, out_dir, force, row_group_rows, temp_dir=temp_dir, rank=world.rank)
            started = time.perf_counter()
            description = f"extract {source.name} (rank 0 of {world.size})"
            bar_context = progress_bar(len(sampler), description, enabled=progress and world.is_main, unit="samples")
            background = BackgroundWriter(writer, in_thread=spare_core(torch_device))
            feed = iterate_batches(
                loaded, source, torch_device, batch_size, num_workers, amp, model=model, sampler=sampler
            )
            with writer, background, bar_context as bar, closing(feed) as batches:
                for batch in batches:
                    background.write(batch)
                    bar.advance(batch.size)
                    bar.update(f"{background.n / max(time.perf_counter() - started, 1e-9):,.0f} samples/s per rank")
                background.close()
                writer.close_tables()
                count = writer.n
        except Exception as exc:
            error = exc
        except BaseException:  # Ctrl-C, SystemExit: no collective any more; rank 0 removes the temp folder
            if world.is_main:
                shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        try:
            distributed.raise_if_any_failed(error, "extracting its shard")
        except BaseException:
            if world.is_main:
                shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        counts = distributed.all_gather_objects(count)
        distributed.barrier()  # every shard is closed before rank 0 completes the run

        final_error: Exception | None = None
        if world.is_main:
            try:
                routing_names, samples_names = shard_names(world.size)
                meta = run_meta(
                    loaded, dataset, source, int(sum(counts)), amp, batch_size, shards=routing_names, samples=samples_names
                )
                meta["world_size"] = world.size
                meta["shard_sizes"] = [int(c) for c in counts]
                if sum(counts) != source.n:
                    raise InterpError(f"the shards hold {sum(counts)} samples but the split has {source.n}")
                finalize_run(temp_dir, out_dir, meta, force=force)
            except Exception as exc:
                shutil.rmtree(temp_dir, ignore_errors=True)
                final_error = exc
        outcome = distributed.broadcast_object(None if final_error is None else str(final_error))
        if final_error is not None:
            raise final_error
        if outcome is not None:
            raise distributed.DistributedError(f"rank 0 failed while completing the run: {outcome}")
        return out_dir
