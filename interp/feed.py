"""Feeding a split to the model batch by batch: each batch's features on the device, in the samples' order.

Two ways to the same batches (``tests/test_feed.py``):

* **streamed**: a DataLoader cuts each batch from the host arrays (a slice where the rows are consecutive), pins
  it on CUDA and copies it to the device. Memory on the device stays one batch, whatever the split's size; a
  sampler (one rank's chunk under ``torchrun``) and loader workers work only this way.
* **resident**: the split's features are copied to the device once, and a batch is a slice of those tensors. On
  a GPU this removes, per batch, a host copy into pinned memory and a host-to-device copy (8.4 MB for 256 samples
  at the default dims and T = 20).

Either way the padding lengths stay on the CPU: the model decides there which masks a batch needs, without
waiting for the device (:func:`interp.encoders.padding_masks`).

:func:`resident_refusal` says why a split cannot be resident (None where it can); :func:`resident_by_default` is
the choice of ``interp extract``: resident on CUDA where it can be and the features take at most
:data:`RESIDENT_SHARE` of the device's free memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset as TorchDataset, Sampler

from interp.data import Split, input_dims, seq_lens
from interp.errors import InterpError

#: The largest share of the device's free memory that resident features may take.
RESIDENT_SHARE = 0.25

_MODALITIES = ("text", "audio", "vision")


@dataclass(frozen=True)
class DeviceBatch:
    """One batch: ``text (B, T_t, d_t)``, ``audio``, ``vision`` float32 on the device, ``lengths (B, 3)`` int64 on
    the CPU or None, and ``index (B,)`` int64 (host) positions over the concatenated parts."""

    text: torch.Tensor
    audio: torch.Tensor
    vision: torch.Tensor
    lengths: torch.Tensor | None
    index: np.ndarray


def feature_bytes(parts: Sequence[Split]) -> int:
    """Bytes of the parts' features as float32 (what resident features take on the device)."""
    return sum(4 * part.n * sum(t * d for t, d in zip(seq_lens(part), input_dims(part))) for part in parts)


def resident_refusal(
    parts: Sequence[Split], device: torch.device, sampler: Sampler[int] | None = None, num_workers: int = 0
) -> str | None:
    """Why the parts' features cannot be resident on ``device`` (None: they can)."""
    if sampler is not None:
        return "a sampler picks the samples (one rank's chunk)"
    if num_workers:
        return "loader workers were asked for"
    if len({(seq_lens(part), input_dims(part)) for part in parts}) > 1:
        return "the splits differ in steps or feature dims"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        need = feature_bytes(parts)
        if need > RESIDENT_SHARE * free:
            return (f"the features take {need / 1e9:.2f} GB, over {RESIDENT_SHARE:.0%} of the device's free "
                    f"{free / 1e9:.2f} GB")
    return None


def resident_by_default(
    parts: Sequence[Split], device: torch.device, sampler: Sampler[int] | None = None, num_workers: int = 0
) -> bool:
    """Resident where it saves copies per batch (CUDA) and :func:`resident_refusal` has nothing against it."""
    return device.type == "cuda" and resident_refusal(parts, device, sampler, num_workers) is None


def device_batches(
    parts: Sequence[Split],
    device: torch.device,
    batch_size: int,
    *,
    lengths: np.ndarray | None = None,
    resident: bool = False,
    num_workers: int = 0,
    sampler: Sampler[int] | None = None,
) -> Iterator[DeviceBatch]:
    """The parts' samples in batches of ``batch_size`` on ``device`` (in ``sampler``'s order when given).

    ``lengths (N, 3)``: real steps per sample and modality over all parts, or None. ``resident``: copy the
    features to the device once (refused, by an :class:`InterpError`, where :func:`resident_refusal` says why)."""
    if resident:
        refusal = resident_refusal(parts, device, sampler, num_workers)
        if refusal is not None:
            raise InterpError(f"the features cannot stay on {device}: {refusal}")
        yield from _resident_batches(parts, device, batch_size, lengths)
    else:
        yield from _streamed_batches(parts, device, batch_size, lengths, num_workers, sampler)


def _resident_batches(
    parts: Sequence[Split], device: torch.device, batch_size: int, lengths: np.ndarray | None
) -> Iterator[DeviceBatch]:
    n = sum(part.n for part in parts)
    features = [_upload([getattr(part, name) for part in parts], device) for name in _MODALITIES]
    # the lengths stay on the CPU: the model decides there, without waiting for the device, which masks it needs
    steps = torch.from_numpy(np.ascontiguousarray(lengths, dtype=np.int64)) if lengths is not None else None
    for start in range(0, n, batch_size):
        rows = slice(start, min(n, start + batch_size))
        text, audio, vision = (values[rows] for values in features)
        yield DeviceBatch(text, audio, vision, steps[rows] if steps is not None else None,
                          np.arange(rows.start, rows.stop, dtype=np.int64))


def _upload(arrays: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """One float32 tensor on ``device`` of the arrays one after another (no copy for one float32 array on the
    CPU)."""
    if len(arrays) == 1:
        return torch.from_numpy(np.ascontiguousarray(arrays[0], dtype=np.float32)).to(device)
    whole = torch.empty((sum(len(a) for a in arrays), *arrays[0].shape[1:]), dtype=torch.float32, device=device)
    start = 0
    for values in arrays:
        whole[start : start + len(values)].copy_(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)))
        start += len(values)
    return whole


def _streamed_batches(
    parts: Sequence[Split],
    device: torch.device,
    batch_size: int,
    lengths: np.ndarray | None,
    num_workers: int,
    sampler: Sampler[int] | None,
) -> Iterator[DeviceBatch]:
    loader = DataLoader(
        _SplitSamples(parts),
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    for text, audio, vision, index in loader:
        index_np = index.numpy()
        yield DeviceBatch(
            text.to(device, non_blocking=True),
            audio.to(device, non_blocking=True),
            vision.to(device, non_blocking=True),
            torch.from_numpy(lengths[index_np]) if lengths is not None else None,
            index_np,
        )


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
        for name in _MODALITIES:
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
