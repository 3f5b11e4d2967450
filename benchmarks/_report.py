"""Shared bits of the benchmark scripts: the machine line and writing the Markdown report."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine_line() -> str:
    """``Machine: <cpu>, <n> CPU cores (shared with other jobs), GPU: <gpu>; torch <v>, <t> CPU
    threads`` (no final punctuation)."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
        f"(shared with other jobs), GPU: {gpu}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )


def emit(lines: list[str], output: Path | None) -> None:
    """Print the report and, with ``output``, append it to that file."""
    text = "\n".join(lines) + "\n"
    print(text)
    if output:
        with output.open("a") as fh:
            fh.write(text + "\n")


def allocator_line() -> str:
    """How glibc malloc was tuned for this run. Tensors of several MB are fresh mmap pages on
    every allocation with the default settings, and their page faults are a large, state-
    dependent share of CPU timings; ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
    (read at process start) keep freed memory for reuse, which leaves the compute."""
    keys = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    tuned = [f"{k}={os.environ[k]}" for k in keys if k in os.environ]
    return "malloc: " + (", ".join(tuned) if tuned else "glibc defaults")
