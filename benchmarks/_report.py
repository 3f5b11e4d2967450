"""Shared bits of the benchmark scripts: the machine line and writing the Markdown report."""

from __future__ import annotations

import os
import platform
import random
import time
from collections.abc import Callable
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


def ab_table(label: str, times: dict[str, dict[str, list[float]]], digits: int = 2) -> list[str]:
    """Markdown rows of an old/new comparison: ``times[case]["old"|"new"]`` are seconds per run;
    each row gives the median (range) of both trees and new / old of the medians."""
    import statistics

    rows = [
        f"| {label} | old: median (range) | new: median (range) | new / old |",
        "|---|---|---|---:|",
    ]
    for case, by_tree in times.items():
        old, new = by_tree["old"], by_tree["new"]
        ratio = statistics.median(new) / statistics.median(old)
        rows.append(
            f"| {case} | {statistics.median(old):.2f} ({min(old):.2f}-{max(old):.2f}) "
            f"| {statistics.median(new):.2f} ({min(new):.2f}-{max(new):.2f}) | {ratio:.{digits}f} |"
        )
    return rows


def allocator_line() -> str:
    """How glibc malloc was tuned for this run. Tensors of several MB are fresh mmap pages on
    every allocation with the default settings, and their page faults are a large, state-
    dependent share of CPU timings; ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
    (read at process start) keep freed memory for reuse, which leaves the compute."""
    keys = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    tuned = [f"{k}={os.environ[k]}" for k in keys if k in os.environ]
    return "malloc: " + (", ".join(tuned) if tuned else "glibc defaults")


def interleaved_rounds(
    calls: dict[str, Callable[[], object]],
    rounds: int,
    *,
    warmup: int = 2,
    after: Callable[[], object] | None = None,
) -> dict[str, list[float]]:
    """Seconds of each call in every round after ``warmup`` rounds. A round runs every call
    once in a shuffled order, so that load changes on a shared machine hit all of them alike;
    ``after`` runs after each call, untimed (e.g. dropping a gradient)."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    for r in range(rounds + warmup):
        order = list(calls)
        random.shuffle(order)
        for k in order:
            t0 = time.perf_counter()
            calls[k]()
            dt = time.perf_counter() - t0
            if after is not None:
                after()
            if r >= warmup:
                times[k].append(dt)
    return times
