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
