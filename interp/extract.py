"""`interp extract`: run a checkpoint over a data split and write the run directory.

One forward pass per batch under ``torch.inference_mode()`` in eval mode gives the logits and, from the same
pass, each sample's p_i (7,), r_ij (7, J) and contributions p_i r_ij <o_j, f_i W_ij> (7, J). Batches stream
into parquet row groups (memory stays flat in the number of samples) inside a temp folder that is renamed
into place at the end (see :mod:`interp.runwriter`).
"""

from __future__ import annotations

import shutil
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset as TorchDataset, Sampler

from interp import distributed
from interp.data import Dataset, Split, get_split, load_dataset, seq_lens
from interp.errors import InterpError
from interp.outputs import check_not_input
from interp.progress import progress_bar
from interp.runs import DEFAULT_RUNS_ROOT
from interp.runwriter import DEFAULT_ROW_GROUP_ROWS, RunBatch, RunWriter, check_target, finalize_run, make_temp_dir
from interp.schema import AMP, FEATURES, ROUTING_FILE, SAMPLES_FILE, SPLITS
from interp.checkpoint import (
    LoadedModel, check_compatible, load_checkpoint, masks_padding, package_versions, resolve_data_path,
)
from interp.devices import resolve_device
from interp.targets import targets



@dataclass
class ExtractionSource:
    """The samples to extract: one split, or all splits one after another."""

    name: str
    parts: list[Split]

    @property
    def n(self) -> int:
        return sum(part.n for part in self.parts)

    @property
    def has_transcripts(self) -> bool:
        return all(part.transcripts is not None for part in self.parts)

    @property
    def has_modality_labels(self) -> bool:
        """True when every part holds CH-SIMS per-modality labels (``label_T``/``_A``/``_V`` in samples.parquet)."""
        return all(part.modality_labels is not None for part in self.parts)

    def lengths(self) -> tuple[np.ndarray | None, str]:
        """(N, 3) int64 real steps over all parts (full length where a part has none) and the padding side,
        or (None, "none") when no part is padded (all parts come from one file, so they share the side)."""
        sides = {part.padding for part in self.parts if part.lengths is not None}
        if not sides:
            return None, "none"
        full = [np.tile(np.array(seq_lens(part), dtype=np.int64), (part.n, 1)) for part in self.parts]
        stacked = [part.lengths if part.lengths is not None else whole for part, whole in zip(self.parts, full)]
        return np.concatenate(stacked).astype(np.int64), sorted(sides)[0]


class _SplitSamples(TorchDataset):
    """Index → (text (T_t,d_t), audio, vision, position) over the concatenated parts, as float32 tensors."""

    def __init__(self, parts: Sequence[Split]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [part.n for part in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        part = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return part, index - int(self.offsets[part])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        part, row = self.locate(index)
        split = self.parts[part]
        return (
            torch.from_numpy(np.asarray(split.text[row], dtype=np.float32)),
            torch.from_numpy(np.asarray(split.audio[row], dtype=np.float32)),
            torch.from_numpy(np.asarray(split.vision[row], dtype=np.float32)),
            index,
        )

    def __getitems__(self, indices: list[int]) -> "_Batch":
        """A whole batch at once by numpy fancy indexing (no per-sample Python work); :func:`_collate` passes it on."""
        index = np.asarray(indices, dtype=np.int64)
        if len(index) == 0:
            return _Batch(*(torch.empty(0) for _ in range(3)), torch.empty(0, dtype=torch.int64))
        parts = np.searchsorted(self.offsets, index, side="right") - 1
        arrays = []
        for name in ("text", "audio", "vision"):
            if (parts == parts[0]).all():
                split = self.parts[int(parts[0])]
                values = np.asarray(getattr(split, name)[index - self.offsets[parts[0]]], dtype=np.float32)
            else:  # a batch across two splits (split "all"): the same rows, gathered part by part
                values = np.stack([np.asarray(getattr(self.parts[p], name)[i - self.offsets[p]], dtype=np.float32)
                                   for p, i in zip(parts.tolist(), index.tolist())])
            arrays.append(torch.from_numpy(np.ascontiguousarray(values)))
        return _Batch(arrays[0], arrays[1], arrays[2], torch.from_numpy(index))


class _Batch(tuple):
    """(text (B,T_t,d_t), audio, vision, index (B,) int64) of one batch, already stacked."""

    def __new__(cls, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor, index: torch.Tensor) -> "_Batch":
        return super().__new__(cls, (text, audio, vision, index))


@contextmanager
def _compilable(active: bool) -> Iterator[None]:
    """With ``torch.compile``, turn off PyTorch's fused TransformerEncoderLayer fast path while extracting.

    Its fake kernel (``aten._transformer_encoder_layer_fwd``) gets the strides of the model's transposed embeddings
    wrong and compilation fails; inductor fuses the layers itself, so nothing is lost. Restored afterwards.
    """
    if not active:
        yield
        return
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def _collate(items: "_Batch | list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]") -> tuple[torch.Tensor, ...]:
    if isinstance(items, _Batch):
        return tuple(items)
    text, audio, vision, index = zip(*items)
    return torch.stack(text), torch.stack(audio), torch.stack(vision), torch.tensor(index, dtype=torch.int64)


def select_source(dataset: Dataset, split: str) -> ExtractionSource:
    """The split to extract; ``all`` is train, valid and test in that order (those present)."""
    if split == "all":
        parts = [dataset.splits[name] for name in SPLITS if name in dataset.splits]
        parts += [s for name, s in dataset.splits.items() if name not in SPLITS]
        return ExtractionSource("all", parts)
    if split not in dataset.splits and split not in SPLITS:
        raise InterpError(f"unknown split {split!r}; choose train, valid, test or all")
    return ExtractionSource(split, [get_split(dataset, split)])


def _open_writer(
    loaded: LoadedModel,
    source: ExtractionSource,
    out_dir: Path,
    force: bool,
    row_group_rows: int,
    temp_dir: Path | None = None,
    rank: int | None = None,
) -> RunWriter:
    """The run writer for this checkpoint's task and concepts (a rank's shard writer when ``rank`` is given)."""
    return RunWriter(
        out_dir,
        task=loaded.task,
        concepts=loaded.concepts,
        with_score=loaded.task == "sentiment",
        with_transcript=source.has_transcripts,
        with_video=True,
        force=force,
        row_group_rows=row_group_rows,
        temp_dir=temp_dir,
        rank=rank,
        with_modality_labels=source.has_modality_labels,
    )


def default_run_dir(ckpt: Path | str, split: str, runs_root: Path | str = DEFAULT_RUNS_ROOT) -> Path:
    """``runs/<checkpoint stem>-<split>``, e.g. ``runs/model-test``."""
    return Path(runs_root) / f"{Path(ckpt).stem}-{split}"


def iterate_batches(
    loaded: LoadedModel,
    source: ExtractionSource,
    device: torch.device,
    batch_size: int,
    num_workers: int = 0,
    amp: str | None = None,
    model: torch.nn.Module | None = None,
    sampler: Sampler[int] | None = None,
) -> Iterator[RunBatch]:
    """Run the model over ``source`` and yield one :class:`RunBatch` per batch (one forward pass each)."""
    samples = _SplitSamples(source.parts)
    loader = DataLoader(
        samples,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    network = model if model is not None else loaded.model
    network.eval()
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16) if amp == "bf16" else nullcontext()
    )
    offsets = samples.offsets
    all_targets = np.concatenate([targets(part.labels, loaded.task) for part in source.parts])
    all_scores = (
        np.concatenate([part.labels.reshape(part.n, -1)[:, 0] for part in source.parts]).astype(np.float32)
        if loaded.task == "sentiment"
        else None
    )
    all_ids = np.array([sample_id for part in source.parts for sample_id in part.ids], dtype=object)
    all_videos = np.array([video for part in source.parts for video in part.videos], dtype=object)
    split_names = np.array([part.name for part in source.parts], dtype=object)
    all_transcripts = (
        np.array([t for part in source.parts for t in part.transcripts], dtype=object)  # type: ignore[union-attr]
        if source.has_transcripts
        else None
    )
    all_modality_labels = (
        {m: np.concatenate([part.modality_labels[m] for part in source.parts]) for m in ("T", "A", "V")}  # type: ignore[index]
        if source.has_modality_labels
        else None
    )
    all_lengths, padding = source.lengths() if masks_padding(loaded.checkpoint) else (None, "none")
    with torch.inference_mode():
        for text, audio, vision, index in loader:
            with autocast:
                output = network(
                    text.to(device, non_blocking=True),
                    audio.to(device, non_blocking=True),
                    vision.to(device, non_blocking=True),
                    torch.from_numpy(all_lengths[index.numpy()]).to(device) if all_lengths is not None else None,
                    padding,
                )
            index_np = index.numpy()
            parts = np.searchsorted(offsets, index_np, side="right") - 1
            yield RunBatch(
                sample_ids=all_ids[index_np].tolist(),
                split=split_names[parts].tolist() if len(source.parts) > 1 else source.parts[0].name,
                rows=index_np - offsets[parts],
                targets=all_targets[index_np],
                logits=output.logits.float().cpu().numpy(),
                p=output.p.float().cpu().numpy(),
                r=output.r.float().cpu().numpy(),
                contributions=output.contributions.float().cpu().numpy(),
                scores=all_scores[index_np] if all_scores is not None else None,
                transcripts=all_transcripts[index_np].tolist() if all_transcripts is not None else None,
                modality_labels=(
                    {m: v[index_np] for m, v in all_modality_labels.items()} if all_modality_labels is not None else None
                ),
                videos=all_videos[index_np].tolist(),
            )


def run_meta(
    loaded: LoadedModel,
    dataset: Dataset,
    source: ExtractionSource,
    n: int,
    amp: str | None,
    batch_size: int,
    shards: list[str] | None = None,
    samples: list[str] | None = None,
) -> dict[str, Any]:
    """The run's meta.json (DESIGN.md, "Run directory")."""
    checkpoint = loaded.checkpoint
    return {
        "task": loaded.task,
        "variant": checkpoint.get("variant", loaded.config.variant),
        "concepts": loaded.concepts,
        "features": list(FEATURES),
        "J": len(loaded.concepts),
        "checkpoint": str(loaded.path),
        "checkpoint_sha256": loaded.sha256,
        "data": str(dataset.path),
        "data_sha256": dataset.sha256,
        "split": source.name,
        "n": n,
        "n_videos": len({video for part in source.parts for video in part.videos}),
        "seq_lens": {part.name: list(seq_lens(part)) for part in source.parts},
        "model_config": loaded.config.to_dict(),
        "train": {k: v for k, v in checkpoint.get("train", {}).items() if k != "history"},
        "planted": dataset.planted,
        "nonfinite": dict(dataset.nonfinite),
        "versions": package_versions(),
        "amp": amp,
        "batch_size": batch_size,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "shards": shards or [ROUTING_FILE],
        "samples": samples or [SAMPLES_FILE],
    }


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
) -> Path:
    """Extract every sample's interpretation values of ``split`` into a run directory; returns its path.

    ``data`` and ``split`` default to what the checkpoint recorded (its data file; the test split).
    ``amp="bf16"`` autocasts the encoders on CUDA; p, r and contributions are always computed in fp32.
    ``format``: the data layout (``mult`` / ``mmsa``; None detects it). Padding is masked for checkpoints trained
    with it (:func:`interp.checkpoint.masks_padding`).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank extracts its own contiguous chunk of the samples into
    ``routing-rank<k>.parquet`` / ``samples-rank<k>.parquet`` and rank 0 writes meta.json last
    (see :func:`_extract_distributed`); the result is the same run directory, sharded.
    """
    world = distributed.world_from_env()
    if world is not None:
        return _extract_distributed(
            world, ckpt, data=data, split=split, out=out, batch_size=batch_size, device=device, force=force,
            amp=amp, num_workers=num_workers, compile=compile, progress=progress, row_group_rows=row_group_rows,
            runs_root=runs_root, format=format,
        )
    torch_device = resolve_device(device)
    loaded, dataset, source, out_dir = _prepare(
        ckpt, data, split, out, batch_size, torch_device, amp, runs_root, format
    )
    model = torch.compile(loaded.model) if compile else loaded.model
    writer = _open_writer(loaded, source, out_dir, force, row_group_rows)
    started = time.perf_counter()
    with writer, progress_bar(source.n, f"extract {source.name}", enabled=progress, unit="samples") as bar, _compilable(compile):
        for batch in iterate_batches(loaded, source, torch_device, batch_size, num_workers, amp, model=model):
            writer.write(batch)
            bar.advance(batch.size)
            bar.update(f"{writer.n / max(time.perf_counter() - started, 1e-9):,.0f} samples/s")
        meta = run_meta(loaded, dataset, source, writer.n, amp, batch_size)
        return writer.finish(meta, force=force)


def _prepare(
    ckpt: Path | str,
    data: Path | str | None,
    split: str | None,
    out: Path | str | None,
    batch_size: int,
    torch_device: torch.device,
    amp: str | None,
    runs_root: Path | str,
    format: str | None = None,
) -> tuple[LoadedModel, Dataset, ExtractionSource, Path]:
    """Check the options, load the checkpoint and the data; returns (loaded, dataset, source, run directory)."""
    if amp is not None and amp not in AMP:
        raise InterpError(f"unknown --amp {amp!r}; choose one of {', '.join(AMP)}")
    if amp == "bf16" and torch_device.type != "cuda":
        raise InterpError("--amp bf16 needs a CUDA device; drop --amp on CPU")
    if batch_size < 1:
        raise InterpError(f"--batch-size must be at least 1, got {batch_size}")
    loaded = load_checkpoint(ckpt, torch_device)
    split = split or "test"
    if split not in SPLITS + ("all",):
        raise InterpError(f"unknown split {split!r}; choose train, valid, test or all")
    dataset = load_dataset(resolve_data_path(loaded.checkpoint, data), format=format)
    source = select_source(dataset, split)
    for part in source.parts:
        check_compatible(loaded, dataset, part)
    out_dir = Path(out) if out is not None else default_run_dir(ckpt, source.name, runs_root)
    check_not_input(out_dir, {"checkpoint": ckpt, "data file": dataset.path}, holds=True)
    return loaded, dataset, source, out_dir


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
            loaded, dataset, source, out_dir = _prepare(
                ckpt, data, split, out, batch_size, torch_device, amp, runs_root, format
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
            writer = _open_writer(loaded, source, out_dir, force, row_group_rows, temp_dir=temp_dir, rank=world.rank)
            started = time.perf_counter()
            description = f"extract {source.name} (rank 0 of {world.size})"
            bar_context = progress_bar(len(sampler), description, enabled=progress and world.is_main, unit="samples")
            with writer, bar_context as bar, _compilable(compile):
                batches = iterate_batches(
                    loaded, source, torch_device, batch_size, num_workers, amp, model=model, sampler=sampler
                )
                for batch in batches:
                    writer.write(batch)
                    bar.advance(batch.size)
                    bar.update(f"{writer.n / max(time.perf_counter() - started, 1e-9):,.0f} samples/s per rank")
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
