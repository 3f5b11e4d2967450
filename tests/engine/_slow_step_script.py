"""Launched by the stop tests under ``torchrun`` (not a test module): ``segloss train`` whose
training steps are slow, to stop a run between two log steps as a scheduler's SIGTERM would.

Usage: python _slow_step_script.py READY SKIP SECONDS [segloss train arguments ...]

After the first SKIP steps of this process each step takes SECONDS longer, and the first slow
one creates the file READY.<rank>. Every step started appends a line to READY.<rank>.steps.
Exits with the exit code of ``segloss train``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

import napari_segloss.engine.training as training
from napari_segloss.cli import main as segloss_main


def main() -> int:
    torch.set_num_threads(1)
    ready, skip, seconds = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    ready = ready.with_name(f"{ready.name}.{os.environ.get('RANK', '0')}")
    steps = ready.with_name(f"{ready.name}.steps")
    real_step = training._step
    calls = {"n": 0}

    def slow_step(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        with steps.open("a") as fh:
            fh.write(f"{calls['n']}\n")
        if calls["n"] > skip:
            ready.touch()
            time.sleep(seconds)
        return real_step(*args, **kwargs)

    training._step = slow_step
    return segloss_main(["train", *sys.argv[4:]])


if __name__ == "__main__":
    sys.exit(main())
