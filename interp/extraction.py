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
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from interp.checkpoint import (
    LoadedModel, check_compatible, load_checkpoint, masks_padding, package_versions, resolve_data_path,
)
from interp.data import Dataset, Split, get_split, load_dataset, seq_lens
from interp.errors import InterpError
from interp.feed import device_batches, resident_by_default
from interp.model import RoutingOutput
from interp.outputs import check_not_input
from interp.runs import DEFAULT_RUNS_ROOT
from interp.runwriter import MODALITY_LABELS, RunBatch, RunWriter
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
    resident: bool | None = None,
) -> Iterator[RunBatch]:
    """Run the model over ``source`` and yield one :class:`RunBatch` per batch (one forward pass each).

    ``resident``: keep the split's features on ``device`` for the whole run instead of copying each batch there
    (:mod:`interp.feed`); None decides by :func:`interp.feed.resident_by_default` (on CUDA, where they fit).
    Each batch's outputs go to the host in one non-blocking copy, and a batch is yielded only once the next
    batch's forward pass is queued: on a GPU the device computes batch k + 1 while the caller writes batch k.
    """
    network = model if model is not None else loaded.model
    network.eval()
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16) if amp == "bf16" else nullcontext()
    )
    facts = _SampleFacts(source, loaded.task)
    all_lengths, padding = source.lengths() if masks_padding(loaded.checkpoint) else (None, "none")
    if resident is None:
        resident = resident_by_default(source.parts, device, sampler, num_workers)
    batches = device_batches(source.parts, device, batch_size, lengths=all_lengths, resident=resident,
                             num_workers=num_workers, sampler=sampler)
    n_concepts = len(loaded.concepts)
    pending: tuple[torch.Tensor, torch.cuda.Event | None, np.ndarray] | None = None
    # nothing is yielded inside inference_mode: its switch is per thread, not per generator, so a generator
    # suspended inside it would leave it on for the caller (and after an error, until the generator is collected)
    for batch in batches:
        with torch.inference_mode(), autocast:
            output = network(batch.text, batch.audio, batch.vision, batch.lengths, padding)
            copied = _outputs_to_host(output)
        if pending is not None:
            yield facts.run_batch(pending[2], *_host_outputs(pending[0], pending[1], n_concepts))
        pending = (*copied, batch.index)
    if pending is not None:
        yield facts.run_batch(pending[2], *_host_outputs(pending[0], pending[1], n_concepts))


def _outputs_to_host(output: RoutingOutput) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """Start copying ``logits (B, J), p (B, 7), r (B, 7, J), contributions (B, 7, J)`` to the host as one
    ``(B, J + 7 + 2·7·J)`` float32 tensor; on CUDA the copy is non-blocking (into pinned memory) and the event
    marks its end."""
    outputs = (output.logits, output.p, output.r, output.contributions)
    flat = torch.cat([value.float().reshape(len(value), -1) for value in outputs], dim=1)
    if flat.device.type != "cuda":
        return flat.cpu(), None
    host = flat.to("cpu", non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    return host, done


def _host_outputs(
    host: torch.Tensor, done: torch.cuda.Event | None, n_concepts: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(logits, p, r, contributions)`` numpy views of a copy from :func:`_outputs_to_host`, once it is done."""
    if done is not None:
        done.synchronize()
    values = host.numpy()
    b, j, f = len(values), n_concepts, len(FEATURES)
    cuts = np.cumsum([j, f, f * j])
    logits, p, r, contributions = np.split(values, cuts, axis=1)
    return logits, p, r.reshape(b, f, j), contributions.reshape(b, f, j)


class _SampleFacts:
    """Per-sample values of ``source`` that are not model outputs (ids, splits, targets, scores, transcripts,
    videos, CH-SIMS modality labels), gathered by position for each batch."""

    def __init__(self, source: ExtractionSource, task: str) -> None:
        parts = source.parts
        self.source = source
        self.offsets = np.cumsum([0] + [part.n for part in parts])
        self.targets = np.concatenate([targets(part.labels, task) for part in parts])
        self.scores = (
            np.concatenate([part.labels.reshape(part.n, -1)[:, 0] for part in parts]).astype(np.float32)
            if task == "sentiment" else None
        )
        self.ids = np.array([sample_id for part in parts for sample_id in part.ids], dtype=object)
        self.videos = np.array([video for part in parts for video in part.videos], dtype=object)
        self.split_names = np.array([part.name for part in parts], dtype=object)
        self.transcripts = (
            np.array([t for part in parts for t in part.transcripts], dtype=object)  # type: ignore[union-attr]
            if source.has_transcripts else None
        )
        self.modality_labels = (
            {m: np.concatenate([part.modality_labels[m] for part in parts]) for m in MODALITY_LABELS}  # type: ignore[index]
            if source.has_modality_labels else None
        )

    def run_batch(self, index: np.ndarray, logits: np.ndarray, p: np.ndarray, r: np.ndarray,
                  contributions: np.ndarray) -> RunBatch:
        """The :class:`RunBatch` of the samples at positions ``index (B,)`` with their model outputs."""
        parts = np.searchsorted(self.offsets, index, side="right") - 1
        return RunBatch(
            sample_ids=self.ids[index].tolist(),
            split=self.split_names[parts].tolist() if len(self.source.parts) > 1 else self.source.parts[0].name,
            rows=index - self.offsets[parts],
            targets=self.targets[index],
            logits=logits,
            p=p,
            r=r,
            contributions=contributions,
            scores=self.scores[index] if self.scores is not None else None,
            transcripts=self.transcripts[index].tolist() if self.transcripts is not None else None,
            modality_labels=(
                {m: v[index] for m, v in self.modality_labels.items()} if self.modality_labels is not None else None
            ),
            videos=self.videos[index].tolist(),
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


#: The data set read last, by (resolved file, format): :func:`read_data` keeps it there, so that several extractions
#: in one call (:func:`interp.extract_many.extract_many`, seeds of one training) read and hash their file once.
DataSets = dict[tuple[Path, str | None], Dataset]


def read_data(path: Path | str, format: str | None = None, datasets: DataSets | None = None) -> Dataset:
    """``load_dataset(path, format)``, or the data set that ``datasets`` holds for that file and format.

    ``datasets`` keeps only the data set read last (another file replaces it), so memory holds one data set at a
    time, as without it. The file is not read again, so a change to it in the meantime goes unseen: a
    ``datasets`` should live as long as one call, as in ``extract_many``."""
    if datasets is None:
        return load_dataset(path, format=format)
    key = (Path(path).expanduser().resolve(), format)
    if key not in datasets:
        datasets.clear()
        datasets[key] = load_dataset(path, format=format)
    return datasets[key]


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
    datasets: DataSets | None = None,
) -> tuple[LoadedModel, Dataset, ExtractionSource, Path]:
    """Check the options, load the checkpoint and the data; returns (loaded, dataset, source, run directory).

    ``datasets``: data sets read by earlier calls, reused and filled (:func:`read_data`)."""
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
    dataset = read_data(resolve_data_path(loaded.checkpoint, data), format, datasets)
    source = select_source(dataset, split)
    for part in source.parts:
        check_compatible(loaded, dataset, part)
    out_dir = Path(out) if out is not None else default_run_dir(ckpt, source.name, runs_root)
    check_not_input(out_dir, {"checkpoint": ckpt, "data file": dataset.path}, holds=True)
    return loaded, dataset, source, out_dir
