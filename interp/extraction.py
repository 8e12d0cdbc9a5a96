"""The machinery of `interp extract`: which samples, in which batches, through which model, into which writer.

:func:`prepare` checks the options and loads the checkpoint and the data; :func:`select_source` picks the split(s);
:func:`iterate_batches` runs one forward pass per batch under ``torch.inference_mode()`` in eval mode and yields
each sample's logits, p_i (7,), r_ij (7, J) and contributions p_i r_ij <o_j, f_i W_ij> (7, J) as a
:class:`interp.runwriter.RunBatch`; :func:`open_writer` and :func:`run_meta` make the run's files and meta.json.
:func:`interp.extract.extract` drives them in one process or under ``torchrun``.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset as TorchDataset, Sampler

from interp.checkpoint import (
    LoadedModel, check_compatible, load_checkpoint, masks_padding, package_versions, resolve_data_path,
)
from interp.data import Dataset, Split, get_split, load_dataset, seq_lens
from interp.errors import InterpError
from interp.outputs import check_not_input
from interp.runs import DEFAULT_RUNS_ROOT
from interp.runwriter import RunBatch, RunWriter
from interp.schema import AMP, FEATURES, ROUTING_FILE, SAMPLES_FILE, SPLITS
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
        # consecutive rows of one part (extraction's sequential order): a slice, a view where the rows are float32
        rows = slice(int(index[0] - self.offsets[parts[0]]), int(index[-1] - self.offsets[parts[0]]) + 1)
        consecutive = bool(parts[0] == parts[-1]) and rows.stop - rows.start == len(index) and (
            len(index) == 1 or bool((np.diff(index) == 1).all()))
        arrays = []
        for name in ("text", "audio", "vision"):
            if consecutive:
                values = np.asarray(getattr(self.parts[int(parts[0])], name)[rows], dtype=np.float32)
            elif (parts == parts[0]).all():
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


def open_writer(
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


def prepare(
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
