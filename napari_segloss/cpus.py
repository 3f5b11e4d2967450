"""The CPU cores this process may use, shared by the data checks and the training engine."""

from __future__ import annotations

import os

__all__ = ["available_cpus"]


def available_cpus() -> int:
    """CPU cores this process may run on: its affinity mask (taskset, container or Slurm
    cpusets), as torch's DataLoader counts them, else every core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
