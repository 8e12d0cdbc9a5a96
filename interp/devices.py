"""Where torch runs: the device a name stands for, and the CPU threads it uses.

``resolve_device("auto")`` is cuda when there is one, else cpu; :func:`set_threads` and :func:`threads` apply
``--threads`` (a process-wide torch setting, so the CLI and the demo set it, a notebook calls them itself);
:func:`spare_core` says whether a helper thread can work beside torch without slowing it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch

from interp.errors import InterpError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` → cuda if available, else cpu; a named CUDA device that is absent is a clear error."""
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise InterpError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InterpError(f"device {device!r} asked for but CUDA is not available here; use --device cpu")
    if resolved.type not in ("cpu", "cuda"):
        raise InterpError(f"device {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    return resolved


def set_threads(threads: int | None) -> None:
    """Set torch's CPU threads per operation (process-wide); ``None`` keeps torch's setting."""
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))


@contextmanager
def threads(count: int | None, device: str | torch.device = "cpu") -> Iterator[None]:
    """Run the block with ``count`` CPU threads when ``device`` resolves to the CPU, then restore torch's setting."""
    previous = torch.get_num_threads()
    if count is not None and resolve_device(device).type == "cpu":
        set_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def spare_core(device: str | torch.device) -> bool:
    """True when a second thread can work beside torch without slowing it: torch's work runs on a CUDA device, or
    torch uses fewer CPU threads than this process may run on.

    Measured with ``interp extract`` (default model, 4,096 samples, 2 cores): the run writer in a second thread
    took 0.96x the time of writing in the caller with ``--threads 1``, but 1.24x with torch on both cores (its
    threads then wait for the one the writer took)."""
    if resolve_device(device).type == "cuda":
        return True
    return torch.get_num_threads() < usable_cpus()
