"""torch.distributed helpers for ``torchrun`` launches (DDP + DistributedSampler).

``torchrun --nproc_per_node=N`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`init_distributed` reads them and joins the process group (NCCL on CUDA, gloo on CPU).
Without those variables everything degrades to a single process (rank 0 of 1), so the same
training code runs in a notebook, the napari panel and on a cluster.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "StepStopVote",
    "StopVote",
    "all_gather_objects",
    "all_reduce_sum",
    "any_true",
    "barrier",
    "broadcast_buffers",
    "cleanup_distributed",
    "get_dist_info",
    "init_distributed",
    "is_main_process",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        """True when running with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def get_dist_info() -> DistInfo:
    """Current rank/world size (from the process group if initialised, else the environment)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=_env_int("LOCAL_RANK", 0),
            backend=str(dist.get_backend()),
        )
    return DistInfo(
        rank=_env_int("RANK", 0),
        world_size=_env_int("WORLD_SIZE", 1),
        local_rank=_env_int("LOCAL_RANK", 0),
    )


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the torchrun process group if ``WORLD_SIZE > 1``; no-op otherwise.

    Args:
        backend: ``"nccl"``, ``"gloo"`` or None for automatic (NCCL when CUDA is available,
            gloo otherwise).

    Returns:
        A :class:`DistInfo`; ``initialized_here`` tells whether this call created the group
        (it is destroyed when the process exits, or by :func:`cleanup_distributed`).
    """
    if backend is not None and backend not in ("nccl", "gloo", "mpi"):
        raise ValueError(f"backend must be 'nccl', 'gloo', 'mpi' or None, got {backend!r}")
    info = get_dist_info()
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return info
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        # Each process drives the GPU torchrun assigned to it.
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend)
    # Kept for the life of the process: a default group destroyed and created again in one
    # torchrun worker reuses its store keys, so the next training (segloss compare's next loss)
    # reads the old group's addresses and fails ("Connection refused") or hangs.
    atexit.register(_destroy_at_exit)
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=info.local_rank,
        backend=backend,
        initialized_here=True,
    )


def _destroy_at_exit() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cleanup_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`init_distributed` created it (the training loop
    leaves it to the end of the process: see :func:`init_distributed`)."""
    if info.initialized_here and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """True on rank 0 (and in single-process runs): the only process that writes files."""
    return get_dist_info().rank == 0


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Synchronise all ranks (no-op in a single process)."""
    if _active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (no-op in a single process); returns ``tensor``."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_true(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True if ``flag`` is true on any rank, so every rank takes the same branch (no hang)."""
    if not _active():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_gather_objects(obj: Any) -> list[Any]:
    """Gather one picklable object per rank (rank order); ``[obj]`` in a single process."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the *start* of each forward, so after the last training step each
    replica holds running statistics of its own last batch. Syncing before validation and at the
    end makes every rank evaluate (and finish with) exactly the weights rank 0 checkpoints.
    """
    if not _active():
        return
    for buf in module.buffers():
        dist.broadcast(buf, src)


class StopVote:
    """A stop request agreed on by every rank at the same point of a loop whose ranks run
    different numbers of iterations (sharded validation: rank 0 may hold one image more).

    Call the vote before each of this rank's iterations: True means every rank stops there.
    After this rank's last iteration call :meth:`finish`, which keeps voting until every rank
    is done, so each rank joins every round (a rank that skipped one would hang the others in
    the collective). In a single process it is ``want_stop`` itself, with no synchronisation.
    """

    def __init__(self, want_stop: Callable[[], bool], device: torch.device | str = "cpu") -> None:
        self._want_stop = want_stop
        self._device = device
        self.stopped = False

    def _round(self, more: bool) -> tuple[bool, bool]:
        """One collective round: (a rank wants to stop, a rank has iterations left)."""
        flags = torch.tensor(
            [1.0 if self._want_stop() else 0.0, 1.0 if more else 0.0], device=self._device
        )
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        stop, left = flags.tolist()
        self.stopped = stop > 0
        return self.stopped, left > 0

    def __call__(self) -> bool:
        """Before one of this rank's iterations: True when every rank stops now."""
        if not _active():
            self.stopped = bool(self._want_stop())
            return self.stopped
        return self._round(more=True)[0]

    def finish(self) -> bool:
        """After this rank's last iteration: vote until all ranks are done; True when the
        others stopped meanwhile (this rank's results are then dropped with theirs)."""
        if not _active():
            return False
        while True:
            stop, left = self._round(more=False)
            if stop or not left:
                return stop


class StepStopVote:
    """A stop request agreed on by every rank at the same training step (ranks take the same
    number of steps per epoch).

    :meth:`before_step` comes before each step, :meth:`at_log_step` at each log step; True means
    every rank stops there. In a single process the request is honoured before the next step.

    * **gloo** (CPU processes, where a step can take seconds): each :meth:`before_step` starts an
      asynchronous all-reduce of this rank's request and returns the one started a step
      earlier, done by then. A request stops every rank one step later, with no wait per
      step. torchrun and schedulers kill the workers some 30 s after their SIGTERM: ten slow
      steps to the next log step could outlast that, and the checkpoint was lost.
    * **NCCL**: the ranks agree at log steps, where they synchronise anyway; reading a flag each
      step would make the CPU wait for the GPU every step. GPU steps are short.

    Call :meth:`finish` after the last step of a loop that ended without a stop.
    """

    def __init__(self, want_stop: Callable[[], bool], device: torch.device | str = "cpu") -> None:
        self._want_stop = want_stop
        self._device = device
        self._pending: tuple[Any, torch.Tensor] | None = None
        self._every_step = _active() and dist.get_backend() == "gloo"

    def before_step(self) -> bool:
        if not _active():
            return bool(self._want_stop())
        if not self._every_step:
            return False
        if self.finish():
            return True
        flag = torch.tensor([1.0 if self._want_stop() else 0.0])
        self._pending = (dist.all_reduce(flag, op=dist.ReduceOp.MAX, async_op=True), flag)
        return False

    def at_log_step(self) -> bool:
        if not _active() or self._every_step:
            return False
        return any_true(self._want_stop(), self._device)

    def finish(self) -> bool:
        """Wait for the round started by the last :meth:`before_step` (every rank started it):
        True when a rank asked to stop."""
        if self._pending is None:
            return False
        (work, flag), self._pending = self._pending, None
        work.wait()
        return bool(flag.item() > 0)
