"""Process-level settings of a training run: the device, data-loading workers, determinism
flags, Ctrl-C/SIGTERM.

Each is set for the run and restored afterwards, because the napari panel runs training inside
napari's own process and shares these globals with it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..cpus import available_cpus
from . import devices
from .config import ConfigError
from .distributed import DistInfo

__all__ = ["Interrupts", "available_cpus", "determinism", "loader_workers", "training_device"]


def training_device(device: str, info: DistInfo | None = None) -> torch.device:
    """The training device (:func:`.devices.resolve_device` for this rank); ConfigError naming
    ``train.device`` when it is not usable here."""
    try:
        return devices.resolve_device(device, info.local_rank if info is not None else 0)
    except ValueError as exc:
        raise ConfigError(f"config key 'train.device': {exc}") from None


def _processes_on_this_machine() -> int:
    """Training processes sharing this machine's cores: torchrun's ``LOCAL_WORLD_SIZE``, else 1."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    except ValueError:
        return 1


def loader_workers(requested: int, processes: int | None = None) -> tuple[int, str]:
    """``train.num_workers`` capped at this process's share of the cores it may run on.

    Worker processes beyond the cores only time-share them, and torch's DataLoader warns (twice
    per loader) when a process creates more workers than it has cores. Under torchrun each of the
    machine's ``processes`` (default ``LOCAL_WORLD_SIZE``) starts its own workers, so each gets
    ``cores // processes``. The number of workers does not change the batches (items are seeded
    by index), so capping keeps results identical.

    Returns:
        ``(workers, note)``: the number to use and, when it is lower than ``requested``, one
        line saying so for the run's start line ("" otherwise).
    """
    processes = processes or _processes_on_this_machine()
    cores = available_cpus()
    cap = cores // processes
    if requested <= cap:
        return requested, ""
    if processes > 1:
        share = f" per process: {cores} CPU core(s) shared by {processes} training processes"
    else:
        share = f": this process may use {cores} CPU core(s)"
    where = " (data loaded in the training process)" if cap == 0 else ""
    return cap, f"train.num_workers {requested} lowered to {cap}{share}{where}"


@contextmanager
def determinism(deterministic: bool, cuda: bool) -> Iterator[None]:
    """Set (and afterwards restore) the global determinism flags: the napari panel shares them."""
    prev = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if deterministic and cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only: some CUDA kernels (e.g. bilinear upsampling backward) have no deterministic
    # variant; we still want the run, just with a warning.
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev[2], prev[3]


class Interrupts:
    """Turn SIGINT/SIGTERM into a flag checked between steps and between validation or
    evaluation batches (main thread only).

    A second Ctrl-C falls through to Python's default handler (immediate KeyboardInterrupt).
    ``announce``: print what happens (rank 0 only under torchrun: Ctrl-C reaches every rank,
    and each said it).
    """

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce
        self.reason: str | None = None
        self._old: dict[int, Any] = {}
        self._pid = os.getpid()

    def _handler(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:
            # A forked DataLoader worker inherited this handler: Ctrl-C reaches the whole
            # process group, but only the main process decides; workers keep serving batches.
            return
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = "interrupted (Ctrl-C)" if signum == signal.SIGINT else "terminated (SIGTERM)"
        if not self.announce:
            return
        print(
            f"\nsegloss: {self.reason}; stopping after the current step (or validation batch) "
            "and saving a checkpoint (press Ctrl-C again to abort at once)",
            file=sys.stderr,
        )

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._old[sig] = signal.signal(sig, self._handler)
                except (ValueError, OSError):  # pragma: no cover - exotic embeddings
                    pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
