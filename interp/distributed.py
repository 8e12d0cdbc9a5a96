"""Running ``interp extract`` on several processes (and machines) with ``torchrun`` and ``torch.distributed``.

Nothing here is a home-made launcher: ``torchrun`` starts the processes and sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`world_from_env` reads them, :func:`process_group` opens the default process group (gloo on
CPU, NCCL on CUDA, one GPU per local rank) and closes it, and the few collectives used (broadcast, all-gather,
barrier) are ``torch.distributed``'s own object collectives.

How the samples are split: :class:`ShardSampler` gives rank k one contiguous chunk of the sample indices, the chunks
differing in size by at most one. It replaces :class:`torch.utils.data.DistributedSampler`, which interleaves the
indices (``rank::world_size``) and, with ``drop_last=False``, pads the ranks to equal length by repeating the first
samples: that would write some samples twice. Here the shards partition the samples exactly, and reading the shards
in rank order gives the samples in the single-process order.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch
from torch.utils.data import Sampler

from interp.errors import InterpError

__all__ = [
    "World",
    "DistributedError",
    "ShardSampler",
    "shard_bounds",
    "world_from_env",
    "resolve_rank_device",
    "process_group",
    "broadcast_object",
    "all_gather_objects",
    "barrier",
    "raise_if_any_failed",
]

#: How long a rank waits for the others at a collective before giving up.
DEFAULT_TIMEOUT = timedelta(minutes=30)


class DistributedError(InterpError):
    """Another rank of a distributed extraction failed (this rank's own work may have been fine)."""


@dataclass(frozen=True)
class World:
    """Where this process stands in a distributed job: its global rank, the number of ranks and its local rank."""

    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int | None = None) -> int | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InterpError(f"environment variable {name}={value!r} is not a whole number (set by torchrun)") from None


def world_from_env() -> World | None:
    """The torchrun world when this process is one of several (``WORLD_SIZE`` > 1), else None.

    A process group that the caller already opened counts too (library use under another launcher).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        local = _env_int("LOCAL_RANK", dist.get_rank())
        return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=int(local or 0))
    size = _env_int("WORLD_SIZE", 1) or 1
    if size <= 1:
        return None
    rank = _env_int("RANK")
    if rank is None:
        raise InterpError("WORLD_SIZE is set but RANK is not; start distributed extraction with torchrun")
    local = _env_int("LOCAL_RANK", rank)
    if not 0 <= rank < size:
        raise InterpError(f"RANK={rank} is outside 0..{size - 1} (WORLD_SIZE={size})")
    return World(rank=rank, size=size, local_rank=int(local or 0))


def resolve_rank_device(device: str | torch.device, world: World) -> torch.device:
    """The device of this rank: CPU, or the GPU of its local rank (``cuda:LOCAL_RANK``) for auto/cuda/cuda:N."""
    name = str(device).strip().lower()
    if name == "cpu":
        return torch.device("cpu")
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
    elif not name.startswith("cuda"):
        raise InterpError(f"device {device!r} is not supported; use auto, cpu or cuda")
    if not torch.cuda.is_available():
        raise InterpError(f"device {device!r} asked for but CUDA is not available here; use --device cpu")
    count = torch.cuda.device_count()
    if world.local_rank >= count:
        raise InterpError(
            f"local rank {world.local_rank} has no GPU of its own ({count} visible); start at most {count} "
            f"processes per machine (torchrun --nproc-per-node {count})"
        )
    return torch.device("cuda", world.local_rank)


@contextmanager
def process_group(world: World, device: torch.device, timeout: timedelta = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Open the default process group for ``world`` (gloo on CPU, NCCL on CUDA) and close it on exit.

    A group that is already open is used as it is and left open.
    """
    import torch.distributed as dist

    if not dist.is_available():
        raise InterpError("this PyTorch build has no torch.distributed; run extraction in one process")
    if dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, rank=world.rank, world_size=world.size, timeout=timeout)
    try:
        yield
        # Every rank reaches the teardown before any destroys its group: under load a rank that tore gloo down
        # while a peer was still finishing aborted ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def broadcast_object(value: Any, src: int = 0) -> Any:
    """``value`` of rank ``src``, on every rank (picklable objects)."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    """Wait until every rank gets here."""
    import torch.distributed as dist

    dist.barrier()


def raise_if_any_failed(error: BaseException | None, stage: str) -> None:
    """All ranks exchange whether ``stage`` failed; every rank raises when one did (its own error first).

    Every rank must call this at the same point, whether it failed or not, so that none waits forever.
    """
    message = None if error is None else (f"{type(error).__name__}: {error}" if not isinstance(error, InterpError) else str(error))
    statuses = all_gather_objects(message)
    if error is not None:
        raise error
    failed = [(rank, text) for rank, text in enumerate(statuses) if text is not None]
    if failed:
        rank, text = failed[0]
        raise DistributedError(f"rank {rank} failed while {stage}: {text}")


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous chunk of ``n`` samples (sizes differ by at most one)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    return n * rank // world_size, n * (rank + 1) // world_size


class ShardSampler(Sampler[int]):
    """The sample indices of one rank: a contiguous chunk, no padding, no duplicates (see the module docstring).

    The chunks of ranks 0..world_size-1 partition ``range(n)`` exactly and in order.
    """

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.n = int(n)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.start, self.stop = shard_bounds(self.n, self.rank, self.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
